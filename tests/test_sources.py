from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import pytest

from rcm_dask.errors import SourceError
from rcm_dask.records import FileRef, Skipped, SourceFile
from rcm_dask.sources import discover_sources, open_root, read_source
from rcm_dask.testing import HashEmbedder

T = TypeVar("T")

TREE: dict[str, bytes] = {
    "src/lib.rs": b"pub mod a;\n",
    "src/a.rs": b"pub fn a() {}\n",
    "src/nested/deep/b.rs": b"fn b() {}\n",
    "src/README.md": b"# not rust\n",
    "target/debug/build/gen.rs": b"fn generated() {}\n",
    "crates/x/target/out.rs": b"fn out() {}\n",
    ".hidden/c.rs": b"fn c() {}\n",
    "src/.dotfile.rs": b"fn d() {}\n",
    "generated/g.rs": b"fn g() {}\n",
    "src/keep_gen.rs": b"fn k() {}\n",
    "src/scratch_tmp.rs": b"fn s() {}\n",
    "sub/.gitignore": b"local_only.rs\n",
    "sub/local_only.rs": b"fn l() {}\n",
    "sub/kept.rs": b"fn kept() {}\n",
    "other/local_only.rs": b"fn not_ignored_here() {}\n",
    "src/my_credentials.rs": b"fn creds() {}\n",
    "src/deploy.key.rs": b"fn k() {}\n",
    ".gitignore": b"/generated/\n*_tmp.rs\n",
}

EXPECTED_FILES = [
    "other/local_only.rs",
    "src/a.rs",
    "src/keep_gen.rs",
    "src/lib.rs",
    "src/my_credentials.rs",  # a module named for what it handles: its content is checked
    "src/nested/deep/b.rs",
    "sub/kept.rs",
]

EXPECTED_SKIPS = {
    "target/": "target-dir",
    "crates/x/target/": "target-dir",
    ".hidden/": "hidden",
    "src/.dotfile.rs": "hidden",
    "generated/": "ignored",
    "src/scratch_tmp.rs": "ignored",
    "sub/local_only.rs": "ignored",
    "src/deploy.key.rs": "sensitive",
}


def _write_local(root: Path, tree: dict[str, bytes]) -> None:
    for rel, data in tree.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture(params=["local", "file-url", "memory"])
def tree_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        fs = fsspec.filesystem("memory")
        base = f"/rcm-test-{uuid.uuid4().hex}"
        for rel, data in TREE.items():
            fs.pipe(f"{base}/{rel}", data)
        yield f"memory://{base}"
        fs.rm(base, recursive=True)
        return
    _write_local(tmp_path, TREE)
    yield str(tmp_path) if request.param == "local" else f"file://{tmp_path}"


def test_discovery_on_every_filesystem(tree_root: str) -> None:
    found = discover_sources(open_root(tree_root))
    assert [f.path for f in found.files] == EXPECTED_FILES
    skips = {s.path: s.reason for s in found.skipped}
    assert skips == EXPECTED_SKIPS
    assert all(s.detail for s in found.skipped)
    for f in found.files:
        assert f.size > 0 and f.mtime is not None


def test_discovery_options(tmp_path: Path) -> None:
    _write_local(tmp_path, TREE)
    found = discover_sources(
        open_root(str(tmp_path)),
        respect_gitignore=False,
        include_hidden=True,
        include_sensitive=True,
        exclude=("src/nested/**",),
    )
    paths = {f.path for f in found.files}
    assert {"generated/g.rs", ".hidden/c.rs", "src/deploy.key.rs", "sub/local_only.rs"} <= paths
    assert "src/nested/deep/b.rs" not in paths
    assert {s.path: s.reason for s in found.skipped}["src/nested/"] == "ignored"
    # target/ is never indexed
    assert not any(p.startswith("target/") for p in paths)


def test_symlinks_do_not_leave_the_root_or_loop(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _write_local(root, {"src/lib.rs": b"fn a() {}\n"})
    _write_local(outside, {"secret.rs": b"fn outside() {}\n"})
    os.symlink(outside, root / "src" / "escape")
    os.symlink(root / "src", root / "src" / "loop")
    os.symlink(outside / "secret.rs", root / "src" / "file_escape.rs")
    found = discover_sources(open_root(str(root)))
    assert [f.path for f in found.files] == ["src/lib.rs"]
    reasons = {s.path: s.detail for s in found.skipped}
    assert "outside the root" in reasons["src/escape/"]
    assert "a loop, not followed" in reasons["src/loop/"]
    assert "own path" not in reasons["src/loop/"]
    assert "outside the root" in reasons["src/file_escape.rs"]


def test_symlink_loops_and_in_root_links_are_told_apart(tmp_path: Path) -> None:
    """A link to its own folder, to an ancestor, or in a cycle is a loop; a link to a
    sibling folder is skipped because that folder is indexed at its own path."""
    root = tmp_path / "root"
    _write_local(root, {"src/lib.rs": b"fn a() {}\n", "other/b.rs": b"fn b() {}\n"})
    os.symlink(".", root / "src" / "here")
    os.symlink("..", root / "src" / "up")
    os.symlink("cycle_b", root / "src" / "cycle_a")
    os.symlink("cycle_a", root / "src" / "cycle_b")
    os.symlink(root / "other", root / "src" / "sibling")
    found = discover_sources(open_root(str(root)))
    assert [f.path for f in found.files] == ["other/b.rs", "src/lib.rs"]
    reasons = {s.path.rstrip("/"): s.detail for s in found.skipped}
    for loop in ("src/here", "src/up"):
        assert "a loop" in reasons[loop], reasons[loop]
    assert "indexed at its own path" in reasons["src/sibling"]
    assert "a loop" not in reasons["src/sibling"]


@pytest.mark.parametrize(
    ("path", "message"),
    [("does/not/exist", "does not exist"), ("file.rs", "is a file, not a folder")],
)
def test_bad_roots_are_clear_errors(tmp_path: Path, path: str, message: str) -> None:
    (tmp_path / "file.rs").write_text("fn a() {}")
    with pytest.raises(SourceError, match=message):
        open_root(str(tmp_path / path))


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="cannot open"):
        open_root("nosuchproto://x/y")


PEM_LINE = b"MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"


def _read(tmp_path: Path, data: bytes, **kw: object) -> SourceFile | Skipped:
    p = tmp_path / "f.rs"
    p.write_bytes(data)
    fs = fsspec.filesystem("file")
    return read_source(fs, FileRef("f.rs", str(p), len(data), p.stat().st_mtime), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"fn a() {}\xff\xfe\n", "not-utf8"),
        (b"fn a() {}\x00\x01\x02", "binary"),
        (b"x" * 2000, "too-large"),
        (b'const K: &str = "-----BEGIN RSA PRIVATE KEY-----\\n' + PEM_LINE + b'";', "sensitive"),
        (b'const K: &str = "AKIAIOSFODNN7EXAMPLE";', "sensitive"),
    ],
)
def test_read_skips_with_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    out = _read(tmp_path, data, max_file_size=1000)
    assert isinstance(out, Skipped) and out.reason == reason and out.detail


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"fn a() {}\n", "fn a() {}\n"),
        (b"\xef\xbb\xbffn bom() {}\n", "fn bom() {}\n"),
        (b"fn crlf() {}\r\n", "fn crlf() {}\r\n"),
        ("fn ünïcödé() {}".encode(), "fn ünïcödé() {}"),
        (b"", ""),
    ],
)
def test_read_decodes(tmp_path: Path, data: bytes, text: str) -> None:
    out = _read(tmp_path, data)
    assert isinstance(out, SourceFile)
    assert out.text == text and out.size == len(data) and len(out.sha256) == 64


def test_read_vanished_and_unreadable(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    gone = read_source(fs, FileRef("gone.rs", str(tmp_path / "gone.rs"), 10, None))
    assert isinstance(gone, Skipped) and gone.reason == "vanished"
    folder = tmp_path / "dir.rs"
    folder.mkdir()
    bad = read_source(fs, FileRef("dir.rs", str(folder), 10, None))
    assert isinstance(bad, Skipped) and bad.reason == "not-regular" and "folder" in bad.detail


def test_sensitive_content_can_be_included(tmp_path: Path) -> None:
    data = b"// -----BEGIN PRIVATE KEY-----\n// " + PEM_LINE + b"\n"
    assert isinstance(_read(tmp_path, data), Skipped)
    assert isinstance(_read(tmp_path, data, include_sensitive=True), SourceFile)


FINE_GRAINED_PAT = "github_pat_11ABCDEFG0123456789abcd_" + "Zy9" * 19 + "xw"


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (f'const T: &str = "{FINE_GRAINED_PAT}";'.encode(), "GitHub token"),
        (
            b"// -----BEGIN PGP PRIVATE KEY BLOCK-----\n// lQOYBF...\n"
            b"// -----END PGP PRIVATE KEY BLOCK-----\npub fn k() {}\n",
            "PGP private key block",
        ),
        (b'const K: &str = "sk_live_' + b"4eC39HqLyjWDarjtT1zdp7dc" + b'";', "Stripe live key"),
    ],
)
def test_more_secret_formats_are_sensitive(tmp_path: Path, data: bytes, label: str) -> None:
    out = _read(tmp_path, data)
    assert isinstance(out, Skipped) and out.reason == "sensitive" and label in out.detail


def test_public_pgp_keys_and_short_pat_lookalikes_are_read(tmp_path: Path) -> None:
    data = b"// -----BEGIN PGP PUBLIC KEY BLOCK-----\nconst P: &str = \"github_pat_\";\n"
    assert isinstance(_read(tmp_path, data), SourceFile)


def _fifo_and_socket(root: Path) -> Any:
    """A FIFO and a Unix socket named like Rust files, a FIFO named .gitignore."""
    import socket

    os.mkfifo(root / "src" / "pipe.rs")
    os.mkfifo(root / ".gitignore")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "src" / "sock.rs"))
    return sock


def test_fifos_and_sockets_are_listed_as_not_regular_without_opening(tmp_path: Path) -> None:
    _write_local(tmp_path, {"src/lib.rs": b"fn a() {}\n"})
    sock = _fifo_and_socket(tmp_path)
    try:
        found = _in_thread(lambda: discover_sources(open_root(str(tmp_path))))
    finally:
        sock.close()
    assert [f.path for f in found.files] == ["src/lib.rs"]
    skips = {s.path: (s.reason, s.detail) for s in found.skipped}
    assert skips["src/pipe.rs"][0] == "not-regular" and "FIFO" in skips["src/pipe.rs"][1]
    assert skips["src/sock.rs"][0] == "not-regular" and "socket" in skips["src/sock.rs"][1]


def test_a_file_turned_fifo_after_listing_is_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.rs")
    fs = fsspec.filesystem("file")
    out = _in_thread(lambda: read_source(fs, FileRef("x.rs", str(tmp_path / "x.rs"), 10, None)))
    assert isinstance(out, Skipped) and out.reason == "not-regular" and "FIFO" in out.detail


def test_names_that_are_not_utf8_are_skipped(tmp_path: Path) -> None:
    _write_local(tmp_path, {"src/lib.rs": b"fn a() {}\n"})
    base = os.fsencode(tmp_path / "src")
    with open(base + b"/bad\xffname.rs", "wb") as f:
        f.write(b"fn bad() {}\n")
    os.mkdir(base + b"/dir\xfe")
    with open(base + b"/dir\xfe/inside.rs", "wb") as f:
        f.write(b"fn inside() {}\n")
    found = discover_sources(open_root(str(tmp_path)))
    assert [f.path for f in found.files] == ["src/lib.rs"]
    skips = {s.path: s.reason for s in found.skipped}
    assert skips == {"src/bad\udcffname.rs": "not-utf8-name", "src/dir\udcfe/": "not-utf8-name"}


def _in_thread(fn: Callable[[], T], timeout: float = 10.0) -> T:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    import threading

    got: list[T] = []
    thread = threading.Thread(target=lambda: got.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert got, f"blocked for more than {timeout} s"
    return got[0]


def test_a_hard_link_is_skipped_and_its_content_never_indexed(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    """Was: ``ln /etc/passwd src/x.rs`` indexed the outside file, and search showed it."""
    from rcm_dask import IndexConfig, index, open_index

    outside = tmp_path / "outside.txt"
    outside.write_text("pub fn leaked_outside_secret_marker() {}\n")
    root = tmp_path / "crate"
    _write_local(root, {"src/lib.rs": b"pub fn kept_inside() {}\n"})
    os.link(outside, root / "src" / "x.rs")
    fs = fsspec.filesystem("file")
    ref = FileRef("src/x.rs", str(root / "src" / "x.rs"), 40, None)
    out = read_source(fs, ref)
    assert isinstance(out, Skipped) and out.reason == "hard-link" and "2 hard links" in out.detail

    idx = tmp_path / "idx"
    stats = index(str(root), IndexConfig(index_dir=str(idx)), embedder=hash_embedder)
    assert stats.files_indexed == 1 and stats.skipped.get("hard-link") == 1
    with open_index(index_dir=idx, embedder=hash_embedder) as ix:
        assert not ix.search("leaked_outside_secret_marker", mode="bm25")
        assert ix.search("kept_inside", mode="bm25")[0].name == "kept_inside"
