"""Fakes and helpers for rcm_dask's tests and benchmarks.

Shipped with the package so that ``tests/`` and ``benchmarks/`` share one copy (like
``dask.utils_test`` and ``distributed.utils_test``), but not part of the public API: nothing
here is in ``rcm_dask.__all__``, and any of it may change with the tests that use it. It
needs no test framework: pytest fixtures built on it live in ``tests/conftest.py``.

- Embedders: :class:`HashEmbedder` (deterministic bag of words, no model) and its variants
  :class:`FailingEmbedder`, :class:`CountingEmbedder`, :class:`SlowEmbedder`;
  :class:`NullEmbedder` (the real tokenizer, no forward pass: the dataflow's ceiling).
- Records: :func:`make_chunk`.
- A Qdrant server stand-in: :class:`LocalQdrantServer`.
- Codebases on disk: :func:`add_generated_files`, :func:`backdate`.
- Whole indexes: :func:`config_for`, :func:`index_snapshot`, :func:`index_state`,
  :func:`assert_converged`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .config import IndexConfig
from .embedding import Embedder
from .records import Chunk

# --------------------------------------------------------------------------- embedders


class HashEmbedder:
    """A fast, deterministic stand-in for :class:`rcm_dask.embedding.Embedder`.

    Words are hashed into a 64-d bag-of-words vector, L2-normalised: texts sharing
    words are close, so search behaves sensibly, with no model to load. Its vectors carry
    no meaning beyond shared words: figures made with it say nothing about a model.
    Subclasses change ``max_tokens`` or ``fingerprint`` as class attributes.
    """

    dimension = 64
    """Length of every vector."""
    max_tokens = 128
    """Token budget per chunk (as :meth:`count_tokens` counts)."""
    batch_size = 128
    """Texts per embedding batch."""
    name = "hash-embedder"
    """Model name recorded in an index's identity."""
    fingerprint = "hash-v1"
    """Model fingerprint recorded in an index's identity."""
    model_dir = Path("/nonexistent/hash-embedder")
    """No model folder: nothing is ever loaded."""

    @property
    def identity(self) -> dict[str, object]:
        """What an index must agree on to mix vectors."""
        return {
            "model": self.name,
            "model_fingerprint": self.fingerprint,
            "dimensions": self.dimension,
            "max_tokens": self.max_tokens,
        }

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word and punctuation tokens, plus two special tokens."""
        return [len(re.findall(r"\w+|[^\w\s]", t)) + 2 for t in texts]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised hashed word counts (a text without words: the first unit vector)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dimension] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
            if not norm:
                out[i, 0] = 1.0
        return out


class FailingEmbedder(HashEmbedder):
    """Fails on any batch holding a chunk whose text contains ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Raise RuntimeError if a text holds the marker, else embed as the parent does."""
        if any(self.marker in t for t in texts):
            raise RuntimeError(f"embedding failed on purpose at {self.marker!r}")
        return super().embed_batch(texts)


class CountingEmbedder(HashEmbedder):
    """Counts the texts it embeds."""

    def __init__(self) -> None:
        self.embedded = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Count the texts, then embed as the parent does."""
        self.embedded += len(texts)
        return super().embed_batch(texts)


class SlowEmbedder(HashEmbedder):
    """Takes ``delay`` seconds per batch, so that a run lasts long enough to interfere with."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Sleep ``delay`` seconds, then embed as the parent does."""
        time.sleep(self.delay)
        return super().embed_batch(texts)


class NullEmbedder(Embedder):
    """A benchmark-only :class:`~rcm_dask.embedding.Embedder` without a forward pass.

    It tokenizes for real, with the model's own tokenizer (the chunk stage's work and
    chunk ids are those of a real run), and turns each text's token ids into a
    deterministic unit vector of the model's dimension (a signed bag of hashed ids), so
    a pipeline run with it measures everything but the model: the dataflow's ceiling.
    It needs no weights loaded and never imports torch. Its name and fingerprint are its
    own, so an index built with it can never take a real model's vectors (or the other
    way round).

    Parameters
    ----------
    model
        Model folder whose tokenizer and dimension to use; None: the bundled model.
    batch_size
        Texts per embedding batch (as :class:`~rcm_dask.embedding.Embedder`).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, batch_size: int = 128):
        super().__init__(model, device="cpu", batch_size=batch_size, precision="fp32")
        self.name = f"null-embedder:{self.name}"
        self.fingerprint = f"null-{self.tokenizer_fingerprint}"

    def __repr__(self) -> str:
        return f"NullEmbedder({self.name!r}, dim={self.dimension})"

    @property
    def identity(self) -> dict[str, Any]:
        """What an index must agree on to mix vectors: never a real model's."""
        return {**super().identity, "precision": "null"}

    @property
    def slow_batches(self) -> bool:
        """No forward pass: batches are as fast as on a GPU."""
        return False

    def load(self) -> NullEmbedder:
        """Load the tokenizer (there are no weights to load); returns self."""
        _ = self.tokenizer
        return self

    def _model(self) -> Any:
        raise RuntimeError("the null embedder has no model: it never runs a forward pass")

    def embed_tokens(self, ids: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """One L2-normalised vector per row of token ids: each id adds +1 or -1 to one
        dimension, both chosen by hashing the id (a row that cancels out: the first unit
        vector)."""
        dim = self.dimension
        rows = [np.asarray(r[: self.max_tokens], dtype=np.int64) for r in ids]
        n = len(rows)
        if not n:
            return np.zeros((0, dim), dtype=np.float32)
        flat = np.concatenate(rows)
        which = np.repeat(np.arange(n, dtype=np.int64), [len(r) for r in rows])
        mixed = (flat + 1) * 2654435761 % (2**31 - 1)  # Knuth's multiplicative hash
        sign = np.where(mixed & 1024, 1.0, -1.0)
        counts = np.bincount(which * dim + mixed % dim, weights=sign, minlength=n * dim)
        out = counts.reshape(n, dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1)
        out[norms == 0, 0] = 1.0
        norms[norms == 0] = 1.0
        out /= norms[:, None]
        return out


def _as_embedder(fake: HashEmbedder) -> Embedder:
    """The fake, typed as what the library's signatures name (it duck-types an Embedder)."""
    return cast("Embedder", fake)


# --------------------------------------------------------------------------- records


def make_chunk(
    name: str,
    *,
    path: str = "src/lib.rs",
    kind: str = "function",
    code: str | None = None,
    docs: str = "",
    parent: str = "",
    module: str = "",
    version: int = 0,
) -> Chunk:
    """A public chunk with a deterministic UUID id from its path, qualname and ``version``
    (a new version: a new id for the same item); the code defaults to an empty function."""
    qualname = "::".join(p for p in (module, parent, name) if p)
    code = code if code is not None else f"pub fn {name}() {{}}"
    return Chunk(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path}#{qualname}#{version}")),
        path=path,
        module=module,
        name=name,
        qualname=qualname,
        kind=kind,  # type: ignore[arg-type]
        parent=parent,
        visibility="pub",
        signature=code.split("{")[0].strip(),
        docs=docs,
        attributes=(),
        imports=(),
        calls=(),
        type_refs=(),
        start_line=1,
        end_line=code.count("\n") + 1,
        start_byte=0,
        end_byte=len(code.encode()),
        has_error=False,
        code=code,
    )


# --------------------------------------------------------------------------- Qdrant


class LocalQdrantServer:
    """A Qdrant server stand-in: put it in place of ``qdrant_client.QdrantClient`` and every
    client asked for (whatever its URL) opens qdrant-client's on-disk local mode at ``path``,
    the same client code as a real server, or its in-memory mode when ``path`` is None.

    The keyword arguments of each call are kept in :attr:`calls`.
    """

    url = "http://127.0.0.1:6333"
    """A server URL to give ``--qdrant-url``; nothing listens there."""

    def __init__(self, path: Path | None) -> None:
        import qdrant_client

        self.path = path
        """Folder of the local-mode storage (None: in memory)."""
        self.calls: list[dict[str, object]] = []
        """The keyword arguments of every client made, in order."""
        self._real = qdrant_client.QdrantClient

    @property
    def urls(self) -> list[str]:
        """The URL of every client made, in order."""
        return [str(kw.get("url")) for kw in self.calls]

    def __call__(self, url: str | None = None, **kwargs: Any) -> Any:
        """A local-mode client standing in for one of the server at ``url``."""
        self.calls.append({"url": url, **kwargs})
        if self.path is None:
            return self._real(location=":memory:")
        return self._real(path=str(self.path))


# --------------------------------------------------------------------------- codebases


def add_generated_files(root: Path, counts: Sequence[int], doc: str = "Item {i}.{j}.") -> None:
    """Write ``src/gen_{i}.rs`` under ``root`` for each ``i``, holding ``counts[i]`` small
    documented functions ``gen_{i}_{j}``; ``doc`` is each one's doc line, formatted with
    ``i`` and ``j``."""
    for i, n in enumerate(counts):
        (root / "src" / f"gen_{i}.rs").write_text(
            "".join(
                f"/// {doc.format(i=i, j=j)}\npub fn gen_{i}_{j}(x: u32) -> u32 {{ x + {j} }}\n"
                for j in range(n)
            )
        )


def backdate(root: Path, seconds: float = 3600, pattern: str = "*") -> None:
    """Set the access and modification times of everything under ``root`` matching
    ``pattern`` to ``seconds`` ago: files just written would be re-read by the next run
    (their mtime is too close to when they were indexed), old ones are judged by size and
    mtime."""
    old = time.time() - seconds
    for path in root.rglob(pattern):
        os.utime(path, (old, old))


# --------------------------------------------------------------------------- indexes


def config_for(index_dir: str | Path, **fields: Any) -> IndexConfig:
    """``IndexConfig(index_dir=str(index_dir), **fields)``: wrap it in ``functools.partial``
    with a test file's own defaults, which ``fields`` given at the call override."""
    return IndexConfig(index_dir=str(index_dir), **fields)


def index_snapshot(
    index_dir: Path, *, vectors: bool = False, queries: Sequence[str] = ()
) -> dict[str, Any]:
    """Everything an index holds, in comparable form.

    ``docs``: BM25 documents by chunk id; ``records``: the paths with a whole-file record;
    ``files``: the manifest's records by path; with ``vectors``, ``vectors``: each point's
    vector by id; with ``queries``, ``searches``: each query's top 8 hybrid hits as (id, BM25
    rank, vector rank), and ``file_searches``: its top 8 whole-file records as (path, score
    to 4 places).
    """
    from .search import SearchIndex
    from .stores.manifest import Manifest

    out: dict[str, Any] = {}
    with SearchIndex(index_dir, embedder=_as_embedder(HashEmbedder())) as idx:
        out["docs"] = {p["id"]: p for p in idx.bm25.iter_payloads()}
        out["records"] = idx.bm25.file_record_paths()
        if vectors:
            out["vectors"] = {
                pid: np.asarray(vec, dtype=np.float32) for pid, vec, _ in idx.vectors.iter_points()
            }
        if queries:
            out["searches"] = {
                q: [(h.id, h.bm25_rank, h.vector_rank) for h in idx.search(q, limit=8)]
                for q in queries
            }
            out["file_searches"] = {
                q: [(p, round(s, 4)) for p, s in idx.bm25.search_files(q, limit=8)]
                for q in queries
            }
    m = Manifest(index_dir, readonly=True)
    try:
        out["files"] = {f.path: f for f in m.files()}
    finally:
        m.close()
    return out


def index_state(index_dir: Path) -> dict[str, Any]:
    """What an index folder holds, store by store: chunk ids (duplicates kept) of BM25
    and of the vectors, the paths with a whole-file record, the manifest's ids per path,
    and its pending paths."""
    from .search import SearchIndex
    from .stores.manifest import Manifest

    with SearchIndex(index_dir, embedder=_as_embedder(HashEmbedder())) as idx:
        bm25 = sorted(p["id"] for p in idx.bm25.iter_payloads())
        records = idx.bm25.file_record_paths()
        vectors = sorted(pid for pid, _, _ in idx.vectors.iter_points())
    m = Manifest(index_dir, readonly=True)
    try:
        files = {f.path: sorted(f.chunk_ids) for f in m.files()}
        pending = m.pending()
    finally:
        m.close()
    return {
        "bm25": bm25,
        "records": records,
        "vectors": vectors,
        "files": files,
        "pending": pending,
    }


def assert_converged(index_dir: Path, clean_dir: Path) -> None:
    """The index holds exactly what a clean full run built: same ids in BM25, vectors and
    manifest, a whole-file record for the same files, no duplicates, no orphans, nothing
    pending."""
    got, want = index_state(index_dir), index_state(clean_dir)
    assert got["pending"] == []
    assert got["files"] == want["files"]
    ids = sorted(i for ids in want["files"].values() for i in ids)
    assert got["bm25"] == ids, "BM25 holds duplicates or orphans"
    assert got["vectors"] == ids, "the vector store holds duplicates or orphans"
    assert got["records"] == want["records"], "whole-file records missing or left over"
