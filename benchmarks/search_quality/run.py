"""Retrieval quality and query latency on rust-src ``library/``, from questions.jsonl.

Indexes a scope of ``library/`` (``library/`` itself is the indexed root, so paths and
qualnames are the ones the questions name) with :func:`rcm_dask.index`, then asks every
question whose relevant items all lie in the scope, with each search mode of
:meth:`rcm_dask.search.SearchIndex.search` (``bm25``, ``vector``, ``hybrid``, limit 10)
and with a plain file-level BM25 baseline built here (Tantivy, one document per whole
file, ``en_stem`` words, no identifier splitting; a returned file counts as a hit for
every relevant item in it). Reports MRR@10, recall@10 and graded nDCG@10 per method
(see ``evalset.py``), and warm latency p50/p95 per method, query embedding included.

Usage:
  python benchmarks/search_quality/run.py                  # small: 25k chunks, ~9 min on 2 cores
  python benchmarks/search_quality/run.py --size full      # all of library/: 132k chunks, ~45 min
  python benchmarks/search_quality/run.py --index-dir DIR  # reuse an index this script built
  python benchmarks/search_quality/run.py --embedder hash  # quick check of the runner: fake vectors
  python benchmarks/search_quality/run.py --model DIR      # another local model
Writes last_run.json and (for a real run: the default model, a named size) REPORT_RUST_SRC.md
beside this script, or in --out DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from rcm_dask import testing

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

# what every report records: the lock's hash, CPU, cores, GPU (shared by benchmarks/*)
from _env import cpu_model, environment_lines, environment_summary, rust_src, usable_cores
from evalset import (
    Key,
    Question,
    load_questions,
    ndcg,
    percentile,
    recall,
    reciprocal_rank,
    set_fingerprint,
)

SEARCH_MODES = ("bm25", "vector", "hybrid")
FILE_LEVEL = tuple(f"{mode}-files" for mode in SEARCH_MODES)
"""Each search mode judged like the file-level baseline: its hits reduced to their
distinct files, best first, and a file covers every relevant item it holds."""
METHODS = ("file-bm25", *SEARCH_MODES, *FILE_LEVEL)
K = 10
FILE_POOL = 50
"""Chunk hits asked for to make ten distinct files."""


def distinct_files(paths: Iterable[str], k: int = K) -> list[str]:
    """The first ``k`` distinct paths, in order."""
    return list(dict.fromkeys(paths))[:k]


@dataclass(frozen=True)
class Scope:
    """Which part of ``library/`` is indexed: paths under ``include`` and not under ``exclude``
    (relative to ``library/``; ``exclude`` may be computed from the tree)."""

    name: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    exclude_globs: tuple[str, ...] = ()
    """Unanchored gitignore patterns also left out (``tests/``)."""


TEST_GLOBS = ("tests/", "tests.rs", "benches/")
"""Unit tests inside ``src/`` folders: no question points into them."""


def small_scope(library: Path) -> Scope:
    """The crates the questions are about (alloc, core, std sources), without their unit
    tests, std's per-OS extension modules, platform layers other than ``unix`` and
    ``common``, and core's ``num`` and ``unicode`` folders (generated tables and
    2,000-line integer macros): about 25,000 chunks once long items are split, which the
    default model embeds in about 8 minutes on 2 cores (at 50 chunks/s)."""
    sys_dir = library / "std" / "src" / "sys"
    other_platforms = sorted(
        f"std/src/sys/{d.name}"
        for d in sys_dir.iterdir()
        if d.is_dir() and d.name not in ("unix", "common")
    )
    return Scope(
        "small",
        ("alloc/src", "core/src", "std/src"),
        ("core/src/num", "core/src/unicode", "std/src/os", *other_platforms),
        TEST_GLOBS,
    )


def _under(rel: str, prefixes: Iterable[str]) -> bool:
    """Whether ``rel`` is one of ``prefixes`` or lies under one."""
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


def exclude_patterns(library: Path, scope: Scope) -> list[str]:
    """Anchored gitignore patterns that leave only the scope of ``library`` to index.

    The tree is walked only along the way to the scope's folders, so the list stays
    short: one pattern per sibling that lies outside."""
    patterns: list[str] = []
    stack = [""]
    while stack:
        folder = stack.pop()
        for entry in sorted((library / folder).iterdir()):
            rel = f"{folder}/{entry.name}" if folder else entry.name
            is_dir = entry.is_dir()
            inside = _under(rel, scope.include) and not _under(rel, scope.exclude)
            leads_in = is_dir and any(p.startswith(rel + "/") for p in scope.include)
            leads_to_exclude = (
                is_dir and inside and any(p.startswith(rel + "/") for p in scope.exclude)
            )
            if leads_in or leads_to_exclude:
                stack.append(rel)
            elif not inside:
                patterns.append("/" + rel + ("/" if is_dir else ""))
    return patterns + list(scope.exclude_globs)


class HashEmbedder(testing.HashEmbedder):
    """Fake embedder for quick checks of the runner: the tests' hashed bag of words
    (:class:`rcm_dask.testing.HashEmbedder`, 64 dimensions) with this benchmark's token
    budget and fingerprint.

    Its vectors carry no meaning beyond shared words; figures made with it say nothing
    about the model. Use it with the ``sequential`` mode (which this script forces for it)."""

    max_tokens = 256
    fingerprint = "search-quality-hash-v1"


# --------------------------------------------------------------------------- file baseline


class FileBm25:
    """Plain BM25 over whole files: the baseline a code search must beat.

    One Tantivy document per file, its text through Tantivy's ``en_stem`` analyzer
    (split on non-alphanumerics, lowercase, English stemming): no identifier splitting,
    no fields, no boosts. A query's words go through the same analyzer and are OR-ed."""

    def __init__(self, folder: Path, library: Path, paths: Sequence[str]) -> None:
        import tantivy

        self._tantivy = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("path", stored=True, tokenizer_name="raw")
        builder.add_text_field("body", tokenizer_name="en_stem")
        self.schema = builder.build()
        self.index = tantivy.Index(self.schema, path=str(folder))
        writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        for rel in paths:
            text = (library / rel).read_text(encoding="utf-8", errors="replace")
            writer.add_document(tantivy.Document(path=rel, body=text))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stemmer("english"))
            .build()
        )

    def search(self, query: str, limit: int = K) -> list[str]:
        """Paths of the best files, best first."""
        tantivy = self._tantivy
        terms = list(dict.fromkeys(self.analyzer.analyze(query)))
        if not terms:
            return []
        should = [
            (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "body", t)) for t in terms
        ]
        searcher = self.index.searcher()
        result = searcher.search(tantivy.Query.boolean_query(should), limit)
        return [str(searcher.doc(addr).get_first("path")) for _, addr in result.hits]


# --------------------------------------------------------------------------- the run


def find_library() -> Path:
    """rust-src's ``library/`` folder (``benchmarks/rust_src.sh`` installs it when missing)."""
    return rust_src() / "library"


def covered_by_hits(hits: Sequence[Any]) -> list[set[Key]]:
    """What each chunk hit covers: the item with its exact path and qualname."""
    return [{(h.path, h.qualname)} for h in hits]


def covered_by_files(files: Sequence[str], relevant: dict[Key, int]) -> list[set[Key]]:
    """What each file hit covers: every relevant item in that file."""
    return [{key for key in relevant if key[0] == f} for f in files]


def score(
    ranked: Sequence[Iterable[Key]], relevant: dict[Key, int], k: int = K
) -> dict[str, float]:
    """MRR, recall and nDCG of one ranked list."""
    ranked = [set(r) for r in ranked]
    return {
        "mrr": reciprocal_rank(ranked, relevant, k),
        "recall": recall(ranked, relevant, k),
        "ndcg": ndcg(ranked, relevant, k),
    }


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    return sum(values) / len(values) if values else float("nan")


def summarise(per_question: list[dict[str, Any]], latencies: dict[str, list[float]]) -> dict:
    """Mean metrics per method (all questions, and split by whether the question names an
    identifier), and latency percentiles in milliseconds."""
    out: dict[str, Any] = {}
    for method in METHODS:
        rows = [r["scores"][method] for r in per_question]
        entry: dict[str, Any] = {m: mean([r[m] for r in rows]) for m in ("mrr", "recall", "ndcg")}
        for label, flag in (("named", True), ("unnamed", False)):
            sub = [r["scores"][method] for r in per_question if r["mentions_identifier"] is flag]
            entry[f"ndcg_{label}"] = mean([r["ndcg"] for r in sub])
            entry[f"n_{label}"] = len(sub)
        lat = latencies.get(method, [])
        entry["p50_ms"] = percentile(lat, 50) * 1000 if lat else float("nan")
        entry["p95_ms"] = percentile(lat, 95) * 1000 if lat else float("nan")
        out[method] = entry
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn``; return its result and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def evaluate(
    questions: Sequence[Question],
    index_dir: Path,
    baseline: FileBm25,
    embedder: Any,
    warmup: int,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Ask every question with every method; per-question scores and ranks, and latencies.

    Each method first answers ``warmup`` questions untimed (model weights, caches and
    the vector store are loaded then). Methods are interleaved question by question, so
    that a noisy neighbour on the machine slows them alike."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.search import SearchIndex

    latencies: dict[str, list[float]] = {m: [] for m in METHODS}
    rows: list[dict[str, Any]] = []
    with SearchIndex(index_dir, IndexConfig.from_env(), embedder=embedder) as idx:
        for q in questions[:warmup]:
            baseline.search(q.question)
            for mode in SEARCH_MODES:
                idx.search(q.question, limit=K, mode=mode)
        for n, q in enumerate(questions, 1):
            files, dt = timed(partial(baseline.search, q.question))
            latencies["file-bm25"].append(dt)
            ranked: dict[str, list[set[Key]]] = {"file-bm25": covered_by_files(files, q.relevant)}
            top: dict[str, list[str]] = {"file-bm25": files[:3]}
            for mode in SEARCH_MODES:
                hits, dt = timed(partial(idx.search, q.question, limit=K, mode=mode))
                latencies[mode].append(dt)
                ranked[mode] = covered_by_hits(hits)
                top[mode] = [f"{h.path} {h.qualname}" for h in hits[:3]]
                pool = idx.search(q.question, limit=FILE_POOL, mode=mode)
                ranked[f"{mode}-files"] = covered_by_files(
                    distinct_files(h.path for h in pool), q.relevant
                )
            scores = {m: score(ranked[m], q.relevant) for m in METHODS}
            rows.append(
                {
                    "id": q.id,
                    "question": q.question,
                    "kind": q.kind,
                    "crate": q.crate,
                    "mentions_identifier": q.mentions_identifier,
                    "scores": scores,
                    "top3": top,
                }
            )
            if n % 20 == 0:
                log(f"  {n}/{len(questions)} questions")
    return rows, latencies


def versions() -> dict[str, str]:
    """Versions of the packages that shape the figures, and the repository's commit."""
    out = {"python": platform.python_version()}
    for dist in ("rcm_dask", "torch", "transformers", "tantivy", "qdrant-client", "tree-sitter"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "status", "--porcelain", "--", "../../rcm_dask"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out["commit"] = commit + (" (rcm_dask modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["commit"] = "-"
    return out


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    cpu = cpu_model()
    usable = usable_cores()
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "cores": usable,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def fmt(x: float, digits: int = 3) -> str:
    """A figure for a table; '-' for NaN."""
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def table(summary: dict[str, Any]) -> str:
    """The figures as a Markdown table, one row per method."""
    rows = [
        "| method | MRR@10 | recall@10 | nDCG@10 | nDCG@10 named / unnamed | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        s = summary[method]
        rows.append(
            f"| {method} | {fmt(s['mrr'])} | {fmt(s['recall'])} | {fmt(s['ndcg'])} "
            f"| {fmt(s['ndcg_named'])} / {fmt(s['ndcg_unnamed'])} "
            f"| {fmt(s['p50_ms'], 1)} | {fmt(s['p95_ms'], 1)} |"
        )
    return "\n".join(rows)


def scope_rule(scope: dict[str, Any]) -> str:
    """How a scope was chosen, in words."""
    if scope["include"] == [""]:
        return "every file the index holds"
    rule = "under " + ", ".join(scope["include"])
    if scope["exclude"]:
        rule += "; not under " + ", ".join(scope["exclude"])
    if scope["exclude_globs"]:
        rule += "; not matching " + ", ".join(scope["exclude_globs"])
    return rule


def report(result: dict[str, Any]) -> str:
    """REPORT_RUST_SRC.md: what was run, where, and the figures (REPORT.md is the folder's
    written report, which this run leaves alone)."""
    m, v, s = result["machine"], result["versions"], result["scope"]
    ix = result["index"]
    if ix["reused"]:
        built = f"the index at {ix['index_dir']} was reused as it was"
    else:
        built = f"indexing took {fmt(ix['seconds'], 1)} s in {ix['mode']} mode"
    env = "\n".join(environment_lines(result["environment"]))
    return f"""# benchmarks/search_quality — report

Measured by `{result["command"]}` on {time.strftime("%Y-%m-%d", time.gmtime(result["finished"]))}.

{env}
- **Memory**: {m["memory_gb"]} GB; load average at the end {m["load_avg"]}.
- **Versions**: {", ".join(f"{k} {val}" for k, val in v.items())}.
- **Model**: {result["model"]}. Search settings: {
        ", ".join(f"{k} {val}" for k, val in result["search_config"].items())
    }.
- **Scope** `{s["name"]}`: {s["files"]} files of `library/` ({scope_rule(s)}),
  {ix["chunks"]} chunks; {built}.
- **Questions**: {result["questions_used"]} of {result["questions_total"]} (those whose
  relevant items all lie in the scope), set `{result["set_fingerprint"]}`.
- Latency: warm ({result["warmup"]} untimed warm-up questions per method), wall time of one
  `SearchIndex.search(query, limit=10, mode=...)` call, query embedding included; file-bm25
  is this script's own whole-file Tantivy index.
- Two granularities. `bm25`, `vector`, `hybrid`: the ten chunk hits, each covering its own
  item (path and qualified name). `file-bm25` and the `-files` rows: ten distinct files (the
  `-files` rows take them from the first {FILE_POOL} chunk hits of that mode), each covering
  every relevant item in it: an easier target, so compare file rows with file rows.

{table(result["summary"])}

"named / unnamed": nDCG@10 over the questions that do / do not name a Rust identifier
({result["summary"]["hybrid"]["n_named"]} / {result["summary"]["hybrid"]["n_unnamed"]}).
Per-question scores and top hits are in `last_run.json`.
"""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures; write last_run.json and REPORT_RUST_SRC.md."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--index-dir", type=Path, help="reuse this index (built over library/)")
    ap.add_argument("--embedder", choices=("model", "hash"), default="model")
    ap.add_argument("--model", help="local Hugging Face model folder (default: the bundled one)")
    ap.add_argument("--precision", help="embedding precision (default: RCM_PRECISION, else auto)")
    ap.add_argument("--library", type=Path, help="rust-src library/ folder")
    ap.add_argument("--warmup", type=int, default=3, help="untimed questions per method")
    ap.add_argument("--out", type=Path, help="where last_run.json and REPORT_RUST_SRC.md go")
    ap.add_argument("--force", action="store_true", help="rebuild the index from scratch")
    # a few files instead of a named size: for tests of this script, not for figures
    ap.add_argument("--scope", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import rcm_dask
    from rcm_dask.config import IndexConfig, data_home
    from rcm_dask.embedding import Embedder
    from rcm_dask.sources import discover_sources, open_root
    from rcm_dask.stores.manifest import Manifest

    library = (args.library or find_library()).resolve()
    if args.scope:
        scope = Scope("custom", tuple(p.strip("/") for p in args.scope))
    elif args.size == "small":
        scope = small_scope(library)
    else:
        scope = Scope("full", ("",))
    patterns = [] if scope.include == ("",) else exclude_patterns(library, scope)
    files = [
        f.path for f in discover_sources(open_root(str(library)), exclude=tuple(patterns)).files
    ]
    questions = load_questions()

    def answerable(paths: Iterable[str]) -> list[Question]:
        """The questions whose relevant items all lie in these files."""
        have = set(paths)
        return [q for q in questions if all(path in have for path, _ in q.relevant)]

    if not args.index_dir:
        log(f"scope {scope.name}: {len(files)} files, {len(answerable(files))} questions")
        if not answerable(files):
            log("no question has all its relevant items in this scope")
            return 1

    embedder: Any
    if args.embedder == "hash":
        embedder, model_label = HashEmbedder(), "hash embedder (fake vectors: not a model)"
    elif args.model or args.precision or not args.index_dir:
        precision = args.precision or IndexConfig.from_env().precision
        embedder = Embedder(args.model, precision=precision)
        model_label = f"{embedder.name} ({embedder.model_dir}), {embedder.precision}"
    else:
        embedder, model_label = None, "the model the index names"

    index_info: dict[str, Any] = {"reused": bool(args.index_dir)}
    if args.index_dir:
        index_dir = args.index_dir.expanduser()
    else:
        tag = (
            "hash"
            if args.embedder == "hash"
            else f"{Path(embedder.model_dir).name}-{embedder.precision}"
        )
        index_dir = data_home() / "search-quality" / f"{scope.name}-{tag}"
        if scope.name == "custom":
            digest = hashlib.sha256("\0".join(scope.include).encode()).hexdigest()[:8]
            index_dir = index_dir.with_name(f"{index_dir.name}-{digest}")
        log(f"indexing into {index_dir} (incremental; --force rebuilds)")
        mode = "sequential" if args.embedder == "hash" else None

        def build(force: bool) -> Any:
            return rcm_dask.index(
                str(library),
                mode=mode,
                force=force,
                embedder=embedder,
                index_dir=str(index_dir),
                exclude=tuple(patterns),
            )

        try:
            stats, seconds = timed(lambda: build(args.force))
        except rcm_dask.IndexIdentityError as e:
            # this script's own index, left by an older chunker or model: rebuild it
            log(f"rebuilding: {e}")
            stats, seconds = timed(lambda: build(True))
        index_info.update(
            seconds=seconds,
            files_indexed=stats.files_indexed,
            files_unchanged=stats.files_unchanged,
            chunks_written=stats.chunks,
            mode=stats.mode,
        )
        log(
            f"indexed {stats.files_indexed} files ({stats.files_unchanged} unchanged) "
            f"in {seconds:.1f} s"
        )
    with rcm_dask.open_index(index_dir) as idx:
        status = idx.status()
    index_info.update(index_dir=str(index_dir), chunks=status["chunks"], files=status["files"])
    # what the index holds is the scope (a reused index may have been built with other
    # excludes): the questions and the file baseline follow it
    manifest = Manifest(index_dir, readonly=True)
    try:
        files = manifest.paths()
    finally:
        manifest.close()
    missing = [f for f in files if not (library / f).is_file()]
    if missing:
        log(f"{index_dir} holds {missing[0]}, which is not under {library}: index library/ itself")
        return 1
    if args.index_dir:
        scope = Scope(f"index {index_dir}", ("",))
    used = answerable(files)
    log(f"{len(files)} files indexed; {len(used)} of {len(questions)} questions answerable")
    if not used:
        log("no question has all its relevant items in this index")
        return 1

    with tempfile.TemporaryDirectory(prefix="rcm-file-bm25-") as tmp:
        log("building the file-level BM25 baseline")
        baseline = FileBm25(Path(tmp), library, files)
        log(f"asking {len(used)} questions with {', '.join(METHODS)}")
        rows, latencies = evaluate(used, index_dir, baseline, embedder, args.warmup, log)

    summary = summarise(rows, latencies)
    result: dict[str, Any] = {
        "command": "python benchmarks/search_quality/run.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "finished": time.time(),
        "machine": machine(),
        "environment": environment_summary(),
        "versions": versions(),
        "model": model_label,
        "scope": {
            "name": scope.name,
            "include": list(scope.include),
            "exclude": list(scope.exclude),
            "exclude_globs": list(scope.exclude_globs),
            "files": len(files),
        },
        "index": index_info,
        "questions_total": len(questions),
        "questions_used": len(used),
        "set_fingerprint": set_fingerprint(),
        "warmup": args.warmup,
        "search_config": {
            name: getattr(IndexConfig.from_env(), name)
            for name in ("candidates", "rrf_k", "bm25_weight", "vector_weight")
        },
        "k": K,
        "summary": summary,
        "questions": rows,
    }
    out = args.out or HERE
    out.mkdir(parents=True, exist_ok=True)
    (out / "last_run.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(summary))
    real = args.embedder == "model" and not args.model and not args.scope
    if real or args.out:
        (out / "REPORT_RUST_SRC.md").write_text(report(result))
        log(f"wrote {out / 'REPORT_RUST_SRC.md'} and {out / 'last_run.json'}")
    else:
        log(f"wrote {out / 'last_run.json'} (no REPORT_RUST_SRC.md for a quick check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
