"""A real Dask cluster on loopback: `dask scheduler` plus two `dask worker` processes, one
labelled with the GPU resource. Embedding must run only there; the index must equal the
sequential one, with the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.search import SearchIndex
from rcm_dask.stores.manifest import Manifest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DASK = str(Path(sys.executable).with_name("dask"))


def _wait_for(check: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Scheduler + plain worker + GPU-labelled worker, as separate OS processes."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("cluster")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    logs = [open(tmp / f"{n}.log", "w") for n in ("scheduler", "cpu", "gpu")]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    try:
        _wait_for(lambda: sched_file.exists() and sched_file.read_text().strip(), "the scheduler")
        address = json.loads(sched_file.read_text())["address"]
        common = ["--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--nanny"]
        procs.append(
            subprocess.Popen(
                [DASK, "worker", address, *common, "--name", "cpu-worker"],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        procs.append(
            subprocess.Popen(
                [DASK, "worker", address, *common, "--name", "gpu-worker", "--resources", "GPU=1"],
                stdout=logs[2],
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
            workers = client.scheduler_info(n_workers=-1)["workers"]
            by_name = {w["name"]: addr for addr, w in workers.items()}
        yield {"address": address, **by_name}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def slice_root(rust_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slice") / "alloc"
    src = rust_src / "library" / "alloc" / "src"
    for name in ("borrow.rs", "alloc.rs", "boxed/thin.rs", "collections/btree/merge_iter.rs"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, root / name)
    return root


def test_embedding_runs_only_on_the_gpu_worker_and_the_index_matches(
    real_cluster: dict[str, str], slice_root: Path, tmp_path: Path
) -> None:
    # 4 x BATCHES_PER_TASK chunks per embedding task: several tasks from a small slice
    cfg = {"partition_bytes": 8_000, "batch_size": 4, "torch_threads": 1}
    stats = index(
        str(slice_root),
        IndexConfig(index_dir=str(tmp_path / "pipe"), **cfg),
        mode="pipeline",
        scheduler=real_cluster["address"],
    )
    assert stats.mode == "pipeline" and stats.cluster == f"scheduler {real_cluster['address']}"
    assert stats.batches >= 4
    # every embedding batch ran on the worker labelled GPU=1, none on the other
    assert stats.embed_workers == {real_cluster["gpu-worker"]: stats.batches}
    # the writer lives on a worker that does not embed
    assert stats.writer_worker == real_cluster["cpu-worker"]

    seq = index(
        str(slice_root),
        IndexConfig(index_dir=str(tmp_path / "seq"), **cfg),
        mode="sequential",
    )
    assert seq.chunks == stats.chunks and seq.files_indexed == stats.files_indexed == 4

    def contents(
        path: Path,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any], list[str]]:
        with SearchIndex(path) as idx:
            docs = {p["id"]: p for p in idx.bm25.iter_payloads()}
            vecs = {pid: np.asarray(v) for pid, v, _ in idx.vectors.iter_points()}
            top = [h.id for h in idx.search("borrowed or owned data, clone on write", limit=5)]
        m = Manifest(path, readonly=True)
        files = {f.path: f for f in m.files()}
        m.close()
        return docs, vecs, files, top

    docs_p, vecs_p, files_p, top_p = contents(tmp_path / "pipe")
    docs_s, vecs_s, files_s, top_s = contents(tmp_path / "seq")
    assert files_p == files_s
    assert docs_p == docs_s
    assert set(vecs_p) == set(vecs_s) == set(docs_s)
    # other batch shapes, same model: equal within float tolerance
    cos = [float(vecs_p[k] @ vecs_s[k]) for k in vecs_s]
    assert min(cos) > 0.9999
    assert top_p == top_s


def test_probe_cluster_reports_instead_of_raising() -> None:
    """The health check's probe: the run's own recipe answers with a verdict, never an error."""
    from rcm_dask.cluster import probe_cluster

    bad = probe_cluster("not a scheduler")
    assert bad["ok"] is False and "not a Dask scheduler address" in bad["error"]
    assert bad["dask"] and bad["distributed"]
    good = probe_cluster()
    assert good["ok"] is True, good
    assert good["cluster"] == "LocalCluster(1 worker process)" and good["workers"] == 1
