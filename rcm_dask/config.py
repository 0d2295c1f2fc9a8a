"""Settings of a run: one frozen :class:`IndexConfig`; every field is also an ``RCM_*`` variable.

Precedence, highest first: an explicit argument (CLI option or keyword), the
``RCM_<FIELD>`` environment variable, the default below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pathspec

from .errors import ConfigError

MODES = ("auto", "sequential", "parallel", "pipeline")
"""Indexing modes: ``auto`` picks ``sequential`` for small work, else ``pipeline``."""

SEARCH_MODES = ("hybrid", "bm25", "vector")
"""How a query is answered."""

SEARCH_GROUPS = ("item", "file")
"""What one search result stands for: an item, or a file with its best items."""

FUSIONS = ("score", "rrf")
"""How hybrid search fuses the BM25 and vector rankings: ``score`` (their min-max
normalised scores, weighted by :attr:`IndexConfig.vector_share`) or ``rrf`` (reciprocal
rank fusion)."""

VECTORS = ("qdrant", "none")
"""What an index keeps besides BM25: ``qdrant`` (every chunk embedded, vectors in Qdrant)
or ``none`` (keyword-only: nothing embedded, no model weights loaded)."""


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Everything that shapes an indexing run or a search.

    Examples
    --------
    >>> IndexConfig(batch_size=64).batch_size
    64
    >>> IndexConfig.from_env({"RCM_BATCH_SIZE": "32"}).batch_size
    32
    """

    index_dir: str | None = None
    """Where the index lives; None: a folder per codebase under :func:`data_home`."""
    mode: str = "auto"
    """Indexing mode, one of :data:`MODES`."""
    scheduler: str | None = None
    """Address of a running Dask scheduler (``tcp://host:8786``); None: a LocalCluster
    started and stopped by the run."""
    n_workers: int | None = None
    """Worker processes of the run's LocalCluster; None: one per 4 cores."""
    partition_bytes: int = 256 * 1024
    """Source bytes read and chunked per task (files are never split)."""
    max_inflight_batches: int | None = None
    """Embedding batches submitted and not yet written, at most (the pipeline's
    backpressure); None: two per embedding worker thread, at least 4."""
    small_codebase_bytes: int = 256 * 1024
    """``auto`` mode indexes sequentially when the files to read total fewer bytes
    (starting a cluster costs more than it saves)."""
    model: str | None = None
    """Local Hugging Face model directory; None: the bundled all-MiniLM-L6-v2."""
    device: str | None = None
    """Torch device (``cpu``, ``cuda``, ``cuda:1``); None: CUDA when present, else CPU."""
    batch_size: int = 128
    """Chunks per embedding batch (one task; cross-file in the cluster modes), and
    rows per forward pass on a GPU."""
    cpu_batch_size: int = 16
    """Rows per forward pass when embedding on a CPU (smaller passes pad less)."""
    max_tokens: int | None = None
    """Token budget per embedded text; None: the model's own maximum (256 for MiniLM)."""
    torch_threads: int | None = None
    """Torch intra-op threads for CPU embedding; None: one per core."""
    vectors: str = "qdrant"
    """``qdrant``: embed every chunk and keep its vector (hybrid and vector search);
    ``none``: a keyword-only index (BM25 and code intelligence; nothing is embedded and
    no model weights are loaded, the tokenizer still splits long items). One of
    :data:`VECTORS`."""
    precision: str = "auto"
    """Forward-pass precision: ``auto`` (fp16 on a GPU, bf16 on a CPU with native
    bfloat16, else fp32), ``fp32``, ``bf16``, ``fp16`` (GPU), ``int8`` (CPU)."""
    qdrant_url: str | None = None
    """Qdrant server URL; None: the embedded Qdrant engine inside the index folder."""
    qdrant_api_key: str | None = None
    """API key for the Qdrant server, if it needs one."""
    max_file_size: int = 8 * 1024 * 1024
    """Files larger than this many bytes are skipped as ``too-large``."""
    respect_gitignore: bool = True
    """Skip paths ignored by ``.gitignore`` files under the root."""
    include_hidden: bool = False
    """Descend into hidden folders and read hidden files."""
    include_sensitive: bool = False
    """Read files that look like secrets (``.env*``, keys); off by default."""
    exclude: tuple[str, ...] = ()
    """Extra gitignore-style patterns to skip."""
    commit_every: int = 4096
    """Commit both stores after this many chunks, so a crash loses at most that much."""
    commit_seconds: float = 60.0
    """Also commit when this many seconds have passed since the last commit (a crash
    loses at most about this much work on a slow machine); 0: by chunk count only."""
    wait: float = 0.0
    """Seconds to wait for another index run on the same index to finish; 0: fail at
    once naming it; negative: wait as long as it takes."""
    candidates: int = 100
    """Candidates taken from each store before fusion."""
    fusion: str = "score"
    """How hybrid search fuses its two rankings, one of :data:`FUSIONS`: ``score`` (the
    default: measured on the twelve crates of ``benchmarks/search_quality`` against
    ``rrf``, item nDCG@10 +0.023 on the tuning half and +0.025 on the held-back half,
    file nDCG@10 +0.016 and +0.006) or ``rrf``."""
    vector_share: float = 0.6
    """``score`` fusion: the vector ranking's share of the fused score (BM25 has the
    rest; halved for a bare symbol lookup). 0.6: best of 0.4 to 0.7 on the tuning half."""
    rrf_k: int = 10
    """The ``k`` of reciprocal rank fusion (10: measured on the tuning half of
    ``benchmarks/search_quality``'s twelve crates; 60, the textbook value, flattens the
    top ranks that carry most of the signal here)."""
    bm25_weight: float = 1.0
    """Weight of the BM25 ranking in fusion."""
    vector_weight: float = 1.0
    """Weight of the vector ranking in fusion."""
    ranking: str = "default"
    """Ranking steps after fusion (:mod:`rcm_dask.ranking`): ``default``
    (``definitions,tests,diversity,whole_file``), ``all``, ``none``, or steps joined by
    ``,`` (``definitions,paths,tests``; ``default,-diversity`` drops one)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(
                f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}"
            )
        if not 0.0 <= self.vector_share <= 1.0:
            raise ConfigError(
                f"vector_share ({env_name('vector_share')}) must lie in 0..1, got "
                f"{self.vector_share}"
            )
        if self.vectors not in VECTORS:
            raise ConfigError(
                f"unknown vectors setting {self.vectors!r}; choose one of {', '.join(VECTORS)}"
            )
        for name in (
            "batch_size",
            "candidates",
            "commit_every",
            "cpu_batch_size",
            "max_file_size",
            "partition_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_workers", "max_inflight_batches", "torch_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.max_tokens is not None and self.max_tokens < 16:
            raise ConfigError(f"max_tokens must be at least 16, got {self.max_tokens}")
        from .embedding import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        for name in ("commit_seconds", "bm25_weight", "vector_weight", "vector_share", "wait"):
            value = getattr(self, name)
            # inf is a real answer only for wait (as long as it takes)
            if math.isnan(value) or (math.isinf(value) and name != "wait"):
                raise ConfigError(f"{name} ({env_name(name)}) must be a finite number, got {value}")
        if self.commit_seconds < 0:
            raise ConfigError(f"commit_seconds must not be negative, got {self.commit_seconds}")
        if self.rrf_k < 0 or self.bm25_weight < 0 or self.vector_weight < 0:
            raise ConfigError("rrf_k and fusion weights must not be negative")
        if self.bm25_weight == 0 and self.vector_weight == 0:
            raise ConfigError(
                "bm25_weight and vector_weight are both 0: every fused score would be 0; "
                "give one a positive weight (search --bm25 or --vector uses one ranking)"
            )
        check_globs(self.exclude, "exclude")
        from .ranking import RankingConfig

        try:
            RankingConfig.from_spec(self.ranking)
        except ValueError as e:
            raise ConfigError(str(e)) from e

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> IndexConfig:
        """Build a config from ``RCM_*`` variables, then apply explicit ``overrides``.

        Parameters
        ----------
        environ
            Mapping to read (default ``os.environ``).
        **overrides
            Field values that win over the environment; ``None`` values are ignored
            so that unset CLI options fall through.

        Raises
        ------
        ConfigError
            A variable cannot be converted to its field's type.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> IndexConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def check_globs(patterns: Sequence[str], what: str) -> pathspec.GitIgnoreSpec:
    """Compile gitignore-style globs, refusing those that could never match (an unclosed
    ``[``, a trailing ``\\``, a comment) instead of letting them filter out everything.

    Raises
    ------
    ConfigError
        Names the pattern and why.

    Examples
    --------
    >>> check_globs(["src/io/**"], "path_glob").match_file("src/io/mod.rs")
    True
    >>> check_globs(["src/[io"], "path_glob")
    Traceback (most recent call last):
    ...
    rcm_dask.errors.ConfigError: path_glob 'src/[io' is not a valid glob: '[' is never closed
    """
    for pattern in patterns:
        text = pattern.strip()
        if not text:
            raise ConfigError(f"{what} has an empty pattern")
        if text.startswith("#"):
            raise ConfigError(
                f"{what} {pattern!r} is not a valid glob: '#' starts a comment (write \\# "
                "for a name that starts with #)"
            )
        try:
            spec = pathspec.GitIgnoreSpec.from_lines([pattern])
        except ValueError as e:
            raise ConfigError(f"{what} {pattern!r} is not a valid glob: {e}") from e
        if spec.patterns and spec.patterns[0].include is None:
            why = "'[' is never closed" if "[" in text else "it can never match a path"
            raise ConfigError(f"{what} {pattern!r} is not a valid glob: {why}")
    return pathspec.GitIgnoreSpec.from_lines(list(patterns))


def configure(config: IndexConfig | None = None, **overrides: Any) -> IndexConfig:
    """``config`` (default: :meth:`IndexConfig.from_env`) with the ``overrides`` that are
    not None: how every entry point (index, dry run, search) applies its keyword arguments.

    Raises
    ------
    ConfigError
        An override names no :class:`IndexConfig` field.

    Examples
    --------
    >>> configure(IndexConfig(), batch_size=64, mode=None).batch_size
    64
    """
    config = config or IndexConfig.from_env()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return config
    try:
        return config.replace(**changes)
    except TypeError as e:
        raise ConfigError(str(e)) from e


def env_name(field_name: str) -> str:
    """``batch_size`` -> ``RCM_BATCH_SIZE``."""
    return "RCM_" + field_name.upper()


def _convert(name: str, type_name: str, raw: str) -> Any:
    """Convert one environment string to a field's type."""
    try:
        if "bool" in type_name:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "tuple" in type_name:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
        return raw
    except ValueError as e:
        raise ConfigError(f"{env_name(name)}={raw!r} is not a valid {type_name}") from e


def data_home() -> Path:
    """Folder that holds the default indexes: ``$RCM_HOME``, else ``$XDG_DATA_HOME/rcm_dask``,
    else ``~/.local/share/rcm_dask``."""
    if os.environ.get("RCM_HOME"):
        return Path(os.environ["RCM_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "rcm_dask"


def default_index_dir(root_url: str) -> Path:
    """The default index folder of a codebase: ``<data_home>/indexes/<name>-<hash8>``.

    The name is the root's last path component, for people; the hash of the full
    root URL keeps two codebases with the same name apart.
    """
    stripped = root_url.rstrip("/")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stripped.rsplit("/", 1)[-1]) or "root"
    digest = hashlib.sha256(stripped.encode()).hexdigest()[:8]
    return data_home() / "indexes" / f"{name}-{digest}"
