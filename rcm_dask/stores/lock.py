"""One index run per index folder at a time: an OS file lock plus a note of who holds it.

The lock is ``<index_dir>/index.lock``, taken with ``filelock`` (``flock`` on POSIX,
``LockFileEx`` on Windows). The operating system drops it when its process dies,
however it dies, so a lock left by a killed run is simply free: there is no stale
lock to detect or break by hand. Beside it, ``lock.json`` says who holds the lock
(pid, host, since when, what command), written once the lock is taken; a second run
reads it to say who is in its way. A ``lock.json`` whose writer no longer holds the
lock is stale, and the next holder overwrites it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from ..errors import IndexLockedError, IndexWriteError
from .space import disk_full_error, is_disk_full

LOCK_FILE = "index.lock"
HOLDER_FILE = "lock.json"


def read_holder(index_dir: str | Path) -> dict[str, Any] | None:
    """Who last took the index lock (pid, host, since, command), or None."""
    try:
        value = json.loads((Path(index_dir) / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 4242 on host build-1 since 2026-11-24 10:02:13 (rcm-dask index .)``."""
    if not holder:
        return "another process"
    since = holder.get("since")
    when = (
        _dt.datetime.fromtimestamp(float(since)).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(since, (int, float))
        else "?"
    )
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def unwritable_error(index_dir: Path, error: OSError) -> IndexWriteError:
    """The one-line error for an index folder that cannot be made or written (no such
    parent, read-only mount, no permission); a full disk is its own error."""
    if is_disk_full(error):
        return disk_full_error(index_dir, error, "take the index lock")
    why = error.strerror or str(error)
    return IndexWriteError(
        f"cannot write the index folder {index_dir}: {why}. Pass --index-dir (or set "
        "RCM_INDEX_DIR) to a folder you can write"
    )


class IndexLock:
    """The write lock of one index folder, held for the length of an index run.

    Parameters
    ----------
    index_dir
        The index folder (created if missing).
    wait
        Seconds to wait for a running holder to finish: 0 (the default) fails at
        once, a negative number or ``inf`` waits as long as it takes.
    on_wait
        Called once, with the holder's note, when the lock is busy and we wait.

    Raises
    ------
    IndexLockedError
        From :meth:`acquire`: another process holds the lock (and ``wait`` ran out).

    Examples
    --------
    >>> with IndexLock(tmp / "index"):           # doctest: +SKIP
    ...     ...                                  # write the index
    """

    def __init__(
        self,
        index_dir: str | Path,
        *,
        wait: float = 0.0,
        on_wait: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.wait = wait
        self.on_wait = on_wait
        self._lock: FileLock | None = None

    def acquire(self) -> IndexLock:
        """Take the lock (waiting as configured) and record who holds it; returns self."""
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise unwritable_error(self.index_dir, e) from e
        # thread_local=False: a Dask client's threads may release what the caller took
        lock = FileLock(str(self.index_dir / LOCK_FILE), thread_local=False, is_singleton=False)
        try:
            # a short grace: `rcm-dask status` probes the lock for an instant
            lock.acquire(timeout=0.5, poll_interval=0.05)
        except Timeout:  # (a TimeoutError, so an OSError: this clause goes first)
            holder = read_holder(self.index_dir)
            if self.wait == 0:
                raise self._busy(holder, waited=None) from None
            if self.on_wait is not None:
                self.on_wait(holder)
            timeout = -1.0 if self.wait < 0 or self.wait == float("inf") else self.wait
            try:
                lock.acquire(timeout=timeout, poll_interval=0.2)
            except Timeout:
                raise self._busy(read_holder(self.index_dir), waited=self.wait) from None
        except OSError as e:  # read-only mount, no permission: the lock file cannot be made
            raise unwritable_error(self.index_dir, e) from e
        if not _holds_current(lock, self.index_dir / LOCK_FILE):
            # a forced rebuild swapped the folder (lock file included) while we waited:
            # what we hold is the old tree's lock; queue on the new one
            lock.release()
            return self.acquire()
        self._lock = lock
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300],
        }
        tmp = self.index_dir / (HOLDER_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(note) + "\n", encoding="utf-8")
            tmp.replace(self.index_dir / HOLDER_FILE)
        except OSError as e:
            lock.release()
            self._lock = None
            raise unwritable_error(self.index_dir, e) from e
        return self

    def _busy(self, holder: dict[str, Any] | None, waited: float | None) -> IndexLockedError:
        """The error for a lock someone else holds."""
        after = f" (waited {waited:g} s)" if waited is not None else ""
        return IndexLockedError(
            f"the index at {self.index_dir} is being written by {describe_holder(holder)}"
            f"{after}. Wait for that run to finish, or pass --wait to queue behind it."
        )

    def release(self) -> None:
        """Drop the lock and its holder note; idempotent."""
        if self._lock is None:
            return
        try:
            (self.index_dir / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._lock is not None

    def exchange(self, other: IndexLock) -> None:
        """Trade held locks with ``other`` after their two folders traded places (a forced
        rebuild's swap): each then releases the lock file now in its own folder."""
        self._lock, other._lock = other._lock, self._lock

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holds_current(lock: FileLock, path: Path) -> bool:
    """Whether the lock file ``lock`` holds is still the file at ``path``."""
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True  # no descriptor to compare (another filelock version): trust it
    try:
        held, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def is_locked(index_dir: str | Path) -> bool:
    """Whether an index run holds the folder's lock right now (for ``status``).

    The probe takes a *shared* lock for an instant (POSIX ``flock``): shared locks do not
    exclude one another, so probes that overlap (the threads of one MCP server, another
    process's ``rcm-dask status``) never see each other as an index run; only a run's
    exclusive lock makes it fail. Where ``flock`` is missing, the exclusive probe of
    ``filelock`` is used, one at a time in this process."""
    path = Path(index_dir) / LOCK_FILE
    if not path.exists():
        return False
    shared = _probe_shared(path)
    if shared is not None:
        return shared
    with _PROBE_LOCK:
        probe = FileLock(str(path), thread_local=False, is_singleton=False)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False


_PROBE_LOCK = threading.Lock()
"""Serialises this process's exclusive probes (two at once would each see the other)."""


def _probe_shared(path: Path) -> bool | None:
    """Whether a shared ``flock`` on ``path`` is refused (an exclusive holder); None where
    it cannot be tried (no ``fcntl``, a file system without ``flock``)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # removed since (a run ended, a rebuild swapped it out)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
