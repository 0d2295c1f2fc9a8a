from __future__ import annotations

import pytest

from rcm_dask.config import IndexConfig, check_globs, default_index_dir, env_name
from rcm_dask.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"RCM_BATCH_SIZE": "32"}, "batch_size", 32),
        ({"RCM_BM25_WEIGHT": "0.5"}, "bm25_weight", 0.5),
        ({"RCM_RESPECT_GITIGNORE": "no"}, "respect_gitignore", False),
        ({"RCM_INCLUDE_HIDDEN": "1"}, "include_hidden", True),
        ({"RCM_EXCLUDE": "gen/**, *.pb.rs"}, "exclude", ("gen/**", "*.pb.rs")),
        ({"RCM_QDRANT_URL": "http://127.0.0.1:6333"}, "qdrant_url", "http://127.0.0.1:6333"),
        ({}, "batch_size", 128),
        ({"RCM_VECTORS": "none"}, "vectors", "none"),
        ({}, "vectors", "qdrant"),
    ],
)
def test_env_variables(env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(IndexConfig.from_env(env), field) == expected


def test_explicit_wins_over_env_and_none_falls_through() -> None:
    cfg = IndexConfig.from_env({"RCM_BATCH_SIZE": "32"}, batch_size=8, model=None)
    assert cfg.batch_size == 8 and cfg.model is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RCM_BATCH_SIZE": "lots"}, "RCM_BATCH_SIZE"),
        ({"RCM_INCLUDE_HIDDEN": "maybe"}, "RCM_INCLUDE_HIDDEN"),
        ({"RCM_MODE": "turbo"}, "unknown mode"),
        ({"RCM_BATCH_SIZE": "0"}, "batch_size must be at least 1"),
        ({"RCM_CPU_BATCH_SIZE": "0"}, "cpu_batch_size must be at least 1"),
        ({"RCM_VECTORS": "faiss"}, "unknown vectors setting 'faiss'; choose one of qdrant, none"),
        ({"RCM_BM25_WEIGHT": "nan"}, r"bm25_weight \(RCM_BM25_WEIGHT\) must be a finite number"),
        ({"RCM_BM25_WEIGHT": "inf"}, r"bm25_weight \(RCM_BM25_WEIGHT\) must be a finite"),
        ({"RCM_VECTOR_WEIGHT": "-inf"}, "vector_weight .* must be a finite number, got -inf"),
        ({"RCM_COMMIT_SECONDS": "nan"}, "commit_seconds .* must be a finite number"),
        ({"RCM_COMMIT_SECONDS": "-1"}, "commit_seconds must not be negative"),
        ({"RCM_WAIT": "nan"}, "wait .* must be a finite number"),
        ({"RCM_BM25_WEIGHT": "0", "RCM_VECTOR_WEIGHT": "0"}, "both 0"),
        ({"RCM_FUSION": "max"}, "unknown fusion 'max'; choose one of score, rrf"),
        ({"RCM_VECTOR_SHARE": "1.5"}, r"vector_share \(RCM_VECTOR_SHARE\) must lie in 0..1"),
        ({"RCM_VECTOR_SHARE": "nan"}, "vector_share .* must lie in 0..1"),
        ({"RCM_EXCLUDE": "gen/[ab"}, "exclude 'gen/\\[ab' is not a valid glob: '\\[' is never"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IndexConfig.from_env(env)


def test_every_field_has_an_env_name() -> None:
    assert env_name("index_dir") == "RCM_INDEX_DIR"


def test_default_index_dir_is_per_codebase() -> None:
    a = default_index_dir("/src/alloc")
    b = default_index_dir("/other/alloc")
    assert a != b and a.name.startswith("alloc-") and b.name.startswith("alloc-")
    assert default_index_dir("/src/alloc/") == a


def test_wait_may_be_infinite() -> None:
    assert IndexConfig.from_env({"RCM_WAIT": "inf"}).wait == float("inf")


@pytest.mark.parametrize(
    ("glob", "why"),
    [
        ("[", "'\\[' is never closed"),
        ("src/[a-", "'\\[' is never closed"),
        ("a[]b", "'\\[' is never closed"),
        ("\\", "Invalid git pattern"),
        ("#x", "'#' starts a comment"),
        ("  ", "empty pattern"),
    ],
)
def test_globs_that_can_never_match_are_refused(glob: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        check_globs([glob], "path_glob")


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("src/io/**", "src/io/mod.rs", True),
        ("*.rs", "a/b.rs", True),
        ("src/[ab].rs", "src/a.rs", True),
        ("\\#x.rs", "#x.rs", True),
        ("tests/", "src/lib.rs", False),
    ],
)
def test_valid_globs_match_as_gitignore_does(glob: str, path: str, matches: bool) -> None:
    assert check_globs([glob], "path_glob").match_file(path) is matches
