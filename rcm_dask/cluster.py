"""Cluster set-up: the Dask client a run uses, and where on it each stage runs.

A run uses the caller's own ``Client`` as it is, connects to ``config.scheduler``
after checking that a Dask scheduler answers there (:func:`dask_client`), or starts a
LocalCluster of worker processes on 127.0.0.1 for its own length
(:func:`local_workers` processes, one embedding task at a time each:
:data:`EMBED_RESOURCE`). :class:`ClusterLayout` looks at the workers and decides
where embedding runs (workers with the :data:`GPU_RESOURCE` when any has it) and
where the one index writer lives. The graph itself is built in
:mod:`rcm_dask.dataflow`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import IndexConfig
from .errors import ClusterError
from .stages import host_of

if TYPE_CHECKING:
    from distributed import Client

GPU_RESOURCE = "GPU"
"""The worker resource that marks embedding workers (``dask worker --resources GPU=1``)."""
EMBED_RESOURCE = "EMBED"
"""The resource of the run's own LocalCluster workers: one embedding task at a time each."""


@contextmanager
def dask_client(
    config: IndexConfig, client: Client | None = None, *, dashboard: bool = False
) -> Iterator[tuple[Client, str]]:
    """The client a cluster run uses, and a label saying which cluster it is.

    ``client`` (a user's own) is used as it is and left open; ``config.scheduler``
    connects to a running scheduler; otherwise a LocalCluster of worker processes is
    started on 127.0.0.1 and stopped afterwards (its dashboard only with
    ``dashboard``, bound to 127.0.0.1).

    Raises
    ------
    ClusterError
        The scheduler cannot be reached or the cluster cannot start.
    """
    if client is not None:
        yield client, f"client of {client.scheduler.address}"
        return
    from distributed import Client, LocalCluster

    if config.scheduler:
        _check_scheduler(config.scheduler, SCHEDULER_TIMEOUT)
        try:
            own = Client(config.scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {config.scheduler}: {e}") from e
        try:
            yield own, f"scheduler {own.scheduler.address}"
        finally:
            own.close()
        return
    cores = usable_cores()
    n_workers = config.n_workers or local_workers(cores)
    try:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=max(2, cores // n_workers),
            processes=True,
            # one embedding task at a time per worker, using the worker's share of the
            # cores; the worker's other threads read and chunk meanwhile
            resources={EMBED_RESOURCE: 1},
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            # the scheduler's HTTP server (health, metrics) runs even without the
            # dashboard, on :8787 by default: a random loopback port never collides
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
            preload=[__name__],  # runs dask_setup() below in each worker process
        )
    except Exception as e:
        hint = ""
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) and "__main__" not in str(getattr(main, "__spec__", "")):
            hint = (
                ". Worker processes import your script again: call rcm_dask.index() under "
                '`if __name__ == "__main__":`'
            )
        raise ClusterError(f"cannot start a local Dask cluster: {e}{hint}") from e
    try:
        own = Client(cluster)
        try:
            plural = "es" if n_workers != 1 else ""
            yield own, f"LocalCluster({n_workers} worker process{plural})"
        finally:
            own.close()
    finally:
        cluster.close()


def probe_cluster(scheduler: str = "") -> dict[str, Any]:
    """Start the cluster a run would use (one worker process, or ``scheduler``'s) through
    :func:`dask_client`, run one task on it and stop it: what the MCP server's health
    check reports.

    Returns
    -------
    dict
        ``ok``; the ``dask`` and ``distributed`` versions; on success the ``cluster``
        label, its ``workers`` and the ``seconds`` it all took; otherwise the ``error``.
    """
    out: dict[str, Any] = {"ok": False}
    try:
        import dask
        import distributed

        out.update(dask=dask.__version__, distributed=distributed.__version__)
        start = time.perf_counter()
        with dask_client(IndexConfig(scheduler=scheduler or None, n_workers=1)) as (client, label):
            if client.submit(sum, [1, 2], pure=False).result(timeout=60) != 3:
                raise ClusterError("a one-task job came back wrong")
            out["cluster"] = label
            out["workers"] = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        out["seconds"] = round(time.perf_counter() - start, 2)
        out["ok"] = True
    except Exception as e:  # the verdict is the answer: any failure is reported, not raised
        out["error"] = f"{type(e).__name__}: {e}"
    return out


SCHEDULER_TIMEOUT = 10.0
"""Seconds a run waits for a Dask scheduler to answer before it gives up."""


def _check_scheduler(address: str, timeout: float) -> None:
    """Raise :class:`ClusterError` unless a Dask scheduler answers at ``address`` in time.

    ``Client(address, timeout=...)`` waits for ever on a port that accepts connections
    but does not speak Dask (an HTTP server, the dashboard's port): its timeout covers
    the connection, not the handshake. This speaks the handshake under a hard deadline,
    in a thread of its own so that it works under a running event loop (Jupyter).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect
    from distributed.comm.addressing import get_address_host_port, parse_address
    from distributed.security import Security

    usage = "give the scheduler's address as tcp://HOST:PORT (its port is 8786 by default)"
    try:
        if parse_address(address)[0] != "inproc":  # in-process schedulers have no port
            get_address_host_port(address)
    except (ValueError, TypeError) as e:
        raise ClusterError(f"{address!r} is not a Dask scheduler address ({e}): {usage}") from e

    # past distributed's own timeout (refused, no route: it says why), the handshake hangs
    deadline = timeout + 2

    # the TLS settings a Client would use (dask's config), for tls:// schedulers
    args = Security().get_connection_args("client")

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **args), deadline)
        await comm.close()

    pool = ThreadPoolExecutor(1, thread_name_prefix="rcm-scheduler-check")
    try:
        pool.submit(asyncio.run, handshake()).result()
    except (asyncio.TimeoutError, TimeoutError) as e:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address}: nothing answered as a Dask "
            f"scheduler within {deadline:.0f} s. Is that the scheduler's port (8786 by "
            "default), not its dashboard or another service?"
        ) from e
    except Exception as e:  # refused, unknown host, TLS without certificates...
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address}: {e}. Is it running, and is that "
            "its address?"
        ) from e
    finally:
        pool.shutdown(wait=False)


class _DropComputeFailed(logging.Filter):
    """Drops the worker's "Compute Failed" report of a task's exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def dask_setup(worker: Any) -> None:
    """Preload of the run's own LocalCluster workers: they ignore Ctrl-C, and keep a
    failing task's traceback to themselves.

    A terminal sends SIGINT to the whole process group; the driver handles it (cancels
    the tasks, lets the writer commit, stops the cluster), and workers that died of it
    first would lose the writer's last commit and print tracebacks. A task's exception
    reaches the driver with its future, which says it once (one ``Error:`` line for an
    :class:`~rcm_dask.errors.RcmError`, the whole remote traceback for anything else);
    the worker's own "Compute Failed" block on the shared stderr would only bury it.
    A user's own cluster keeps its logging as its owner set it.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _DropComputeFailed) for f in worker_log.filters):
        worker_log.addFilter(_DropComputeFailed())


def local_workers(cores: int) -> int:
    """Worker processes of the run's LocalCluster on a machine with ``cores`` cores.

    One process per 4 cores, at least one. Each embeds one batch at a time with its
    share of the cores as torch threads while its other threads read and chunk.
    Measured on 2 cores (all-MiniLM-L6-v2, fp32, passes of 16): one process with 2
    torch threads and two processes with 1 each embed at the same rate in a plain loop
    (59 chunks/s), and the pipeline ran at about the same speed both ways, but two
    processes each holding a model peaked at 1,464 MB against 788 MB for one.
    """
    return max(1, cores // 4)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class ClusterLayout:
    """What the run needs to know about the cluster's workers."""

    workers: dict[str, dict[str, Any]]
    """Scheduler's worker info by address."""
    embed_workers: list[str]
    """Addresses that run embedding (those with the GPU resource, if any has it)."""
    resources: dict[str, float] | None
    """Resource restriction of embedding tasks."""
    threads_by_host: dict[str, int]
    """Torch threads per embedding task, by host."""
    slots: int
    """Embedding tasks that can run at once."""

    @classmethod
    def inspect(cls, client: Client, torch_threads: int | None) -> ClusterLayout:
        """Look at the cluster's workers and decide where embedding runs."""
        workers = dict(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise ClusterError(f"the Dask cluster at {client.scheduler.address} has no workers")
        resource = None
        for name in (GPU_RESOURCE, EMBED_RESOURCE):
            if any((w.get("resources") or {}).get(name) for w in workers.values()):
                resource = name
                break

        def slots_of(w: dict[str, Any]) -> int:
            if resource is None:
                return int(w.get("nthreads") or 1)
            return int((w.get("resources") or {}).get(resource) or 0)

        embed = [a for a, w in workers.items() if slots_of(w) > 0]
        per_host: dict[str, int] = {}
        for addr in embed:
            per_host[host_of(addr)] = per_host.get(host_of(addr), 0) + slots_of(workers[addr])
        cores = usable_cores()
        threads = {
            host: torch_threads or max(1, cores // slots) for host, slots in per_host.items()
        }
        # a remote host's cores are unknown here: one thread per slot there is safe
        threads["*"] = torch_threads or 1
        return cls(
            workers=workers,
            embed_workers=embed,
            resources={resource: 1} if resource else None,
            threads_by_host=threads,
            slots=sum(per_host.values()),
        )

    def writer_worker(self) -> str:
        """Where the writer actor lives: a worker on this host (the index folder is
        here), preferably one that does not embed."""
        here = {"127.0.0.1", "localhost", socket.gethostname()}
        try:
            here.add(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        local = [a for a in self.workers if host_of(a) in here]
        pool = local or list(self.workers)
        plain = [a for a in pool if a not in self.embed_workers]
        return min(plain or pool)
