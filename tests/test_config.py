from __future__ import annotations

import pytest

from rcm_dask.config import IndexConfig, default_index_dir, env_name
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
        ({"RCM_VECTORS": "faiss"}, "unknown vectors setting 'faiss'; choose one of qdrant, none"),
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
