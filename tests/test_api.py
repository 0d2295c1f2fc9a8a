"""The Python API: index() keywords and progress, open_index() -> Index, records that print
and convert, a user's own Dask client."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import rcm_dask
from rcm_dask import ConfigError, Hit, Index, IndexInfo, IndexStats, SearchIndex
from rcm_dask.progress import ProgressDisplay
from rcm_dask.testing import HashEmbedder, backdate

STATUS_KEYS = {
    "index_dir",
    "root",
    "files",
    "chunks",
    "bm25_documents",
    "updated",
    "updated_ago_s",
    "identity",
    "vectors",
    "last_run",
    "pending",
    "writer",
}


@pytest.fixture
def crate(crate: Path) -> Path:
    """The mini crate, its files an hour old (files just written would be re-read by the next run)."""
    backdate(crate)
    return crate


@pytest.fixture
def built(crate: Path, tmp_path: Path) -> tuple[Path, Path, IndexStats]:
    idx = tmp_path / "idx"
    stats = rcm_dask.index(str(crate), index_dir=str(idx), embedder=HashEmbedder())
    return crate, idx, stats


def test_index_takes_index_dir_as_a_keyword_and_shows_progress_lines_in_a_log(
    crate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx = tmp_path / "elsewhere"
    stats = rcm_dask.index(str(crate), index_dir=str(idx), embedder=HashEmbedder(), progress=True)
    assert stats.index_dir == str(idx) and (idx / "identity.json").exists()
    captured = capsys.readouterr()
    assert captured.out == ""  # progress never goes to stdout
    lines = captured.err.splitlines()
    assert lines[0] == "indexing: 0/4 files, 0 chunks written, 0.0 chunks/s"
    assert lines[-1].startswith(f"indexed: 4/4 files, {stats.chunks} chunks written, ")
    assert "embed " in lines[-1] and "write " in lines[-1]


def test_progress_false_is_silent_and_a_callable_gets_the_running_stats(
    crate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rcm_dask.index(
        str(crate), index_dir=str(tmp_path / "a"), embedder=HashEmbedder(), progress=False
    )
    assert capsys.readouterr().err == ""
    seen: list[tuple[int, int, str]] = []

    def on_progress(stats: IndexStats, path: str) -> None:
        seen.append((stats.files_done, stats.chunks, path))

    rcm_dask.index(
        str(crate), index_dir=str(tmp_path / "b"), embedder=HashEmbedder(), progress=on_progress
    )
    assert seen[0] == (0, 0, "") and seen[-1][0] == 4
    assert {p for _, _, p in seen} >= {"src/lib.rs", "src/net/mod.rs"}


def test_progress_in_jupyter_without_widgets_is_one_line_updated_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rcm_dask import progress

    monkeypatch.setattr(progress, "_has_ipywidgets", lambda: False)
    display = ProgressDisplay(Console(file=io.StringIO(), force_jupyter=True))
    assert display.style == "jupyter"
    monkeypatch.setattr(progress, "_has_ipywidgets", lambda: True)
    assert ProgressDisplay(Console(file=io.StringIO(), force_jupyter=True)).style == "bar"
    pytest.importorskip("IPython")
    with ProgressDisplay(Console(file=io.StringIO(), force_jupyter=True)) as show:
        show(IndexStats(files_todo=2, files_done=1, chunks=5), "a.rs")


def test_stats_print_as_the_summary_and_convert_to_json(
    built: tuple[Path, Path, IndexStats],
) -> None:
    crate, idx, stats = built
    text = str(stats)
    assert text.splitlines()[0] == f"Indexed {crate} -> {idx} (sequential mode)"
    assert "files: 4 indexed, 0 unchanged, 0 removed, 0 skipped" in text
    assert repr(stats).startswith("IndexStats(mode='sequential'")
    as_dict = stats.to_dict()
    assert json.loads(stats.to_json()) == json.loads(json.dumps(as_dict))
    assert (
        as_dict["chunks"] == stats.chunks
        and as_dict["stage_rates"].keys() == stats.stage_rates.keys()
    )

    class Printer:
        def __init__(self) -> None:
            self.out = ""

        def text(self, s: str) -> None:
            self.out += s

    printer = Printer()
    stats._repr_pretty_(printer, False)  # what IPython and Jupyter call
    assert printer.out == text


def test_hit_prints_as_location_kind_symbol_score() -> None:
    hit = Hit(
        "id1", "src/heap.rs", 42, 50, "push", "heap::Heap::push", "method", 0.03251, "fn push()"
    )
    assert str(hit) == "src/heap.rs:42  method heap::Heap::push  0.0325"
    assert repr(hit).startswith("Hit(id='id1', path='src/heap.rs', start_line=42")
    assert Hit(**json.loads(hit.to_json())) == hit
    assert hit.to_dict()["qualname"] == "heap::Heap::push"


def test_open_index_by_codebase_or_by_index_folder(built: tuple[Path, Path, IndexStats]) -> None:
    crate, idx, _ = built
    with rcm_dask.open_index(idx, embedder=HashEmbedder()) as by_folder:
        assert isinstance(by_folder, Index) and isinstance(by_folder, SearchIndex)
        hits = by_folder.search("connection pool acquire", limit=3)
        assert hits and all(isinstance(h, Hit) for h in hits)
    with rcm_dask.open_index(str(crate), index_dir=idx, embedder=HashEmbedder()) as by_name:
        assert by_name.index_dir == idx
        assert [h.id for h in by_name.search("connection pool acquire", limit=3)] == [
            h.id for h in hits
        ]


def test_open_index_default_location_and_settings(crate: Path) -> None:
    rcm_dask.index(str(crate), embedder=HashEmbedder())  # into the default location
    with rcm_dask.open_index(str(crate), candidates=7) as idx:
        assert idx.config.candidates == 7 and idx.stats().root == str(crate)
    with pytest.raises(ConfigError, match="no_such_setting"):
        rcm_dask.open_index(str(crate), no_such_setting=1)


def test_stats_record_prints_and_matches_status(built: tuple[Path, Path, IndexStats]) -> None:
    crate, idx, stats = built
    with rcm_dask.open_index(idx) as index:
        info = index.stats()
        status = index.status()
    assert isinstance(info, IndexInfo)
    assert (info.files, info.chunks, info.bm25_documents) == (4, stats.chunks, stats.chunks)
    assert info.last_run is not None and info.last_run["files_indexed"] == 4
    assert set(status) == STATUS_KEYS and status["files"] == 4
    assert status["vectors"] == "qdrant"
    assert json.loads(info.to_json())["chunks"] == stats.chunks
    text = str(info)
    assert f"index:    {idx}" in text and f"root:     {crate}" in text
    assert "model:    hash-embedder (64 dims" in text and "last run: sequential mode" in text


def test_the_index_releases_its_stores_on_close(built: tuple[Path, Path, IndexStats]) -> None:
    _, idx, _ = built
    index = rcm_dask.open_index(idx, embedder=HashEmbedder())
    index.search("pool", limit=1)  # opens the vector store
    index.close()
    # the embedded vector store admits one process at a time: a writer can take it now
    stats = rcm_dask.index(str(built[0]), index_dir=str(idx), embedder=HashEmbedder(), force=True)
    assert stats.files_indexed == 4


@pytest.mark.cluster
def test_index_inside_the_users_own_client_with_progress(
    crate: Path, tmp_path: Path, dask_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = rcm_dask.index(
        str(crate),
        index_dir=str(tmp_path / "idx"),
        client=dask_client,
        mode="pipeline",
        embedder=HashEmbedder(),
        progress=True,
    )
    assert stats.mode == "pipeline" and stats.cluster.startswith("client of tcp://127.0.0.1")
    assert stats.files_indexed == 4 and stats.chunks == stats.chunks_written > 0
    assert capsys.readouterr().err.splitlines()[-1].startswith("indexed: 4/4 files")
    # the run leaves the user's client and cluster as it found them
    assert dask_client.submit(sum, [1, 2], pure=False).result() == 3
    assert dask_client.status == "running"


def test_code_intelligence_goes_through_the_index(built: tuple[Path, Path, IndexStats]) -> None:
    from rcm_dask.intel import CodeIntel

    _, idx, _ = built
    with rcm_dask.open_index(idx) as index, CodeIntel(idx) as intel:
        (acquire,) = index.find_definition("ConnectionPool::acquire")
        assert isinstance(acquire, rcm_dask.Definition)
        assert (acquire.path, acquire.kind, acquire.start_line) == ("src/net/mod.rs", "method", 20)
        assert index.find_definition("acquire", kind="struct") == []
        assert index.find_definition("ConnectionPool") == intel.find_definition("ConnectionPool")

        graph = index.call_graph("parse_toml_config", depth=2)
        assert isinstance(graph, rcm_dask.CallGraph)
        assert "config::Config::from_toml" in {e.callee for e in graph.callees}
        assert graph == intel.call_graph("parse_toml_config", depth=2)
        refs = index.find_references("from_toml")
        assert refs == intel.find_references("from_toml")
        assert all(isinstance(r, rcm_dask.Reference) for r in refs)

        deps = index.dependencies("src/net/mod.rs")
        assert isinstance(deps, rcm_dask.FileDependencies)
        assert "std::time::Duration" in {e.use_path for e in deps.imports}

        cx = index.complexity("src/net/mod.rs")
        assert isinstance(cx, rcm_dask.FileComplexity) and cx == intel.complexity("src/net/mod.rs")
        by_name = {f.qualname: f.complexity for f in cx.functions}
        assert by_name["net::ConnectionPool::acquire"] == 3  # for + if let
        assert index._symbols is not None
    assert index._symbols is None  # closed with the index


def test_symbol_lookup_files_and_test_demotion_on_a_real_index(crate: Path, tmp_path: Path) -> None:
    lib = crate / "src" / "lib.rs"
    lib.write_text(lib.read_text() + "\npub use net::ConnectionPool;\npub use self::config::*;\n")
    idx_dir = tmp_path / "idx"
    rcm_dask.index(str(crate), index_dir=str(idx_dir), embedder=HashEmbedder())
    with rcm_dask.open_index(index_dir=idx_dir, embedder=HashEmbedder()) as idx:
        # a bare name: its definition, then the module root that re-exports it
        hits = idx.search("ConnectionPool", limit=3)
        assert (hits[0].path, hits[0].kind) == ("src/net/mod.rs", "struct")
        assert (hits[1].path, hits[1].qualname, hits[1].kind) == ("src/lib.rs", "crate", "mod")
        # a glob re-export of the defining module counts too
        hits = idx.search("Config", limit=3)
        assert (hits[0].path, hits[0].kind) == ("src/config.rs", "struct")
        assert (hits[1].path, hits[1].qualname) == ("src/lib.rs", "crate")
        # which files to read: one entry per file, each with its best items
        files = idx.search_files("parse a toml configuration", limit=5)
        assert files and all(isinstance(f, rcm_dask.FileHit) for f in files)
        assert len({f.path for f in files}) == len(files)
        assert all(h.path == f.path for f in files for h in f.hits)
        # the test that calls the parser ranks below the parser itself, and is kept
        plain = idx.search("parses a line of toml config", limit=20, ranking="none")
        ranked = idx.search("parses a line of toml config", limit=20)
        assert len(plain) < 20  # every item: ranking reorders, never removes
        assert {h.id for h in plain} == {h.id for h in ranked}
        assert not ranked[0].path.startswith("tests/")
        assert any(h.path.startswith("tests/") for h in ranked)
    one_shot = rcm_dask.search(
        "ConnectionPool", index_dir=idx_dir, group="file", limit=2, mode="bm25"
    )
    assert [f.path for f in one_shot][0] == "src/net/mod.rs"
