"""Tests for rcm_dask.ranking: each step on hand-made candidates, no index."""

from __future__ import annotations

from typing import Any

import pytest

from rcm_dask.ranking import (
    Candidate,
    RankingConfig,
    boost_definitions,
    boost_path_words,
    classify_query,
    demote_tests,
    diversify,
    group_by_file,
    is_test_like,
    named_identifiers,
    rank_candidates,
)


def cand(
    key: str,
    path: str,
    score: float,
    *,
    kind: str = "function",
    module: str = "",
    code: str = "fn f() {}",
    definition: str = "",
) -> Candidate:
    payload: dict[str, Any] = {
        "id": key,
        "path": path,
        "kind": kind,
        "module": module,
        "qualname": key,
        "code": code,
    }
    return Candidate(key, payload, score, definition=definition)


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("BinaryHeap", "symbol"),
        ("fmt::Display", "symbol"),
        ("read_to_string", "symbol"),
        ("`Vec::push`", "symbol"),
        ("vec!", "symbol"),
        ("read_to_string()", "symbol"),
        ("how does a heap grow", "question"),
        ("BinaryHeap push", "question"),
        ("where is RawVec::grow_amortized called", "question"),
        ("", "question"),
    ],
)
def test_classify_query(query: str, kind: str) -> None:
    assert classify_query(query) == kind


def test_named_identifiers_takes_code_names_not_plain_words() -> None:
    q = "why does RawVec call alloc::alloc and how_is_it() decided for a Vec, HTTPServer2 or `Heap`"
    assert named_identifiers(q) == ["RawVec", "alloc::alloc", "how_is_it", "HTTPServer2", "Heap"]
    assert named_identifiers("how does a thread pool spawn a job") == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"path": "tests/it.rs"}, True),
        ({"path": "benches/parse.rs"}, True),
        ({"path": "examples/demo.rs"}, True),
        ({"path": "fuzz/fuzz_targets/parse.rs"}, True),
        ({"path": "src/tests.rs"}, True),
        ({"path": "src/parser_test.rs"}, True),
        ({"path": "src/gen/visit.rs"}, True),
        ({"path": "src/unicode_generated.rs"}, True),
        ({"path": "src/heap.rs", "module": "heap::tests"}, True),
        ({"path": "src/heap.rs", "code": "#[test]\nfn pushes() {}"}, True),
        ({"path": "src/heap.rs", "code": "#[cfg(test)]\nmod checks {}"}, True),
        ({"path": "src/heap.rs", "code": "#[kani::proof]\nfn proof() {}"}, True),
        ({"path": "src/heap.rs", "code": "fn push() { /* #[test] in a body */ }"}, False),
        ({"path": "src/testing_utils.rs"}, False),
        ({"path": "src/heap.rs", "module": "heap"}, False),
        ({"path": "src/contest.rs"}, False),
    ],
)
def test_is_test_like(payload: dict[str, Any], expected: bool) -> None:
    assert is_test_like({"module": "", "code": "fn f() {}", **payload}) is expected


def test_symbol_lookup_puts_the_definition_first_even_when_fusion_ranked_it_last() -> None:
    cands = [
        cand("impl Display for Heap", "src/heap.rs", 0.05, kind="impl"),
        cand("uses", "src/other.rs", 0.04),
        cand("fmt::Display", "src/fmt/mod.rs", 0.0, kind="trait", definition="suffix"),
    ]
    ranked = rank_candidates(cands, "Display", RankingConfig.only("definitions"))
    assert ranked[0].key == "fmt::Display"
    assert "definition (suffix)" in ranked[0].reasons
    # nothing is dropped
    assert {c.key for c in ranked} == {c.key for c in cands}


def test_definitions_order_types_before_impls_and_code_before_tests() -> None:
    cands = [
        cand("mod heap", "src/heap.rs", 0.9, kind="mod", definition="name"),
        cand("tests::Heap", "tests/heap.rs", 0.8, kind="struct", definition="name"),
        cand("Heap", "src/heap.rs", 0.1, kind="struct", definition="name"),
    ]
    out = boost_definitions(cands, "symbol", RankingConfig())
    order = [c.key for c in sorted(out, key=lambda c: -c.score)]
    assert order == ["Heap", "tests::Heap", "mod heap"]


def test_an_ambiguous_name_only_gets_a_boost() -> None:
    config = RankingConfig(definition_limit=2)
    cands = [cand(f"new{i}", f"src/m{i}.rs", 0.0, definition="name") for i in range(3)]
    cands.append(cand("top", "src/top.rs", 1.0))
    out = boost_definitions(cands, "symbol", config)
    assert max(out, key=lambda c: c.score).key == "top"
    assert all(c.score == pytest.approx(config.named_boost) for c in out if c.definition)


def test_question_boosts_definitions_of_named_identifiers() -> None:
    cands = [cand("other", "src/a.rs", 1.0), cand("RawVec", "src/raw_vec.rs", 0.8, definition="name")]
    out = boost_definitions(cands, "question", RankingConfig())
    assert max(out, key=lambda c: c.score).key == "RawVec"


def test_path_words_prefer_the_file_a_question_names() -> None:
    cands = [
        cand("send", "src/select.rs", 1.0),
        cand("send", "src/flavors/channels.rs", 0.9),
        cand("spawn", "src/thread_pool/mod.rs", 0.8),
    ]
    config = RankingConfig(path_boost=0.25)
    out = boost_path_words(cands, "how does a channel send block", config)
    assert [c.score for c in out] == pytest.approx([1.0, 0.9 * 1.25, 0.8])
    out = boost_path_words(
        [cand("spawn", "src/thread_pool/mod.rs", 0.8)], "ThreadPool spawn", config
    )
    assert out[0].score == pytest.approx(0.8 * 1.5)  # two words: thread, pool


def test_tests_are_demoted_not_removed() -> None:
    cands = [cand("t", "tests/heap.rs", 1.0), cand("c", "src/heap.rs", 0.6)]
    out = demote_tests(cands, RankingConfig(test_factor=0.5))
    assert [c.score for c in out] == [0.5, 0.6]
    assert out[0].reasons == ["test or example code"]


def test_diversity_makes_a_second_hit_from_one_file_earn_its_place() -> None:
    cands = [
        cand("a1", "src/a.rs", 1.0),
        cand("a2", "src/a.rs", 0.9),
        cand("a3", "src/a.rs", 0.85),
        cand("b1", "src/b.rs", 0.7),
        cand("c1", "src/c.rs", 0.4),
    ]
    config = RankingConfig(diversity_decay=0.6, diversity_free=1, file_evidence=0.0)
    out = diversify(cands, config)
    assert [c.key for c in out] == ["a1", "b1", "a2", "c1", "a3"]
    assert out[2].score == pytest.approx(0.9 * 0.6)
    assert out[4].score == pytest.approx(0.85 * 0.36)


def test_the_first_hits_of_a_file_are_free() -> None:
    cands = [cand("a1", "src/a.rs", 1.0), cand("a2", "src/a.rs", 0.9), cand("b1", "src/b.rs", 0.5)]
    out = diversify(cands, RankingConfig(diversity_decay=0.1, diversity_free=2, file_evidence=0))
    assert [c.key for c in out] == ["a1", "a2", "b1"]
    assert out[1].score == 0.9


def test_file_evidence_lifts_a_file_with_several_good_hits() -> None:
    cands = [
        cand("x", "src/x.rs", 1.0),
        cand("y1", "src/y.rs", 0.95),
        cand("y2", "src/y.rs", 0.9),
        cand("y3", "src/y.rs", 0.9),
    ]
    out = diversify(cands, RankingConfig(file_evidence=0.15, diversity_free=1))
    assert out[0].key == "y1"
    assert out[0].score == pytest.approx(0.95 + 0.15 * 1.8)


def test_path_words_step_when_switched_on() -> None:
    cands = [cand("send", "src/select.rs", 1.0), cand("send", "src/channel.rs", 0.95)]
    on = rank_candidates(cands, "how does a channel send", RankingConfig.from_spec("paths"))
    off = rank_candidates(cands, "how does a channel send", RankingConfig())
    assert [c.path for c in on] == ["src/channel.rs", "src/select.rs"]
    assert [c.path for c in off] == ["src/select.rs", "src/channel.rs"]


def test_every_step_off_is_plain_fusion() -> None:
    cands = [
        cand("t", "tests/a.rs", 1.0),
        cand("a2", "src/a.rs", 0.9),
        cand("a1", "src/a.rs", 0.95),
        cand("d", "src/d.rs", 0.1, definition="exact"),
    ]
    out = rank_candidates(cands, "a", RankingConfig.from_spec("none"))
    assert [c.key for c in out] == ["t", "a1", "a2", "d"]
    assert [c.score for c in out] == [1.0, 0.95, 0.9, 0.1]
    assert cands[0].reasons == []  # the input is not changed


@pytest.mark.parametrize(
    ("spec", "on"),
    [
        ("all", "definitions,paths,tests,diversity,whole_file"),
        ("default", "definitions,tests,diversity,whole_file"),
        ("", "definitions,tests,diversity,whole_file"),
        ("default,-diversity,paths", "definitions,paths,tests,whole_file"),
        ("none", "none"),
        ("tests", "tests"),
        ("all,-diversity,-whole_file", "definitions,paths,tests"),
        (" Paths , tests ", "paths,tests"),
    ],
)
def test_ranking_spec(spec: str, on: str) -> None:
    assert RankingConfig.from_spec(spec).spec == on


def test_unknown_ranking_step_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown ranking step 'speed'"):
        RankingConfig.from_spec("all,speed")
    from rcm_dask.config import IndexConfig
    from rcm_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown ranking step"):
        IndexConfig(ranking="fast")


def test_group_by_file_keeps_each_files_best_items_in_order() -> None:
    ranked = [
        cand("a1", "src/a.rs", 0.9),
        cand("b1", "src/b.rs", 0.8),
        cand("a2", "src/a.rs", 0.7),
        cand("c1", "src/c.rs", 0.6),
        cand("a3", "src/a.rs", 0.5),
        cand("a4", "src/a.rs", 0.4),
    ]
    groups = group_by_file(ranked, limit=2, per_file=3)
    assert [g.path for g in groups] == ["src/a.rs", "src/b.rs"]
    assert [c.key for c in groups[0].items] == ["a1", "a2", "a3"]
    assert groups[0].score == 0.9


def test_reexports_follow_the_definition_of_a_symbol() -> None:
    cands = [
        cand("user", "src/user.rs", 0.5),
        cand("crate", "src/lib.rs", 0.0, kind="mod", definition="reexport"),
        cand("Buf", "src/buf/buf_impl.rs", 0.1, kind="trait", definition="name"),
        cand("buf", "src/buf/mod.rs", 0.0, kind="mod", definition="reexport"),
    ]
    ranked = rank_candidates(cands, "Buf", RankingConfig.only("definitions"))
    assert [c.key for c in ranked] == ["Buf", "crate", "buf", "user"]
