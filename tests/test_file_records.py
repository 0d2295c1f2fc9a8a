"""Whole-file BM25 records: the store keeps them with the chunks, ranking uses them.

Store level (a real Tantivy index): records follow every write, delete, commit, rewrite and
repair of the chunks; an index without records gets them from its stored chunks on a
writable open; a reader sees records made after it opened. Ranking level: the step raises a
file's items by its share of the best whole-file score. Run level: an index from before the
records gets them at the end of a run that changed nothing, and then searches as a fresh
build does; a ``vector`` search never asks the records.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rcm_dask import index
from rcm_dask.errors import IndexWriteError
from rcm_dask.integrity import complete_file_records
from rcm_dask.ranking import Candidate, RankingConfig, boost_whole_files, rank_candidates
from rcm_dask.search import SearchIndex
from rcm_dask.stores import Bm25Store
from rcm_dask.stores.bm25 import document_text
from rcm_dask.stores.file_records import FILES_SUBDIR, file_texts
from rcm_dask.testing import HashEmbedder, make_chunk

from . import DATA

# The answer to "send blocks until a full channel has room" is spread over three items of
# one file; another file has one item that says "send" loudly.
ARRAY_SEND = make_chunk(
    "send",
    path="src/flavors/array.rs",
    kind="method",
    module="flavors::array",
    code="pub fn send(&self, msg: T) -> Result<(), SendError<T>> { self.start_send(msg) }",
)
ARRAY_WAIT = make_chunk(
    "block_until_room",
    path="src/flavors/array.rs",
    module="flavors::array",
    code="fn block_until_room(&self) { while self.is_full() { self.senders.wait(); } }",
)
ARRAY_FULL = make_chunk(
    "TrySendError",
    path="src/flavors/array.rs",
    kind="enum",
    module="flavors::array",
    code="pub enum TrySendError<T> { Full(T), Disconnected(T) } // the channel has no room",
)
LOUD = make_chunk(
    "send_all",
    path="src/util.rs",
    module="util",
    code="pub fn send_all(send: &Send) { send.send(); send.send(); send.send(); }",
)
OTHER = make_chunk(
    "parse_toml",
    path="src/config.rs",
    module="config",
    code="pub fn parse_toml(text: &str) -> Config { toml::from_str(text).unwrap() }",
)
CHUNKS = (ARRAY_SEND, ARRAY_WAIT, ARRAY_FULL, LOUD, OTHER)
QUESTION = "send blocks until a full channel has room"


def _write(store: Bm25Store, chunks: tuple = CHUNKS) -> None:
    """What the index writer does: chunks, then each complete file's record, one commit."""
    store.add_batch(chunks)
    store.add_file_records(file_texts({"path": c.path, "code": c.code} for c in chunks))
    store.commit()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Bm25Store]:
    s = Bm25Store.create(tmp_path / "bm25")
    _write(s)
    yield s
    s.close()


def _paths(hits: list[tuple[str, float]]) -> list[str]:
    return [p for p, _ in hits]


def _same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    """The same files in the same order with the same scores (to float noise)."""
    assert _paths(got) == _paths(want)
    assert [s for _, s in got] == pytest.approx([s for _, s in want])


# ----------------------------------------------------------------------------- the store


def test_record_text_is_the_files_chunks_code() -> None:
    texts = file_texts([{"path": "a.rs", "code": "fn f() {}"}, {"path": "b.rs", "code": "x"},
                        {"path": "a.rs", "code": "fn g() {}"}])  # fmt: skip
    assert texts == {"a.rs": "fn f() {}\nfn g() {}", "b.rs": "x"}
    # analysed as a chunk's code is: glued identifiers spelled out once
    assert document_text("TrySendError::Full").endswith("try send error")


def test_whole_file_outranks_one_loud_item(store: Bm25Store) -> None:
    files = store.search_files(QUESTION, limit=10)
    assert _paths(files) == ["src/flavors/array.rs", "src/util.rs"]  # config.rs: no word
    assert files[0][1] > 3 * files[1][1]
    # item by item, array.rs's own `send` comes after the loud one: the records tell
    # the ranking that its file holds the rest of the answer
    names = [h.payload["name"] for h in store.search(QUESTION)]
    assert names.index("send_all") < names.index("send")
    assert store.file_record_paths() == sorted({c.path for c in CHUNKS})


def test_filters_and_queries_without_words(store: Bm25Store) -> None:
    only = store.search_files(QUESTION, paths=["src/util.rs"])
    assert _paths(only) == ["src/util.rs"]
    left_out = store.search_files(QUESTION, exclude_paths=["src/flavors/array.rs"])
    assert "src/flavors/array.rs" not in _paths(left_out) and left_out
    assert store.search_files("::<>() && ||") == []
    assert store.search_files(QUESTION, limit=0) == []


def test_records_follow_deletes_commits_and_close(tmp_path: Path) -> None:
    s = Bm25Store.create(tmp_path / "bm25")
    _write(s)
    s.delete_paths(["src/flavors/array.rs"])
    assert "src/flavors/array.rs" in s.file_record_paths()  # not before the commit
    s.commit()
    assert "src/flavors/array.rs" not in s.file_record_paths()
    assert "src/flavors/array.rs" not in _paths(s.search_files(QUESTION))
    s.add_file_records({"src/new.rs": "fn sender_blocks() {}"})
    s.close()  # uncommitted: gone
    with Bm25Store.open(tmp_path / "bm25") as r:
        assert r.file_record_paths() == ["src/config.rs", "src/util.rs"]


def test_read_only_store_cannot_add_records(store: Bm25Store, tmp_path: Path) -> None:
    with Bm25Store.open(tmp_path / "bm25") as r, pytest.raises(IndexWriteError, match="read-only"):
        r.add_file_records({"a.rs": "x"})


def test_rewrite_and_repair_keep_the_records(store: Bm25Store) -> None:
    before = store.search_files(QUESTION)
    store.delete_paths(["src/util.rs"])
    store.add_batch([LOUD])
    store.add_file_records(file_texts([{"path": LOUD.path, "code": LOUD.code}]))
    store.commit()
    store.rewrite()  # deleted records leave the statistics too
    _same(store.search_files(QUESTION), before)
    # the repair from the vector store's payloads makes the files' records as well
    payloads = [p for p in store.iter_payloads() if p["path"] == "src/flavors/array.rs"]
    store.delete_paths(["src/flavors/array.rs"])
    store.commit()
    assert store.add_payloads(payloads) == 3
    store.commit()
    assert "src/flavors/array.rs" in store.file_record_paths()
    store.rewrite()  # as the run that repairs ends (integrity.purge_bm25_deletes)
    _same(store.search_files(QUESTION), before)


def test_an_index_without_records_gets_them_on_a_writable_open(
    store: Bm25Store, tmp_path: Path
) -> None:
    built = store.search_files(QUESTION)
    store.close()
    shutil.rmtree(tmp_path / "bm25" / FILES_SUBDIR)  # as an index of an older version
    with Bm25Store.open(tmp_path / "bm25") as old:
        assert old.search_files(QUESTION) == []  # searched without, no error
        assert old.search(QUESTION)  # the chunks answer as before
        with Bm25Store.open(tmp_path / "bm25", writable=True):
            pass  # made from the stored chunks
        # the reader that opened before sees them now
        _same(old.search_files(QUESTION), built)


def test_damaged_records_are_made_again(store: Bm25Store, tmp_path: Path) -> None:
    built = store.search_files(QUESTION)
    store.close()
    (tmp_path / "bm25" / FILES_SUBDIR / "meta.json").write_text("{not json")
    with Bm25Store.open(tmp_path / "bm25") as r:
        assert r.search_files(QUESTION) == []  # a reader does without them
    with Bm25Store.open(tmp_path / "bm25", writable=True) as w:
        _same(w.search_files(QUESTION), built)
        assert w.count() == len(CHUNKS)  # the chunks were not touched


# ----------------------------------------------------------------------------- ranking


def _cand(key: str, path: str, score: float, match: float = 0.0) -> Candidate:
    return Candidate(key=key, payload={"path": path, "kind": "function", "code": ""},
                     score=score, file_match=match)  # fmt: skip


def test_whole_file_step_raises_the_matching_files_items() -> None:
    cands = [_cand("loud", "util.rs", 1.0, 0.0), _cand("wait", "array.rs", 0.9, 1.0),
             _cand("half", "half.rs", 0.8, 0.5)]  # fmt: skip
    ranked = rank_candidates(cands, QUESTION, RankingConfig.only("whole_file"))
    assert [c.key for c in ranked] == ["wait", "half", "loud"]
    assert ranked[0].score == pytest.approx(0.9 * 1.5)
    assert ranked[0].reasons == ["whole file matches (1.00 of the best)"]
    assert ranked[2].reasons == []
    off = rank_candidates(cands, QUESTION, RankingConfig.from_spec("none"))
    assert [c.key for c in off] == ["loud", "wait", "half"]
    stronger = boost_whole_files(
        [_cand("a", "a.rs", 1.0, 0.5)], RankingConfig(whole_file_boost=2.0)
    )
    assert stronger[0].score == pytest.approx(2.0)


def test_the_step_is_on_by_default() -> None:
    assert RankingConfig().whole_file and "whole_file" in RankingConfig.from_spec("default").spec


# ----------------------------------------------------------------------------- runs


@pytest.fixture
def crate(tmp_path: Path) -> Path:
    root = tmp_path / "crate"
    shutil.copytree(DATA / "mini_crate", root)
    (root / "src" / "channel.rs").write_text(
        "pub fn send(msg: u8) -> Result<(), Full> { wait_for_room(); Ok(()) }\n"
        "fn wait_for_room() { /* blocks the sender */ }\n"
        "pub struct Full; // the channel has no room\n"
    )
    return root


def test_a_run_that_changes_nothing_completes_an_older_index(crate: Path, tmp_path: Path) -> None:
    fresh, older = tmp_path / "fresh", tmp_path / "older"
    cfg = {"mode": "sequential", "vectors": "none"}
    index(str(crate), index_dir=str(fresh), **cfg)
    index(str(crate), index_dir=str(older), **cfg)
    shutil.rmtree(older / "bm25" / FILES_SUBDIR)
    with SearchIndex(older) as idx:
        without = [(h.path, h.name) for h in idx.search(QUESTION)]
    stats = index(str(crate), index_dir=str(older), **cfg)
    assert stats.files_indexed == 0  # nothing read, chunked or embedded again
    with SearchIndex(older) as a, SearchIndex(fresh) as b:
        assert a.bm25.file_record_paths() == b.bm25.file_record_paths()
        assert a.bm25.file_record_paths()  # every file of the crate
        got = [(h.path, h.name, round(h.score, 6)) for h in a.search(QUESTION)]
        assert got == [(h.path, h.name, round(h.score, 6)) for h in b.search(QUESTION)]
        assert got[0][0] == "src/channel.rs"
    assert without  # searched without the records before, no error
    assert not complete_file_records(older)  # once only


def test_unwritable_index_keeps_searching_without_records(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx_dir = tmp_path / "idx"
    index(str(crate), index_dir=str(idx_dir), mode="sequential", vectors="none")
    shutil.rmtree(idx_dir / "bm25" / FILES_SUBDIR)

    def refuse(*_a: object, **_k: object) -> Bm25Store:
        raise IndexWriteError("cannot write the BM25 index: Read-only file system")

    monkeypatch.setattr(Bm25Store, "create", refuse)
    assert complete_file_records(idx_dir) is False
    with SearchIndex(idx_dir) as idx:
        assert idx.search(QUESTION)


def test_vector_search_does_not_ask_the_records(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx_dir = tmp_path / "idx"
    embedder = HashEmbedder()
    index(str(crate), index_dir=str(idx_dir), mode="sequential", embedder=embedder)
    asked: list[str] = []
    real = Bm25Store.search_files

    def spy(self: Bm25Store, query: str, *a: object, **k: object) -> list[tuple[str, float]]:
        asked.append(query)
        return real(self, query, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Bm25Store, "search_files", spy)
    with SearchIndex(idx_dir, embedder=embedder) as idx:  # type: ignore[arg-type]
        idx.search(QUESTION, mode="vector")
        assert asked == []
        cands = idx.candidates(QUESTION, mode="hybrid")
        assert asked == [QUESTION]
        ranked = rank_candidates(cands, QUESTION)
        assert ranked[0].path == "src/channel.rs"
        assert any(r.startswith("whole file matches") for r in ranked[0].reasons)
        idx.search(QUESTION, mode="bm25", ranking="default,-whole_file")
        assert asked == [QUESTION]
        idx.search(QUESTION, mode="bm25")
        assert asked == [QUESTION, QUESTION]
