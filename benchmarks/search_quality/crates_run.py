"""Search quality on twelve Rust crates this project was never tuned on (issue 15).

Unpacks the crates (``fetch_crates.sh``: Debian's ``librust-<crate>-dev`` sources), indexes
each one as a user would (``rcm_dask.index`` on the crate's folder, the bundled model),
asks its questions (``crates/<crate>.jsonl``) and scores the top 10 hits:

- **file level**: nDCG@10 and MRR@10 over the files of the ten hits (a hit counts for
  the file it is in; a file met again counts once, at its first rank);
- **item level**: nDCG@10 over the items, for questions that name answering items.

Methods: ``bm25``, ``vector`` and ``hybrid`` as fusion alone gives them (ranking
``none``); ``hybrid+<step>`` with one ranking step of :mod:`rcm_dask.ranking` on;
``hybrid-<step>`` with all steps but one; ``hybrid+all`` every step; ``hybrid (default)``,
``bm25 (default)``, ``vector (default)`` the search as shipped (``IndexConfig.ranking``);
``files (default)``, the file-level search (``group="file"``); and ``file-bm25``, plain BM25
over whole files, the floor. Crates are split into a tuning half and a held-back half, whole crates each;
settings were chosen on the tuning half only, and both are reported.

Usage:
  python benchmarks/search_quality/crates_run.py               # all twelve crates (~25 min on 2 cores)
  python benchmarks/search_quality/crates_run.py --crates regex,nom
  python benchmarks/search_quality/crates_run.py --embedder hash   # check the runner: fake vectors
  python benchmarks/search_quality/crates_run.py --methods bm25,hybrid,hybrid+all
Writes crates_last_run.json (per question, every method's scores and top hits) and, for a
real run of every crate, the "Twelve crates" tables of REPORT_CRATES.md, beside this
script or in --out DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _env import environment_lines  # noqa: E402
from run import FileBm25  # noqa: E402  (the whole-file floor, shared with the rust-src runner)

from rcm_dask.ranking import RANKING_STEPS  # noqa: E402

K = 10
TUNING = ("regex", "clap", "nom", "crossbeam-channel", "bytes", "tracing-core")
HELD_BACK = ("hyper", "rayon", "syn", "rustls", "mio", "url")
"""Whole crates held back from every tuning decision: settings are judged on these last."""
KINDS = ("behaviour", "architecture", "symbol")
STEPS = RANKING_STEPS


@dataclass(frozen=True)
class CrateQuestion:
    """One question of the multi-crate set."""

    id: str
    crate: str
    question: str
    kind: str
    files: dict[str, int]
    """path -> grade (2 answers, 1 helps)."""
    items: dict[tuple[str, str], int] = field(default_factory=dict)
    """(path, qualname) -> grade; empty when whole files answer."""


def load_crate_questions(folder: Path = HERE / "crates") -> list[CrateQuestion]:
    """Every question of every ``<crate>.jsonl``, checked for shape."""
    out: list[CrateQuestion] = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            d = json.loads(line)
            where = f"{path.name}:{n}"
            if d.get("kind") not in KINDS:
                raise ValueError(f"{where}: kind {d.get('kind')!r} is not one of {KINDS}")
            files = {f["path"]: int(f["grade"]) for f in d.get("files") or []}
            if not any(g == 2 for g in files.values()):
                raise ValueError(f"{where}: no file of grade 2")
            items = {(i["path"], i["qualname"]): int(i["grade"]) for i in d.get("items") or []}
            if any(p not in files for p, _ in items):
                raise ValueError(f"{where}: an item's file is not among its files")
            out.append(
                CrateQuestion(d["id"], d["crate"], d["question"], d["kind"], files, items)
            )
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids repeat")
    return out


# ----------------------------------------------------------------------------- metrics


def file_ranks(paths: Sequence[str], k: int = K) -> list[tuple[int, str]]:
    """(rank, path) of each distinct file among the first ``k`` hits, at its first rank."""
    seen: set[str] = set()
    out = []
    for rank, p in enumerate(paths[:k], 1):
        if p not in seen:
            seen.add(p)
            out.append((rank, p))
    return out


def _ndcg(gains_at: list[tuple[int, int]], ideal: Iterable[int], k: int = K) -> float:
    """nDCG from (rank, gain) pairs and the ideal gains (any order)."""
    dcg = sum(g / math.log2(r + 1) for r, g in gains_at if r <= k)
    best = sorted(ideal, reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(best))
    return dcg / idcg if idcg else 0.0


def file_ndcg(paths: Sequence[str], relevant: dict[str, int], k: int = K) -> float:
    """File-level nDCG@k: each distinct file earns its grade at the rank it first appears.

    >>> round(file_ndcg(["a", "a", "b"], {"b": 2}), 3)
    0.5
    """
    gains = [(r, relevant.get(p, 0)) for r, p in file_ranks(paths, k)]
    return _ndcg(gains, relevant.values(), k)


def file_mrr(paths: Sequence[str], relevant: dict[str, int], k: int = K) -> float:
    """1 / rank of the first hit in a relevant file (0 if none in the top ``k``).

    >>> file_mrr(["x", "a"], {"a": 1})
    0.5
    """
    for rank, p in enumerate(paths[:k], 1):
        if p in relevant:
            return 1.0 / rank
    return 0.0


def item_ndcg(keys: Sequence[tuple[str, str]], relevant: dict[tuple[str, str], int], k: int = K) -> float:
    """Item-level nDCG@k: an item earns its grade at the first hit that is it."""
    seen: set[tuple[str, str]] = set()
    gains = []
    for rank, key in enumerate(keys[:k], 1):
        if key in relevant and key not in seen:
            seen.add(key)
            gains.append((rank, relevant[key]))
    return _ndcg(gains, relevant.values(), k)


# ----------------------------------------------------------------------------- methods


def methods(names: str | None) -> dict[str, tuple[str, str, str]]:
    """Method name -> (search mode, ranking spec, group)."""
    every: dict[str, tuple[str, str, str]] = {
        "bm25": ("bm25", "none", "item"),
        "vector": ("vector", "none", "item"),
        "hybrid": ("hybrid", "none", "item"),
    }
    for s in STEPS:
        every[f"hybrid+{s}"] = ("hybrid", s, "item")
    for s in STEPS:
        every[f"hybrid-{s}"] = ("hybrid", f"all,-{s}", "item")
    every["hybrid+all"] = ("hybrid", "all", "item")
    every["hybrid (default)"] = ("hybrid", "default", "item")
    every["bm25 (default)"] = ("bm25", "default", "item")
    every["vector (default)"] = ("vector", "default", "item")
    every["files (default)"] = ("hybrid", "default", "file")
    if not names:
        return every
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in every and n != "file-bm25"]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {['file-bm25', *every]}")
    return {n: every[n] for n in wanted if n in every}


# ----------------------------------------------------------------------------- the run


def crate_roots() -> dict[str, Path]:
    """crate -> unpacked source folder, from ``fetch_crates.sh``."""
    out = subprocess.run(
        ["bash", str(HERE / "fetch_crates.sh")], check=True, capture_output=True, text=True
    )
    roots = {}
    for line in out.stdout.splitlines():
        name, _, path = line.partition("\t")
        if path:
            roots[name] = Path(path)
    return roots


def build_index(
    root: Path, index_dir: Path, embedder: Any, log: Callable[[str], None], force: bool = False
) -> dict:
    """Index a crate (incremental: an unchanged crate costs a listing; ``force`` rebuilds,
    and so does an index of another chunker version or model, saying so)."""
    import rcm_dask
    from rcm_dask.errors import IndexIdentityError

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"index_dir": str(index_dir), "progress": False, "force": force}
    if embedder is not None:
        kwargs.update(embedder=embedder, mode="sequential")
    try:
        stats = rcm_dask.index(str(root), **kwargs)
    except IndexIdentityError as e:
        log(f"  rebuilding {index_dir}: {e}")
        stats = rcm_dask.index(str(root), **{**kwargs, "force": True})
    seconds = time.perf_counter() - t0
    log(
        f"  indexed {root.name}: {stats.files_indexed} files indexed, "
        f"{stats.files_unchanged} unchanged, {stats.chunks} chunks in {seconds:.1f} s"
    )
    return {"files": stats.files_seen, "chunks_written": stats.chunks, "seconds": round(seconds, 1)}


def ask(
    questions: Sequence[CrateQuestion],
    index_dir: Path,
    root: Path,
    chosen: dict[str, tuple[str, str, str]],
    with_floor: bool,
    embedder: Any,
) -> list[dict[str, Any]]:
    """Every question of one crate with every chosen method: scores and top hits."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.search import SearchIndex
    from rcm_dask.stores.manifest import Manifest

    floor = None
    tmp = None
    if with_floor:
        manifest = Manifest(index_dir, readonly=True)
        try:
            paths = sorted(manifest.paths())  # the files the index holds
        finally:
            manifest.close()
        tmp = tempfile.TemporaryDirectory(prefix="file-bm25-")
        floor = FileBm25(Path(tmp.name), root, paths)
    rows = []
    try:
        with SearchIndex(index_dir, IndexConfig.from_env(), embedder=embedder) as idx:
            for q in questions:
                row: dict[str, Any] = {"id": q.id, "crate": q.crate, "kind": q.kind, "scores": {}, "top": {}}
                if floor is not None:
                    files = floor.search(q.question)
                    row["scores"]["file-bm25"] = _scores(files, [], q)
                    row["top"]["file-bm25"] = files[:3]
                for name, (mode, spec, group) in chosen.items():
                    ranking = None if spec == "default" else spec  # None: the config's
                    if group == "file":
                        groups = idx.search(q.question, limit=K, mode=mode, ranking=ranking, group="file")
                        paths = [g.path for g in groups]
                        keys = [(h.path, h.qualname) for g in groups for h in g.hits[:1]]
                    else:
                        hits = idx.search(q.question, limit=K, mode=mode, ranking=ranking)
                        paths = [h.path for h in hits]
                        keys = [(h.path, h.qualname) for h in hits]
                    row["scores"][name] = _scores(paths, keys, q)
                    row["top"][name] = [f"{p} {k[1]}" for p, k in zip(paths[:3], keys[:3])]
                rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows


def _scores(paths: Sequence[str], keys: Sequence[tuple[str, str]], q: CrateQuestion) -> dict:
    """File nDCG and MRR, and item nDCG when the question names items."""
    out = {"file_ndcg": file_ndcg(paths, q.files), "file_mrr": file_mrr(paths, q.files)}
    if q.items and keys:
        out["item_ndcg"] = item_ndcg(keys, q.items)
    elif q.items:
        out["item_ndcg"] = float("nan")  # file-bm25 returns files, not items
    return out


def mean(values: Sequence[float]) -> float:
    """Mean of the values that are numbers; NaN for none."""
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def summarise(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Means per method over all rows, per kind and per crate."""

    def block(sub: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = {"n": len(sub)}
        for m in names:
            sc = [r["scores"][m] for r in sub if m in r["scores"]]
            out[m] = {
                "file_ndcg": mean([s["file_ndcg"] for s in sc]),
                "file_mrr": mean([s["file_mrr"] for s in sc]),
                "item_ndcg": mean([s["item_ndcg"] for s in sc if "item_ndcg" in s]),
                "n_items": sum(1 for s in sc if "item_ndcg" in s),
            }
        return out

    return {
        "all": block(rows),
        "kind": {k: block([r for r in rows if r["kind"] == k]) for k in KINDS},
        "crate": {c: block([r for r in rows if r["crate"] == c]) for c in sorted({r["crate"] for r in rows})},
    }


def fmt(x: float) -> str:
    """Three decimals, ``-`` for NaN."""
    return "-" if math.isnan(x) else f"{x:.3f}"


def tables(result: dict[str, Any]) -> str:
    """The Markdown tables of a run: both halves, per kind, per crate."""
    names = result["methods"]
    lines = []
    for half in ("held_back", "tuning"):
        s = result["summary"].get(half)
        if not s:
            continue
        title = "Held-back half" if half == "held_back" else "Tuning half"
        crates = ", ".join(sorted(s["crate"]))
        lines += [
            f"### {title} ({s['all']['n']} questions: {crates})",
            "",
            "| method | file nDCG@10 | file MRR@10 | item nDCG@10 | behaviour | architecture | symbol |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in names:
            a = s["all"][m]
            per_kind = [fmt(s["kind"][k][m]["file_ndcg"]) for k in KINDS]
            lines.append(
                f"| {m} | {fmt(a['file_ndcg'])} | {fmt(a['file_mrr'])} | {fmt(a['item_ndcg'])} "
                f"| {' | '.join(per_kind)} |"
            )
        kinds_n = ", ".join(f"{k} {s['kind'][k]['n']}" for k in KINDS)
        lines += ["", f"Per kind: file nDCG@10 ({kinds_n} questions).", ""]
        show = [m for m in ("file-bm25", "bm25", "vector", "hybrid", "hybrid (default)", "files (default)") if m in names]
        lines += [
            "| crate | " + " | ".join(show) + " |",
            "|---|" + "---:|" * len(show),
        ]
        for c, block in s["crate"].items():
            lines.append(f"| {c} | " + " | ".join(fmt(block[m]["file_ndcg"]) for m in show) + " |")
        lines += ["", "File nDCG@10 per crate.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crates", default="", help="comma-separated crates (default: all twelve)")
    p.add_argument("--methods", default="", help="comma-separated methods (default: all)")
    p.add_argument("--embedder", choices=("model", "hash"), default="model")
    p.add_argument("--home", default="", help="where the indexes go (default $RCM_HOME/search-quality/crates)")
    p.add_argument("--out", default="", help="folder for crates_last_run.json / the report")
    p.add_argument("--force", action="store_true", help="rebuild the crates' indexes")
    args = p.parse_args(argv)

    from rcm_dask.config import data_home

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    questions = load_crate_questions()
    wanted = [c for c in args.crates.split(",") if c] or list(TUNING + HELD_BACK)
    chosen = methods(args.methods)
    with_floor = not args.methods or "file-bm25" in args.methods.split(",")
    names = (["file-bm25"] if with_floor else []) + list(chosen)
    embedder = None
    suffix = "minilm"
    if args.embedder == "hash":
        from run import HashEmbedder

        embedder, suffix = HashEmbedder(), "hash"
    home = Path(args.home) if args.home else data_home() / "search-quality" / "crates"
    roots = crate_roots()
    rows: list[dict[str, Any]] = []
    built: dict[str, Any] = {}
    t0 = time.perf_counter()
    for crate in wanted:
        if crate not in roots:
            raise SystemExit(f"unknown crate {crate!r}; known: {sorted(roots)}")
        index_dir = home / f"{crate}-{suffix}"
        built[crate] = build_index(roots[crate], index_dir, embedder, log, args.force)
        qs = [q for q in questions if q.crate == crate]
        t1 = time.perf_counter()
        rows += ask(qs, index_dir, roots[crate], chosen, with_floor, embedder)
        log(f"  asked {len(qs)} questions of {crate} in {time.perf_counter() - t1:.1f} s")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment_lines(),
        "embedder": args.embedder,
        "crates": {c: {"root": str(roots[c]), **built[c]} for c in wanted},
        "methods": names,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": {
            "tuning": summarise([r for r in rows if r["crate"] in TUNING], names),
            "held_back": summarise([r for r in rows if r["crate"] in HELD_BACK], names),
        },
        "questions": rows,
    }
    result["summary"] = {k: v for k, v in result["summary"].items() if v["all"]["n"]}
    out = Path(args.out) if args.out else HERE
    out.mkdir(parents=True, exist_ok=True)
    (out / "crates_last_run.json").write_text(json.dumps(result, default=float) + "\n")
    text = tables(result)
    print(text)
    if args.embedder == "model" and set(wanted) == set(TUNING + HELD_BACK) and not args.methods:
        (out / "REPORT_CRATES.md").write_text(
            "# Twelve crates: tables of the last full run\n\n"
            f"Measured by `python benchmarks/search_quality/crates_run.py` on {result['date']}.\n\n"
            + "\n".join(result["environment"])
            + "\n\n"
            + text
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
