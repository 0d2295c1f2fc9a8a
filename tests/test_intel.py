"""Code intelligence (rcm_dask.intel) on real indexes: a slice of rust-src plus a small crate
whose branches and calls are counted by hand."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.chunking import chunk_source
from rcm_dask.errors import IndexIdentityError, IndexNotFoundError, SourceError
from rcm_dask.intel import CodeIntel, cargo_crate_name
from rcm_dask.records import EmbeddedBatch, IndexedFile, SourceFile
from rcm_dask.symbols import expand_use, resolve_use
from rcm_dask.testing import HashEmbedder
from rcm_dask.writer import IndexWriter

from . import DATA

HEAP = "alloc/src/collections/binary_heap.rs"
COLLECTIONS = "alloc/src/collections/mod.rs"
HEAP_TESTS = "alloc/src/collections/binary_heap/tests.rs"
MINI = "mini/src/lib.rs"

# Hand-counted: see test_complexity_counts_branches_by_hand.
MINI_LIB = """\
//! A small crate for code-intelligence tests.

use crate::util::helper;

/// Classifies.
pub fn classify(xs: &[i32], flag: bool) -> Result<i32, String> {
    // a comment line
    let mut total = 0;
    for x in xs {
        if *x > 10 && flag {
            total += 1;
        } else if *x < 0 || !flag {
            total -= 1;
        }
    }

    let v = match total {
        0 => 0,
        n if n > 5 => parse(n)?,
        _ => 1,
    };
    while total > 0 {
        total -= 1;
    }
    loop {
        break;
    }
    let f = |y: i32| if y > 0 { y } else { 0 };
    fn inner(z: i32) -> i32 {
        if z > 0 { 1 } else { 2 }
    }
    let s = "a // string, not a comment: helper()";
    Ok(v + f(total) + inner(1) + helper() + s.len() as i32)
}

fn parse(n: i32) -> Result<i32, String> {
    /* block
       comment */
    Ok(n)
}

pub fn ping(n: u32) -> u32 {
    if n == 0 { 0 } else { pong(n - 1) }
}

pub fn pong(n: u32) -> u32 {
    ping(n)
}

pub struct Stack {
    items: Vec<u32>,
}

impl Stack {
    pub fn push(&mut self, x: u32) {
        self.items.push(x);
    }

    pub fn push_twice(&mut self, x: u32) {
        self.push(x);
        Stack::push(self, x);
    }
}

pub mod util {
    pub fn helper() -> i32 {
        7
    }
}
"""


def _line_of(text: str, needle: str, start: int = 1) -> int:
    """1-based line of the first line at or after ``start`` that contains ``needle``."""
    for i, line in enumerate(text.split("\n")[start - 1 :], start=start):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not found")


def _index(root: Path, index_dir: Path) -> Any:
    config = IndexConfig(index_dir=str(index_dir))
    return index(str(root), config, mode="sequential", embedder=HashEmbedder())


@pytest.fixture(scope="module")
def indexed(rust_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, index folder): three files of alloc's collections and the small crate."""
    root = tmp_path_factory.mktemp("intel") / "lib"
    for rel in (HEAP, COLLECTIONS, HEAP_TESTS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rust_src / "library" / rel, root / rel)
    (root / MINI).parent.mkdir(parents=True)
    (root / MINI).write_text(MINI_LIB)
    idx = root.parent / "idx"
    stats = _index(root, idx)
    assert stats.files_indexed == 4
    return root, idx


@pytest.fixture
def intel(indexed: tuple[Path, Path]) -> Any:
    with CodeIntel(indexed[1]) as ci:
        yield ci


# ----------------------------------------------------------------------------- definitions


def test_definition_of_binary_heap_push(intel: CodeIntel, indexed: tuple[Path, Path]) -> None:
    text = (indexed[0] / HEAP).read_text()
    fn_line = _line_of(text, "pub fn push(&mut self, item: T)")
    (d,) = intel.find_definition("BinaryHeap::push")
    assert (d.path, d.kind, d.match) == (HEAP, "method", "suffix")
    assert d.qualname == "collections::binary_heap::BinaryHeap::push"
    assert d.parent == "BinaryHeap" and d.visibility == "pub"
    assert d.signature == "pub fn push(&mut self, item: T)"
    # the item starts at its docs and ends at its closing brace
    lines = text.split("\n")
    assert d.start_line < fn_line <= d.end_line
    assert lines[d.start_line - 1].strip().startswith("///")
    assert all(ln.strip().startswith(("///", "#[")) for ln in lines[d.start_line - 1 : fn_line - 1])
    assert lines[d.end_line - 1] == "    }"
    assert d.doc == lines[d.start_line - 1].strip().removeprefix("/// ")
    assert str(d).startswith(f"{HEAP}:{d.start_line}  method ")
    assert json.loads(json.dumps(d.to_dict()))["qualname"] == d.qualname
    # the full qualified name, with or without its crate, is an exact match
    for query in (d.qualname, "alloc::" + d.qualname, "crate::" + d.qualname):
        assert [(x.id, x.match) for x in intel.find_definition(query)] == [(d.id, "exact")]


def test_bare_names_are_ambiguous_and_ranked(intel: CodeIntel) -> None:
    news = intel.find_definition("new")
    quals = [d.qualname for d in news]
    assert "collections::binary_heap::BinaryHeap::new" in quals
    assert "collections::binary_heap::Hole::new" in quals
    assert {d.match for d in news} == {"name"}
    ranks = [0 if d.visibility == "pub" else 1 if d.visibility else 2 for d in news]
    assert ranks == sorted(ranks)  # pub before pub(..) before private
    assert quals.index("collections::binary_heap::BinaryHeap::new") < quals.index(
        "collections::binary_heap::Hole::new"
    )
    # two pushes: the heap's and the small crate's; a suffix picks one
    assert {d.qualname for d in intel.find_definition("push")} == {
        "collections::binary_heap::BinaryHeap::push",
        "Stack::push",
    }
    assert [d.qualname for d in intel.find_definition("Stack::push")] == ["Stack::push"]
    assert [d.kind for d in intel.find_definition("BinaryHeap", kind="struct")] == ["struct"]
    assert intel.find_definition("BinaryHeap", kind="enum") == []
    assert len(intel.find_definition("new", limit=2)) == 2
    # case-sensitive, and a path that is not a suffix does not fall back to the name
    assert intel.find_definition("binaryheap::push") == []
    assert intel.find_definition("Vec::push") == []


def test_unknown_symbols_give_empty_results(intel: CodeIntel) -> None:
    assert intel.find_definition("no_such_symbol_anywhere") == []
    assert intel.find_references("no_such_symbol_anywhere") == []
    assert intel.find_references("Nope::push") == []
    graph = intel.call_graph("no_such_symbol_anywhere", depth=3)
    assert graph.roots == () and graph.callers == () and graph.callees == ()
    assert intel.find_definition("   ") == []


# ----------------------------------------------------------------------------- references


def test_references_to_binary_heap_push(intel: CodeIntel, indexed: tuple[Path, Path]) -> None:
    root = indexed[0]
    sources = {p: (root / p).read_text().split("\n") for p in (HEAP, HEAP_TESTS, MINI)}
    heap = sources[HEAP]
    refs = intel.find_references("BinaryHeap::push")
    for r in refs:  # every reported line holds the use
        assert "push(" in sources[r.path][r.line - 1], r
    resolved = [r for r in refs if r.resolved]
    assert {r.in_qualname for r in resolved} >= {
        "collections::binary_heap::BinaryHeap::extend_desugared"
    }
    assert all(r.written == "self.push(" and r.confidence == "exact" for r in resolved)
    assert {r.target for r in resolved} == {"collections::binary_heap::BinaryHeap::push"}
    # ``heap.push(x)`` in the tests: listed, but only as a same-name match
    test_push = [r for r in refs if r.in_qualname.endswith("tests::test_push")]
    assert test_push and not test_push[0].resolved and test_push[0].confidence == "name"
    assert test_push[0].written == ".push(" and test_push[0].target == ""
    # resolved first
    flags = [r.resolved for r in refs]
    assert flags == sorted(flags, reverse=True)
    # the definition's own header is not a call; the small crate's ``Stack::push(`` and
    # ``self.push(`` (in Stack, which has its own push) name another owner: left out,
    # while its ``self.items.push(x)`` could be any push: listed as a name match
    fn_line = next(i for i, ln in enumerate(heap, 1) if "pub fn push(&mut self" in ln)
    assert all(not (r.path == HEAP and r.line == fn_line) for r in refs)
    assert [(r.written, r.resolved) for r in refs if r.path == MINI] == [(".push(", False)]
    assert len(intel.find_references("BinaryHeap::push", limit=2)) == 2


def test_references_resolve_self_and_paths(intel: CodeIntel) -> None:
    text = MINI_LIB.split("\n")
    refs = intel.find_references("Stack::push")
    exact = [(r.line, r.written) for r in refs if r.confidence == "exact"]
    assert exact == sorted(
        [
            (_line_of(MINI_LIB, "self.push(x)"), "self.push("),
            (_line_of(MINI_LIB, "Stack::push(self"), "Stack::push("),
        ]
    )
    # ``self.items.push(x)`` is a Vec's push: a name match only
    vec_push = [r for r in refs if r.line == _line_of(MINI_LIB, "self.items.push")]
    assert [(r.resolved, r.written) for r in vec_push] == [(False, ".push(")]
    # the bare name: every push call, the heap's included, each tied where it can be
    everything = intel.find_references("push", limit=1000)
    assert {r.path for r in everything} == {HEAP, HEAP_TESTS, MINI}
    assert {r.target for r in everything if r.written == "Stack::push("} == {"Stack::push"}
    # a free function called bare in its own module, and through an import
    helper = intel.find_references("helper")
    assert [(r.in_qualname, r.confidence, r.target) for r in helper] == [
        ("classify", "scope", "util::helper")
    ]
    assert text[helper[0].line - 1].strip().startswith("Ok(v + f(total)")


def test_type_and_impl_references(intel: CodeIntel, indexed: tuple[Path, Path]) -> None:
    refs = intel.find_references("Hole")
    kinds = {r.kind for r in refs}
    assert {"type", "impl", "trait-impl"} - {"trait-impl"} <= kinds
    impls = [r for r in refs if r.kind == "impl"]
    text = (indexed[0] / HEAP).read_text().split("\n")
    assert impls and all(r.resolved and r.confidence == "scope" for r in impls)
    assert any(r.written == "impl Hole" for r in impls)
    sift_up = [r for r in refs if r.in_qualname.endswith("BinaryHeap::sift_up")]
    assert sift_up and "Hole" in text[sift_up[0].line - 1]
    drop = intel.find_references("Drop")
    assert any(
        r.kind == "trait-impl" and r.in_qualname.endswith("impl Drop for Hole") for r in drop
    )


# ----------------------------------------------------------------------------- call graph


def test_call_graph_of_push(intel: CodeIntel, indexed: tuple[Path, Path]) -> None:
    text = (indexed[0] / HEAP).read_text().split("\n")
    g = intel.call_graph("BinaryHeap::push", depth=1)
    assert [d.qualname for d in g.roots] == ["collections::binary_heap::BinaryHeap::push"]
    callees = {e.callee: e for e in g.callees}
    sift = callees["collections::binary_heap::BinaryHeap::sift_up"]
    assert sift.resolved and sift.callee_path == HEAP and "self.sift_up(" in text[sift.line - 1]
    assert sift.depth == 1 and sift.caller == "collections::binary_heap::BinaryHeap::push"
    assert callees["push"].resolved is False  # self.data.push: the Vec's
    callers = {e.caller for e in g.callers if e.resolved}
    assert "collections::binary_heap::BinaryHeap::extend_desugared" in callers
    assert all(e.depth == 1 for e in g.callers + g.callees)

    deeper = intel.call_graph("BinaryHeap::push", depth=2)
    two = {(e.caller, e.callee) for e in deeper.callees if e.depth == 2}
    assert (
        "collections::binary_heap::BinaryHeap::sift_up",
        "collections::binary_heap::Hole::new",
    ) in two
    up = {e.caller for e in deeper.callers if e.depth == 2}
    assert "collections::binary_heap::BinaryHeap::spec_extend" in up
    assert "callers:" in str(deeper) and json.loads(json.dumps(deeper.to_dict()))["depth"] == 2
    small = intel.call_graph("BinaryHeap::push", depth=2, limit=2)
    assert small.truncated and len(small.callers) == 2 and len(small.callees) == 2


def test_call_graph_cycles_end(intel: CodeIntel) -> None:
    g = intel.call_graph("ping", depth=10)
    assert [(e.caller, e.callee, e.depth) for e in g.callees] == [
        ("ping", "pong", 1),
        ("pong", "ping", 2),
    ]
    assert [(e.caller, e.callee, e.depth) for e in g.callers] == [
        ("pong", "ping", 1),
        ("ping", "pong", 2),
    ]
    assert all(e.confidence == "scope" for e in g.callees + g.callers)


# ----------------------------------------------------------------------------- dependencies


def test_dependencies_both_ways(intel: CodeIntel, indexed: tuple[Path, Path]) -> None:
    deps = intel.dependencies(HEAP)
    assert (deps.module, deps.crate) == ("collections::binary_heap", "alloc")
    by_use = {e.use_path: e for e in deps.imports}
    assert by_use["crate::collections::TryReserveError"].target_path == COLLECTIONS
    assert by_use["crate::collections::TryReserveError"].how == "item"
    assert by_use["crate::collections::TryReserveError"].target == (
        "alloc::collections::TryReserveError"
    )
    assert (
        by_use["core::mem::swap"].how == "external" and by_use["core::mem::swap"].target_path == ""
    )
    assert "crate::vec::Vec" in by_use and "core::mem" in by_use  # braces expanded, self kept
    importers = {(e.path, e.use_path): e for e in deps.imported_by}
    assert (COLLECTIONS, "binary_heap::BinaryHeap") in importers
    assert (HEAP_TESTS, "super::*") in importers
    assert all(e.target_path == HEAP for e in importers.values())

    back = intel.dependencies(COLLECTIONS)
    assert {e.path for e in back.imported_by} >= {HEAP}
    assert "imported by:" in str(back)
    # a path given under the root is accepted too
    assert intel.dependencies(str(indexed[0] / HEAP)).path == HEAP


def test_unknown_file_is_a_clear_error(intel: CodeIntel) -> None:
    with pytest.raises(SourceError, match="not in the index.*did you mean .*binary_heap.rs"):
        intel.dependencies("collections/binary_heap.rs")
    with pytest.raises(SourceError, match="not in the index"):
        intel.complexity("src/nope.rs")


# ----------------------------------------------------------------------------- complexity


def test_complexity_counts_branches_by_hand(intel: CodeIntel) -> None:
    c = intel.complexity(MINI)
    fns = {f.qualname: f for f in c.functions}
    # classify: 1 + for + if + && + else-if + || + match (3 arms: +2) + guard + ? + while
    # + loop + the closure's if = 13; ``inner`` is counted on its own: 1 + if = 2
    assert fns["classify"].complexity == 13
    assert fns["classify::inner"].complexity == 2
    assert fns["parse"].complexity == 1
    assert fns["ping"].complexity == 2 and fns["Stack::push"].kind == "method"
    assert fns["classify"].start_line == _line_of(MINI_LIB, "pub fn classify")
    lines = MINI_LIB.split("\n")[:-1]
    blank = sum(1 for ln in lines if not ln.strip())
    # comment-only lines: //!, ///, // a comment line, and the two of the block comment
    assert (c.lines_total, c.lines_comment, c.lines_blank) == (len(lines), 5, blank)
    assert c.lines_code == len(lines) - 5 - blank
    items = dict(c.items)
    # classify, inner, parse, ping, pong, helper
    assert items["function"] == 6 and items["method"] == 2 and items["struct"] == 1
    assert not c.stale and "complexity 13" in str(c)
    assert c.to_dict()["items"] == items


def test_complexity_of_real_functions(intel: CodeIntel) -> None:
    fns = {f.qualname: f for f in intel.complexity(HEAP).functions}
    # sift_up: 1 + while + if
    assert fns["collections::binary_heap::BinaryHeap::sift_up"].complexity == 3
    # push: no branch
    assert fns["collections::binary_heap::BinaryHeap::push"].complexity == 1


# ----------------------------------------------------------------------------- the index side


def _symbol_rows(index_dir: Path) -> dict[str, Any]:
    """Symbol tables of an index, without the row ids, and the manifest's paths."""
    db = sqlite3.connect(index_dir / "manifest.sqlite")
    try:
        cols = "chunk_id, path, name, qualname, kind, parent, module, start_line, end_line"
        return {
            "files": sorted(r[0] for r in db.execute("SELECT path FROM files")),
            "modules": sorted(db.execute("SELECT * FROM modules").fetchall()),
            "symbols": sorted(db.execute(f"SELECT {cols} FROM symbols").fetchall()),
            "refs": sorted(
                db.execute(
                    "SELECT s.chunk_id, r.target, r.kind, r.via, r.line FROM refs r "
                    "JOIN symbols s ON s.sid = r.sid"
                ).fetchall()
            ),
            "imports": sorted(db.execute("SELECT * FROM imports").fetchall()),
            "orphan_refs": db.execute(
                "SELECT count(*) FROM refs WHERE sid NOT IN (SELECT sid FROM symbols)"
            ).fetchone()[0],
        }
    finally:
        db.close()


def _assert_consistent(state: dict[str, Any]) -> None:
    """Symbol rows exist exactly for the files the manifest lists."""
    files = set(state["files"])
    assert {m[0] for m in state["modules"]} == files
    assert {s[1] for s in state["symbols"]} <= files
    assert {i[0] for i in state["imports"]} <= files
    assert state["orphan_refs"] == 0


def test_incremental_runs_update_symbols(tmp_path: Path) -> None:
    root = tmp_path / "crate"
    (root / "src").mkdir(parents=True)
    (root / "src" / "lib.rs").write_text(MINI_LIB)
    (root / "src" / "extra.rs").write_text("pub fn gone() -> u32 { ping(1) }\n")
    idx = tmp_path / "idx"
    _index(root, idx)
    _assert_consistent(_symbol_rows(idx))
    with CodeIntel(idx) as ci:
        assert [d.path for d in ci.find_definition("gone")] == ["src/extra.rs"]
        assert any(r.in_qualname == "extra::gone" for r in ci.find_references("ping"))

    (root / "src" / "extra.rs").unlink()
    changed = MINI_LIB.replace("pub fn pong(n: u32)", "\n\npub fn pong_renamed(n: u32)")
    (root / "src" / "lib.rs").write_text(changed)
    stats = _index(root, idx)
    assert stats.files_removed == 1 and stats.files_indexed == 1
    state = _symbol_rows(idx)
    _assert_consistent(state)
    with CodeIntel(idx) as ci:
        assert ci.find_definition("gone") == []
        assert all(r.path != "src/extra.rs" for r in ci.find_references("ping"))
        assert ci.find_definition("pong") == []
        (d,) = ci.find_definition("pong_renamed")
        assert d.start_line == _line_of(changed, "pub fn pong_renamed")
        ping = ci.find_definition("ping")[0]
        assert ping.start_line == _line_of(changed, "pub fn ping")  # moved down by 2
    # the same tree indexed from scratch holds the same rows
    clean = tmp_path / "clean"
    _index(root, clean)
    fresh = _symbol_rows(clean)
    assert {k: v for k, v in state.items()} == fresh

    # a touched file (same content, new mtime) keeps its symbols
    os.utime(root / "src" / "lib.rs", (1_000_000, 1_000_000))
    _index(root, idx)
    assert _symbol_rows(idx) == fresh


def test_writer_commits_symbols_with_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "crate"
    (root / "src").mkdir(parents=True)
    (root / "src" / "lib.rs").write_text("pub fn one() {}\n")
    idx = tmp_path / "idx"
    _index(root, idx)
    identity = json.loads((idx / "identity.json").read_text())
    emb = HashEmbedder()
    text = "pub fn two() -> u32 { 2 }\n"
    chunks = chunk_source(SourceFile("src/two.rs", len(text), None, "0" * 64, text))
    batch = EmbeddedBatch(tuple(chunks), emb.embed_batch([c.code for c in chunks]))
    record = IndexedFile("src/two.rs", len(text), None, "0" * 64, tuple(c.id for c in chunks))

    writer = IndexWriter(idx, identity)
    writer.write_file(record, batch)
    writer.bm25.commit()
    writer.vectors.commit()
    writer.close(commit=False)  # stops before the manifest commit: no file, no symbols
    state = _symbol_rows(idx)
    _assert_consistent(state)
    assert "src/two.rs" not in state["files"]
    assert all(s[1] != "src/two.rs" for s in state["symbols"])

    with IndexWriter(idx, identity) as writer:
        writer.write_file(record, batch)
    state = _symbol_rows(idx)
    _assert_consistent(state)
    assert sorted(s[3] for s in state["symbols"] if s[1] == "src/two.rs") == ["two", "two::two"]

    with IndexWriter(idx, identity) as writer:
        writer.remove_files(["src/two.rs"])
    state = _symbol_rows(idx)
    _assert_consistent(state)
    assert all(s[1] != "src/two.rs" for s in state["symbols"])


def test_missing_or_old_index(tmp_path: Path, indexed: tuple[Path, Path]) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        CodeIntel(tmp_path / "nothing")
    old = tmp_path / "old"
    shutil.copytree(indexed[1], old)
    identity = json.loads((old / "identity.json").read_text())
    identity["format"] = 1
    (old / "identity.json").write_text(json.dumps(identity))
    with pytest.raises(IndexIdentityError, match="--force"):
        CodeIntel(old)


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("core::fmt", ["core::fmt"]),
        ("a::{b, c::{d, self}, e as f}", ["a::b", "a::c::d", "a::c", "a::e"]),
        ("::std::io::*", ["std::io::*"]),
        ("{{{{a}}}}", ["a"]),
        ("{" * 5000 + "x" + "}" * 5000, ["x"]),
    ],
)
def test_expand_use(text: str, expected: list[str]) -> None:
    assert list(expand_use(text)) == expected


@pytest.mark.parametrize(
    ("path", "module", "expected"),
    [
        ("crate::vec::Vec", "collections::binary_heap", ("alloc", "vec::Vec")),
        ("super::SpecExtend", "collections::binary_heap", ("alloc", "collections::SpecExtend")),
        ("self::Hole", "collections::binary_heap", ("alloc", "collections::binary_heap::Hole")),
        ("super::super::x", "a::b::c", ("alloc", "a::x")),
        ("std::mem::swap", "", ("std", "mem::swap")),
    ],
)
def test_resolve_use(path: str, module: str, expected: tuple[str, str]) -> None:
    assert resolve_use(path, module, "alloc") == expected


# ----------------------------------------------------------------------------- a small crate

# A crate named in its Cargo.toml (``tiny-net``, reached as ``tiny_net``) whose folder has
# another name, with an integration test calling it through that name and a module
# ``time`` of its own (``std::time`` must still not resolve to it).
TINY_FILES = {
    "Cargo.toml": '[package]\nname = "tiny-net"\nversion = "0.1.0"\n\n[dependencies]\n',
    "src/lib.rs": """\
pub mod net;
pub mod time;

/// Connect with the default delay.
pub fn connect(host: &str) -> net::Pool {
    let _ = time::now();
    net::Pool::new(host)
}
""",
    "src/time.rs": "pub fn now() -> u64 {\n    0\n}\n",
    "src/net/mod.rs": """\
//! Connections.

use std::time::Duration;

/// How long to wait between two attempts.
pub const RETRY_DELAY: Duration = Duration::from_millis(250);
pub static MAX_TRIES: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Idle,
    Busy(u32),
}

pub struct Marker;

pub struct Pool {
    state: State,
    marker: Marker,
}

impl Pool {
    pub const LIMIT: usize = 8;

    pub fn new(_host: &str) -> Self {
        Pool { state: State::Idle, marker: Marker }
    }

    pub fn wait(&self) -> Duration {
        // RETRY_DELAY in a comment is not a use; "RETRY_DELAY" in a string neither
        let mut tries = 0;
        while tries < MAX_TRIES && self.state != State::Idle {
            tries += 1;
        }
        RETRY_DELAY * tries + Duration::from_millis(Self::LIMIT as u64)
    }
}

pub fn spin() {
    for _ in 0..MAX_TRIES {}
}

/// Generic parameters are not values, in the header or the body.
pub fn pick<Mode: Copy>(m: Mode, _buf: [u8; BUF_LEN]) -> Option<Mode> {
    let kept: Option<Mode> = Some(m);
    kept
}

const BUF_LEN: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay() {
        assert!(RETRY_DELAY.as_millis() > 0 && Pool::LIMIT == 8);
    }
}
""",
    "tests/smoke.rs": """\
#[test]
fn connects() {
    let pool = tiny_net::connect("localhost");
    assert!(tiny_net::net::MAX_TRIES > 0);
    let _ = pool.wait();
}
""",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, index folder) of the crate above, in a folder not named like the crate."""
    root = tmp_path_factory.mktemp("tiny") / "checkout"
    for rel, text in TINY_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    idx = root.parent / "idx"
    assert _index(root, idx).files_indexed == 4  # .rs files only
    return root, idx


def _tiny_line(rel: str, needle: str, start: int = 1) -> int:
    """Line of ``needle`` in one of the tiny crate's files."""
    return _line_of(TINY_FILES[rel], needle, start)


def test_consts_and_statics_used_as_values_are_references(tiny: tuple[Path, Path]) -> None:
    net = "src/net/mod.rs"
    with CodeIntel(tiny[1]) as ci:
        refs = ci.find_references("RETRY_DELAY")
        wait = _tiny_line(net, "RETRY_DELAY * tries")
        assert [(r.path, r.line, r.kind, r.in_qualname, r.confidence) for r in refs] == [
            (net, wait, "value", "net::Pool::wait", "scope"),
            (net, _tiny_line(net, "assert!(RETRY_DELAY"), "value", "net::tests::delay", "scope"),
        ]
        assert {r.target for r in refs} == {"net::RETRY_DELAY"}
        assert refs[0].written == "RETRY_DELAY"
        # a static, through its module's path from tests/ (exact first), and bare in its module
        tries = ci.find_references("MAX_TRIES")
        assert [(r.path, r.line, r.written, r.confidence) for r in tries] == [
            ("tests/smoke.rs", 4, "net::MAX_TRIES", "exact"),
            (net, _tiny_line(net, "while tries < MAX_TRIES"), "MAX_TRIES", "scope"),
            (net, _tiny_line(net, "0..MAX_TRIES"), "MAX_TRIES", "scope"),  # a range
        ]
        # an associated const through Self:: and through its type
        limit = ci.find_references("Pool::LIMIT")
        assert [(r.written, r.confidence, r.target) for r in limit] == [
            ("Self::LIMIT", "exact", "net::Pool::LIMIT"),
            ("Pool::LIMIT", "exact", "net::Pool::LIMIT"),
        ]
        # a unit variant and a unit struct used as values; variant definitions are not uses
        idle = ci.find_references("Idle")
        assert {(r.in_qualname, r.written) for r in idle} == {
            ("net::Pool::new", "State::Idle"),
            ("net::Pool::wait", "State::Idle"),
        }
        assert [r.in_qualname for r in ci.find_references("Marker") if r.kind == "value"] == [
            "net::Pool::new"
        ]
        # derive attributes, the definitions' own names, comments and strings are not uses
        assert ci.find_references("Debug") == []
        assert ci.find_references("Mode") == []
        # a const in a function's header is a use
        assert [r.in_qualname for r in ci.find_references("BUF_LEN")] == ["net::pick"]
        assert all(r.kind != "value" for r in ci.find_references("State"))
        # values are not calls: the call graph is unchanged
        assert all(e.callee != "RETRY_DELAY" for e in ci.call_graph("Pool::wait").callees)


def test_calls_through_the_crate_name_resolve(tiny: tuple[Path, Path]) -> None:
    with CodeIntel(tiny[1]) as ci:
        g = ci.call_graph("connect")
        assert [(e.caller, e.path, e.line, e.confidence) for e in g.callers] == [
            ("tests::smoke::connects", "tests/smoke.rs", 3, "exact")
        ]
        # and from the caller's side
        out = ci.call_graph("tests::smoke::connects").callees
        assert ("connect", "src/lib.rs", True) in {
            (e.callee, e.callee_path, e.resolved) for e in out
        }
        (r,) = ci.find_references("connect")
        assert (r.written, r.target, r.confidence) == ("tiny_net::connect(", "connect", "exact")
        # the folder name is not the crate name once Cargo.toml names it
        assert "checkout" not in ci._crate_name_map()


def test_crate_name_falls_back_to_the_folder_without_a_cargo_toml(tmp_path: Path) -> None:
    root = tmp_path / "mini-crate"
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "src" / "lib.rs").write_text("pub fn parse_toml_config() -> u32 {\n    1\n}\n")
    (root / "tests" / "smoke.rs").write_text(
        "#[test]\nfn t() {\n    assert_eq!(mini_crate::parse_toml_config(), 1);\n}\n"
    )
    _index(root, tmp_path / "idx")
    with CodeIntel(tmp_path / "idx") as ci:
        g = ci.call_graph("parse_toml_config")
        assert [(e.caller, e.resolved) for e in g.callers] == [("tests::smoke::t", True)]
        # another crate's name does not resolve to it
        assert all(not r.resolved for r in ci.find_references("other_crate::parse_toml_config"))


def test_external_imports_never_resolve_to_local_files(tiny: tuple[Path, Path]) -> None:
    with CodeIntel(tiny[1]) as ci:
        deps = ci.dependencies("src/net/mod.rs")
        (edge,) = [e for e in deps.imports if e.use_path == "std::time::Duration"]
        # the crate has a module ``time`` (src/time.rs) and the file is net/mod.rs itself:
        # neither is std's
        assert (edge.target, edge.target_path, edge.how) == ("std::time::Duration", "", "external")
        assert all(e.path != "src/net/mod.rs" for e in ci.dependencies("src/time.rs").imported_by)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[package]\nname = "tiny-net"\n', "tiny_net"),
        ('[package]\nname = "a"\n[lib]\nname = "b_lib"\n', "b_lib"),
        ("[workspace]\nmembers = ['x']\n", ""),
        ('[dependencies]\nname = "no"\n', ""),
    ],
)
def test_cargo_crate_name(text: str, expected: str) -> None:
    assert cargo_crate_name(text) == expected


def test_the_reviewers_mini_crate(tmp_path: Path) -> None:
    """The three gaps, as found on tests/data/mini_crate (no Cargo.toml: named by its folder)."""
    root = tmp_path / "mini_crate"
    shutil.copytree(DATA / "mini_crate", root)
    _index(root, tmp_path / "idx")
    net = (root / "src/net/mod.rs").read_text()
    with CodeIntel(tmp_path / "idx") as ci:
        refs = ci.find_references("RETRY_DELAY")
        assert [(r.path, r.line, r.in_qualname, r.resolved) for r in refs] == [
            (
                "src/net/mod.rs",
                _line_of(net, "sleep(RETRY_DELAY"),
                "net::ConnectionPool::acquire",
                True,
            )
        ]
        callers = ci.call_graph("parse_toml_config").callers
        assert [(e.caller, e.path, e.resolved) for e in callers] == [
            ("tests::smoke::parses_a_line", "tests/smoke.rs", True)
        ]
        deps = ci.dependencies("src/net/mod.rs")
        assert [(e.use_path, e.target_path, e.how) for e in deps.imports] == [
            ("std::time::Duration", "", "external")
        ]


def test_an_indexed_file_swapped_for_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """Code intelligence reads indexed files (and Cargo.toml) again: one replaced by a FIFO
    since the run must give a SourceError at once, never block on the open."""
    import threading

    root = tmp_path / "crate"
    shutil.copytree(DATA / "mini_crate", root)
    idx = tmp_path / "idx"
    _index(root, idx)
    target = sorted(p for p in root.rglob("*.rs"))[0]
    rel = target.relative_to(root).as_posix()
    target.unlink()
    os.mkfifo(target)
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            with CodeIntel(idx) as ci:
                ci.complexity(rel)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        with open(target, "wb"):  # unblock the reader so the thread can end
            pass
        pytest.fail(f"complexity({rel!r}) blocked on a FIFO")
    assert isinstance(outcome[0], SourceError), outcome
    assert "FIFO" in str(outcome[0]) or "regular" in str(outcome[0]), outcome
