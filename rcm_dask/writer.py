"""The single index writer: applies embedded batches to both stores and commits them together.

The index folder's layout is in :mod:`rcm_dask.identity`. Order of a commit: Tantivy,
then Qdrant, then the manifest (one SQLite transaction). A file enters the manifest
only once all of its chunks are in both stores, so the manifest never claims what the
stores lack; its symbols, references and imports (:mod:`rcm_dask.symbols`) go in the
same transaction as the file's row. A keyword-only index (identity ``vectors: none``)
has one store, Tantivy, and the same protocol otherwise. Before a file's chunks change
in either store, its path is committed to the manifest's ``pending`` table; the next
run re-indexes every pending path, so a crash at any point converges (see
:mod:`rcm_dask.stores.manifest`). Stores without a manifest beside them are
unaccounted for (a crash before the first commit) and are cleared before writing. A
``--force`` run over an index writes a new folder beside it (:mod:`rcm_dask.stores.swap`),
so the writer's own wipe only ever meets such leftovers. Damage that no crash explains is found and repaired by
:mod:`rcm_dask.integrity`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import IndexConfig
from .errors import IndexWriteError
from .identity import (
    BM25_DIR,
    VECTORS_DIR,
    check_identity,
    collection_name,
    keeps_vectors,
    open_vectors_waiting,
)
from .records import EmbeddedBatch, IndexedFile
from .stores import encode_payloads
from .stores.bm25 import Bm25Store
from .stores.file_records import record_text
from .stores.manifest import MANIFEST_FILE, Manifest, write_identity
from .stores.space import (
    RESERVE_BYTES,
    estimate_index_bytes,
    on_disk_full,
    require_space,
)
from .stores.swap import drop_collection
from .stores.symbol_tables import FileSymbols
from .stores.vectors import EdgeVectorStore, VectorStore
from .symbols import SymbolCollector


def writer_options(config: IndexConfig, force: bool) -> dict[str, Any]:
    """:class:`IndexWriter`'s keyword arguments for a run's settings (the sequential
    mode's writer and the cluster modes' writer actor are made alike)."""
    return {
        "qdrant_url": config.qdrant_url,
        "qdrant_api_key": config.qdrant_api_key,
        "force": force,
        "commit_every": config.commit_every,
        "commit_seconds": config.commit_seconds,
    }


class IndexWriter:
    """Owns both stores and the manifest of one index folder for the length of a run.

    Parameters
    ----------
    index_dir
        The index folder (created if missing).
    identity
        What this run produces (see :data:`rcm_dask.identity.IDENTITY_KEYS`).
    qdrant_url, qdrant_api_key
        Use a Qdrant server instead of the embedded shard.
    force
        Throw away whatever the folder holds and start afresh.
    commit_every
        Commit once this many chunks have been written since the last commit.
    commit_seconds
        Also commit when this many seconds have passed since the last commit and
        something was written (0: never by time).
    busy_wait
        Seconds to wait for a searcher to release the embedded vector shard.

    Raises
    ------
    IndexIdentityError
        The folder holds an index built with another model, chunker or root.
    IndexWriteError
        A store cannot be opened for writing (another writer holds it...).
    """

    @on_disk_full("open the index for writing")
    def __init__(
        self,
        index_dir: str | Path,
        identity: dict[str, Any],
        *,
        qdrant_url: str | None = None,
        qdrant_api_key: str | None = None,
        force: bool = False,
        commit_every: int = 4096,
        commit_seconds: float = 0.0,
        busy_wait: float = 30.0,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._last_commit = time.monotonic()
        self.index_dir.mkdir(parents=True, exist_ok=True)
        require_space(self.index_dir, RESERVE_BYTES, "open the index for writing")
        identity, stored = check_identity(self.index_dir, identity, qdrant_url, force)
        self._qdrant_api_key = qdrant_api_key
        if force or (stored is not None and not (self.index_dir / MANIFEST_FILE).exists()):
            self._wipe(stored)
        identity["created"] = (
            stored.get("created") if stored and not force else None
        ) or time.time()
        write_identity(self.index_dir, identity)
        self.identity = identity
        self.manifest = Manifest(self.index_dir)
        try:
            self.bm25 = Bm25Store.open(self.index_dir / BM25_DIR, writable=True)
        except Exception:
            self.manifest.close()
            raise
        self.vectors: VectorStore | None = None
        if keeps_vectors(identity):
            try:
                self.vectors = self._open_vectors(busy_wait)
            except Exception:
                self.bm25.close()
                self.manifest.close()
                raise
        self._expected: dict[str, IndexedFile] = {}
        self._remaining: dict[str, int] = {}
        self._replaced: set[str] = set()
        self._complete: list[IndexedFile] = []
        self._removals: list[str] = []
        # Symbol rows go into the manifest with their file's row (same transaction), so
        # they are collected while a file's chunks arrive and handed over at commit.
        self._collector = SymbolCollector()
        self._symbols: dict[str, FileSymbols] = {}
        self._file_code: dict[str, list[str]] = {}
        """Code of the chunks written so far of files not yet complete: a file's
        whole-file record (:mod:`~rcm_dask.stores.file_records`) is added when its last
        chunk is."""
        self._since_commit = 0
        self.chunks_written = 0
        self.commits = 0
        self.write_seconds = 0.0
        self.spans: list[list[float]] = []

    def _open_vectors(self, busy_wait: float) -> VectorStore:
        """Open the vector store, waiting up to ``busy_wait`` s for a searcher to let go."""
        return open_vectors_waiting(self.index_dir, self.identity, self._qdrant_api_key, busy_wait)

    def _wipe(self, stored: dict[str, Any] | None) -> None:
        """Delete every store of the folder (``--force``, or stores nothing accounts for).

        The manifest goes first: once it is gone nothing claims the stores' content,
        so a crash half-way through leaves stores that the next run clears again.
        """
        for suffix in ("", "-wal", "-shm"):
            (self.index_dir / (MANIFEST_FILE + suffix)).unlink(missing_ok=True)
        for name in (BM25_DIR, VECTORS_DIR):
            shutil.rmtree(self.index_dir / name, ignore_errors=True)
        if stored and stored.get("qdrant_url"):
            name = str(stored.get("collection") or collection_name(self.index_dir))
            try:
                drop_collection(str(stored["qdrant_url"]), name, self._qdrant_api_key)
            except Exception:
                # the server the old index used may be gone (this run may use another, or
                # none): a stray collection costs only space; a run that uses that server
                # says at open that it cannot reach it
                pass

    # -- the writer's protocol -----------------------------------------------------
    def expect_files(self, files: Sequence[IndexedFile]) -> None:
        """Announce files whose chunks will arrive in later batches (any order, any split).

        A file with no chunks is complete at once: its old chunks are removed.
        """
        empty: list[str] = []
        for f in files:
            self._expected[f.path] = f
            self._remaining[f.path] = len(f.chunk_ids)
            if not f.chunk_ids:
                empty.append(f.path)
        if empty:
            self._replace(empty)
            for path in empty:
                self._finish(path)

    @on_disk_full("write to the index")
    def write_batch(self, batch: EmbeddedBatch) -> int:
        """Apply one batch to both stores; returns the chunks written.

        The first time a run writes a chunk of some file, that file's old chunks are
        removed from both stores first. A keyword-only index takes batches without
        vectors (``batch.vectors`` None) and writes BM25 only.

        Raises
        ------
        IndexWriteError
            A store refused the write (what was committed before is intact), or a batch
            without vectors came to an index that keeps them.
        """
        if not batch.chunks:
            return 0
        if self.vectors is not None and batch.vectors is None:
            raise IndexWriteError(
                f"a batch without vectors reached the index at {self.index_dir}, which keeps "
                "vectors: re-run with --vectors qdrant, or rebuild it with --force --vectors none"
            )
        self._require_space(batch)
        start = time.perf_counter()
        chunks = batch.chunks
        counts = Counter(c.path for c in chunks)
        fresh = sorted(counts.keys() - self._replaced)
        try:
            if fresh:
                self._replace(fresh)
            # each payload is encoded once, for both stores
            encoded = encode_payloads(chunks)
            self.bm25.add_batch(chunks, encoded)
            # vectors sent to a keyword-only index are dropped: it keeps none by design
            if self.vectors is not None and batch.vectors is not None:
                self.vectors.upsert_batch(chunks, batch.vectors, encoded)
        except IndexWriteError:
            raise
        except Exception as e:
            raise IndexWriteError(f"writing to the index at {self.index_dir} failed: {e}") from e
        add = self._collector.add
        code = self._file_code
        for c in chunks:
            add(c)
            code.setdefault(c.path, []).append(c.code)
        remaining = self._remaining
        # files finish in the order of their last chunk in the batch, as chunk by chunk
        last = {c.path: i for i, c in enumerate(chunks)}
        for path in sorted(last, key=last.__getitem__):
            k = counts[path]
            left = remaining.get(path)
            if left is not None:
                remaining[path] = left - k
                if left <= k:
                    self._finish(path)
        n = len(chunks)
        self.chunks_written += n
        self._since_commit += n
        if self._since_commit >= self.commit_every or (
            self.commit_seconds > 0 and time.monotonic() - self._last_commit >= self.commit_seconds
        ):
            self.commit()
        self._record(start)
        return n

    def _require_space(self, batch: EmbeddedBatch) -> None:
        """Refuse a batch the disk cannot take: on a full disk the embedded Qdrant dies
        of SIGBUS (it writes through memory maps) instead of failing the write."""
        dims = self.vectors.dim if isinstance(self.vectors, EdgeVectorStore) else None
        text = sum(len(c.code) + len(c.docs) + len(c.signature) for c in batch.chunks)
        needed = estimate_index_bytes(len(batch.chunks), text, dims)
        require_space(self.index_dir, needed, f"write {len(batch.chunks)} chunks")

    def _record(self, start: float) -> None:
        """Count busy time since ``start`` (perf_counter) and keep its wall-clock span."""
        now = time.perf_counter()
        self.write_seconds += now - start
        wall = time.time()
        if self.spans and wall - (now - start) <= self.spans[-1][1] + 0.001:
            self.spans[-1][1] = wall
        else:
            self.spans.append([wall - (now - start), wall])

    def report(self) -> dict[str, Any]:
        """What the writer did so far: chunks written, commits, busy seconds, busy spans."""
        return {
            "chunks_written": self.chunks_written,
            "commits": self.commits,
            "write_seconds": self.write_seconds,
            "spans": [list(s) for s in self.spans],
            "pid": os.getpid(),
        }

    def write_file(self, file: IndexedFile, batch: EmbeddedBatch) -> int:
        """Replace one file's chunks with ``batch`` (the sequential mode's call)."""
        self.expect_files([file])
        return self.write_batch(batch)

    def touch_files(self, files: Sequence[IndexedFile]) -> None:
        """Record files whose content is unchanged but whose size or mtime moved."""
        self._complete.extend(files)

    def remove_files(self, paths: Sequence[str]) -> None:
        """Remove files that left the codebase from both stores and, at commit, the manifest."""
        if not paths:
            return
        self._replace(list(paths))
        self._removals.extend(paths)
        self._since_commit += 1

    @on_disk_full("remove old chunks from the index")
    def _replace(self, paths: list[str]) -> None:
        """Delete the old chunks of files about to be (re)written, noting them as pending
        first (durably), so that a crash from here on makes the next run redo them."""
        try:
            self.manifest.mark_pending(paths)
            self.bm25.delete_paths(paths)
            if self.vectors is not None:
                self.vectors.delete_paths(paths)
        except Exception as e:
            raise IndexWriteError(f"removing old chunks from {self.index_dir} failed: {e}") from e
        self._replaced.update(paths)

    def _finish(self, path: str) -> None:
        """All chunks of a file are written: it goes into the manifest at the next commit."""
        self._complete.append(self._expected.pop(path))
        del self._remaining[path]
        self._symbols[path] = self._collector.finish(path)
        code = self._file_code.pop(path, None)
        if code:
            self.bm25.add_file_records({path: record_text(code)})

    @on_disk_full("commit the index")
    def commit(self) -> None:
        """Make everything written so far durable: Tantivy, Qdrant, then the manifest."""
        start = time.perf_counter()
        try:
            self.bm25.commit()
            if self.vectors is not None:
                self.vectors.commit()
        except Exception as e:
            raise IndexWriteError(f"committing the index at {self.index_dir} failed: {e}") from e
        self.manifest.apply(self._complete, self._removals, self._symbols)
        self.manifest.set_meta("updated", time.time())
        self._complete = []
        self._removals = []
        self._symbols = {}
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self.commits += 1
        self._record(start)

    def close(self, commit: bool = True) -> None:
        """Commit (unless told not to) and release both stores."""
        try:
            if commit:
                self.commit()
        finally:
            try:
                if self.vectors is not None:
                    self.vectors.close()
            finally:
                self.bm25.close()
                self.manifest.close()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # An error or Ctrl-C: keep every file written whole so far (a commit is safe at
        # any point: files half-written stay pending and the next run redoes them). A
        # failure here must not hide the error that got us here.
        try:
            self.commit()
        except Exception:
            pass
        try:
            self.close(commit=False)
        except Exception:
            pass
