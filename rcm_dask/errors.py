"""Run-level errors. One bad *file* never raises: it becomes a :class:`~rcm_dask.records.Skipped`.

The family::

    RcmError                      anything rcm_dask refuses to do; the message says what to do
    ├── SourceError               the input path is missing, not a folder, or has no .rs files
    ├── ConfigError               an option has an impossible value
    ├── ModelError                the embedding model cannot be found or loaded
    ├── IndexNotFoundError        search/status on a folder that holds no index
    ├── IndexIdentityError        the index was built with another model / chunker (use --force)
    ├── ClusterError              the Dask cluster cannot be reached or cannot run the work
    ├── IndexLockedError          another index run holds the index (pid, host, since when)
    ├── IndexDamagedError         a store, the manifest or identity.json is missing, unreadable
    │                             or disagrees with the rest (`rcm-dask index` repairs it)
    ├── RootNotAllowedError       an MCP tool named a path outside the roots the user allowed
    └── IndexWriteError           a store refused a write; the last commit is intact
        ├── StoreBusyError        another opener holds the store (an index run writing it,
        │                         named; or another process reading it)
        └── DiskFullError         the disk is (or would be) full: N MiB free, about M needed

Ctrl-C during an index run raises :class:`IndexInterrupted`, a ``KeyboardInterrupt``
whose message says what the index kept.

The CLI prints the message of an ``RcmError`` and exits 1, without a traceback.
"""

from __future__ import annotations


class RcmError(Exception):
    """Base of every error rcm_dask raises on purpose."""


class SourceError(RcmError):
    """The input cannot be indexed as a whole (missing path, no .rs files, ...)."""


class ConfigError(RcmError):
    """An option has an impossible value."""


class ClusterError(RcmError):
    """The Dask cluster cannot be reached, or stopped being able to run the work."""


class ModelError(RcmError):
    """The embedding model cannot be found or loaded."""


class IndexNotFoundError(RcmError):
    """No index exists where one was expected."""


class IndexIdentityError(RcmError):
    """The index on disk was built with a different model, dimension or chunker."""


class IndexLockedError(RcmError):
    """Another index run holds the index folder's lock; the message says who."""


class IndexWriteError(RcmError):
    """A store refused a write. What was committed before stays intact."""


class StoreBusyError(IndexWriteError):
    """Another opener holds a store that only one may open at a time (the embedded Qdrant):
    an index run (the message names it), or another process reading it."""


class DiskFullError(IndexWriteError):
    """The disk holding the index is full, or would be before the next step could finish;
    the message gives the free and the needed space. The last commit stays intact."""


class IndexDamagedError(RcmError):
    """Part of an index is missing, unreadable, or holds other chunks than the manifest
    records; the message says what, and the command that repairs it."""


class RootNotAllowedError(RcmError):
    """A path lies outside the folders the user allowed the MCP server to use
    (``rcm-dask mcp --root``, ``RCM_MCP_ROOTS``); see :mod:`rcm_dask.roots`."""


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an index run after it committed what it had written whole.

    Still a ``KeyboardInterrupt`` (so ``except Exception`` does not swallow it); its
    message says what the index holds now and that re-running finishes the job.
    """

    def __init__(self, message: str, files: int = 0, chunks: int = 0, pending: int = 0) -> None:
        super().__init__(message)
        self.files = files
        """Files the index holds after the interrupt."""
        self.chunks = chunks
        """Chunks the index holds after the interrupt."""
        self.pending = pending
        """Files left half-written; the next run redoes them."""


__all__ = [
    "ConfigError",
    "DiskFullError",
    "IndexDamagedError",
    "IndexIdentityError",
    "IndexInterrupted",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexWriteError",
    "ModelError",
    "RcmError",
    "SourceError",
    "StoreBusyError",
]
