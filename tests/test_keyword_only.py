"""Keyword-only indexes (``vectors="none"``): BM25 and code intelligence, nothing embedded.

The promise checked here: every mode builds the same chunk ids and the same BM25 documents
as a run with vectors, without an embedding task or a model's weights anywhere (driver or
workers); an index never mixes the two settings; search answers from BM25 and says so.
"""

from __future__ import annotations

import json
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import index, open_index
from rcm_dask.dataflow import DaskRun
from rcm_dask.embedding import Embedder, bundled_model_dir
from rcm_dask.errors import ConfigError, IndexIdentityError
from rcm_dask.identity import IDENTITY_KEYS, identity_mismatch
from rcm_dask.identity import run_identity as _run_identity
from rcm_dask.search import KEYWORD_ONLY_NOTICE, SearchIndex
from rcm_dask.sources import discover_sources, open_root
from rcm_dask.stages import gather_segments, keyword_batch, read_chunk_partition
from rcm_dask.stores.bm25 import Bm25Store
from rcm_dask.stores.manifest import Manifest, read_identity
from rcm_dask.testing import HashEmbedder, config_for, index_snapshot

from . import DATA

MODES = ("sequential", "parallel", "pipeline")

COLLECTIONS = [
    "mod.rs",
    "btree/mem.rs",
    "btree/borrow.rs",
    "btree/split.rs",
    "btree/append.rs",
    "vec_deque/ring_slices.rs",
    "vec_deque/drain.rs",
]
"""Small files of alloc/src/collections, at their paths under src/."""


def _long_function(name: str, lines: int) -> str:
    """A function long enough to be split into parts by any token budget used here."""
    body = "\n".join(
        f"    let value_{i} = compute_{i % 7}(value_{max(i - 1, 0)}, {i});" for i in range(lines)
    )
    return f"/// Long on purpose: split by tokens.\npub fn {name}() -> u64 {{\n{body}\n    0\n}}\n"


def _write_crate(root: Path, rust_src: Path | None) -> Path:
    """A codebase with rust-src files (when given), long items to split and a broken file."""
    if rust_src is not None:
        src = rust_src / "library" / "alloc" / "src" / "collections"
        for rel in COLLECTIONS:
            dest = root / "src" / "collections" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / rel, dest)
    shutil.copytree(DATA / "mini_crate", root, dirs_exist_ok=True)
    (root / "src" / "long.rs").write_text(_long_function("sum_everything", 120))
    shutil.copy(DATA / "broken.rs", root / "src" / "broken.rs")
    return root


@pytest.fixture(scope="module")
def corpus(rust_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_crate(tmp_path_factory.mktemp("kw") / "crate", rust_src)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """The mini crate with a long function: no rust-src needed."""
    return _write_crate(tmp_path / "small", None)


# small partitions and an odd batch size: several partitions, batches across files
_config = partial(config_for, partition_bytes=8_000, batch_size=7)


def _snapshot(index_dir: Path) -> dict[str, Any]:
    """Manifest rows (hash and chunk ids in order) and BM25 documents of an index."""
    snap = index_snapshot(index_dir)
    snap["files"] = {path: (f.sha256, f.chunk_ids) for path, f in snap["files"].items()}
    return snap


def _no_weights(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any attempt to load model weights in this process fail loudly; returns the log."""
    calls: list[str] = []

    def refuse(self: Embedder) -> Any:
        calls.append(str(self.model_dir))
        raise AssertionError(f"model weights of {self.model_dir} were loaded")

    monkeypatch.setattr(Embedder, "_model", refuse)
    return calls


def _weightless_model(dest: Path) -> Path:
    """The bundled model's folder without its weight files: tokenizer and config only."""
    shutil.copytree(
        bundled_model_dir(),
        dest,
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "*.h5", "*.msgpack"),
    )
    return dest


# --------------------------------------------------------------------------- identity


def test_identity_names_the_tokenizer_not_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _no_weights(monkeypatch)
    root = open_root(str(DATA / "mini_crate"))
    emb = Embedder()
    keyword = _run_identity(root, emb, "none")
    full = _run_identity(root, emb, "qdrant")
    assert keyword["vectors"] == "none" and full["vectors"] == "qdrant"
    assert keyword["model"] == full["model"] == emb.name
    assert keyword["max_tokens"] == full["max_tokens"] == 256
    assert keyword["tokenizer_fingerprint"] == emb.tokenizer_fingerprint
    assert not {"dimensions", "precision", "model_fingerprint"} & set(keyword)
    assert {"dimensions", "precision", "model_fingerprint"} <= set(full)
    assert calls == []

    # other weights with the same tokenizer: the same keyword-only index, another vector space
    other = _weightless_model(tmp_path / "other")
    (other / "model.safetensors").write_bytes(b"not the same weights")
    emb2 = Embedder(other)
    emb2.name = emb.name
    assert identity_mismatch(keyword, _run_identity(root, emb2, "none")) == []
    assert [d.split(":")[0] for d in identity_mismatch(full, _run_identity(root, emb2))] == [
        "model_fingerprint"
    ]
    # another tokenizer does change a keyword-only index's chunk ids
    (other / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    emb3 = Embedder(other)
    emb3.name = emb.name
    diffs = identity_mismatch(keyword, _run_identity(root, emb3, "none"))
    assert [d.split(":")[0] for d in diffs] == ["tokenizer_fingerprint"]


@pytest.mark.parametrize(
    ("stored", "wanted", "keys"),
    [
        # indexes from before the setting all keep vectors
        ({"model": "m", "dimensions": 3}, {"vectors": "qdrant", "model": "m", "dimensions": 3}, []),
        (
            {"vectors": "none", "model": "m", "tokenizer_fingerprint": "t", "max_tokens": 8},
            {"vectors": "none", "model": "m", "tokenizer_fingerprint": "t", "max_tokens": 8},
            [],
        ),
        # the other setting: one line, not one per key only one kind records
        (
            {"vectors": "none", "model": "m", "tokenizer_fingerprint": "t", "max_tokens": 8},
            {"model": "m", "model_fingerprint": "w", "dimensions": 3, "max_tokens": 8},
            ["vectors"],
        ),
        (
            {"model": "m", "dimensions": 3, "precision": "int8", "max_tokens": 8},
            {"vectors": "none", "model": "m", "tokenizer_fingerprint": "t", "max_tokens": 8},
            ["vectors"],
        ),
        # what changes chunk ids is still named
        (
            {"vectors": "none", "model": "m", "max_tokens": 8},
            {"vectors": "qdrant", "model": "m", "max_tokens": 16},
            ["vectors", "max_tokens"],
        ),
    ],
)
def test_identity_mismatch_between_settings(
    stored: dict[str, object], wanted: dict[str, object], keys: list[str]
) -> None:
    assert "vectors" in IDENTITY_KEYS
    assert [d.split(":")[0] for d in identity_mismatch(stored, wanted)] == keys


# --------------------------------------------------------------------------- stage functions


def test_keyword_batches_are_the_chunks_without_vectors(small: Path) -> None:
    src = open_root(str(small))
    refs = discover_sources(src).files
    part = read_chunk_partition(refs, src.fs, HashEmbedder())
    assert part.n_chunks > 10
    batch = gather_segments([(part, 2, 5), (part, 0, 1)])
    assert batch.vectors is None
    assert batch.chunks == part.chunks[2:5] + part.chunks[:1]
    assert keyword_batch(part.chunks).chunks == part.chunks


# --------------------------------------------------------------------------- every mode


def _index_keyword_only(corpus: Path, idx: Path, mode: str, dask_client: Any) -> Any:
    """Index ``corpus`` keyword-only into ``idx`` in ``mode`` (on the cluster unless sequential)."""
    client = None if mode == "sequential" else dask_client
    return index(
        str(corpus),
        _config(idx, vectors="none"),
        mode=mode,
        client=client,
        embedder=HashEmbedder(),
    )


@pytest.fixture(scope="module")
def built(corpus: Path, dask_client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The corpus indexed with vectors once (sequential), and keyword-only in every mode."""
    out: dict[str, Any] = {}
    base = tmp_path_factory.mktemp("kw-qdrant")
    stats = index(str(corpus), _config(base), mode="sequential", embedder=HashEmbedder())
    out["qdrant"] = (stats, _snapshot(base), base)
    for mode in MODES:
        idx = tmp_path_factory.mktemp(f"kw-{mode}")
        stats = _index_keyword_only(corpus, idx, mode, dask_client)
        out[mode] = (stats, _snapshot(idx), idx)
    return out


@pytest.mark.cluster
@pytest.mark.parametrize("mode", MODES)
class TestKeywordOnlyModes:
    """Each mode's keyword-only index against the index with vectors of the same tree."""

    def test_same_chunk_ids_as_with_vectors(self, built: dict, mode: str) -> None:
        want, got = built["qdrant"][1], built[mode][1]
        assert len(want["files"]) >= 10
        assert got["files"] == want["files"]  # paths, hashes, chunk ids in order
        parts = [cid for _, ids in want["files"].values() for cid in ids]
        assert len(parts) == len(set(parts)) > 100

    def test_same_bm25_documents_as_with_vectors(self, built: dict, mode: str) -> None:
        want, got = built["qdrant"][1], built[mode][1]
        assert got["docs"] == want["docs"]
        assert any(int(d.get("parts") or 1) > 1 for d in got["docs"].values())

    def test_same_whole_file_records_as_with_vectors(self, built: dict, mode: str) -> None:
        """Files whose chunks came in several cross-file batches get the same record."""
        queries = ("split a node of the tree", "drain the ring buffer slices", "sum everything")
        found = {}
        for name in ("qdrant", mode):
            with Bm25Store.open(built[name][2] / "bm25") as store:
                found[name] = (
                    store.file_record_paths(),
                    [[(p, round(s, 4)) for p, s in store.search_files(q)] for q in queries],
                )
        assert found[mode] == found["qdrant"]
        paths, results = found[mode]
        assert paths == sorted(built[mode][1]["files"]) and all(results)

    def test_nothing_embedded_and_no_vector_store(self, built: dict, mode: str) -> None:
        stats, _, idx = built[mode]
        assert stats.mode == mode and stats.vectors == "none"
        assert stats.chunks_embedded == 0 and stats.embed_workers == {}
        assert "embed" not in stats.stage_seconds and "embed" not in stats.stage_spans
        assert (
            stats.chunks == stats.chunks_made == stats.chunks_written == built["qdrant"][0].chunks
        )
        assert stats.chunks_with_errors == built["qdrant"][0].chunks_with_errors > 0
        assert stats.batches > 0
        assert "keyword-only (nothing embedded)" in str(stats)
        assert stats.to_dict()["vectors"] == "none"
        assert not (idx / "vectors").exists()
        ident = read_identity(idx)
        assert ident is not None
        assert ident["vectors"] == "none" and ident["vector_backend"] == "none"
        assert "dimensions" not in ident and "model_fingerprint" not in ident

    def test_cross_file_batches_in_cluster_modes(self, built: dict, mode: str) -> None:
        stats = built[mode][0]
        if mode == "sequential":  # one batch per file with chunks
            assert stats.batches == sum(1 for _, ids in built[mode][1]["files"].values() if ids)
        else:  # exactly BATCHES_PER_TASK x batch_size chunks, except the last
            assert stats.batches == -(-stats.chunks // (7 * DaskRun.BATCHES_PER_TASK))

    def test_rerun_with_nothing_changed_is_a_no_op(
        self, built: dict, mode: str, corpus: Path, dask_client: Any
    ) -> None:
        idx = built[mode][2]
        again = _index_keyword_only(corpus, idx, mode, dask_client)
        assert again.files_indexed == 0 and again.files_unchanged == again.files_seen
        assert _snapshot(idx) == built[mode][1]


@pytest.mark.cluster
def test_pipeline_keeps_its_backpressure(
    corpus: Path, dask_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No more than ``max_inflight_batches`` batches between chunking and the writer."""
    in_flight: list[int] = []
    submit, on_batch = DaskRun.submit_batch, DaskRun._on_batch
    count = [0]

    def counted_submit(self: DaskRun, segments: Any) -> Any:
        count[0] += 1
        in_flight.append(count[0])
        return submit(self, segments)

    def counted_done(self: DaskRun, fut: Any) -> None:
        count[0] -= 1
        on_batch(self, fut)

    monkeypatch.setattr(DaskRun, "submit_batch", counted_submit)
    monkeypatch.setattr(DaskRun, "_on_batch", counted_done)
    stats = index(
        str(corpus),
        _config(tmp_path / "idx", vectors="none", batch_size=1, max_inflight_batches=2),
        mode="pipeline",
        client=dask_client,
        embedder=HashEmbedder(),
    )
    assert stats.batches == len(in_flight) > 10
    assert max(in_flight) <= 2 and count[0] == 0


# --------------------------------------------------------------------------- one setting per index


def test_the_other_setting_is_refused_both_ways_and_force_rebuilds(
    small: Path, tmp_path: Path
) -> None:
    keyword, full = tmp_path / "keyword", tmp_path / "full"
    emb = HashEmbedder()
    index(str(small), _config(keyword, vectors="none"), mode="sequential", embedder=emb)
    index(str(small), _config(full), mode="sequential", embedder=emb)
    before = _snapshot(keyword), _snapshot(full)

    with pytest.raises(IndexIdentityError) as e:
        index(str(small), _config(keyword), mode="sequential", embedder=emb)
    message = str(e.value)
    assert "built with --vectors none" in message and "this run uses --vectors qdrant" in message
    assert "Re-run with --vectors none" in message and "--force --vectors qdrant" in message
    with pytest.raises(IndexIdentityError, match="Re-run with --vectors qdrant") as e:
        index(str(small), _config(full, vectors="none"), mode="sequential", embedder=emb)
    assert "built with --vectors qdrant" in str(e.value)
    # refused before anything was written
    assert (_snapshot(keyword), _snapshot(full)) == before
    assert not (keyword / "vectors").exists() and (full / "vectors").exists()

    # --force rebuilds with the other setting, to the same chunks
    stats = index(
        str(small), _config(full, vectors="none"), mode="sequential", embedder=emb, force=True
    )
    assert stats.vectors == "none" and not (full / "vectors").exists()
    assert _snapshot(full) == before[0]
    stats = index(str(small), _config(keyword), mode="sequential", embedder=emb, force=True)
    assert stats.vectors == "qdrant" and stats.chunks_embedded == stats.chunks
    with SearchIndex(keyword, embedder=emb) as idx:
        assert not idx.keyword_only and idx.vectors.count() == stats.chunks
        assert idx.search("parse config", mode="vector")
    assert _snapshot(keyword) == before[1]


def test_the_dry_run_plans_keyword_only_and_warns_of_the_other_setting(
    small: Path, tmp_path: Path
) -> None:
    from rcm_dask.dryrun import DEFAULT_KEYWORD_CHUNKS_PER_SECOND, plan_dry_run

    idx = tmp_path / "idx"
    plan = plan_dry_run(str(small), index_dir=str(idx), vectors="none", embedder=HashEmbedder())
    assert plan.vectors == "none" and plan.chunks_per_second == DEFAULT_KEYWORD_CHUNKS_PER_SECOND
    assert "keyword-only" in str(plan).splitlines()[0]
    index(str(small), _config(idx), mode="sequential", embedder=HashEmbedder())
    plan = plan_dry_run(str(small), index_dir=str(idx), vectors="none", embedder=HashEmbedder())
    assert any("--vectors qdrant" in w and "refused" in w for w in plan.warnings)


# --------------------------------------------------------------------------- search and intel


@pytest.fixture
def pair(small: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(keyword-only index, index with vectors) of the same small crate."""
    keyword, full = tmp_path / "keyword", tmp_path / "full"
    index(str(small), _config(keyword, vectors="none"), mode="sequential", embedder=HashEmbedder())
    index(str(small), _config(full), mode="sequential", embedder=HashEmbedder())
    return keyword, full


def test_hybrid_search_answers_from_bm25_and_says_so(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    keyword, full = pair
    calls = _no_weights(monkeypatch)
    built: list[object] = []
    # the module, not the function rcm_dask.search that shadows it as an attribute
    search_module = sys.modules[SearchIndex.__module__]
    monkeypatch.setattr(search_module, "Embedder", lambda *a, **k: built.append(a))
    with open_index(keyword) as idx:
        assert idx.keyword_only
        hybrid = idx.search("parse toml config", limit=5)
        assert idx.notices == [KEYWORD_ONLY_NOTICE]
        assert "keyword-only index: hybrid search used BM25 only" in idx.notices[0]
        bm25 = idx.search("parse toml config", limit=5, mode="bm25")
        assert idx.notices == []
        assert hybrid == bm25 and hybrid[0].name == "parse_toml_config"
        assert all(h.vector_rank is None and h.bm25_rank for h in hybrid)
        with pytest.raises(ConfigError, match="keyword-only") as e:
            idx.search("parse toml config", mode="vector")
        assert "--force --vectors qdrant" in str(e.value)
        with pytest.raises(ConfigError, match="keyword-only"):
            _ = idx.vectors
        info = idx.stats()
        assert info.vectors == "none" and info.to_dict()["vectors"] == "none"
        assert "vectors:  none (keyword-only" in str(info)
        assert "dims" not in str(info)
    assert calls == [] and built == []  # no query embedder, no weights
    with open_index(full, embedder=HashEmbedder()) as idx:
        assert not idx.keyword_only and idx.stats().vectors == "qdrant"
        assert "vectors:  embedded Qdrant" in str(idx.stats())


def test_code_intelligence_is_the_same_without_vectors(pair: tuple[Path, Path]) -> None:
    keyword, full = pair
    with open_index(keyword) as a, open_index(full, embedder=HashEmbedder()) as b:
        assert a.find_definition("Config") == b.find_definition("Config") != []
        assert a.find_references("parse_toml_config") == b.find_references("parse_toml_config")
        assert a.find_references("from_toml") != []
        assert a.call_graph("parse_toml_config") == b.call_graph("parse_toml_config")
        assert a.dependencies("src/lib.rs") == b.dependencies("src/lib.rs")
        assert a.complexity("src/long.rs") == b.complexity("src/long.rs")


def test_status_lists_keyword_only_indexes_as_such(small: Path) -> None:
    from click.testing import CliRunner

    from rcm_dask.cli import main

    index(str(small), mode="sequential", vectors="none", embedder=HashEmbedder())
    listed = CliRunner().invoke(main, ["status"], catch_exceptions=False).stdout
    assert f"{small}  ->  " in listed and ", keyword-only)" in listed


def test_cli_rerun_keeps_the_setting_the_index_was_built_with(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain CLI re-run of a keyword-only index stays keyword-only (as the MCP tool's
    does); naming the other setting is still refused, and --force rebuilds with the default."""
    from click.testing import CliRunner

    from rcm_dask.cli import main

    monkeypatch.delenv("RCM_VECTORS", raising=False)
    loaded = _no_weights(monkeypatch)
    idx = tmp_path / "idx"
    base = ["index", str(small), "--index-dir", str(idx), "--mode", "sequential", "--json"]
    runner = CliRunner()
    first = runner.invoke(main, [*base, "--vectors", "none"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    (small / "src" / "extra.rs").write_text("pub fn added_later() -> u8 { 7 }\n")
    again = runner.invoke(main, base, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    stats = json.loads(again.stdout)
    assert stats["vectors"] == "none" and stats["files_indexed"] == 1
    assert loaded == []
    refused = runner.invoke(main, [*base, "--vectors", "qdrant"], catch_exceptions=False)
    assert refused.exit_code == 1
    assert "built with --vectors none" in " ".join(refused.output.split())


# --------------------------------------------------------------------------- the real model


def test_real_default_model_run_loads_no_weights(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled model as a plain run uses it: its tokenizer splits, its weights stay put."""
    calls = _no_weights(monkeypatch)
    idx = tmp_path / "idx"
    stats = index(str(small), index_dir=str(idx), mode="sequential", vectors="none")
    assert calls == [] and stats.chunks_embedded == 0 and stats.vectors == "none"
    ident = read_identity(idx)
    assert ident is not None
    emb = Embedder()
    assert ident["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ident["tokenizer_fingerprint"] == emb.tokenizer_fingerprint
    assert ident["max_tokens"] == 256
    # the long function was split with the real tokenizer's budget
    m = Manifest(idx, readonly=True)
    try:
        parts = {f.path: len(f.chunk_ids) for f in m.files()}
    finally:
        m.close()
    assert parts["src/long.rs"] > 2
    with open_index(idx) as found:
        assert found.search("sum_everything", limit=1)[0].name == "sum_everything"
        assert found.notices == [KEYWORD_ONLY_NOTICE]
        # a question of its words: the function and its file's outline, nothing else first
        top = found.search("sum everything", limit=2)
        assert {h.path for h in top} == {"src/long.rs"}
        assert "sum_everything" in {h.name for h in top}
    assert calls == []


@pytest.mark.cluster
def test_pipeline_on_a_local_cluster_without_weights_on_disk(
    small: Path, tmp_path: Path, dask_client: Any
) -> None:
    """Workers chunk with the real tokenizer from a model folder that has no weights at all:
    any attempt to load them, on the driver or on a worker, would fail the run."""
    model = _weightless_model(tmp_path / "no-weights")
    assert not list(model.glob("*.safetensors"))
    idx = tmp_path / "idx"
    stats = index(
        str(small),
        _config(idx, vectors="none", model=str(model)),
        mode="pipeline",
        client=dask_client,
    )
    assert stats.mode == "pipeline" and stats.chunks_embedded == 0 and stats.chunks > 10
    assert stats.writer_worker.startswith("tcp://")
    # the same chunks as the bundled model's tokenizer makes in-process
    ref = tmp_path / "ref"
    index(str(small), index_dir=str(ref), mode="sequential", vectors="none")
    assert _snapshot(idx) == _snapshot(ref)


@pytest.mark.slow
def test_same_chunk_ids_as_a_real_model_run_with_vectors(
    small: Path, tmp_path: Path, real_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real embedding run of the bundled model: the same chunk ids and documents."""
    full = tmp_path / "full"
    stats = index(str(small), index_dir=str(full), mode="sequential", embedder=real_embedder)
    assert stats.chunks_embedded == stats.chunks
    keyword = tmp_path / "keyword"
    calls = _no_weights(monkeypatch)
    index(str(small), index_dir=str(keyword), mode="sequential", vectors="none")
    assert calls == []
    assert _snapshot(keyword) == _snapshot(full)


# --------------------------------------------------------------------------- MCP tools


@pytest.mark.slow
def test_mcp_tools_on_a_keyword_only_index(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """index_codebase(vectors="none") through a real child run with a model folder that has
    no weights; search says BM25 only, vector tools refuse, navigation answers; a plain
    re-run keeps the setting, the other one is refused."""
    from rcm_dask.errors import RcmError
    from rcm_dask.mcp_server import CodeTools
    from rcm_dask.roots import AllowedRoots

    monkeypatch.setenv("RCM_MODEL", str(_weightless_model(tmp_path / "no-weights")))
    tools = CodeTools(roots=AllowedRoots.from_settings([str(small)]))
    try:
        root = str(small)
        run = tools.index_codebase(root, "sequential", wait_seconds=120, vectors="none")
        assert run.state == "ready", run
        assert run.run is not None and run.run.vectors == "none"
        assert run.stats is not None and run.stats["vectors"] == "none"
        status = tools.status(root)
        assert status.state == "ready" and status.vectors == "none"
        assert "vectors: none (keyword-only" in str(status)

        found = tools.search("parse toml config", root)
        assert found.mode == "bm25" and found.hits[0].name == "parse_toml_config"
        assert KEYWORD_ONLY_NOTICE in found.notices
        assert "Note: keyword-only index: hybrid search used BM25 only" in str(found)
        assert tools.search("parse toml config", root, mode="bm25").notices == []
        with pytest.raises(ConfigError, match="--vectors qdrant"):
            tools.search("parse toml config", root, mode="vector")
        with pytest.raises(RcmError, match="keyword-only") as e:
            tools.get_similar_code("parse_toml_config", root)
        assert "vectors='qdrant', force=True" in str(e.value)

        assert tools.find_definition("Config", root).definitions
        assert tools.find_references("from_toml", root).references
        health = tools._check_index(root, Path(status.index_dir))
        assert health.bm25.ok and health.vectors.ok and "keyword-only" in health.vectors.detail

        again = tools.index_codebase(root, "sequential", wait_seconds=120)
        assert again.state == "ready" and again.run is not None and again.run.vectors == "none"
        with pytest.raises(RcmError, match="built with --vectors none"):
            tools.index_codebase(root, "sequential", wait_seconds=120, vectors="qdrant")
    finally:
        tools.close()
