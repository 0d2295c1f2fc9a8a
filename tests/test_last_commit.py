"""Search answers from the last commit: a run that dies between its store commits and its
manifest commit (here the manifest's commit fails, as on a full disk) leaves chunks in
both stores that no commit records; no read path shows them.

Real stores throughout (Tantivy, the embedded Qdrant shard or a Qdrant server's client
code in local mode, SQLite); only the manifest's commit is made to fail.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import DiskFullError
from rcm_dask.mcp_server.tools import _find_symbol
from rcm_dask.search import SearchIndex
from rcm_dask.stores.bm25 import Bm25Store
from rcm_dask.stores.manifest import Manifest, read_manifest
from rcm_dask.testing import HashEmbedder, LocalQdrantServer

LIMIT = 3


@pytest.fixture(params=["qdrant-edge", "qdrant-server"])
def qdrant_url(request: pytest.FixtureRequest) -> str | None:
    """The embedded engine (None), or a Qdrant server served by qdrant-client's local mode."""
    if request.param == "qdrant-edge":
        return None
    server: LocalQdrantServer = request.getfixturevalue("qdrant_server")
    return server.url


def _widgets(path: Path, prefix: str, n: int) -> None:
    """A Rust file of ``n`` documented functions ``{prefix}_{i}`` about widgets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            f"/// Spins the {prefix} widget number {i}.\n"
            f"pub fn {prefix}_widget_{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n"
            for i in range(n)
        )
    )


def _run(root: Path, idx: Path, url: str | None, **kw: Any) -> Any:
    config = IndexConfig(index_dir=str(idx), qdrant_url=url, mode="sequential")
    return index(str(root), config, embedder=HashEmbedder(), **kw)


@pytest.fixture
def died(
    crate: Path, tmp_path: Path, qdrant_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, str | None, set[str]]:
    """An index whose last run wrote two files to both stores and died at the manifest's
    commit: ``src/quokka.rs`` (new: the manifest does not list it) and ``src/config.rs``
    (rewritten: the manifest still records its old chunks)."""
    idx = tmp_path / "idx"
    _widgets(crate / "src" / "plain.rs", "plain", 5)
    _run(crate, idx, qdrant_url)
    _widgets(crate / "src" / "quokka.rs", "quokka", 20)
    (crate / "src" / "config.rs").write_text(
        "/// Spins the quokka widget of the config.\npub fn quokka_config_widget() {}\n"
    )

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(Manifest, "apply", full)
        with pytest.raises(DiskFullError, match="filled up"):
            _run(crate, idx, qdrant_url)
    files, pending = read_manifest(idx)
    assert set(pending) == {"src/quokka.rs", "src/config.rs"}
    assert "src/quokka.rs" not in files
    with Bm25Store.open(idx / "bm25") as store:  # the stores do hold the dead run's chunks
        assert store.count(["src/quokka.rs"]) >= 20
        assert [h.payload["name"] for h in store.search("quokka_config_widget", limit=1)] == [
            "quokka_config_widget"
        ]
    return crate, idx, qdrant_url, set(pending)


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_search_leaves_out_chunks_no_commit_records(died: Any, mode: str) -> None:
    """Each leg filters inside its store query: the top-k is full of committed items
    although the dead run's 21 quokka widgets would outrank them all."""
    _, idx, _, pending = died
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.unsettled() == sorted(pending)
        hits = s.search("quokka widget spins", mode=mode, limit=LIMIT, ranking="none")
        assert len(hits) == LIMIT
        assert not {h.path for h in hits} & pending, hits
        files = s.search_files("quokka widget spins", mode=mode, limit=LIMIT)
        assert files and not {f.path for f in files} & pending
        # the committed chunks of a rewritten file are left out too: the stores no longer
        # hold them (a chunk id names an item, not its content)
        found = s.search("parse toml config", mode=mode, limit=10)
        assert not [h for h in found if h.path == "src/config.rs"]


def test_symbol_lookups_leave_out_chunks_no_commit_records(died: Any) -> None:
    """The symbol lookup of search, and get_similar_code's, find no item of a pending file."""
    _, idx, _, pending = died
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert not {h.path for h in s.search("quokka_widget_3")} & pending
        assert _find_symbol(s, "quokka_widget_3") == (None, 0)
        assert _find_symbol(s, "plain_widget_3")[0] is not None


def test_the_next_run_settles_the_files_and_search_shows_them(died: Any) -> None:
    root, idx, url, _ = died
    _run(root, idx, url)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.unsettled() == []
        hits = s.search("quokka widget spins", mode="bm25", limit=LIMIT)
        assert {h.path for h in hits} <= {"src/quokka.rs", "src/config.rs"}
        assert s.search("quokka_config_widget", limit=1)[0].path == "src/config.rs"
