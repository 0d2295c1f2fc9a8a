"""The two stores a chunk is written to: a Tantivy BM25 index and a Qdrant vector index.

Both keep the same small JSON payload per chunk (:func:`chunk_payload`), so a search
hit from either store can be turned into a :class:`~rcm_dask.records.Hit` without
going back to the source file. The payload is JSON-encoded once per chunk
(:func:`encode_payloads`): Tantivy stores those bytes, and a Qdrant point keeps the same
text in one field (:func:`packed_payload`) beside the keyword-indexed ``path`` and
``kind``, since handing Qdrant a dict of seventeen fields costs several times more than
one string. Points written before (format 2) carry the fields themselves;
:func:`unpack_payload` reads both. Both answer with :class:`StoreHit` lists, best first;
fusing the two rankings is :mod:`rcm_dask.search`'s job.

::

    Bm25Store                       bm25.py     Tantivy, words and identifiers
    FileRecords                     file_records.py  whole files, kept by Bm25Store
    VectorStore (Protocol)          vectors.py  what every vector backend offers
    ├── EdgeVectorStore                         Qdrant embedded in-process (default)
    └── QdrantClientVectorStore                 a Qdrant server (or qdrant-client local mode)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import Chunk


@dataclass(frozen=True, slots=True)
class StoreHit:
    """One result of one store, before fusion."""

    id: str
    """Chunk id (a UUID string)."""
    score: float
    """The store's own score: BM25 for :class:`Bm25Store`, cosine similarity for vectors."""
    payload: dict[str, Any]
    """The stored :func:`chunk_payload` of the chunk."""


PAYLOAD_FIELDS: tuple[str, ...] = (
    "id",
    "path",
    "module",
    "name",
    "qualname",
    "kind",
    "parent",
    "visibility",
    "signature",
    "docs",
    "start_line",
    "end_line",
    "part",
    "parts",
    "symbol_id",
    "has_error",
    "code",
)
"""Chunk fields kept in both stores' payloads, in this order."""


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The JSON-able fields of a chunk that both stores keep for building search hits.

    Parameters
    ----------
    chunk
        The chunk to describe.

    Returns
    -------
    dict
        One entry per name in :data:`PAYLOAD_FIELDS`; values are ``str``, ``int``
        or ``bool`` only, so the dict survives a JSON round trip unchanged.

    Examples
    --------
    >>> from rcm_dask.records import Chunk
    >>> c = Chunk(id="0", path="src/lib.rs", module="", name="f", qualname="f",
    ...           kind="function", parent="", visibility="pub", signature="pub fn f()",
    ...           docs="", attributes=(), imports=(), calls=(), type_refs=(),
    ...           start_line=1, end_line=1, start_byte=0, end_byte=12,
    ...           has_error=False, code="pub fn f() {}")
    >>> chunk_payload(c)["qualname"], chunk_payload(c)["parts"]
    ('f', 1)
    """
    return {name: getattr(chunk, name) for name in PAYLOAD_FIELDS}


PACKED_FIELD = "chunk"
"""The field of a Qdrant point's payload that holds :func:`chunk_payload` as JSON text."""


def encode_payloads(chunks: Sequence[Chunk]) -> list[tuple[dict[str, Any], str]]:
    """Each chunk's :func:`chunk_payload` and its JSON text, as both stores keep it.

    The text is compact UTF-8 JSON in :data:`PAYLOAD_FIELDS` order: the bytes a BM25
    document stores and the :data:`PACKED_FIELD` a vector point carries.

    Parameters
    ----------
    chunks
        The chunks of one batch.

    Returns
    -------
    list of (dict, str)
        One pair per chunk, in order.
    """
    dumps = _ENCODER.encode
    out = []
    for chunk in chunks:
        payload = {name: getattr(chunk, name) for name in PAYLOAD_FIELDS}
        out.append((payload, dumps(payload)))
    return out


def packed_payload(payload: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A Qdrant point's payload: the keyword-indexed fields, and the whole payload as text."""
    return {"path": payload["path"], "kind": payload["kind"], PACKED_FIELD: text}


def unpack_payload(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :func:`chunk_payload` of a Qdrant point, packed (:func:`packed_payload`) or, as
    indexes of format 2 wrote it, spelled out field by field."""
    if not stored:
        return {}
    text = stored.get(PACKED_FIELD)
    if isinstance(text, str):
        payload: dict[str, Any] = json.loads(text)
        return payload
    return dict(stored)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


# The backends import StoreHit and chunk_payload from this package, so they are
# imported only once both are defined.
from .bm25 import Bm25Store, split_identifier_words
from .vectors import (
    EdgeVectorStore,
    QdrantClientVectorStore,
    VectorStore,
    open_vector_store,
)

__all__ = [
    "PACKED_FIELD",
    "Bm25Store",
    "EdgeVectorStore",
    "QdrantClientVectorStore",
    "StoreHit",
    "VectorStore",
    "chunk_payload",
    "encode_payloads",
    "open_vector_store",
    "packed_payload",
    "split_identifier_words",
    "unpack_payload",
]
