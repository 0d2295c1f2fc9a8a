"""Hostile and odd input, generated here (never committed): each file yields chunks or a
counted skip with its reason, the run finishes with a clear summary, and nothing that
was indexed before is hurt. Every mode meets the same table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import SourceError
from rcm_dask.records import display_path
from rcm_dask.search import SearchIndex
from rcm_dask.stores.manifest import Manifest
from rcm_dask.testing import HashEmbedder, index_state

GOOD = "/// Keeps the peace.\npub fn good_neighbour(x: u32) -> u32 {\n    x + 1\n}\n"


AS_ROOT = os.geteuid() == 0
"""Root reads any file whatever its permissions."""


def _unreadable(path: Path) -> Any:
    """A .rs entry that cannot be read: no permission, or (as root, who reads anything)
    a Unix socket, which is skipped from the listing as not a regular file."""
    if not AS_ROOT:
        path.write_text("pub fn secret() {}\n")
        path.chmod(0)
        return None
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


# name -> (builder, expected): "chunks:<qualname>" (indexed, that symbol found),
# "empty" (indexed, no chunks), or "skip:<reason>"
CASES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "invalid_utf8.rs": (
        lambda p: p.write_bytes(b"pub fn ok() {}\n// caf\xe9 \xff\xfe\n"),
        "skip:not-utf8",
    ),
    "bom.rs": (lambda p: p.write_bytes(b"\xef\xbb\xbfpub fn with_bom() {}\n"), "chunks:with_bom"),
    "crlf.rs": (
        lambda p: p.write_bytes(b"/// Doc.\r\npub fn crlf_lines(a: u8) -> u8 {\r\n    a\r\n}\r\n"),
        "chunks:crlf_lines",
    ),
    "binary.rs": (lambda p: p.write_bytes(b"pub fn x() {}\x00\x01\x02\xff" * 10), "skip:binary"),
    "empty.rs": (lambda p: p.write_bytes(b""), "empty"),
    "huge_50mb.rs": (
        lambda p: p.write_bytes(b"pub fn filler() {}\n" * (50 * 1024 * 1024 // 19)),
        "skip:too-large",
    ),
    "one_5mb_line.rs": (
        lambda p: p.write_text('pub const BLOB: &str = "' + "ab " * (5 * 1024 * 1024 // 3) + '";'),
        "chunks:BLOB",
    ),
    "nested_10000.rs": (
        lambda p: p.write_text("pub fn deep() {" + "{" * 10_000 + "}" * 10_000 + "}\n"),
        "chunks:deep",
    ),
    "syntax_errors.rs": (
        lambda p: p.write_text(
            "pub fn fine_before() {}\nfn broken( {{{ let = ;\nstruct S { a: , }\nimpl for {}\n"
            "pub fn fine_after() -> u8 { 1 }\n)))\n"
        ),
        "chunks:fine_after",
    ),
    "unreadable.rs": (_unreadable, "skip:not-regular" if AS_ROOT else "skip:unreadable"),
    # opening a FIFO blocks until something writes to it: it must never be opened
    "fifo.rs": (lambda p: os.mkfifo(p), "skip:not-regular"),
    # bytes that are not UTF-8 (os.fsencode keeps them): no tokenizer takes the name
    "bad\udcffname.rs": (lambda p: p.write_text("pub fn badly_named() {}\n"), "skip:not-utf8-name"),
    "two\nlines.rs": (lambda p: p.write_text("pub fn on_two_lines() {}\n"), "chunks:on_two_lines"),
    "fine_grained_pat.rs": (
        lambda p: p.write_text(
            'const T: &str = "github_pat_11AAAAAAA0abcdefghijklm_' + "N0pQ" * 15 + '";\n'
        ),
        "skip:sensitive",
    ),
    "pgp.rs": (
        lambda p: p.write_text(
            "/*\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGV...\n"
            "-----END PGP PRIVATE KEY BLOCK-----\n*/\npub fn signer() {}\n"
        ),
        "skip:sensitive",
    ),
    "dir with space/ünïcödé näme.rs": (
        lambda p: p.write_text("pub fn spaced_out() {}\n"),
        "chunks:spaced_out",
    ),
}


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, list[Any]]:
    root = tmp_path / "hostile crate"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    keep: list[Any] = []
    for name, (build, _) in CASES.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        keep.append(build(path))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stolen.rs").write_text("pub fn stolen() {}\n")
    (root / "src" / "loop").symlink_to(root / "src", target_is_directory=True)
    (root / "src" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "src" / "escape_file.rs").symlink_to(outside / "stolen.rs")
    yield root, keep
    for k in keep:
        if isinstance(k, socket.socket):
            k.close()


def _check(root: Path, idx: Path, stats: Any) -> None:
    """Every case met its expectation; the summary counts add up."""
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        names = {p["path"]: p for p in s.bm25.iter_payloads()}
        m = Manifest(idx, readonly=True)
        files = {f.path: f for f in m.files()}
        m.close()
        for name, (_, expected) in CASES.items():
            rel = f"src/{name}"
            if expected.startswith("skip:"):
                reason = expected[5:]
                assert rel not in files, name
                shown = display_path(rel)
                assert any(shown in e for e in stats.skipped_examples.get(reason, [])), (
                    name,
                    stats.skipped,
                )
            elif expected == "empty":
                assert files[rel].chunk_ids == ()
            else:
                qualname = expected[7:]
                assert rel in files and files[rel].chunk_ids, name
                hits = [p for p in s.bm25.iter_payloads() if p["path"] == rel]
                assert any(h["name"] == qualname for h in hits), (name, [h["name"] for h in hits])
    assert "src/good.rs" in names
    assert not any("stolen" in p or p.startswith("src/loop/") for p in files)
    assert stats.skipped["not-utf8"] == 1 and stats.skipped["binary"] == 1
    assert stats.skipped["too-large"] == 1
    assert stats.skipped.get("unreadable", 0) == (0 if AS_ROOT else 1)
    assert stats.skipped["not-regular"] == (2 if AS_ROOT else 1)
    assert stats.skipped["not-utf8-name"] == 1 and stats.skipped["sensitive"] == 2
    assert stats.skipped["ignored"] >= 3  # the three symlinks, each with its reason
    # what the listing leaves out is not counted among the files seen
    listed = stats.files_skipped - sum(
        stats.skipped.get(r, 0) for r in ("ignored", "not-regular", "not-utf8-name")
    )
    assert stats.files_indexed + listed == stats.files_seen


@pytest.mark.parametrize("mode", ["sequential", "pipeline"])
def test_hostile_tree(
    hostile: tuple[Path, list[Any]], tmp_path: Path, mode: str, request: pytest.FixtureRequest
) -> None:
    root, _ = hostile
    idx = tmp_path / "idx"
    kw: dict[str, Any] = {}
    if mode == "pipeline":
        kw["client"] = request.getfixturevalue("dask_client")
    stats = index(
        str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder(), mode=mode, **kw
    )
    _check(root, idx, stats)
    assert stats.chunks_with_errors >= 1


def test_hostile_files_do_not_hurt_what_is_indexed(
    hostile: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    """Index a clean crate, then let the hostile files arrive (and good ones turn bad):
    what was indexed stays, and the summary says why each new file was skipped."""
    root, _ = hostile
    clean = tmp_path / "clean crate"
    (clean / "src").mkdir(parents=True)
    (clean / "src" / "good.rs").write_text(GOOD)
    (clean / "src" / "invalid_utf8.rs").write_text("pub fn was_fine() {}\n")
    idx = tmp_path / "idx"
    index(str(clean), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    before = index_state(idx)
    shutil.rmtree(clean)
    shutil.copytree(
        root, clean, symlinks=True, ignore=shutil.ignore_patterns("unreadable.rs", "fifo.rs")
    )
    (clean / "src" / "good.rs").write_text(GOOD)  # same content, new mtime
    stats = index(str(clean), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    after = index_state(idx)
    # the file that turned into invalid UTF-8 keeps its indexed chunks
    assert after["files"]["src/invalid_utf8.rs"] == before["files"]["src/invalid_utf8.rs"]  # type: ignore[index]
    assert after["files"]["src/good.rs"] == before["files"]["src/good.rs"]  # type: ignore[index]
    assert stats.skipped["not-utf8"] == 1


def test_file_deleted_or_rewritten_during_the_run(tmp_path: Path) -> None:
    root = tmp_path / "crate"
    (root / "src").mkdir(parents=True)
    for i in range(6):
        (root / "src" / f"f{i}.rs").write_text(f"pub fn before_{i}() {{}}\n")
    idx = tmp_path / "idx"

    def meddle(stats: Any, path: str) -> None:
        if path == "":  # the run has listed the files and is about to read them
            (root / "src" / "f4.rs").unlink()
            (root / "src" / "f5.rs").write_text("pub fn rewritten_during_the_run() {}\n")

    stats = index(
        str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder(), progress=meddle
    )
    assert stats.skipped == {"vanished": 1}
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        names = {p["name"] for p in s.bm25.iter_payloads()}
    assert "rewritten_during_the_run" in names and "before_4" not in names
    # the next run sees the rewrite's new mtime: it confirms by hash, embeds nothing
    again = index(str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    assert again.files_indexed == 0 and again.skipped == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "missing", "does not exist"),
        (lambda t: (t / "a.rs").write_text("fn a() {}") and t / "a.rs", "is a file, not a folder"),
        (
            lambda t: (t / "docs").mkdir() or (t / "docs" / "x.md").write_text("hi") and t / "docs",
            "No .rs files",
        ),
    ],
)
def test_bad_roots(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        index(
            str(make(tmp_path)),
            IndexConfig(index_dir=str(tmp_path / "idx")),
            embedder=HashEmbedder(),
        )
    assert not (tmp_path / "idx" / "manifest.sqlite").exists()


@pytest.mark.slow
def test_fifty_thousand_tiny_files(tmp_path: Path) -> None:
    """50,000 one-line files in 500 folders: indexed in one pipeline-free sequential run
    with no file lost; the re-run reads none of them."""
    root = tmp_path / "many"
    for d in range(500):
        folder = root / f"m{d:03d}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f:03d}.rs").write_text(f"pub fn f_{d}_{f}() {{}}\n")
    for p in root.rglob("*.rs"):
        os.utime(p, (0, 1_600_000_000))
    idx = tmp_path / "idx"
    stats = index(
        str(root), IndexConfig(index_dir=str(idx), mode="sequential"), embedder=HashEmbedder()
    )
    # each file: its function and its own record
    assert stats.files_indexed == 50_000 and stats.chunks == 100_000 and stats.files_skipped == 0
    again = index(str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    assert again.files_todo == 0 and again.files_unchanged == 50_000


# --------------------------------------------------------------------------- real processes

RCM_DASK = Path(sys.executable).parent / "rcm-dask"


def _rcm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A real ``rcm-dask`` process; a hang fails the test at ``timeout`` instead of hanging
    the suite. It runs in a session of its own, so that a hang in its Dask workers (which
    hold its output pipes) is ended with it."""
    proc = subprocess.Popen(
        [str(RCM_DASK), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RCM_TORCH_THREADS": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"rcm-dask {' '.join(args)} still ran after {timeout} s:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The process failed the way the CLI promises: exit 1, one ``Error:`` line on stderr."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fifo_crate(tmp_path: Path) -> Path:
    """Two good files, a FIFO named ``x.rs`` and a FIFO named ``.gitignore``."""
    root = tmp_path / "crate"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    (root / "sub").mkdir()
    (root / "sub" / "kept.rs").write_text("pub fn kept() {}\n")
    os.mkfifo(root / "src" / "x.rs")
    os.mkfifo(root / "sub" / ".gitignore")
    return root


@pytest.mark.parametrize(
    "how",
    [
        "sequential",
        pytest.param("parallel", marks=pytest.mark.cluster),
        pytest.param("pipeline", marks=pytest.mark.cluster),
        "dry-run",
    ],
)
def test_a_fifo_named_rs_never_hangs_a_run(
    fifo_crate: Path, tiny_model: Path, tmp_path: Path, how: str
) -> None:
    idx = tmp_path / "idx"
    extra = ["--dry-run"] if how == "dry-run" else ["--mode", how, "--workers", "1"]
    done = _rcm(
        "index", str(fifo_crate), "--json", "--model", str(tiny_model), "--index-dir", str(idx),
        *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["skipped"] == {"not-regular": 1}
    assert "src/x.rs: FIFO" in got["skipped_examples"]["not-regular"][0]
    if how == "dry-run":
        assert got["files_found"] == 2 and not (idx / "identity.json").exists()
    else:
        assert got["files_indexed"] == 2 and got["mode"] == how


def test_a_name_that_is_not_utf8_is_skipped_and_the_rest_indexed(
    tiny_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "crate"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    with open(os.fsencode(root / "src") + b"/bad\xffname.rs", "wb") as f:
        f.write(b"pub fn badly_named() {}\n")
    done = _rcm("index", str(root), "--model", str(tiny_model), "--index-dir", str(tmp_path / "i"))
    assert done.returncode == 0, done.stderr
    assert "files: 1 indexed" in done.stdout
    assert 'skipped not-utf8-name: 1  e.g. "src/bad\\xffname.rs": ' in done.stdout


def test_a_newline_in_a_file_name_keeps_path_line_output_on_one_line(
    tiny_model: Path, tmp_path: Path
) -> None:
    root, idx = tmp_path / "crate", tmp_path / "idx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    (root / "src" / "two\nlines.rs").write_text("pub fn on_two_lines() {}\n")
    model = ("--model", str(tiny_model), "--index-dir", str(idx))
    assert _rcm("index", str(root), *model).returncode == 0
    found = _rcm("search", "on_two_lines", "--bm25", *model)
    assert found.returncode == 0, found.stderr
    head = found.stdout.splitlines()[0]
    assert head.startswith(' 1. "src/two\\nlines.rs":1  ') and "on_two_lines  function" in head
    hits = json.loads(_rcm("search", "on_two_lines", "--bm25", "--json", *model).stdout)
    assert hits[0]["path"] == "src/two\nlines.rs"  # JSON keeps the name as it is


class _Silent(BaseHTTPRequestHandler):
    """Answers HTTP; never logs (a Dask handshake is no HTTP request)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and speaks HTTP, not Dask."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["not-an-address", "http-port"])
def test_a_bad_scheduler_is_one_error_line_not_a_traceback_or_a_hang(
    tiny_model: Path, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    address = (
        "notaurl"
        if kind == "not-an-address"
        else f"tcp://127.0.0.1:{request.getfixturevalue('http_port')}"
    )
    root, idx = tmp_path / "crate", tmp_path / "idx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    done = _rcm(
        "index", str(root), "--scheduler", address, "--model", str(tiny_model),
        "--index-dir", str(idx), timeout=60,
    )  # fmt: skip
    _one_error_line(done, "Dask scheduler", address)
    assert not (idx / "identity.json").exists()


@pytest.fixture
def broken_models(tiny_model: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of the tiny model, each broken another way, and an empty folder."""
    weights = (tiny_model / "model.safetensors").read_bytes()
    out = {}
    for name, data in (
        ("truncated", weights[: len(weights) // 2]),
        ("garbled", b"\xff" * 16 + weights[16:]),
        ("no-weights", None),
    ):
        folder = tmp_path / "models" / name
        shutil.copytree(tiny_model, folder)
        if data is None:
            (folder / "model.safetensors").unlink()
        else:
            (folder / "model.safetensors").write_bytes(data)
        out[name] = folder
    out["empty"] = tmp_path / "models" / "empty"
    out["empty"].mkdir()
    return out


def test_a_broken_model_is_one_error_line_and_leaves_the_index_alone(
    broken_models: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    root, idx = tmp_path / "crate", tmp_path / "idx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.rs").write_text(GOOD)
    expected = {
        "truncated": "model.safetensors is damaged",
        "garbled": "model.safetensors is damaged",
        "no-weights": "holds no model weights",
        "empty": "not a Hugging Face model folder",
    }
    for name, folder in broken_models.items():
        done = _rcm("index", str(root), "--model", str(folder), "--index-dir", str(idx))
        _one_error_line(done, expected[name], str(folder))
        assert not (idx / "identity.json").exists(), name
    # a dry run warns, and writes nothing either
    dry = _rcm(
        "index", str(root), "--dry-run", "--model", str(broken_models["truncated"]),
        "--index-dir", str(idx),
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "warning: a run would be refused: cannot load the model" in dry.stdout
    assert not (idx / "identity.json").exists()
    # the good model is not refused: nothing recorded the broken ones
    good = _rcm("index", str(root), "--model", str(tiny_model), "--index-dir", str(idx), "-q")
    assert good.returncode == 0, good.stderr
    identity = (idx / "identity.json").read_bytes()
    before = index_state(idx)
    # not even --force lets a broken model wipe a good index
    done = _rcm(
        "index", str(root), "--force", "--model", str(broken_models["truncated"]),
        "--index-dir", str(idx),
    )  # fmt: skip
    _one_error_line(done, "model.safetensors is damaged")
    assert (idx / "identity.json").read_bytes() == identity and index_state(idx) == before
