"""The three indexing modes on real Dask processes and real stores: same index, clean failures."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.dataflow import DaskRun
from rcm_dask.errors import ClusterError, ConfigError, IndexWriteError
from rcm_dask.planning import choose_mode, plan_run
from rcm_dask.records import FileRef, IndexStats, ParsedPartition
from rcm_dask.sources import discover_sources, open_root
from rcm_dask.stages import embed_segments, group_files, read_chunk_partition
from rcm_dask.testing import (
    FailingEmbedder,
    HashEmbedder,
    SlowEmbedder,
    config_for,
    index_snapshot,
)

from . import DATA

MODES = ("sequential", "parallel", "pipeline")


@pytest.fixture(scope="module")
def corpus(rust_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real slice of rust-src plus the odd files every mode must treat alike."""
    root = tmp_path_factory.mktemp("corpus") / "collections"
    shutil.copytree(rust_src / "library" / "alloc" / "src" / "collections", root)
    shutil.copy(DATA / "broken.rs", root / "broken.rs")
    (root / "empty.rs").write_text("")
    (root / "only_uses.rs").write_text("use std::fmt;\n")
    (root / "latin1.rs").write_bytes(b"// caf\xe9\nfn f() {}\n")
    return root


# small partitions and an odd batch size: many partitions, batches that cross files
_config = partial(config_for, partition_bytes=24_000, batch_size=50)

_snapshot = partial(
    index_snapshot,
    vectors=True,
    queries=("push onto the heap", "drain filter linked list", "VecDeque rotate"),
)
"""Everything an index holds, in comparable form."""


def _assert_converged(root: Path, idx: Path, fresh: Path) -> None:
    """The index at ``idx`` holds exactly what a fresh sequential index of ``root`` holds."""
    index(str(root), _config(fresh), mode="sequential", embedder=HashEmbedder())
    a, b = _snapshot(idx), _snapshot(fresh)
    assert a["files"] == b["files"] and a["docs"] == b["docs"]
    assert set(a["vectors"]) == set(b["vectors"])


@pytest.fixture
def code(corpus: Path, tmp_path: Path) -> Path:
    """A copy of the corpus that a test may change."""
    root = tmp_path / "code"
    shutil.copytree(corpus, root)
    return root


@pytest.fixture(scope="module")
def indexes(
    corpus: Path, dask_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The corpus indexed once in each mode, with its stats and its snapshot."""
    out = {}
    for mode in MODES:
        index_dir = tmp_path_factory.mktemp(f"idx-{mode}")
        client = None if mode == "sequential" else dask_client
        stats = index(
            str(corpus), _config(index_dir), mode=mode, client=client, embedder=HashEmbedder()
        )
        out[mode] = (stats, _snapshot(index_dir), index_dir)
    return out


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("mode", ["parallel", "pipeline"])
class TestModeParity:
    """Each cluster mode against the sequential baseline."""

    def test_same_chunk_ids_and_files(self, indexes: dict[str, Any], mode: str) -> None:
        base, other = indexes["sequential"][1], indexes[mode][1]
        assert len(base["files"]) >= 40
        assert other["files"] == base["files"]  # paths, sizes, hashes, chunk ids in order

    def test_same_bm25_documents(self, indexes: dict[str, Any], mode: str) -> None:
        base, other = indexes["sequential"][1], indexes[mode][1]
        assert len(base["docs"]) > 3000
        assert other["docs"] == base["docs"]

    def test_same_vectors(self, indexes: dict[str, Any], mode: str) -> None:
        base, other = indexes["sequential"][1], indexes[mode][1]
        assert set(other["vectors"]) == set(base["vectors"]) == set(base["docs"])
        for cid, vec in base["vectors"].items():
            np.testing.assert_allclose(other["vectors"][cid], vec, atol=1e-5)

    def test_same_search_results(self, indexes: dict[str, Any], mode: str) -> None:
        assert indexes[mode][1]["searches"] == indexes["sequential"][1]["searches"]

    def test_stats_agree(self, indexes: dict[str, Any], mode: str) -> None:
        base, other = indexes["sequential"][0], indexes[mode][0]
        assert other.mode == mode and base.mode == "sequential"
        for name in (
            "files_seen",
            "files_indexed",
            "files_todo",
            "files_done",
            "chunks",
            "chunks_made",
            "chunks_embedded",
            "chunks_written",
            "chunks_with_errors",
        ):
            assert getattr(other, name) == getattr(base, name), name
        assert other.skipped == base.skipped == {"not-utf8": 1}
        assert other.chunks == other.chunks_made == other.chunks_written
        # cross-file tasks of exactly BATCHES_PER_TASK x batch_size chunks, except the last
        assert other.batches == -(-other.chunks // (50 * DaskRun.BATCHES_PER_TASK))
        # sequential embeds file by file: one batch per file with chunks
        assert base.batches == sum(
            1 for f in indexes["sequential"][1]["files"].values() if f.chunk_ids
        )


def test_cluster_modes_record_where_and_when(indexes: dict[str, Any], dask_client: Any) -> None:
    workers = set(dask_client.scheduler_info(n_workers=-1)["workers"])
    for mode in ("parallel", "pipeline"):
        stats = indexes[mode][0]
        assert stats.cluster.startswith("client of tcp://127.0.0.1")
        assert (
            set(stats.embed_workers) <= workers
            and sum(stats.embed_workers.values()) == stats.batches
        )
        assert stats.writer_worker in workers
        assert set(stats.stage_spans) == {"parse", "embed", "write"}
        assert {"read", "chunk", "embed", "write"} <= set(stats.stage_seconds)
        d = stats.to_dict()
        assert set(d["stage_overlap_seconds"]) == {"parse+embed", "embed+write", "parse+write"}
    # stage after stage: parsing is over before embedding starts
    assert indexes["parallel"][0].overlap("parse", "embed") == 0
    seq = indexes["sequential"][0]
    assert seq.cluster == "in-process" and seq.embed_workers == {"in-process": seq.batches}


def test_pipeline_overlaps_stages(corpus: Path, dask_client: Any, tmp_path: Path) -> None:
    """With embedding slower than parsing, parsing and writing happen while batches embed."""
    slow = SlowEmbedder(0.05)
    slow.slow_batches = True  # type: ignore[attr-defined]  # a CPU model's one batch per task
    stats = index(
        str(corpus),
        _config(tmp_path / "idx", partition_bytes=8_000, max_inflight_batches=2),
        mode="pipeline",
        client=dask_client,
        embedder=slow,
    )
    assert stats.overlap("parse", "embed") > 0
    assert stats.overlap("embed", "write") > 0


def test_incremental_rerun_in_pipeline_matches_fresh_index(
    code: Path, dask_client: Any, tmp_path: Path
) -> None:
    root = code
    idx = tmp_path / "idx"
    index(str(root), _config(idx), mode="pipeline", client=dask_client, embedder=HashEmbedder())
    (root / "binary_heap" / "mod.rs").write_text("/// A heap.\npub fn heapify_all() {}\n")
    (root / "linked_list.rs").unlink()
    (root / "new_one.rs").write_text("pub struct Fresh;\nimpl Fresh { pub fn go(&self) {} }\n")
    stats = index(
        str(root), _config(idx), mode="pipeline", client=dask_client, embedder=HashEmbedder()
    )
    assert stats.files_indexed == 2 and stats.files_removed == 1
    _assert_converged(root, idx, tmp_path / "fresh")


# --------------------------------------------------------------------------- failures


def test_error_in_a_stage_stops_the_run_and_keeps_the_last_commit(
    code: Path, dask_client: Any, tmp_path: Path
) -> None:
    root = code
    idx = tmp_path / "idx"
    index(str(root), _config(idx), mode="sequential", embedder=HashEmbedder())
    before = _snapshot(idx)
    for path in ("binary_heap/mod.rs", "vec_deque/mod.rs"):  # changed: both re-indexed
        with open(root / path, "a") as f:
            f.write("\npub fn added_later() {}\n")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="failed on purpose"):
        index(
            str(root),
            _config(idx),
            mode="pipeline",
            client=dask_client,
            embedder=FailingEmbedder("VecDeque"),
        )
    assert time.monotonic() - started < 60
    # nothing left running or held on the cluster
    deadline = time.monotonic() + 10
    while dask_client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        left = dask_client.run_on_scheduler(
            lambda dask_scheduler: [
                (str(k), t.state, [str(c) for c in t.who_wants])
                for k, t in dask_scheduler.tasks.items()
            ]
        )
        assert time.monotonic() < deadline, f"tasks left on the scheduler: {left}"
        time.sleep(0.2)
    after = _snapshot(idx)
    assert after["files"] == before["files"] and after["docs"] == before["docs"]


def test_error_in_parallel_mode_too(corpus: Path, dask_client: Any, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="failed on purpose"):
        index(
            str(corpus),
            _config(tmp_path / "idx"),
            mode="parallel",
            client=dask_client,
            embedder=FailingEmbedder("LinkedList"),
        )


def test_writer_worker_death_fails_cleanly(corpus: Path, tmp_path: Path) -> None:
    """kill -9 of the worker holding the writer actor: a clear error, no hang, a usable index."""
    import logging

    from distributed import Client, LocalCluster

    idx = tmp_path / "idx"
    killed: list[int] = []
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):

        def kill_writer(stats: IndexStats, path: str) -> None:
            if stats.chunks >= 1500 and not killed:
                pids = client.run(os.getpid, workers=[stats.writer_worker])
                killed.append(pids[stats.writer_worker])
                os.kill(killed[0], signal.SIGKILL)

        started = time.monotonic()
        with pytest.raises(IndexWriteError, match="writer .* was lost.*last commit"):
            index(
                str(corpus),
                _config(idx, commit_every=100),
                mode="pipeline",
                client=client,
                embedder=SlowEmbedder(0.02),
                progress=kill_writer,
            )
        assert killed and time.monotonic() - started < 120
    # the index opens and searches at its last commit, and a re-run completes it
    committed = _snapshot(idx)
    assert committed["files"], "periodic commits before the kill are kept"
    held = {cid for f in committed["files"].values() for cid in f.chunk_ids}
    assert held <= set(committed["docs"]) and held <= set(committed["vectors"])
    stats = index(str(corpus), _config(idx), mode="sequential", embedder=HashEmbedder())
    assert stats.files_unchanged >= len(committed["files"]) - 1
    _assert_converged(corpus, idx, tmp_path / "fresh")


def test_memory_filesystem_needs_sequential(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/modes_mem/src/lib.rs", b"pub fn f() {}\n")
    with pytest.raises(ConfigError, match="in-memory filesystem"):
        index(
            "memory://modes_mem", _config(tmp_path / "i"), mode="pipeline", embedder=HashEmbedder()
        )
    stats = index("memory://modes_mem", _config(tmp_path / "i"), embedder=HashEmbedder())
    assert stats.mode == "sequential" and stats.chunks == 2  # the function, the file's record


def test_unreachable_scheduler_is_a_cluster_error(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "lib.rs").write_text("pub fn f() {}\n")
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        index(
            str(tmp_path / "c"),
            _config(tmp_path / "i", scheduler="tcp://127.0.0.1:9", mode="pipeline"),
            embedder=HashEmbedder(),
        )


def test_own_local_cluster_is_started_and_stopped(tmp_path: Path) -> None:
    """No client given: the run starts a LocalCluster and shuts it down."""
    root = tmp_path / "c"
    root.mkdir()
    for i in range(6):
        (root / f"m{i}.rs").write_text(f"pub fn f{i}() {{}}\npub struct S{i};\n")
    stats = index(
        str(root), _config(tmp_path / "i", n_workers=2), mode="pipeline", embedder=HashEmbedder()
    )
    # six files of two items and a record each
    assert stats.cluster == "LocalCluster(2 worker processes)" and stats.chunks == 18
    assert stats.writer_worker.startswith("tcp://127.0.0.1:")


# --------------------------------------------------------------------------- pure pieces


def test_auto_mode_picks_by_work(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.rs").write_text("fn a() {}\n" * 10)
    src = open_root(str(root))
    disc = discover_sources(src)
    plan = plan_run(src, IndexConfig(), tmp_path / "i", {}, disc)
    assert choose_mode(IndexConfig(), plan, has_client=False) == "sequential"
    assert choose_mode(IndexConfig(small_codebase_bytes=10), plan, has_client=False) == "pipeline"
    assert choose_mode(IndexConfig(), plan, has_client=True) == "pipeline"
    assert choose_mode(IndexConfig(mode="parallel"), plan, has_client=False) == "parallel"


def test_group_files_by_bytes() -> None:
    refs = [FileRef(f"{i}.rs", f"/r/{i}.rs", s, None) for i, s in enumerate([10, 10, 10, 50, 5])]
    groups = group_files(refs, 25)
    assert [[r.path for r in g] for g in groups] == [["0.rs", "1.rs"], ["2.rs"], ["3.rs"], ["4.rs"]]
    assert [len(g) for g in group_files(refs, 10**9, max_files=2)] == [2, 2, 1]
    assert group_files([], 10) == []


def test_batches_are_exact_and_cross_files() -> None:
    run = object.__new__(DaskRun)
    run.batch_size = 4
    pending: deque[list[Any]] = deque([["a", 0, 3], ["b", 0, 2], ["c", 0, 6]])
    assert run._take_batch(pending, final=False) == [("a", 0, 3), ("b", 0, 1)]
    assert run._take_batch(pending, final=False) == [("b", 1, 2), ("c", 0, 3)]
    assert run._take_batch(pending, final=False) is None  # 3 left: wait for more
    assert run._take_batch(pending, final=True) == [("c", 3, 6)]
    assert run._take_batch(pending, final=True) is None and not pending


def test_read_chunk_partition_and_embed_segments(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.rs").write_text("pub fn a() {}\npub fn b() {}\n")
    (root / "b.rs").write_text("pub struct B;\n")
    (root / "c.rs").write_bytes(b"\xff\xfe")
    src = open_root(str(root))
    refs = discover_sources(src).files
    emb = HashEmbedder()
    first = read_chunk_partition(refs, src.fs, emb)
    # each file: its own record first, then its items
    assert [f.path for f in first.files] == ["a.rs", "b.rs"] and first.n_chunks == 5
    assert [s.reason for s in first.skipped] == ["not-utf8"]
    assert first.summary().chunks == () and first.summary().n_chunks == 5
    again = read_chunk_partition(refs, src.fs, emb, {"a.rs": first.files[0].sha256})
    assert [f.path for f in again.unchanged] == ["a.rs"] and [f.path for f in again.files] == [
        "b.rs"
    ]
    res = embed_segments(emb, [(first, 2, 5), (again, 0, 2)])
    assert [c.qualname for c in res.batch.chunks] == ["a::b", "b", "b::B", "b", "b::B"]
    assert res.batch.vectors.shape == (5, 64) and res.worker == "in-process"
    assert isinstance(first, ParsedPartition)


def test_embedding_tasks_run_their_passes_on_one_thread() -> None:
    """Consecutive batches share a thread (one OpenMP team); concurrent ones do not."""
    import threading

    from rcm_dask.stages import _ThreadAffinity

    affinity = _ThreadAffinity()
    names = {affinity.run(lambda: threading.current_thread().name) for _ in range(5)}
    assert len(names) == 1 and next(iter(names)).startswith("rcm-embed-")
    inside = threading.Barrier(2, timeout=10)

    def both() -> str:
        inside.wait()  # both calls are in flight at once
        return threading.current_thread().name

    callers = [threading.Thread(target=lambda: seen.append(affinity.run(both))) for _ in range(2)]
    seen: list[str] = []
    for t in callers:
        t.start()
    for t in callers:
        t.join(10)
    assert len(set(seen)) == 2 and set(seen) >= names
    with pytest.raises(ZeroDivisionError):
        affinity.run(lambda: 1 / 0)
    assert affinity.run(lambda: threading.current_thread().name) in seen


@pytest.mark.cluster
def test_batches_reach_the_writer_without_the_driver(
    corpus: Path, dask_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver gets receipts, never chunks or vectors; the vectors written are those of
    the chunk stage's token ids (null embedder: the real tokenizer, no model)."""
    from distributed import Future

    from rcm_dask.records import BatchReceipt, EmbeddedBatch, EmbedResult
    from rcm_dask.testing import NullEmbedder

    seen: list[type] = []
    result = Future.result

    def recorded(self: Future, timeout: Any = None) -> Any:
        value = result(self, timeout)
        seen.append(type(value))
        return value

    monkeypatch.setattr(Future, "result", recorded)
    null = NullEmbedder()
    stats = index(
        str(corpus), _config(tmp_path / "p"), mode="pipeline", client=dask_client, embedder=null
    )
    monkeypatch.undo()
    assert seen.count(BatchReceipt) == stats.batches > 5
    assert not {EmbedResult, EmbeddedBatch} & set(seen), set(seen)
    assert stats.driver_seconds > 0 and stats.chunks_embedded == stats.chunks
    index(str(corpus), _config(tmp_path / "s"), mode="sequential", embedder=null)

    def vectors(idx: Path) -> dict[str, Any]:
        from rcm_dask.search import SearchIndex

        with SearchIndex(idx, embedder=null) as opened:
            return {pid: np.asarray(v) for pid, v, _ in opened.vectors.iter_points()}

    piped, alone = vectors(tmp_path / "p"), vectors(tmp_path / "s")
    assert piped.keys() == alone.keys() and len(piped) == stats.chunks
    for cid, vec in alone.items():
        np.testing.assert_allclose(piped[cid], vec, atol=1e-6)
