"""Cyclomatic complexity and line counts of one Rust source, from one tree-sitter parse.

The rule is the one :meth:`rcm_dask.intel.CodeIntel.complexity` documents;
:func:`measure_source` applies it to a file's bytes and needs no index (CodeIntel then
names each function from the symbol tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .chunking import rust_parser

__all__ = ["SourceMeasure", "measure_source"]


@dataclass(frozen=True, slots=True)
class SourceMeasure:
    """Line counts and per-function complexity of one source."""

    lines_total: int
    """Lines of the source (a final newline ends the last line, it starts none)."""
    lines_code: int
    """Lines on which any token other than a comment lies."""
    lines_comment: int
    """Lines on which only comments lie."""
    lines_blank: int
    """Lines with nothing but white space."""
    functions: tuple[tuple[str, int, int, int], ...]
    """(name, start line, end line, complexity) of each function with a body."""


def measure_source(data: bytes) -> SourceMeasure:
    r"""Line counts and the complexity of each function of a Rust source.

    Parameters
    ----------
    data
        The file's bytes (a UTF-8 byte order mark is skipped).

    Returns
    -------
    SourceMeasure

    Examples
    --------
    >>> m = measure_source(b"// hi\nfn f(a: bool) -> u8 {\n    if a { 1 } else { 2 }\n}\n")
    >>> (m.lines_total, m.lines_code, m.lines_comment, m.lines_blank), m.functions
    ((4, 3, 1, 0), (('f', 2, 4, 2),))
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    tree = rust_parser().parse(data)
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    marks = bytearray(len(lines) + 1)  # 0 nothing, 1 comment, 2 code
    functions = _walk_complexity(tree.root_node, marks)
    code = sum(1 for m in marks[: len(lines)] if m == 2)
    comment = sum(1 for m in marks[: len(lines)] if m == 1)
    blank = sum(1 for i, ln in enumerate(lines) if marks[i] == 0 and not ln.strip())
    code += len(lines) - code - comment - blank  # stray text tree-sitter skipped
    return SourceMeasure(len(lines), code, comment, blank, tuple(functions))


_LOOPS = frozenset({"while_expression", "for_expression", "loop_expression", "if_expression"})
_ATOMIC = frozenset({"string_literal", "raw_string_literal", "char_literal"})


def _walk_complexity(root: Any, marks: bytearray) -> list[tuple[str, int, int, int]]:
    """Mark code/comment lines; return (name, start, end, complexity) per function body.

    One iterative walk (no recursion limit for deep nesting); each node is charged to the
    innermost function that encloses it (see :meth:`rcm_dask.intel.CodeIntel.complexity`).
    """
    functions: list[list[Any]] = []
    stack: list[tuple[Any, int]] = [(root, -1)]
    last = len(marks) - 1
    while stack:
        node, fn = stack.pop()
        t = node.type
        comment = t in ("line_comment", "block_comment")
        if comment or node.child_count == 0 or t in _ATOMIC:
            end = node.end_point[0]
            if node.end_point[1] == 0 and end > node.start_point[0]:
                end -= 1  # a line comment ends after its newline: not on the next line
            for row in range(node.start_point[0], min(end, last) + 1):
                if not comment:
                    marks[row] = 2
                elif marks[row] == 0:
                    marks[row] = 1
            continue
        if t == "function_item" and node.child_by_field_name("body") is not None:
            name_node = node.child_by_field_name("name")
            name = name_node.text.decode("utf-8", "replace") if name_node is not None else ""
            fn = len(functions)
            functions.append([name, node.start_point[0] + 1, node.end_point[0] + 1, 1])
        elif fn >= 0:
            add = 0
            if t in _LOOPS or t == "try_expression":
                add = 1
            elif t == "match_expression":
                body = node.child_by_field_name("body")
                if body is not None:
                    arms = sum(1 for c in body.named_children if c.type == "match_arm")
                    add = max(0, arms - 1)
            elif t == "match_pattern":
                add = 1 if node.child_by_field_name("condition") is not None else 0
            elif t == "binary_expression":
                op = node.child_by_field_name("operator")
                add = 1 if op is not None and op.type in ("&&", "||") else 0
            elif t == "let_declaration":
                add = 1 if node.child_by_field_name("alternative") is not None else 0
            functions[fn][3] += add
        stack.extend((child, fn) for child in reversed(node.children))
    return [(f[0], f[1], f[2], f[3]) for f in functions]
