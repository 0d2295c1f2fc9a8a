"""Symbol collection: what a chunk defines, references and imports.

:class:`SymbolCollector` (used by :class:`~rcm_dask.writer.IndexWriter`) turns a file's
chunks into rows of the manifest's ``symbols``, ``refs``, ``imports`` and ``modules``
tables (schema in :mod:`rcm_dask.stores.manifest`). The rows are written in the same
SQLite transaction as the file's ``files`` row, so a file's symbols exist exactly when the
manifest lists the file. :class:`rcm_dask.intel.CodeIntel` answers questions from them.

The use-path helpers (:func:`crate_of`, :func:`expand_use`, :func:`resolve_use`) live here
too: the read side imports them from this module, never the other way round.

Where a reference is
--------------------
Chunks record the names an item calls (``push``, ``new``, ``vec!``: last path segment
only) and the type names it mentions, without positions. The collector finds each name's
first occurrence in the chunk's code (comments and string literals blanked out) when the
chunk is written, and keeps its line and the way it was written (``BinaryHeap::push(``,
``Self::push(``, ``self.push(``, ``x.push(``, ``push(``). Doing this at write time rather
than at query time means the index needs no copy of the code for queries (the code lives in
the Tantivy/Qdrant payloads, costly to fetch per reference), queries stay pure SQL, and
the chunk records and :data:`~rcm_dask.chunking.CHUNKER_VERSION` are unchanged (a chunker
change would re-embed every index). One row is kept per (item, name, way written), at the
line of its first occurrence in the item.

Names used as values
--------------------
The chunker records no identifier used as a value (``RETRY_DELAY * 2``, ``u32::MAX``,
``Ordering::Less``, ``None``), so the collector finds them in the chunk's code by their
shape, with the same blanking (attributes blanked too): a const-shaped name
(``[A-Z][A-Z0-9_]*``, two characters or more: consts and statics, by Rust's naming lint)
not followed by ``(``, ``!`` or ``::``, and a capitalised one (unit structs and enum
variants) not followed by those, ``<`` or ``>`` either, nor after ``<``, ``->``, ``&``,
``dyn``, ``impl``, ``as`` (type positions: generic parameters are not listed as types),
outside enum bodies (variant definitions) and function headers; neither after
``const``/``static``/``struct``... (the item's own name) nor when the chunker listed the
name as a type. Each is a ``value`` reference, its ``via``
the path segment before it. This needs no list of defined consts (those may live in files
another batch writes), and queries stay one indexed SQL lookup: a query-time search of the
code (BM25 terms, then a word match over fetched payloads) would fetch a payload per
candidate chunk, thousands for a name like ``MAX`` on a 132k chunk index. A bare value resolves by
scope in its definition's module or file, or through an import, like a call. The price:
indexes written before this rule hold value references only for the files written since
(``--force`` rebuilds them all), and a const named in lower case (the
``non_upper_case_globals`` lint allowed) is missed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from .chunking import module_path_for
from .records import Chunk
from .stores.symbol_tables import FileSymbols

__all__ = [
    "SymbolCollector",
    "crate_dir",
    "crate_of",
    "expand_use",
    "resolve_use",
]

_SUMMARY_KINDS = frozenset({"impl", "trait", "mod"})

# Comments and literals, blanked out before names are located, so that a name in a doc
# example or a string is never taken for a call site. Block comments are matched
# non-nested (a nested one leaves its tail visible: at worst a wrong line, never a crash).
# The lookahead names every alternative's first character: most positions fail on it at
# once instead of trying five alternatives (four times faster on rust-src, same matches).
_MASK = re.compile(
    r"""(?=[/"'br])(?://[^\n]*
    | /\*(?:[^*]|\*(?!/))*\*/
    | (?<![\w])b?r(\#*)".*?"\1
    | (?<![\w])b?"(?:\\.|[^"\\])*"
    | (?<![\w])b?'(?:\\.|[^'\\\n])')""",
    re.DOTALL | re.VERBOSE,
)
_NOT_NEWLINE = re.compile(r"[^\n]")
# A call site: a name, an optional turbofish, then ``(`` (a call) or ``!`` + delimiter.
_CALL_SITE = re.compile(
    r"(?<![\w$])(?:r\#)?([A-Za-z_]\w*)\s*(?:::\s*<[^;{}()]*?>\s*)?(!\s*[(\[{]|\()"
)
# What stands before a name: ``Path::``, ``<T as Trait>::``, ``self.`` or ``.``.
_QUALIFIER = re.compile(r"([A-Za-z_]\w*)\s*(?:::\s*<[^;{}()]*>\s*)?::\s*$")
_AS_TRAIT = re.compile(r"\bas\s+(?:[\w]+\s*::\s*)*([A-Za-z_]\w*)\s*(?:<[^;{}()]*>)?\s*>\s*::\s*$")
_SELF_DOT = re.compile(r"(?<![\w.])self\s*\.$")
# A name used as a value: ``RETRY_DELAY``, ``u32::MAX``, ``Ordering::Less``, ``None``. The
# chunker records calls and types only, so these are found here by their shape (see the
# module notes); what follows must not make it a call, a macro or a path (group 2: the next
# character; ``<`` or ``>`` after a capitalised name put it in a type). Struct literals
# (``Pool {``, ``State::Busy {``) are left out as names the chunker listed as types.
_VALUE_SITE = re.compile(r"(?<![\w$'])(?:r\#)?([A-Z]\w*)(?!\w|\s*(?:[(!]|::))(?=\s*(\S?))")
_CONST_SHAPE = re.compile(r"[A-Z][A-Z0-9_]*")
# Before a name that is defined here (``const MAX``, ``struct Marker``), not used.
_DEFINES = re.compile(
    r"(?<![\w$])(?:const|static(?:\s+mut)?|struct|enum|union|trait|type|fn|mod|macro_rules!)\s*$"
)
_FN_KEYWORD = re.compile(r"(?<![\w$])fn(?![\w$])")
# Before a capitalised name in a type: ``<Name``, ``-> Name``, ``dyn Name``, ``as Name``.
_TYPE_BEFORE = re.compile(r"(?:<|->|&|(?<![\w$])(?:dyn|impl|as|mut))$")
# Attributes (``#[derive(Debug)]``, one level of nested brackets): names in them are not uses.
_ATTRIBUTE = re.compile(r"#!?\s*\[(?:[^\[\]]|\[[^\[\]]*\])*\]")
_LOOKBEHIND = 160
_MAX_USE_PATHS = 256
"""Paths one ``use`` may expand to (``{a, b, {c, d}}``); a hostile one is cut here."""


def crate_of(path: str) -> str:
    """Crate a file belongs to: the folder above its last ``src`` folder, else ``""``.

    Examples
    --------
    >>> crate_of("alloc/src/collections/binary_heap.rs"), crate_of("src/lib.rs")
    ('alloc', '')
    """
    parts, src = _split_at_src(path)
    return re.sub(r"\W", "_", parts[src - 1]) if src else ""


def crate_dir(path: str) -> str:
    """Folder of the crate a file belongs to (the one above its last ``src``), else ``""``.

    Examples
    --------
    >>> crate_dir("library/alloc/src/vec/mod.rs"), crate_dir("src/lib.rs")
    ('library/alloc', '')
    """
    parts, src = _split_at_src(path)
    return "/".join(parts[:src])


def _split_at_src(path: str) -> tuple[list[str], int]:
    """A path's folders and the index of its last ``src`` folder past the first (0: none)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "src":
            return parts, i
    return parts, 0


@functools.lru_cache(maxsize=8192)
def expand_use(text: str) -> tuple[str, ...]:
    """The paths one ``use`` argument imports, braces expanded, aliases dropped.

    Cached: every item of a file asks about the same few ``use`` lines (the embedded
    header names the imports an item uses), 80,000 calls for syn's 92 files.

    Examples
    --------
    >>> expand_use("crate::vec::{self, AsVecIntoIter, Vec as V}")
    ('crate::vec', 'crate::vec::AsVecIntoIter', 'crate::vec::Vec')
    >>> expand_use("core::{fmt, iter::{Peekable, *}}")
    ('core::fmt', 'core::iter::Peekable', 'core::iter::*')
    """
    out: list[str] = []
    # A prefix stack instead of recursion: a hostile ``{{{{...}}}}`` cannot overflow.
    stack = [""]
    current = ""

    def emit() -> None:
        path = re.sub(r"\s+as\s+\w+$", "", (stack[-1] + current).strip())
        path = re.sub(r"\s+", "", path).removeprefix("::")
        path = path.removesuffix("::self")
        if path and not path.endswith("::") and len(out) < _MAX_USE_PATHS:
            out.append(path)

    for token in re.split(r"([{},])", text):
        if token == "{":
            stack.append(stack[-1] + current.strip())
            current = ""
        elif token in (",", "}"):
            if current.strip():
                emit()
            current = ""
            if token == "}" and len(stack) > 1:
                stack.pop()
        else:
            current += token
    if current.strip():
        emit()
    return tuple(out)


def resolve_use(path: str, module: str, crate: str) -> tuple[str, str]:
    """(crate, crate-relative path) that a use path names, seen from ``module`` of ``crate``.

    ``crate::``, ``$crate::``, ``self::`` and ``super::`` resolve within the file's crate;
    any other first segment is taken for a crate name (``std``, ``core``, a dependency).

    Examples
    --------
    >>> resolve_use("super::SpecExtend", "collections::binary_heap", "alloc")
    ('alloc', 'collections::SpecExtend')
    >>> resolve_use("core::mem::swap", "collections::binary_heap", "alloc")
    ('core', 'mem::swap')
    """
    segs = [s for s in path.split("::") if s]
    if not segs:
        return crate, ""
    here = [s for s in module.split("::") if s]
    head = segs[0]
    if head in ("crate", "$crate"):
        return crate, "::".join(segs[1:])
    if head in ("self", "super"):
        i = 0
        if head == "self":
            i = 1
        while i < len(segs) and segs[i] == "super":
            here = here[:-1]
            i += 1
        return crate, "::".join(here + segs[i:])
    return head, "::".join(segs[1:])


def _impl_parts(name: str) -> tuple[str, str]:
    """(trait, self type) base names of an impl chunk's name (``impl fmt::Debug for X``)."""
    text = name.removeprefix("impl").strip().lstrip("!")
    trait, sep, self_type = text.rpartition(" for ")
    if not sep:
        trait, self_type = "", text
    return _base_name(trait), _base_name(self_type)


def _base_name(type_text: str) -> str:
    """Last path segment of a type, without references, pointers or generics."""
    text = re.sub(r"<.*", "", type_text)
    names = re.findall(r"[A-Za-z_]\w*", text.split("::")[-1] if "::" in text else text)
    names = [n for n in names if n not in ("mut", "const", "dyn")]
    return names[-1] if names else ""


def _first_doc_line(docs: str) -> str:
    """First non-empty line of the docs, at most 200 characters."""
    line = next((ln.strip() for ln in docs.split("\n") if ln.strip()), "")
    return line[:200]


def _masked(code: str) -> str:
    """The code with comments and literals blanked (same length, newlines kept)."""
    return _MASK.sub(_blank, code)


def _blank(m: re.Match[str]) -> str:
    """Spaces in place of a match, its newlines kept."""
    text = m.group()
    return _NOT_NEWLINE.sub(" ", text) if "\n" in text else " " * len(text)


def _find_word(text: str, word: str) -> int:
    """Offset of the first whole-word occurrence of ``word`` in ``text``, or -1."""
    pos = text.find(word)
    n = len(word)
    while pos >= 0:
        before = text[pos - 1] if pos else " "
        after = text[pos + n : pos + n + 1] or " "
        if not (before.isalnum() or before in "_$") and not (after.isalnum() or after == "_"):
            return pos
        pos = text.find(word, pos + 1)
    return -1


def _via(masked: str, start: int) -> str | None:
    """How the name at ``start`` is reached: a path segment, ``.self``, ``.`` or ``""``;
    None when it is not a call at all (``fn name(``: the item's own header)."""
    before = masked[max(0, start - _LOOKBEHIND) : start].rstrip()
    if before.endswith("::"):
        return _qualifier(before)
    if before.endswith("."):
        return ".self" if _SELF_DOT.search(before) else "."
    if before.endswith("fn") and not before[-3:-2].isidentifier():
        return None
    return ""


def _qualifier(before: str) -> str:
    """The owner named before a trailing ``::`` (``Trait`` of ``<T as Trait>::``), or ``""``."""
    m = _AS_TRAIT.search(before) or _QUALIFIER.search(before)
    return m.group(1) if m else ""


def _add_value_refs(
    code: str, kind: str, header_end: int, entry: _SymbolRows, line_at: Callable[[int], int]
) -> None:
    """Record the names ``code`` uses as values: const-shaped names (``RETRY_DELAY``,
    ``u32::MAX``) anywhere, capitalised ones (unit structs and variants: ``None``,
    ``NetError::Timeout``) outside enum bodies (variant definitions) and function headers
    (before ``header_end``: types and generic parameters)."""
    refs = entry.refs
    for m in _VALUE_SITE.finditer(code):
        name = m.group(1)
        if len(name) < 2 or name == "Self" or name in entry.types:
            continue  # one letter: a generic parameter (``T``, ``N``), not a value
        const = _CONST_SHAPE.fullmatch(name) is not None
        start = m.start()
        if not const and (kind == "enum" or start < header_end or m.group(2) in ("<", ">")):
            continue
        near = code[max(0, start - 24) : start].rstrip()
        if _DEFINES.search(near) or (near.endswith(".") and not near.endswith("..")):
            continue  # a definition's own name, a field (``0..MAX`` is a range: kept)
        if not const and _TYPE_BEFORE.search(near):
            continue  # a generic parameter in a type (the chunker lists no generics)
        via = ""
        if near.endswith("::"):
            via = _qualifier(code[max(0, start - _LOOKBEHIND) : start].rstrip())
        if (name, "value", via) not in refs:
            refs[(name, "value", via)] = line_at(m.start(1))


class _SymbolRows:
    """What the collector holds for one item (all its parts) until its file is finished."""

    __slots__ = ("calls", "end_line", "parts", "refs", "row", "seen_calls", "seen_types", "types")

    def __init__(self, chunk: Chunk) -> None:
        self.row: list[Any] = [
            chunk.symbol_id or chunk.id,
            chunk.name,
            chunk.qualname,
            chunk.kind,
            chunk.parent,
            chunk.module,
            chunk.signature,
            chunk.visibility,
            _first_doc_line(chunk.docs),
            chunk.start_line,
        ]
        self.end_line = chunk.end_line
        self.parts = chunk.parts
        self.refs: dict[tuple[str, str, str], int] = {}
        self.calls: set[str] = set()
        self.types: set[str] = set()
        self.seen_calls: set[str] = set()
        self.seen_types: set[str] = set()


class SymbolCollector:
    """Turns the chunks of the files a writer is writing into manifest symbol rows.

    Chunks of one file may arrive in several batches, parts of one item in any order;
    :meth:`finish` returns the file's rows once all of them have been added.

    Examples
    --------
    >>> collector = SymbolCollector()
    >>> # collector.add(chunk) for every chunk of a file, then:
    >>> collector.finish("src/lib.rs").path
    'src/lib.rs'
    """

    def __init__(self) -> None:
        self._files: dict[str, dict[str, _SymbolRows]] = {}
        self._imports: dict[str, tuple[str, ...]] = {}

    def add(self, chunk: Chunk) -> None:
        """Record one chunk (or one part of a split item)."""
        items = self._files.setdefault(chunk.path, {})
        if chunk.path not in self._imports:
            self._imports[chunk.path] = chunk.imports
        key = chunk.symbol_id or chunk.id
        entry = items.get(key)
        if entry is None:
            entry = items[key] = _SymbolRows(chunk)
        if chunk.part == 1:
            entry.row[9] = chunk.start_line
        entry.end_line = max(entry.end_line, chunk.end_line)
        if chunk.kind == "impl":
            self._add_impl_refs(chunk, entry)
        elif chunk.kind not in _SUMMARY_KINDS:
            self._add_code_refs(chunk, entry)

    @staticmethod
    def _add_impl_refs(chunk: Chunk, entry: _SymbolRows) -> None:
        """An impl block refers to its self type (``impl``) and its trait (``trait-impl``)."""
        trait, self_type = _impl_parts(chunk.name)
        if self_type:
            entry.refs.setdefault((self_type, "impl", ""), chunk.start_line)
        if trait:
            entry.refs.setdefault((trait, "trait-impl", ""), chunk.start_line)

    @staticmethod
    def _add_code_refs(chunk: Chunk, entry: _SymbolRows) -> None:
        """Locate the chunk's calls, type names and values in its code (see the module notes)."""
        calls = set(chunk.calls)
        types = set(chunk.type_refs)
        entry.calls |= calls
        entry.types |= types
        code = _masked(chunk.code)
        first = chunk.start_line

        def line_at(pos: int) -> int:
            return first + code.count("\n", 0, pos)

        refs = entry.refs
        if calls:
            for m in _CALL_SITE.finditer(code):
                name = m.group(1)
                macro = m.group(2) != "("
                called = name + "!" if macro else name
                if called not in calls:
                    continue
                via = "" if macro else _via(code, m.start(1))
                if via is None:
                    continue
                key = (name, "macro" if macro else "call", via)
                if key not in refs:
                    refs[key] = line_at(m.start(1))
                entry.seen_calls.add(called)
        for name in types - entry.seen_types:
            pos = _find_word(code, name)
            if pos >= 0:
                entry.seen_types.add(name)
                refs.setdefault((name, "type", ""), line_at(pos))
        code = _ATTRIBUTE.sub(_blank, code)
        header_end = 0
        if chunk.kind in ("function", "method") and chunk.part == 1:
            # a function's header holds types and generic parameters, never unit values
            fn = _FN_KEYWORD.search(code)
            header_end = code.find("{", fn.end()) if fn else 0
            header_end = len(code) if header_end < 0 else header_end
        _add_value_refs(code, chunk.kind, header_end, entry, line_at)

    def finish(self, path: str) -> FileSymbols:
        """All chunks of ``path`` were added: its rows, ready for the manifest."""
        items = self._files.pop(path, {})
        imports = self._imports.pop(path, ())
        module = module_path_for(path)
        crate = crate_of(path)
        symbols: list[tuple[Any, ...]] = []
        refs: list[tuple[int, str, str, str, int]] = []
        for i, entry in enumerate(items.values()):
            symbols.append((*entry.row, entry.end_line, entry.parts))
            for (target, kind, via), line in entry.refs.items():
                refs.append((i, target, kind, via, line))
            # A name the chunker saw but the scan could not place (in an odd macro input,
            # say) is kept at the item's first line; "?": the way it is written is unknown.
            start = int(entry.row[9])
            for called in sorted(entry.calls - entry.seen_calls):
                macro = called.endswith("!")
                refs.append((i, called.rstrip("!"), "macro" if macro else "call", "?", start))
            for name in sorted(entry.types - entry.seen_types):
                refs.append((i, name, "type", "", start))
        rows: list[tuple[str, str, str, str]] = []
        for use in imports:
            for one in expand_use(use):
                use_crate, resolved = resolve_use(one, module, crate)
                glob = resolved == "*" or resolved.endswith("::*")
                if glob:
                    resolved = resolved.removesuffix("*").removesuffix("::")
                last = "*" if glob else (resolved.rsplit("::", 1)[-1] or use_crate)
                rows.append((one, use_crate, resolved, last))
        return FileSymbols(
            path=path,
            module=module,
            crate=crate,
            symbols=tuple(symbols),
            refs=tuple(refs),
            imports=tuple(dict.fromkeys(rows)),
        )

    def discard(self, path: str) -> None:
        """Forget what was collected for a file (it will not be finished in this run)."""
        self._files.pop(path, None)
        self._imports.pop(path, None)
