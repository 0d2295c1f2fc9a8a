"""The manifest: what the index holds, per file, in one SQLite file (``manifest.sqlite``).

It is written last, after both stores have committed the matching changes, in one
transaction: a file listed here is fully present in both stores.

Before the writer touches a file's chunks in either store, it records the path in
the ``pending`` table and commits that (a write-ahead note of intent). The commit
that records the file's new state clears it. So after a crash at any point, every
path whose store content may differ from what ``files`` says is in ``pending``, and
the next run re-indexes or removes exactly those (delete by path, then add): the
index converges to what a clean run would hold, with no duplicates and no orphans.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import IndexDamagedError
from ..records import IndexedFile
from .space import disk_full_error, free_bytes, is_disk_full
from .symbol_tables import SCHEMA as SYMBOL_SCHEMA
from .symbol_tables import FileSymbols, clear_symbol_tables, replace_file_symbols

READ_SPACE = 64 * 1024
"""Bytes a read-only open of the manifest may need (SQLite's shared-memory file); with
less free, a failed open is the full disk, not damage."""

MANIFEST_FILE = "manifest.sqlite"

# One script creates the manifest's own tables and the symbol tables (their schema
# lives with their queries in symbol_tables.py).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL,
    sha256 TEXT NOT NULL,
    chunk_ids TEXT NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (path TEXT PRIMARY KEY, since REAL NOT NULL);
""" + SYMBOL_SCHEMA


class Manifest:
    """Per-file records of an index, in SQLite.

    Parameters
    ----------
    index_dir
        The index folder; the manifest is ``index_dir/manifest.sqlite``.
    readonly
        Open without creating or writing (for search and status).
    """

    def __init__(self, index_dir: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(index_dir) / MANIFEST_FILE
        if readonly:
            # a searcher keeps one open and asks from several threads, one at a time
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        else:
            # the index writer may be built in one thread and called from another (a
            # Dask actor); it is never used by two threads at once
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives any crash or kill of the process (only a power
            # cut can drop the last transactions) and does not fsync each one: the
            # sequential mode marks files pending one transaction per file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def get(self, path: str) -> IndexedFile | None:
        """The record of one file, or None."""
        row = self._db.execute(
            "SELECT path, size, mtime, sha256, chunk_ids, indexed_at FROM files WHERE path = ?",
            (path,),
        ).fetchone()
        return _row(row) if row else None

    def files(self) -> Iterator[IndexedFile]:
        """Every file record, sorted by path."""
        for row in self._db.execute(
            "SELECT path, size, mtime, sha256, chunk_ids, indexed_at FROM files ORDER BY path"
        ):
            yield _row(row)

    def pending(self) -> list[str]:
        """Paths whose chunks a run began to change and no commit has recorded since."""
        if not self._has_pending_table():
            return []
        return [r[0] for r in self._db.execute("SELECT path FROM pending ORDER BY path")]

    def _has_pending_table(self) -> bool:
        """Whether the table exists (a read-only open of an older manifest may lack it)."""
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pending'"
        ).fetchone()
        return row is not None

    def mark_pending(self, paths: Iterable[str]) -> None:
        """Record, durably, that these paths' chunks are about to change in the stores."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO pending VALUES (?, ?)", [(p, now) for p in paths]
            )

    def paths(self) -> list[str]:
        """Every indexed path, sorted."""
        return [r[0] for r in self._db.execute("SELECT path FROM files ORDER BY path")]

    def counts(self) -> tuple[int, int]:
        """(files, chunks) held."""
        files = 0
        chunks = 0
        for (ids,) in self._db.execute("SELECT chunk_ids FROM files"):
            files += 1
            chunks += len(json.loads(ids))
        return files, chunks

    def apply(
        self,
        upserts: Iterable[IndexedFile],
        removals: Sequence[str] = (),
        symbols: Mapping[str, FileSymbols] | None = None,
    ) -> None:
        """Record written files and forget removed ones, in one transaction; both leave
        ``pending``, since the stores now hold exactly what this records.

        ``symbols`` replaces the symbol rows of the files it names (files written by this
        run); removed files lose theirs; upserts without an entry (content unchanged, only
        size or mtime moved) keep theirs.
        """
        now = time.time()
        upserts = list(upserts)
        done = [(p,) for p in removals] + [(f.path,) for f in upserts]
        symbols = symbols or {}
        with self._db:
            self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in removals])
            replace_file_symbols(self._db, [*removals, *symbols], symbols.values())
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (f.path, f.size, f.mtime, f.sha256, json.dumps(list(f.chunk_ids)), now)
                    for f in upserts
                ],
            )
            self._db.executemany("DELETE FROM pending WHERE path = ?", done)

    def set_meta(self, key: str, value: object) -> None:
        """Store one JSON value under ``key``."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: object = None) -> object:
        """The JSON value under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def clear(self) -> None:
        """Forget everything (used by ``--force``)."""
        with self._db:
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM meta")
            self._db.execute("DELETE FROM pending")
            clear_symbol_tables(self._db)


def read_manifest(index_dir: str | Path) -> tuple[dict[str, IndexedFile], list[str]]:
    """Every file record of an index's manifest, by path, and its pending paths.

    Parameters
    ----------
    index_dir
        The index folder; its manifest must exist.

    Returns
    -------
    (files, pending)

    Raises
    ------
    IndexDamagedError
        The manifest is not a readable SQLite database of this layout (truncated,
        overwritten, ...); the message names the SQLite error.
    """
    try:
        manifest = Manifest(index_dir, readonly=True)
        try:
            return {f.path: f for f in manifest.files()}, manifest.pending()
        finally:
            manifest.close()
    except (sqlite3.DatabaseError, ValueError, TypeError) as e:
        # even a read-only open writes SQLite's shared-memory file: on a full disk it
        # fails as a "disk I/O error", which is no damage
        if is_disk_full(e) or free_bytes(index_dir) < READ_SPACE:
            raise disk_full_error(index_dir, e, "read the manifest") from e
        # a corrupt page, a file that is not a database, a table missing, or rows
        # that are not what this version writes (chunk ids that are not JSON)
        raise IndexDamagedError(
            f"{Path(index_dir) / MANIFEST_FILE} cannot be read ({e})"
        ) from e


def _row(row: tuple[str, int, float | None, str, str, float]) -> IndexedFile:
    """A database row as a record."""
    return IndexedFile(
        path=row[0],
        size=row[1],
        mtime=row[2],
        sha256=row[3],
        chunk_ids=tuple(json.loads(row[4])),
        indexed_at=row[5],
    )


IDENTITY_FILE = "identity.json"
INDEX_FORMAT = 3
"""Version of the on-disk layout (folders, schema); part of the identity. 2: the manifest
holds the symbol tables of :mod:`rcm_dask.stores.symbol_tables` (an index of format 1 has
none: a run on it refuses with the identity check's "re-run with --force" message). 3: a
vector point's payload is packed (:func:`~rcm_dask.stores.packed_payload`); an older
rcm_dask would read its hits without names or code, so it refuses the index instead."""

READABLE_FORMATS = (2, 3)
"""Formats this version reads and adds to: a format-2 index is searched as it is, and a
run that adds to it records format 3 (its new points are packed, the old ones stay as
they were: :func:`~rcm_dask.stores.unpack_payload` reads both)."""

def read_identity(index_dir: str | Path) -> dict[str, object] | None:
    """The identity recorded in an index folder, or None when there is none."""
    path = Path(index_dir) / IDENTITY_FILE
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # an unreadable identity is treated as foreign, never silently overwritten
        return {"format": "unreadable"}
    return value if isinstance(value, dict) else {"format": "unreadable"}


def write_identity(index_dir: str | Path, identity: dict[str, object]) -> None:
    """Write ``identity.json`` atomically (write a temp file, then rename)."""
    path = Path(index_dir) / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
