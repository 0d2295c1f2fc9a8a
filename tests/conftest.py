"""Shared fixtures: a tiny deterministic embedder, the rust-src corpus, isolated data homes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


class HashEmbedder:
    """A fast, deterministic stand-in for :class:`rcm_dask.embedding.Embedder` in unit tests.

    Words are hashed into a 64-d bag-of-words vector, L2-normalised: texts sharing
    words are close, so search behaves sensibly, with no model to load.
    """

    dimension = 64
    max_tokens = 128
    batch_size = 128
    name = "hash-embedder"
    fingerprint = "hash-v1"
    model_dir = Path("/nonexistent/hash-embedder")

    @property
    def identity(self) -> dict[str, object]:
        return {
            "model": self.name,
            "model_fingerprint": self.fingerprint,
            "dimensions": self.dimension,
            "max_tokens": self.max_tokens,
        }

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(re.findall(r"\w+|[^\w\s]", t)) + 2 for t in texts]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
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


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own default index location; RCM_* from the caller's shell are ignored."""
    home = tmp_path_factory.mktemp("rcm_home")
    for key in list(os.environ):
        if key.startswith("RCM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RCM_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def rust_src() -> Path:
    """Root of Debian's rust-src (installed by ../shared/corpus/fetch.sh when missing)."""
    found = sorted(Path("/usr/src").glob("rustc-*/library"))
    if found:
        return found[0].parent
    script = REPO.parent / "shared" / "corpus" / "fetch.sh"
    if not script.exists():
        pytest.skip("rust-src is not installed and ../shared/corpus/fetch.sh is not here")
    try:
        out = subprocess.run(
            ["bash", str(script)], check=True, capture_output=True, text=True, timeout=900
        )
    except (subprocess.SubprocessError, OSError) as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot install rust-src: {e}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def real_embedder():  # type: ignore[no-untyped-def]
    """The bundled all-MiniLM-L6-v2 in fp32 (exactly reproducible whatever the batch),
    loaded once per test session."""
    from rcm_dask.embedding import Embedder

    return Embedder(torch_threads=2, precision="fp32").load()


class FailingEmbedder(HashEmbedder):
    """Fails on any batch holding a chunk whose text contains ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if any(self.marker in t for t in texts):
            raise RuntimeError(f"embedding failed on purpose at {self.marker!r}")
        return super().embed_batch(texts)


class CountingEmbedder(HashEmbedder):
    """Counts the texts it embeds."""

    def __init__(self) -> None:
        self.embedded = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        return super().embed_batch(texts)


class SlowEmbedder(HashEmbedder):
    """Takes ``delay`` seconds per batch, so that a run lasts long enough to interfere with."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        import time

        time.sleep(self.delay)
        return super().embed_batch(texts)


@pytest.fixture(scope="session")
def dask_client():  # type: ignore[no-untyped-def]
    """A real LocalCluster of 2 single-threaded worker processes, shared by the session."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but tiny local Hugging Face model folder (1 layer, 32 dims, random weights)
    with the bundled tokenizer: the real embedding path at a fraction of the cost, for
    tests that run whole index processes many times."""
    import torch
    from transformers import BertConfig, BertModel

    from rcm_dask.embedding import bundled_model_dir

    out = tmp_path_factory.mktemp("tiny-model")
    src = bundled_model_dir()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    (out / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    return out


def index_state(index_dir: Path) -> dict[str, object]:
    """What an index folder holds, store by store: chunk ids (duplicates kept) of BM25
    and of the vectors, the manifest's ids per path, and its pending paths."""
    from rcm_dask.search import SearchIndex
    from rcm_dask.stores.manifest import Manifest

    with SearchIndex(index_dir, embedder=HashEmbedder()) as idx:
        bm25 = sorted(p["id"] for p in idx.bm25.iter_payloads())
        vectors = sorted(pid for pid, _, _ in idx.vectors.iter_points())
    m = Manifest(index_dir, readonly=True)
    try:
        files = {f.path: sorted(f.chunk_ids) for f in m.files()}
        pending = m.pending()
    finally:
        m.close()
    return {"bm25": bm25, "vectors": vectors, "files": files, "pending": pending}


def assert_converged(index_dir: Path, clean_dir: Path) -> None:
    """The index holds exactly what a clean full run built: same ids in BM25, vectors and
    manifest, no duplicates, no orphans, nothing pending."""
    got, want = index_state(index_dir), index_state(clean_dir)
    assert got["pending"] == []
    assert got["files"] == want["files"]
    ids = sorted(i for ids in want["files"].values() for i in ids)  # type: ignore[attr-defined]
    assert got["bm25"] == ids, "BM25 holds duplicates or orphans"
    assert got["vectors"] == ids, "the vector store holds duplicates or orphans"
