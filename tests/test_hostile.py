"""Hostile and odd input, generated here (never committed): each file yields chunks or a
counted skip with its reason, the run finishes with a clear summary, and nothing that
was indexed before is hurt. Every mode meets the same table.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import SourceError
from rcm_dask.search import SearchIndex
from rcm_dask.stores.manifest import Manifest

from .conftest import HashEmbedder, index_state

GOOD = "/// Keeps the peace.\npub fn good_neighbour(x: u32) -> u32 {\n    x + 1\n}\n"


def _unreadable(path: Path) -> Any:
    """A .rs entry that cannot be read: no permission, or (as root, who reads anything)
    a Unix socket, which open() refuses."""
    if os.geteuid() != 0:
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
    "unreadable.rs": (_unreadable, "skip:unreadable"),
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
                assert any(rel in e for e in stats.skipped_examples.get(reason, [])), (
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
    assert stats.skipped["too-large"] == 1 and stats.skipped["unreadable"] == 1
    assert stats.skipped["ignored"] >= 3  # the three symlinks, each with its reason
    assert stats.files_indexed + stats.files_skipped - stats.skipped["ignored"] == stats.files_seen


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
    shutil.copytree(root, clean, symlinks=True, ignore=shutil.ignore_patterns("unreadable.rs"))
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
    assert stats.files_indexed == 50_000 and stats.chunks == 50_000 and stats.files_skipped == 0
    again = index(str(root), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())
    assert again.files_todo == 0 and again.files_unchanged == 50_000
