"""Shared fixtures: a tiny deterministic embedder, the rust-src corpus, isolated data homes,
a small crate, a Qdrant server stand-in. Fakes and plain helpers live in rcm_dask.testing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# before rcm_dask.testing is imported: its asserts get pytest's detailed messages
pytest.register_assert_rewrite("rcm_dask.testing")

from rcm_dask.testing import HashEmbedder, LocalQdrantServer  # noqa: E402

from . import DATA, REPO  # noqa: E402


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    """A fresh :class:`rcm_dask.testing.HashEmbedder`."""
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
    """Root of Debian's rust-src (``benchmarks/rust_src.sh`` installs it when missing)."""
    found = sorted(Path("/usr/src").glob("rustc-*/library"))
    if found:
        return found[0].parent
    try:
        out = subprocess.run(
            ["sh", str(REPO / "benchmarks" / "rust_src.sh")],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot install rust-src: {e}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def real_embedder():  # type: ignore[no-untyped-def]
    """The bundled all-MiniLM-L6-v2 in fp32 (reproducible whatever the batch), loaded once."""
    from rcm_dask.embedding import Embedder

    return Embedder(torch_threads=2, precision="fp32").load()


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
    """A real, tiny local model folder: 1 layer, 32 dims, random weights, bundled tokenizer."""
    # the real embedding path at a fraction of the cost, for tests that run whole index
    # processes many times
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


@pytest.fixture
def crate(tmp_path: Path) -> Path:
    """A copy of tests/data/mini_crate (a small Rust crate) under tmp_path."""
    root = tmp_path / "mini_crate"
    shutil.copytree(DATA / "mini_crate", root)
    return root


@pytest.fixture
def qdrant_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalQdrantServer:
    """qdrant_client.QdrantClient replaced by a stand-in serving any URL from tmp_path."""
    import qdrant_client

    server = LocalQdrantServer(tmp_path / "qdrant-local")
    monkeypatch.setattr(qdrant_client, "QdrantClient", server)
    return server
