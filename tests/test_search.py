from __future__ import annotations

import pytest

from rcm_dask.search import fuse_rrf, fuse_scores, snippet_of


@pytest.mark.parametrize(
    ("rankings", "weights", "k", "expected"),
    [
        # 1/61 + 1/63 > 2/62: consistent top ranks beat a double second place
        ([["a", "b", "c"], ["c", "b", "a"]], None, 60, ["a", "c", "b"]),
        ([["a"], ["b"]], [2.0, 1.0], 60, ["a", "b"]),
        ([["a"], ["b"]], [1.0, 2.0], 60, ["b", "a"]),
        ([["a", "b"], []], None, 60, ["a", "b"]),
        ([[], []], None, 60, []),
        ([["a", "a", "b"]], None, 0, ["a", "b"]),  # duplicates count once
        ([["x", "y"], ["y", "x"]], None, 60, ["x", "y"]),  # exact tie: best rank, then id
    ],
)
def test_fuse_rrf(rankings, weights, k, expected) -> None:  # type: ignore[no-untyped-def]
    assert [d for d, _ in fuse_rrf(rankings, weights, k)] == expected


def test_fuse_rrf_scores() -> None:
    fused = dict(fuse_rrf([["a", "b"], ["b"]], [1.0, 0.5], k=10))
    assert fused["a"] == pytest.approx(1 / 11)
    assert fused["b"] == pytest.approx(1 / 12 + 0.5 / 11)


def test_fuse_rrf_weight_count_must_match() -> None:
    with pytest.raises(ValueError):
        fuse_rrf([["a"]], [1.0, 2.0])


@pytest.mark.parametrize(
    ("rankings", "weights", "expected"),
    [
        # a BM25 hit far ahead of the rest keeps its lead over a vector hit barely ahead
        ([[("a", 20.0), ("b", 2.0), ("c", 1.0)], [("b", 0.61), ("a", 0.60), ("c", 0.1)]],
         [0.5, 0.5], ["a", "b", "c"]),
        ([[("a", 1.0)], [("b", 1.0)]], [0.4, 0.6], ["b", "a"]),
        ([[("a", 1.0)], [("b", 1.0)]], [0.6, 0.4], ["a", "b"]),
        ([[("a", 3.0), ("b", 1.0)], []], [0.4, 0.6], ["a", "b"]),
        ([[], []], [0.5, 0.5], []),
        ([[("a", 2.0), ("a", 1.0), ("b", 1.0)]], [1.0], ["a", "b"]),  # duplicates count once
        ([[("x", 1.0), ("y", 1.0)], [("y", 1.0), ("x", 1.0)]], [0.5, 0.5], ["x", "y"]),
    ],
)  # fmt: skip
def test_fuse_scores(
    rankings: list[list[tuple[str, float]]], weights: list[float], expected: list[str]
) -> None:
    assert [d for d, _ in fuse_scores(rankings, weights)] == expected


def test_score_fusion_sees_what_rrf_does_not() -> None:
    """Both rankings put a and b in opposite orders: RRF calls it a tie (broken by id);
    score fusion asks by how much each ranking prefers its first."""
    lexical = [("b", 10.0), ("a", 9.9), ("z", 0.0)]  # b barely ahead
    vectors = [("a", 0.9), ("b", 0.2), ("z", 0.1)]  # a far ahead
    rrf = fuse_rrf([[d for d, _ in lexical], [d for d, _ in vectors]], k=10)
    assert rrf[0][1] == pytest.approx(rrf[1][1])
    assert [d for d, _ in fuse_scores([lexical, vectors], [0.5, 0.5], k=10)][:2] == ["a", "b"]


def test_fuse_scores_scale_and_normalisation() -> None:
    fused = dict(fuse_scores([[("a", 4.0), ("b", 2.0), ("c", 0.0)], [("a", 0.5)]], [0.4, 0.6], k=10))
    scale = 2 / 11  # the best two-ranking RRF score: the ranking steps' scale
    assert fused["a"] == pytest.approx((0.4 + 0.6) * scale)  # a lone hit counts fully
    assert fused["b"] == pytest.approx(0.4 * 0.5 * scale) and fused["c"] == 0.0
    with pytest.raises(ValueError):
        fuse_scores([[("a", 1.0)]], [1.0, 2.0])


def test_snippet_starts_at_the_signature() -> None:
    code = "/// Docs.\n#[inline]\npub fn push(&mut self) {\n" + "    x;\n" * 20 + "}\n"
    snip = snippet_of(code)
    assert snip.splitlines()[0] == "pub fn push(&mut self) {"
    assert len(snip.splitlines()) == 8


def test_snippet_dedents_and_falls_back_to_the_signature() -> None:
    code = "/// Docs.\n    #[inline]\n    pub fn push(&mut self) {\n        x;\n    }"
    assert snippet_of(code).splitlines() == ["pub fn push(&mut self) {", "    x;", "}"]
    docs_only = "/// Pushes an item.\n    ///\n    /// # Examples"
    snip = snippet_of(docs_only, "pub fn push(&mut self, item: T)")
    assert snip.splitlines()[:2] == ["pub fn push(&mut self, item: T)", "/// Pushes an item."]
