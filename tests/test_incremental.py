"""Incremental re-runs and recovery from runs that stopped half-way, on real stores.

The crash tests here stop a run in-process at chosen points (an error raised from a
store call, the writer dropped without its final commit); ``test_recovery.py`` kills
real processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.embedding import Embedder
from rcm_dask.errors import IndexWriteError
from rcm_dask.records import EmbeddedBatch
from rcm_dask.stores.bm25 import Bm25Store
from rcm_dask.stores.manifest import Manifest
from rcm_dask.testing import (
    CountingEmbedder,
    HashEmbedder,
    LocalQdrantServer,
    add_generated_files,
    assert_converged,
    index_state,
)
from rcm_dask.writer import IndexWriter


@pytest.fixture
def crate(crate: Path) -> Path:
    """The mini crate and 12 more files of 6 items: commits land between files."""
    add_generated_files(crate, [6] * 12)
    return crate


@pytest.fixture(params=["qdrant-edge", "qdrant-server"])
def vector_backend(request: pytest.FixtureRequest) -> str | None:
    """The embedded engine (None), or a Qdrant server URL served by qdrant-client's
    on-disk local mode (the same client code as a real server)."""
    if request.param == "qdrant-edge":
        return None
    server: LocalQdrantServer = request.getfixturevalue("qdrant_server")
    return server.url


def _run(root: Path, index_dir: Path, emb: HashEmbedder | None = None, **kw: Any) -> Any:
    config = IndexConfig(
        index_dir=str(index_dir),
        commit_every=kw.pop("commit_every", 4096),
        qdrant_url=kw.pop("qdrant_url", None),
    )
    return index(str(root), config, embedder=emb or HashEmbedder(), **kw)


def _age(root: Path, seconds: float = 30.0) -> None:
    """Move every file's mtime into the past, as if written well before indexing."""
    for p in root.rglob("*.rs"):
        st = p.stat()
        os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


def test_unchanged_rerun_opens_nothing(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No change: no writer, no cluster, no model, no file read."""
    _age(crate)
    idx = tmp_path / "idx"
    _run(crate, idx)
    before = index_state(idx)

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("an unchanged re-run must not get this far")

    import rcm_dask.modes as modes
    import rcm_dask.stages as stages

    monkeypatch.setattr(modes, "IndexWriter", refuse)
    monkeypatch.setattr(modes, "dask_client", refuse)
    monkeypatch.setattr(stages, "read_source", refuse)
    monkeypatch.setattr(Embedder, "_model", refuse)
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb, mode="pipeline")
    assert (stats.files_todo, stats.files_indexed, stats.files_unchanged) == (0, 0, 16)
    assert emb.embedded == 0 and stats.cluster == "in-process"
    assert index_state(idx) == before


def test_touched_files_are_confirmed_by_hash(crate: Path, tmp_path: Path) -> None:
    """mtime moved, content did not: read and hashed, not embedded."""
    _age(crate)
    idx = tmp_path / "idx"
    _run(crate, idx)
    for i in range(10):
        (crate / "src" / f"gen_{i}.rs").touch()
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    assert stats.files_todo == 10 and stats.files_unchanged == 16
    assert stats.files_indexed == 0 and emb.embedded == 0
    # the new mtimes are recorded: once out of the racy window, nothing is read
    m = Manifest(idx, readonly=True)
    recorded = {f.path: f.mtime for f in m.files()}
    m.close()
    assert recorded["src/gen_0.rs"] == (crate / "src" / "gen_0.rs").stat().st_mtime


def test_modified_added_deleted(crate: Path, tmp_path: Path) -> None:
    _age(crate)
    idx = tmp_path / "idx"
    _run(crate, idx)
    (crate / "src" / "gen_0.rs").write_text("pub fn replaced_zero() {}\n")
    (crate / "src" / "gen_1.rs").unlink()
    (crate / "src" / "brand_new.rs").write_text("pub fn brand_new() {}\npub fn other() {}\n")
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    assert (stats.files_indexed, stats.files_removed) == (2, 1)
    # only the changed files' chunks: three items and the two files' own records
    assert emb.embedded == stats.chunks == 5
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert_converged(idx, clean)


def test_same_size_rewrite_within_the_timestamp_resolution(crate: Path, tmp_path: Path) -> None:
    """A file rewritten with the same size and the same mtime right after it was indexed
    (a racy-clean file): the run re-reads it and its hash tells the change."""
    idx = tmp_path / "idx"
    target = crate / "src" / "gen_3.rs"
    target.write_text("pub fn aaaa() {}\n")
    _run(crate, idx)
    st = target.stat()
    target.write_text("pub fn bbbb() {}\n")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    _run(crate, idx)
    files = index_state(idx)["files"]
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert files == index_state(clean)["files"]


@pytest.mark.parametrize(
    "where",
    [
        "bm25-add",  # a store write failed mid-batch
        "vectors-upsert",
        "vectors-commit",  # Tantivy committed, Qdrant did not
        "manifest-apply",  # both stores committed, the manifest did not
    ],
)
def test_failure_at_any_write_step_converges(
    crate: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    vector_backend: str | None,
) -> None:
    """A write fails part-way through a re-index of changed files; the next run
    converges. Both vector backends."""
    _age(crate)
    idx = tmp_path / "idx"
    url = vector_backend
    _run(crate, idx, commit_every=8, qdrant_url=url)
    for i in range(12):
        (crate / "src" / f"gen_{i}.rs").write_text(
            f"pub fn changed_{i}() {{}}\npub fn more_{i}() {{}}\n"
        )
    (crate / "src" / "gen_11.rs").unlink()
    from rcm_dask.stores.vectors import EdgeVectorStore, QdrantClientVectorStore

    store_cls = QdrantClientVectorStore if url else EdgeVectorStore
    target = {
        "bm25-add": (Bm25Store, "add_batch"),
        "vectors-upsert": (store_cls, "upsert_batch"),
        "vectors-commit": (store_cls, "commit"),
        "manifest-apply": (Manifest, "apply"),
    }[where]
    real = getattr(*target)
    calls = {"n": 0}

    def flaky(self: Any, *a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(f"injected failure in {where}")
        return real(self, *a, **k)

    monkeypatch.setattr(*target, flaky)
    with pytest.raises((IndexWriteError, OSError)):
        _run(crate, idx, commit_every=8, qdrant_url=url)
    monkeypatch.setattr(*target, real)
    # the index still opens and searches after the failure
    assert index_state(idx)["bm25"]
    _run(crate, idx, commit_every=8, qdrant_url=url)
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert_converged(idx, clean)


def test_writer_dropped_without_commit_then_file_reverted(crate: Path, tmp_path: Path) -> None:
    """The hardest case: a run replaces a file's chunks in the stores and dies before the
    manifest records it, then the file goes back to its old content (same size and mtime
    as the manifest says). Only the pending note tells that the stores changed."""
    _age(crate)
    idx = tmp_path / "idx"
    _run(crate, idx)
    before = index_state(idx)
    identity = __import__("json").loads((idx / "identity.json").read_text())
    emb = HashEmbedder()
    from rcm_dask.chunking import chunk_source
    from rcm_dask.records import SourceFile

    new = SourceFile("src/gen_2.rs", 17, None, "0" * 64, "pub fn evil() {}\n")
    chunks = chunk_source(new)
    writer = IndexWriter(idx, identity)
    writer.write_batch(EmbeddedBatch(tuple(chunks), emb.embed_batch([c.code for c in chunks])))
    writer.bm25.commit()
    writer.vectors.commit()
    writer.close(commit=False)  # dies before the manifest commit
    state = index_state(idx)
    assert state["pending"] == ["src/gen_2.rs"] and state["bm25"] != before["bm25"]
    stats = _run(crate, idx)  # the file on disk never changed
    assert stats.files_recovered == 1 and stats.files_indexed == 1
    assert index_state(idx) == before


def test_stores_without_manifest_are_cleared(crate: Path, tmp_path: Path) -> None:
    """A crash during --force (manifest already gone, stores not yet) must not leave the
    old stores' chunks as orphans."""
    idx = tmp_path / "idx"
    _run(crate, idx)
    (crate / "src" / "gen_5.rs").unlink()
    for suffix in ("", "-wal", "-shm"):
        (idx / ("manifest.sqlite" + suffix)).unlink(missing_ok=True)
    _run(crate, idx)
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert_converged(idx, clean)
