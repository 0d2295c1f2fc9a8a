"""The symbol tables of the manifest: their schema, their rows' writes and named reads.

Four tables in ``manifest.sqlite`` hold what :class:`rcm_dask.symbols.SymbolCollector`
collects: ``symbols`` (the items), ``refs`` (what each item uses), ``imports`` (each
file's ``use`` paths) and ``modules`` (each file's module path and crate).
:class:`~rcm_dask.stores.manifest.Manifest` creates them with its own tables and writes
a file's rows (:func:`replace_file_symbols`) in the transaction that changes the file's
``files`` row. :class:`SymbolTables` holds every query :class:`rcm_dask.intel.CodeIntel`
asks of them, each a method named for what it returns; the reasoning over the rows
(ranking, judging references, resolving calls) stays in :mod:`rcm_dask.intel`.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "FileSymbols",
    "SymbolTables",
    "clear_symbol_tables",
    "replace_file_symbols",
]

SCHEMA = """CREATE TABLE IF NOT EXISTS symbols (
    sid INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    qualname TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL,
    module TEXT NOT NULL,
    signature TEXT NOT NULL,
    visibility TEXT NOT NULL,
    doc TEXT NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    parts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS symbols_name ON symbols (name);
CREATE INDEX IF NOT EXISTS symbols_qualname ON symbols (qualname);
CREATE INDEX IF NOT EXISTS symbols_path ON symbols (path);
CREATE TABLE IF NOT EXISTS refs (
    sid INTEGER NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    via TEXT NOT NULL,
    line INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_target ON refs (target);
CREATE INDEX IF NOT EXISTS refs_sid ON refs (sid);
CREATE TABLE IF NOT EXISTS imports (
    path TEXT NOT NULL,
    use_path TEXT NOT NULL,
    crate TEXT NOT NULL,
    resolved TEXT NOT NULL,
    last TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS imports_path ON imports (path);
CREATE INDEX IF NOT EXISTS imports_resolved ON imports (crate, resolved);
CREATE INDEX IF NOT EXISTS imports_last ON imports (last);
CREATE TABLE IF NOT EXISTS modules (
    path TEXT PRIMARY KEY,
    module TEXT NOT NULL,
    crate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS modules_module ON modules (crate, module);
"""
"""The symbol tables (part of the manifest's schema, created with its own tables)."""
# symbols: one row per item (all parts of a split item together: chunk_id is the id of
# part 1, end_line that of the last part); refs: what an item calls (kind call/macro),
# names as a type (type), implements (impl: self type, trait-impl: trait), with ``via``
# the way it is written (see rcm_dask.symbols) and the line of its first occurrence;
# imports: a file's use paths, expanded and resolved to (crate, crate-relative path);
# modules: each file's module path and crate. Rows of a file change in the transaction
# that changes its ``files`` row (see :meth:`Manifest.apply`).

_TABLES = ("symbols", "refs", "imports", "modules")
_SYMBOL_COLS = (
    "sid, chunk_id, path, name, qualname, kind, parent, module, signature, visibility, doc, "
    "start_line, end_line, parts"
)
_PARAMS = 500
"""Values bound per ``IN (...)`` list (SQLite allows 999 by default on older builds)."""


@dataclass(frozen=True, slots=True)
class FileSymbols:
    """Rows of the symbol tables for one file (built by
    :class:`rcm_dask.symbols.SymbolCollector`)."""

    path: str
    """File path relative to the root."""
    module: str
    """Module path of the file (:func:`rcm_dask.chunking.module_path_for`)."""
    crate: str
    """Crate the file belongs to (:func:`rcm_dask.symbols.crate_of`)."""
    symbols: tuple[tuple[Any, ...], ...]
    """Per item: chunk_id, name, qualname, kind, parent, module, signature, visibility,
    first doc line, start_line, end_line, parts."""
    refs: tuple[tuple[int, str, str, str, int], ...]
    """(index into :attr:`symbols`, target name, kind, via, line)."""
    imports: tuple[tuple[str, str, str, str], ...]
    """(use path, crate, crate-relative resolved path, last segment or ``*``)."""


# --------------------------------------------------------------------------- writes


def replace_file_symbols(
    db: sqlite3.Connection, paths: Sequence[str], files: Iterable[FileSymbols]
) -> None:
    """Delete the symbol rows of ``paths``, insert ``files``' (inside the caller's
    transaction)."""
    gone = [(p,) for p in paths]
    db.executemany(
        "DELETE FROM refs WHERE sid IN (SELECT sid FROM symbols WHERE path = ?)", gone
    )
    for table in ("symbols", "imports", "modules"):
        db.executemany(f"DELETE FROM {table} WHERE path = ?", gone)
    # sids are assigned here rather than by SQLite so that refs can be inserted with
    # executemany: only one writer ever holds the manifest
    sid = int(db.execute("SELECT coalesce(max(sid), 0) FROM symbols").fetchone()[0])
    # every file's rows gathered first: one executemany per table for the whole commit
    symbols: list[tuple[Any, ...]] = []
    refs: list[tuple[int, str, str, str, int]] = []
    imports: list[tuple[str, ...]] = []
    modules: list[tuple[str, str, str]] = []
    for f in files:
        first = sid + 1
        symbols.extend((first + i, row[0], f.path, *row[1:]) for i, row in enumerate(f.symbols))
        refs.extend((first + i, target, kind, via, line) for i, target, kind, via, line in f.refs)
        imports.extend((f.path, *row) for row in f.imports)
        modules.append((f.path, f.module, f.crate))
        sid += len(f.symbols)
    db.executemany("INSERT INTO symbols VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", symbols)
    db.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?)", refs)
    db.executemany("INSERT INTO imports VALUES (?, ?, ?, ?, ?)", imports)
    db.executemany("INSERT INTO modules VALUES (?, ?, ?)", modules)


def clear_symbol_tables(db: sqlite3.Connection) -> None:
    """Delete every row of the symbol tables (inside the caller's transaction)."""
    for table in _TABLES:
        db.execute(f"DELETE FROM {table}")


# --------------------------------------------------------------------------- reads


class SymbolTables:
    """Named reads of the symbol tables of one manifest, opened read-only.

    An index run may be writing the manifest: reads see its last commit. One connection
    serves every thread (an MCP server's), one query at a time. Rows are
    :class:`sqlite3.Row`: read by column name. Symbol rows carry every column of
    ``symbols``; other rows the columns each method names.

    Parameters
    ----------
    db_path
        The manifest file (``manifest.sqlite``); it must exist.
    """

    def __init__(self, db_path: Path) -> None:
        uri = db_path.resolve().as_uri() + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one query."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ----------------------------------------------------------------- symbols

    def symbols_named(self, name: str, kind: str | None = None) -> list[sqlite3.Row]:
        """Symbol rows of every item called ``name`` (of ``kind`` only, when given)."""
        sql = f"SELECT {_SYMBOL_COLS} FROM symbols WHERE name = ?"
        params: list[Any] = [name]
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        return self._rows(sql, params)

    def symbols_by_qualname(self, qualname: str) -> list[sqlite3.Row]:
        """Symbol rows of every item with this qualified name (one per crate defining it)."""
        return self._rows(f"SELECT {_SYMBOL_COLS} FROM symbols WHERE qualname = ?", (qualname,))

    def symbol_of_chunk(self, chunk_id: str) -> sqlite3.Row | None:
        """The symbol row of the item a chunk id belongs to (any part), or None."""
        rows = self._rows(
            f"SELECT {_SYMBOL_COLS} FROM symbols WHERE sid = "
            "(SELECT sid FROM symbols WHERE chunk_id = ? LIMIT 1)",
            (chunk_id,),
        )
        return rows[0] if rows else None

    def parents_of_name(self, name: str) -> list[str]:
        """The distinct ``parent`` of the items called ``name`` (``""`` for free items)."""
        rows = self._rows("SELECT DISTINCT parent FROM symbols WHERE name = ?", (name,))
        return [r[0] for r in rows]

    def members_named(self, name: str, parent: str, path_first: str) -> list[sqlite3.Row]:
        """Symbol rows of the items ``name`` of ``parent`` (an impl's self type), those in
        the file ``path_first`` first."""
        return self._rows(
            f"SELECT {_SYMBOL_COLS} FROM symbols WHERE name = ? AND parent = ? "
            "ORDER BY path = ? DESC",
            (name, parent, path_first),
        )

    def free_items_named(self, name: str) -> list[sqlite3.Row]:
        """Symbol rows of the functions, consts and statics ``name`` outside any impl."""
        return self._rows(
            f"SELECT {_SYMBOL_COLS} FROM symbols WHERE name = ? AND "
            "parent = '' AND kind IN ('function', 'const', 'static')",
            (name,),
        )

    def module_functions_named(self, name: str, module: str) -> list[sqlite3.Row]:
        """Symbol rows of the free functions ``name`` of ``module`` (outside any impl)."""
        return self._rows(
            f"SELECT {_SYMBOL_COLS} FROM symbols WHERE name = ? AND "
            "parent = '' AND module = ? AND kind = 'function'",
            (name, module),
        )

    def top_level_item_names(self, path: str, module: str) -> list[str]:
        """Names of the items defined at the top of a file whose module is ``module``
        (impls and inline modules left out)."""
        return [
            r[0]
            for r in self._rows(
                "SELECT DISTINCT name FROM symbols WHERE path = ? AND parent = '' "
                "AND kind NOT IN ('impl', 'mod') AND qualname = ? || name",
                (path, module + "::" if module else ""),
            )
        ]

    def functions_in_file(self, path: str) -> list[sqlite3.Row]:
        """(name, qualname, kind, start_line, end_line) of a file's functions and methods."""
        return self._rows(
            "SELECT name, qualname, kind, start_line, end_line FROM symbols "
            "WHERE path = ? AND kind IN ('function', 'method')",
            (path,),
        )

    def item_counts(self, path: str) -> list[tuple[str, int]]:
        """(kind, items of that kind) of a file, by kind."""
        rows = self._rows(
            "SELECT kind, count(*) FROM symbols WHERE path = ? GROUP BY kind ORDER BY kind",
            (path,),
        )
        return [(r[0], int(r[1])) for r in rows]

    def file_defining(self, qualname: str, crate: str) -> str | None:
        """The file of ``crate`` defining an item (impls aside) called ``qualname``, or None."""
        rows = self._rows(
            "SELECT s.path FROM symbols s JOIN modules m ON m.path = s.path "
            "WHERE s.qualname = ? AND m.crate = ? AND s.kind != 'impl' LIMIT 1",
            (qualname, crate),
        )
        return rows[0][0] if rows else None

    # ----------------------------------------------------------------- refs

    def refs_to(self, name: str, kinds: Sequence[str] | None = None) -> list[sqlite3.Row]:
        """Every use of ``name`` (of ``kinds`` only, when given): the ref's ``rkind``,
        ``via`` and ``line``, with the ``sid``, ``chunk_id``, ``path``, ``qualname``,
        ``kind``, ``parent`` and ``module`` of the item it is in."""
        sql = (
            "SELECT r.kind AS rkind, r.via, r.line, s.sid, s.chunk_id, s.path, s.qualname, "
            "s.kind, s.parent, s.module FROM refs r JOIN symbols s ON s.sid = r.sid "
            "WHERE r.target = ?"
        )
        params: list[Any] = [name]
        if kinds is not None:
            sql += f" AND r.kind IN ({','.join('?' * len(kinds))})"
            params += kinds
        return self._rows(sql, params)

    def calls_from(self, sid: int) -> list[sqlite3.Row]:
        """(target, kind, via, line) of the calls and macro uses of one item, by line."""
        return self._rows(
            "SELECT target, kind, via, line FROM refs WHERE sid = ? "
            "AND kind IN ('call', 'macro') ORDER BY line",
            (sid,),
        )

    # ----------------------------------------------------------------- imports

    def imports_named(self, last: str) -> list[sqlite3.Row]:
        """(path, crate, resolved) of every import whose last segment is ``last``."""
        return self._rows("SELECT path, crate, resolved FROM imports WHERE last = ?", (last,))

    def file_imports_named(self, path: str, last: str) -> list[sqlite3.Row]:
        """(crate, resolved) of a file's imports whose last segment is ``last``."""
        return self._rows(
            "SELECT crate, resolved FROM imports WHERE path = ? AND last = ?", (path, last)
        )

    def imports_of_file(self, path: str) -> list[sqlite3.Row]:
        """(use_path, crate, resolved, last) of a file's imports, in the order written."""
        return self._rows(
            "SELECT use_path, crate, resolved, last FROM imports WHERE path = ? ORDER BY rowid",
            (path,),
        )

    def module_root_chunks_importing(
        self, last: str, glob_modules: Sequence[str], limit: int
    ) -> list[str]:
        """Chunk ids of the ``mod`` items of module roots (``lib.rs``, ``mod.rs``) that
        import a name ``last``, or glob-import one of ``glob_modules``; shortest path
        first."""
        where = "i.last = ?"
        params: list[Any] = [last]
        if glob_modules:
            marks = ",".join("?" * len(glob_modules))
            where = f"({where} OR (i.last = '*' AND i.resolved IN ({marks})))"
            params += glob_modules
        rows = self._rows(
            "SELECT DISTINCT s.chunk_id, s.path FROM imports i "
            "JOIN modules m ON m.path = i.path "
            "JOIN symbols s ON s.path = i.path AND s.kind = 'mod' "
            "AND s.qualname = (CASE WHEN m.module = '' THEN 'crate' ELSE m.module END) "
            f"WHERE {where} AND (i.path LIKE '%/lib.rs' OR i.path = 'lib.rs' "
            "OR i.path LIKE '%/mod.rs') ORDER BY length(i.path), i.path LIMIT ?",
            (*params, limit),
        )
        return [str(r["chunk_id"]) for r in rows]

    def importers_of_module(self, crate: str, module: str, but: str) -> list[sqlite3.Row]:
        """(path, use_path, resolved) of the imports, in files other than ``but``, of
        ``crate``'s ``module`` or anything under it."""
        return self._rows(
            "SELECT path, use_path, resolved FROM imports WHERE crate = ? AND "
            "(resolved = ? OR (resolved >= ? AND resolved < ?)) AND path != ?",
            (crate, module, *_under(module), but),
        )

    def importers_through(
        self, head: str, crate: str, but: str, under: str, in_module: str | None
    ) -> list[sqlite3.Row]:
        """(path, use_path, resolved) of the imports, in files of ``crate`` other than
        ``but``, written through a first segment ``head`` (stored as if it were a crate);
        only those of ``under`` or below when it is not empty, only in files of module
        ``in_module`` when it is not None."""
        sql = (
            "SELECT i.path, i.use_path, i.resolved FROM imports i "
            "JOIN modules m ON m.path = i.path WHERE i.crate = ? AND m.crate = ? "
            "AND i.path != ?"
        )
        params: list[Any] = [head, crate, but]
        if under:
            sql += " AND (i.resolved = ? OR (i.resolved >= ? AND i.resolved < ?))"
            params += [under, *_under(under)]
        if in_module is not None:
            sql += " AND m.module = ?"
            params.append(in_module)
        return self._rows(sql, params)

    def importers_of_names(
        self, crate: str, but: str, names: Sequence[str]
    ) -> list[sqlite3.Row]:
        """(path, use_path, resolved) of the imports, in files other than ``but``, of
        ``crate`` paths whose last segment is one of ``names``."""
        out: list[sqlite3.Row] = []
        for i in range(0, len(names), _PARAMS):
            chunk = names[i : i + _PARAMS]
            out += self._rows(
                "SELECT path, use_path, resolved FROM imports WHERE crate = ? AND path != ? "
                f"AND last IN ({','.join('?' * len(chunk))})",
                (crate, but, *chunk),
            )
        return out

    # ----------------------------------------------------------------- modules and files

    def module_of_file(self, path: str) -> sqlite3.Row | None:
        """(path, module, crate) of an indexed file, or None."""
        rows = self._rows("SELECT path, module, crate FROM modules WHERE path = ?", (path,))
        return rows[0] if rows else None

    def paths_named(self, base: str, limit: int = 3) -> list[str]:
        """Indexed files whose name is ``base`` (at the root or in any folder), shortest
        path first."""
        return [
            r[0]
            for r in self._rows(
                "SELECT path FROM modules WHERE path = ? OR path LIKE ? ESCAPE '\\' "
                "ORDER BY length(path) LIMIT ?",
                (base, "%/" + re.sub(r"([%_\\])", r"\\\1", base), limit),
            )
        ]

    def file_of_module(self, crate: str, module: str) -> str | None:
        """The first file (by path) of ``crate``'s ``module``, or None."""
        rows = self._rows(
            "SELECT path FROM modules WHERE crate = ? AND module = ? ORDER BY path LIMIT 1",
            (crate, module),
        )
        return rows[0][0] if rows else None

    def crates(self) -> set[str]:
        """Every crate of the indexed files."""
        return {r[0] for r in self._rows("SELECT DISTINCT crate FROM modules")}

    def first_path_per_crate(self) -> list[tuple[str, str]]:
        """(crate, its first file by path) of every crate."""
        rows = self._rows("SELECT crate, min(path) FROM modules GROUP BY crate")
        return [(r[0], r[1]) for r in rows]

    def indexed_sha256(self, path: str) -> str | None:
        """The SHA-256 a file had when indexed (the manifest's ``files`` table), or None."""
        rows = self._rows("SELECT sha256 FROM files WHERE path = ?", (path,))
        return str(rows[0][0]) if rows else None


def _under(prefix: str) -> tuple[str, str]:
    """Bounds of the paths strictly under a path (``a::b::...``) for a range scan."""
    # ':' + 1 is ';': every string that starts with ``prefix::`` sorts in between
    return prefix + "::", prefix + ":;"
