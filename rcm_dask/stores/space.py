"""Free space: refuse a write the disk cannot hold, before a store dies of it.

The embedded Qdrant writes through memory maps, and a write through a map to a full
disk is not an error the engine can return: the process gets SIGBUS and dies (exit
135). Tantivy and sqlite write with ``write(2)`` and fail with ``ENOSPC`` instead, each
in its own words. So the index writer asks for room before each step
(:func:`require_space`), and any disk-full error that still gets through is turned
into the same :class:`~rcm_dask.errors.DiskFullError` (:func:`is_disk_full`).

On tmpfs (and ramfs) *reading* a memory-mapped hole allocates a page, so merely
opening a shard fills in some of its sparse files; :func:`shard_open_bytes` counts
those bytes, so that a search refuses with a message instead of dying.

The figures below were measured with ``du`` (ext4 and tmpfs): 6,000 generated chunks,
the 4-file test crate, and rust-src's ``library/core`` as the README reports it. An
estimate errs high, as a refusal costs less than a crash.
"""

from __future__ import annotations

import errno
import functools
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DiskFullError, IndexWriteError

MIB = 1 << 20
"""One mebibyte."""

RESERVE_BYTES = 2 * MIB
"""Kept free beyond every estimate: lock file, identity.json, sqlite's journal (and the
32 KiB shared-memory file a reader needs), a Tantivy meta.json, the shard's small files."""

SHARD_NEW_BYTES = 4 * MIB
"""What creating the embedded shard (and its two keyword indexes) fills on tmpfs; a few
kilobytes elsewhere, where its files stay sparse."""

SHARD_LOAD_BYTES = 10 * MIB
"""What the first opening of a small shard then fills on tmpfs (its keyword indexes'
pages); nothing elsewhere."""

KEYWORD_BYTES_PER_CHUNK = 512
"""Manifest row and symbols and BM25 postings of a chunk, beside its text."""

VECTOR_BYTES_PER_CHUNK = 2048
"""Id, payload fields (context, imports, calls...) and keyword-index entries of a point,
beside its text and vector. rust-src's ``library/core`` (20,119 chunks, 384 dimensions)
has a ``vectors/`` of 89 MB on disk, 4.4 KB a chunk; this says 5.9 KB. (Its apparent size,
181 MB, counts the sparse files' holes: the write-ahead log's 32 MiB segments...)"""

SOURCE_BYTES_PER_CHUNK = 160
"""Source bytes per chunk for estimates made before chunking (``library/core``: 195,
``library/alloc``: 137); a chunk's text is taken as 1.5 times its source."""

F = TypeVar("F", bound=Callable[..., Any])

_FILLS_ON_READ = frozenset({"tmpfs", "ramfs", "shm", "hugetlbfs"})
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_WORDS = (
    "no space left on device",
    "disk quota exceeded",
    "database or disk is full",
    "os error 28",
    "os error 122",
)


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a new index folder has none yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Bytes free to an unprivileged writer on the filesystem holding ``path``.

    Parameters
    ----------
    path
        A file or folder; when missing, its nearest existing ancestor is asked.

    Returns
    -------
    int

    Examples
    --------
    >>> free_bytes("/") > 0
    True
    """
    return shutil.disk_usage(_existing(Path(path))).free


def fills_on_read(path: str | Path) -> bool:
    """Whether ``path`` lives on a memory filesystem (tmpfs, ramfs), where reading a
    hole through a shared map allocates it; False when that cannot be told."""
    target = str(_existing(Path(path)).resolve())
    best, fstype = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, rest[0]
    return fstype in _FILLS_ON_READ


def estimate_index_bytes(
    chunks: int, text_bytes: int, dims: int | None, shard_bytes: int = 0
) -> int:
    """About how many bytes writing ``chunks`` chunks adds to an index, on the high side.

    Measured on ext4: rust-src's ``library/core`` took 5.0 MB per 1,000 chunks with
    384-d vectors (this says 7.0) and 0.6 MB keyword-only (this says 1.1).

    Parameters
    ----------
    chunks
        Chunks to write.
    text_bytes
        Their text, in bytes.
    dims
        Vector dimension; None for a keyword-only index (or a Qdrant server, whose disk
        is not ours to check).
    shard_bytes
        The embedded shard's own files, when it is still to be made
        (:func:`new_shard_bytes`).

    Returns
    -------
    int
        Bytes, :data:`RESERVE_BYTES` included.

    Examples
    --------
    >>> estimate_index_bytes(1000, 400_000, 384) // 1000
    9129
    >>> estimate_index_bytes(1000, 400_000, None) // 1000
    3209
    """
    # BM25 stores and indexes the text; the manifest keeps ids and symbols
    keyword = chunks * KEYWORD_BYTES_PER_CHUNK + text_bytes * 3 // 2
    # a vector is kept twice, as float32 (the shard's segment and its write-ahead log),
    # and so is the payload with the chunk's text
    vectors = chunks * (dims * 8 + VECTOR_BYTES_PER_CHUNK) + text_bytes * 2 if dims else 0
    return RESERVE_BYTES + keyword + vectors + (shard_bytes if dims else 0)


def estimate_source_bytes(source_bytes: int, dims: int | None, shard_bytes: int = 0) -> int:
    """:func:`estimate_index_bytes` for source files not chunked yet (a run's plan)."""
    chunks = source_bytes // SOURCE_BYTES_PER_CHUNK + 1
    return estimate_index_bytes(chunks, source_bytes * 3 // 2, dims, shard_bytes)


def new_shard_bytes(path: str | Path) -> int:
    """What a new embedded shard at ``path`` fills before its first point: its files
    and, on a memory filesystem, what its first opening by a search fills in."""
    return SHARD_NEW_BYTES + SHARD_LOAD_BYTES if fills_on_read(path) else 0


def shard_open_bytes(shard_dir: str | Path) -> int:
    """Bytes that opening the embedded shard at ``shard_dir`` will allocate.

    Zero except on a memory filesystem: there, loading a segment reads its keyword
    indexes' sparse files (and, in a shard made before rcm_dask kept its vectors
    "cold", the vector file) through a map, and every hole read becomes a page.

    Parameters
    ----------
    shard_dir
        The shard folder (``INDEX/vectors``).

    Returns
    -------
    int
    """
    root = Path(shard_dir)
    if not fills_on_read(root):
        return 0
    if not (root / "segments").is_dir():
        return new_shard_bytes(root)
    holes = 0
    for segment in (root / "segments").iterdir():
        try:
            in_ram = "InRam" in (segment / "segment.json").read_text(encoding="utf-8")
        except OSError:
            in_ram = True
        folders = [segment / "payload_index"]
        if in_ram:
            folders.append(segment / "vector_storage")
        for folder in folders:
            for file in folder.rglob("*") if folder.is_dir() else ():
                try:
                    st = file.stat()
                except OSError:
                    continue
                if file.is_file():
                    holes += max(0, st.st_size - st.st_blocks * 512)
    return holes


def _mib(n: int) -> str:
    """Bytes as MiB for a message."""
    return f"{max(n, 0) / MIB:,.1f}" if n < 100 * MIB else f"{n / MIB:,.0f}"


def _size(n: int) -> str:
    """Bytes for a message, in KiB or MiB."""
    return f"{max(n, 0) / 1024:,.0f} KiB" if n < MIB else f"{_mib(n)} MiB"


def require_space(path: str | Path, needed: int, what: str) -> None:
    """Refuse, with both figures, when the disk holding ``path`` has under ``needed``
    bytes free.

    Parameters
    ----------
    path
        The index folder (or anything on the same filesystem).
    needed
        Bytes the next step needs.
    what
        The step, completing "needed to ..." ("write 512 chunks").

    Raises
    ------
    DiskFullError
        Less than ``needed`` is free.

    Examples
    --------
    >>> require_space("/", 0, "do nothing")
    """
    free = free_bytes(path)
    if free < needed:
        raise DiskFullError(
            f"not enough free space in {_existing(Path(path))}: {_mib(free)} MiB free, "
            f"about {_mib(needed)} MiB needed to {what}; free some space there or put "
            "the index on another disk (--index-dir / RCM_INDEX_DIR). The index is as "
            "it was after its last commit."
        )


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) says the disk or quota is full.

    Tantivy and the Qdrant engine raise ``ValueError``/``RuntimeError`` naming the OS
    error, sqlite an ``OperationalError``; only the words tell them apart.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if isinstance(current, (sqlite3.Error, ValueError, RuntimeError, OSError)):
            text = str(current).lower()
            if any(words in text for words in _DISK_FULL_WORDS):
                return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(path: str | Path, error: BaseException, what: str) -> DiskFullError:
    """The :class:`DiskFullError` to raise, ``from error``, for a write that found the
    disk full (see :func:`is_disk_full`)."""
    if isinstance(error, DiskFullError):
        return error
    return DiskFullError(
        f"not enough free space in {_existing(Path(path))}: {_mib(free_bytes(path))} MiB "
        f"free, the disk filled up while trying to {what}. Free some space there or put "
        "the index on another disk (--index-dir / RCM_INDEX_DIR). The index is as it was "
        "after its last commit."
    )


def require_run_space(
    index_dir: str | Path, source_bytes: int, dims: int | None, files: int, beside: bool = False
) -> None:
    """Refuse a run whose plan (``files`` files, ``source_bytes`` bytes to read) the disk
    holding ``index_dir`` cannot take; ``dims`` None when no embedded shard is written.
    ``beside``: a forced rebuild, written into a new folder while the live index keeps its
    space until the swap (:mod:`~rcm_dask.stores.swap`), so the whole new index must fit
    in what is free now.

    Raises
    ------
    DiskFullError
        Not enough free space, with both figures.
    """
    shard = Path(index_dir) / "vectors"
    new = dims is not None and not (shard / "edge_config.json").exists()
    needed = estimate_source_bytes(source_bytes, dims, new_shard_bytes(shard) if new else 0)
    what = f"index {files:,} files ({_size(source_bytes)} of source)"
    if beside:
        what += " beside the current index, which keeps its space until the rebuild replaces it"
    require_space(index_dir, needed, what)


@contextmanager
def disk_full_errors(path: str | Path, what: str) -> Iterator[None]:
    """Turn a disk-full error escaping the block into :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if is_disk_full(e) or _failed_on_a_full_disk(path, e):
            raise disk_full_error(path, e, what) from e
        raise


FULL_DISK_BYTES = MIB
"""Free bytes under which a store's failed write is put down to the disk: Tantivy's
writer thread dies of the OS error and reports only "io::Error most likely"."""


def _failed_on_a_full_disk(path: str | Path, error: BaseException) -> bool:
    """Whether a store error that names no cause came with the disk (all but) full."""
    if not isinstance(error, (IndexWriteError, ValueError, RuntimeError, OSError, sqlite3.Error)):
        return False
    current: BaseException | None = error
    for _ in range(16):  # an OS error with its own errno (read-only, no permission) says why
        if current is None:
            break
        if isinstance(current, OSError) and current.errno is not None:
            return False
        current = current.__cause__ or current.__context__
    try:
        return free_bytes(path) < FULL_DISK_BYTES
    except OSError:
        return False


def on_disk_full(what: str) -> Callable[[F], F]:
    """Decorate a method of an object with an ``index_dir``: a disk-full error it raises
    becomes :class:`DiskFullError` ("could not {what}")."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with disk_full_errors(getattr(self, "index_dir", "."), what):
                return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = [
    "MIB",
    "disk_full_error",
    "disk_full_errors",
    "estimate_index_bytes",
    "estimate_source_bytes",
    "fills_on_read",
    "free_bytes",
    "new_shard_bytes",
    "on_disk_full",
    "is_disk_full",
    "require_run_space",
    "require_space",
    "shard_open_bytes",
]
