"""Ranking after fusion: pure functions from fused candidates to ranked hits.

:meth:`rcm_dask.search.SearchIndex.search` gathers candidates (BM25, vectors, and the
symbol table's definitions of the names a query holds), fuses the two rankings with
:func:`~rcm_dask.search.fuse_rrf`, and hands them here. Every step is a function over
:class:`Candidate` records that can be switched off (:class:`RankingConfig`), so each can
be measured alone and together (``benchmarks/search_quality``), and tested on hand-made
candidates without an index:

::

    classify_query       "BinaryHeap", "fmt::Display", "read_to_string"  -> symbol
                         "how does the heap grow"                          -> question
    named_identifiers    identifiers written inside a question (RawVec, split_at, a::b)
    boost_whole_files    items of the files whose whole text best matches the query's
                         words (whole-file BM25) raised: evidence spread over a file
    boost_definitions    symbol lookups: the item the symbol table says defines the
                         name first (taken from the table, not only re-ranked)
    boost_path_words     query words that name a file or folder (channel -> channel.rs)
    demote_tests         tests, benches, examples, fuzz targets, generated code: lower,
                         never removed
    diversify            a second hit from one file must earn its place; a file's other
                         good hits count as evidence for its best one
    group_by_file        one result per file with its best items (``--files``)

Scores are fused scores on the scale of RRF's (at most ``2/(k + 1)``, whether fusion was by
score or by rank); the steps multiply or add to them, so their effect does not depend on
how many candidates there were.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .stores.bm25 import STOP_WORDS, query_terms, split_identifier_words

QueryKind = Literal["symbol", "question"]

WHOLE_FILE_POOL = 50
"""Files asked of the whole-file records per query (:attr:`RankingConfig.whole_file`)."""

RANKING_STEPS: tuple[str, ...] = ("definitions", "paths", "tests", "diversity", "whole_file")
"""The switchable steps (query kind is always decided). They run in the order whole_file,
paths, tests, diversity, definitions: a definition put first must stay first."""
DEFAULT_RANKING = "definitions,tests,diversity,whole_file"
"""The steps on by default (``RCM_RANKING`` / ``--ranking`` change them)."""

_PATH_SYMBOL = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)*(?:!|\(\))?$")
_WORDS = re.compile(r"[A-Za-z0-9_]+")
# An identifier a person writes inside a question: CamelCase with an inner capital,
# snake_case with an underscore, a path with ``::``, a call ``name()`` or a macro ``name!``.
_NAMED = re.compile(
    r"`([^`]+)`"
    r"|\b([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)"
    r"|\b([A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*|[A-Z]{2,}[a-z][A-Za-z0-9]*)\b"
    r"|\b([a-z][a-z0-9]*_[a-z0-9_]+)\b"
    r"|\b([A-Za-z_][A-Za-z0-9_]*)(?:\(\)|!)"
)
# Path words that say nothing about what a file does.
_PATH_NOISE = STOP_WORDS | frozenset(
    {"src", "lib", "mod", "main", "rs", "crate", "crates", "library", "imp", "impls", "util",
     "utils", "internal", "common", "sys", "core", "std", "private", "inner"}
)
_TEST_DIRS = frozenset(
    {"tests", "test", "benches", "bench", "benchmarks", "examples", "example", "fuzz",
     "fuzz_targets", "testdata", "test_data", "test-data", "testing", "tests_data"}
)
_TEST_FILE = re.compile(r"(^|_)(tests?|bench(es)?|fuzz)(_|\.rs$)|_spec\.rs$")
_TEST_ATTRS = re.compile(
    r"#\[\s*(?:test|bench|tokio::test|async_std::test|quickcheck|proptest|kani::proof)\s*[\](]"
    r"|#\[\s*cfg\s*\(\s*(?:test|kani|loom|fuzzing)\s*\)"
)
_GENERATED = re.compile(r"(^|/)(generated|gen|autogen)(/|$)|[._-]generated\.rs$|_gen\.rs$")
_GENERATED_TEXT = re.compile(r"@generated|automatically generated|do not edit", re.IGNORECASE)
# Kinds that define a name, best first: a bare name should land on the type, trait or
# function it names before an impl block or a module named like it.
_DEFINING_KINDS = {
    "struct": 0, "enum": 0, "trait": 0, "union": 0, "type": 1, "macro": 1,
    "function": 1, "const": 2, "static": 2, "method": 2, "mod": 3, "impl": 4,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RankingConfig:
    """Which ranking steps run, and how strongly (every step can be switched off).

    The defaults (:data:`DEFAULT_RANKING`) are the strengths measured best on the tuning
    half of ``benchmarks/search_quality``'s twelve crates, with the steps that helped on
    the held-back half (``paths`` did not), under the constraint that item-level quality
    on rust-src does not drop (strong file diversity lifts file-level figures but splits
    a file's several answers apart).
    """

    definitions: bool = True
    """Symbol lookups: the symbol table's definitions of the name first."""
    paths: bool = False
    """Query words naming a file or folder raise that file's hits (off by default: it did
    not help on the held-back half of ``benchmarks/search_quality``'s twelve crates)."""
    tests: bool = True
    """Tests, benches, examples, fuzz targets and generated code ranked lower."""
    diversity: bool = True
    """Several hits of one file: each further one must earn its place."""
    symbol_bm25_weight: float = 2.0
    """BM25's RRF weight for symbol lookups (vectors keep 1.0)."""
    definition_limit: int = 5
    """Symbol lookups: at most this many definitions are put first; a name defined in
    more places (``new``) is ambiguous, and its definitions only get :attr:`named_boost`."""
    named_boost: float = 0.5
    """Score added, as a share of the top fused score, to a definition of an identifier
    named inside a question (``RawVec`` in "how does RawVec grow")."""
    path_boost: float = 0.1
    """Score multiplier per query word that names the hit's file or folder (1 + b per word,
    at most two words)."""
    test_factor: float = 0.25
    """Score multiplier for test, bench, example, fuzz and generated code."""
    diversity_decay: float = 0.95
    """Score multiplier of the n-th hit from one file: ``decay ** (n - free)`` past the
    first :attr:`diversity_free` hits."""
    diversity_free: int = 3
    """Hits of one file that are not decayed."""
    file_evidence: float = 0.03
    """Share of a file's other hits' scores added to its best hit."""
    whole_file: bool = True
    """Items of the files whose whole text matches the query's words best (whole-file
    BM25, :meth:`~rcm_dask.stores.bm25.Bm25Store.search_files`) raised; BM25 and hybrid
    searches only (a ``vector`` search stays a search by meaning)."""
    whole_file_boost: float = 0.5
    """Score multiplier ``1 + b * share`` of an item whose file has that share of the best
    whole-file score (0 for a file outside the best :data:`WHOLE_FILE_POOL`)."""

    def without(self, *steps: str) -> RankingConfig:
        """The same settings with the named steps switched off."""
        unknown = set(steps) - set(RANKING_STEPS)
        if unknown:
            raise ValueError(f"unknown ranking steps {sorted(unknown)}; known: {RANKING_STEPS}")
        return replace(self, **{s: False for s in steps})

    @classmethod
    def only(cls, *steps: str) -> RankingConfig:
        """Settings with only the named steps on (none: plain fusion)."""
        unknown = set(steps) - set(RANKING_STEPS)
        if unknown:
            raise ValueError(f"unknown ranking steps {sorted(unknown)}; known: {RANKING_STEPS}")
        return replace(cls(), **{s: s in steps for s in RANKING_STEPS})

    @classmethod
    def from_spec(cls, spec: str) -> RankingConfig:
        """From a setting string: ``default`` (:data:`DEFAULT_RANKING`), ``all``, ``none``,
        or steps joined by ``,`` (``-x`` drops x).

        Examples
        --------
        >>> RankingConfig.from_spec("none").definitions
        False
        >>> RankingConfig.from_spec("all,-diversity").diversity
        False
        >>> RankingConfig.from_spec("default").spec
        'definitions,tests,diversity,whole_file'
        """
        spec = (spec or "default").strip().lower()
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        steps: set[str] = set()
        for p in parts:
            if p == "default":
                steps |= {s for s in RANKING_STEPS if getattr(cls(), s)}
            elif p == "all":
                steps |= set(RANKING_STEPS)
            elif p == "none":
                steps = set()
            elif p.startswith("-"):
                steps.discard(p[1:])
                if p[1:] not in RANKING_STEPS:
                    raise ValueError(f"unknown ranking step {p[1:]!r}; known: {RANKING_STEPS}")
            elif p in RANKING_STEPS:
                steps.add(p)
            else:
                raise ValueError(f"unknown ranking step {p!r}; known: {RANKING_STEPS}")
        return cls.only(*steps)

    @property
    def spec(self) -> str:
        """The steps that are on, as :meth:`from_spec` reads them."""
        on = [s for s in RANKING_STEPS if getattr(self, s)]
        return ",".join(on) if on else "none"


@dataclass(slots=True)
class Candidate:
    """One item competing for a place in the results."""

    key: str
    """Symbol id (all parts of a long item share it)."""
    payload: dict[str, Any]
    """The stored chunk payload (path, qualname, kind, code...)."""
    score: float
    """Current score, best first (fused score, then adjusted by the steps)."""
    bm25_rank: int | None = None
    """1-based rank among BM25 candidates."""
    vector_rank: int | None = None
    """1-based rank among vector candidates."""
    definition: str = ""
    """``exact``/``suffix``/``name`` when the symbol table says this item defines a name
    the query holds, ``reexport`` for the record of a file whose ``pub use`` re-exports
    it; ``""`` otherwise."""
    file_match: float = 0.0
    """Its file's whole-file BM25 score as a share of the best file's (:func:`min_max_shares`),
    0 when the file is not among the best :data:`WHOLE_FILE_POOL` or not looked up."""
    reasons: list[str] = field(default_factory=list)
    """What the steps did to it (for tests and for reading a benchmark's candidates)."""

    @property
    def path(self) -> str:
        """File path relative to the indexed root."""
        return str(self.payload.get("path", ""))


# ----------------------------------------------------------------------------- queries


def classify_query(query: str) -> QueryKind:
    """``symbol`` for a bare identifier or path, ``question`` for anything else.

    Examples
    --------
    >>> [classify_query(q) for q in ("BinaryHeap", "fmt::Display", "read_to_string",
    ...                              "vec!", "how does a heap grow", "Vec push")]
    ['symbol', 'symbol', 'symbol', 'symbol', 'question', 'question']
    """
    text = query.strip().strip("`").strip()
    return "symbol" if text and _PATH_SYMBOL.match(text) else "question"


def symbol_of(query: str) -> str:
    """The name a symbol lookup asks for, as the symbol table takes it (``vec!``, ``a::b``).

    >>> symbol_of("  `read_to_string()` ")
    'read_to_string'
    """
    text = query.strip().strip("`").strip()
    return text[:-2] if text.endswith("()") else text


def named_identifiers(query: str) -> list[str]:
    """Identifiers written inside a question, in order, without repeats.

    CamelCase words with an inner capital (``RawVec``, ``BufReader``), snake_case words
    with an underscore (``split_at``), ``a::b`` paths, ``name()`` calls, ``name!``
    macros, and anything in backticks. Plain words (``heap``, ``Vec``) are not taken:
    a question's ordinary words are BM25's and the vectors' business.

    Examples
    --------
    >>> named_identifiers("how does RawVec grow when read_to_string() fills a BufReader")
    ['RawVec', 'read_to_string', 'BufReader']
    >>> named_identifiers("where is `Vec` resized, and what does fmt::Display need")
    ['Vec', 'fmt::Display']
    """
    out: dict[str, None] = {}
    for m in _NAMED.finditer(query):
        name = next(g for g in m.groups() if g)
        name = symbol_of(name)
        if _PATH_SYMBOL.match(name):
            out.setdefault(name, None)
    return list(out)


def query_words(query: str) -> set[str]:
    """The query's words, lowercased and split at identifier boundaries (for path matching).

    >>> sorted(query_words("how does the ThreadPool spawn a job"))
    ['job', 'pool', 'spawn', 'thread', 'threadpool']
    """
    words: set[str] = set()
    for token in _WORDS.findall(query):
        words.add(token.lower())
        words.update(split_identifier_words(token))
    return {w for w in words if len(w) > 2 and w not in _PATH_NOISE}


# ----------------------------------------------------------------------------- evidence


def is_test_like(payload: dict[str, Any]) -> bool:
    """Whether a chunk is test, bench, example, fuzz or generated code.

    By path (a ``tests``/``benches``/``examples``/``fuzz`` folder, ``tests.rs``,
    ``*_test.rs``, a ``generated`` folder or ``*_generated.rs``), by module (inside
    ``mod tests``/``mod test``), and by the item's own attributes (``#[test]``,
    ``#[cfg(test)]``, ``#[bench]``, ``#[kani::proof]``...), which the chunk's code begins
    with.

    Examples
    --------
    >>> is_test_like({"path": "tests/heap.rs", "module": "", "code": "fn t() {}"})
    True
    >>> is_test_like({"path": "src/heap.rs", "module": "heap::tests", "code": "fn t() {}"})
    True
    >>> is_test_like({"path": "src/heap.rs", "module": "heap", "code": "#[test]\\nfn t() {}"})
    True
    >>> is_test_like({"path": "src/heap.rs", "module": "heap", "code": "fn push() {}"})
    False
    """
    path = str(payload.get("path", ""))
    parts = path.split("/")
    if any(p.lower() in _TEST_DIRS for p in parts[:-1]):
        return True
    name = parts[-1].lower()
    if name in ("tests.rs", "test.rs", "benches.rs", "bench.rs") or _TEST_FILE.search(name):
        return True
    if _GENERATED.search(path.lower()):
        return True
    module = str(payload.get("module", ""))
    if any(seg in ("tests", "test", "benches", "bench") for seg in module.split("::")):
        return True
    if str(payload.get("kind", "")) == "mod" and str(payload.get("qualname", "")).split(
        "::"
    )[-1] in ("tests", "test"):
        return True
    code = str(payload.get("code", ""))
    head = code[: code.find("{")] if "{" in code else code[:400]
    if _TEST_ATTRS.search(head):
        return True
    return bool(_GENERATED_TEXT.search(code[:300])) and str(payload.get("kind")) == "mod"


def path_words(path: str) -> set[str]:
    """The words of a file's name and folders (``src/sync/mpsc/oneshot.rs`` ->
    ``{sync, mpsc, oneshot}``), lowercased and split like identifiers.

    >>> sorted(path_words("src/thread_pool/mod.rs"))
    ['pool', 'thread', 'thread_pool']
    """
    words: set[str] = set()
    for part in path.split("/"):
        stem = part[:-3] if part.endswith(".rs") else part
        words.add(stem.lower())
        words.update(split_identifier_words(stem))
    return {w for w in words if w and w not in _PATH_NOISE}


def _stems(words: Iterable[str]) -> set[str]:
    """English stems of words (``channels`` and ``channel`` meet)."""
    return {t for w in words for t in query_terms(w)}


def min_max_shares(scores: Mapping[str, float]) -> dict[str, float]:
    """Scores as shares of their range: ``(score - worst) / (best - worst)``, so the best
    gets 1.0 and the worst 0 (all equal: 1.0), whatever the scale of the scores (BM25's,
    a cosine's). Both score fusion and the whole-file step weigh scores this way.

    >>> min_max_shares({"a.rs": 12.0, "b.rs": 9.0, "c.rs": 6.0})
    {'a.rs': 1.0, 'b.rs': 0.5, 'c.rs': 0.0}
    """
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {key: (score - low) / span if span > 0 else 1.0 for key, score in scores.items()}


# ----------------------------------------------------------------------------- steps


def boost_whole_files(candidates: list[Candidate], config: RankingConfig) -> list[Candidate]:
    """Raise the items of files whose whole text matches the query's words
    (:attr:`Candidate.file_match`): ``score * (1 + whole_file_boost * share)``.

    A question's words are often spread over the file that answers it (the type in one
    item, the verb in another, the error in a third); chunk BM25 and the vectors see each
    item alone. Measured on ``benchmarks/search_quality``'s twelve crates (tuning half,
    file nDCG@10 0.815 -> 0.822, item nDCG@10 0.575 -> 0.587) and commit subjects.
    """
    b = config.whole_file_boost
    for c in candidates:
        if c.file_match > 0:
            c.score *= 1.0 + b * c.file_match
            c.reasons.append(f"whole file matches ({c.file_match:.2f} of the best)")
    return candidates


def boost_definitions(
    candidates: list[Candidate], kind: QueryKind, config: RankingConfig
) -> list[Candidate]:
    """Put the items the symbol table says define the queried name first.

    For a symbol lookup, definitions (``Candidate.definition`` set) are moved above every
    other candidate, best rule first (exact, suffix, bare name), then the kinds that define
    a name (type, trait, function) before those that only carry it (impl blocks, modules),
    then code before tests, then the records of files that re-export the name (``pub
    use``); at most :attr:`RankingConfig.definition_limit` definitions (a name
    with more definitions is ambiguous: its definitions get :attr:`RankingConfig.named_boost`
    only). For a question, definitions of the identifiers it names get that boost.
    """
    defs = [c for c in candidates if c.definition and c.definition != "reexport"]
    reexports = [c for c in candidates if c.definition == "reexport"]
    if not defs and not reexports:
        return candidates
    top = max((c.score for c in candidates), default=0.0) or 1.0
    rule_rank = {"exact": 0, "suffix": 1, "name": 2}
    best_rule = min((rule_rank.get(c.definition, 3) for c in defs), default=3)
    best = [c for c in defs if rule_rank.get(c.definition, 3) == best_rule]
    if kind == "symbol" and len(best) <= config.definition_limit:
        best.sort(
            key=lambda c: (
                _DEFINING_KINDS.get(str(c.payload.get("kind")), 5),
                is_test_like(c.payload),
                -c.score,
                c.path,
            )
        )
        # the files whose ``pub use`` re-exports the name come right after the definitions
        reexports.sort(key=lambda c: (c.path.count("/"), c.path))
        placed = best + reexports[: config.definition_limit]
        n = len(placed)
        for i, c in enumerate(placed):
            # above every fused score, in the order just decided
            c.score = top * (2.0 + (n - i) / n)
            c.reasons.append(f"definition ({c.definition})")
        return candidates
    for c in defs:
        c.score += config.named_boost * top
        c.reasons.append(f"names a queried identifier ({c.definition})")
    return candidates


def boost_path_words(candidates: list[Candidate], query: str, config: RankingConfig) -> list[Candidate]:
    """Raise hits whose file or folder names match the query's words (``channel`` ->
    ``channel.rs``, ``thread pool`` -> ``thread_pool/``): ``1 + b`` per matching word,
    at most two."""
    words = _stems(query_words(query))
    if not words:
        return candidates
    cache: dict[str, int] = {}
    for c in candidates:
        path = c.path
        if path not in cache:
            cache[path] = min(2, len(words & _stems(path_words(path))))
        hits = cache[path]
        if hits:
            c.score *= 1.0 + config.path_boost * hits
            c.reasons.append(f"path names {hits} query word(s)")
    return candidates


def demote_tests(candidates: list[Candidate], config: RankingConfig) -> list[Candidate]:
    """Lower (never remove) tests, benches, examples, fuzz targets and generated code."""
    for c in candidates:
        if is_test_like(c.payload):
            c.score *= config.test_factor
            c.reasons.append("test or example code")
    return candidates


def diversify(candidates: list[Candidate], config: RankingConfig) -> list[Candidate]:
    """Spread the top over files; a file's several hits are evidence for its best one.

    The best hit of each file gains :attr:`RankingConfig.file_evidence` times the sum of
    its file's other scores; then, greedily, the n-th pick from one file has its score
    multiplied by ``diversity_decay ** (n - 1)``, so a second hit from a file must beat
    the best hits of other files by that margin.
    """
    by_file: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: -c.score):
        by_file.setdefault(c.path, []).append(c)
    for hits in by_file.values():
        if len(hits) > 1:
            bonus = config.file_evidence * sum(h.score for h in hits[1:])
            hits[0].score += bonus
    # Greedy, lazily: an entry popped with a stale count of its file's picks goes back
    # with its score decayed to the current count.
    base = [c.score for c in candidates]
    heap = [(-c.score, c.key, i, 0) for i, c in enumerate(candidates)]
    heapq.heapify(heap)
    taken: dict[str, int] = {}
    out: list[Candidate] = []
    while heap:
        _, key, i, seen = heapq.heappop(heap)
        c = candidates[i]
        n = taken.get(c.path, 0)
        if n != seen:
            heapq.heappush(heap, (-base[i] * _decay(n, config), key, i, n))
            continue
        taken[c.path] = n + 1
        if n >= config.diversity_free:
            c.score = base[i] * _decay(n, config)
            c.reasons.append(f"hit {n + 1} from its file")
        out.append(c)
    return out


def _decay(taken: int, config: RankingConfig) -> float:
    """Multiplier of a file's next hit when ``taken`` of its hits are already placed."""
    return config.diversity_decay ** max(0, taken - config.diversity_free + 1)


def rank_candidates(
    candidates: Sequence[Candidate],
    query: str,
    config: RankingConfig | None = None,
) -> list[Candidate]:
    """Run the switched-on steps over fused candidates; best first.

    Parameters
    ----------
    candidates
        Fused candidates (scores from :func:`~rcm_dask.search.fuse_scores` or
        :func:`~rcm_dask.search.fuse_rrf`), definitions of
        the query's names marked with :attr:`Candidate.definition`.
    query
        The query as the user typed it.
    config
        Which steps run (default: all, at their tuned strengths).

    Returns
    -------
    list of Candidate
        Every candidate (none is dropped), best first; ties by key.
    """
    config = config or RankingConfig()
    cands = [replace(c, reasons=list(c.reasons)) for c in candidates]
    kind = classify_query(query)
    if config.whole_file:
        cands = boost_whole_files(cands, config)
    if config.paths and kind == "question":
        cands = boost_path_words(cands, query, config)
    if config.tests:
        cands = demote_tests(cands, config)
    if config.diversity:
        cands = diversify(cands, config)
    if config.definitions:
        # last: the file evidence of diversity must not lift a user above a definition
        cands = boost_definitions(cands, kind, config)
    cands.sort(key=lambda c: (-c.score, c.key))
    return cands


@dataclass(frozen=True, slots=True)
class FileGroup:
    """One file of a ``--files`` result: its score and its best items."""

    path: str
    score: float
    items: tuple[Any, ...]


def group_by_file(hits: Sequence[Any], limit: int, per_file: int = 3) -> list[FileGroup]:
    """One entry per file, in the order of each file's best hit, with up to ``per_file``
    of its hits (anything with ``.path`` and ``.score``).

    >>> from types import SimpleNamespace as H
    >>> [g.path for g in group_by_file([H(path="a", score=3), H(path="b", score=2),
    ...                                   H(path="a", score=1)], limit=5)]
    ['a', 'b']
    """
    groups: dict[str, list[Any]] = {}
    for h in hits:
        groups.setdefault(h.path, []).append(h)
    out = [
        FileGroup(path=p, score=float(hs[0].score), items=tuple(hs[:per_file]))
        for p, hs in groups.items()
    ]
    return out[:limit]


__all__ = [
    "DEFAULT_RANKING",
    "RANKING_STEPS",
    "Candidate",
    "FileGroup",
    "QueryKind",
    "RankingConfig",
    "WHOLE_FILE_POOL",
    "boost_definitions",
    "boost_path_words",
    "boost_whole_files",
    "classify_query",
    "demote_tests",
    "diversify",
    "group_by_file",
    "is_test_like",
    "min_max_shares",
    "named_identifiers",
    "path_words",
    "query_words",
    "rank_candidates",
    "symbol_of",
]
