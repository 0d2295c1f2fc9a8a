"""The health probes of ``health_check``: the model, the Dask cluster, each index's stores.

The cluster probe runs in a child process (``python -c`` :data:`_PROBE_CODE`): a
LocalCluster's worker processes write to the standard streams, and in stdio mode the
server's stdout is the protocol. Its verdict, like the model's, is cached
(:class:`HealthChecks`): starting either costs seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import __version__
from ..config import IndexConfig
from ..errors import IndexDamagedError, IndexNotFoundError, RcmError
from ..search import SearchIndex
from ..stores.lock import describe_holder, is_locked, read_holder
from .models import ComponentHealth, IndexHealth, IndexState

logger = logging.getLogger("rcm_dask.mcp")

CLUSTER_PROBE_TTL = 600.0
"""Seconds a LocalCluster probe of ``health_check`` stays valid (starting one costs seconds)."""

CLUSTER_PROBE_TIMEOUT = 120.0
"""Seconds the LocalCluster probe may take before it counts as failed."""


class HealthChecks:
    """The model and cluster probes, and what they cache: the model's verdict once it
    loaded, the cluster's for :data:`CLUSTER_PROBE_TTL` seconds.

    Parameters
    ----------
    config
        The model and the scheduler to check.
    """

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._model_health: ComponentHealth | None = None
        self._cluster_health: tuple[float, ComponentHealth] | None = None
        self._lock = threading.Lock()

    def model_and_cluster(self) -> tuple[ComponentHealth, ComponentHealth]:
        """The model's and the cluster's health (the cluster probe runs meanwhile)."""
        with self._lock:
            probe = self._start_cluster_probe()
            model = self._check_model()
            cluster = self._finish_cluster_probe(probe)
        return model, cluster

    def _check_model(self) -> ComponentHealth:
        """Load the configured model once (cached after the first success)."""
        if self._model_health is not None:
            return self._model_health
        from ..embedding import Embedder

        started = time.perf_counter()
        try:
            emb = Embedder(
                self.config.model,
                device=self.config.device,
                torch_threads=self.config.torch_threads,
            )
            emb.load()
            vec = emb.embed_batch(["fn health_check() {}"])
        except RcmError as e:
            return ComponentHealth(ok=False, detail=str(e))
        except Exception as e:  # a broken model folder can fail in many ways
            logger.exception("the model check failed")
            return ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
        info = {
            "name": emb.name,
            "model_dir": str(emb.model_dir),
            "dimensions": emb.dimension,
            "max_tokens": emb.max_tokens,
            "device": emb.device,
            "load_seconds": round(time.perf_counter() - started, 2),
        }
        ok = int(vec.shape[-1]) == emb.dimension
        self._model_health = ComponentHealth(
            ok=ok,
            detail=f"{emb.name} loads from {emb.model_dir} ({emb.dimension} dims, "
            f"max {emb.max_tokens} tokens, on {emb.device})",
            info=info,
        )
        return self._model_health

    def _start_cluster_probe(self) -> subprocess.Popen[str] | None:
        """Start the cluster probe in a child process, unless a recent result is cached."""
        cached = self._cluster_health
        if cached is not None and time.monotonic() - cached[0] < CLUSTER_PROBE_TTL:
            return None
        return subprocess.Popen(
            [sys.executable, "-c", _PROBE_CODE, self.config.scheduler or ""],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _finish_cluster_probe(self, probe: subprocess.Popen[str] | None) -> ComponentHealth:
        """The probe's verdict (or the cached one)."""
        if probe is None:
            assert self._cluster_health is not None
            return self._cluster_health[1]
        try:
            out, err = probe.communicate(timeout=CLUSTER_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            health = ComponentHealth(
                ok=False, detail=f"no cluster answered within {CLUSTER_PROBE_TIMEOUT:.0f} s"
            )
        else:
            try:
                info = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                tail = err.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
                health = ComponentHealth(ok=False, detail=f"the cluster probe failed: {tail[0]}")
            else:
                ok = bool(info.get("ok"))
                detail = (
                    f"{info.get('cluster')} ran a task in {info.get('seconds')} s "
                    f"(dask {info.get('dask')}, distributed {info.get('distributed')})"
                    if ok
                    else f"cannot run a Dask cluster: {info.get('error')}"
                )
                health = ComponentHealth(ok=ok, detail=detail, info=info)
        self._cluster_health = (time.monotonic(), health)
        return health


def check_index(
    root: str, index_dir: Path, config: IndexConfig, state: IndexState
) -> IndexHealth:
    """Open one index's stores read-only (or report them busy); ``state`` as derived."""
    bm25 = ComponentHealth(ok=False, detail="missing")
    vectors = ComponentHealth(ok=False, detail="missing")
    try:
        idx = SearchIndex(index_dir, config)
    except IndexNotFoundError as e:
        return IndexHealth(
            directory=root,
            index_dir=str(index_dir),
            state=state,
            bm25=bm25,
            vectors=vectors.model_copy(update={"detail": str(e)}),
        )
    except Exception as e:
        detail = f"{type(e).__name__}: {e}"
        return IndexHealth(
            directory=root,
            index_dir=str(index_dir),
            state=state,
            bm25=ComponentHealth(ok=False, detail=detail),
            vectors=vectors,
        )
    with idx:
        try:
            n = idx.bm25.count()
            bm25 = ComponentHealth(
                ok=True, detail=f"opens, {n:,} documents", info={"documents": n}
            )
        except Exception as e:
            bm25 = ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
        if idx.keyword_only:
            vectors = ComponentHealth(
                ok=True,
                detail="none: a keyword-only index (search uses BM25)",
                info={"keyword_only": True},
            )
        elif is_locked(index_dir) and not idx.identity.get("qdrant_url"):
            vectors = ComponentHealth(
                ok=True,
                detail="busy: an index run holds the embedded vector store "
                f"({describe_holder(read_holder(index_dir))})",
                info={"busy": True},
            )
        else:
            try:
                n = idx.vectors.count()
                vectors = ComponentHealth(
                    ok=True, detail=f"opens, {n:,} points", info={"points": n}
                )
            except RcmError as e:
                busy = "in use" in str(e) or "busy" in str(e).lower()
                damaged = isinstance(e, IndexDamagedError)  # the message names the repair
                vectors = ComponentHealth(
                    ok=busy and not damaged,
                    detail=str(e),
                    info={"busy": busy and not damaged, "damaged": damaged},
                )
            except Exception as e:
                vectors = ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
    return IndexHealth(
        directory=root, index_dir=str(index_dir), state=state, bm25=bm25, vectors=vectors
    )


_PROBE_CODE = """
import json, sys
from rcm_dask.cluster import probe_cluster
sys.stdout.write(json.dumps(probe_cluster(sys.argv[1] if len(sys.argv) > 1 else "")) + "\\n")
"""
"""What the cluster probe runs: :func:`rcm_dask.cluster.probe_cluster`, a one-task job on
the cluster a run would start (one worker process) or on the scheduler given as its
argument; it prints one JSON line (ok, versions, label, seconds or error)."""


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the tools depend on."""
    out = {"rcm-dask": __version__, "python": platform.python_version()}
    for dist in (
        "mcp",
        "dask",
        "distributed",
        "torch",
        "transformers",
        "tantivy",
        "qdrant-edge-py",
        "tree-sitter",
        "tree-sitter-rust",
        "fsspec",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
