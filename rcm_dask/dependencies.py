"""What a file imports, and which indexed files import it, from the symbol tables.

:meth:`rcm_dask.intel.CodeIntel.dependencies` answers with these two functions; both
read :class:`~rcm_dask.stores.symbol_tables.SymbolTables` only.
"""

from __future__ import annotations

from .records import ImportEdge
from .stores.symbol_tables import SymbolTables

__all__ = ["file_importers", "file_imports"]


def file_imports(
    tables: SymbolTables, path: str, module: str, crate: str
) -> list[ImportEdge]:
    """The ``use`` paths of ``path`` (of ``module`` in ``crate``), in the order written,
    each resolved to a crate path and, when the index holds it, to the file defining it."""
    crates = tables.crates()
    imports: list[ImportEdge] = []
    for r in tables.imports_of_file(path):
        use_crate, resolved = r["crate"], r["resolved"]
        if use_crate not in crates and use_crate != crate:
            # ``use foo::x`` in 2018 code may name a module ``foo`` in scope: a child
            # of this module, or one at the crate root
            target_path, how = "", ""
            for base in (f"{module}::{use_crate}".strip(":"), use_crate):
                local = "::".join(s for s in (base, resolved) if s)
                target_path, how = _locate(tables, crate, local, base.count("::") + 1)
                if target_path:
                    use_crate, resolved = crate, local
                    break
        else:
            target_path, how = _locate(tables, use_crate, resolved)
        shown = _crate_path(use_crate, resolved)
        if r["last"] == "*":
            shown += "::*"
        imports.append(ImportEdge(path, r["use_path"], shown, target_path, how or "external"))
    return imports


def file_importers(
    tables: SymbolTables, path: str, module: str, crate: str
) -> list[ImportEdge]:
    """Imports of other indexed files that lead into ``path`` (of ``module`` in ``crate``),
    by path and use path."""
    found: dict[tuple[str, str], ImportEdge] = {}
    if module:
        for r in tables.importers_of_module(crate, module, but=path):
            target = _crate_path(crate, r["resolved"])
            found[(r["path"], r["use_path"])] = ImportEdge(
                r["path"], r["use_path"], target, path, "module"
            )
    # 2018 paths through a module in scope (written ``binary_heap::X`` in the parent
    # module, or ``collections::binary_heap::X`` from anywhere): stored under the
    # first segment as if it were a crate, since a use path does not say which.
    segs = module.split("::") if module else []
    relative: list[tuple[str, str, str | None]] = []
    if segs:
        relative.append((segs[-1], "", "::".join(segs[:-1])))
    if len(segs) > 1:
        relative.append((segs[0], "::".join(segs[1:]), None))
    for head, rest, parent in relative:
        for r in tables.importers_through(head, crate, but=path, under=rest, in_module=parent):
            key = (r["path"], r["use_path"])
            if key not in found:
                target = _crate_path(crate, module)
                tail = r["resolved"][len(rest) :].strip(":") if rest else r["resolved"]
                target = "::".join(s for s in (target, tail) if s)
                found[key] = ImportEdge(r["path"], r["use_path"], target, path, "module")
    # Items defined at the top of the file, imported through an ancestor module
    # (``use crate::collections::BinaryHeap`` for collections/binary_heap.rs).
    names = tables.top_level_item_names(path, module)
    for r in tables.importers_of_names(crate, but=path, names=names):
        prefix = r["resolved"].rpartition("::")[0]
        ancestor = prefix == "" or module.startswith(prefix + "::") or prefix == module
        key = (r["path"], r["use_path"])
        if ancestor and key not in found:
            how = "module" if prefix == module else "re-export"
            target = _crate_path(crate, r["resolved"])
            found[key] = ImportEdge(r["path"], r["use_path"], target, path, how)
    return sorted(found.values(), key=lambda e: (e.path, e.use_path))


def _locate(
    tables: SymbolTables, crate: str, resolved: str, min_depth: int = 1
) -> tuple[str, str]:
    """(file, how) that defines a crate path: an item, else the deepest module of at
    least ``min_depth`` segments."""
    if not resolved:
        return "", ""
    item_file = tables.file_defining(resolved, crate)
    if item_file is not None:
        return item_file, "item"
    segs = resolved.split("::")
    for k in range(len(segs), max(1, min_depth) - 1, -1):
        module_file = tables.file_of_module(crate, "::".join(segs[:k]))
        if module_file is not None:
            return module_file, "module"
    return "", ""


def _crate_path(crate: str, path: str) -> str:
    """A crate path as shown: ``alloc::vec::Vec``; ``crate::...`` in the root's crate (``""``)."""
    return "::".join(s for s in (crate or "crate", path) if s)
