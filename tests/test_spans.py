"""A cluster run's stages are Dask spans: the dashboard's Fine Performance Metrics and the
performance report split its time into read+chunk, embed and write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.dataflow import DaskRun
from rcm_dask.testing import HashEmbedder

from . import DATA

pytestmark = [pytest.mark.cluster]

RUN = DaskRun.RUN_SPAN


def _run_spans(since: float, dask_scheduler: Any = None) -> dict[str, dict[str, Any]]:
    """On the scheduler: each span of a run enqueued after ``since``, by its joined name."""
    out: dict[str, dict[str, Any]] = {}
    for sp in dask_scheduler.extensions["spans"].spans.values():
        if sp.name[: len(RUN)] != RUN or sp.enqueued < since:
            continue
        metrics = sp.cumulative_worker_metrics
        out["/".join(sp.name)] = {
            "parent": "/".join(sp.parent.name) if sp.parent else None,
            # time that Dask attributes to the span's own tasks, not its idle share
            "seconds": sum(
                v
                for k, v in metrics.items()
                if k[0] == "execute" and k[-1] == "seconds" and k[1] != "N/A"
            ),
            "prefixes": sorted({tg.prefix.name for s in sp.traverse_spans() for tg in s.groups}),
            "activities": sorted({k[1:3] for k in metrics if k[0] == "execute"}),
        }
    return out


@pytest.mark.parametrize("mode", ["pipeline", "parallel"])
def test_stages_are_spans_with_compute_time(mode: str, dask_client: Any, tmp_path: Path) -> None:
    since = time.time()
    config = IndexConfig(index_dir=str(tmp_path / "idx"), partition_bytes=2_000, batch_size=8)
    embedder: Any = HashEmbedder()  # duck-types rcm_dask.embedding.Embedder
    crate = str(DATA / "mini_crate")
    stats = index(crate, config, mode=mode, client=dask_client, embedder=embedder)
    assert stats.chunks > 0
    run = "/".join(RUN)
    stages = {s: f"{run}/{s}" for s in DaskRun.STAGE_SPANS}

    def complete() -> dict[str, dict[str, Any]] | None:
        spans: dict[str, dict[str, Any]] = dask_client.run_on_scheduler(_run_spans, since)
        # workers send their metrics with their heartbeats: wait for every stage's, and
        # for the writer's busy time, booked at the end of the run
        write = spans.get(stages["write"], {})
        if all(spans.get(n, {}).get("seconds", 0) > 0 for n in stages.values()) and (
            ("IndexWriter", "write") in write.get("activities", [])
        ):
            return spans
        return None

    deadline = time.monotonic() + 30
    while (spans := complete()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    spans = spans or dask_client.run_on_scheduler(_run_spans, since)
    assert set(stages.values()) <= set(spans), sorted(spans)
    for stage, name in stages.items():
        assert spans[name]["parent"] == run, name
        assert spans[name]["seconds"] > 0, (stage, spans[name])
    assert {"read_chunk_groups", "summary"} <= set(spans[stages["read-chunk"]]["prefixes"])
    assert spans[stages["embed"]]["prefixes"] == ["embed_segments"]
    assert "IndexWriter" in spans[stages["write"]]["prefixes"]
    # the writer's own busy time, booked by the run: actor calls are not tasks
    assert ("IndexWriter", "write") in spans[stages["write"]]["activities"]
    assert spans[run]["seconds"] >= sum(spans[n]["seconds"] for n in stages.values()) - 1e-9
