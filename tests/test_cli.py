"""The shell: `rcm-dask index` (progress, --quiet, --json, --dry-run), `search` and `status`.

In-process runs go through click's CliRunner with the real CLI building a real embedder
from the tiny model folder (``--model``); two runs are real ``rcm-dask`` subprocesses on a
rust-src slice. The end-to-end CLI tests with the bundled model live in test_e2e.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from rcm_dask.cli import main, print_hits, query_terms, term_spans
from rcm_dask.dryrun import (
    DEFAULT_CHUNKS_PER_SECOND,
    FolderCount,
    folder_counts,
    last_run_rate,
    pick_sample,
    plan_dry_run,
    suspicious_folders,
)
from rcm_dask.progress import ProgressDisplay, describe_progress
from rcm_dask.records import FileRef, Hit, IndexStats
from rcm_dask.testing import HashEmbedder

from . import DATA

RCM_DASK = Path(sys.executable).parent / "rcm-dask"


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """The mini crate plus what people index by mistake: vendored crates, a custom build
    folder, generated code; and what discovery skips: a hidden folder, a binary file."""
    root = tmp_path / "messy"
    shutil.copytree(DATA / "mini_crate", root)
    for i in range(3):
        _write(
            root, f"vendor/dep{i}/src/lib.rs", f"pub fn dep{i}_call(x: u32) -> u32 {{ x + {i} }}\n"
        )
    _write(root, "vendor/dep0/.cargo-checksum.json", "{}")
    _write(root, "target-release/build/gen/out/bindings.rs", "pub const GENERATED: u32 = 1;\n")
    _write(root, "src/build/mod.rs", "pub fn configure() {}\n")  # a module, not build output
    _write(root, ".cache/x.rs", "fn hidden() {}\n")
    (root / "src" / "blob.rs").write_bytes(b"fn x() {}\x00\x01")
    _age(root)
    return root


def _age(root: Path) -> None:
    """Date every file an hour back: files modified within seconds of being indexed are
    re-read by the next run (their mtime cannot be trusted), which would blur the counts."""
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))


# --------------------------------------------------------------------------- dry run


def test_dry_run_reports_folders_skips_and_suspects_without_writing(
    messy: Path, tiny_model: Path, tmp_path: Path
) -> None:
    idx = tmp_path / "idx"
    result = _cli(
        "index", str(messy), "--dry-run", "--model", str(tiny_model), "--index-dir", str(idx)
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"Dry run: {messy} -> {idx} (new index, sequential mode)")
    assert "found: 10 .rs files" in out
    assert "hidden: 1  e.g. .cache/: hidden folder" in out
    assert "a run would: read all 10 files" in out
    assert "every file to read chunked" in out
    assert "sampled files a run would skip: binary 1" in out
    # vendored code and the custom build folder are pointed at, with the option to use;
    # src/build/ is a Rust module and is not
    assert "warning: vendor/ holds 3 files" in out and "--exclude 'vendor/'" in out
    assert "warning: target-release/ holds 1 files" in out
    assert "src/build" not in out.split("warning:", 1)[1]
    assert "Nothing was embedded or written." in out
    assert not idx.exists()


def test_dry_run_json_matches_what_the_run_then_does(
    messy: Path, tiny_model: Path, tmp_path: Path
) -> None:
    idx = tmp_path / "idx"
    common = ["--model", str(tiny_model), "--index-dir", str(idx), "--exclude", "vendor/"]
    plan = json.loads(_cli("index", str(messy), "--dry-run", "--json", *common).stdout)
    assert plan["exact"] and plan["files_to_read"] == 7 and plan["new"] == 7
    assert [s["folder"] for s in plan["suspicious"]] == ["target-release"]
    assert plan["skipped"]["ignored"] == 1 and plan["sample_skipped"] == {"binary": 1}
    assert plan["chunks_per_second"] == DEFAULT_CHUNKS_PER_SECOND
    assert plan["estimated_seconds"] == round(
        plan["estimated_chunks"] / plan["chunks_per_second"], 1
    )

    stats = json.loads(_cli("index", str(messy), "--json", *common).stdout)
    assert stats["chunks"] == plan["estimated_chunks"] > 0
    assert stats["files_indexed"] == 6 and stats["skipped"] == {
        "binary": 1,
        "hidden": 1,
        "ignored": 1,
    }

    # a re-run's plan: one changed, one new, one removed, the rest unchanged
    _write(messy, "src/config.rs", (messy / "src/config.rs").read_text() + "\npub fn extra() {}\n")
    _write(messy, "src/added.rs", "pub struct Added;\n")
    (messy / "tests" / "smoke.rs").unlink()
    again = json.loads(_cli("index", str(messy), "--dry-run", "--json", *common).stdout)
    assert again["index_exists"]
    assert (again["new"], again["changed"], again["removed"]) == (2, 1, 1)  # blob.rs stays new
    assert again["unchanged"] == 4
    rerun = json.loads(_cli("index", str(messy), "--json", *common).stdout)
    assert rerun["files_removed"] == 1 and rerun["files_indexed"] == 2
    assert rerun["chunks"] == again["estimated_chunks"]


def test_dry_run_of_an_index_built_with_another_model_says_so(
    messy: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from rcm_dask import IndexConfig, index

    idx = tmp_path / "idx"
    index(str(messy), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    plan = plan_dry_run(str(messy), index_dir=str(idx), model=str(tiny_model))
    assert plan.index_exists and plan.new == plan.files_to_read == 10  # planned as a rebuild
    assert any("a run would be refused" in w and "--force" in w for w in plan.warnings)


def test_dry_run_without_rust_files_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "empty", "README.md", "nothing here")
    result = _cli("index", str(tmp_path / "empty"), "--dry-run")
    assert result.exit_code == 1 and "No .rs files found" in result.stderr


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["src/a.rs", "src/b.rs", "tests/t.rs"], ["src", "tests"]),  # two parts: go deeper
        (["lib.rs", "src/x/a.rs", "src/y/b.rs"], [".", "src/x", "src/y"]),
        (["a/1.rs", "b/2.rs", "c/3.rs"], ["a", "b", "c"]),
    ],
)
def test_folder_counts_pick_a_depth_that_splits(paths: list[str], expected: list[str]) -> None:
    refs = [FileRef(p, p, 10, None) for p in paths]
    assert sorted(f.folder for f in folder_counts(refs)[0]) == sorted(expected)


@pytest.mark.parametrize(
    ("path", "suspect"),
    [
        ("vendor/x/src/lib.rs", "vendor"),
        ("third_party/y/lib.rs", "third_party"),
        ("crates/a/target-x86/debug/out.rs", "crates/a/target-x86"),
        ("bazel-out/k8/bin/gen.rs", "bazel-out"),
        ("build/generated.rs", "build"),
        ("src/build/mod.rs", None),  # inside src/: a Rust module
        ("crates/core/src/vendor/mod.rs", None),
        ("crates/outline/src/lib.rs", None),
    ],
)
def test_suspicious_folder_names(path: str, suspect: str | None) -> None:
    found = suspicious_folders([FileRef(path, path, 10, None)])
    assert [f.folder for f in found] == ([suspect] if suspect else [])


def test_cargo_vendor_checksum_marks_a_crate_under_any_name() -> None:
    refs = [FileRef("deps-copy/serde/src/lib.rs", "x", 10, None)]
    found = suspicious_folders(refs, vendored={"deps-copy/serde"})
    assert (
        found == [FolderCount("deps-copy/serde", 1, 10, found[0].reason)]
        and "cargo vendor" in found[0].reason
    )


def test_sample_spreads_over_the_files_within_both_limits() -> None:
    refs = [FileRef(f"{i:03}.rs", "x", 1000, None) for i in range(100)]
    picked = pick_sample(refs, max_files=10, max_bytes=10**9)
    assert len(picked) == 10 and picked[0].path == "000.rs" and picked[-1].path == "090.rs"
    assert len(pick_sample(refs, max_files=50, max_bytes=5000)) == 5
    assert pick_sample(refs[:3]) == refs[:3]


@pytest.mark.parametrize(
    ("last", "rate"),
    [
        ({"chunks": 1000, "seconds": 20.0}, 50.0),
        ({"chunks": 99, "seconds": 1.0}, None),  # too small to measure throughput
        ({"chunks": 1000, "seconds": 0}, None),
        (None, None),
        ("garbage", None),
    ],
)
def test_last_run_rate(last: Any, rate: float | None) -> None:
    assert last_run_rate(last) == rate


# --------------------------------------------------------------------------- index


@pytest.fixture(scope="module")
def indexed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The mini crate indexed once through the CLI (plain summary output kept)."""
    root = tmp_path_factory.mktemp("cli") / "mini_crate"
    shutil.copytree(DATA / "mini_crate", root)
    idx = root.parent / "idx"
    result = _cli("index", str(root), "--model", str(tiny_model), "--index-dir", str(idx))
    assert result.exit_code == 0, result.output
    return root, idx, result.stdout


def test_index_summary_has_counts_rates_and_stage_throughput(
    indexed: tuple[Path, Path, str],
) -> None:
    root, idx, out = indexed
    assert out.startswith(f"Indexed {root} -> {idx} (sequential mode)")
    assert "files: 4 indexed, 0 unchanged, 0 removed, 0 skipped" in out
    assert "chunks/s" in out and "ran on: in-process" in out
    line = next(x for x in out.splitlines() if "throughput per busy second" in x)
    for stage in ("read", "chunk", "embed", "write"):
        assert f" {stage} " in line


def test_index_quiet_prints_one_line(indexed: tuple[Path, Path, str], tiny_model: Path) -> None:
    root, idx, _ = indexed
    result = _cli("index", str(root), "-q", "--model", str(tiny_model), "--index-dir", str(idx))
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{root}: 0 files indexed, 4 unchanged, 0 removed; 0 chunks in ")
    assert line.endswith(f"-> {idx}") and result.stderr == ""


def test_index_json_puts_only_json_on_stdout(
    indexed: tuple[Path, Path, str], tiny_model: Path
) -> None:
    root, idx, _ = indexed
    result = _cli(
        "index", str(root), "--json", "--force", "--model", str(tiny_model), "--index-dir", str(idx)
    )
    stats = json.loads(result.stdout)  # fails on anything but one JSON document
    assert stats["files_indexed"] == 4 and stats["chunks"] > 4
    assert set(stats["stage_rates"]) == {"read", "chunk", "embed", "write"}


# --------------------------------------------------------------------------- search, status


def test_search_text_shows_location_symbol_kind_score_and_snippet(
    indexed: tuple[Path, Path, str],
) -> None:
    _, idx, _ = indexed
    result = _cli("search", "ConnectionPool", "--bm25", "--kind", "struct", "--index-dir", str(idx))
    assert result.exit_code == 0, result.output
    head, *snippet = result.stdout.splitlines()
    assert head.startswith(" 1. src/net/mod.rs:") and "net::ConnectionPool  struct  score " in head
    assert snippet[0].startswith("    pub struct ConnectionPool")


def test_search_json(indexed: tuple[Path, Path, str]) -> None:
    _, idx, _ = indexed
    result = _cli(
        "search", "ConnectionPool", "--bm25", "--json", "-n", "2", "--index-dir", str(idx)
    )
    hits = json.loads(result.stdout)
    assert len(hits) == 2 and hits[0]["qualname"].startswith("net::ConnectionPool")
    assert hits[0] == Hit(**hits[0]).to_dict()


def test_search_files_gives_one_line_per_file_with_its_best_items(
    indexed: tuple[Path, Path, str],
) -> None:
    _, idx, _ = indexed
    result = _cli("search", "ConnectionPool", "--files", "-n", "2", "--index-dir", str(idx))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    heads = [ln for ln in lines if not ln.startswith("    ")]
    assert len(heads) <= 2 and heads[0].startswith(" 1. src/net/mod.rs  score ")
    assert any("net::ConnectionPool" in ln for ln in lines[1:4])
    as_json = json.loads(
        _cli("search", "ConnectionPool", "--files", "--json", "--index-dir", str(idx)).stdout
    )
    paths = [f["path"] for f in as_json]
    assert paths[0] == "src/net/mod.rs" and len(paths) == len(set(paths))
    assert as_json[0]["hits"][0]["qualname"].startswith("net::ConnectionPool")


def test_search_symbol_lookup_finds_the_definition_first(
    indexed: tuple[Path, Path, str],
) -> None:
    _, idx, _ = indexed
    result = _cli("search", "ConnectionPool", "--json", "--index-dir", str(idx))
    hits = json.loads(result.stdout)
    assert hits[0]["qualname"] == "net::ConnectionPool" and hits[0]["kind"] == "struct"
    bad = _cli("search", "ConnectionPool", "--ranking", "fast", "--index-dir", str(idx))
    assert bad.exit_code == 1 and "unknown ranking step 'fast'" in bad.output


def test_search_for_bytes_that_are_not_utf8_is_no_crash(
    indexed: tuple[Path, Path, str], tiny_model: Path
) -> None:
    """A query typed with a byte that is not UTF-8 reaches the tokenizer as a lone
    surrogate: it is replaced, not a TypeError from the tokenizer (a real process: the
    bytes come from argv)."""
    _, idx, _ = indexed
    done = subprocess.run(
        [RCM_DASK, b"search", b"Connection\xffPool", b"--model", tiny_model, b"--index-dir", idx],
        check=False,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert b" 1. src/" in done.stdout


def test_status_text_and_json(indexed: tuple[Path, Path, str]) -> None:
    root, idx, _ = indexed
    text = _cli("status", "--index-dir", str(idx)).stdout
    assert f"index:    {idx}" in text and f"root:     {root}" in text
    assert "files:    4" in text and "last run: sequential mode" in text
    assert "vectors:  embedded Qdrant (qdrant-edge)" in text
    st = json.loads(_cli("status", "--index-dir", str(idx), "--json").stdout)
    assert st["files"] == 4 and st["root"] == str(root) and st["chunks"] == st["bm25_documents"]
    assert st["vectors"] == "qdrant"


def test_search_fusion_option_and_variable(indexed: tuple[Path, Path, str]) -> None:
    """--fusion picks how hybrid search fuses (RCM_FUSION mirrors it); both find the
    struct a query names, and an unknown one is a usage error."""
    _, idx, _ = indexed
    for args, env in ((["--fusion", "rrf"], {}), ([], {"RCM_FUSION": "rrf"}), ([], {})):
        result = CliRunner(env=env).invoke(
            main, ["search", "ConnectionPool", "--json", *args, "--index-dir", str(idx)]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["qualname"].startswith("net::ConnectionPool")
    bad = _cli("search", "ConnectionPool", "--fusion", "max", "--index-dir", str(idx))
    assert bad.exit_code == 2 and "'max' is not one of 'score', 'rrf'" in bad.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "said"),
    [
        (["--kind", "nonsense"], {}, 2, "'nonsense' is not one of 'function'"),
        (["--path-glob", "["], {}, 1, "path_glob '[' is not a valid glob: '[' is never closed"),
        (["--path-glob", "!src/**"], {}, 1, "path_glob '!src/**' is negated"),
        ([], {"RCM_BM25_WEIGHT": "nan"}, 1, "bm25_weight (RCM_BM25_WEIGHT) must be a finite"),
        ([], {"RCM_VECTOR_WEIGHT": "inf"}, 1, "vector_weight (RCM_VECTOR_WEIGHT) must be a"),
    ],
)
def test_search_settings_that_cannot_work_are_refused(
    indexed: tuple[Path, Path, str], args: list[str], env: dict[str, str], code: int, said: str
) -> None:
    """Was: accepted silently (no hits, or NaN scores); the MCP server refused --kind."""
    _, idx, _ = indexed
    result = CliRunner(env=env).invoke(
        main, ["search", "ConnectionPool", *args, "--index-dir", str(idx)]
    )
    assert result.exit_code == code, result.output
    assert said in " ".join(result.stderr.split()) and "Traceback" not in result.output


@pytest.mark.parametrize("where", ["no-parent", "under-a-file", "read-only"])
def test_index_into_a_folder_that_cannot_be_written_is_one_clear_line(
    tmp_path: Path, where: str
) -> None:
    """Was: a traceback from stores/lock.py (no parent, read-only mount, no permission)."""
    root = tmp_path / "mini_crate"
    shutil.copytree(DATA / "mini_crate", root)
    if where == "no-parent":
        idx = Path("/proc/1/rcm-index")  # mkdir: no such file or directory
    elif where == "under-a-file":
        (tmp_path / "a-file").write_text("x")
        idx = tmp_path / "a-file" / "idx"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        if os.geteuid() == 0:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
        else:
            ro.chmod(0o500)  # no permission (root would pass it)
        idx = ro / "idx"
    try:
        result = _cli("index", str(root), "--vectors", "none", "--index-dir", str(idx))
    finally:
        if where == "read-only" and os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith(f"Error: cannot write the index folder {idx}: "), said
    assert "--index-dir" in said and said.count("Error:") == 1 and "Traceback" not in said


def test_keyword_only_index_search_and_status(tiny_model: Path, tmp_path: Path) -> None:
    """--vectors none end to end: nothing embedded, BM25 search with a note, vector search
    refused, the setting kept by re-runs and changed only with --force."""
    root = tmp_path / "mini_crate"
    shutil.copytree(DATA / "mini_crate", root)
    idx = tmp_path / "idx"
    common = ["--model", str(tiny_model), "--index-dir", str(idx)]
    result = _cli("index", str(root), "--vectors", "none", *common)
    assert result.exit_code == 0, result.output
    assert "keyword-only (nothing embedded)" in result.stdout and " embed " not in result.stdout

    text = _cli("status", "--index-dir", str(idx)).stdout
    assert "vectors:  none (keyword-only: BM25 search and code intelligence" in text
    assert json.loads(_cli("status", "--index-dir", str(idx), "--json").stdout)["vectors"] == "none"

    found = _cli("search", "ConnectionPool", "--index-dir", str(idx))
    assert found.exit_code == 0 and "net::ConnectionPool" in found.stdout
    assert "Note: keyword-only index: hybrid search used BM25 only" in found.stderr
    refused = _cli("search", "ConnectionPool", "--vector", "--index-dir", str(idx))
    why = " ".join(refused.stderr.split())
    assert refused.exit_code == 1 and "keyword-only" in why and "--force --vectors qdrant" in why

    # the environment variable is the option's mirror; a plain run keeps the setting, the
    # other one is refused with the fix
    again = CliRunner(env={"RCM_VECTORS": "none"}).invoke(main, ["index", str(root), "-q", *common])
    assert again.exit_code == 0 and "0 files indexed, 4 unchanged" in again.stdout
    plain = _cli("index", str(root), "--json", *common)
    assert plain.exit_code == 0 and json.loads(plain.stdout)["vectors"] == "none"
    other = _cli("index", str(root), "--vectors", "qdrant", *common)
    assert other.exit_code == 1
    message = " ".join(other.stderr.split())
    assert "built with --vectors none" in message and "Re-run with --vectors none" in message
    rebuilt = _cli("index", str(root), "--force", "--json", *common)
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.stdout)["vectors"] == "qdrant"
    assert "embedded Qdrant" in _cli("status", "--index-dir", str(idx)).stdout


def test_query_terms_and_spans() -> None:
    assert query_terms("How does the heap sift_up work?") == ["sift_up", "heap", "work"]
    assert term_spans("fn sift_up(&mut self)", ["sift_up"]) == [(3, 10)]
    assert term_spans("anything", []) == []


def test_snippet_highlights_query_words_on_a_terminal() -> None:
    hit = Hit(
        "i", "src/heap.rs", 7, 9, "push", "Heap::push", "method", 0.5, "fn push(&mut self) {}"
    )
    buf = io.StringIO()
    print_hits([hit], "push it", Console(file=buf, force_terminal=True, width=100))
    text = buf.getvalue()
    assert "src/heap.rs:7" in text and "Heap::push" in text
    assert "\x1b[" in text and "\x1b[1;7" in text  # bold reverse on the query word
    plain = io.StringIO()
    print_hits([hit], "push it", Console(file=plain, force_terminal=False, width=100))
    assert "\x1b[" not in plain.getvalue()
    assert plain.getvalue().splitlines()[1] == "    fn push(&mut self) {}"


# --------------------------------------------------------------------------- progress


def _stats(**kw: Any) -> IndexStats:
    base: dict[str, Any] = {
        "files_todo": 10,
        "files_done": 4,
        "files_read": 4,
        "chunks_made": 40,
        "chunks_embedded": 32,
        "chunks": 32,
        "stage_seconds": {"read": 0.1, "chunk": 0.4, "embed": 2.0, "write": 0.2},
    }
    return IndexStats(**{**base, **kw})


def test_describe_progress_has_rates_per_stage() -> None:
    line = describe_progress(_stats(), 4.0)
    assert (
        line
        == "32 chunks written, 8.0 chunks/s | read 40 files/s, chunk 100/s, embed 16/s, write 160/s"
    )


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = io.StringIO()
    with ProgressDisplay(Console(file=tty, force_terminal=True, width=160)) as show:
        show(_stats(), "src/a.rs")
    assert "indexing" in tty.getvalue() and "4/10" in tty.getvalue()

    log = io.StringIO()
    display = ProgressDisplay(Console(file=log, force_terminal=False), interval=3600)
    assert display.style == "lines"
    with display as show:
        show(_stats(files_done=0), "")
        show(_stats(), "src/a.rs")  # within the interval: no line
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("indexing: 0/10 files, 32 chunks written")
    assert lines[1].startswith("indexed: 4/10 files, 32 chunks written") and len(lines) == 2

    quiet = io.StringIO()
    assert ProgressDisplay(Console(file=quiet, force_terminal=False), lines=False).style == "off"


# --------------------------------------------------------------------------- real processes


def _slice(rust_src: Path, root: Path) -> None:
    alloc = rust_src / "library" / "alloc" / "src"
    for rel in ("collections/binary_heap.rs", "borrow.rs"):
        (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(alloc / rel, root / "src" / rel)
    # a vendored copy of another crate, as `cargo vendor` leaves it
    (root / "vendor" / "core_ascii" / "src").mkdir(parents=True)
    shutil.copy(
        rust_src / "library" / "core" / "src" / "ascii.rs", root / "vendor/core_ascii/src/lib.rs"
    )
    (root / "vendor" / "core_ascii" / ".cargo-checksum.json").write_text("{}")


def test_real_rcm_dask_dry_run_then_json_run_on_rust_src(
    rust_src: Path, tiny_model: Path, tmp_path: Path
) -> None:
    root, idx = tmp_path / "slice", tmp_path / "idx"
    _slice(rust_src, root)
    env_args = ["--model", str(tiny_model), "--index-dir", str(idx)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RCM_DASK), "index", str(root), *args, *env_args],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "RCM_HOME": str(tmp_path / "home"), "RCM_TORCH_THREADS": "1"},
        )

    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "found: 3 .rs files" in dry.stdout and "vendor/" in dry.stdout
    assert "cargo vendor" in dry.stdout and "--exclude 'vendor/'" in dry.stdout
    assert not idx.exists()
    plan = json.loads(run("--dry-run", "--json", "--exclude", "vendor/").stdout)

    real = run("--json", "--exclude", "vendor/")
    assert real.returncode == 0, real.stderr
    stats = json.loads(real.stdout)
    assert stats["files_indexed"] == 2 and stats["skipped"] == {"ignored": 1}
    assert stats["chunks"] == plan["estimated_chunks"] > 100
