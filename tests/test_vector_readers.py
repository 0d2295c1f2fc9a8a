"""Readers of the embedded vector shard, on real stores (qdrant_edge, Tantivy).

The engine lets one opener per process hold a shard (its write-ahead log is its lock).
Every reader in a process shares one open shard (``EdgeVectorStore(readonly=True)``), so
concurrent searches and status checks of an MCP server never refuse one another, and
never blame an index run that does not exist; readers close without a flush, so a reader
of an index that a forced rebuild swapped out and deleted closes cleanly, and a search
that fails because the folder was swapped under it is asked again of the new folder.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import IndexWriteError, StoreBusyError
from rcm_dask.mcp_server import CodeTools
from rcm_dask.roots import AllowedRoots
from rcm_dask.search import SearchIndex
from rcm_dask.stores.lock import IndexLock, is_locked
from rcm_dask.stores.swap import exchange_dirs, rebuild_dir, remove_tree
from rcm_dask.stores.vectors import EdgeVectorStore, shared_readers
from rcm_dask.testing import HashEmbedder, make_chunk

from .test_mcp import call, http_session, server_env, wait_ready  # noqa: F401 (a fixture)
from .test_mcp_confinement import http_server

DIM = 8
THREADS = 8
NEW = "pub fn kangaroo_pouch_unique() {}\n"
"""An item only a rebuilt index holds."""


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """A shard folder ``INDEX/vectors`` holding 20 points, closed."""
    chunks = [make_chunk(name=f"item_{i}", path=f"src/f{i % 4}.rs") for i in range(20)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
    path = tmp_path / "index" / "vectors"
    with EdgeVectorStore(path, DIM) as store:
        store.upsert_batch(chunks, vectors)
        store.commit()
    return path


@pytest.fixture(autouse=True)
def no_reader_left() -> Any:
    """Every test starts with no shard open for reading (readers that earlier tests
    dropped without closing leave when collected) and leaves none behind."""
    gc.collect()
    assert shared_readers() == {}
    yield
    assert shared_readers() == {}


def _query() -> list[float]:
    return [1.0] * DIM


# --------------------------------------------------------------------------- the store


def test_readers_share_one_open_shard_and_the_last_closes_it(shard: Path) -> None:
    a = EdgeVectorStore(shard, DIM, create=False, readonly=True)
    b = EdgeVectorStore(shard, DIM, create=False, readonly=True)
    assert shared_readers() == {str(shard): 2}
    assert a.count() == b.count() == 20
    assert [h.id for h in a.search(_query(), 5)] == [h.id for h in b.search(_query(), 5)]
    # while readers hold it, a writer is refused (and told no index run is to blame)
    with pytest.raises(StoreBusyError, match="in use by another process") as busy:
        EdgeVectorStore(shard, DIM)
    assert "index run" not in str(busy.value)
    a.close()
    a.close()  # idempotent: leaves once
    assert shared_readers() == {str(shard): 1} and b.count() == 20
    b.close()
    assert shared_readers() == {}
    with EdgeVectorStore(shard, DIM) as writer:  # free again: nothing holds it between uses
        assert writer.count() == 20


def test_a_reader_dropped_without_close_leaves_when_collected(shard: Path) -> None:
    """A reader its caller lost (a search that raised, a SearchIndex never closed) must not
    keep the shared shard open, and so locked against index runs, for the whole process."""
    reader = EdgeVectorStore(shard, DIM, create=False, readonly=True)
    assert shared_readers() == {str(shard): 1}
    del reader
    gc.collect()
    assert shared_readers() == {}
    with EdgeVectorStore(shard, DIM) as writer:
        assert writer.count() == 20


def test_a_reader_never_writes(shard: Path) -> None:
    with EdgeVectorStore(shard, DIM, create=False, readonly=True) as store:
        with pytest.raises(IndexWriteError, match="read-only"):
            store.delete_paths(["src/f0.rs"])
        store.commit()  # nothing to make durable: a no-op
        assert store.count() == 20
    with pytest.raises(ValueError, match="cannot create"):
        EdgeVectorStore(shard, DIM, readonly=True)


def test_threads_searching_one_shared_shard(shard: Path) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []

    def reader() -> None:
        try:
            for _ in range(25):
                with EdgeVectorStore(shard, DIM, create=False, readonly=True) as store:
                    counts.append(len(store.search(_query(), 5)))
                    assert store.damage() == ""
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and counts == [5] * (THREADS * 25)


def test_a_reader_closes_without_a_flush_after_its_folder_was_swapped_out_and_deleted(
    shard: Path, tmp_path: Path
) -> None:
    reader = EdgeVectorStore(shard, DIM, create=False, readonly=True)
    assert len(reader.search(_query(), 3)) == 3
    # what a forced rebuild does to the old tree under its readers: moved aside, deleted
    aside = tmp_path / "old-tree"
    os.rename(shard.parent, aside)
    shutil.rmtree(aside)
    reader.close()  # used to flush, and fail: "No such file or directory ... .atomicwrite"
    assert shared_readers() == {}


def test_a_writer_still_flushes_on_close(shard: Path, tmp_path: Path) -> None:
    # (why readers must not: a flush needs the folder, which a swap may have deleted)
    writer = EdgeVectorStore(shard, DIM)
    os.rename(shard.parent, tmp_path / "old-tree")
    shutil.rmtree(tmp_path / "old-tree")
    with pytest.raises(IndexWriteError, match="flushing the vector shard"):
        writer.close()


def test_a_busy_shard_names_the_run_only_when_one_holds_the_index(shard: Path) -> None:
    holder = EdgeVectorStore(shard, DIM)  # held by someone who is not an index run
    try:
        with pytest.raises(StoreBusyError, match="no index run holds this index") as e:
            EdgeVectorStore(shard, DIM, create=False, readonly=True)
        assert "in use by an index run" not in str(e.value)
        with IndexLock(shard.parent, wait=0):  # now a run holds the index: named
            with pytest.raises(StoreBusyError, match="in use by an index run") as e:
                EdgeVectorStore(shard, DIM, create=False, readonly=True)
            assert f"pid {os.getpid()}" in str(e.value)
    finally:
        holder.close()


def test_lock_probes_at_once_do_not_see_each_other_as_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    with IndexLock(folder):
        pass  # leaves index.lock behind, free
    seen: Counter[bool] = Counter()

    def probe() -> None:
        for _ in range(200):
            seen[is_locked(folder)] += 1

    threads = [threading.Thread(target=probe) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == Counter({False: THREADS * 200})
    with IndexLock(folder):
        assert is_locked(folder)


# --------------------------------------------------------------------------- search


def _build(root: Path, idx: Path) -> None:
    config = IndexConfig(index_dir=str(idx), mode="sequential")
    index(str(root), config, embedder=HashEmbedder())


def test_a_search_during_a_swap_is_asked_again_of_the_new_index(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    _build(crate, idx)
    (crate / "src" / "kangaroo.rs").write_text(NEW)
    new = rebuild_dir(idx)
    _build(crate, new)
    embedder = HashEmbedder()
    with SearchIndex(idx, embedder=embedder) as s:
        assert "kangaroo_pouch_unique" not in [
            h.name for h in s.search("kangaroo pouch unique", mode="vector", limit=20)
        ]
        calls = 0
        real = HashEmbedder.embed_batch

        def swapping(self: HashEmbedder, texts: Any) -> Any:
            # after the stores of the old folder are open: the rebuild's swap, and the
            # old tree (now under the hidden name) deleted, as a --force run does
            nonlocal calls
            calls += 1
            if calls == 1:
                assert exchange_dirs(idx, new)
                remove_tree(new, None, None)
            return real(self, texts)

        monkeypatch.setattr(HashEmbedder, "embed_batch", swapping)
        for mode in ("vector", "hybrid"):
            hits = s.search("kangaroo pouch unique", mode=mode, limit=5)
            assert hits[0].name == "kangaroo_pouch_unique", (mode, hits)
            assert s.notices == []
        assert calls == 3  # the first search was asked twice: once per folder


@pytest.fixture
def served(crate: Path, tiny_model: Path) -> tuple[CodeTools, str]:
    """(tools, codebase): the mini crate indexed with the tiny real model at its default
    index folder, and the MCP tools layer over it."""
    config = IndexConfig(model=str(tiny_model), mode="sequential")
    index(str(crate), config)
    return CodeTools(config, roots=AllowedRoots.from_settings([str(crate)])), str(crate)


def _clients(work: Any, n: int = THREADS) -> list[BaseException]:
    """Run ``work(i)`` in ``n`` threads at once; the errors they raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 (reported by the caller)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_tool_calls_share_the_shard_and_keep_hybrid_whole(
    served: tuple[CodeTools, str],
) -> None:
    """8 clients at once through the tools layer: vector and hybrid searches, similar code,
    status and health checks; no refusal, no hybrid answer without its vector half (this
    refused 22 of 80 vector searches and dropped 23 of 80 hybrids to BM25 before)."""
    tools, root = served
    seen: Counter[str] = Counter()

    def client(i: int) -> None:
        for j in range(10):
            mode = ("vector", "hybrid")[(i + j) % 2]
            out = tools.search("parse toml config", root, mode=mode)
            assert out.mode == mode and out.notices == [], out
            assert out.hits and any(h.vector_rank is not None for h in out.hits)
            seen[mode] += 1
            if j % 3 == 0:
                assert tools.status(root).state == "ready"
            if j % 5 == i % 5:
                assert tools.get_similar_code("parse_toml_config", root).notices == []
                health = tools._check_index(root, Path(tools.status(root).index_dir))
                assert health.vectors.ok and "opens" in health.vectors.detail, health

    try:
        assert _clients(client) == []
        assert seen == {"vector": 40, "hybrid": 40}
    finally:
        tools.close()


def test_searches_through_a_forced_rebuild_never_fail(
    served: tuple[CodeTools, str], tiny_model: Path
) -> None:
    """Clients search while a --force rebuild runs and swaps: every search answers (none
    sees the old reader's flush fail, none is refused), and the new item is found after."""
    tools, root = served
    (Path(root) / "src" / "kangaroo.rs").write_text(NEW)
    done = threading.Event()
    answered: Counter[str] = Counter()

    def client(i: int) -> None:
        while not done.is_set():
            mode = ("vector", "hybrid")[i % 2]
            out = tools.search("kangaroo pouch unique", root, mode=mode)
            assert out.mode == mode and out.hits, out
            answered[mode] += 1

    def rebuild(_: int) -> None:
        try:
            index(root, IndexConfig(model=str(tiny_model), mode="sequential"), force=True)
        finally:
            done.set()

    try:
        errors = _clients(lambda i: rebuild(i) if i == 0 else client(i), 5)
        assert errors == []
        assert answered["vector"] and answered["hybrid"]
        out = tools.search("kangaroo pouch unique", root, mode="vector", limit=3)
        assert out.hits[0].name == "kangaroo_pouch_unique"
    finally:
        tools.close()


def test_eight_real_mcp_http_clients_are_never_refused(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    """Issue 28, item 3, as reported: 8 MCP clients over HTTP searching one index in vector
    and hybrid mode, no index run anywhere. Before: 14 of 80 vector searches refused "in
    use by another process (an index run?)", 13 of 80 hybrid ones silently BM25 only."""
    code = tmp_path / "code"
    (code / "src").mkdir(parents=True)
    for n in range(6):
        (code / "src" / f"m{n}.rs").write_text(
            f"/// Parse the config of part {n}.\npub fn parse_part_{n}(x: u32) -> u32 {{\n"
            f"    x + {n}\n}}\n"
        )
    token = secrets.token_urlsafe(32)
    env = {**server_env, "PATH": os.environ.get("PATH", ""), "RCM_MCP_TOKEN": token}
    with http_server(env, tmp_path / "server.log", [tmp_path]) as (url, _):

        async def scenario() -> None:
            async with http_session(url, token) as session:
                await call(
                    session, "index_codebase", directory=str(code), mode="sequential",
                    wait_seconds=0,
                )  # fmt: skip
                await wait_ready(session, str(code))
            answers: list[tuple[str, Any]] = []

            async def client() -> None:
                async with http_session(url, token) as session:
                    for i in range(10):
                        mode = "vector" if i % 2 else "hybrid"
                        got = await session.call_tool(
                            "search",
                            {"query": "parse the config", "directory": str(code), "mode": mode},
                        )
                        answers.append((mode, got))

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(client)
            assert len(answers) == 80
            refused = [
                "\n".join(getattr(c, "text", "") for c in got.content)
                for _, got in answers
                if got.is_error
            ]
            assert not refused, refused[:3]
            for mode, got in answers:
                out = got.structured_content or {}
                assert out["mode"] == mode, out.get("notices")
                assert any(h["vector_rank"] is not None for h in out["hits"]), out
                assert not any("BM25 only" in n for n in out["notices"]), out["notices"]

        anyio.run(scenario)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
