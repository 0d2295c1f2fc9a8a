"""The BM25 store: identifier splitting, ranking, hostile queries, deletes, commits, locking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tantivy

from rcm_dask.errors import IndexIdentityError, IndexNotFoundError, IndexWriteError
from rcm_dask.stores import Bm25Store, StoreHit, chunk_payload, split_identifier_words
from rcm_dask.stores.bm25 import MAX_QUERY_TERMS, query_terms
from rcm_dask.testing import make_chunk

PARSE_FN = make_chunk(
    "parse_toml_config",
    path="src/config.rs",
    module="config",
    code="pub fn parse_toml_config(text: &str) -> Result<Config, Error> { todo!() }",
    docs="Reads the settings file.",
)
PARSE_STRUCT = make_chunk(
    "ParseTomlConfig",
    path="src/config.rs",
    kind="struct",
    module="config",
    code="pub struct ParseTomlConfig { strict: bool }",
)
HEAP_STRUCT = make_chunk(
    "BinaryHeap",
    path="src/collections/binary_heap.rs",
    kind="struct",
    module="collections::binary_heap",
    code="pub struct BinaryHeap<T> { data: Vec<T> }",
    docs="A priority queue implemented with a binary heap.",
)
HEAP_PUSH = make_chunk(
    "push",
    path="src/collections/binary_heap.rs",
    kind="method",
    module="collections::binary_heap",
    parent="BinaryHeap",
    code="pub fn push(&mut self, item: T) { self.data.push(item); self.sift_up(0); }",
    docs="Pushes an item onto the heap.",
)
SCHEDULER = make_chunk(
    "run_queue",
    path="src/sched.rs",
    module="sched",
    code=(
        "fn run_queue(tasks: Vec<Task>) {\n"
        "    let mut queue: BinaryHeap<Task> = BinaryHeap::new();\n"
        "    for t in tasks { queue.push(t); }\n"
        "    while let Some(t) = queue.pop() { t.run(); } // drains the BinaryHeap\n"
        "}"
    ),
)
READ_FILE = make_chunk(
    "read_file",
    path="src/io.rs",
    module="io",
    code="pub fn read_file(p: &Path) -> io::Result<String> { fs::read_to_string(p) }",
    docs="Loads a whole file into a string. Größe is checked first.",
)
CORPUS = (PARSE_FN, PARSE_STRUCT, HEAP_STRUCT, HEAP_PUSH, SCHEDULER, READ_FILE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Bm25Store]:
    """A writable store holding :data:`CORPUS`, committed."""
    s = Bm25Store.create(tmp_path / "bm25")
    s.add_batch(CORPUS)
    s.commit()
    yield s
    s.close()


def names(hits: list[StoreHit]) -> list[str]:
    return [h.payload["name"] for h in hits]


def payloads_by_id(store: Bm25Store) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in store.iter_payloads()}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("parse_toml_config", ["parse", "toml", "config"]),
        ("ParseTomlConfig", ["parse", "toml", "config"]),
        ("parseTOMLConfig", ["parse", "toml", "config"]),
        ("HTTPServer2", ["http", "server", "2"]),
        ("HTTP", ["http"]),
        ("u32", ["u", "32"]),
        ("x86_64", ["x", "86", "64"]),
        ("__private_Thing__", ["private", "thing"]),
        ("a::b::CamelCase", ["a", "b", "camel", "case"]),
        ("std::collections::BinaryHeap::push", ["std", "collections", "binary", "heap", "push"]),
        ("impl Iterator for IntoIter<T>", ["impl", "iterator", "for", "into", "iter", "t"]),
        ("src/sync/mpsc.rs", ["src", "sync", "mpsc", "rs"]),
        ("ÜberStruct größeBerechnen", ["über", "struct", "größe", "berechnen"]),
        ("検索Index", ["検索", "index"]),
        ("", []),
        ("::<>()&", []),
    ],
)
def test_split_identifier_words(text: str, words: list[str]) -> None:
    assert split_identifier_words(text) == words


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ParseTomlConfig", ["parsetomlconfig", "pars", "toml", "config"]),
        ("binary heap", ["binari", "heap"]),
        ("a::b", ["a", "b"]),
        ("?!", []),
    ],
)
def test_query_terms(query: str, expected: list[str]) -> None:
    assert query_terms(query) == expected


def test_query_terms_are_capped() -> None:
    assert len(query_terms(" ".join(f"word{i}x" for i in range(500)))) == MAX_QUERY_TERMS


@pytest.mark.parametrize(
    "query", ["parse toml config", "ParseTomlConfig", "parse_toml_config", "parseTomlConfig"]
)
def test_identifier_words_match_both_spellings(store: Bm25Store, query: str) -> None:
    hits = store.search(query, limit=10)
    assert set(names(hits[:2])) == {"parse_toml_config", "ParseTomlConfig"}


def test_words_find_camel_case_identifiers_in_code(store: Bm25Store) -> None:
    hits = store.search("binary heap", limit=10)
    assert "run_queue" in names(hits)


def test_symbol_name_outranks_mentions(store: Bm25Store) -> None:
    # run_queue says BinaryHeap three times in its code; the struct only names it once.
    hits = store.search("BinaryHeap", limit=10)
    assert names(hits)[0] == "BinaryHeap"
    assert names(hits).index("BinaryHeap") < names(hits).index("run_queue")


def test_docs_are_stemmed(store: Bm25Store) -> None:
    assert names(store.search("load files", limit=1)) == ["read_file"]


def test_hits_are_best_first_with_payload(store: Bm25Store) -> None:
    hits = store.search("binary heap push", limit=10)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    by_id = {c.id: c for c in CORPUS}
    for hit in hits:
        assert hit.payload == chunk_payload(by_id[hit.id])


def test_limit(store: Bm25Store) -> None:
    assert len(store.search("binary heap push", limit=2)) == 2
    assert store.search("binary heap", limit=0) == []


@pytest.mark.parametrize(
    "query",
    [
        "?",
        "fn foo(&mut self) -> Result<(), E>",
        "AND OR NOT",
        "AND",
        '"unbalanced',
        "title:foo",
        "field:",
        "a AND (b OR",
        "[1 TO 2}",
        "^2 ~ * + - !",
        "\\",
        "größe",
        "検索 🦀 Ünïcode",
        "a" * 300,
        "",
        "   \n\t",
    ],
)
def test_hostile_queries_never_raise(store: Bm25Store, query: str) -> None:
    hits = store.search(query, limit=5)
    assert isinstance(hits, list)


@pytest.mark.parametrize("query", ["", "   ", "?", "::<>()&-> ''"])
def test_queries_without_words_return_nothing(store: Bm25Store, query: str) -> None:
    assert store.search(query) == []


def test_unicode_words_match(store: Bm25Store) -> None:
    assert names(store.search("Größe", limit=1)) == ["read_file"]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["function"], {"run_queue"}),
        (["struct"], {"BinaryHeap"}),
        (["struct", "method"], {"BinaryHeap", "push"}),
        (["trait"], set()),
        (None, {"BinaryHeap", "push", "run_queue"}),
        ([], {"BinaryHeap", "push", "run_queue"}),
    ],
)
def test_kind_filter(store: Bm25Store, kinds: list[str] | None, expected: set[str]) -> None:
    assert set(names(store.search("binary heap", kinds=kinds))) == expected


def test_path_filter(store: Bm25Store) -> None:
    hits = store.search("binary heap", paths=["src/sched.rs"])
    assert names(hits) == ["run_queue"]
    both = store.search("binary heap config", paths=["src/sched.rs", "src/config.rs"])
    assert {h.payload["path"] for h in both} == {"src/sched.rs", "src/config.rs"}


def test_filters_do_not_change_scores(store: Bm25Store) -> None:
    free = {h.id: h.score for h in store.search("binary heap")}
    filtered = store.search("binary heap", kinds=["struct"], paths=[HEAP_STRUCT.path])
    assert [h.id for h in filtered] == [HEAP_STRUCT.id]
    assert filtered[0].score == pytest.approx(free[HEAP_STRUCT.id])


def test_path_and_module_words_match(store: Bm25Store) -> None:
    assert "run_queue" in names(store.search("sched", limit=10))


def test_count_and_iter_payloads(store: Bm25Store) -> None:
    assert store.count() == len(CORPUS)
    assert payloads_by_id(store) == {c.id: chunk_payload(c) for c in CORPUS}


def test_writes_are_invisible_until_commit(store: Bm25Store) -> None:
    extra = make_chunk("zanzibar_quux")
    store.add_batch([extra])
    store.delete_paths([READ_FILE.path])
    assert store.count() == len(CORPUS)
    assert store.search("zanzibar quux") == []
    store.commit()
    assert store.count() == len(CORPUS)  # one added, one deleted
    assert names(store.search("zanzibar quux")) == ["zanzibar_quux"]


def test_delete_paths_removes_only_those_files(store: Bm25Store) -> None:
    store.delete_paths([PARSE_FN.path, "src/not_indexed.rs"])
    store.commit()
    assert store.count() == len(CORPUS) - 2
    assert {p["path"] for p in store.iter_payloads()} == {
        HEAP_STRUCT.path,
        SCHEDULER.path,
        READ_FILE.path,
    }
    assert store.search("parse toml config") == []


def test_delete_ids(store: Bm25Store) -> None:
    store.delete_ids([HEAP_PUSH.id])
    store.commit()
    assert HEAP_PUSH.id not in payloads_by_id(store)
    assert store.count() == len(CORPUS) - 1


def test_delete_then_readd_in_one_commit_keeps_only_new(store: Bm25Store) -> None:
    # Tantivy applies a delete to documents added *before* it only (opstamp order).
    new_fn = make_chunk(
        "parse_toml_config",
        path=PARSE_FN.path,
        module="config",
        version=1,
        code="pub fn parse_toml_config(s: &str) -> Config { strict_parse(s) }",
    )
    store.delete_paths([PARSE_FN.path])
    store.add_batch([new_fn])
    store.commit()
    in_file = [p for p in store.iter_payloads() if p["path"] == PARSE_FN.path]
    assert in_file == [chunk_payload(new_fn)]
    assert [h.id for h in store.search("strict parse", limit=1)] == [new_fn.id]


def test_delete_then_readd_same_id_in_one_commit(store: Bm25Store) -> None:
    changed = make_chunk(
        "push",
        path=HEAP_PUSH.path,
        kind="method",
        parent="BinaryHeap",
        module="collections::binary_heap",
        code="pub fn push(&mut self) { grow() }",
    )
    assert changed.id == HEAP_PUSH.id
    store.delete_ids([HEAP_PUSH.id])
    store.add_batch([changed])
    store.commit()
    assert store.count() == len(CORPUS)
    assert payloads_by_id(store)[HEAP_PUSH.id]["code"] == changed.code


def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bm25"
    with Bm25Store.create(path) as writer:
        writer.add_batch(CORPUS)
        writer.commit()
        before = [(h.id, h.score) for h in writer.search("binary heap push")]
    with Bm25Store.open(path) as reader:
        assert not reader.writable
        assert reader.count() == len(CORPUS)
        assert [(h.id, h.score) for h in reader.search("binary heap push")] == before
        assert payloads_by_id(reader) == {c.id: chunk_payload(c) for c in CORPUS}


def test_close_discards_uncommitted_writes(tmp_path: Path) -> None:
    path = tmp_path / "bm25"
    with Bm25Store.create(path) as writer:
        writer.add_batch(CORPUS[:2])
        writer.commit()
        writer.add_batch(CORPUS[2:])
    with Bm25Store.open(path) as reader:
        assert reader.count() == 2


def test_reader_sees_new_commits(tmp_path: Path) -> None:
    path = tmp_path / "bm25"
    with Bm25Store.create(path) as writer, Bm25Store.open(path) as reader:
        assert reader.count() == 0 and reader.search("binary heap") == []
        writer.add_batch(CORPUS)
        writer.commit()
        reader.reload()
        assert reader.count() == len(CORPUS)
        assert "BinaryHeap" in names(reader.search("binary heap"))
        writer.delete_paths([HEAP_STRUCT.path])
        writer.commit()
        # Every read picks up the latest commit, without an explicit reload.
        assert "BinaryHeap" not in names(reader.search("binary heap"))


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bm25"
    first = Bm25Store.create(path)
    with pytest.raises(IndexWriteError, match="already open for writing") as info:
        Bm25Store.open(path, writable=True)
    assert info.value.__cause__ is not None
    # A reader is fine while the writer works, and the lock goes with close().
    Bm25Store.open(path).close()
    first.close()
    Bm25Store.open(path, writable=True).close()


def test_read_only_store_refuses_writes(store: Bm25Store) -> None:
    with Bm25Store.open(store.path) as reader:
        for write in (
            lambda: reader.add_batch(CORPUS[:1]),
            lambda: reader.delete_paths(["src/lib.rs"]),
            lambda: reader.delete_ids([CORPUS[0].id]),
            reader.commit,
        ):
            with pytest.raises(IndexWriteError, match="read-only"):
                write()


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    s = Bm25Store.create(tmp_path / "bm25")
    s.close()
    s.close()  # idempotent
    with pytest.raises(IndexWriteError, match="closed"):
        s.add_batch(CORPUS)


def test_writable_open_creates_a_missing_index(tmp_path: Path) -> None:
    with Bm25Store.open(tmp_path / "new" / "bm25", writable=True) as s:
        assert s.count() == 0


def test_read_only_open_of_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        Bm25Store.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError):
        Bm25Store.open(tmp_path / "empty")


def test_index_with_another_schema_is_refused(tmp_path: Path) -> None:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", stored=True)
    tantivy.Index(builder.build(), path=str(tmp_path))
    with pytest.raises(IndexIdentityError, match="--force"):
        Bm25Store.open(tmp_path)
    with pytest.raises(IndexIdentityError):
        Bm25Store.create(tmp_path)
