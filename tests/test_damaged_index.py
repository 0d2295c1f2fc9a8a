"""A damaged index is detected, said, and repaired.

Damage that no crash explains: a store deleted or cut short, a manifest truncated or
overwritten, garbage in ``identity.json``. Readers (search, status) refuse with one
:class:`IndexDamagedError` naming the repair; a plain ``rcm-dask index`` run repairs
it: files a store lacks are re-added (BM25 from the vector store's payloads, without
embedding anything), an unreadable manifest or identity means a rebuild. And BM25
scores after a crash equal a clean build's: deleted chunks are purged, not left
counting in Tantivy's statistics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rcm_dask import IndexConfig, index
from rcm_dask.chunking import chunk_source
from rcm_dask.cli import main
from rcm_dask.errors import IndexDamagedError, IndexIdentityError
from rcm_dask.integrity import repair_command
from rcm_dask.mcp_server.health import check_index
from rcm_dask.records import EmbeddedBatch, IndexedFile, SourceFile
from rcm_dask.search import SearchIndex
from rcm_dask.stores.bm25 import Bm25Store
from rcm_dask.stores.manifest import Manifest, read_identity
from rcm_dask.stores.vectors import EdgeVectorStore, edge_shard_damage, mapped_files
from rcm_dask.testing import (
    CountingEmbedder,
    HashEmbedder,
    LocalQdrantServer,
    add_generated_files,
    assert_converged,
    backdate,
    index_state,
)
from rcm_dask.writer import IndexWriter

RCM_DASK = Path(sys.executable).parent / "rcm-dask"
QUERIES = ("parse config", "gen item", "connect socket", "x u32", "pub fn add", "Item 3.4")


@pytest.fixture
def crate(crate: Path) -> Path:
    """The mini crate and 8 more files of 1 to 4 items, an hour old: size and mtime decide."""
    add_generated_files(
        crate, [1 + i % 4 for i in range(8)], doc="Item {i}.{j}: parse the config of item {j}."
    )
    backdate(crate, pattern="*.rs")
    return crate


def _run(root: Path, idx: Path, emb: HashEmbedder | None = None, **kw: Any) -> Any:
    config = IndexConfig(index_dir=str(idx), qdrant_url=kw.pop("qdrant_url", None))
    return index(str(root), config, embedder=emb or HashEmbedder(), **kw)


@pytest.fixture
def built(crate: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(codebase, its index, a clean copy of that index to compare with)."""
    idx = tmp_path / "idx"
    _run(crate, idx)
    clean = tmp_path / "clean"
    shutil.copytree(idx, clean)
    return crate, idx, clean


def _bm25_ranks(idx: Path) -> list[list[tuple[float, str]]]:
    """Every query's whole BM25 ranking: (score, chunk id), best first, ties by id (the
    order of equal scores follows where Tantivy happens to keep the documents)."""
    with Bm25Store.open(idx / "bm25") as store:
        return [
            sorted(((-round(h.score, 4), h.id) for h in store.search(q, limit=10_000)))
            for q in QUERIES
        ]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _said(text: str) -> str:
    """Console output with its line wrapping undone (rich wraps long paths anywhere)."""
    return "".join(text.splitlines())


# ------------------------------------------------------------------------------ BM25


def test_bm25_meta_deleted_is_said_and_rebuilt_from_the_vectors(
    built: tuple[Path, Path, Path],
) -> None:
    """Before: the reader's error said to run `rcm-dask index`, which then reported "0
    indexed, N unchanged" over an empty BM25 store, and hybrid search answered from the
    vectors alone. Now readers refuse; the run rebuilds BM25 from the vector payloads."""
    crate, idx, clean = built
    (idx / "bm25" / "meta.json").unlink()
    with pytest.raises(IndexDamagedError, match=r"BM25 store .*Run `rcm-dask index .*--index-dir"):
        SearchIndex(idx, embedder=HashEmbedder())
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    files = len(index_state(clean)["files"])  # type: ignore[arg-type]
    assert stats.files_repaired == files and stats.files_indexed == 0
    assert emb.embedded == 0, "BM25 is rebuilt from the vector store, nothing re-embedded"
    assert any("rebuilt from the vector store" in r for r in stats.repairs)
    assert "repaired:" in str("\n".join(stats.summary_lines()))
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        hits = s.search("parse config", limit=5)
        assert hits and all(h.bm25_rank is not None for h in hits[:1])
        assert not s.notices


def test_bm25_missing_some_chunks_is_said_and_repaired(built: tuple[Path, Path, Path]) -> None:
    crate, idx, clean = built
    with Bm25Store.open(idx / "bm25", writable=True) as store:
        store.delete_paths(["src/gen_3.rs"])
        store.commit()
    with pytest.raises(IndexDamagedError, match=r"BM25 store holds \d+ chunks of the \d+"):
        SearchIndex(idx, embedder=HashEmbedder())
    result = _cli("status", "--index-dir", str(idx))
    assert result.exit_code == 1 and "Error: the index at" in _said(result.output)
    assert "is damaged: the BM25 store holds" in _said(result.output)
    stats = _run(crate, idx, CountingEmbedder())
    assert stats.files_repaired == 1
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


def test_keyword_only_index_with_bm25_deleted_is_reindexed(crate: Path, tmp_path: Path) -> None:
    idx, clean = tmp_path / "idx", tmp_path / "clean"
    _run(crate, idx, vectors="none")
    _run(crate, clean, vectors="none")
    shutil.rmtree(idx / "bm25")
    with pytest.raises(IndexDamagedError, match="BM25 store is missing"):
        SearchIndex(idx)
    stats = _run(crate, idx, vectors="none")
    assert stats.files_repaired == stats.files_indexed == len(list(crate.rglob("*.rs")))
    with Bm25Store.open(idx / "bm25") as a, Bm25Store.open(clean / "bm25") as b:
        assert sorted(p["id"] for p in a.iter_payloads()) == sorted(
            p["id"] for p in b.iter_payloads()
        )
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


@pytest.mark.slow
def test_cli_status_then_index_repairs_a_deleted_bm25_meta(
    crate: Path, tmp_path: Path, tiny_model: Path
) -> None:
    """The finding as a user met it, as real processes: `status` says what is wrong and
    how to repair it; the `rcm-dask index` it names repairs it and says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCM_")}
    env.update(RCM_MODEL=str(tiny_model), RCM_TORCH_THREADS="1")
    idx = tmp_path / "idx"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RCM_DASK), *args], env=env, capture_output=True, text=True, timeout=300
        )

    build = cli("index", str(crate), "--index-dir", str(idx), "--json")
    assert build.returncode == 0, build.stderr
    files = json.loads(build.stdout)["files_indexed"]
    (idx / "bm25" / "meta.json").unlink()
    status = cli("status", "--index-dir", str(idx))
    said = _said(status.stderr)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert f"Run `{repair_command(idx, read_identity(idx))}` to repair it" in said
    assert f"rcm-dask index {crate} --index-dir {idx} --model " in said  # the tiny model's
    repair = cli("index", str(crate), "--index-dir", str(idx))
    assert repair.returncode == 0, repair.stderr
    said = _said(repair.stdout)
    assert f"repaired: BM25: {files} files" in said and "rebuilt from the vector store" in said
    found = cli("search", "parse config", "--index-dir", str(idx), "--bm25")
    assert found.returncode == 0 and "gen_" in found.stdout, found.stderr


# ------------------------------------------------------------------------------ vectors


def test_vectors_deleted_is_said_never_recreated_and_reembedded(
    built: tuple[Path, Path, Path],
) -> None:
    """Before: never detected; hybrid answered from BM25 alone with no note, --vector
    said "No hits", the search re-created an empty vectors/, and a re-run re-embedded
    nothing. Now readers refuse and create nothing; the run re-embeds every file."""
    crate, idx, clean = built
    shutil.rmtree(idx / "vectors")
    with pytest.raises(IndexDamagedError, match=r"vector store is missing.*rcm-dask index"):
        SearchIndex(idx, embedder=HashEmbedder())
    assert not (idx / "vectors").exists(), "a search must never create a store"
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    files: dict[str, list[str]] = index_state(clean)["files"]  # type: ignore[assignment]
    chunks = sum(len(ids) for ids in files.values())
    assert emb.embedded == chunks
    assert stats.files_repaired == stats.files_indexed
    assert any("vector store was missing" in r for r in stats.repairs)
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


def test_vectors_missing_some_points_is_said_and_only_those_reembedded(
    built: tuple[Path, Path, Path],
) -> None:
    crate, idx, clean = built
    with EdgeVectorStore(idx / "vectors", HashEmbedder.dimension) as store:
        lost = store.count(["src/gen_2.rs"])
        store.delete_paths(["src/gen_2.rs"])
        store.commit()
    # BM25 is intact: the open succeeds, the first vector query refuses
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", mode="bm25", limit=3)
        with pytest.raises(IndexDamagedError, match="vector store holds"):
            s.search("parse config", limit=3)
        with pytest.raises(IndexDamagedError, match="vector store holds"):
            s.stats()
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    assert (stats.files_repaired, stats.files_indexed, emb.embedded) == (1, 1, lost)
    assert_converged(idx, clean)


def _segment(idx: Path) -> Path:
    """The one segment folder of an index's embedded shard."""
    (segment,) = (idx / "vectors" / "segments").iterdir()
    return segment


VECTOR_FILE = "vector_storage/vectors/chunk_0.mmap"
PAYLOAD_FILE = "payload_storage/page_0.dat"


def _cut(file: Path, how: str) -> None:
    if how == "deleted":
        file.unlink()
    else:
        os.truncate(file, 0 if how == "emptied" else file.stat().st_size // 2)


def _assert_reembedded(
    crate: Path, idx: Path, clean: Path, said: str
) -> tuple[Any, CountingEmbedder]:
    """A plain run moves the damaged shard aside and re-embeds every file, keeping the
    manifest and BM25; then the index equals a clean build and searches."""
    created = json.loads((idx / "identity.json").read_text())["created"]
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb)
    files: dict[str, list[str]] = index_state(clean)["files"]  # type: ignore[assignment]
    assert emb.embedded == sum(len(ids) for ids in files.values())
    assert stats.files_repaired == stats.files_indexed == len(files)
    (note, *_) = [r for r in stats.repairs if r.startswith("the vector store was damaged")]
    assert said in note and f"moved aside to {idx / 'vectors.damaged'}" in note
    assert not any("from scratch" in r for r in stats.repairs), "the manifest is kept"
    assert json.loads((idx / "identity.json").read_text())["created"] == created
    assert (idx / "vectors.damaged" / "segments").is_dir(), "kept aside, not deleted"
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)
    assert _cli("status", "--index-dir", str(idx)).exit_code == 0
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", mode="vector", limit=3) and not s.notices
    return stats, emb


@pytest.mark.parametrize("how", ["emptied", "halved", "deleted"])
@pytest.mark.parametrize("name", [VECTOR_FILE, PAYLOAD_FILE], ids=["vectors", "payloads"])
def test_vector_shard_cut_short_is_said_and_reembedded(
    built: tuple[Path, Path, Path], name: str, how: str
) -> None:
    """Before: `status` and `health_check` said ok, a plain run said "12 unchanged", and
    a search died with a traceback (``vector 0 is not readable``), or, halved, answered
    until the shard grew into the missing half. Now every reader refuses, naming the
    plain run, and that run re-embeds every file into a new shard."""
    crate, idx, clean = built
    _cut(_segment(idx) / name, how)
    said = name.rsplit("/", 1)[1] + (" is missing" if how == "deleted" else " holds ")
    repair = (
        rf"Run `{re.escape(repair_command(idx, read_identity(idx)))}` to repair it \(it "
        "moves the damaged vector store aside"
    )
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", mode="bm25", limit=3), "BM25 still answers"
        with pytest.raises(IndexDamagedError, match=rf"vector .*{said}.*{repair}"):
            s.search("parse config", limit=3)
    result = _cli("status", "--index-dir", str(idx))
    assert result.exit_code == 1 and said in _said(result.output)
    assert "moves the damaged vector store aside" in _said(result.output)
    health = check_index(str(crate), idx, IndexConfig(), "ready")
    assert health.bm25.ok and not health.vectors.ok and health.vectors.info["damaged"]
    assert said in health.vectors.detail
    _assert_reembedded(crate, idx, clean, said)


def test_unreadable_vector_shard_is_moved_aside_and_reembedded(
    built: tuple[Path, Path, Path],
) -> None:
    """A shard the engine cannot open. Before: it asked for --force (which rebuilds BM25
    and the manifest too). Now a plain run repairs it as any damaged shard, and moves it
    aside rather than deleting it: a failure that was only passing loses nothing."""
    crate, idx, clean = built
    (idx / "vectors" / "edge_config.json").write_text("garbage{")
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        with pytest.raises(IndexDamagedError, match=r"cannot be opened.*moves the damaged"):
            s.search("parse config", limit=3)
    _assert_reembedded(crate, idx, clean, "edge_config.json")
    assert (idx / "vectors.damaged" / "edge_config.json").read_text() == "garbage{"
    # a second repair replaces the first one's leftovers
    (idx / "vectors" / "edge_config.json").write_text("garbage 2{")
    _run(crate, idx)
    assert (idx / "vectors.damaged" / "edge_config.json").read_text() == "garbage 2{"
    assert_converged(idx, clean)


def test_vector_points_that_do_not_read_back_are_said_and_reembedded(
    built: tuple[Path, Path, Path],
) -> None:
    """Files of the right size whose content is garbage: the points read back on open
    fail (the engine's error, not a traceback), and the run re-embeds every file."""
    crate, idx, clean = built
    page = _segment(idx) / PAYLOAD_FILE
    with page.open("r+b") as f:
        f.write(b"\xff" * 65536)
    with pytest.raises(IndexDamagedError, match=r"points cannot be read back.*moves the"):
        with SearchIndex(idx, embedder=HashEmbedder()) as s:
            s.stats()
    _assert_reembedded(crate, idx, clean, "points cannot be read back")


_HOLD_AND_CUT = """
import os, sys
from pathlib import Path
from rcm_dask.errors import IndexDamagedError, IndexIdentityError
from rcm_dask.search import SearchIndex
from rcm_dask.testing import HashEmbedder
idx = Path(sys.argv[1])
with SearchIndex(idx, embedder=HashEmbedder()) as s:
    assert s.search("parse config", limit=3)
    (segment,) = (idx / "vectors" / "segments").iterdir()
    os.truncate(segment / sys.argv[2], 0)
    try:
        s.search("gen item", limit=3)
    except IndexDamagedError as e:
        print("refused:", e)
"""


@pytest.mark.parametrize("name", [VECTOR_FILE, PAYLOAD_FILE], ids=["vectors", "payloads"])
def test_shard_cut_short_under_an_open_searcher_never_kills_it(
    built: tuple[Path, Path, Path], name: str
) -> None:
    """Reading through a map whose file was cut short kills the process with SIGBUS
    (before: exit -7 of a long-lived searcher such as the MCP server). Each read first
    checks the mapped files' sizes, so the searcher refuses and lives on."""
    _, idx, _ = built
    out = subprocess.run(
        [sys.executable, "-c", _HOLD_AND_CUT, str(idx), name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("refused: the vector shard at") and "holds 0 of" in out.stdout


@pytest.mark.parametrize(
    "name", [VECTOR_FILE, "vector_storage/vectors/status.dat"], ids=["chunk", "status"]
)
def test_cli_status_and_search_of_a_cut_shard_exit_1_without_a_crash(
    built: tuple[Path, Path, Path], name: str
) -> None:
    """What a user meets, as real processes: the message and exit 1; no traceback, no
    SIGBUS, and no Rust panic (an emptied ``status.dat`` made the engine panic on load:
    the file check runs before the engine opens anything)."""
    crate, idx, _ = built
    os.truncate(_segment(idx) / name, 0)
    for args in (["status"], ["search", "parse config"]):
        out = subprocess.run(
            [str(RCM_DASK), *args, "--index-dir", str(idx)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        said = _said(out.stderr)
        assert out.returncode == 1, (args, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and "panicked" not in out.stderr
        assert said.startswith("Error: the index at") and name.rsplit("/", 1)[1] in said
        assert f"Run `{repair_command(idx, read_identity(idx))}` to repair it" in said


def test_healthy_shard_check_reads_no_mapped_file(built: tuple[Path, Path, Path]) -> None:
    """The check costs stats of the mapped files and one small read of a few points;
    it finds nothing in a healthy shard, and names every mapped file it checks."""
    _, idx, _ = built
    files, problem = mapped_files(idx / "vectors")
    names = sorted(str(f.relative_to(_segment(idx))) for f, _ in files)
    assert problem == "" and VECTOR_FILE in names and PAYLOAD_FILE in names
    assert edge_shard_damage(idx / "vectors") == ""
    with EdgeVectorStore(idx / "vectors", HashEmbedder.dimension, create=False) as store:
        assert store.damage() == ""


def test_server_collection_deleted_is_said_never_recreated_and_reembedded(
    crate: Path, tmp_path: Path, qdrant_server: LocalQdrantServer
) -> None:
    """The same with the vectors on a Qdrant server (qdrant-client's on-disk local mode
    stands in for one): the collection is gone."""
    url = qdrant_server.url
    idx = tmp_path / "idx"
    _run(crate, idx, qdrant_url=url)
    collection = json.loads((idx / "identity.json").read_text())["collection"]
    client = qdrant_server(url)
    client.delete_collection(collection)
    client.close()
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", mode="bm25", limit=3)
        with pytest.raises(IndexDamagedError, match=r"vector store is missing.*--qdrant-url"):
            s.search("parse config", limit=3)
        with pytest.raises(IndexDamagedError, match="vector store is missing"):
            s.stats()
    client = qdrant_server(url)
    assert not client.collection_exists(collection), "a search must never create a store"
    client.close()
    emb = CountingEmbedder()
    stats = _run(crate, idx, emb, qdrant_url=url)
    state = index_state(idx)
    files: dict[str, list[str]] = state["files"]  # type: ignore[assignment]
    chunks = sum(len(ids) for ids in files.values())
    assert emb.embedded == chunks == len(state["vectors"])  # type: ignore[arg-type]
    assert stats.files_repaired == stats.files_indexed == len(files)
    assert state["bm25"] == state["vectors"]


def test_server_index_passes_the_shard_checks_untouched(
    crate: Path, tmp_path: Path, qdrant_server: LocalQdrantServer
) -> None:
    """The file and read-back checks are the embedded shard's: an index on a server
    opens, reports ok and re-runs as unchanged, with nothing moved aside."""
    idx = tmp_path / "idx"
    _run(crate, idx, qdrant_url=qdrant_server.url)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.vectors.damage() == ""
        assert s.search("parse config", limit=3) and s.stats().files
    assert _cli("status", "--index-dir", str(idx)).exit_code == 0
    health = check_index(str(crate), idx, IndexConfig(), "ready")
    assert health.vectors.ok and health.vectors.info["points"] > 0
    stats = _run(crate, idx, CountingEmbedder(), qdrant_url=qdrant_server.url)
    assert stats.repairs == [] and stats.files_indexed == 0
    assert not (idx / "vectors.damaged").exists()


def test_cli_search_of_an_index_without_vectors_is_an_error(
    built: tuple[Path, Path, Path],
) -> None:
    """What a user meets: `rcm-dask search` prints the error and the repair, exit 1."""
    _, idx, _ = built
    shutil.rmtree(idx / "vectors")
    out = subprocess.run(
        [str(RCM_DASK), "search", "parse config", "--index-dir", str(idx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr
    said = _said(out.stderr)
    assert said.startswith("Error: the index at") and "vector store is missing" in said
    assert f"--index-dir {idx}" in said and "Traceback" not in out.stderr
    assert not (idx / "vectors").exists()


# ------------------------------------------------------------------ manifest and identity


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="emptied"),
        pytest.param(_truncate, id="truncated"),
        pytest.param(lambda p: p.write_bytes(b"not a database\n" * 300), id="garbage"),
    ],
)
def test_manifest_damaged_is_said_and_rebuilt(
    built: tuple[Path, Path, Path], damage: Any
) -> None:
    """Before: `status` and `index` died with sqlite3.DatabaseError tracebacks."""
    crate, idx, clean = built
    for suffix in ("-wal", "-shm"):
        (idx / ("manifest.sqlite" + suffix)).unlink(missing_ok=True)
    damage(idx / "manifest.sqlite")
    with pytest.raises(IndexDamagedError, match=r"manifest.sqlite.*rebuilds it from scratch"):
        SearchIndex(idx, embedder=HashEmbedder())
    result = _cli("status", "--index-dir", str(idx))
    assert result.exit_code == 1 and "manifest.sqlite" in _said(result.output)
    stats = _run(crate, idx)
    assert stats.repairs and "rebuilt from scratch" in stats.repairs[0]
    assert stats.files_indexed == stats.files_seen
    assert_converged(idx, clean)


def test_cli_status_and_index_of_a_garbage_manifest(
    built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """What a user meets, as real processes: status says what is wrong (no traceback)."""
    crate, idx, _ = built
    (idx / "manifest.sqlite").write_bytes(b"\x00garbage" * 1000)
    out = subprocess.run(
        [str(RCM_DASK), "status", "--index-dir", str(idx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = _said(out.stderr)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "manifest.sqlite cannot be read" in said and "rcm-dask index" in said


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{garbage", id="not-json"),
        pytest.param('["a list"]', id="not-an-object"),
        pytest.param('{"model": "hash-embedder"}', id="keys-missing"),
        pytest.param("", id="empty"),
    ],
)
def test_identity_garbage_is_said_and_rebuilt(
    built: tuple[Path, Path, Path], text: str
) -> None:
    """Before: a search died with KeyError: 'dimensions'."""
    crate, idx, clean = built
    (idx / "identity.json").write_text(text)
    with pytest.raises(IndexDamagedError, match=r"identity.json .*rebuilds it from scratch"):
        SearchIndex(idx, embedder=HashEmbedder())
    result = _cli("status", "--index-dir", str(idx))
    assert result.exit_code == 1 and "identity.json" in _said(result.output)
    stats = _run(crate, idx)
    assert "identity.json" in stats.repairs[0] and "rebuilt from scratch" in stats.repairs[0]
    assert_converged(idx, clean)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", limit=3)


# ------------------------------------------------------------------ crash and BM25 scores


def _crash_mid_file(idx: Path, path: str, text: str) -> None:
    """A run that replaced one file's chunks in both stores and died before the manifest
    commit (as a kill -9 between the store commits and the manifest's leaves it)."""
    identity = json.loads((idx / "identity.json").read_text())
    emb = HashEmbedder()
    chunks = chunk_source(SourceFile(path, len(text), None, "0" * 64, text))
    record = IndexedFile(path, len(text), None, "0" * 64, tuple(c.id for c in chunks))
    writer = IndexWriter(idx, identity)
    vectors = emb.embed_batch([c.code for c in chunks])
    writer.write_file(record, EmbeddedBatch(tuple(chunks), vectors))
    writer.bm25.commit()
    assert writer.vectors is not None
    writer.vectors.commit()
    writer.close(commit=False)


def test_bm25_scores_after_a_crash_equal_a_clean_index(built: tuple[Path, Path, Path]) -> None:
    """Before: the recovered index ranked differently from a clean one, deleted chunks
    still counting in Tantivy's term statistics. Now they are purged."""
    crate, idx, clean = built
    _crash_mid_file(idx, "src/gen_1.rs", "pub fn parse_config_half_written() {}\n")
    _crash_mid_file(idx, "src/gen_5.rs", "pub fn gen_item_parse() -> u32 { 1 }\n")
    assert Manifest(idx, readonly=True).pending() == ["src/gen_1.rs", "src/gen_5.rs"]
    stats = _run(crate, idx)
    assert stats.files_recovered == 2
    with Bm25Store.open(idx / "bm25") as store:
        assert store.deleted_count() == 0
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


def test_bm25_after_edits_is_rewritten_once_deletes_add_up(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental run deletes the old chunks of what changed. Below the churn limit
    they are only counted (an edit run on a large index pays no whole rewrite); once the
    count passes it, BM25 is rewritten and scores equal a clean build's."""
    import rcm_dask.integrity as integrity

    idx = tmp_path / "idx"
    _run(crate, idx)
    monkeypatch.setattr(integrity, "BM25_CHURN_LIMIT", 0.9)
    (crate / "src" / "gen_3.rs").write_text("/// Parse a header.\npub fn parse_head() {}\n")
    _run(crate, idx)
    churn = Manifest(idx, readonly=True).get_meta(integrity.BM25_CHURN_KEY)
    assert churn == 5  # gen_3.rs held four items and the file's own record
    with Bm25Store.open(idx / "bm25") as store:
        assert store.deleted_count() == 5  # counted, not purged

    monkeypatch.setattr(integrity, "BM25_CHURN_LIMIT", 0.05)
    (crate / "src" / "gen_2.rs").write_text("/// Parse a config.\npub fn parse_it() {}\n")
    (crate / "src" / "gen_6.rs").unlink()
    stats = _run(crate, idx)
    assert (stats.files_indexed, stats.files_removed) == (1, 1)
    assert Manifest(idx, readonly=True).get_meta(integrity.BM25_CHURN_KEY) == 0
    with Bm25Store.open(idx / "bm25") as store:
        assert store.deleted_count() == 0
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert_converged(idx, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


def test_a_rewrite_a_dead_run_owed_is_done_by_the_next(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run is killed after its last commit but before its BM25 rewrite (once Tantivy
    has merged the deletes away, nothing in the store shows it): the rewrite was recorded
    as due before the run began, so the next run, even with nothing to do, does it."""
    import rcm_dask.integrity as integrity
    import rcm_dask.modes as modes

    idx = tmp_path / "idx"
    _run(crate, idx)
    monkeypatch.setattr(integrity, "BM25_CHURN_LIMIT", 0.0)  # any edit makes a rewrite due
    monkeypatch.setattr(modes, "purge_bm25_deletes", lambda *a, **k: 0)
    (crate / "src" / "gen_3.rs").write_text("/// Parse a header.\npub fn parse_head() {}\n")
    _run(crate, idx)  # "dies" before its rewrite
    assert Manifest(idx, readonly=True).get_meta(integrity.BM25_REWRITE_KEY) is True
    monkeypatch.undo()
    stats = _run(crate, idx)
    assert stats.files_indexed == 0
    assert Manifest(idx, readonly=True).get_meta(integrity.BM25_REWRITE_KEY) is False
    with Bm25Store.open(idx / "bm25") as store:
        assert store.deleted_count() == 0
    clean = tmp_path / "clean"
    _run(crate, clean)
    assert _bm25_ranks(idx) == _bm25_ranks(clean)


# ------------------------------------------------------------------ status during a run


def test_status_during_a_run_says_a_run_is_in_progress(built: tuple[Path, Path, Path]) -> None:
    """Before: the files a live run was rewriting were "half-written by an interrupted
    run". Now status says a run is in progress (and checks nothing against its counts)."""
    _, idx, _ = built
    manifest = Manifest(idx)
    manifest.mark_pending(["src/gen_1.rs"])
    manifest.close()
    with Bm25Store.open(idx / "bm25", writable=True) as store:  # a run between its commits
        store.delete_paths(["src/gen_1.rs", "src/gen_2.rs"])
        store.commit()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from rcm_dask.stores.lock import IndexLock; "
            f"l = IndexLock({str(idx)!r}).acquire(); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _cli("status", "--index-dir", str(idx))
        assert result.exit_code == 0, result.output
        said = _said(result.output)
        assert "1 files being rewritten by the run in progress" in said
        assert "interrupted" not in said
        assert f"pid {holder.pid}" in said
    finally:
        holder.communicate("", timeout=30)
    with pytest.raises(IndexDamagedError):  # the "run" is gone and left BM25 short
        SearchIndex(idx, embedder=HashEmbedder())
    result = _cli("status", "--index-dir", str(idx))
    assert result.exit_code == 1 and "damaged" in _said(result.output)


@pytest.mark.parametrize(
    ("identity", "command"),
    [
        ({"root": "/src/x", "model": "sentence-transformers/all-MiniLM-L6-v2",
          "model_dir": "/site/gt/model"}, "rcm-dask index /src/x --index-dir /i"),
        ({"root": "/src/x", "model": "my/model", "model_dir": "/models/mine"},
         "rcm-dask index /src/x --index-dir /i --model /models/mine"),
        ({"root": "/src/x", "model": "my/model", "model_dir": "/models/mine", "vectors": "none",
          "qdrant_url": ""}, "rcm-dask index /src/x --index-dir /i --model /models/mine"),
        ({"root": "/src/x", "model": "m", "model_dir": "/m", "qdrant_url": "http://q:6333"},
         "rcm-dask index /src/x --index-dir /i --model /m --qdrant-url http://q:6333"),
        (None, "rcm-dask index PATH --index-dir /i"),
    ],
)  # fmt: skip
def test_the_repair_command_names_the_model_the_index_was_built_with(
    identity: dict[str, str] | None, command: str
) -> None:
    """A repair run with the default model over an index of another one is refused as
    built differently: the command must name the index's own model."""
    assert repair_command(Path("/i"), identity) == command


def test_edited_dimensions_are_corrected_by_a_plain_run(built: tuple[Path, Path, Path]) -> None:
    """Issue 28, item 6: an ``identity.json`` whose dimensions were edited by hand asked for
    --force, though the model it names (same fingerprint) fixes the width: a plain run
    corrects the record, says so, and the index answers as before."""
    crate, idx, clean = built
    ident = json.loads((idx / "identity.json").read_text())
    right = ident["dimensions"]
    (idx / "identity.json").write_text(json.dumps({**ident, "dimensions": right + 1}))
    stats = _run(crate, idx)
    assert any("dimensions" in r and "corrected" in r for r in stats.repairs), stats.repairs
    assert read_identity(idx)["dimensions"] == right
    assert_converged(idx, clean)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert s.search("parse config", limit=3, mode="vector")
    # another model (another fingerprint) is still another index: --force, as before
    (idx / "identity.json").write_text(
        json.dumps({**ident, "dimensions": right + 1, "model_fingerprint": "other"})
    )
    with pytest.raises(IndexIdentityError, match="--force"):
        _run(crate, idx)
