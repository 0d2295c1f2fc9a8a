"""Ask the commit-subject questions (``questions.jsonl``, made by ``build.py``) of an index of
each repository's snapshot, and score where the changed files rank (issue 24).

Per question and method: **MRR@10** (1 / rank of the first hit in a changed file),
**hit@10** (a changed file among the top 10 hits' files) and file **nDCG@10** (each changed
file grade 1). Methods are those of ``crates_run.py`` (``bm25``, ``vector``, ``hybrid``,
``hybrid (default)``, ``files (default)``...) plus ``file-bm25``, plain BM25 over whole
files: the floor the issue measured our chunk search against.

Usage::

    python benchmarks/search_quality/commits/run.py ripgrep=/path/ripgrep.git fd=... \\
        [--embedder real|hash|none] [--methods bm25,hybrid (default),files (default)]

Each ``name=GIT_DIR`` must hold the snapshot commit its questions name (``git archive`` of
it is what gets indexed, into ``--work``, kept between runs: an unchanged snapshot is not
indexed again). ``--embedder none`` builds keyword-only indexes and runs the BM25 methods
only (minutes, no model); ``hash`` checks the runner with fake vectors.
Writes ``last_run.json`` (per question, every method's scores and top files) beside this
script or in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from _env import environment_lines  # noqa: E402
from crates_run import K, build_index, file_mrr, file_ndcg, file_ranks, mean, methods  # noqa: E402
from run import FileBm25  # noqa: E402

from build import git_dir_of  # noqa: E402

KEYWORD_METHODS = ("bm25", "bm25 (default)")
DEFAULT_METHODS = "bm25,vector,hybrid,hybrid (default),files (default)"


def load(path: Path) -> list[dict[str, Any]]:
    """The questions, one JSON object a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def export_snapshot(git_dir: Path, commit: str, dest: Path) -> Path:
    """The ``.rs``, ``Cargo.toml`` and README files of ``commit`` under ``dest`` (once: a
    finished export is reused). Blobs a mirror lacks (its largest files) are left out."""
    done = dest / ".exported"
    if done.exists() and done.read_text() == commit:
        return dest
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    listing = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", commit],
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    wanted = []
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        name = path.rsplit("/", 1)[-1]
        if meta.split()[1] == "blob" and (
            name.endswith(".rs") or name == "Cargo.toml" or name.lower().startswith("readme")
        ):
            wanted.append((meta.split()[2], path))
    batch = subprocess.run(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha, _ in wanted).encode(),
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    at, absent = 0, 0
    for _, path in wanted:
        end = batch.index(b"\n", at)
        head = batch[at:end].split()
        if head[-1] == b"missing":
            absent += 1
            at = end + 1
            continue
        size = int(head[2])
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(batch[end + 1 : end + 1 + size])
        at = end + 1 + size + 1
    if absent:
        print(f"  {absent} blobs missing from {git_dir}: left out", file=sys.stderr)
    done.write_text(commit)
    return dest


def hit_at(paths: list[str], relevant: dict[str, int], k: int = K) -> float:
    """1.0 when a relevant file is among the files of the first ``k`` hits.

    >>> hit_at(["a", "b"], {"b": 1}), hit_at(["a"], {"b": 1})
    (1.0, 0.0)
    """
    return float(any(p in relevant for _, p in file_ranks(paths, k)))


def scores(paths: list[str], relevant: dict[str, int]) -> dict[str, float]:
    """MRR@10, hit@10 and file nDCG@10 of one ranked list of paths."""
    return {
        "mrr": file_mrr(paths, relevant),
        "hit": hit_at(paths, relevant),
        "ndcg": file_ndcg(paths, relevant),
    }


def ask_repo(
    questions: list[dict[str, Any]], root: Path, index_dir: Path, chosen: dict, embedder: Any
) -> list[dict[str, Any]]:
    """Every question of one repository with every chosen method and the whole-file floor."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.search import SearchIndex
    from rcm_dask.stores.manifest import Manifest

    manifest = Manifest(index_dir, readonly=True)
    try:
        indexed = sorted(manifest.paths())
    finally:
        manifest.close()
    rows = []
    with tempfile.TemporaryDirectory(prefix="file-bm25-") as tmp:
        floor = FileBm25(Path(tmp), root, indexed)
        with SearchIndex(index_dir, IndexConfig.from_env(), embedder=embedder) as idx:
            for q in questions:
                relevant = {f: 1 for f in q["files"]}
                row: dict[str, Any] = {
                    "id": q["id"], "repo": q["repo"], "half": q["half"],
                    "names_a_file": q["names_a_file"], "scores": {}, "top": {},
                }  # fmt: skip
                files = floor.search(q["question"])
                row["scores"]["file-bm25"] = scores(files, relevant)
                row["top"]["file-bm25"] = files[:3]
                for name, (mode, spec, group) in chosen.items():
                    ranking = None if spec == "default" else spec
                    found = idx.search(
                        q["question"], limit=K, mode=mode, ranking=ranking, group=group
                    )
                    paths = [h.path for h in found]
                    row["scores"][name] = scores(paths, relevant)
                    row["top"][name] = paths[:3]
                rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means per method: all, per half, per repository, and by whether a file is named."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        groups[f"half:{r['half']}"].append(r)
        groups[f"repo:{r['repo']}"].append(r)
        groups["names a file" if r["names_a_file"] else "names no file"].append(r)
    out: dict[str, Any] = {}
    for group, members in groups.items():
        names = members[0]["scores"].keys()
        out[group] = {
            "n": len(members),
            **{
                m: {s: round(mean([r["scores"][m][s] for r in members]), 3) for s in ("mrr", "hit", "ndcg")}
                for m in names
            },
        }
    return out


def table(summary: dict[str, Any]) -> str:
    """A markdown table: one row per group, MRR@10 / hit@10 per method."""
    first = summary["all"]
    names = [m for m in first if m != "n"]
    head = "| group | n | " + " | ".join(f"{m} MRR / hit" for m in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for group in sorted(summary, key=lambda g: (g != "all", not g.startswith("half"), g)):
        row = summary[group]
        cells = [f"{row[m]['mrr']:.3f} / {row[m]['hit']:.2f}" for m in names]
        lines.append(f"| {group} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="+", help="name=GIT_DIR for each repository to ask")
    parser.add_argument("--questions", type=Path, default=HERE / "questions.jsonl")
    parser.add_argument("--embedder", choices=("real", "hash", "none"), default="real")
    parser.add_argument("--methods", default=None, help=f"default: {DEFAULT_METHODS}")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rcm-commits")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)

    embedder: Any = None
    if args.embedder == "hash":
        from rcm_dask.testing import HashEmbedder

        embedder = HashEmbedder()
    keyword_only = args.embedder == "none"
    spec = args.methods or (",".join(KEYWORD_METHODS) if keyword_only else DEFAULT_METHODS)
    chosen = methods(spec)
    if keyword_only and set(chosen) - set(KEYWORD_METHODS):
        parser.error(f"--embedder none runs only {', '.join(KEYWORD_METHODS)}")
    dirs = dict(r.split("=", 1) for r in args.repos)
    by_repo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q in load(args.questions):
        if q["repo"] in dirs:
            by_repo[q["repo"]].append(q)
    missing = sorted(set(dirs) - set(by_repo))
    if missing:
        parser.error(f"no questions for {', '.join(missing)} in {args.questions}")
    rows: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    for repo, questions in sorted(by_repo.items()):
        snapshot = questions[0]["snapshot"]
        root = export_snapshot(git_dir_of(Path(dirs[repo])), snapshot, args.work / repo / "src")
        index_dir = args.work / repo / f"index-{args.embedder}"
        print(f"{repo}: {len(questions)} questions, snapshot {snapshot[:10]}", file=sys.stderr)
        if keyword_only:
            import rcm_dask

            t0 = time.perf_counter()
            stats = rcm_dask.index(str(root), index_dir=str(index_dir), vectors="none", progress=False)
            runs[repo] = {
                "files": stats.files_seen,
                "chunks_written": stats.chunks,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        else:
            runs[repo] = build_index(root, index_dir, embedder, lambda m: print(m, file=sys.stderr))
        t0 = time.perf_counter()
        rows.extend(ask_repo(questions, root, index_dir, chosen, embedder))
        runs[repo]["ask_seconds"] = round(time.perf_counter() - t0, 1)
    summary = summarise(rows)
    print(table(summary))
    result = {
        "environment": environment_lines(),
        "embedder": args.embedder,
        "runs": runs,
        "summary": summary,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "last_run.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
