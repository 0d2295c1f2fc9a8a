"""The vector store: one embedding per chunk in Qdrant, searched by cosine similarity.

Two backends offer the same :class:`VectorStore` protocol, and one conformance test
class runs against both:

* :class:`EdgeVectorStore` (the default) embeds the Qdrant engine in this process
  (``qdrant_edge``) and keeps the shard in the index folder: no server to run.
* :class:`QdrantClientVectorStore` talks to a Qdrant server through
  ``qdrant_client`` (or to its in-process local mode, used by the tests).

Point ids are the chunk ids (UUID strings); each point's payload is
:func:`~rcm_dask.stores.packed_payload`: ``path`` and ``kind``, with keyword indexes so
the filters and per-file deletes stay cheap, and the whole
:func:`~rcm_dask.stores.chunk_payload` as JSON text. Searches hand back the unpacked
payload (:func:`~rcm_dask.stores.unpack_payload`), also for points of format-2 indexes,
which carry every field spelled out.

A shard whose files were cut short or lost is found cheaply (:func:`edge_shard_damage`:
file sizes against the layout, :meth:`EdgeVectorStore.damage`: a few points read back),
and never read through a map past its file's end, which would kill the process with
SIGBUS: the backend refuses with :class:`~rcm_dask.errors.IndexDamagedError` instead.

Unlike the BM25 store, a vector write is visible to searches as soon as it
returns (Qdrant has no transactions); :meth:`VectorStore.commit` is a durability
point, and keeping the two stores consistent is the index writer's job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import warnings
import weakref
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

from ..closing import Closing
from ..errors import (
    IndexDamagedError,
    IndexIdentityError,
    IndexNotFoundError,
    IndexWriteError,
    RcmError,
    StoreBusyError,
)
from ..records import Chunk
from . import StoreHit, encode_payloads, packed_payload, unpack_payload
from .lock import describe_holder, is_locked, read_holder
from .space import disk_full_error, is_disk_full, require_space, shard_open_bytes

if TYPE_CHECKING:  # qdrant_client takes half a second to import: only when used.
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

INDEXED_PAYLOAD_FIELDS: tuple[str, ...] = ("path", "kind")
"""Payload fields with a keyword index: the filters and per-file deletes use them."""

SCROLL_PAGE = 512
"""Points fetched per page by ``iter_points``."""

PROBE_POINTS = 16
"""Points read back (vectors and payloads) when a shard is checked for damage: the
first of a scroll by id, so spread at random over the shard's storage."""

VectorsLike = Sequence[Sequence[float]] | npt.NDArray[Any]
"""A batch of vectors: one row per chunk, as nested sequences or a 2-D array."""

VectorLike = Sequence[float] | npt.NDArray[Any]
"""One query vector: a sequence or a 1-D array."""

_LOCAL_MODE_INDEX_WARNING = r"Payload indexes have no effect in the local Qdrant"


@runtime_checkable
class VectorStore(Protocol):
    """What the index writer and the search need from a vector backend.

    Every method that takes chunks or ids accepts an empty sequence (and does
    nothing). ``kinds``/``paths`` filters that are None or empty keep everything.
    """

    def upsert_batch(
        self,
        chunks: Sequence[Chunk],
        vectors: VectorsLike,
        encoded: Sequence[tuple[dict[str, Any], str]] | None = None,
    ) -> None:
        """Insert or replace one point per chunk (id: ``chunk.id``), vectors in the same
        order; ``encoded``: the chunks' :func:`~rcm_dask.stores.encode_payloads`, when the
        caller has them already."""
        ...

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete every point of the given files."""
        ...

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by chunk id."""
        ...

    def commit(self) -> None:
        """Make every write so far durable on disk."""
        ...

    def search(
        self,
        vector: VectorLike,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[StoreHit]:
        """The nearest points by cosine similarity, best first, payload included; none of
        the files ``exclude_paths`` names."""
        ...

    def count(self, paths: Sequence[str] | None = None) -> int:
        """Number of points (of these files only, when ``paths`` is given)."""
        ...

    def iter_points(self) -> Iterator[tuple[str, list[float], dict[str, Any]]]:
        """Every point as ``(id, vector, payload)``; vectors come back unit-length."""
        ...

    def damage(self) -> str:
        """What makes the stored vectors or payloads unreadable (``""``: nothing found);
        cheap enough for every open."""
        ...

    def close(self) -> None:
        """Flush and release the store; idempotent."""
        ...


def _vector_rows(
    chunks: Sequence[Chunk], vectors: VectorsLike, dim: int, where: str
) -> list[list[float]]:
    """Check the vectors against the chunks and the dimension; return them as float lists."""
    if len(chunks) != len(vectors):
        raise IndexWriteError(
            f"{where}: got {len(chunks)} chunks but {len(vectors)} vectors; they must pair up"
        )
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except ValueError as e:
        raise IndexWriteError(f"{where}: vectors are not all the same length: {e}") from e
    if array.ndim != 2 or array.shape[1] != dim:
        raise IndexWriteError(
            f"{where}: expected vectors of dimension {dim}, got shape {array.shape}; "
            "was the index built with another model? re-run indexing with --force"
        )
    # Cosine distance normalises vectors, so a zero or NaN one has no direction.
    norms = np.linalg.norm(array, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        first = chunks[int(np.argmax(bad))]
        raise IndexWriteError(f"{where}: the vector of {first.location} is zero or not finite")
    rows: list[list[float]] = array.tolist()
    return rows


def _query_vector(vector: VectorLike, dim: int, where: str) -> list[float]:
    """A query vector as a float list, after checking its dimension."""
    values = [float(x) for x in vector]
    if len(values) != dim:
        raise IndexIdentityError(
            f"{where} holds vectors of dimension {dim}, but the query vector has "
            f"{len(values)}: search with the model the index was built with, or "
            "re-run indexing with --force"
        )
    return values


def _plain_vector(vector: object) -> list[float]:
    """The single unnamed dense vector of a point, whatever container the backend used."""
    if isinstance(vector, dict):
        vector = vector.get("")
    if not isinstance(vector, list) or (vector and not isinstance(vector[0], (int, float))):
        raise TypeError(f"expected one dense vector, got {type(vector).__name__}")
    return [float(x) for x in vector]


def _point_id(point_id: object, payload: dict[str, Any]) -> str:
    """The chunk id of a point: the payload's copy, exactly as the chunk spelled it."""
    # Qdrant hands UUIDs back in canonical form; the payload keeps the original string.
    return str(payload.get("id", point_id))


def _engine_failed(e: BaseException) -> bool:
    """Whether an exception is the engine's own failure: an error, or a Rust panic (pyo3's
    ``PanicException`` derives from ``BaseException``, so ``except Exception`` misses it)."""
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


def _read_config(path: Path) -> dict[str, Any]:
    """A storage folder's ``config.json`` (empty when missing or not a JSON object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stored_length(status: Path) -> int | None:
    """The count a storage keeps in the first 8 bytes of its ``status.dat`` (None: the file
    is missing or shorter than that)."""
    try:
        with status.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return int.from_bytes(head, "little") if len(head) == 8 else None


def _status_short(status: Path, beside: Collection[str]) -> bool:
    """Whether a ``status.dat`` is shorter than its layout: 16 bytes beside the flag
    files of a bit set, else 8 (a count). The engine panics on a short one."""
    try:
        held = status.stat().st_size
    except OSError:
        return True
    return held < (16 if "flags_a.dat" in beside else 8)


def mapped_files(path: str | Path) -> tuple[list[tuple[Path, int]], str]:
    """The files of an embedded shard that the engine maps and reads in place, each with
    the size its layout requires, and what is missing from that layout.

    Only small files are read (each storage's ``config.json`` and ``status.dat``), never
    the mapped ones: a read past the end of a map whose file was cut short kills the
    process with SIGBUS. Two layouts are known (qdrant-edge 0.9): chunked vectors
    (``chunk_N.mmap`` files of ``chunk_size_bytes``, as many as the ``chunk_size_vectors``
    the stored count needs) and Gridstore pages (``page_N.dat`` of ``page_size_bytes``:
    the payloads and the keyword indexes). Both are allocated whole when created, so a
    shorter file has lost data. Folders of another layout are left to the engine's own
    checks.

    Parameters
    ----------
    path
        The shard folder (``INDEX/vectors``).

    Returns
    -------
    files : list of (Path, int)
        Each mapped file and its required size in bytes.
    problem : str
        What is missing (a storage's ``status.dat``, a chunk or page file), or ``""``.
    """
    root = Path(path)
    files: list[tuple[Path, int]] = []
    for folder, _, names in os.walk(root / "segments"):
        here = Path(folder)
        present = set(names)
        if "status.dat" in present and _status_short(here / "status.dat", present):
            return files, f"{_relative(root, here / 'status.dat')} is cut short"
        config = _read_config(here / "config.json") if "config.json" in present else {}
        try:
            if "chunk_size_bytes" in config and "chunk_size_vectors" in config:
                size, per_chunk = int(config["chunk_size_bytes"]), int(config["chunk_size_vectors"])
                stored = _stored_length(here / "status.dat")
                if stored is None:
                    return files, f"{_relative(root, here / 'status.dat')} is missing"
                chunks = -(-stored // max(per_chunk, 1))
                files += [(here / f"chunk_{i}.mmap", size) for i in range(chunks)]
            elif "page_size_bytes" in config:
                size = int(config["page_size_bytes"])
                pages = sum(1 for n in present if n.startswith("page_") and n.endswith(".dat"))
                files += [(here / f"page_{i}.dat", size) for i in range(max(pages, 1))]
        except (TypeError, ValueError):
            continue  # a config of another shape: the engine's checks decide
    return files, ""


def _short_file(root: Path, files: Sequence[tuple[Path, int]]) -> str:
    """The first of ``files`` that is missing or shorter than its size (``""``: none)."""
    for file, size in files:
        try:
            held = file.stat().st_size
        except FileNotFoundError:
            return f"{_relative(root, file)} is missing"
        except OSError as e:
            return f"{_relative(root, file)} cannot be read ({e})"
        if held < size:
            return f"{_relative(root, file)} holds {held:,} of its {size:,} bytes"
    return ""


def _relative(root: Path, file: Path) -> str:
    """A shard file named from the shard folder."""
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def edge_shard_damage(path: str | Path) -> str:
    """What is missing or cut short in an embedded shard's mapped files (``""``: nothing).

    A few file stats (:func:`mapped_files`): cheap enough for every open, and it reads
    nothing through a map, so it never faults on a truncated file.

    Parameters
    ----------
    path
        The shard folder (``INDEX/vectors``).

    Returns
    -------
    str
        e.g. ``segments/<id>/vector_storage/vectors/chunk_0.mmap holds 0 of its
        33,554,432 bytes``.
    """
    root = Path(path)
    files, problem = mapped_files(root)
    return problem or _short_file(root, files)


READER_BUSY_WAIT = 1.0
"""Seconds a reader waits for another process's reader to let go of a shard (a search
holds it for one query); a shard an index run holds is refused at once."""


def _edge_config(dim: int) -> qe.EdgeConfig:
    """The engine's configuration of an rcm_dask shard of dimension ``dim``."""
    # "Cold" vectors are read through the map as needed, not copied in when a segment
    # loads: a search opens the shard without touching most of it (on tmpfs, where a
    # read fills a hole, the copy-in took 32 MiB and died of SIGBUS on a small disk).
    # The write-ahead log stays on: it is also the shard's lock.
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold)
    )


def _check_stored_config(path: Path, dim: int) -> None:
    """Refuse early, with both dimensions named, when the stored shard has another one."""
    try:
        stored = json.loads((path / "edge_config.json").read_text(encoding="utf-8"))
        params = stored["vectors"][""]
        size, distance = int(params["size"]), str(params["distance"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable or another layout: the engine's own check still runs
    if size != dim or distance.lower() != "cosine":
        raise IndexIdentityError(
            f"the vector shard at {path} holds {size}-dimensional vectors "
            f"({distance} distance), but {dim}-dimensional cosine vectors were "
            "asked for: was the index built with another model? re-run indexing "
            "with --force"
        )


def _busy_error(path: Path, writer: bool) -> StoreBusyError:
    """What refusing a shard whose write-ahead log another opener holds says: who that
    can be, as far as this process can tell."""
    if writer:
        # the index lock keeps a second run out: the holder is a reader, or a store that
        # code of this process opened directly
        return StoreBusyError(
            f"the vector shard at {path} is in use by another process, or by another store "
            "of this one (a search or a status check reading this index holds it for a "
            "moment); try again when it has let go"
        )
    index_dir = path.parent
    if is_locked(index_dir):
        return StoreBusyError(
            f"the vector shard at {path} is in use by an index run "
            f"({describe_holder(read_holder(index_dir))}); try again when it has finished"
        )
    # no run holds the index: another process has the shard open (a second MCP server,
    # `rcm-dask search`, code of its own); never report a run that does not exist
    return StoreBusyError(
        f"the vector shard at {path} is in use by another process (no index run holds "
        f"this index; it was still held after {READER_BUSY_WAIT:g} s): try again, or stop "
        "the other process that keeps it open (a second rcm_dask MCP server or search)"
    )


def _load_shard(
    path: Path, dim: int, config: qe.EdgeConfig, *, writer: bool
) -> tuple[qe.EdgeShard, list[tuple[Path, int]]]:
    """Load an existing shard: (the engine's shard, its mapped files with their sizes),
    after checking its dimension and that no mapped file is missing or cut short."""
    require_space(path, shard_open_bytes(path), "open the vector shard")
    _check_stored_config(path, dim)
    # before the engine maps anything: a file cut short faults the reads (SIGBUS)
    # and an emptied status file makes the engine panic
    mapped, problem = mapped_files(path)
    problem = problem or _short_file(path, mapped)
    if problem:  # (edge_shard_damage, keeping the list for the reads' guard)
        raise IndexWriteError(f"the vector shard at {path} is damaged: {problem}")
    try:
        # Passing the config makes the engine verify the stored vectors match it.
        return qe.EdgeShard.load(str(path), config), mapped
    except BaseException as e:
        if not _engine_failed(e):
            raise
        if is_disk_full(e):
            raise disk_full_error(path, e, "open the vector shard") from e
        if "incompatible" in str(e).lower():
            raise IndexIdentityError(
                f"the vector shard at {path} does not match dimension {dim} "
                f"with cosine distance ({e}); re-run indexing with --force"
            ) from e
        if "wouldblock" in str(e).lower() or "lock" in str(e).lower():
            raise _busy_error(path, writer) from e
        raise IndexWriteError(
            f"cannot open the vector shard at {path}: {e} (is another "
            "rcm_dask process using this index?)"
        ) from e


@dataclasses.dataclass(eq=False, slots=True)
class _SharedShard:
    """One shard open for reading, shared by every read-only store of it in this process.

    The engine admits one opener of a shard per process and folder (its write-ahead log
    is its lock), so readers that each opened it (an MCP server's searches and status
    checks, running in threads) refused one another. Now the first reader opens it, the
    others join, and the last to leave closes it: between queries nothing holds the
    shard, and an index run (a child process) can take it.
    """

    key: tuple[int, int]
    """(device, inode) of the shard folder: the registry's key."""
    path: Path
    """The folder's name when it was opened."""
    dim: int
    """Vector dimension."""
    shard: qe.EdgeShard
    """The engine's open shard."""
    mapped: list[tuple[Path, int]]
    """Its mapped files and their sizes (the reads' guard against SIGBUS)."""
    dir_fd: int
    """An open descriptor of the folder, held so that its inode (the key) is not
    reused by another folder while this entry lives, even once the folder is
    deleted (a forced rebuild's old tree)."""
    users: int = 0
    """Read-only stores using it."""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """Serialises engine calls on the shard."""


_readers: dict[tuple[int, int], _SharedShard] = {}
_readers_lock = threading.Lock()


def _join_reader(path: Path, dim: int) -> _SharedShard:
    """The shared reader of the shard at ``path``, opened when none is; waits up to
    :data:`READER_BUSY_WAIT` for another process's reader to let go of it."""
    deadline = time.monotonic() + READER_BUSY_WAIT
    while True:
        try:
            with _readers_lock:
                return _join_reader_once(path, dim)
        except StoreBusyError:
            # a run holds the index: refuse at once (it holds the shard for minutes)
            if time.monotonic() >= deadline or is_locked(path.parent):
                raise
        time.sleep(0.05)


def _join_reader_once(path: Path, dim: int) -> _SharedShard:
    """:func:`_join_reader` without the wait; call holding ``_readers_lock``."""
    if not edge_shard_exists(path):
        raise IndexNotFoundError(f"no vector shard at {path}")
    try:
        dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError as e:
        raise IndexNotFoundError(f"no vector shard at {path}") from e
    except OSError:
        dir_fd = -1  # a system that cannot open folders (Windows): the name's inode
    try:
        st = os.fstat(dir_fd) if dir_fd >= 0 else os.stat(path)
        # keyed by the folder itself, not its name: after a forced rebuild's swap the
        # name holds another shard, which its readers must open afresh
        key = (st.st_dev, st.st_ino)
        entry = _readers.get(key)
        if entry is None:
            shard, mapped = _load_shard(path, dim, _edge_config(dim), writer=False)
            entry = _SharedShard(key, path, dim, shard, mapped, dir_fd)
            _readers[key] = entry
            dir_fd = -1  # the entry holds it now
        elif entry.dim != dim:
            _check_stored_config(path, dim)  # names both dimensions
            raise IndexIdentityError(
                f"the vector shard at {path} holds {entry.dim}-dimensional vectors, "
                f"not {dim}: re-run indexing with --force"
            )
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    entry.users += 1
    return entry


def _leave_reader(entry: _SharedShard) -> None:
    """One reader of ``entry`` is done; the last closes the shard (without a flush: readers
    write nothing, and the folder may be gone by now, swapped out and deleted)."""
    with _readers_lock:
        entry.users -= 1
        if entry.users > 0:
            return
        if _readers.get(entry.key) is entry:
            del _readers[entry.key]
        # under the registry's lock: a reader arriving now opens it after this close
        with entry.lock:
            try:
                entry.shard.close()
            except BaseException as e:
                if not _engine_failed(e):
                    raise
                # nothing was written through it, so nothing is lost
            finally:
                if entry.dir_fd >= 0:
                    os.close(entry.dir_fd)


def shared_readers() -> dict[str, int]:
    """The shards this process has open for reading: folder (as opened) to its readers."""
    with _readers_lock:
        return {str(entry.path): entry.users for entry in _readers.values()}


class EdgeVectorStore(Closing):
    """Qdrant embedded in-process (``qdrant_edge``), one shard in a folder.

    Opening creates the shard (cosine distance, keyword indexes on ``path`` and
    ``kind``) when the folder holds none, else loads it. The engine lets a shard be open
    in one place at a time (its write-ahead log is locked while open), so read-only
    stores (``readonly=True``: every search) share one open shard per folder in this
    process, reference-counted: the first opens it, the last to close closes it.

    Parameters
    ----------
    path
        Shard folder; created with its parents if missing.
    dim
        Vector dimension; must match an existing shard's.
    create
        Create the shard when the folder holds none (False for readers: a search must
        never make an empty store where one is missing).
    readonly
        Only read (needs ``create=False``): join the process's open reader of the shard,
        never write, close without a flush.

    Raises
    ------
    IndexIdentityError
        The existing shard holds vectors of another dimension (or another distance).
    IndexNotFoundError
        ``create`` is false and the folder holds no shard.
    IndexWriteError
        The shard cannot be created or opened (folder not writable), or a file it maps
        is missing or cut short (:func:`edge_shard_damage`: checked before the engine
        opens anything).
    StoreBusyError
        Another opener holds the shard: an index run (named), a writer of this process,
        or another process's reader still holding it after :data:`READER_BUSY_WAIT`.

    Examples
    --------
    >>> store = EdgeVectorStore(tmp / "vectors", dim=384)  # doctest: +SKIP
    >>> store.upsert_batch(chunks, vectors); store.commit()  # doctest: +SKIP
    >>> store.search(query_vector, limit=5)[0].payload["qualname"]  # doctest: +SKIP
    'collections::binary_heap::BinaryHeap::push'
    """

    def __init__(
        self, path: str | Path, dim: int, *, create: bool = True, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        """Shard folder."""
        self.dim = dim
        """Vector dimension."""
        self.readonly = readonly
        """Whether this store only reads: it shares the process's open shard
        (:class:`_SharedShard`), never writes, and closes without a flush."""
        self._reader: _SharedShard | None = None
        self._mapped: list[tuple[Path, int]] = []
        if readonly:
            if create:
                raise ValueError("a read-only vector store cannot create its shard")
            self._reader = _join_reader(self.path, dim)
            # a reader dropped without close() (a search that raised in a caller's
            # hands) still leaves when it is collected: the registry must not keep the
            # shard open, and so locked against index runs, for the rest of the process
            self._leave = weakref.finalize(self, _leave_reader, self._reader)
            self._shard, self._mapped = self._reader.shard, self._reader.mapped
            # one engine call at a time per shard, whichever of its readers makes it
            self._engine = self._reader.lock
            self._closed = False
            return
        self._engine = threading.Lock()
        config = _edge_config(dim)
        if edge_shard_exists(self.path):
            self._shard, self._mapped = _load_shard(self.path, dim, config, writer=True)
        elif not create:
            raise IndexNotFoundError(f"no vector shard at {self.path}")
        else:
            require_space(self.path, shard_open_bytes(self.path), "open the vector shard")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._shard = qe.EdgeShard.create(str(self.path), config)
                self._mapped = mapped_files(self.path)[0]
            except Exception as e:
                if is_disk_full(e):
                    raise disk_full_error(self.path, e, "create the vector shard") from e
                raise IndexWriteError(f"cannot create the vector shard at {self.path}: {e}") from e
        self._closed = False
        self._ensure_payload_indexes()

    def _shard_exists(self) -> bool:
        """Whether the folder already holds a shard."""
        return edge_shard_exists(self.path)

    def _ensure_payload_indexes(self) -> None:
        """Create the keyword indexes the shard lacks (all of them on a new shard)."""
        with self._engine:
            existing = self._shard.info().payload_schema
        for field in INDEXED_PAYLOAD_FIELDS:
            if field not in existing:
                self._update(
                    qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                )

    def _update(self, operation: qe.UpdateOperation) -> None:
        """Apply one update, turning an engine refusal into :class:`IndexWriteError`."""
        if self.readonly:
            raise IndexWriteError(
                f"the vector shard at {self.path} was opened read-only: open it without "
                "readonly=True to write"
            )
        try:
            with self._engine:
                self._shard.update(operation)
        except Exception as e:
            raise IndexWriteError(f"the vector shard at {self.path} refused a write: {e}") from e

    def upsert_batch(
        self,
        chunks: Sequence[Chunk],
        vectors: VectorsLike,
        encoded: Sequence[tuple[dict[str, Any], str]] | None = None,
    ) -> None:
        """Insert or replace one point per chunk, in one update.

        Parameters
        ----------
        chunks
            Chunks; each point's id is ``chunk.id`` (a UUID string) and its payload
            :func:`~rcm_dask.stores.packed_payload`.
        vectors
            One vector of length ``dim`` per chunk, same order.
        encoded
            The chunks' :func:`~rcm_dask.stores.encode_payloads`, if already made.

        Raises
        ------
        IndexWriteError
            Counts or dimensions do not match, a vector is zero, an id is not a
            UUID, or the engine refused the write.
        """
        if len(chunks) == 0 and len(vectors) == 0:
            return
        rows = _vector_rows(chunks, vectors, self.dim, f"vector shard at {self.path}")
        if encoded is None:
            encoded = encode_payloads(chunks)
        try:
            # plain float lists: the engine reads them faster than numpy rows
            points = [
                qe.Point(chunk.id, row, packed_payload(payload, text))
                for chunk, row, (payload, text) in zip(chunks, rows, encoded, strict=True)
            ]
        except ValueError as e:  # an id that is not a UUID
            raise IndexWriteError(f"the vector shard at {self.path} refused a point: {e}") from e
        self._update(qe.UpdateOperation.upsert_points(points))

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete every point of the given files.

        Parameters
        ----------
        paths
            File paths exactly as stored.

        Raises
        ------
        IndexWriteError
            The engine refused the delete.
        """
        if paths:
            self._update(qe.UpdateOperation.delete_points_by_filter(_edge_filter("path", paths)))

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by chunk id; unknown ids are ignored.

        Parameters
        ----------
        ids
            Chunk ids.

        Raises
        ------
        IndexWriteError
            An id is not a UUID, or the engine refused the delete.
        """
        if not ids:
            return
        try:
            operation = qe.UpdateOperation.delete_points(list(ids))
        except ValueError as e:
            raise IndexWriteError(f"the vector shard at {self.path} refused a delete: {e}") from e
        self._update(operation)

    def commit(self) -> None:
        """Flush every write so far to the shard's segments on disk.

        Raises
        ------
        IndexWriteError
            The flush failed.
        """
        if self.readonly:
            return  # nothing was written through it
        try:
            with self._engine:
                self._shard.flush()
        except Exception as e:
            raise IndexWriteError(f"flushing the vector shard at {self.path} failed: {e}") from e

    def search(
        self,
        vector: VectorLike,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[StoreHit]:
        """The nearest chunks by cosine similarity (:meth:`VectorStore.search`): at most
        ``limit``, best first, of the given kinds and exact file paths (None or empty
        keeps all), none of ``exclude_paths``. :class:`~rcm_dask.errors.IndexIdentityError`
        when the query vector's dimension is not the shard's.
        """
        query = _query_vector(vector, self.dim, f"the vector shard at {self.path}")
        if limit <= 0:
            return []
        conditions: list[qe.FieldCondition] = [
            _edge_condition(field, values)
            for field, values in (("kind", kinds), ("path", paths))
            if values
        ]
        # inside the query, so that the top ``limit`` is full whatever is left out
        unwanted = [_edge_condition("path", exclude_paths)] if exclude_paths else []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query),
            filter=qe.Filter(must=list(conditions) or None, must_not=list(unwanted) or None)
            if conditions or unwanted
            else None,
            with_payload=True,
        )
        hits: list[StoreHit] = []
        for point in self._read(self._shard.query, request):
            payload = unpack_payload(point.payload)
            hits.append(StoreHit(_point_id(point.id, payload), float(point.score), payload))
        return hits

    def count(self, paths: Sequence[str] | None = None) -> int:
        """Number of points.

        Parameters
        ----------
        paths
            Count only the points of these files (exact paths); None counts all.

        Returns
        -------
        int
        """
        if paths is not None and not paths:
            return 0
        where = _edge_filter("path", paths) if paths is not None else None
        return int(self._read(self._shard.count, qe.CountRequest(exact=True, filter=where)))

    def iter_points(self) -> Iterator[tuple[str, list[float], dict[str, Any]]]:
        """Every point as ``(id, vector, payload)``, in id order.

        Vectors come back unit-length: cosine distance stores them normalised.

        Yields
        ------
        tuple of (str, list of float, dict)
        """
        offset: qe.PointId | None = None
        while True:
            records, offset = self._read(
                self._shard.scroll,
                qe.ScrollRequest(
                    offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=True
                ),
            )
            for record in records:
                payload = unpack_payload(record.payload)
                yield _point_id(record.id, payload), _plain_vector(record.vector), payload
            if offset is None:
                return

    def _read(self, call: Any, request: Any) -> Any:
        """One engine read, refused before it starts when a mapped file was cut short since
        the shard opened (the read would kill the process with SIGBUS), and the engine's
        failure turned into :class:`~rcm_dask.errors.IndexDamagedError`."""
        problem = _short_file(self.path, self._mapped)
        if problem:
            raise self._damaged(f"{problem}, since it was opened")
        try:
            with self._engine:
                return call(request)
        except BaseException as e:
            if not _engine_failed(e):
                raise
            raise self._damaged(f"a read failed ({e})") from e

    def _damaged(self, problem: str) -> IndexDamagedError:
        """The error for a shard found damaged while open."""
        return IndexDamagedError(
            f"the vector shard at {self.path} is damaged: {problem}. A plain "
            f"`rcm-dask index PATH --index-dir {self.path.parent}` run repairs it"
        )

    def damage(self) -> str:
        """What makes the shard unreadable (``""``: nothing found).

        Cheap enough for every open (a few file stats and one small read: about 1 ms on a
        warm 50,000-point shard): every file the engine maps must still have the size its
        layout requires (the files :func:`mapped_files` listed when the shard opened: no
        second walk of its folders), and :data:`PROBE_POINTS` points must read back
        whole, vectors and payloads, without an engine error or panic. That the shard holds
        the points the manifest records is the caller's count check.

        Returns
        -------
        str
            What is wrong, for a message (``""`` when nothing is).
        """
        problem = _short_file(self.path, self._mapped)
        if problem:
            return problem
        try:
            with self._engine:
                records, _ = self._shard.scroll(
                    qe.ScrollRequest(limit=PROBE_POINTS, with_payload=True, with_vector=True)
                )
            for record in records:
                size = len(_plain_vector(record.vector))
                if size != self.dim:
                    return f"point {record.id} holds a vector of dimension {size}, not {self.dim}"
                unpack_payload(record.payload)
        except BaseException as e:
            if not _engine_failed(e):
                raise
            return f"its points cannot be read back ({type(e).__name__}: {e})"
        return ""

    def close(self) -> None:
        """Flush and close the shard, releasing its lock; idempotent.

        A read-only store flushes nothing (it wrote nothing, and its folder may be gone:
        a forced rebuild's swap moves the old tree aside and deletes it under its
        readers); it leaves the shared shard, which its last reader closes.

        Raises
        ------
        IndexWriteError
            The final flush of a writer failed (the shard is closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._leave()  # _leave_reader, once (never again when collected)
            return
        try:
            with self._engine:
                self._shard.flush()
        except Exception as e:
            raise IndexWriteError(f"flushing the vector shard at {self.path} failed: {e}") from e
        finally:
            self._shard.close()

    def __repr__(self) -> str:
        ro = ", readonly=True" if self.readonly else ""
        return f"EdgeVectorStore({str(self.path)!r}, dim={self.dim}{ro})"


def edge_shard_exists(path: str | Path) -> bool:
    """Whether a folder holds an embedded Qdrant shard."""
    path = Path(path)
    return (path / "edge_config.json").exists() or (path / "segments").exists()


def _edge_condition(field: str, values: Sequence[str]) -> qe.FieldCondition:
    """``field`` is one of ``values`` (Qdrant Edge)."""
    return qe.FieldCondition(field, match=qe.MatchAny(list(values)))


def _edge_filter(field: str, values: Sequence[str]) -> qe.Filter:
    """Filter on one keyword field (Qdrant Edge)."""
    return qe.Filter(must=[_edge_condition(field, values)])


class QdrantClientVectorStore(Closing):
    """A collection on a Qdrant server, through ``qdrant_client``.

    Also works with the client's in-process local mode (``QdrantClient(":memory:")``
    or ``QdrantClient(path=...)``), which the tests use.

    Parameters
    ----------
    client
        A connected client. The store closes it only when it made it
        (:meth:`from_url`).
    collection
        Collection name; created (cosine distance, keyword payload indexes on
        ``path`` and ``kind``) when missing.
    dim
        Vector dimension; must match an existing collection's.

    Raises
    ------
    IndexIdentityError
        The collection exists with another dimension, distance or named vectors.
    IndexWriteError
        The server cannot be reached or refused to create the collection.

    Examples
    --------
    >>> from qdrant_client import QdrantClient
    >>> store = QdrantClientVectorStore(QdrantClient(location=":memory:"), "rust", dim=3)
    >>> store.count()
    0
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dim: int,
        *,
        owns_client: bool = False,
        create: bool = True,
    ) -> None:
        from qdrant_client.http import models as qm

        self.client = client
        """The Qdrant client."""
        self.collection = collection
        """Collection name."""
        self.dim = dim
        """Vector dimension."""
        self._owns_client = owns_client
        self._closed = False
        try:
            if client.collection_exists(collection):
                self._check_collection()
            elif not create:
                raise IndexNotFoundError(f"no collection {collection!r} on the Qdrant server")
            else:
                client.create_collection(
                    collection,
                    vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.COSINE),
                )
            self._ensure_payload_indexes()
        except RcmError:
            raise
        except Exception as e:
            raise IndexWriteError(f"cannot open Qdrant collection {collection!r}: {e}") from e

    @classmethod
    def from_url(
        cls,
        url: str,
        collection: str,
        dim: int,
        api_key: str | None = None,
        *,
        create: bool = True,
    ) -> QdrantClientVectorStore:
        """Connect to a Qdrant server and open (or create) a collection there.

        Parameters
        ----------
        url
            Server URL (``http://localhost:6333``).
        collection
            Collection name.
        dim
            Vector dimension.
        api_key
            API key, if the server needs one.

        Returns
        -------
        QdrantClientVectorStore
            A store that closes its client on :meth:`close`.

        Raises
        ------
        IndexIdentityError
            The collection exists with another dimension.
        IndexWriteError
            The server cannot be reached.
        """
        from qdrant_client import QdrantClient

        client = QdrantClient(url=url, api_key=api_key)
        try:
            return cls(client, collection, dim, owns_client=True, create=create)
        except IndexWriteError as e:
            client.close()
            raise IndexWriteError(
                f"{e} (Qdrant server {url}: is it running, and is the URL right?)"
            ) from e
        except BaseException:
            client.close()
            raise

    def _where(self) -> str:
        """The collection, named for messages."""
        return f"Qdrant collection {self.collection!r}"

    def _check_collection(self) -> None:
        """Refuse a collection whose vectors this store cannot use."""
        from qdrant_client.http import models as qm

        params = self.client.get_collection(self.collection).config.params.vectors
        if isinstance(params, dict):
            params = params.get("")
        if params is None:
            raise IndexIdentityError(
                f"{self._where()} uses named vectors; rcm_dask needs one unnamed vector per "
                "point: choose another collection name"
            )
        if params.size != self.dim or params.distance != qm.Distance.COSINE:
            raise IndexIdentityError(
                f"{self._where()} holds {params.size}-dimensional vectors "
                f"({params.distance.value} distance), but {self.dim}-dimensional cosine "
                "vectors were asked for: was it built with another model? choose another "
                "collection or re-run indexing with --force"
            )

    def _ensure_payload_indexes(self) -> None:
        """Create the keyword indexes the collection lacks."""
        from qdrant_client.http import models as qm

        existing = self.client.get_collection(self.collection).payload_schema or {}
        for field in INDEXED_PAYLOAD_FIELDS:
            if field in existing:
                continue
            with warnings.catch_warnings():
                # Local mode has no payload indexes and says so on every call; the
                # indexes matter on a server, so they are asked for all the same.
                warnings.filterwarnings(
                    "ignore", message=_LOCAL_MODE_INDEX_WARNING, category=UserWarning
                )
                self.client.create_payload_index(
                    self.collection, field, field_schema=qm.PayloadSchemaType.KEYWORD, wait=True
                )

    def _write(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        """Run one client write, turning a refusal into :class:`IndexWriteError`."""
        try:
            call(self.collection, *args, wait=True, **kwargs)
        except RcmError:
            raise
        except Exception as e:
            raise IndexWriteError(f"{self._where()} refused {what}: {e}") from e

    def upsert_batch(
        self,
        chunks: Sequence[Chunk],
        vectors: VectorsLike,
        encoded: Sequence[tuple[dict[str, Any], str]] | None = None,
    ) -> None:
        """Insert or replace one point per chunk, in one request.

        Parameters
        ----------
        chunks
            Chunks; point id ``chunk.id``, payload :func:`~rcm_dask.stores.packed_payload`.
        vectors
            One vector of length ``dim`` per chunk, same order.
        encoded
            The chunks' :func:`~rcm_dask.stores.encode_payloads`, if already made.

        Raises
        ------
        IndexWriteError
            Counts or dimensions do not match, a vector is zero, or Qdrant refused
            the write.
        """
        from qdrant_client.http import models as qm

        if len(chunks) == 0 and len(vectors) == 0:
            return
        rows = _vector_rows(chunks, vectors, self.dim, self._where())
        if encoded is None:
            encoded = encode_payloads(chunks)
        # one column-wise Batch: no PointStruct model to build and validate per chunk
        batch = qm.Batch(
            ids=[chunk.id for chunk in chunks],
            vectors=rows,
            payloads=[packed_payload(payload, text) for payload, text in encoded],
        )
        self._write("an upsert", self.client.upsert, points=batch)

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete every point of the given files.

        Parameters
        ----------
        paths
            File paths exactly as stored.

        Raises
        ------
        IndexWriteError
            Qdrant refused the delete.
        """
        from qdrant_client.http import models as qm

        if paths:
            selector = qm.FilterSelector(filter=qm.Filter(must=[_client_condition("path", paths)]))
            self._write("a delete", self.client.delete, points_selector=selector)

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by chunk id; unknown ids are ignored.

        Parameters
        ----------
        ids
            Chunk ids.

        Raises
        ------
        IndexWriteError
            Qdrant refused the delete.
        """
        from qdrant_client.http import models as qm

        if ids:
            selector = qm.PointIdsList(points=list(ids))
            self._write("a delete", self.client.delete, points_selector=selector)

    def commit(self) -> None:
        """Nothing to do: every write waited for Qdrant to apply it and log it durably."""

    def search(
        self,
        vector: VectorLike,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[StoreHit]:
        """The nearest chunks by cosine similarity (:meth:`VectorStore.search`): at most
        ``limit``, best first, of the given kinds and exact file paths (None or empty
        keeps all), none of ``exclude_paths``. :class:`~rcm_dask.errors.IndexIdentityError`
        when the query vector's dimension is not the collection's.
        """
        from qdrant_client.http import models as qm

        query = _query_vector(vector, self.dim, self._where())
        if limit <= 0:
            return []
        conditions: list[qm.Condition] = [
            _client_condition(field, values)
            for field, values in (("kind", kinds), ("path", paths))
            if values
        ]
        response = self.client.query_points(
            self.collection,
            query=query,
            query_filter=qm.Filter(
                must=conditions or None,
                must_not=[_client_condition("path", exclude_paths)] if exclude_paths else None,
            )
            if conditions or exclude_paths
            else None,
            limit=limit,
            with_payload=True,
        )
        hits: list[StoreHit] = []
        for point in response.points:
            payload = unpack_payload(point.payload)
            hits.append(StoreHit(_point_id(point.id, payload), float(point.score), payload))
        return hits

    def count(self, paths: Sequence[str] | None = None) -> int:
        """Number of points.

        Parameters
        ----------
        paths
            Count only the points of these files (exact paths); None counts all.

        Returns
        -------
        int
        """
        from qdrant_client.http import models as qm

        if paths is not None and not paths:
            return 0
        where = qm.Filter(must=[_client_condition("path", paths)]) if paths is not None else None
        return int(self.client.count(self.collection, count_filter=where, exact=True).count)

    def iter_points(self) -> Iterator[tuple[str, list[float], dict[str, Any]]]:
        """Every point as ``(id, vector, payload)``, in id order.

        Vectors come back unit-length: cosine distance stores them normalised.

        Yields
        ------
        tuple of (str, list of float, dict)
        """
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            for record in records:
                payload = unpack_payload(record.payload)
                yield _point_id(record.id, payload), _plain_vector(record.vector), payload
            if offset is None:
                return

    def damage(self) -> str:
        """Always ``""``: the server keeps its own files, and a read that fails there is the
        server's to report, not damage to this index (its count is still checked)."""
        return ""

    def close(self) -> None:
        """Close the client if this store made it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.client.close()


    def __repr__(self) -> str:
        return f"QdrantClientVectorStore(collection={self.collection!r}, dim={self.dim})"


def _client_condition(field: str, values: Sequence[str]) -> qm.FieldCondition:
    """``field`` is one of ``values`` (qdrant_client)."""
    from qdrant_client.http import models as qm

    return qm.FieldCondition(key=field, match=qm.MatchAny(any=list(values)))


def open_vector_store(
    index_dir: Path,
    dim: int,
    qdrant_url: str | None,
    collection: str,
    api_key: str | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
) -> VectorStore:
    """Open the vector store an index is configured with.

    Parameters
    ----------
    index_dir
        The index folder; the embedded shard lives in its ``vectors`` subfolder.
    dim
        Vector dimension of the embedding model.
    qdrant_url
        Qdrant server URL, or None for the embedded engine.
    collection
        Collection name on the server (unused by the embedded engine).
    api_key
        Server API key, if any.
    create
        Create the shard or collection when missing (False for readers).
    readonly
        Only read: the embedded shard is shared with this process's other readers and
        closed without a flush (needs ``create=False``; a server collection ignores it).

    Returns
    -------
    VectorStore
        :class:`EdgeVectorStore` without a URL, else :class:`QdrantClientVectorStore`.

    Raises
    ------
    IndexIdentityError
        The existing vectors have another dimension.
    IndexNotFoundError
        ``create`` is false and there is no shard or collection.
    IndexWriteError
        The store cannot be opened or created.
    """
    if qdrant_url is None:
        return EdgeVectorStore(Path(index_dir) / "vectors", dim, create=create, readonly=readonly)
    return QdrantClientVectorStore.from_url(
        qdrant_url, collection, dim, api_key=api_key, create=create
    )


__all__ = [
    "INDEXED_PAYLOAD_FIELDS",
    "PROBE_POINTS",
    "READER_BUSY_WAIT",
    "SCROLL_PAGE",
    "EdgeVectorStore",
    "QdrantClientVectorStore",
    "VectorStore",
    "edge_shard_damage",
    "edge_shard_exists",
    "mapped_files",
    "open_vector_store",
    "shared_readers",
]
