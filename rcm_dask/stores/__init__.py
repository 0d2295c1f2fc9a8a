"""The two stores a chunk is written to: a Tantivy BM25 index and a Qdrant vector index.

Both keep the same small JSON payload per chunk (:func:`chunk_payload`), so a search
hit from either store can be turned into a :class:`~rcm_dask.records.Hit` without
going back to the source file. Both answer with :class:`StoreHit` lists, best first;
fusing the two rankings is :mod:`rcm_dask.search`'s job.

::

    Bm25Store                       bm25.py     Tantivy, words and identifiers
    VectorStore (Protocol)          vectors.py  what every vector backend offers
    ├── EdgeVectorStore                         Qdrant embedded in-process (default)
    └── QdrantClientVectorStore                 a Qdrant server (or qdrant-client local mode)
"""

from __future__ import annotations

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
    "Bm25Store",
    "EdgeVectorStore",
    "QdrantClientVectorStore",
    "StoreHit",
    "VectorStore",
    "chunk_payload",
    "open_vector_store",
    "split_identifier_words",
]
