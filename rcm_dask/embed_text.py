"""What the embedding model reads for a chunk: a short context header, then the code.

:func:`format_for_embedding` is the one place that decides the embedded text (BM25
documents, symbol records and code intelligence use the chunk's own fields).
:func:`embedding_code` keeps each doc comment's first paragraph (rustdoc's summary line)
and the code whole. A change here changes the vectors: bump
:data:`rcm_dask.chunking.CHUNKER_VERSION`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .records import Chunk
from .symbols import crate_of, expand_use

_USES_LINE_MAX = 120
"""Longest ``// uses:`` header line; longer lists end in ``, ...``."""
_DOC_LINE_MAX = 160
"""Longest doc-summary header line; longer ones end in ``...``."""


def _first_sentence(docs: str) -> str:
    """First sentence of the first non-empty doc line, at most 200 characters."""
    line = next((ln.strip() for ln in docs.split("\n") if ln.strip()), "")
    end = line.find(". ")
    if end >= 0:
        line = line[: end + 1]
    if len(line) > _DOC_LINE_MAX:
        line = line[: _DOC_LINE_MAX - 3].rstrip() + "..."
    return line


def _uses_line(imports: Sequence[str]) -> str:
    """First three imports, capped so one long ``use`` list cannot eat the token budget."""
    line = ", ".join(imports[:3])
    if len(line) > _USES_LINE_MAX:
        cut = line.rfind(", ", 0, _USES_LINE_MAX - 5)
        line = line[: cut if cut > 0 else _USES_LINE_MAX - 5] + ", ..."
    return line


_DOC_COMMENT = re.compile(r"[ \t]*//[/!](?!/)")
"""A ``///`` or ``//!`` doc-comment line (``////`` is a plain comment)."""

EMBED_DOCS = "summary"
"""How much of each doc comment the model sees: ``"summary"`` (its first paragraph,
rustdoc's summary line) or ``"full"`` (chunker 2's text). A switch for trials in one
process (``benchmarks/search_quality`` measured both), not a setting: an index records
only :data:`~rcm_dask.chunking.CHUNKER_VERSION`, which means ``"summary"``."""


def code_lines(code: str) -> list[str]:
    """Lines of code, each keeping its ``\\n`` (line numbers count ``\\n`` only, as tree-sitter does)."""
    pieces = code.split("\n")
    lines = [p + "\n" for p in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def embedded_lines(lines: Sequence[str]) -> list[bool]:
    """For each line of code: does the model see it? (BM25 sees every line.)

    With :data:`EMBED_DOCS` ``"summary"``, a run of doc-comment lines is cut to its first
    paragraph: the lines up to its first blank doc line. The rest (details, ``# Examples``
    with their code, ``# Safety`` notes...) is prose and test code that a long doc comment
    would spread over several parts of the item, each embedded under the same header.
    """
    if EMBED_DOCS == "full":
        return [True] * len(lines)
    keep: list[bool] = []
    state = 0  # 0: not in a doc run, 1: in its first paragraph, 2: past it
    for line in lines:
        match = _DOC_COMMENT.match(line)
        if match is None:
            state = 0
            keep.append(True)
            continue
        if state == 0:
            state = 1
        if state == 1 and not line[match.end() :].strip():
            state = 2  # the blank line ending the first paragraph goes too
        keep.append(state == 1)
    return keep


def embedding_code(code: str) -> str:
    """The code as the model sees it: doc comments cut to their first paragraph.

    Examples
    --------
    >>> code = "/// Adds.\\n///\\n/// # Examples\\n/// ```\\n/// add(1);\\n/// ```\\nfn add() {}"
    >>> print(embedding_code(code))
    /// Adds.
    fn add() {}
    """
    lines = code_lines(code)
    return "".join(line for line, kept in zip(lines, embedded_lines(lines)) if kept)


def location(chunk: Chunk) -> str:
    """Where a chunk lives, as few tokens as say it: ``crate::module`` (the crate is the
    folder above the path's last ``src``), else the file's path.

    Examples
    --------
    >>> from rcm_dask.testing import make_chunk
    >>> location(make_chunk("f", path="library/alloc/src/btree/map.rs", module="btree::map"))
    'alloc::btree::map'
    >>> location(make_chunk("f", path="src/lib.rs", module=""))
    'src/lib.rs'
    """
    if not chunk.module:
        return chunk.path
    crate = crate_of(chunk.path)
    return f"{crate}::{chunk.module}" if crate else chunk.module


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def used_imports(chunk: Chunk, code: str, limit: int = 3) -> list[str]:
    """The file's imports that the item names in its (embedded) code, at most ``limit``.

    A file's ``use`` list is the same for every item in it; what places one item is the
    few paths it uses. Globs (``super::*``) name nothing and are left out.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from rcm_dask.testing import make_chunk
    >>> c = replace(make_chunk("f"), imports=("std::collections::{HashMap, BTreeMap}",
    ...                                       "super::*", "core::fmt"))
    >>> used_imports(c, "fn f(m: HashMap<u8, u8>) -> fmt::Result")
    ['std::collections::HashMap', 'core::fmt']
    """
    if not chunk.imports:
        return []
    words = set(_WORD.findall(code))
    out: list[str] = []
    for text in chunk.imports:
        for path in expand_use(text):
            leaf = path.rsplit("::", 1)[-1]
            if leaf in words and path not in out:
                out.append(path)
                if len(out) >= limit:
                    return out
    return out


def format_for_embedding(chunk: Chunk) -> str:
    """Return the text an embedding model sees for a chunk: a short header, then the code.

    Parameters
    ----------
    chunk : Chunk
        A whole chunk or one part of a split one.

    Returns
    -------
    str
        Header lines (a line is left out when its value is empty)::

            // {crate::module, else the path}
            // {kind} {name}[ in {parent}]
            // doc: {first sentence of docs}   (only when the code below lacks it)
            // uses: {the file's imports the item names, <= 3}
            // part {part}/{parts}              (only when split)

        then the code as :func:`embedding_code` gives it (doc comments cut to their
        first paragraph). For an impl chunk, whose name already reads ``impl ...``, the
        kind is not repeated. The header says what places the item and is not in its
        code: chunker 4's header (path and module both, the file's first three imports
        whatever the item used, the calls and the doc summary again) was 48 % of the
        tokens embedded on rust-src ``library/``.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from rcm_dask.testing import make_chunk
    >>> c = make_chunk("f", path="src/a.rs", module="a", docs="Does f.",
    ...                code="/// Does f.\\nfn f() -> fmt::Result { g() }")
    >>> c = replace(c, imports=("std::fmt", "std::mem"), calls=("g",))
    >>> print(format_for_embedding(c))
    // a
    // function f
    // uses: std::fmt
    /// Does f.
    fn f() -> fmt::Result { g() }
    """
    code = embedding_code(chunk.code)
    lines = [f"// {location(chunk)}"]
    title = chunk.name if chunk.name.startswith(chunk.kind + " ") else f"{chunk.kind} {chunk.name}"
    lines.append(f"// {title}" + (f" in {chunk.parent}" if chunk.parent else ""))
    doc = _first_sentence(chunk.docs)
    if doc and _squeeze(doc[:_DOC_PROBE]) not in _squeeze(code):
        lines.append(f"// doc: {doc}")
    uses = used_imports(chunk, code)
    if uses:
        lines.append(f"// uses: {_uses_line(uses)}")
    if chunk.parts > 1:
        lines.append(f"// part {chunk.part}/{chunk.parts}")
    return "\n".join(lines) + "\n" + code


_DOC_PROBE = 40
"""Characters of the doc summary looked for in the code (a summary cut at
:data:`_DOC_LINE_MAX` ends in ``...``, so the whole line is never looked for)."""


def _squeeze(text: str) -> str:
    """``text`` with every run of whitespace and comment slashes as one space."""
    return " ".join(re.sub(r"//[/!]?", " ", text).split())


__all__ = [
    "EMBED_DOCS",
    "code_lines",
    "embedded_lines",
    "embedding_code",
    "format_for_embedding",
    "location",
    "used_imports",
]
