"""Split chunks that are longer than the model's token budget into parts, losing nothing.

:func:`split_chunks` cuts an item whose embedded text
(:func:`~rcm_dask.embed_text.format_for_embedding`) is over ``max_tokens`` into parts at
line boundaries (a line too long alone is halved), each within the budget with its
header, their code joining back into the item's. Only the tokenizer's counter is needed,
never the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .chunking import make_chunk_id
from .embed_text import code_lines, embedded_lines, format_for_embedding
from .embedding import CHARS_PER_TOKEN_BOUND
from .records import Chunk

TokenCounter = Callable[[Sequence[str]], list[int]]


def _count(count_tokens: TokenCounter, texts: Sequence[str]) -> list[int]:
    """Call the counter once and check that it answered once per text."""
    if not texts:
        return []
    counts = [int(n) for n in count_tokens(texts)]
    if len(counts) != len(texts):
        raise ValueError(f"count_tokens returned {len(counts)} counts for {len(texts)} texts")
    return counts


def _cut_point(text: str, target: int) -> int:
    """Index near ``target`` to cut ``text`` at, after whitespace when some is close."""
    target = min(max(target, 1), len(text) - 1)
    space = max(
        text.rfind(" ", target - target // 4, target),
        text.rfind("\t", target - target // 4, target),
    )
    return space + 1 if space > 0 else target


def _halve(text: str) -> list[str]:
    """Split a text in two: at the line end nearest the middle, else inside the line."""
    middle = len(text) // 2
    before = text.rfind("\n", 0, middle)
    after = text.find("\n", middle, len(text) - 1)
    ends = [i + 1 for i in (before, after) if 0 <= i < len(text) - 1]
    cut = min(ends, key=lambda i: abs(i - middle)) if ends else _cut_point(text, middle)
    return [text[:cut], text[cut:]]


def _measure(
    lines: list[str],
    costs: list[int],
    budget: int,
    count_tokens: TokenCounter,
    overhead: int,
) -> list[tuple[str, int]]:
    """Lines with their token costs, over-long lines cut into fragments that fit ``budget``."""
    pieces: list[tuple[str, int | None]] = []
    for line, cost in zip(lines, costs):
        if cost <= budget:
            pieces.append((line, cost))
            continue
        # First cut by the line's own characters-per-token, a little under budget...
        size = max(1, int(budget * len(line) / max(cost, 1) * 0.9))
        rest = line
        while len(rest) > size:
            cut = _cut_point(rest, size)
            pieces.append((rest[:cut], None))
            rest = rest[cut:]
        pieces.append((rest, None))
    # ...then count every new fragment of every line in one call, halving those still over.
    while True:
        todo = [piece for piece, n in pieces if n is None]
        if not todo:
            break
        counts = iter(_count(count_tokens, todo))
        measured: list[tuple[str, int | None]] = []
        for piece, n in pieces:
            if n is None:
                n = max(0, next(counts) - overhead)
                if n > budget and len(piece) > 1:
                    measured.extend((half, None) for half in _halve(piece))
                    continue
            measured.append((piece, n))
        pieces = measured
    return [(piece, n or 0) for piece, n in pieces]


def _part_ids(chunk: Chunk) -> Callable[[int], str]:
    """Id maker for the parts of a chunk."""
    return lambda part: make_chunk_id(
        chunk.path, chunk.kind, chunk.qualname, chunk.occurrence, part
    )


def _build_parts(chunk: Chunk, texts: list[str], part_id: Callable[[int], str]) -> list[Chunk]:
    """Part chunks of ``chunk`` holding ``texts``, with their own ranges when they map to source."""
    code = chunk.code
    maps_to_source = chunk.kind != "impl" and len(code.encode("utf-8", "surrogatepass")) == (
        chunk.end_byte - chunk.start_byte
    )
    parts: list[Chunk] = []
    line = chunk.start_line
    byte = chunk.start_byte
    n = len(texts)
    symbol_id = chunk.symbol_id or chunk.id
    for i, text in enumerate(texts, start=1):
        if maps_to_source:
            newlines = text.count("\n")
            size = len(text.encode("utf-8", "surrogatepass"))
            start_line, start_byte = line, byte
            end_line = line + newlines - (1 if text.endswith("\n") else 0)
            line += newlines
            byte += size
            end_byte = byte
        else:
            start_line, end_line = chunk.start_line, chunk.end_line
            start_byte, end_byte = chunk.start_byte, chunk.end_byte
        parts.append(
            replace(
                chunk,
                id=part_id(i),
                code=text,
                part=i,
                parts=n,
                symbol_id=symbol_id,
                start_line=start_line,
                end_line=end_line,
                start_byte=start_byte,
                end_byte=end_byte,
            )
        )
    return parts


MAX_SPLIT_CHARS = 128 * 1024
"""An item's code past this many characters is not cut into further parts: it rides
whole in the last part (BM25 indexes all of it; the model embeds that part's start).
A 5 MB generated table then makes about 60 parts instead of about 9,000, in well
under a second instead of 20 s of token counting and minutes of embedding."""


def _split_chunk(chunk: Chunk, count_tokens: TokenCounter, max_tokens: int) -> list[Chunk]:
    """Split one over-budget chunk into parts that each fit ``max_tokens`` (but see
    :data:`MAX_SPLIT_CHARS`)."""
    # Header cost is measured on a part with wide numbers, so real parts are not larger.
    probe = replace(chunk, code="", part=999, parts=999)
    code, tail = chunk.code, ""
    if len(code) > MAX_SPLIT_CHARS:
        code, tail = code[:MAX_SPLIT_CHARS], code[MAX_SPLIT_CHARS:]
    lines = code_lines(code)
    kept = embedded_lines(lines)
    counted = [line if k else "" for line, k in zip(lines, kept)]
    counts = _count(count_tokens, [format_for_embedding(probe), ""] + counted)
    header, overhead = counts[0], counts[1]
    room = max_tokens - header
    if room > 0:
        # Token counts of lines are nearly additive; the margin absorbs the difference.
        budget = max(1, room - max(2, room // 20))
    else:
        # The header alone is over: no part can fit, so keep the number of parts sane.
        budget = max(8, max_tokens // 4)
    # Lines the model does not see cost nothing: they ride along in the part before them.
    costs = [max(0, n - overhead) if k else 0 for n, k in zip(counts[2:], kept)]
    pieces = _measure(lines, costs, budget, count_tokens, overhead)

    texts: list[str] = []
    current: list[str] = []
    used = 0
    for piece, cost in pieces:
        if current and used + cost > budget:
            texts.append("".join(current))
            current, used = [], 0
        current.append(piece)
        used += cost
    if current:
        texts.append("".join(current))

    part_id = _part_ids(chunk)
    while True:
        parts = _build_parts(chunk, texts, part_id)
        if header >= max_tokens:
            break  # even an empty part is over: smaller parts would not help
        sizes = _count(count_tokens, [format_for_embedding(p) for p in parts])
        over = {i for i, n in enumerate(sizes) if n > max_tokens and len(texts[i]) > 1}
        if not over:
            break
        texts = [half for i, t in enumerate(texts) for half in (_halve(t) if i in over else [t])]
    if tail:
        texts[-1] += tail
        parts = _build_parts(chunk, texts, part_id)
    return parts


def split_chunks(
    chunks: Sequence[Chunk],
    count_tokens: Callable[[Sequence[str]], list[int]],
    max_tokens: int,
    sizes: Sequence[int] | None = None,
) -> list[Chunk]:
    """Split chunks whose embedding text is longer than the model takes.

    Parameters
    ----------
    chunks : sequence of Chunk
        Chunks as :func:`~rcm_dask.chunking.chunk_source` returns them (whole items).
    count_tokens : callable
        ``count_tokens(texts) -> list[int]``: the number of tokens the model sees for
        each text, special tokens included. It is called in batches: once for all
        chunks, then a few times per chunk that must be split.
    max_tokens : int
        Most tokens one :func:`format_for_embedding` text may take.
    sizes : sequence of int, optional
        The token count of each chunk's text when the caller has it already (the chunk
        stage tokenizes each text once, for the model and for this), counted as
        ``count_tokens`` would; ``count_tokens`` is then called only for chunks to split.

    Returns
    -------
    list of Chunk
        The chunks in order; one within budget is returned unchanged, a longer one is
        replaced by parts cut at line boundaries (inside a line only when the line
        alone is over budget). The parts' code concatenates to the original code;
        each part has its own lines and bytes (an impl summary's parts keep the whole
        impl's range, as a summary maps to no single span), ``part``/``parts``, its
        own id and the whole item's id as ``symbol_id``. A part can only exceed
        ``max_tokens`` when the header alone leaves no room for code, or when it is
        the last part of an item longer than :data:`MAX_SPLIT_CHARS`. Chunks that are
        already parts are passed through.

    Raises
    ------
    ValueError
        If ``count_tokens`` returns a different number of counts than texts.

    Examples
    --------
    >>> def words(texts):
    ...     return [len(t.split()) + 2 for t in texts]
    >>> # parts = split_chunks(chunk_source(src), words, max_tokens=40)
    """
    if not chunks:
        return []
    # Texts too long to possibly fit are over budget without counting (megabytes of a
    # generated table would take seconds to tokenize).
    if sizes is None:
        limit = max_tokens * CHARS_PER_TOKEN_BOUND
        texts = [format_for_embedding(c) for c in chunks]
        counted = _count(count_tokens, [t if len(t) <= limit else "" for t in texts])
        sizes = [max_tokens + 1 if len(t) > limit else n for t, n in zip(texts, counted)]
    elif len(sizes) != len(chunks):
        raise ValueError(f"{len(sizes)} sizes for {len(chunks)} chunks")
    out: list[Chunk] = []
    for chunk, size in zip(chunks, sizes):
        if size <= max_tokens or chunk.parts > 1 or not chunk.code:
            out.append(chunk)
        else:
            out.extend(_split_chunk(chunk, count_tokens, max_tokens))
    return out


__all__ = ["MAX_SPLIT_CHARS", "TokenCounter", "split_chunks"]
