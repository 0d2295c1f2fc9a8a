from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rcm_dask.config import IndexConfig
from rcm_dask.embedding import (
    Embedder,
    bundled_model_dir,
    cpu_has_bf16,
    resolve_device,
    resolve_precision,
)
from rcm_dask.errors import ConfigError, ModelError
from rcm_dask.records import ParsedPartition

from . import DATA

TEXTS = [
    "fn push(&mut self, item: T)",
    "pub struct BinaryHeap<T> { data: Vec<T> }",
    "/// Returns the number of elements in the vector.\npub fn len(&self) -> usize { self.len }",
    "impl<T: Ord> Extend<T> for BinaryHeap<T> { fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {} }",
    "x",
    "let value = compute(a, b) * 2; "
    * 60,  # beyond 256 tokens: truncated like sentence-transformers
]


def test_matches_sentence_transformers(real_embedder: Embedder) -> None:
    from sentence_transformers import SentenceTransformer

    ours = real_embedder.embed_batch(TEXTS)
    st = SentenceTransformer(str(bundled_model_dir()), device="cpu")
    theirs = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    cos = (ours * theirs).sum(axis=1)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert cos.min() >= 0.999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_order_and_batch_size_do_not_change_vectors(real_embedder: Embedder) -> None:
    base = real_embedder.embed_batch(TEXTS)
    rev = real_embedder.embed_batch(TEXTS[::-1])[::-1]
    small = pickle.loads(pickle.dumps(real_embedder))
    small.batch_size = 2
    np.testing.assert_allclose(base, rev, atol=1e-5)
    np.testing.assert_allclose(base, small.embed_batch(TEXTS), atol=1e-5)


def test_bf16_vectors_barely_depend_on_the_batch() -> None:
    """bf16 kernels round differently for other batch widths: close, not bit-equal."""
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bfloat16")
    emb = Embedder(precision="bf16", torch_threads=2)
    base = emb.embed_batch(TEXTS)
    rev = emb.embed_batch(TEXTS[::-1])[::-1]
    assert (base * rev).sum(axis=1).min() >= 0.9995


def test_identity_and_limits(real_embedder: Embedder) -> None:
    assert real_embedder.dimension == 384
    assert real_embedder.max_tokens == 256
    assert real_embedder.identity["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert real_embedder.count_tokens(["a", ""]) == [3, 2]  # [CLS] a [SEP]
    assert real_embedder.embed_batch([]).shape == (0, 384)


def test_pickles_without_weights(real_embedder: Embedder) -> None:
    data = pickle.dumps(real_embedder)
    assert len(data) < 4096
    clone = pickle.loads(data)
    assert set(vars(clone)) == set(vars(real_embedder))  # plain settings only
    np.testing.assert_allclose(
        clone.embed_batch(TEXTS[:2]), real_embedder.embed_batch(TEXTS[:2]), atol=1e-6
    )


def test_any_local_model_folder(tmp_path: Path) -> None:
    copy = tmp_path / "my-model"
    shutil.copytree(bundled_model_dir(), copy)
    emb = Embedder(copy, max_tokens=64, batch_size=4, torch_threads=1)
    assert emb.model_dir == copy.resolve()
    assert emb.max_tokens == 64 and emb.dimension == 384
    assert emb.fingerprint == Embedder().fingerprint  # same weights, same fingerprint
    assert emb.embed_batch(["fn main() {}"]).shape == (1, 384)


@pytest.mark.parametrize("content", [None, "not json", '{"model_type": "bert"}'])
def test_bad_model_folder_is_a_clear_error(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(ModelError):
        Embedder(tmp_path)


def test_device_auto_detect() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == expected
    assert resolve_device("cpu") == "cpu"


def test_unknown_device_is_a_clear_error() -> None:
    emb = Embedder(device="nosuchdevice")
    with pytest.raises(ModelError, match="device"):
        emb.embed_batch(["x"])


@pytest.mark.gpu
def test_cuda_matches_cpu(real_embedder: Embedder) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for precision in ("fp32", "fp16", "bf16"):
        gpu = Embedder(device="cuda", precision=precision)
        cos = (gpu.embed_batch(TEXTS) * real_embedder.embed_batch(TEXTS)).sum(axis=1)
        assert cos.min() >= 0.999, (precision, cos)


def test_precision_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    import rcm_dask.embedding as embedding

    monkeypatch.setattr(embedding, "cpu_has_bf16", lambda: True)
    assert resolve_precision(None, "cpu") == resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda:0") == "fp16"
    monkeypatch.setattr(embedding, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("INT8", "cpu") == "int8"
    with pytest.raises(ModelError, match="fp16 is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ModelError, match="int8 is .* for CPUs"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ModelError, match="unknown precision 'fp8'"):
        Embedder(precision="fp8")
    with pytest.raises(ConfigError, match="unknown precision"):
        IndexConfig.from_env({"RCM_PRECISION": "half"})
    assert Embedder(precision="fp32").identity["precision"] == "fp32"


@pytest.mark.parametrize(("precision", "min_cos"), [("bf16", 0.999), ("int8", 0.8)])
def test_cpu_precisions_agree_with_fp32(precision: str, min_cos: float) -> None:
    """bf16 and int8 give unit vectors close to fp32's (int8 less so: never the default)."""
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no native bfloat16 (autocast would be slow, not wrong)")
    fp32 = Embedder(precision="fp32", torch_threads=2).embed_batch(TEXTS)
    other = Embedder(precision=precision, torch_threads=2).embed_batch(TEXTS)
    cos = (fp32 * other).sum(axis=1)
    assert other.dtype == np.float32 and other.shape == fp32.shape
    np.testing.assert_allclose(np.linalg.norm(other, axis=1), 1.0, atol=1e-3)
    assert cos.min() >= min_cos, cos
    # each precision is its own model in the process cache
    assert Embedder(precision=precision).load()._model() is not Embedder(precision="fp32")._model()


def test_int8_index_refuses_other_precisions(tmp_path: Path) -> None:
    from rcm_dask.identity import identity_mismatch

    base = {"format": 2, "model": "m", "precision": "fp32"}
    assert identity_mismatch(base, {**base, "precision": "bf16"}) == []
    assert identity_mismatch({"format": 2, "model": "m"}, {**base, "precision": "fp16"}) == []
    (diff,) = identity_mismatch(base, {**base, "precision": "int8"})
    assert "precision: index has 'fp32', this run uses 'int8'" == diff


_TUNE = "from rcm_dask.embedding import tune_allocator; print(tune_allocator(), tune_allocator())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # a Dask nanny sets the trim threshold, which freezes glibc's mmap threshold
        ({"MALLOC_TRIM_THRESHOLD_": "65536"}, "True False"),
        # nothing set: glibc adapts by itself, leave it
        ({}, "False False"),
        # the user chose an mmap threshold: respect it
        ({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "131072"}, "False False"),
    ],
)
def test_tune_allocator_only_where_dask_froze_it(env: dict[str, str], expected: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _TUNE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_token_budget_passes_cover_every_text_once_within_budget() -> None:
    from rcm_dask.embedding import token_budget_passes

    rng = np.random.default_rng(0)
    lengths = sorted(int(x) for x in rng.integers(3, 300, size=500))
    passes = token_budget_passes(lengths, max_rows=64, budget=16 * 256)
    assert [a for a, _ in passes][1:] == [b for _, b in passes][:-1]
    assert passes[0][0] == 0 and passes[-1][1] == len(lengths)
    for a, b in passes:
        assert b - a <= 64 and ((b - a) * lengths[b - 1] <= 16 * 256 or b - a == 1)
    # short texts share wide passes, long ones narrow ones
    assert passes[0][1] - passes[0][0] == 64 and passes[-1][1] - passes[-1][0] <= 16
    assert token_budget_passes([], 8, 100) == []
    assert token_budget_passes([500], 8, 100) == [(0, 1)]


def test_padded_widths_are_few_and_never_cut_a_text() -> None:
    from rcm_dask.embedding import PAD_MULTIPLE, padded_width

    widths = {padded_width(n, 256) for n in range(1, 257)}
    assert len(widths) == 256 // PAD_MULTIPLE and max(widths) == 256
    assert all(n <= padded_width(n, 256) < n + PAD_MULTIPLE for n in range(1, 257))
    # a limit that is not a multiple caps the padding, and is never below the text
    assert padded_width(99, 100) == 100 and padded_width(120, 100) == 120


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checked in a fresh process")
def test_kernel_cache_is_limited_unless_the_user_chose() -> None:
    code = (
        "import os; from rcm_dask.embedding import limit_kernel_cache as f; "
        "print(f(), f(), os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False", "256"], out.stderr
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "500"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False", "500"], out.stderr


# --------------------------------------------------------------------------- token ids


def _tokenized_partition(tmp_path: Path, embedder: Embedder) -> ParsedPartition:
    """heap.rs plus a function long enough to be split, read and chunked by the chunk stage."""
    from rcm_dask.sources import discover_sources, open_root
    from rcm_dask.stages import read_chunk_partition

    root = tmp_path / "c"
    root.mkdir()
    shutil.copy(DATA / "heap.rs", root / "heap.rs")
    body = "".join(f"    let v{i} = compute(a{i}, b{i}) * {i};\n" for i in range(120))
    (root / "long.rs").write_text(f"/// Long.\npub fn long() {{\n{body}}}\n")
    src = open_root(str(root))
    return read_chunk_partition(discover_sources(src).files, src.fs, embedder)


def test_chunk_stage_tokens_are_what_the_model_sees(
    real_embedder: Embedder, tmp_path: Path
) -> None:
    from rcm_dask.chunking import chunk_source
    from rcm_dask.embed_text import format_for_embedding
    from rcm_dask.sources import read_source
    from rcm_dask.splitting import split_chunks

    part = _tokenized_partition(tmp_path, real_embedder)
    assert part.token_ids is not None and part.token_ids.dtype == np.int32
    assert any(c.parts > 1 for c in part.chunks), "the long function is split"
    ids = part.chunk_tokens(0, len(part.chunks))
    assert ids is not None and len(ids) == len(part.chunks)
    texts = [format_for_embedding(c) for c in part.chunks]
    tok = real_embedder.tokenizer
    for text, got, again in zip(texts, ids, real_embedder.encode(texts)):
        want = tok(text, truncation=True, max_length=real_embedder.max_tokens)["input_ids"]
        assert got.tolist() == want == again.tolist()
    # tokenizing once chunks exactly as counting tokens did
    src, refs = open_root_files(tmp_path / "c")
    counted = [
        c
        for ref in refs
        for c in split_chunks(
            chunk_source(read_source(src.fs, ref)),
            real_embedder.count_tokens,
            real_embedder.max_tokens,
        )
    ]
    assert [c.id for c in counted] == [c.id for c in part.chunks]
    assert part.summary().token_ids is None  # the driver's copy carries no ids


def open_root_files(root: Path) -> tuple[Any, list[Any]]:
    """A root and its files, as discovery lists them."""
    from rcm_dask.sources import discover_sources, open_root

    src = open_root(str(root))
    return src, list(discover_sources(src).files)


def test_embedding_from_token_ids_equals_embedding_texts(
    real_embedder: Embedder, tmp_path: Path
) -> None:
    from rcm_dask.embed_text import format_for_embedding

    part = _tokenized_partition(tmp_path, real_embedder)
    chunks = part.chunks[:12]
    ids = part.chunk_tokens(0, len(chunks))
    assert ids is not None
    from_ids = real_embedder.embed_tokens(ids)
    from_texts = real_embedder.embed_batch([format_for_embedding(c) for c in chunks])
    assert from_ids.shape == (len(chunks), 384)
    np.testing.assert_allclose(from_ids, from_texts, atol=1e-5)


def test_null_embedder_is_deterministic_and_never_a_real_model(
    real_embedder: Embedder,
) -> None:
    from rcm_dask.testing import NullEmbedder

    null = NullEmbedder()
    again = pickle.loads(pickle.dumps(NullEmbedder()))
    vecs = null.embed_batch(TEXTS)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    np.testing.assert_array_equal(vecs, again.embed_batch(TEXTS))
    np.testing.assert_array_equal(vecs, null.embed_tokens(null.encode(TEXTS)))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert len({v.tobytes() for v in vecs}) == len(TEXTS)  # different texts, different vectors
    assert [len(i) for i in null.encode(TEXTS)] == [
        len(i) for i in real_embedder.encode(TEXTS)
    ]  # the real tokenizer
    assert null.identity["model_fingerprint"] != real_embedder.identity["model_fingerprint"]
    assert null.identity["model"] != real_embedder.identity["model"]
    with pytest.raises(RuntimeError, match="no model"):
        null.load()._model()


def test_a_token_budget_past_the_model_s_positions_is_refused(tiny_model: Path) -> None:
    """Was: accepted, then a forward-pass error on the first chunk longer than the model's
    position table, mid-run."""
    with pytest.raises(ConfigError, match=r"max_tokens 513 \(RCM_MAX_TOKENS\) is over the 512"):
        Embedder(str(tiny_model), max_tokens=513)
    assert Embedder(str(tiny_model), max_tokens=512).max_tokens == 512
    assert Embedder(str(tiny_model)).max_tokens == 128  # the model's own max_seq_length


def test_the_bundled_folder_named_by_its_path_is_the_default_model() -> None:
    """Was: named after its config's base model, so an index built with --model <that
    folder> refused a plain run (and the repair command it printed) as another model."""
    from rcm_dask.embedding import DEFAULT_MODEL_NAME, bundled_model_dir

    assert Embedder(str(bundled_model_dir())).name == DEFAULT_MODEL_NAME == Embedder().name
