"""The evaluation set and its metrics: pure functions, no index, no model.

Shared by ``check_questions.py`` (validation), ``run.py`` (the benchmark) and
``tests/test_search_quality.py`` (the metrics checked on hand-computed examples).

A *relevant item* is ``(path, qualname)`` with a grade (2: the answer, 1: relevant or
helpful); ``path`` is relative to rust-src's ``library/``. A ranked result list is given
as, for each result, the set of relevant items it *covers*: a chunk hit covers the
item with its exact path and qualname (several chunks can share one: ``#[cfg]`` twins,
the parts of a long item), a whole-file hit covers every relevant item in that file.
Each item is credited once, at the first result that covers it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "questions.jsonl"
KINDS = frozenset({"where", "how", "what-happens", "why", "find-api", "which-function"})
MIN_QUESTIONS = 100

Key = tuple[str, str]
"""A relevant item: (path relative to ``library/``, qualname)."""


@dataclass(frozen=True)
class Question:
    """One question of the set."""

    id: str
    question: str
    relevant: dict[Key, int]
    """Relevant items and their grades (2 the answer, 1 helpful)."""
    crate: str
    kind: str
    area: str = ""
    mentions_identifier: bool = False
    """Whether the question names a Rust identifier (type, function, method)."""


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    """Read the set, one JSON object a line; blank lines are skipped.

    Raises
    ------
    ValueError
        A line is not valid JSON or lacks a required field.
    """
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            relevant = {(r["path"], r["qualname"]): int(r["grade"]) for r in d["relevant"]}
            out.append(
                Question(
                    id=d["id"],
                    question=d["question"],
                    relevant=relevant,
                    crate=d["crate"],
                    kind=d["kind"],
                    area=d.get("area", ""),
                    mentions_identifier=bool(d.get("mentions_identifier", False)),
                )
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: {e!r}") from e
    return out


def set_fingerprint(path: Path = QUESTIONS) -> str:
    """Short SHA-256 of the set file: which version of the set a report used."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def credited(ranked: Sequence[Iterable[Key]], relevant: dict[Key, int], k: int) -> list[int]:
    """The gain of each of the first ``k`` results: the best grade among the relevant
    items it is the first to cover, 0 when it covers none that is new.

    Parameters
    ----------
    ranked
        For each result, best first, the items it covers.
    relevant
        Relevant items and their grades.
    k
        Cut-off.

    Returns
    -------
    list of int
        One gain per result, at most ``k``.
    """
    seen: set[Key] = set()
    gains = []
    for covers in list(ranked)[:k]:
        new = [key for key in covers if key in relevant and key not in seen]
        seen.update(new)
        gains.append(max((relevant[key] for key in new), default=0))
    return gains


def reciprocal_rank(
    ranked: Sequence[Iterable[Key]], relevant: dict[Key, int], k: int = 10
) -> float:
    """1 / rank of the first result covering any relevant item (any grade), 0 if none in ``k``.

    Examples
    --------
    >>> reciprocal_rank([[], [("a.rs", "f")]], {("a.rs", "f"): 1})
    0.5
    """
    for rank, gain in enumerate(credited(ranked, relevant, k), 1):
        if gain > 0:
            return 1.0 / rank
    return 0.0


def recall(ranked: Sequence[Iterable[Key]], relevant: dict[Key, int], k: int = 10) -> float:
    """Share of the relevant items (any grade) covered by the first ``k`` results.

    Examples
    --------
    >>> recall([[("a.rs", "f")]], {("a.rs", "f"): 2, ("a.rs", "g"): 1})
    0.5
    """
    if not relevant:
        return 0.0
    found = {key for covers in list(ranked)[:k] for key in covers if key in relevant}
    return len(found) / len(relevant)


def ndcg(ranked: Sequence[Iterable[Key]], relevant: dict[Key, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain with graded relevance (linear gains).

    ``DCG = sum(gain_i / log2(i + 1))`` over ranks ``i = 1..k``, with the gains of
    :func:`credited`; the ideal puts every relevant item at its own rank, best grade
    first. A whole-file result therefore earns one item's grade, however many relevant
    items the file holds.

    Examples
    --------
    >>> round(ndcg([[], [("a.rs", "f")]], {("a.rs", "f"): 2}), 4)
    0.6309
    """
    gains = credited(ranked, relevant, k)
    dcg = sum(g / math.log2(i + 1) for i, g in enumerate(gains, 1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, 1))
    return dcg / idcg if idcg else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics.

    Examples
    --------
    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def validate(questions: Sequence[Question], chunk_names: dict[str, set[str]]) -> list[str]:
    """Problems with the set, one message each; empty when it is valid.

    Parameters
    ----------
    questions
        The set.
    chunk_names
        For each file path relative to ``library/``, the qualnames the project's chunker
        produces for it (a missing file is absent from the mapping).

    Returns
    -------
    list of str
        Duplicate ids, unknown kinds, questions without a grade-2 item, too few
        questions, and every relevant item that is not a chunk of its file.
    """
    problems = []
    ids = Counter(q.id for q in questions)
    problems += [f"duplicate id {i} ({n} times)" for i, n in ids.items() if n > 1]
    texts = Counter(q.question.strip().lower() for q in questions)
    problems += [f"duplicate question {t!r}" for t, n in texts.items() if n > 1]
    if len(questions) < MIN_QUESTIONS:
        problems.append(f"only {len(questions)} questions; the set needs {MIN_QUESTIONS}")
    for q in questions:
        if q.kind not in KINDS:
            problems.append(f"{q.id}: unknown kind {q.kind!r} (one of {sorted(KINDS)})")
        if not q.relevant:
            problems.append(f"{q.id}: no relevant item")
        elif 2 not in q.relevant.values():
            problems.append(f"{q.id}: no item of grade 2 (the answer)")
        crates = {path.split("/", 1)[0] for path, _ in q.relevant}
        if q.relevant and q.crate not in crates:
            problems.append(f"{q.id}: crate {q.crate!r} holds none of its items ({sorted(crates)})")
        for (path, qualname), grade in q.relevant.items():
            if grade not in (1, 2):
                problems.append(f"{q.id}: grade {grade} for {path} {qualname} (must be 1 or 2)")
            names = chunk_names.get(path)
            if names is None:
                problems.append(f"{q.id}: no file {path}")
            elif qualname not in names:
                problems.append(f"{q.id}: {path} has no chunk {qualname!r}")
    return problems
