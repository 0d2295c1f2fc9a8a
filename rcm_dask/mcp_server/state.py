"""What state an index is in, and the cached searchers that read it.

What ``index_status`` says is derived from the index folder itself (the committed
manifest, the run lock, which also shows runs started by ``rcm-dask index`` in another
process) and from the server's registry of runs (a failed run and its reason), and
every tool that reads an index goes through the same derivation (:func:`derive_state`,
then :func:`require_searchable`), so the status never says ``ready`` while a search
would refuse.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..config import IndexConfig
from ..embedding import Embedder
from ..errors import IndexNotFoundError, RcmError
from ..records import IndexedFile
from ..search import SearchIndex
from ..stores.lock import describe_holder, is_locked, read_holder
from ..stores.manifest import Manifest
from .models import IndexStatusOut, run_summary
from .runs import IndexRun

_T = TypeVar("_T")


def _read_manifest(index_dir: Path, read: Callable[[Manifest], _T], default: _T) -> _T:
    """``read`` of an index's committed manifest (opened read-only); ``default`` when it
    cannot be read."""
    try:
        manifest = Manifest(index_dir, readonly=True)
    except sqlite3.Error:
        return default
    try:
        return read(manifest)
    except sqlite3.Error:
        return default
    finally:
        manifest.close()


def manifest_updated(index_dir: Path) -> object:
    """The manifest's ``updated`` mark (None before the first commit)."""
    return _read_manifest(index_dir, lambda m: m.get_meta("updated"), None)


def manifest_record(index_dir: Path, rel: str) -> IndexedFile | None:
    """What the committed manifest of an index records about a file (size, mtime and
    hash when it was indexed), or None."""
    return _read_manifest(index_dir, lambda m: m.get(rel), None)


def in_manifest(index_dir: Path, rel: str) -> bool:
    """Whether the committed manifest of an index records the file."""
    return manifest_record(index_dir, rel) is not None


def derive_state(
    root: str, index_dir: Path, config: IndexConfig, run: IndexRun | None
) -> IndexStatusOut:
    """Derive the state from the folder's committed state, its lock and the server's
    latest run of it (``run``).

    Everything that reads an index asks this first, so that ``index_status`` and
    the other tools always agree.
    """
    running = run is not None and run.state == "indexing"
    locked = is_locked(index_dir)
    info: dict[str, Any] | None = None
    try:
        with SearchIndex(index_dir, config) as idx:
            info = idx.status()
    except IndexNotFoundError:
        info = None
    except (sqlite3.Error, OSError, ValueError) as e:
        # the first run of a folder creates the stores before its first commit
        if not (running or locked):
            raise RcmError(f"cannot read the index at {index_dir}: {e}") from e
        info = None
    updated = info.get("updated") if info else None
    committed = bool(info) and updated is not None
    common: dict[str, Any] = {
        "directory": root,
        "index_dir": str(index_dir),
        "run": run.out() if run is not None else None,
    }
    if info:
        common.update(
            files=int(info.get("files") or 0),
            chunks=int(info.get("chunks") or 0),
            pending=int(info.get("pending") or 0),
            updated=float(updated) if updated is not None else None,
            identity=dict(info.get("identity") or {}),
            vectors=str(info.get("vectors") or ""),
            last_run=run_summary(info.get("last_run")),
        )
    if running or locked:
        who = (
            f"run {run.run_id} of this server"
            if running and run is not None
            else describe_holder(read_holder(index_dir))
        )
        common["writer"] = who
        then = (
            "search answers from the last commit meanwhile"
            if committed
            else "nothing is committed yet, so search waits for it"
        )
        return IndexStatusOut(
            state="indexing",
            searchable=committed,
            message=f"Being indexed by {who}; {then}. Poll index_status until ready.",
            **common,
        )
    if (
        run is not None
        and run.state == "failed"
        and (not committed or float(str(updated)) <= (run.finished or 0.0))
    ):
        then = (
            "search answers from the last commit"
            if committed
            else "nothing is committed, so search refuses"
        )
        return IndexStatusOut(
            state="failed",
            searchable=committed,
            error=run.error,
            message=f"The last index run failed: {run.error} ({then}; call "
            "index_codebase again once the cause is fixed).",
            **common,
        )
    if committed:
        assert info is not None
        pending = int(info.get("pending") or 0)
        note = (
            f" {pending} files were left half-written by an interrupted run; "
            "index_codebase finishes them."
            if pending
            else ""
        )
        return IndexStatusOut(
            state="ready",
            searchable=True,
            message=f"Indexed: {common['files']:,} files, {common['chunks']:,} chunks.{note}",
            **common,
        )
    return IndexStatusOut(
        state="not_indexed",
        searchable=False,
        message=f"Not indexed yet: call index_codebase({root!r}).",
        **common,
    )


def require_searchable(state: IndexStatusOut, hint: Callable[[], str]) -> list[str]:
    """Refuse unless the index has a commit; notices to pass on otherwise.

    ``hint`` says, for a folder that is not indexed, which indexed codebase holds it
    (asked only then)."""
    root = state.directory
    if state.searchable:
        if state.state == "indexing":
            return [
                (
                    f"an index run is writing this index ({state.writer}): results come "
                    f"from its last commit ({state.files:,} files)"
                )
            ]
        if state.state == "failed":
            return [
                f"the last index run failed ({state.error}): results come from the last commit"
            ]
        return []
    if state.state == "indexing":
        raise IndexNotFoundError(
            f"{root} is being indexed and nothing is committed yet (busy: "
            f"{state.writer}); poll index_status({root!r}) until it is ready"
        )
    if state.state == "failed":
        raise IndexNotFoundError(f"{root} is not indexed: the index run failed ({state.error})")
    raise IndexNotFoundError(
        f"{root} is not indexed yet{hint()}: call index_codebase({root!r}) first"
    )


class _ServerIndex(SearchIndex):
    """A long-lived :class:`SearchIndex` that lets go of the vector store between queries."""

    def release_vectors(self) -> None:
        """Close the vector store (reopened by the next vector query).

        The embedded Qdrant engine admits one process at a time: held between
        queries, it would make every ``rcm-dask index`` run of this index wait. The
        store is read-only, one of the readers sharing this process's open shard (status
        checks and health probes in other threads): the last of them closes it."""
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None

    def loaded_embedder(self) -> Embedder | None:
        """The query embedder if one was built (its model stays loaded for the next searcher)."""
        return self._embedder


@dataclass
class _Searcher:
    """The cached read side of one index, and the lock that serialises its queries."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    index: _ServerIndex | None = None
    updated: object = None


class Searchers:
    """The server's searchers, one per index, kept open between queries.

    Parameters
    ----------
    config
        Search settings and model.
    """

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._searchers: dict[Path, _Searcher] = {}

    @contextlib.contextmanager
    def searching(self, index_dir: Path) -> Iterator[_ServerIndex]:
        """The cached searcher of an index, reopened when a commit changed it."""
        with self._lock:
            entry = self._searchers.setdefault(index_dir, _Searcher())
        with entry.lock:
            updated = manifest_updated(index_dir)
            if entry.index is None or updated != entry.updated:
                old = entry.index
                fresh = _ServerIndex(index_dir, self.config)
                if old is not None:
                    if old.identity.get("model_fingerprint") == fresh.identity.get(
                        "model_fingerprint"
                    ):
                        # same model: keep the loaded one (the check is redone on first use)
                        fresh.close()
                        fresh = _ServerIndex(index_dir, self.config, embedder=old.loaded_embedder())
                    old.close()
                entry.index, entry.updated = fresh, updated
            try:
                yield entry.index
            finally:
                entry.index.release_vectors()

    def close(self) -> None:
        """Close every searcher (a later query opens a fresh one)."""
        with self._lock:
            searchers = list(self._searchers.values())
            self._searchers.clear()
        for entry in searchers:
            with entry.lock:
                if entry.index is not None:
                    entry.index.close()
                    entry.index = None
