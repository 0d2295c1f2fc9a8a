"""Code intelligence over an index: definitions, references, call graphs, imports, complexity.

:class:`CodeIntel` answers questions from the manifest's symbol tables (rows written by
:class:`rcm_dask.symbols.SymbolCollector`, which says where a reference is and how names
used as values are found), through the named, indexed SQL lookups of
:class:`rcm_dask.stores.symbol_tables.SymbolTables`; this module holds the reasoning over
their rows (ranking definitions, judging references, resolving calls), plus one
tree-sitter parse of the source for :meth:`CodeIntel.complexity`.

Crate names
-----------
A path may start with a crate's own name (``mini_crate::parse_toml_config(`` in
``tests/smoke.rs``, ``alloc::vec::Vec`` in another crate of a workspace). The name is read
once per :class:`CodeIntel` from the ``Cargo.toml`` of each indexed crate's folder
(``[lib] name``, else ``[package] name``), else the folder's name (the indexed root's for
files outside any ``src`` folder). A use through it resolves to the item at that crate's
root module.

How a reference is resolved
---------------------------
Without type inference a call ``x.push(..)`` cannot be tied to one ``push``. A reference
is *resolved* (``confidence="exact"``) when the way it is written names the definition's
owner: ``BinaryHeap::push(``, ``<T as Trait>::m(``, ``Self::push(`` or ``self.push(``
inside an item of ``BinaryHeap``, ``ptr::read(`` for a function of a module ``ptr``. It is
resolved by scope (``confidence="scope"``) when the name is used bare in the definition's
own module, or for types in the definition's own file, or when the referring file
imports the name (``use ...::BinaryHeap``). Anything else matches by name only
(``confidence="name"``, ``resolved=False``): listed, but after the resolved ones.

Limits: a ``use`` inside an inline ``mod`` is resolved as if it were at the top of its
file (chunks keep a file's imports without their position); macro inputs are token soup
to tree-sitter, so calls the chunker finds in them are kept but types and branches inside
them are not seen.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .closing import Closing
from .complexity import measure_source
from .dependencies import file_importers, file_imports
from .errors import IndexIdentityError, IndexNotFoundError, RcmError, SourceError
from .records import (
    CallEdge,
    CallGraph,
    Definition,
    FileComplexity,
    FileDependencies,
    FunctionComplexity,
    Reference,
)
from .sources import read_bytes
from .stores.manifest import MANIFEST_FILE, READABLE_FORMATS, read_identity
from .stores.symbol_tables import SymbolTables
from .symbols import crate_dir, crate_of

if TYPE_CHECKING:
    from .sources import SourceRoot

__all__ = ["CodeIntel", "cargo_crate_name"]

_TOML_SECTION = re.compile(r"^\s*\[\s*([\w.-]+)\s*\]")
_TOML_NAME = re.compile(r"""^\s*name\s*=\s*["']([^"']+)["']""")


def cargo_crate_name(manifest: str) -> str:
    """The name a crate's own code is reached by, from its ``Cargo.toml`` text:
    ``[lib] name``, else ``[package] name`` with ``-`` as ``_``; ``""`` when neither.

    Examples
    --------
    >>> cargo_crate_name('[package]\\nname = "mini-crate"\\nversion = "0.1.0"\\n')
    'mini_crate'
    """
    section = ""
    found: dict[str, str] = {}
    for line in manifest.splitlines():
        m = _TOML_SECTION.match(line)
        if m:
            section = m.group(1)
            continue
        m = _TOML_NAME.match(line)
        if m and section in ("lib", "package"):
            found.setdefault(section, m.group(1))
    return (found.get("lib") or found.get("package") or "").replace("-", "_")


_CONFIDENCE_RANK = {"exact": 0, "scope": 1, "name": 2}
_RULE_RANK = {"exact": 0, "suffix": 1, "name": 2}
# A bare or path call, whose ``via`` names an owner; the rest say nothing about the owner.
_OPAQUE_VIA = frozenset({"", ".", "?"})
_MAX_ROOTS = 10

def _parse_symbol(symbol: str) -> tuple[str, str, bool]:
    """(normalised query, last name, is a macro) of a symbol query."""
    text = symbol.strip()
    macro = text.endswith("!")
    text = re.sub(r"\s*::\s*", "::", text.rstrip("!").strip()).removeprefix("::")
    impl = re.search(r"(?:^|::)(impl\b.*)$", text)
    if impl:
        return text, impl.group(1), macro
    return text, text.rsplit("::", 1)[-1], macro


def _visibility_rank(visibility: str) -> int:
    """``pub`` before ``pub(...)`` before private."""
    if visibility == "pub":
        return 0
    return 1 if visibility.startswith("pub") else 2


def _written(name: str, kind: str, via: str) -> str:
    """How a reference reads in the code, from its stored parts."""
    if kind == "macro":
        return f"{name}!"
    if kind == "impl":
        return f"impl {name}"
    if kind == "trait-impl":
        return f"impl {name} for"
    if kind == "type" or via == "?":
        return name
    if kind == "value":
        return f"{via}::{name}" if via else name
    if via == "":
        return f"{name}("
    if via == ".":
        return f".{name}("
    if via == ".self":
        return f"self.{name}("
    return f"{via}::{name}("


def _definition(row: sqlite3.Row, rule: str = "exact") -> Definition:
    """A symbols row as a record."""
    return Definition(
        name=row["name"],
        qualname=row["qualname"],
        kind=row["kind"],
        path=row["path"],
        start_line=row["start_line"],
        end_line=row["end_line"],
        signature=row["signature"],
        visibility=row["visibility"],
        parent=row["parent"],
        module=row["module"],
        doc=row["doc"],
        id=row["chunk_id"],
        parts=row["parts"],
        match=rule,
    )


@dataclass
class _Targets:
    """The definitions a reference query is about, indexed by what can resolve to them."""

    defs: list[sqlite3.Row]
    strict: bool
    """Drop uses written through another owner (``Vec::push(`` for ``BinaryHeap::push``)."""
    owner: str = ""
    """The query's own owner (``BinaryHeap`` of ``BinaryHeap::push``), even when undefined."""
    other_parents: frozenset[str] = frozenset()
    by_owner: dict[str, sqlite3.Row] = field(default_factory=dict)
    by_parent: dict[str, sqlite3.Row] = field(default_factory=dict)
    by_module: dict[str, sqlite3.Row] = field(default_factory=dict)
    by_path: dict[str, sqlite3.Row] = field(default_factory=dict)
    by_qualname: dict[str, sqlite3.Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in self.defs:
            self.by_qualname.setdefault(d["qualname"], d)
            self.by_path.setdefault(d["path"], d)
            if d["parent"]:
                self.by_parent.setdefault(d["parent"], d)
                self.by_owner.setdefault(d["parent"], d)
            else:
                self.by_module.setdefault(d["module"], d)
                self.by_owner.setdefault(d["module"].rsplit("::", 1)[-1], d)


class CodeIntel(Closing):
    """Definitions, references, call graphs, imports and complexity of an indexed codebase.

    Opens the index read-only (an index run may be writing it: queries see its last
    commit). Every query is a handful of indexed SQLite lookups; only :meth:`complexity`
    reads the source file.

    Parameters
    ----------
    index_dir
        The index folder (see :func:`rcm_dask.planning.resolve_index_dir` to find one).

    Raises
    ------
    IndexNotFoundError
        The folder holds no index.
    IndexIdentityError
        The index was built by a version of rcm_dask without symbol tables.

    Examples
    --------
    >>> with CodeIntel("/path/to/index") as intel:                 # doctest: +SKIP
    ...     for d in intel.find_definition("BinaryHeap::push"):
    ...         print(d)
    alloc/src/collections/binary_heap.rs:452  method collections::binary_heap::BinaryHeap::push  [suffix]
    """

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir).expanduser()
        identity = read_identity(self.index_dir)
        db_path = self.index_dir / MANIFEST_FILE
        if identity is None or not db_path.exists():
            raise IndexNotFoundError(
                f"no index at {self.index_dir}: run `rcm-dask index PATH` first "
                "(or pass the --index-dir an index run wrote)"
            )
        self.identity: dict[str, Any] = dict(identity)
        self.root = str(identity.get("root", ""))
        if identity.get("format") not in READABLE_FORMATS:
            raise IndexIdentityError(
                f"the index at {self.index_dir} was built by an older rcm_dask (format "
                f"{identity.get('format')!r}, this one reads "
                f"{' and '.join(map(str, READABLE_FORMATS))}) and has no symbol "
                f"tables: re-run `rcm-dask index {self.root or 'PATH'} --index-dir "
                f"{self.index_dir} --force` to rebuild it"
            )
        self._tables = SymbolTables(db_path)
        self._crate_names: dict[str, frozenset[str]] | None = None

    def close(self) -> None:
        """Close the database."""
        self._tables.close()


    # ----------------------------------------------------------------- definitions

    def find_definition(
        self, symbol: str, *, kind: str | None = None, limit: int = 20
    ) -> list[Definition]:
        """Where a symbol is defined, best match first.

        Parameters
        ----------
        symbol
            A qualified name (``collections::binary_heap::BinaryHeap::push``, optionally
            with its crate or ``crate::`` in front), a suffix of one
            (``BinaryHeap::push``) or a bare name (``push``); case-sensitive. A trailing
            ``!`` looks for a macro.
        kind
            Only items of this kind (``method``, ``function``, ``struct``...).
        limit
            At most this many definitions.

        Returns
        -------
        list of Definition
            Exact matches, then suffix matches, then bare-name matches (a bare name
            matches every item of that name: several candidates are ambiguous); within
            each, ``pub`` before ``pub(...)`` before private, then shallower names first.
            ``match`` says which rule applied. Empty when nothing matches.
        """
        return [_definition(row, rule) for row, rule in self._definitions(symbol, kind)[:limit]]

    def _definitions(self, symbol: str, kind: str | None) -> list[tuple[sqlite3.Row, str]]:
        """Ranked (row, rule) of every definition a symbol query matches."""
        text, name, macro = _parse_symbol(symbol)
        if not name:
            return []
        if macro and kind is None:
            kind = "macro"
        found: list[tuple[sqlite3.Row, str]] = []
        for row in self._tables.symbols_named(name, kind):
            qual = row["qualname"]
            if qual == text or text in (f"crate::{qual}", f"{crate_of(row['path'])}::{qual}"):
                rule = "exact"
            elif text != name and qual.endswith("::" + text):
                rule = "suffix"
            elif text == name:
                rule = "name"
            else:
                continue
            found.append((row, rule))
        found.sort(
            key=lambda rr: (
                _RULE_RANK[rr[1]],
                _visibility_rank(rr[0]["visibility"]),
                rr[0]["qualname"].count("::"),
                rr[0]["path"],
                rr[0]["start_line"],
            )
        )
        return found

    def module_roots_importing(
        self, name: str, modules: Sequence[str] = (), limit: int = 5
    ) -> list[str]:
        """Chunk ids of the file records of module roots (``lib.rs``, ``mod.rs``) that
        ``use`` a name, or glob-import (``use self::m::*``) one of ``modules`` (where the
        name is defined): where a crate re-exports what it defines elsewhere (or what
        another crate defines). Whether the ``use`` is ``pub`` is not recorded here: the
        caller checks the file record's outline."""
        last = name.rsplit("::", 1)[-1].rstrip("!")
        if not last:
            return []
        globs = [m for m in modules if m]
        return self._tables.module_root_chunks_importing(last, globs, limit)

    # ----------------------------------------------------------------- references

    def find_references(self, symbol: str, *, limit: int = 100) -> list[Reference]:
        """Where a symbol is used: calls, macro invocations, type mentions, impls, and
        names used as values (consts, statics, unit structs and variants: ``value``).

        Parameters
        ----------
        symbol
            As for :meth:`find_definition`. A qualified query (``BinaryHeap::push``)
            leaves out uses written through another owner (``Vec::push(``).
        limit
            At most this many references.

        Returns
        -------
        list of Reference
            Resolved uses first (``exact``, then ``scope``), then uses that match by name
            only (``resolved=False``: ``heap.push(x)`` cannot be told apart from a
            ``Vec::push`` without type inference); each group by path and line. Empty
            for an unknown symbol.
        """
        text, name, macro = _parse_symbol(symbol)
        if not name:
            return []
        defs = [row for row, _ in self._definitions(symbol, "macro" if macro else None)]
        owner = text.rsplit("::", 2)[-2] if "::" in text and not text.startswith("impl") else ""
        if "::" in text and not defs and not owner:
            return []
        targets = self._targets(name, defs, strict="::" in text, owner=owner)
        # with nothing of that path defined here, only uses written through it count
        return self._references(
            name, targets, limit=limit, macro=macro, resolved_only="::" in text and not defs
        )

    def _targets(self, name: str, defs: list[sqlite3.Row], *, strict: bool, owner: str) -> _Targets:
        """Index the definitions a reference query is about."""
        others: frozenset[str] = frozenset()
        if strict:
            mine = {d["parent"] for d in defs}
            parents = self._tables.parents_of_name(name)
            others = frozenset(p for p in parents if p and p not in mine)
        targets = _Targets(defs, strict, owner, others)
        # ``mini_crate::parse_toml_config(``: an item at a crate's root, reached through
        # the crate's name (from its tests/, examples/, benches/ or another crate)
        roots = [d for d in defs if not d["parent"] and not d["module"]]
        if roots:
            for alias, crates in self._crate_name_map().items():
                for d in roots:
                    if crate_of(d["path"]) in crates:
                        targets.by_owner.setdefault(alias, d)
        return targets

    def _crate_name_map(self) -> dict[str, frozenset[str]]:
        """Per name a path can start with, the crates (``modules.crate``) it names; read
        once per instance from each crate's ``Cargo.toml`` under the indexed root."""
        if self._crate_names is not None:
            return self._crate_names
        from .sources import open_root

        root: SourceRoot | None = None
        try:
            root = open_root(self.root)
        except RcmError:
            pass  # the root is gone: folder names are the best guess
        out: dict[str, set[str]] = {}
        for crate, path in self._tables.first_path_per_crate():
            name = self._crate_name(root, crate, crate_dir(path))
            if name:
                out.setdefault(name, set()).add(crate)
        self._crate_names = {k: frozenset(v) for k, v in out.items()}
        return self._crate_names

    def _crate_name(self, root: SourceRoot | None, crate: str, folder: str) -> str:
        """A crate's name: its Cargo.toml's, else its folder's (the root's for ``""``)."""
        name = ""
        if root is not None:
            full = "/".join(p for p in (root.path.rstrip("/"), folder, "Cargo.toml") if p)
            try:
                data = read_bytes(root.fs, full, 1 << 20)
                name = cargo_crate_name(data.decode("utf-8", "replace"))
            except (OSError, ValueError):
                pass  # no manifest: the folder's name
        if name:
            return name
        if crate:
            return crate
        base = self.root.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return re.sub(r"\W", "_", base)

    def _references(
        self,
        name: str,
        targets: _Targets,
        *,
        limit: int,
        macro: bool = False,
        kinds: Iterable[str] | None = None,
        resolved_only: bool = False,
        cache: dict[Any, Any] | None = None,
    ) -> list[Reference]:
        """The ``limit`` best uses of ``name``: resolved first, then by path and line
        (``cache`` keeps fetched rows across calls of one query)."""
        if macro:
            kinds = ("macro",)
        wanted = tuple(kinds) if kinds is not None else None
        key = (name, wanted)
        if cache is not None and key in cache:
            rows, imported = cache[key]
        else:
            rows = self._tables.refs_to(name, wanted)
            imported = self._imports_of_name(name) if rows else {}
            if cache is not None:
                cache[key] = rows, imported
        judged: list[tuple[int, str, int, int, str, str]] = []
        for i, row in enumerate(rows):
            verdict = self._judge(row, name, targets, imported.get(row["path"], ()))
            if verdict is None or (resolved_only and verdict[0] == "name"):
                continue
            rank = _CONFIDENCE_RANK[verdict[0]]
            judged.append((rank, row["path"], row["line"], i, verdict[0], verdict[1]))
        # Records are built for the page only: a common name (``new``) has thousands of uses.
        judged.sort()
        out: list[Reference] = []
        for _, _, _, i, confidence, target in judged[: max(0, limit)]:
            row = rows[i]
            out.append(
                Reference(
                    path=row["path"],
                    line=row["line"],
                    name=name,
                    kind=row["rkind"],
                    written=_written(name, row["rkind"], row["via"]),
                    in_qualname=row["qualname"],
                    in_kind=row["kind"],
                    in_id=row["chunk_id"],
                    target=target,
                    resolved=confidence != "name",
                    confidence=confidence,
                )
            )
        return out

    def _imports_of_name(self, name: str) -> dict[str, list[tuple[str, str]]]:
        """Per file, the (crate, resolved path) of its imports whose last segment is ``name``."""
        out: dict[str, list[tuple[str, str]]] = {}
        for r in self._tables.imports_named(name):
            out.setdefault(r[0], []).append((r[1], r[2]))
        return out

    @staticmethod
    def _judge(
        row: sqlite3.Row, name: str, t: _Targets, imports: Sequence[tuple[str, str]]
    ) -> tuple[str, str] | None:
        """(confidence, target qualname) of one use, or None when it is about another owner."""
        via = row["via"]
        kind = row["rkind"]
        if kind in ("call", "macro", "value"):
            if via in ("Self", ".self"):
                d = t.by_parent.get(row["parent"])
                if d is not None:
                    return "exact", d["qualname"]
                if t.strict and row["parent"] in t.other_parents:
                    return None
            elif via not in _OPAQUE_VIA:
                d = t.by_owner.get(via)
                if d is not None:
                    return "exact", d["qualname"]
                if not t.defs and via == t.owner:
                    return "exact", f"{via}::{name}"
                if t.strict:
                    return None
            elif via == "" or kind == "macro":
                d = t.by_module.get(row["module"])
                if d is None and kind == "value":
                    # a bare const-shaped name in the file that defines it (an inline
                    # ``mod tests`` under it included)
                    d = t.by_path.get(row["path"])
                    d = d if d is not None and not d["parent"] else None
                if d is not None:
                    return "scope", d["qualname"]
        else:
            d = t.by_path.get(row["path"])
            if d is not None:
                return "scope", d["qualname"]
        for crate, resolved in imports:
            d = t.by_qualname.get(resolved)
            if d is not None:
                return "scope", d["qualname"]
            if len(t.defs) == 1 and resolved.endswith(name):
                return "scope", t.defs[0]["qualname"]  # a re-export of the one definition
        return "name", ""

    # ----------------------------------------------------------------- call graph

    def call_graph(self, symbol: str, *, depth: int = 1, limit: int = 50) -> CallGraph:
        """Callers and callees of a symbol, breadth first, to ``depth`` levels.

        Parameters
        ----------
        symbol
            As for :meth:`find_definition`; the graph starts from every definition of
            the best matching rule (at most 10).
        depth
            Levels to follow out from the symbol (1: direct callers and callees).
        limit
            At most this many edges in each direction.

        Returns
        -------
        CallGraph
            ``callers``: calls into the roots, then into those callers...;
            ``callees``: calls out of the roots, then out of the callees they resolve
            to. Only resolved edges are followed further; a call that cannot be tied
            to one definition (``x.len()``) is listed with its bare name and
            ``resolved=False``. Each item is visited once (cycles and recursion end
            there). Empty lists for an unknown symbol.
        """
        ranked = self._definitions(symbol, "macro" if symbol.strip().endswith("!") else None)
        if ranked:
            best = ranked[0][1]
            ranked = [rr for rr in ranked if rr[1] == best][:_MAX_ROOTS]
        roots = [row for row, _ in ranked]
        depth = max(1, depth)
        callers, cut_in = self._callers(roots, depth, limit)
        callees, cut_out = self._callees(roots, depth, limit)
        return CallGraph(
            symbol=symbol,
            roots=tuple(_definition(row, rule) for row, rule in ranked),
            callers=tuple(callers),
            callees=tuple(callees),
            depth=depth,
            truncated=cut_in or cut_out,
        )

    def _callers(
        self, roots: list[sqlite3.Row], depth: int, limit: int
    ) -> tuple[list[CallEdge], bool]:
        """Edges into ``roots``, level by level."""
        edges: list[CallEdge] = []
        seen = {r["sid"] for r in roots}
        frontier = roots
        cache: dict[Any, Any] = {}  # roots of a bare name share their uses
        for level in range(1, depth + 1):
            nxt: list[sqlite3.Row] = []
            for node in frontier:
                targets = self._targets(node["name"], [node], strict=True, owner=node["parent"])
                refs = self._references(
                    node["name"],
                    targets,
                    limit=limit - len(edges) + 1,
                    kinds=("call", "macro"),
                    cache=cache,
                )
                for ref in refs:
                    if len(edges) >= limit:
                        return edges, True
                    edges.append(
                        CallEdge(
                            caller=ref.in_qualname,
                            callee=node["qualname"],
                            path=ref.path,
                            line=ref.line,
                            depth=level,
                            resolved=ref.resolved,
                            confidence=ref.confidence,
                            callee_path=node["path"],
                            callee_line=node["start_line"],
                        )
                    )
                    if ref.resolved and ref.in_id:
                        caller = self._tables.symbol_of_chunk(ref.in_id)
                        if caller is not None and caller["sid"] not in seen:
                            seen.add(caller["sid"])
                            nxt.append(caller)
            frontier = nxt
        return edges, False

    def _callees(
        self, roots: list[sqlite3.Row], depth: int, limit: int
    ) -> tuple[list[CallEdge], bool]:
        """Edges out of ``roots``, level by level."""
        edges: list[CallEdge] = []
        seen = {r["sid"] for r in roots}
        frontier = roots
        for level in range(1, depth + 1):
            nxt: list[sqlite3.Row] = []
            for node in frontier:
                for call in self._tables.calls_from(node["sid"]):
                    if len(edges) >= limit:
                        return edges, True
                    confidence, callee = self._resolve_call(node, call)
                    name = call["target"] + ("!" if call["kind"] == "macro" else "")
                    edges.append(
                        CallEdge(
                            caller=node["qualname"],
                            callee=callee["qualname"] if callee is not None else name,
                            path=node["path"],
                            line=call["line"],
                            depth=level,
                            resolved=callee is not None,
                            confidence=confidence,
                            callee_path=callee["path"] if callee is not None else "",
                            callee_line=callee["start_line"] if callee is not None else 0,
                        )
                    )
                    if callee is not None and callee["sid"] not in seen:
                        seen.add(callee["sid"])
                        nxt.append(callee)
            frontier = nxt
        return edges, False

    def _resolve_call(
        self, caller: sqlite3.Row, call: sqlite3.Row
    ) -> tuple[str, sqlite3.Row | None]:
        """The definition one call of ``caller`` resolves to (see the module notes)."""
        name, via = call["target"], call["via"]
        tables = self._tables
        if call["kind"] == "macro":
            rows = tables.symbols_named(name, "macro")
            mine = [r for r in rows if crate_of(r["path"]) == crate_of(caller["path"])]
            return ("scope", mine[0]) if len(mine) == 1 else ("name", None)
        if via in ("Self", ".self"):
            if caller["parent"]:
                rows = tables.members_named(name, caller["parent"], caller["path"])
                if rows:
                    return "exact", rows[0]
            return "name", None
        if via not in _OPAQUE_VIA:
            rows = tables.members_named(name, via, caller["path"])
            if rows:
                return "exact", rows[0]
            rows = tables.free_items_named(name)
            crates = self._crate_name_map().get(via, frozenset())
            rows = [
                r
                for r in rows
                if r["module"].rsplit("::", 1)[-1] == via
                or (not r["module"] and crate_of(r["path"]) in crates)
            ]
            return ("exact", rows[0]) if rows else ("name", None)
        if via == "":
            rows = tables.module_functions_named(name, caller["module"])
            if rows:
                return "scope", rows[0]
            for crate, resolved in tables.file_imports_named(caller["path"], name):
                rows = tables.symbols_by_qualname(resolved)
                rows = [r for r in rows if crate_of(r["path"]) == crate]
                if rows:
                    return "scope", rows[0]
        return "name", None

    # ----------------------------------------------------------------- files

    def _file(self, file: str) -> sqlite3.Row:
        """The modules row of an indexed file, given root-relative or under the root.

        Raises
        ------
        SourceError
            The index holds no such file.
        """
        path = file.replace("\\", "/").strip()
        root = self.root.rstrip("/")
        if root and path.startswith(root + "/"):
            path = path[len(root) + 1 :]
        path = path.removeprefix("./")
        row = self._tables.module_of_file(path)
        if row is not None:
            return row
        near = self._tables.paths_named(path.rsplit("/", 1)[-1], limit=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise SourceError(
            f"{file} is not in the index at {self.index_dir} (paths are relative to "
            f"{self.root or 'the indexed root'}){hint}"
        )

    def dependencies(self, file: str) -> FileDependencies:
        """What a file imports, and which indexed files import it.

        Parameters
        ----------
        file
            Path relative to the indexed root (``alloc/src/collections/binary_heap.rs``),
            or a path under the root.

        Returns
        -------
        FileDependencies
            ``imports``: the file's ``use`` paths (braces expanded), each resolved to a
            crate path and, when the index holds it, to the file that defines it.
            ``imported_by``: ``use`` paths of other indexed files that name this file's
            module or an item under it (``how="module"``), or one of its top-level
            items through an ancestor module, as a re-export would (``how="re-export"``).

        Raises
        ------
        SourceError
            The file is not in the index.
        """
        info = self._file(file)
        path, module, crate = info["path"], info["module"], info["crate"]
        return FileDependencies(
            path=path,
            module=module,
            crate=crate,
            imports=tuple(file_imports(self._tables, path, module, crate)),
            imported_by=tuple(file_importers(self._tables, path, module, crate)),
        )

    def complexity(self, file: str) -> FileComplexity:
        """Line counts, items by kind and cyclomatic complexity of each function of a file.

        The rule, per function or method with a body: 1, plus 1 for each ``if``
        (``else if`` and ``if let`` included), each arm of a ``match`` beyond the first,
        each match-arm guard (``pat if cond =>``), each ``while`` (``while let``),
        ``for`` and ``loop``, each ``&&`` and ``||``, each ``?`` and each
        ``let ... else``. Closures count towards the function they are written in; a
        function nested in another is counted on its own, not in its parent. Code inside
        macro invocations (``assert!(a && b)``) is token soup to tree-sitter and is not
        counted.

        Lines: a line is *code* when any token other than a comment lies on it (a
        multi-line string literal makes all its lines code), *comment* when only
        comments (doc comments included) do, else *blank*.

        Parameters
        ----------
        file
            Path relative to the indexed root, or a path under the root.

        Returns
        -------
        FileComplexity
            Read from the source as it is now (``stale=True`` when it changed since it
            was indexed).

        Raises
        ------
        SourceError
            The file is not in the index, or cannot be read from the indexed root.
        """
        info = self._file(file)
        path = info["path"]
        data = self._read(path)
        known = self._tables.indexed_sha256(path)
        stale = known is not None and known != hashlib.sha256(data).hexdigest()
        measure = measure_source(data)
        symbols = self._tables.functions_in_file(path)
        out: list[FunctionComplexity] = []
        for name, start, end, score in measure.functions:
            match = [s for s in symbols if s["end_line"] == end and s["start_line"] <= start]
            best = max(match, key=lambda s: s["start_line"]) if match else None
            out.append(
                FunctionComplexity(
                    name=name,
                    qualname=best["qualname"] if best is not None else name,
                    kind=best["kind"] if best is not None else "function",
                    path=path,
                    start_line=start,
                    end_line=end,
                    complexity=score,
                )
            )
        items = self._tables.item_counts(path)
        return FileComplexity(
            path=path,
            lines_total=measure.lines_total,
            lines_code=measure.lines_code,
            lines_comment=measure.lines_comment,
            lines_blank=measure.lines_blank,
            items=tuple(items),
            functions=tuple(out),
            stale=stale,
        )

    def _read(self, path: str) -> bytes:
        """Bytes of an indexed file, read from the indexed root."""
        from .sources import open_root

        try:
            root = open_root(self.root)
            full = f"{root.path.rstrip('/')}/{path}"
            data = read_bytes(root.fs, full)
        except RcmError as e:
            raise SourceError(
                f"cannot read {path}: the indexed root {self.root} is gone ({e})"
            ) from e
        except (OSError, ValueError) as e:
            raise SourceError(
                f"cannot read {path} under {self.root}: {e}; re-run `rcm-dask index` if it "
                "was moved or deleted"
            ) from e
        return data
