"""Index identity: what an index folder was built with, and the rules that keep one index whole.

An index folder records its identity in ``identity.json``
(:func:`~rcm_dask.stores.manifest.read_identity`): the layout format, the chunker
version, the codebase root, the ``vectors`` setting and, with vectors, the model's
weights, width and precision (a keyword-only index names its tokenizer instead). A run
works out the identity its index must have (:func:`run_identity`) and adds to an
existing index only when the two agree on :data:`IDENTITY_KEYS`
(:func:`check_identity`): two vector spaces never mix in one index, and an index with
vectors never gains files without them. Readers use the same rules to open the stores
an identity names (:func:`open_vectors_for`) and to tell an unusable ``identity.json``
(:func:`identity_problem`).

Index folder layout::

    <index_dir>/
      identity.json      this module's subject
      bm25/              Tantivy index of the chunks (BM25_DIR)
        files/           Tantivy index of the whole-file records (stores/file_records.py)
      vectors/           embedded Qdrant shard (VECTORS_DIR; absent with --qdrant-url: a
                         server collection, and with --vectors none: no vectors at all)
      manifest.sqlite    per file: size, mtime, sha256, chunk ids; the symbol tables
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IndexIdentityError, StoreBusyError
from .stores.manifest import IDENTITY_FILE, INDEX_FORMAT, READABLE_FORMATS, read_identity
from .stores.vectors import VectorStore, open_vector_store

if TYPE_CHECKING:
    from .embedding import Embedder
    from .sources import SourceRoot

BM25_DIR = "bm25"
"""The Tantivy index's folder inside an index folder."""
VECTORS_DIR = "vectors"
"""The embedded Qdrant shard's folder inside an index folder."""

# Keys that must match for a run to add to an existing index: anything that changes
# vectors or chunk ids. Two vector spaces must never mix in one index, and an index with
# vectors must not gain files without them (nor the reverse).
IDENTITY_KEYS = (
    "format",
    "vectors",
    "model",
    "model_fingerprint",
    "tokenizer_fingerprint",
    "dimensions",
    "max_tokens",
    "chunker_version",
    "root",
)

IDENTITY_DEFAULTS: dict[str, object] = {"vectors": "qdrant"}
"""Values of identity keys that older indexes do not record (every index had vectors
before ``vectors: none`` existed)."""

ONE_KIND_KEYS = frozenset({"model_fingerprint", "dimensions", "precision", "tokenizer_fingerprint"})
"""Identity keys that only one kind of index records: the vector keys (weights, width,
precision) only an index with vectors, the tokenizer's fingerprint only a keyword-only
one (its chunk ids depend on the tokenizer and the token budget, not on the weights)."""


def run_identity(root: SourceRoot, embedder: Embedder, vectors: str = "qdrant") -> dict[str, Any]:
    """The identity an index built by this run must have.

    With vectors it names the model's weights, width and precision
    (:attr:`~rcm_dask.embedding.Embedder.identity`). A keyword-only index
    (``vectors="none"``) names only what its chunk ids depend on, the tokenizer and
    the token budget (:attr:`~rcm_dask.embedding.Embedder.tokenizer_identity`): its
    identity does not change with the weights, and working it out loads neither them
    nor a device.
    """
    from .chunking import CHUNKER_VERSION

    if vectors == "none":
        model = _tokenizer_identity(embedder)
    else:
        model = dict(embedder.identity)
    return {
        "format": INDEX_FORMAT,
        "vectors": vectors,
        "chunker_version": CHUNKER_VERSION,
        "root": root.url,
        "model_dir": str(embedder.model_dir),
        **model,
    }


def _tokenizer_identity(embedder: Embedder) -> dict[str, Any]:
    """The embedder's tokenizer identity; for stand-ins without one (tests), its name,
    fingerprint and token budget."""
    found = getattr(embedder, "tokenizer_identity", None)
    if isinstance(found, dict):
        return dict(found)
    return {
        "model": embedder.name,
        "tokenizer_fingerprint": embedder.fingerprint,
        "max_tokens": embedder.max_tokens,
    }


def identity_mismatch(stored: dict[str, object], wanted: dict[str, object]) -> list[str]:
    """Human-readable differences between two identities on :data:`IDENTITY_KEYS`.

    When one index keeps vectors and the other does not, the keys of
    :data:`ONE_KIND_KEYS` are left out: the ``vectors`` line already says it all.

    Examples
    --------
    >>> identity_mismatch({"vectors": "none", "model": "m"}, {"model": "m"})
    ["vectors: index has 'none', this run uses 'qdrant'"]
    """

    def value(identity: dict[str, object], key: str) -> object:
        found = identity.get(key, IDENTITY_DEFAULTS.get(key))
        # every format this version reads is one it can add to
        return INDEX_FORMAT if key == "format" and found in READABLE_FORMATS else found

    vectors_differ = value(stored, "vectors") != value(wanted, "vectors")
    keys = [k for k in IDENTITY_KEYS if not (vectors_differ and k in ONE_KIND_KEYS)]
    diffs = [
        f"{key}: index has {value(stored, key)!r}, this run uses {value(wanted, key)!r}"
        for key in keys
        if value(stored, key) != value(wanted, key)
    ]
    # fp32, bf16 and fp16 vectors of one model agree to a cosine of 0.9999 and may share
    # an index (a CPU run adding to a GPU-built one); int8's agree only to about 0.9
    old, new = (str(x.get("precision") or "fp32") for x in (stored, wanted))
    if old != new and "int8" in (old, new) and not vectors_differ:
        diffs.append(f"precision: index has {old!r}, this run uses {new!r}")
    return diffs


def keeps_vectors(identity: Mapping[str, Any]) -> bool:
    """Whether an index identity has a vector store (false for ``vectors: none``; indexes
    from before the setting existed all have one)."""
    return identity.get("vectors", "qdrant") != "none"


def vectors_setting(identity: Mapping[str, Any]) -> str:
    """An identity's ``vectors`` setting: ``qdrant`` or ``none`` (keyword-only)."""
    return "qdrant" if keeps_vectors(identity) else "none"


def collection_name(index_dir: str | Path) -> str:
    """Qdrant collection used for an index folder on a Qdrant server."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(index_dir).resolve().name)
    return f"rcm_{name}"


def check_identity(
    index_dir: Path, identity: dict[str, Any], qdrant_url: str | None, force: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Complete a run's identity with its vector backend and check it against the folder's.

    Returns
    -------
    (identity, stored)
        The completed identity, and the one the folder holds (None for a new index).

    Raises
    ------
    IndexIdentityError
        The folder holds an index built differently and ``force`` is false.
    """
    identity = dict(identity)
    if not keeps_vectors(identity):
        qdrant_url = None
        identity["vector_backend"] = "none"
    else:
        identity["vector_backend"] = "qdrant-server" if qdrant_url else "qdrant-edge"
    identity["qdrant_url"] = qdrant_url or ""
    stored = read_identity(index_dir)
    identity["collection"] = collection_name(index_dir) if qdrant_url else ""
    if qdrant_url and stored and not force and stored.get("qdrant_url") == qdrant_url:
        # a forced rebuild wrote the collection named after its own folder (stores/swap.py)
        identity["collection"] = str(stored.get("collection") or identity["collection"])
    if stored is not None and not force:
        diffs = identity_mismatch(stored, identity)
        if dimensions_repair(stored, identity):  # a wrong record, not another model
            diffs = [d for d in diffs if not d.startswith("dimensions:")]
        old, new = vectors_setting(stored), vectors_setting(identity)
        if old != new:
            # the one difference a plain re-run most often has: say it in words
            what = {"none": "keyword-only, no vectors", "qdrant": "BM25 and vectors"}
            rest = [d for d in diffs if not d.startswith("vectors:")]
            also = f" It also differs in: {'; '.join(rest)}." if rest else ""
            raise IndexIdentityError(
                f"the index at {index_dir} was built with --vectors {old} ({what[old]}), "
                f"but this run uses --vectors {new}: one index never mixes the two.{also} "
                f"Re-run with --vectors {old} to update it as it was built, or with --force "
                f"--vectors {new} to rebuild it, or use another --index-dir."
            )
        if diffs:
            raise IndexIdentityError(
                f"the index at {index_dir} was built differently ("
                + "; ".join(diffs)
                + "). Re-run with --force to rebuild it, or use another --index-dir."
            )
        if stored.get("qdrant_url", "") != identity["qdrant_url"]:
            raise IndexIdentityError(
                f"the index at {index_dir} keeps its vectors in "
                f"{stored.get('qdrant_url') or 'the embedded Qdrant shard'}, not "
                f"{qdrant_url or 'the embedded Qdrant shard'}. Re-run with --force to "
                "rebuild it there."
            )
    return identity, stored


def open_vectors_for(
    index_dir: Path,
    identity: dict[str, Any],
    qdrant_api_key: str | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
) -> VectorStore:
    """The vector store an identity names (embedded shard or server collection);
    ``create=False`` (readers) raises IndexNotFoundError instead of making a missing one,
    ``readonly`` shares this process's open reader of the embedded shard."""
    url = identity.get("qdrant_url") or None
    return open_vector_store(
        index_dir,
        int(identity["dimensions"]),
        qdrant_url=str(url) if url else None,
        collection=str(identity.get("collection") or collection_name(index_dir)),
        api_key=qdrant_api_key,
        create=create,
        readonly=readonly,
    )


def open_vectors_waiting(
    index_dir: Path, identity: dict[str, Any], qdrant_api_key: str | None, busy_wait: float
) -> VectorStore:
    """:func:`open_vectors_for` for a writer: a searcher holding the embedded shard for a
    query is waited for, up to ``busy_wait`` seconds, before its StoreBusyError is raised."""
    deadline = time.monotonic() + busy_wait
    while True:
        try:
            return open_vectors_for(index_dir, identity, qdrant_api_key)
        except StoreBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def dimensions_repair(stored: Mapping[str, Any], identity: Mapping[str, Any]) -> str:
    """Why ``identity.json``'s ``dimensions`` can be corrected in place (``""`` when not).

    The model fingerprint hashes the weights and config, which fix the vector width: an
    index whose record names this run's model by fingerprint but another width holds a
    wrong record (an edit by hand), not vectors of another model, and a plain run
    corrects it instead of asking for ``--force``.

    Examples
    --------
    >>> dimensions_repair({"vectors": "qdrant", "model_fingerprint": "f", "dimensions": 385},
    ...                   {"vectors": "qdrant", "model_fingerprint": "f", "dimensions": 384})[:40]
    'identity.json recorded dimensions 385, b'
    """
    if not (keeps_vectors(stored) and keeps_vectors(identity)):
        return ""
    fingerprint = stored.get("model_fingerprint")
    if not fingerprint or fingerprint != identity.get("model_fingerprint"):
        return ""
    if str(stored.get("dimensions")) == str(identity.get("dimensions")):
        return ""
    return (
        f"{IDENTITY_FILE} recorded dimensions {stored.get('dimensions')!r}, but the model it "
        f"names (same fingerprint) gives {identity.get('dimensions')}: record corrected"
    )


def identity_problem(identity: Mapping[str, Any]) -> str:
    """Why an identity read from ``identity.json`` cannot be used (``""`` when it can).

    Examples
    --------
    >>> identity_problem({"format": "unreadable"})
    'identity.json is not a JSON object'
    >>> identity_problem({"model": "m", "root": "/r", "chunker_version": "3"})
    'identity.json lacks dimensions'
    """
    if identity.get("format") == "unreadable":
        return f"{IDENTITY_FILE} is not a JSON object"
    need = ["model", "root", "chunker_version"]
    if keeps_vectors(identity):
        need.append("dimensions")
    missing = [key for key in need if key not in identity]
    if missing:
        return f"{IDENTITY_FILE} lacks {', '.join(missing)}"
    if keeps_vectors(identity):
        try:
            ok = int(identity["dimensions"]) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{IDENTITY_FILE} has no usable dimensions ({identity['dimensions']!r})"
    return ""
