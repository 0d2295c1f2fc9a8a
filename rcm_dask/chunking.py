"""Parse one Rust file into :class:`~rcm_dask.records.Chunk` records: tree-sitter only.

The stage is :func:`chunk_source` (``SourceFile -> list[Chunk]``): one chunk per Rust
item, found at any depth, with its context (module path, enclosing type, docs,
attributes, the file's imports, the names it calls and the types it names). What the
model reads of a chunk is decided in :mod:`rcm_dask.embed_text`; items too long for the
model are cut into parts by :mod:`rcm_dask.splitting`.

Design notes
------------
* The syntax tree is walked once, iteratively, with an explicit stack: deep nesting
  never reaches Python's recursion limit, and each node is visited once, so the walk is
  linear in the size of the tree (``Node.parent`` and ``Node.prev_sibling`` are avoided
  because tree-sitter answers them by walking down from the root).
* Nesting of *items* (a fn in a fn in a mod ...) is followed 64 levels deep. Deeper
  items stay inside the code of their ancestors: as every item's code contains the
  items nested in it, a hostile file of 10,000 nested functions would otherwise make
  gigabytes of chunks. Nesting of blocks and expressions is unlimited.
* Calls and type names are collected into the innermost enclosing item and merged into
  the outer one when the inner item closes, so an item's lists cover all of its code.
  ``impl``, ``trait`` and inline ``mod`` chunks are summaries (header, inner docs of a
  mod, member signatures), as each member is a chunk of its own; they take only the
  types of that header and of their members' signatures.
* Item-level macro invocations (``bitflags! { .. }``, ``thread_local! { .. }`` at the
  top of a file or inside an ``impl``/``trait``/``mod`` body) become ``macro`` chunks
  named ``name!``: tree-sitter cannot see the items a macro generates, so their input is
  the only text that can be indexed. Invocations inside function bodies are calls.
* Ids depend on path, kind, qualified name, occurrence and part only, never on byte
  offsets, so editing one item leaves the ids of the others unchanged.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
import threading
import uuid
from collections.abc import Sequence
from typing import TypeAlias

import tree_sitter
import tree_sitter_rust

from rcm_dask.records import Chunk, ChunkKind, SourceFile

CHUNKER_VERSION: str = "5"
"""Version of the chunk output; bump whenever :func:`chunk_source`,
:func:`~rcm_dask.splitting.split_chunks` or the embedded text
(:func:`~rcm_dask.embed_text.format_for_embedding`) would produce different chunks or
vectors for the same input (3: doc comments cut to their first paragraph in the embedded
text; 5: a shorter header, one location line and only the imports the item names)."""

__all__ = [
    "CHUNKER_VERSION",
    "chunk_source",
    "make_chunk_id",
    "module_path_for",
    "rust_parser",
]

Node = tree_sitter.Node

_LANGUAGE = tree_sitter.Language(tree_sitter_rust.language())
# A Parser holds per-parse state: one per thread keeps threaded Dask workers safe.
_LOCAL = threading.local()

_ITEM_KINDS: dict[str, ChunkKind] = {
    "function_item": "function",
    "function_signature_item": "function",
    "struct_item": "struct",
    "enum_item": "enum",
    "union_item": "union",
    "trait_item": "trait",
    "impl_item": "impl",
    "mod_item": "mod",
    "const_item": "const",
    "static_item": "static",
    "type_item": "type",
    "associated_type": "type",
    "macro_definition": "macro",
    "macro_invocation": "macro",
}
# Parents whose macro invocations are items rather than expressions.
_ITEM_LEVEL_PARENTS = frozenset({"source_file", "declaration_list"})
# Bodies that start with ``{``: a signature stops where they start.
_BRACE_BODIES = frozenset(
    {"block", "declaration_list", "field_declaration_list", "enum_variant_list"}
)
_COMMENTS = frozenset({"line_comment", "block_comment"})
# Subtrees that hold no items, calls or type names worth walking.
_NO_DESCEND = frozenset(
    {
        "line_comment",
        "block_comment",
        "attribute_item",
        "inner_attribute_item",
        "string_literal",
        "raw_string_literal",
        "char_literal",
        "lifetime",
        "visibility_modifier",
    }
)
_FILE_MODULE_NAMES = frozenset({"lib.rs", "main.rs", "mod.rs"})
_NON_IDENT = re.compile(r"\W")
_WS = re.compile(r"\s+")
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F_]{1,8}\}|x[0-9a-fA-F]{2}|\r?\n\s*|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_SUMMARY_KINDS = frozenset({"impl", "trait", "mod"})
"""Kinds whose chunk is a summary of their members rather than their full text."""

# Each item's code holds the code of the items nested in it, so output grows with the
# square of item nesting. Real code nests a few levels; past this depth, items stay part
# of the enclosing item's code instead of becoming chunks of their own.
_MAX_ITEM_DEPTH = 64
_OUTLINE_MAX = 40
_OUTLINE_WIDTH = 160


# --------------------------------------------------------------------------- ids, paths


def make_chunk_id(path: str, kind: str, qualname: str, occurrence: int, part: int = 1) -> str:
    """Return the deterministic id of one chunk.

    Parameters
    ----------
    path : str
        File path relative to the root (``src/lib.rs``).
    kind : str
        Chunk kind (``function``, ``impl``, ...).
    qualname : str
        Qualified name of the item.
    occurrence : int
        0-based count of earlier chunks of the same file with the same ``kind`` and
        ``qualname`` (two ``impl Drop for X`` blocks, cfg-duplicated functions, ...).
    part : int, default 1
        Part number; 1 for a whole item.

    Returns
    -------
    str
        A UUID string made of the first 16 bytes of the SHA-256 of the fields joined
        with NUL. Byte offsets are not hashed, so ids survive edits elsewhere in the file.

    Examples
    --------
    >>> make_chunk_id("src/lib.rs", "function", "main", 0) == make_chunk_id(
    ...     "src/lib.rs", "function", "main", 0, part=1)
    True
    """
    fields = "\0".join((path, kind, qualname, str(occurrence), str(part)))
    return str(uuid.UUID(bytes=hashlib.sha256(fields.encode("utf-8", "replace")).digest()[:16]))


def module_path_for(path: str) -> str:
    """Return the crate-relative module path of a file.

    Parameters
    ----------
    path : str
        Path relative to the indexed root, with ``/`` separators.

    Returns
    -------
    str
        The components after the last ``src`` directory (or all of them when there is
        none), without a ``lib.rs``/``main.rs``/``mod.rs`` file name and without the
        ``.rs`` suffix, joined with ``::``. Characters that cannot appear in a Rust
        identifier become ``_``. Empty for a crate root.

    Examples
    --------
    >>> module_path_for("src/collections/binary_heap/mod.rs")
    'collections::binary_heap'
    >>> module_path_for("library/alloc/src/vec/into_iter.rs")
    'vec::into_iter'
    >>> module_path_for("src/lib.rs")
    ''
    >>> module_path_for("tests/foo.rs")
    'tests::foo'
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return ""
    dirs, file_name = parts[:-1], parts[-1]
    for i in range(len(dirs) - 1, -1, -1):
        if dirs[i] == "src":
            dirs = dirs[i + 1 :]
            break
    segments = list(dirs)
    if file_name not in _FILE_MODULE_NAMES:
        segments.append(file_name.removesuffix(".rs"))
    return "::".join(_NON_IDENT.sub("_", s) for s in segments if s)


# --------------------------------------------------------------------------- the walk


class _Scope:
    """Where the walk stands: module, qualified-name prefix, parent type, collecting item."""

    __slots__ = ("collector", "depth", "generics", "module", "parent", "qual")

    def __init__(
        self,
        module: tuple[str, ...],
        qual: tuple[str, ...],
        parent: str,
        collector: _Item | None,
        generics: frozenset[str],
    ) -> None:
        self.module = module
        self.qual = qual
        self.parent = parent
        self.collector = collector
        self.generics = generics
        self.depth: int = collector.depth if collector is not None else 0  # enclosing items


class _Item:
    """One item found by the walk, before it becomes a Chunk."""

    __slots__ = (
        "body_start",
        "calls",
        "depth",
        "kind",
        "members",
        "module",
        "name",
        "name_start",
        "node",
        "outer",
        "parent",
        "prefix",
        "qual",
        "self_type",
        "sig_types",
        "signature",
        "summary",
        "types",
    )

    def __init__(
        self,
        node: Node,
        kind: ChunkKind,
        name: str,
        parent: str,
        module: tuple[str, ...],
        qual: tuple[str, ...],
        prefix: tuple[Node, ...],
        outer: _Item | None,
    ) -> None:
        self.node = node
        self.kind: ChunkKind = kind
        self.name = name
        self.parent = parent
        self.module = module
        self.qual = qual
        self.prefix = prefix
        self.outer = outer
        self.name_start = -1
        self.depth: int = outer.depth + 1 if outer is not None else 1
        self.body_start = node.end_byte
        self.signature = ""
        # Calls map to the byte offset of their first mention: a chain like
        # ``x.iter().map(f)`` is met outermost call first, but should list ``iter`` first.
        self.calls: dict[str, int] = {}
        # Dicts as ordered sets: types are leaves, met in source order already.
        self.types: dict[str, None] = {}
        self.sig_types: dict[str, None] = {}
        self.members: list[_Item] = []
        self.self_type = ""
        self.summary = ""


# Stack entries: a node to visit (node, scope, prefix, is_item) or an item to close.
_Entry: TypeAlias = "tuple[Node, _Scope, tuple[Node, ...], bool] | _Item"


class _Walker:
    """Collect the items, imports and file docs of one parsed file."""

    def __init__(self, data: bytes, file_module: str) -> None:
        self.data = data
        self.file_module = file_module
        segments = tuple(s for s in file_module.split("::") if s)
        self.root_scope = _Scope(segments, segments, "", None, frozenset())
        self.items: list[_Item] = []
        self.imports: dict[str, None] = {}

    def text(self, node: Node) -> str:
        """Source text of a node."""
        return self.data[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def span(self, start: int, end: int) -> str:
        """Source text of a byte range."""
        return self.data[start:end].decode("utf-8", "replace")

    def run(self, root: Node) -> None:
        """Walk the whole tree once, depth first, in source order."""
        stack: list[_Entry] = [(root, self.root_scope, (), False)]
        while stack:
            entry = stack.pop()
            if isinstance(entry, _Item):
                self.leave(entry)
                continue
            node, scope, prefix, is_item = entry
            if is_item and scope.depth < _MAX_ITEM_DEPTH:
                item = self.enter(node, scope, prefix)
                if item is not None:
                    stack.append(item)
                    self.push_children(stack, node, self.inner_scope(item, node, scope))
                    continue
            self.visit(node, scope, stack)

    def push_children(self, stack: list[_Entry], node: Node, scope: _Scope) -> None:
        """Queue the children worth visiting, attaching docs/attributes to the next item."""
        item_level = node.type in _ITEM_LEVEL_PARENTS
        entries: list[_Entry] = []
        pending: list[Node] = []
        before = prev = ""  # types of the two previous children, tokens included
        for child in node.children:
            t, prev_t, before_t = child.type, prev, before
            before, prev = prev, t
            if not child.is_named:
                continue
            if (
                t == "token_tree"
                and (prev_t == "#" or (prev_t == "!" and before_t == "#"))
                and self.attribute_tokens(child)
            ):
                continue  # ``#[cfg(unix)]`` inside a macro's input: an attribute, not calls
            if t == "attribute_item":
                pending.append(child)
                continue
            if t in _COMMENTS:
                if child.child_by_field_name("outer") is not None:
                    pending.append(child)
                elif pending and child.child_by_field_name("inner") is None:
                    # A plain comment between an item's docs/attributes and the item.
                    pending.append(child)
                else:
                    pending = []
                continue
            if t in _ITEM_KINDS and (t != "macro_invocation" or item_level):
                entries.append((child, scope, tuple(pending), True))
            elif t not in _NO_DESCEND and (child.child_count or t == "type_identifier"):
                entries.append((child, scope, (), False))
            pending = []
        entries.reverse()
        stack.extend(entries)

    def attribute_tokens(self, node: Node) -> bool:
        """Whether a token tree after ``#`` or ``#!`` is an attribute's ``[...]``."""
        return self.data[node.start_byte : node.start_byte + 1] == b"["

    def visit(self, node: Node, scope: _Scope, stack: list[_Entry]) -> None:
        """Record what a non-item node says (import, call, type) and queue its children."""
        t = node.type
        if t == "use_declaration":
            self.add_import(node)
            return
        col = scope.collector
        if col is not None:
            if t == "type_identifier":
                if node.start_byte != col.name_start:
                    self.add_type(col, scope, node, self.text(node))
                return
            if t == "call_expression":
                name_node = self.call_name(node.child_by_field_name("function"))
                if name_node is not None:
                    _add_call(col.calls, self.text(name_node), name_node.start_byte)
            elif t == "macro_invocation":
                name = self.macro_name(node)
                if name:
                    _add_call(col.calls, name, node.start_byte)
            elif t in ("token_tree", "token_repetition"):
                self.scan_tokens(node, col)
            elif t in ("scoped_identifier", "scoped_type_identifier"):
                path = node.child_by_field_name("path")
                if path is not None and path.type == "identifier":
                    word = self.text(path)
                    if word[:1].isupper():
                        self.add_type(col, scope, path, word)
        if node.child_count:
            self.push_children(stack, node, scope)

    def add_type(self, col: _Item, scope: _Scope, node: Node, name: str) -> None:
        """Record a type name, skipping generic parameters in scope."""
        if name in ("_", "Self") or name in scope.generics:
            return
        col.types[name] = None
        if node.start_byte < col.body_start:
            col.sig_types[name] = None

    def add_import(self, node: Node) -> None:
        """Record the path of a ``use`` declaration."""
        arg = node.child_by_field_name("argument")
        if arg is None:
            return
        path = _normalise_use(self.text(arg))
        if path:
            self.imports[path] = None

    def call_name(self, fn: Node | None) -> Node | None:
        """Name node called by a call expression's function part (``a::b::foo`` -> ``foo``)."""
        for _ in range(4):
            if fn is None:
                return None
            t = fn.type
            if t == "identifier":
                return fn
            if t == "scoped_identifier":
                return fn.child_by_field_name("name")
            if t == "field_expression":
                field = fn.child_by_field_name("field")
                return field if field is not None and field.type == "field_identifier" else None
            if t != "generic_function":
                return None
            fn = fn.child_by_field_name("function")
        return None

    def macro_name(self, node: Node) -> str:
        """``name!`` of a macro invocation (last path segment)."""
        mac = node.child_by_field_name("macro")
        if mac is None:
            return ""
        if mac.type == "scoped_identifier":
            mac = mac.child_by_field_name("name")
            if mac is None:
                return ""
        return self.text(mac) + "!"

    def scan_tokens(self, node: Node, col: _Item) -> None:
        """Find calls in a macro's token tree: ``name(`` and ``name!(`` patterns."""
        kids = node.children
        last = len(kids) - 1
        for i, kid in enumerate(kids):
            if kid.type != "identifier" or i == last:
                continue
            nxt = kids[i + 1]
            if nxt.type == "token_tree":
                is_paren = self.data[nxt.start_byte : nxt.start_byte + 1] == b"("
                if is_paren and not (i and kids[i - 1].type == "fn"):
                    _add_call(col.calls, self.text(kid), kid.start_byte)
            elif nxt.type == "!" and i + 1 < last and kids[i + 2].type == "token_tree":
                word = self.text(kid)
                if word != "macro_rules":
                    _add_call(col.calls, word + "!", kid.start_byte)

    # ----------------------------------------------------------------- items

    def enter(self, node: Node, scope: _Scope, prefix: tuple[Node, ...]) -> _Item | None:
        """Start an item; None when it has no name to index it under."""
        t = node.type
        kind = _ITEM_KINDS[t]
        self_type = ""
        if t == "impl_item":
            type_node = node.child_by_field_name("type")
            if type_node is None:
                return None
            self_type = self.base_type_name(type_node)
            name = self.impl_name(node, type_node)
        elif t == "macro_invocation":
            name = self.macro_name(node)
        else:
            name_node = node.child_by_field_name("name")
            if name_node is None:
                return None
            name = self.text(name_node)
        if not name or (t == "mod_item" and node.child_by_field_name("body") is None):
            return None
        if kind == "function" and scope.parent:
            kind = "method"
        module = scope.module + (name,) if kind == "mod" else scope.module
        item = _Item(
            node, kind, name, scope.parent, module, scope.qual + (name,), prefix, scope.collector
        )
        name_node = node.child_by_field_name("name")
        if name_node is not None:
            item.name_start = name_node.start_byte
        item.self_type = self_type
        body = node.child_by_field_name("value" if t in ("const_item", "static_item") else "body")
        if body is not None:
            item.body_start = body.start_byte
        item.signature = self.signature(node, t, name, body)
        if scope.collector is not None and scope.collector.kind in _SUMMARY_KINDS:
            scope.collector.members.append(item)
        if t == "macro_invocation":
            item.calls[name] = node.start_byte
        self.items.append(item)
        return item

    def inner_scope(self, item: _Item, node: Node, scope: _Scope) -> _Scope:
        """Scope for the children of an item."""
        generics = scope.generics
        params = node.child_by_field_name("type_parameters")
        if params is not None:
            own = set()
            for param in params.named_children:
                pname = param.child_by_field_name("name")
                if pname is not None:
                    own.add(self.text(pname))
            if own:
                generics = generics | own
        kind = item.kind
        if kind == "impl":
            self_type = item.self_type
            return _Scope(scope.module, scope.qual + (self_type,), self_type, item, generics)
        if kind == "trait":
            return _Scope(scope.module, item.qual, item.name, item, generics)
        if kind in ("function", "method"):
            return _Scope(scope.module, item.qual, "", item, generics)
        if kind == "mod":
            return _Scope(item.module, item.qual, "", item, frozenset())
        return _Scope(scope.module, scope.qual, "", item, generics)

    def leave(self, item: _Item) -> None:
        """Close an item: build a summary (impl, trait, mod), hand names to the enclosing item."""
        if item.kind in _SUMMARY_KINDS:
            self.summarise(item)
        outer = item.outer
        if outer is None:
            return
        if outer.kind in _SUMMARY_KINDS:
            # A summary chunk shows signatures only, so it takes only their types.
            outer.types.update(item.sig_types)
        else:
            calls = outer.calls
            for name, pos in item.calls.items():
                _add_call(calls, name, pos)
            outer.types.update(item.types)

    def summarise(self, item: _Item) -> None:
        """Replace an impl's, trait's or mod's code by its header and its members' signatures.

        Their members are chunks of their own: repeating their full text here would
        embed every method twice and every ``mod tests`` twice.
        """
        node = item.node
        start = item.prefix[0].start_byte if item.prefix else node.start_byte
        body = node.child_by_field_name("body")
        if body is None:
            item.summary = self.span(start, node.end_byte)
            return
        # The header as written, so a where-clause keeps its lines and ``{`` its place.
        lines = [self.span(start, body.start_byte) + "{"]
        if item.kind == "mod":
            inner, _ = self.leading_inner(body)
            lines.extend("    " + self.text(n).strip() for n in inner)
        lines.extend("    " + m.signature for m in item.members)
        lines.append("}")
        item.summary = "\n".join(lines)

    def signature(self, node: Node, t: str, name: str, body: Node | None) -> str:
        """Item text up to its body, whitespace collapsed."""
        if t == "macro_definition":
            return "macro_rules! " + name
        if t == "macro_invocation":
            return name
        if body is not None and (body.type in _BRACE_BODIES or t in ("const_item", "static_item")):
            text = self.span(node.start_byte, body.start_byte).rstrip()
            if t in ("const_item", "static_item") and text.endswith("="):
                text = text[:-1]
        else:
            text = self.text(node).rstrip()
            text = text.removesuffix(";")
        return " ".join(text.split())

    def base_type_name(self, node: Node) -> str:
        """Name of an impl's self type without generics, references or path (``BinaryHeap``)."""
        for _ in range(16):
            t = node.type
            if t in ("generic_type", "reference_type", "pointer_type"):
                inner = node.child_by_field_name("type")
                if inner is None:
                    break
                node = inner
            elif t == "scoped_type_identifier":
                name = node.child_by_field_name("name")
                return self.text(name) if name is not None else self.text(node)
            else:
                break
        return self.stripped_type(node)

    def stripped_type(self, node: Node) -> str:
        """Type text without generic arguments and lifetimes, whitespace collapsed."""
        cuts: list[tuple[int, int]] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type in ("type_arguments", "lifetime"):
                cuts.append((n.start_byte, n.end_byte))
            elif n.child_count:
                stack.extend(n.children)
        cuts.sort()
        pieces: list[str] = []
        pos = node.start_byte
        for start, end in cuts:
            if start >= pos:
                pieces.append(self.span(pos, start))
                pos = end
        pieces.append(self.span(pos, node.end_byte))
        text = " ".join("".join(pieces).split())
        return re.sub(r"&\s+", "&", text)

    def impl_name(self, node: Node, type_node: Node) -> str:
        """Short name of an impl block: ``impl Trait for Type`` or ``impl Type``."""
        trait = node.child_by_field_name("trait")
        self_type = self.stripped_type(type_node)
        if trait is None:
            return "impl " + self_type
        negative = any(c.type == "!" for c in node.children)
        return f"impl {'!' if negative else ''}{self.stripped_type(trait)} for {self_type}"

    # ----------------------------------------------------------------- docs

    def docs_and_attributes(self, prefix: Sequence[Node]) -> tuple[list[str], list[str]]:
        """Doc lines and other attributes from the comments/attributes before an item."""
        docs: list[str] = []
        attributes: list[str] = []
        for node in prefix:
            if node.type in _COMMENTS:
                docs.extend(self.comment_doc(node))
                continue
            doc = self.doc_attribute(node)
            if doc is None:
                if node.type in ("attribute_item", "inner_attribute_item"):
                    attributes.append(self.text(node))
            else:
                docs.extend(doc.split("\n"))
        return docs, attributes

    def comment_doc(self, node: Node) -> list[str]:
        """Lines of a doc comment (``///``, ``//!``, ``/** */``, ``/*! */``), markers stripped."""
        is_doc = node.child_by_field_name("outer") or node.child_by_field_name("inner")
        if is_doc is None:
            return []  # a plain comment between docs and item is not documentation
        doc = node.child_by_field_name("doc")
        if doc is None:
            return [] if node.type == "block_comment" else [""]
        text = self.text(doc)
        if node.type == "line_comment":
            line = text.rstrip("\r\n")
            return [line.removeprefix(" ")]
        lines = []
        for line in text.split("\n"):
            stripped = line.lstrip()
            if stripped.startswith("*"):
                line = stripped[2:] if stripped.startswith("* ") else stripped[1:]
            lines.append(line.rstrip())
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return textwrap.dedent("\n".join(lines)).split("\n") if lines else []

    def doc_attribute(self, node: Node) -> str | None:
        """Text of a ``#[doc = "..."]`` / ``#![doc = "..."]`` attribute, else None."""
        if node.type not in ("attribute_item", "inner_attribute_item"):
            return None
        attr = next((c for c in node.named_children if c.type == "attribute"), None)
        if attr is None or attr.child_count == 0:
            return None
        head = attr.children[0]
        value = attr.child_by_field_name("value")
        if head.type != "identifier" or self.text(head) != "doc" or value is None:
            return None
        if value.type == "raw_string_literal":
            content = next((c for c in value.named_children if c.type == "string_content"), None)
            return self.text(content) if content is not None else ""
        if value.type == "string_literal":
            raw = self.text(value)
            return _unescape(raw[1:-1] if len(raw) >= 2 else "")
        return None

    def leading_inner(self, node: Node) -> tuple[list[Node], bool]:
        """Inner docs/attributes at the start of a file or mod body, and whether any is a doc."""
        found: list[Node] = []
        has_doc = False
        for child in node.children:
            t = child.type
            if not child.is_named or t == "shebang":
                continue
            if t in _COMMENTS:
                if child.child_by_field_name("inner") is not None:
                    found.append(child)
                    has_doc = True
                continue
            if t != "inner_attribute_item":
                break
            found.append(child)
            has_doc = has_doc or self.doc_attribute(child) is not None
        return found, has_doc


# --------------------------------------------------------------------------- chunk_source


def rust_parser() -> tree_sitter.Parser:
    """This thread's Rust parser (shared with :mod:`rcm_dask.complexity`)."""
    parser: tree_sitter.Parser | None = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = tree_sitter.Parser(_LANGUAGE)
        _LOCAL.parser = parser
    return parser


def _add_call(calls: dict[str, int], name: str, pos: int) -> None:
    """Record a call at its earliest position."""
    if calls.get(name, pos) >= pos:
        calls[name] = pos


def _end_line(node: Node) -> int:
    """1-based line of a node's last character."""
    row, column = node.end_point
    if column == 0 and node.end_byte > node.start_byte:
        return int(row)
    return int(row) + 1


def _unescape(text: str) -> str:
    """Decode the escapes of a Rust string literal's body."""

    def one(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] in "\r\n":
            return ""
        if esc[0] == "u" and len(esc) > 1:
            code = int(esc[2:-1].replace("_", "") or "0", 16)
            # Rust rejects these too; keeping the escape avoids a lone surrogate in docs.
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return match.group(0)
            return chr(code)
        if esc[0] == "x" and len(esc) == 3:
            return chr(int(esc[1:], 16))
        return _SIMPLE_ESCAPES.get(esc, match.group(0))

    return _ESCAPE.sub(one, text)


def _normalise_use(text: str) -> str:
    """``use`` path with comments dropped and whitespace tidied."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = _WS.sub(" ", text).strip()
    text = re.sub(r"\{\s+", "{", text)
    text = re.sub(r"\s*,?\s*\}", "}", text)
    return re.sub(r"\s*::\s*", "::", text)


def _join_docs(lines: list[str]) -> str:
    """Doc lines as one string, outer blank lines dropped."""
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def chunk_source(source: SourceFile, *, file_record: bool = True) -> list[Chunk]:
    """Parse one Rust file into chunks, one per item, in source order.

    Parameters
    ----------
    source : SourceFile
        The decoded file. Only ``path`` and ``text`` are read.
    file_record : bool
        Also make the file's own record, first (see below).

    Returns
    -------
    list of Chunk
        Free functions (``function``); methods and associated functions of ``impl`` and
        ``trait`` blocks (``method``, ``parent`` = self type or trait) and their
        associated consts and types (``const``/``type``); structs, enums, unions,
        traits, ``impl`` blocks and inline ``mod`` blocks as a summary (header, inner
        docs of a mod, member signatures, ``}``: members are chunks of their own); consts, statics, type aliases; ``macro_rules!``
        definitions and item-level macro invocations (``macro``, named ``name!``). With
        ``file_record``, the file gets a ``mod`` chunk for itself, first, spanning the
        file: its inner docs (``//!``, ``/*! */``, ``#![doc = ..]``) and an outline of
        what it declares at its top level (item signatures, an impl's or trait's member
        names, ``pub use`` re-exports, ``mod name;``), so that a question about a module
        as a whole has one record to match (a file with neither gets none). Items nested at any syntactic depth are
        included (in blocks, closures, consts, ...); items nested in a function get the
        function's name in their ``qualname``. Items nested more than 64 items deep
        stay in their ancestor's code (see the module notes).
        ``mod`` chunks carry their own module path in ``module``.

    Notes
    -----
    Never raises for any text: tree-sitter recovers from syntax errors, the items it
    still recognises are kept, and ``has_error`` flags those that contain ERROR or
    MISSING nodes. The tree is walked with an explicit stack, so nesting depth is
    bounded by memory only, and the work is linear in the size of the tree.

    Examples
    --------
    >>> import hashlib
    >>> text = "/// Adds.\\npub fn add(a: u8, b: u8) -> u8 { a + b }\\n"
    >>> src = SourceFile("src/math.rs", len(text), None,
    ...                  hashlib.sha256(text.encode()).hexdigest(), text)
    >>> [(c.kind, c.qualname, c.signature, c.docs) for c in chunk_source(src)]
    [('function', 'math::add', 'pub fn add(a: u8, b: u8) -> u8', 'Adds.')]
    """
    try:
        data = source.text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: cannot come from a real file
        data = source.text.encode("utf-8", "replace")
    tree = rust_parser().parse(data)
    root = tree.root_node
    walker = _Walker(data, module_path_for(source.path))
    walker.run(root)
    imports = tuple(walker.imports)
    path = source.path

    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}

    def add(
        kind: ChunkKind,
        name: str,
        qualname: str,
        module: str,
        start: Node,
        end: Node,
        *,
        parent: str = "",
        visibility: str = "",
        signature: str = "",
        docs: str = "",
        attributes: tuple[str, ...] = (),
        calls: tuple[str, ...] = (),
        type_refs: tuple[str, ...] = (),
        has_error: bool = False,
        code: str | None = None,
    ) -> None:
        key = (kind, qualname)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        chunk_id = make_chunk_id(path, kind, qualname, occurrence)
        chunks.append(
            Chunk(
                id=chunk_id,
                path=path,
                module=module,
                name=name,
                qualname=qualname,
                kind=kind,
                parent=parent,
                visibility=visibility,
                signature=signature,
                docs=docs,
                attributes=attributes,
                imports=imports,
                calls=calls,
                type_refs=type_refs,
                start_line=int(start.start_point[0]) + 1,
                end_line=_end_line(end),
                start_byte=start.start_byte,
                end_byte=end.end_byte,
                has_error=has_error,
                code=walker.span(start.start_byte, end.end_byte) if code is None else code,
                part=1,
                parts=1,
                symbol_id=chunk_id,
                occurrence=occurrence,
            )
        )

    inner, has_doc = walker.leading_inner(root)
    outline = _file_outline(walker, root) if file_record else []
    if file_record and (has_doc or outline):
        # The file's own record: its inner docs and what it declares and re-exports, so
        # that a question about a module as a whole has one record to match.
        file_module = walker.file_module
        docs, attributes = walker.docs_and_attributes(inner)
        name = file_module.rsplit("::", 1)[-1] if file_module else "crate"
        head = [walker.text(n).rstrip() for n in inner]
        add(
            "mod",
            name,
            file_module or "crate",
            file_module,
            inner[0] if inner else root,
            root,
            docs=_join_docs(docs),
            attributes=tuple(attributes),
            has_error=any(n.has_error for n in inner),
            code="\n".join(head + outline),
        )

    for item in walker.items:
        node = item.node
        docs, attributes = walker.docs_and_attributes(item.prefix)
        if item.kind == "mod":
            body = node.child_by_field_name("body")
            if body is not None:
                mod_inner, _ = walker.leading_inner(body)
                docs.extend(walker.docs_and_attributes(mod_inner)[0])
        visibility = next(
            (walker.text(c) for c in node.children if c.type == "visibility_modifier"), ""
        )
        add(
            item.kind,
            item.name,
            "::".join(item.qual),
            "::".join(item.module),
            item.prefix[0] if item.prefix else node,
            node,
            parent=item.parent,
            visibility=visibility,
            signature=item.signature,
            docs=_join_docs(docs),
            attributes=tuple(attributes),
            calls=tuple(sorted(item.calls, key=item.calls.__getitem__)),
            type_refs=tuple(item.types),
            has_error=node.has_error,
            code=item.summary if item.kind in _SUMMARY_KINDS else None,
        )
    return chunks


def _is_public(node: Node) -> bool:
    """Whether an item or ``use`` has a visibility modifier (``pub``, ``pub(crate)``...)."""
    return any(c.type == "visibility_modifier" for c in node.children)


def _file_outline(walker: _Walker, root: Node) -> list[str]:
    """What a file declares at its top level, one line each, in source order.

    Items by their signature (``pub struct Channel<T>``; an impl or trait with its members'
    names: ``impl<T> Drop for Channel<T> { drop }``) and ``mod name;`` declarations, at most
    :data:`_OUTLINE_MAX` lines of at most :data:`_OUTLINE_WIDTH` characters; then every
    ``pub use`` re-export whole, also those of a top-level ``pub mod`` block (whitespace
    folded; at most :data:`_OUTLINE_MAX` of them),
    since a module root is often mostly re-exports, and a symbol lookup looks for them here.
    """
    found: list[tuple[int, str]] = []
    reexports: list[str] = []
    for item in walker.items:
        if item.outer is None and item.kind != "macro" and item.signature:
            line = item.signature
            if item.kind in ("impl", "trait") and item.members:
                line += " { " + ", ".join(m.name for m in item.members) + " }"
            found.append((item.node.start_byte, line))
        elif item.outer is None and item.kind == "macro":
            found.append((item.node.start_byte, f"macro {item.name}"))
    for child in root.children:
        t = child.type
        if t == "use_declaration" and _is_public(child):
            reexports.append(_WS.sub(" ", walker.text(child)).strip())
        elif t == "mod_item":
            body = child.child_by_field_name("body")
            if body is None:
                found.append((child.start_byte, walker.text(child)))
            elif _is_public(child):
                # ``pub mod internal { pub use ... }``: re-exports one level down
                name = child.child_by_field_name("name")
                prefix = f"mod {walker.text(name)}: " if name is not None else ""
                reexports.extend(
                    prefix + _WS.sub(" ", walker.text(u)).strip()
                    for u in body.children
                    if u.type == "use_declaration" and _is_public(u)
                )
    found.sort(key=lambda pair: pair[0])
    lines = []
    for _, text in found:
        line = _WS.sub(" ", text).strip()
        if len(line) > _OUTLINE_WIDTH:
            line = line[: _OUTLINE_WIDTH - 3].rstrip() + "..."
        lines.append(line)
    if len(lines) > _OUTLINE_MAX:
        lines = lines[:_OUTLINE_MAX] + [f"// and {len(lines) - _OUTLINE_MAX} more items"]
    if len(reexports) > _OUTLINE_MAX:
        more = len(reexports) - _OUTLINE_MAX
        reexports = reexports[:_OUTLINE_MAX] + [f"// and {more} more re-exports"]
    return lines + reexports
