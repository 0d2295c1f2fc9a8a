"""The sequential mode end to end on real stores (Tantivy + embedded Qdrant), with a fast embedder."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import IndexIdentityError, IndexNotFoundError, SourceError
from rcm_dask.reader import open_index
from rcm_dask.search import SearchIndex
from rcm_dask.stores.manifest import Manifest
from rcm_dask.testing import HashEmbedder, LocalQdrantServer

from . import DATA


def _index(root: str | Path, index_dir: Path, **kw: object) -> object:
    config = IndexConfig(index_dir=str(index_dir), commit_every=kw.pop("commit_every", 4096))  # type: ignore[arg-type]
    return index(str(root), config, embedder=HashEmbedder(), **kw)  # type: ignore[arg-type]


def _contents(
    index_dir: Path, emb: HashEmbedder | None = None
) -> tuple[set[str], set[str], set[str]]:
    """Chunk ids in BM25, in the vector store, and in the manifest."""
    with SearchIndex(index_dir, embedder=emb or HashEmbedder()) as idx:
        bm25 = {p["id"] for p in idx.bm25.iter_payloads()}
        vectors = {pid for pid, _, _ in idx.vectors.iter_points()}
    m = Manifest(index_dir, readonly=True)
    manifest = {cid for f in m.files() for cid in f.chunk_ids}
    m.close()
    return bm25, vectors, manifest


def test_index_and_search(crate: Path, tmp_path: Path) -> None:
    idx_dir = tmp_path / "idx"
    stats = _index(crate, idx_dir)
    assert stats.files_seen == 4 and stats.files_indexed == 4 and stats.files_skipped == 0
    assert stats.chunks >= 12 and stats.seconds > 0
    assert set(stats.stage_seconds) >= {"read", "chunk", "embed", "write"}
    bm25, vectors, manifest = _contents(idx_dir)
    assert bm25 == vectors == manifest and len(bm25) == stats.chunks

    with SearchIndex(idx_dir, embedder=HashEmbedder()) as idx:
        top = idx.search("parse toml config", limit=3, mode="bm25")
        assert top[0].qualname == "parse_toml_config" and top[0].kind == "function"
        assert top[0].path == "src/lib.rs" and top[0].start_line == 6
        assert top[0].bm25_rank == 1 and top[0].vector_rank is None
        words = idx.search("connection pool reconnect backoff", limit=1, mode="bm25")
        assert words[0].qualname == "net::ConnectionPool::acquire"
        # the fake embedder's vectors mean nothing: fused, acquire stays near the top
        hybrid = idx.search("connection pool reconnect backoff", limit=5)
        acquire = next(h for h in hybrid[:2] if h.qualname == "net::ConnectionPool::acquire")
        assert acquire.bm25_rank is not None and acquire.vector_rank is not None
        assert "pub fn acquire" in acquire.snippet
        vec = idx.search("connection pool reconnect backoff", limit=5, mode="vector")
        assert vec and all(h.vector_rank for h in vec)
        kinds = idx.search("config", limit=20, kinds=["struct"])
        assert kinds and {h.kind for h in kinds} == {"struct"}
        scoped = idx.search("config", limit=20, path_glob="src/net/**")
        assert scoped == [] or {h.path for h in scoped} == {"src/net/mod.rs"}
        assert idx.search("   ", limit=5) == []
        st = idx.status()
        assert st["files"] == 4 and st["chunks"] == stats.chunks == st["bm25_documents"]


def test_rerun_is_incremental_and_removes_deleted_files(crate: Path, tmp_path: Path) -> None:
    idx_dir = tmp_path / "idx"
    first = _index(crate, idx_dir)
    assert first.files_indexed == 4
    before = _contents(idx_dir)[0]
    again = _index(crate, idx_dir)
    assert again.files_indexed == 0 and again.files_unchanged == 4 and again.chunks == 0
    assert _contents(idx_dir)[0] == before

    # touched but identical: confirmed by hash, not re-embedded
    os.utime(crate / "src" / "lib.rs", (1, 1))
    touched = _index(crate, idx_dir)
    assert touched.files_indexed == 0 and touched.files_unchanged == 4

    # changed and deleted files
    cfg = crate / "src" / "config.rs"
    cfg.write_text(cfg.read_text() + "\n/// Added later.\npub fn reload() {}\n")
    (crate / "tests" / "smoke.rs").unlink()
    changed = _index(crate, idx_dir)
    assert changed.files_indexed == 1 and changed.files_removed == 1
    bm25, vectors, manifest = _contents(idx_dir)
    assert bm25 == vectors == manifest
    with SearchIndex(idx_dir, embedder=HashEmbedder()) as idx:
        assert idx.search("reload", limit=1, mode="bm25")[0].qualname == "config::reload"
        assert all(
            h.path != "tests/smoke.rs" for h in idx.search("parses_a_line", limit=5, mode="bm25")
        )
    # one function added; the test file's one function removed (a file of one item has
    # that item and its own record: both go)
    assert len(bm25) == first.chunks + 1 - 2


def test_ids_are_deterministic_across_runs(crate: Path, tmp_path: Path) -> None:
    _index(crate, tmp_path / "a")
    _index(crate, tmp_path / "b", commit_every=3)  # many small commits: same result
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")


def test_unreadable_file_keeps_what_was_indexed(crate: Path, tmp_path: Path) -> None:
    idx_dir = tmp_path / "idx"
    _index(crate, idx_dir)
    before = _contents(idx_dir)[0]
    (crate / "src" / "config.rs").write_bytes(b"pub fn x() {}\xff\xfe")
    stats = _index(crate, idx_dir)
    assert stats.skipped == {"not-utf8": 1}
    assert "src/config.rs" in stats.skipped_examples["not-utf8"][0]
    assert _contents(idx_dir)[0] == before


def test_bad_files_are_skipped_with_reasons(crate: Path, tmp_path: Path) -> None:
    (crate / "src" / "blob.rs").write_bytes(b"\x00\x01\x02binary")
    (crate / "src" / "latin1.rs").write_bytes("fn caf\xe9() {}".encode("latin-1"))
    (crate / "src" / "huge.rs").write_bytes(b"// x\n" * 3000)
    (crate / "src" / "broken.rs").write_bytes((DATA / "broken.rs").read_bytes())
    config = IndexConfig(index_dir=str(tmp_path / "idx"), max_file_size=10_000)
    stats = index(str(crate), config, embedder=HashEmbedder())
    assert stats.skipped == {"binary": 1, "not-utf8": 1, "too-large": 1}
    assert stats.files_indexed == 5 and stats.chunks_with_errors >= 1
    with SearchIndex(tmp_path / "idx", embedder=HashEmbedder()) as idx:
        assert idx.search("clean_after", limit=1, mode="bm25")[0].name == "clean_after"


def test_identity_mismatch_names_force(crate: Path, tmp_path: Path) -> None:
    idx_dir = tmp_path / "idx"
    _index(crate, idx_dir)

    class Other(HashEmbedder):
        fingerprint = "other-model"

    with pytest.raises(IndexIdentityError, match="--force"):
        index(str(crate), IndexConfig(index_dir=str(idx_dir)), embedder=Other())
    with (
        pytest.raises(IndexIdentityError, match="another model"),
        SearchIndex(idx_dir, embedder=Other()) as searcher,
    ):
        searcher.search("config")
    stats = index(str(crate), IndexConfig(index_dir=str(idx_dir)), embedder=Other(), force=True)
    assert stats.files_indexed == 4
    bm25, vectors, manifest = _contents(idx_dir, Other())
    assert bm25 == vectors == manifest and len(bm25) == stats.chunks


def test_another_root_in_the_same_index_is_refused(crate: Path, tmp_path: Path) -> None:
    _index(crate, tmp_path / "idx")
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.rs").write_text("fn a() {}")
    with pytest.raises(IndexIdentityError, match="root"):
        _index(other, tmp_path / "idx")


@pytest.mark.parametrize("layout", ["empty", "no-rust", "only-ignored"])
def test_no_rust_files_is_a_clear_error(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    if layout == "no-rust":
        (root / "README.md").write_text("# hi")
    if layout == "only-ignored":
        (root / "target").mkdir()
        (root / "target" / "x.rs").write_text("fn x() {}")
    with pytest.raises(SourceError, match="No .rs files found"):
        _index(root, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        _index(tmp_path / "nope", tmp_path / "idx")


def test_memory_filesystem(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/crate-{uuid.uuid4().hex}"
    for p in (DATA / "mini_crate").rglob("*.rs"):
        fs.pipe(f"{base}/{p.relative_to(DATA / 'mini_crate').as_posix()}", p.read_bytes())
    try:
        stats = _index(f"memory://{base}", tmp_path / "idx")
        assert stats.files_indexed == 4
        with SearchIndex(tmp_path / "idx", embedder=HashEmbedder()) as idx:
            assert idx.search("RETRY_DELAY", limit=1, mode="bm25")[0].kind == "const"
    finally:
        fs.rm(base, recursive=True)


def test_default_index_location_and_open_index(crate: Path, isolated_home: Path) -> None:
    stats = index(str(crate), IndexConfig(), embedder=HashEmbedder())
    assert Path(stats.index_dir).parent == isolated_home / "indexes"
    with open_index(path=str(crate)) as idx:
        assert idx.index_dir == Path(stats.index_dir)
    with open_index() as idx:  # the most recently updated one
        assert idx.index_dir == Path(stats.index_dir)


def test_search_without_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="rcm-dask index"):
        open_index()
    with pytest.raises(IndexNotFoundError, match="no index at"):
        SearchIndex(tmp_path)


def test_qdrant_server_backend(
    crate: Path, tmp_path: Path, qdrant_server: LocalQdrantServer
) -> None:
    """--qdrant-url goes through qdrant-client; here its on-disk local mode stands in for a server."""
    idx_dir = tmp_path / "idx"
    url = qdrant_server.url
    config = IndexConfig(index_dir=str(idx_dir), qdrant_url=url)
    stats = index(str(crate), config, embedder=HashEmbedder())
    assert qdrant_server.urls and set(qdrant_server.urls) == {url}
    assert not (idx_dir / "vectors").exists()
    with SearchIndex(idx_dir, config, embedder=HashEmbedder()) as idx:
        assert idx.identity["qdrant_url"] == url and idx.identity["collection"] == "rcm_idx"
        assert idx.vectors.count() == stats.chunks
        hits = idx.search("connection pool reconnect backoff", limit=3)
        # fused with the fake embedder's vectors: acquire near the top, found by both
        acquire = [h for h in hits[:2] if h.qualname == "net::ConnectionPool::acquire"]
        assert acquire and acquire[0].vector_rank and acquire[0].bm25_rank
    # the vectors live on the server: an embedded-store run must not silently start afresh
    with pytest.raises(IndexIdentityError, match="--force"):
        index(str(crate), IndexConfig(index_dir=str(idx_dir)), embedder=HashEmbedder())
    again = index(
        str(crate), IndexConfig(index_dir=str(idx_dir)), embedder=HashEmbedder(), force=True
    )
    assert again.files_indexed == 4 and (idx_dir / "vectors").exists()


def test_search_while_an_index_run_holds_the_vectors(crate: Path, tmp_path: Path) -> None:
    """Another process writing: hybrid answers from BM25 and says so; vector-only refuses clearly."""
    import subprocess
    import sys

    from rcm_dask.errors import StoreBusyError

    idx_dir = tmp_path / "idx"
    _index(crate, idx_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from rcm_dask.stores.vectors import EdgeVectorStore; "
            f"s = EdgeVectorStore({str(idx_dir / 'vectors')!r}, 64); print('held', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with SearchIndex(idx_dir, embedder=HashEmbedder()) as idx:
            hits = idx.search("parse toml config", limit=3)
            assert hits[0].qualname == "parse_toml_config" and hits[0].vector_rank is None
            assert idx.notices and "BM25 only" in idx.notices[0]
            with pytest.raises(StoreBusyError, match="in use by another process"):
                idx.search("parse toml config", mode="vector")
    finally:
        holder.communicate("", timeout=30)


def test_paths_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    root = tmp_path / "my crate ü"
    (root / "src" / "módulo con espacios").mkdir(parents=True)
    (root / "src" / "módulo con espacios" / "ñandú.rs").write_text(
        "/// Corre.\npub fn correr() {}\n"
    )
    (root / "src" / "lib.rs").write_text("pub fn raíz() {}\n")
    stats = _index(root, tmp_path / "idx")
    assert stats.files_indexed == 2
    with SearchIndex(tmp_path / "idx", embedder=HashEmbedder()) as idx:
        (hit,) = idx.search("correr", limit=1, mode="bm25")
        assert hit.path == "src/módulo con espacios/ñandú.rs"
        assert hit.qualname == "módulo_con_espacios::ñandú::correr"


QUERIES = ("parse toml config", "connection pool reconnect backoff", "config", "acquire")


def _searches(index_dir: Path) -> dict[tuple[str, str], list[object]]:
    with SearchIndex(index_dir, embedder=HashEmbedder()) as idx:
        return {
            (q, m): idx.search(q, limit=10, mode=m) for q in QUERIES for m in ("hybrid", "vector")
        }


def _as_format_2(index_dir: Path) -> None:
    """Rewrite an index as format 2 wrote it: every vector point's payload spelled out."""
    import json

    import qdrant_edge as qe

    from rcm_dask.stores import EdgeVectorStore

    with EdgeVectorStore(index_dir / "vectors", HashEmbedder.dimension) as store:
        points = [qe.Point(pid, vec, payload) for pid, vec, payload in store.iter_points()]
        store._shard.update(qe.UpdateOperation.upsert_points(points))
    identity = json.loads((index_dir / "identity.json").read_text())
    (index_dir / "identity.json").write_text(json.dumps({**identity, "format": 2}))


def test_a_format_2_index_reads_and_updates(crate: Path, tmp_path: Path) -> None:
    import json

    from rcm_dask.intel import CodeIntel
    from rcm_dask.stores import PACKED_FIELD, EdgeVectorStore

    idx_dir = tmp_path / "idx"
    _index(crate, idx_dir)
    packed = _searches(idx_dir)
    assert packed[("acquire", "hybrid")][0].snippet  # code comes back with a vector hit
    _as_format_2(idx_dir)
    with EdgeVectorStore(idx_dir / "vectors", HashEmbedder.dimension) as store:
        records, _ = store._shard.scroll(qe_scroll())
        assert records and all(PACKED_FIELD not in (r.payload or {}) for r in records)
    # the same hits, code and snippets included, from the spelled-out payloads
    assert _searches(idx_dir) == packed
    CodeIntel(idx_dir).close()

    # a run adds to it, packing what it writes, and records format 3
    cfg = crate / "src" / "config.rs"
    cfg.write_text(cfg.read_text() + "\n/// Added later.\npub fn reload() {}\n")
    assert _index(crate, idx_dir).files_indexed == 1  # type: ignore[attr-defined]
    assert json.loads((idx_dir / "identity.json").read_text())["format"] == 3
    with EdgeVectorStore(idx_dir / "vectors", HashEmbedder.dimension) as store:
        records, _ = store._shard.scroll(qe_scroll())
        by_path = {str((r.payload or {}).get("path")): r.payload or {} for r in records}
        assert PACKED_FIELD in by_path["src/config.rs"]
        assert PACKED_FIELD not in by_path["src/lib.rs"]
    with SearchIndex(idx_dir, embedder=HashEmbedder()) as idx:
        hit = idx.search("reload", limit=1, mode="vector", path_glob="src/config.rs")[0]
        assert hit.path == "src/config.rs" and hit.snippet
    bm25, vectors, manifest = _contents(idx_dir)
    assert bm25 == vectors == manifest


def qe_scroll() -> object:
    import qdrant_edge as qe

    return qe.ScrollRequest(limit=1000, with_payload=True)
