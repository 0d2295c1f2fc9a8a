"""Build commit-subject questions from the git history of Rust repositories (issue 24).

A commit's subject line is a question a developer really asked of a codebase ("ignore:
fix handling of absolute paths in gitignore"), and the files the commit changed are where
its answer lies. This turns a repository's history into such (question, files) pairs,
judged against one snapshot of the repository (its newest commit here) so that one index
answers every question of a repository.

A commit becomes a question when:

- it is not a merge, and changes 1 or 2 ``.rs`` files that are not tests, benches,
  examples or fuzz targets (:func:`is_test_path`), each still at that path in the snapshot,
  and 6 ``.rs`` files at most in all (a wide refactor has no "where");
- its subject, without a trailing ``(#123)``, has at least 4 words and is not release,
  version, formatting, lint, CI, dependency or typo housekeeping (:data:`HOUSEKEEPING`).

From the commits that qualify, ``--per-repo`` are drawn, spread evenly over the history
(newest to oldest, deterministic). Repositories are split into a tuning half and a
held-back half, whole repositories each (``--held-back``).

Usage::

    python benchmarks/search_quality/commits/build.py --out questions.jsonl \\
        ripgrep=/path/to/ripgrep.git fd=/path/to/fd.git ...

Each argument is ``name=GIT_DIR`` (a clone or a bare mirror). tokio, serde, axum and burn
are refused: they are reserved for an independent measure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

RESERVED = ("tokio", "serde", "axum", "burn")
"""Projects never used in an evaluation set, a trial or a tuning run."""

RESERVED_WORD = re.compile(r"(?i)\b(?:" + "|".join(RESERVED) + r")\b")
"""A subject that names a reserved project (``globset: fix compilation when serde is enabled``)."""

HOUSEKEEPING = re.compile(
    r"""(?ix)
    ^\s*(?:v?\d+\.\d+|release|releasing|prepare\s+release|bump|version|changelog|
           merge|revert|rustfmt|cargo\s+fmt|fmt\b|format\b|formatting|clippy|lint|ci\b|
           deps?\b|dependabot|update\s+(?:dependencies|deps|msrv|changelog|readme|copyright))
    | \btypos?\b | \bwhitespace\b | \bclippy\b | \brustfmt\b | \bmsrv\b | \bchangelog\b
    | \bcargo\s+fmt\b | \breformat
    | ^\S+:\s*(?:v?\d+\.\d+\S*|release|bump)\b
    | ^[\w.-]+-\d+\.\d+\.\d+$
    """
)
"""Subjects that say nothing about where behaviour lives."""

PR_SUFFIX = re.compile(r"\s*\((?:#\d+(?:,\s*)?)+\)\s*$")


@dataclass(frozen=True)
class CommitQuestion:
    """One commit subject and the files its commit changed."""

    id: str
    """``<repo>-<short hash>``."""
    repo: str
    """The repository's name in this set."""
    snapshot: str
    """The commit whose tree is indexed to answer the question."""
    commit: str
    """The commit the subject comes from."""
    date: str
    """Its commit date (YYYY-MM-DD)."""
    question: str
    """The subject line, without a trailing pull-request number."""
    files: tuple[str, ...]
    """The non-test ``.rs`` files it changed, as paths in the snapshot."""
    half: str
    """``tuning`` or ``held-back``."""
    names_a_file: bool
    """Whether the subject names one of the files' stems (``walk: ...`` for walk.rs)."""


def is_test_path(path: str) -> bool:
    """Whether a repository path is test, bench, example or fuzz code.

    >>> is_test_path("crates/ignore/tests/gitignore.rs"), is_test_path("src/walk.rs")
    (True, False)
    >>> is_test_path("src/tests.rs"), is_test_path("benches/bench.rs")
    (True, True)
    """
    parts = path.split("/")
    folders = set(parts[:-1])
    name = parts[-1]
    if folders & {"tests", "test", "benches", "bench", "examples", "fuzz", "testdata", "tests-"}:
        return True
    return name in ("tests.rs", "test.rs") or name.endswith(("_test.rs", "_tests.rs"))


def git(git_dir: Path, *args: str) -> str:
    """Output of a git command in ``git_dir``."""
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        capture_output=True,
        text=True,
        check=True,
        errors="replace",
    ).stdout


def git_dir_of(path: Path) -> Path:
    """The git directory of a clone or a bare repository."""
    return path / ".git" if (path / ".git").exists() else path


def history(git_dir: Path) -> Iterator[tuple[str, str, str, list[str]]]:
    """(hash, date, subject, changed paths) of every non-merge commit, newest first."""
    out = git(
        git_dir, "log", "--no-merges", "--no-renames", "--format=%x00%H%x1f%cs%x1f%s",
        "--name-only", "HEAD",
    )  # fmt: skip
    for block in out.split("\x00")[1:]:
        head, _, rest = block.partition("\n")
        sha, date, subject = head.split("\x1f", 2)
        yield sha, date, subject, [p for p in rest.splitlines() if p.strip()]


def qualifies(subject: str, paths: Sequence[str], snapshot_files: set[str]) -> tuple[str, ...]:
    """The target files when a commit makes a question, else ``()``."""
    rust = [p for p in paths if p.endswith(".rs")]
    if not rust or len(rust) > 6:
        return ()
    targets = tuple(p for p in rust if not is_test_path(p))
    if not 1 <= len(targets) <= 2 or any(p not in snapshot_files for p in targets):
        return ()
    text = PR_SUFFIX.sub("", subject).strip()
    if len(text.split()) < 4 or HOUSEKEEPING.search(text):
        return ()
    if RESERVED_WORD.search(text):
        return ()  # even another project's code for a reserved one stays out of the set
    return targets


def names_a_file(question: str, files: Sequence[str]) -> bool:
    """Whether the question names a target file's stem (or its folder for mod.rs/lib.rs)."""
    words = set(re.findall(r"[a-z0-9_]+", question.lower()))
    for f in files:
        parts = f[:-3].split("/")
        stem = parts[-2] if parts[-1] in ("mod", "lib", "main") and len(parts) > 1 else parts[-1]
        if stem.lower() in words:
            return True
    return False


def build_repo(
    name: str, path: Path, per_repo: int, half: str
) -> tuple[list[CommitQuestion], dict[str, int]]:
    """Questions of one repository and counts of what was seen."""
    git_dir = git_dir_of(path)
    snapshot = git(git_dir, "rev-parse", "HEAD").strip()
    files = set(git(git_dir, "ls-tree", "-r", "--name-only", snapshot).splitlines())
    found: list[CommitQuestion] = []
    seen = 0
    for sha, date, subject, paths in history(git_dir):
        seen += 1
        targets = qualifies(subject, paths, files)
        if not targets:
            continue
        question = PR_SUFFIX.sub("", subject).strip()
        found.append(
            CommitQuestion(
                id=f"{name}-{sha[:10]}",
                repo=name,
                snapshot=snapshot,
                commit=sha,
                date=date,
                question=question,
                files=targets,
                half=half,
                names_a_file=names_a_file(question, targets),
            )
        )
    # one question per subject: cherry-picks and back-ports repeat them
    unique = list({q.question.lower(): q for q in reversed(found)}.values())[::-1]
    if len(unique) > per_repo:
        step = len(unique) / per_repo
        unique = [unique[int(i * step)] for i in range(per_repo)]
    counts = {"commits": seen, "qualified": len(found), "kept": len(unique)}
    return unique, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="+", help="name=GIT_DIR, one per repository")
    parser.add_argument("--per-repo", type=int, default=40)
    parser.add_argument(
        "--held-back",
        default="",
        help="comma-separated names of the held-back half (default: every other repo, by name)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("questions.jsonl"))
    args = parser.parse_args(argv)
    named = sorted(tuple(r.split("=", 1)) for r in args.repos)  # type: ignore[misc]
    for name, _ in named:
        if any(word in name.lower() for word in RESERVED):
            parser.error(f"{name} is reserved for an independent measure")
    held = set(filter(None, args.held_back.split(","))) or {n for n, _ in named[1::2]}
    rows: list[CommitQuestion] = []
    for name, where in named:
        half = "held-back" if name in held else "tuning"
        questions, counts = build_repo(name, Path(where), args.per_repo, half)
        rows.extend(questions)
        print(
            f"{name:12s} {half:9s} {counts['commits']:6,} commits, {counts['qualified']:5,} "
            f"qualify, {counts['kept']:3} kept",
            file=sys.stderr,
        )
    with open(args.out, "w", encoding="utf-8") as f:
        for q in rows:
            f.write(json.dumps(asdict(q)) + "\n")
    print(f"{len(rows)} questions -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
