from __future__ import annotations

import pytest

from rcm_dask.search import fuse_rrf, snippet_of


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
