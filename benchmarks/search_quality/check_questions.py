"""Validate questions.jsonl against the project's chunker, and count the set.

Every relevant ``(path, qualname)`` must be a chunk that :func:`rcm_dask.chunking.chunk_source`
produces for that file of rust-src's ``library/`` (paths relative to ``library/``, as
when ``library/`` is the indexed root). Prints the problems and exits 1, else prints
counts by crate, area and kind and exits 0.

Usage:
  python benchmarks/search_quality/check_questions.py [--library DIR] [--questions FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _env import rust_src
from evalset import QUESTIONS, Question, load_questions, validate

from rcm_dask.chunking import chunk_source
from rcm_dask.records import SourceFile


def find_library() -> Path:
    """rust-src's ``library/`` folder (``benchmarks/rust_src.sh`` installs it when missing)."""
    return rust_src() / "library"


def chunk_names(library: Path, paths: Iterable[str]) -> dict[str, set[str]]:
    """The qualnames the chunker produces for each existing file among ``paths``."""
    out: dict[str, set[str]] = {}
    for rel in sorted(set(paths)):
        f = library / rel
        if not f.is_file():
            continue
        data = f.read_bytes()
        text = data.decode("utf-8")
        source = SourceFile(rel, len(data), None, hashlib.sha256(data).hexdigest(), text)
        out[rel] = {c.qualname for c in chunk_source(source)}
    return out


def check(questions: list[Question], library: Path) -> list[str]:
    """Problems with the set (see :func:`evalset.validate`), chunking the files it names."""
    names = chunk_names(library, (p for q in questions for p, _ in q.relevant))
    return validate(questions, names)


def summary(questions: list[Question]) -> str:
    """Counts by crate, area and kind, and how many questions name an identifier."""
    lines = [f"{len(questions)} questions, {sum(len(q.relevant) for q in questions)} items"]
    for label, counter in (
        ("crate", Counter(q.crate for q in questions)),
        ("area", Counter(q.area for q in questions)),
        ("kind", Counter(q.kind for q in questions)),
        ("grade", Counter(g for q in questions for g in q.relevant.values())),
    ):
        body = ", ".join(f"{k} {n}" for k, n in sorted(counter.items(), key=lambda kv: -kv[1]))
        lines.append(f"by {label}: {body}")
    named = sum(q.mentions_identifier for q in questions)
    lines.append(
        f"name an identifier: {named} ({named / max(len(questions), 1):.0%}); "
        f"no identifier: {len(questions) - named}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Validate the set; print problems (exit 1) or the counts (exit 0)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, default=None, help="rust-src library/ folder")
    ap.add_argument("--questions", type=Path, default=QUESTIONS)
    args = ap.parse_args(argv)
    questions = load_questions(args.questions)
    problems = check(questions, args.library or find_library())
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summary(questions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
