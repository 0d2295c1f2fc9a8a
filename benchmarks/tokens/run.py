"""Tokens the model embeds per item: this checkout's chunker against another revision's.

Chunks a tree (default: rust-src ``library/``) exactly as an index run does (tree-sitter
items, long ones split to the model's token budget) and counts the tokens of every
embedded text (:func:`rcm_dask.embed_text.format_for_embedding`, special tokens
included) with the bundled model's tokenizer. An *item* is what search returns and code
intelligence knows: a chunk split into parts is one item. Token counts are deterministic,
so one run of each side is the measure; ``--baseline REV`` chunks the same tree with the
package as it was at a git revision (a temporary ``git worktree``), in a child process,
and prints both side by side.

Usage:
  python benchmarks/tokens/run.py                          # library/, this checkout only
  python benchmarks/tokens/run.py --baseline 446ec5d       # ... and chunker 4 beside it
  python benchmarks/tokens/run.py --root DIR --jobs 2
Writes benchmarks/tokens/last_run.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from _env import environment_lines, environment_summary, rust_src, usable_cores  # noqa: E402

HEADER_PREFIX = "// "


def _count_group(args: tuple[str, list[str]]) -> dict[str, int]:
    """Worker: chunk some files of ``root``; count items, chunks, tokens, header tokens."""
    root, paths = args
    from rcm_dask.embed_text import format_for_embedding
    from rcm_dask.embedding import Embedder
    from rcm_dask.sources import discover_sources, open_root
    from rcm_dask.stages import read_chunk_partition

    src = open_root(root)
    wanted = set(paths)
    refs = [r for r in discover_sources(src).files if r.path in wanted]
    emb = Embedder()
    part = read_chunk_partition(refs, src.fs, emb)
    texts = [format_for_embedding(c) for c in part.chunks]
    counts = emb.count_tokens(texts)
    code_only = emb.count_tokens([t.split("\n", _header_lines(t))[-1] for t in texts])
    return {
        "files": len(part.files),
        "items": sum(1 for c in part.chunks if c.part <= 1),
        "chunks": len(part.chunks),
        "tokens": sum(counts),
        "header_tokens": sum(counts) - sum(code_only),
    }


def _header_lines(text: str) -> int:
    """How many leading ``// `` lines of an embedded text are its header."""
    n = 0
    for line in text.split("\n"):
        if not line.startswith(HEADER_PREFIX) or line.startswith("///"):
            break
        n += 1
    return n


def count(root: str, jobs: int) -> dict[str, Any]:
    """Chunk ``root`` with the ``rcm_dask`` on ``sys.path``, in ``jobs`` processes."""
    from rcm_dask.chunking import CHUNKER_VERSION
    from rcm_dask.sources import discover_sources, open_root

    paths = [r.path for r in discover_sources(open_root(root)).files]
    groups = [(root, paths[i :: jobs * 8]) for i in range(jobs * 8)]
    total: dict[str, Any] = {}
    with ProcessPoolExecutor(jobs) as pool:
        for part in pool.map(_count_group, groups):
            for k, v in part.items():
                total[k] = total.get(k, 0) + v
    total["chunker_version"] = CHUNKER_VERSION
    total["tokens_per_item"] = total["tokens"] / max(total["items"], 1)
    total["header_share"] = total["header_tokens"] / max(total["tokens"], 1)
    return total


def baseline(rev: str, root: str, jobs: int) -> dict[str, Any]:
    """The same count with the package as it was at ``rev`` (a temporary git worktree)."""
    with tempfile.TemporaryDirectory(prefix="rcm-tokens-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev],
            check=True,
        )
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run(
                [sys.executable, __file__, "--child", root, "--jobs", str(jobs)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
                check=False,
            )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False
            )
    if out.returncode != 0:
        raise SystemExit(f"chunking at {rev} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    result["revision"] = rev
    return result


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one row per side, and the change of tokens per item."""
    lines = [
        "| chunker | files | items | chunks (parts) | tokens | tokens / item | header share |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} (v{r['chunker_version']}) | {r['files']:,} | {r['items']:,} | "
            f"{r['chunks']:,} | {r['tokens']:,} | {r['tokens_per_item']:.1f} | "
            f"{r['header_share']:.0%} |"
        )
    if len(rows) == 2:
        new, old = rows[0][1], rows[1][1]
        change = 1 - new["tokens_per_item"] / old["tokens_per_item"]
        lines.append(f"\ntokens per item: {change:.1%} fewer than {rows[1][0]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="chunk this folder (default: rust-src library/)")
    parser.add_argument("--baseline", help="git revision to compare with (e.g. 446ec5d)")
    parser.add_argument("--jobs", type=int, default=usable_cores())
    parser.add_argument("--out", default=str(HERE / "last_run.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        json.dump(count(args.child, args.jobs), sys.stdout)
        return
    root = str(Path(args.root).resolve() if args.root else rust_src() / "library")
    rows = [("this checkout", count(root, args.jobs))]
    if args.baseline:
        rows.append((args.baseline, baseline(args.baseline, root, args.jobs)))
    env = environment_summary()
    figures = {"root": root, "environment": env, "rows": dict(rows), "table": table(rows)}
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(environment_lines(env)) + "\n")
    print(figures["table"])


if __name__ == "__main__":
    main()
