"""The vector stores: one conformance class, run against every backend."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient

from rcm_dask.errors import IndexIdentityError, IndexWriteError, StoreBusyError
from rcm_dask.records import Chunk
from rcm_dask.stores import (
    PACKED_FIELD,
    EdgeVectorStore,
    QdrantClientVectorStore,
    StoreHit,
    VectorStore,
    chunk_payload,
    encode_payloads,
    open_vector_store,
)
from rcm_dask.testing import LocalQdrantServer, make_chunk

DIM = 4

Opener = Callable[[int], VectorStore]
"""Opens the backend's store at its one test location, with the given dimension."""


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


# Four chunks in two files; A is the query's nearest, then B, C, D.
A = make_chunk("alpha", path="src/a.rs")
B = make_chunk("beta", path="src/a.rs", kind="struct")
C = make_chunk("gamma", path="src/c.rs")
D = make_chunk("delta", path="src/d.rs", kind="struct")
CHUNKS = [A, B, C, D]
VECTORS = [unit(1, 0, 0, 0), unit(0.9, 0.3, 0, 0), unit(0.5, 0.5, 0.5, 0), unit(0, 0, 0, 1)]
QUERY = unit(1, 0.05, 0, 0)


def ids(hits: Sequence[StoreHit]) -> list[str]:
    return [h.id for h in hits]


class VectorStoreConformance:
    """Behaviour every :class:`VectorStore` backend must share.

    A subclass provides the ``opener`` fixture: a function that opens the store at
    the test's one location (the same data each time it is called after a close).
    """

    @pytest.fixture
    def store(self, opener: Opener) -> Iterator[VectorStore]:
        s = opener(DIM)
        yield s
        s.close()

    @pytest.fixture
    def filled(self, store: VectorStore) -> VectorStore:
        store.upsert_batch(CHUNKS, VECTORS)
        store.commit()
        return store

    def test_is_a_vector_store(self, store: VectorStore) -> None:
        assert isinstance(store, VectorStore)

    def test_empty_store(self, store: VectorStore) -> None:
        assert store.count() == 0
        assert store.search(QUERY) == []
        assert list(store.iter_points()) == []

    def test_upsert_and_count(self, filled: VectorStore) -> None:
        assert filled.count() == len(CHUNKS)

    def test_empty_batches_do_nothing(self, filled: VectorStore) -> None:
        filled.upsert_batch([], [])
        filled.delete_paths([])
        filled.delete_ids([])
        assert filled.count() == len(CHUNKS)

    def test_search_nearest_first_with_payload(self, filled: VectorStore) -> None:
        hits = filled.search(QUERY, limit=10)
        assert ids(hits) == [A.id, B.id, C.id, D.id]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(np.dot(QUERY, VECTORS[0])), abs=1e-5)
        assert scores[-1] == pytest.approx(0.0, abs=1e-5)
        assert hits[0].payload == chunk_payload(A)

    def test_limit(self, filled: VectorStore) -> None:
        assert ids(filled.search(QUERY, limit=2)) == [A.id, B.id]
        assert filled.search(QUERY, limit=0) == []

    @pytest.mark.parametrize(
        ("kinds", "expected"),
        [(["struct"], [B, D]), (["function", "struct"], CHUNKS), (["trait"], []), ([], CHUNKS)],
    )
    def test_kind_filter(
        self, filled: VectorStore, kinds: list[str], expected: list[Chunk]
    ) -> None:
        assert ids(filled.search(QUERY, kinds=kinds)) == [c.id for c in expected]

    def test_path_filter(self, filled: VectorStore) -> None:
        assert ids(filled.search(QUERY, paths=["src/c.rs", "src/d.rs"])) == [C.id, D.id]
        assert ids(filled.search(QUERY, paths=["src/a.rs"], kinds=["struct"])) == [B.id]

    def test_delete_paths_removes_only_that_file(self, filled: VectorStore) -> None:
        filled.delete_paths(["src/a.rs", "src/never-indexed.rs"])
        filled.commit()
        assert filled.count() == 2
        assert ids(filled.search(QUERY)) == [C.id, D.id]

    def test_delete_ids(self, filled: VectorStore) -> None:
        filled.delete_ids([B.id, str(uuid.uuid4())])
        assert ids(filled.search(QUERY)) == [A.id, C.id, D.id]

    def test_delete_then_reupsert_same_ids(self, filled: VectorStore) -> None:
        filled.delete_paths(["src/a.rs"])
        filled.upsert_batch([A, B], VECTORS[:2])
        filled.commit()
        assert filled.count() == len(CHUNKS)
        assert ids(filled.search(QUERY)) == [A.id, B.id, C.id, D.id]

    def test_upsert_same_id_updates(self, filled: VectorStore) -> None:
        moved = make_chunk("alpha", path="src/a.rs", code="fn alpha() { changed() }")
        assert moved.id == A.id
        filled.upsert_batch([moved], [unit(-1, 0, 0, 0.1)])  # now the farthest
        assert filled.count() == len(CHUNKS)
        hits = filled.search(QUERY)
        assert ids(hits)[-1] == A.id
        assert hits[-1].payload["code"] == moved.code

    def test_iter_points_round_trip(self, filled: VectorStore) -> None:
        points = {pid: (vector, payload) for pid, vector, payload in filled.iter_points()}
        assert set(points) == {c.id for c in CHUNKS}
        for chunk, expected in zip(CHUNKS, VECTORS):
            vector, payload = points[chunk.id]
            np.testing.assert_allclose(vector, expected, atol=1e-6)
            assert payload == chunk_payload(chunk)

    def test_iter_points_pages(self, store: VectorStore) -> None:
        # More points than one scroll page, so paging is exercised.
        chunks = [make_chunk(f"f{i}", path=f"src/m{i % 7}.rs") for i in range(1100)]
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
        store.upsert_batch(chunks, vectors)
        seen = [pid for pid, _, _ in store.iter_points()]
        assert sorted(seen) == sorted(c.id for c in chunks)

    def test_accepts_numpy_arrays(self, store: VectorStore) -> None:
        store.upsert_batch(CHUNKS, np.asarray(VECTORS, dtype=np.float32))
        assert ids(store.search(np.asarray(QUERY), limit=1)) == [A.id]

    def test_commit_and_reopen(self, opener: Opener, store: VectorStore) -> None:
        store.upsert_batch(CHUNKS, VECTORS)
        store.commit()
        before = [(h.id, h.score) for h in store.search(QUERY)]
        store.close()
        store.close()  # idempotent
        again = opener(DIM)
        try:
            assert again.count() == len(CHUNKS)
            after = [(h.id, h.score) for h in again.search(QUERY)]
            assert [i for i, _ in after] == [i for i, _ in before]
            assert [s for _, s in after] == pytest.approx([s for _, s in before])
        finally:
            again.close()

    def test_dimension_mismatch_on_open(self, opener: Opener, store: VectorStore) -> None:
        store.upsert_batch(CHUNKS, VECTORS)
        store.close()
        with pytest.raises(IndexIdentityError, match="dimension|dimensional"):
            opener(DIM + 4)

    def test_wrong_vectors_are_refused(self, store: VectorStore) -> None:
        with pytest.raises(IndexWriteError, match="dimension"):
            store.upsert_batch([A], [[1.0, 0.0]])
        with pytest.raises(IndexWriteError, match="pair up"):
            store.upsert_batch([A, B], VECTORS[:1])
        with pytest.raises(IndexWriteError, match="zero"):
            store.upsert_batch([A], [[0.0] * DIM])
        assert store.count() == 0

    def test_query_of_wrong_dimension(self, filled: VectorStore) -> None:
        with pytest.raises(IndexIdentityError):
            filled.search([1.0, 0.0])

    def test_points_keep_the_payload_packed(self, filled: VectorStore) -> None:
        # what a point holds: the indexed fields, and the whole payload as one JSON text
        stored = stored_payloads(filled)
        assert set(stored) == {c.id for c in CHUNKS}
        for chunk in CHUNKS:
            raw = stored[chunk.id]
            assert set(raw) == {"path", "kind", PACKED_FIELD}
            assert (raw["path"], raw["kind"]) == (chunk.path, chunk.kind)
            assert json.loads(raw[PACKED_FIELD]) == chunk_payload(chunk)
        assert {pid: pl for pid, _, pl in filled.iter_points()} == {
            c.id: chunk_payload(c) for c in CHUNKS
        }

    def test_numpy_vectors_and_encoded_payloads(self, store: VectorStore) -> None:
        store.upsert_batch(CHUNKS, np.asarray(VECTORS, dtype=np.float32), encode_payloads(CHUNKS))
        hits = store.search(QUERY, limit=10)
        assert ids(hits) == [A.id, B.id, C.id, D.id]
        assert [h.payload for h in hits] == [chunk_payload(c) for c in CHUNKS]

    def test_format_2_points_read_as_before(self, store: VectorStore) -> None:
        # points written by format 2 carry every payload field spelled out; a store that
        # holds them, and new packed ones beside them, answers alike for both
        upsert_spelled_out(store, CHUNKS[:2], VECTORS[:2])
        store.upsert_batch(CHUNKS[2:], VECTORS[2:])
        assert set(stored_payloads(store)[A.id]) == set(chunk_payload(A))
        hits = store.search(QUERY, limit=10)
        assert ids(hits) == [A.id, B.id, C.id, D.id]
        assert [h.payload for h in hits] == [chunk_payload(c) for c in CHUNKS]
        assert ids(store.search(QUERY, kinds=["struct"])) == [B.id, D.id]
        assert ids(store.search(QUERY, paths=["src/a.rs"])) == [A.id, B.id]
        assert {pid: pl for pid, _, pl in store.iter_points()} == {
            c.id: chunk_payload(c) for c in CHUNKS
        }
        store.delete_paths(["src/a.rs"])
        assert store.count() == 2


def stored_payloads(store: VectorStore) -> dict[str, dict[str, object]]:
    """Each point's payload as the backend holds it, by point id."""
    if isinstance(store, EdgeVectorStore):
        records, _ = store._shard.scroll(qe.ScrollRequest(limit=100, with_payload=True))
    else:
        assert isinstance(store, QdrantClientVectorStore)
        records, _ = store.client.scroll(store.collection, limit=100, with_payload=True)
    return {str(uuid.UUID(str(r.id))): dict(r.payload or {}) for r in records}


def upsert_spelled_out(store: VectorStore, chunks: list[Chunk], vectors: list[list[float]]) -> None:
    """Write points as format 2 did: the payload's fields spelled out."""
    if isinstance(store, EdgeVectorStore):
        points = [qe.Point(c.id, v, chunk_payload(c)) for c, v in zip(chunks, vectors)]
        store._shard.update(qe.UpdateOperation.upsert_points(points))
    else:
        from qdrant_client.http import models as qm

        assert isinstance(store, QdrantClientVectorStore)
        structs = [
            qm.PointStruct(id=c.id, vector=v, payload=chunk_payload(c))
            for c, v in zip(chunks, vectors)
        ]
        store.client.upsert(store.collection, points=structs, wait=True)


class TestEdgeVectorStore(VectorStoreConformance):
    """The embedded engine, in a folder under tmp_path."""

    @pytest.fixture
    def opener(self, tmp_path: Path) -> Opener:
        return lambda dim: EdgeVectorStore(tmp_path / "vectors", dim)

    def test_close_without_commit_keeps_writes(self, tmp_path: Path) -> None:
        # The shard's write-ahead log makes every acknowledged write durable.
        store = EdgeVectorStore(tmp_path / "v", DIM)
        store.upsert_batch(CHUNKS, VECTORS)
        store.close()
        with EdgeVectorStore(tmp_path / "v", DIM) as again:
            assert again.count() == len(CHUNKS)

    def test_second_open_is_refused(self, store: VectorStore, tmp_path: Path) -> None:
        with pytest.raises(StoreBusyError, match="in use by another process"):
            EdgeVectorStore(tmp_path / "vectors", DIM)

    def test_open_vector_store_without_url(self, tmp_path: Path) -> None:
        store = open_vector_store(tmp_path, DIM, qdrant_url=None, collection="unused")
        try:
            assert isinstance(store, EdgeVectorStore)
            assert store.path == tmp_path / "vectors"
        finally:
            store.close()


class TestQdrantClientVectorStore(VectorStoreConformance):
    """qdrant-client's in-process local mode, standing in for a server."""

    @pytest.fixture
    def client(self) -> Iterator[QdrantClient]:
        client = QdrantClient(location=":memory:")
        yield client
        client.close()

    @pytest.fixture
    def opener(self, client: QdrantClient) -> Opener:
        return lambda dim: QdrantClientVectorStore(client, "chunks", dim)

    def test_does_not_close_a_client_it_was_given(self, client: QdrantClient) -> None:
        QdrantClientVectorStore(client, "other", DIM).close()
        assert client.collection_exists("other")

    def test_open_vector_store_with_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # No server here: the URL is handed to a stand-in that opens local mode instead.
        import qdrant_client

        server = LocalQdrantServer(None)  # in memory
        monkeypatch.setattr(qdrant_client, "QdrantClient", server)
        store = open_vector_store(Path("unused"), DIM, "http://qdrant:6333", "rust", api_key="k")
        assert isinstance(store, QdrantClientVectorStore)
        assert server.calls == [{"url": "http://qdrant:6333", "api_key": "k"}]
        store.upsert_batch(CHUNKS, VECTORS)
        assert store.count() == len(CHUNKS)
        store.close()  # the store made this client, so it closes it
