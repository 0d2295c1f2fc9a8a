"""``--force`` builds beside the live index and swaps it in (:mod:`rcm_dask.stores.swap`).

While a forced rebuild runs, searches (the library's, a searcher opened before the run,
the MCP server's cached ones) answer from the old index; at the end the new index
replaces it in one step; a rebuild that fails or is killed leaves the old index as it
was, and what a killed one left is deleted by the next run. Real stores throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rcm_dask import IndexConfig, index
from rcm_dask.errors import IndexInterrupted, IndexWriteError
from rcm_dask.mcp_server.state import Searchers
from rcm_dask.search import SearchIndex
from rcm_dask.stores.lock import IndexLock, is_locked
from rcm_dask.stores.manifest import read_identity
from rcm_dask.stores.swap import exchange_dirs, leftovers, rebuild_dir
from rcm_dask.testing import HashEmbedder, LocalQdrantServer, add_generated_files
from rcm_dask.writer import IndexWriter

NEW = "pub fn kangaroo_pouch_unique() {}\n"
"""An item the codebase gains after the first build: only the rebuilt index holds it."""


@pytest.fixture
def built(crate: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(codebase, index folder): the mini crate and 12 generated files, indexed; then the
    codebase gains ``src/kangaroo.rs``."""
    add_generated_files(crate, [6] * 12)
    idx = tmp_path / "idx"
    _run(crate, idx)
    (crate / "src" / "kangaroo.rs").write_text(NEW)
    return crate, idx


def _run(root: Path, idx: Path, **kw: Any) -> Any:
    config = IndexConfig(
        index_dir=str(idx),
        mode="sequential",
        commit_every=8,
        qdrant_url=kw.pop("qdrant_url", None),
    )
    return index(str(root), config, embedder=HashEmbedder(), **kw)


def _cli_search(idx: Path, query: str) -> list[str]:
    """The names ``rcm-dask search --bm25 --json`` finds (in a process of its own)."""
    done = subprocess.run(
        [sys.executable, "-m", "rcm_dask", "search", query, "--bm25", "--json"]
        + ["--index-dir", str(idx), "-n", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    hits = out["hits"] if isinstance(out, dict) else out
    return [str(h["name"]) for h in hits]


def _names(s: SearchIndex, query: str, mode: str = "hybrid") -> list[str]:
    return [h.name for h in s.search(query, mode=mode, limit=5)]


def test_searches_answer_from_the_old_index_until_the_swap(built: tuple[Path, Path]) -> None:
    root, idx = built
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        old_answer = _names(s, "parse toml config")
    # held open across the run (BM25 only: the embedded shard admits one opener at a time)
    before = SearchIndex(idx, embedder=HashEmbedder())
    old_bm25 = _names(before, "parse toml config", "bm25")
    assert "kangaroo_pouch_unique" not in _names(before, "kangaroo pouch unique", "bm25")
    servers = Searchers(IndexConfig())
    seen: list[dict[str, Any]] = []
    cli: list[list[str]] = []
    cli_before = _cli_search(idx, "parse toml config")

    def during(stats: Any, path: str) -> None:
        if not path or len(seen) >= 3:
            return
        # mid-run: the rebuild folder exists beside the live one, and the live index
        # answers as before, with vectors (the rebuild does not use the live shard)
        with SearchIndex(idx, embedder=HashEmbedder()) as s:
            seen.append(
                {
                    "rebuilds": leftovers(idx),
                    "locked": is_locked(idx),
                    "old": _names(s, "parse toml config"),
                    "new": _names(s, "kangaroo pouch unique"),
                    "notices": list(s.notices),
                    "files": s.stats().files,
                }
            )
        assert _names(before, "parse toml config", "bm25") == old_bm25
        with servers.searching(idx) as ix:
            assert ix.search("parse toml config", mode="bm25", limit=5)
        if len(seen) == 1:  # and the CLI, once (it starts a process)
            cli.append(_cli_search(idx, "parse toml config"))

    folder = idx.stat().st_ino
    stats = _run(root, idx, force=True, progress=during)
    assert seen and cli == [cli_before] and cli_before
    for s in seen:
        assert len(s["rebuilds"]) == 1 and s["locked"]
        assert s["notices"] == [], s
        assert s["old"] == old_answer, (s, old_answer)
        assert "kangaroo_pouch_unique" not in s["new"]
        assert s["files"] == stats.files_seen - 1
    # swapped in one step: a new folder under the same name, nothing left beside it
    assert idx.stat().st_ino != folder and leftovers(idx) == [] and not is_locked(idx)
    assert stats.index_dir == str(idx)
    # the searcher opened before the run follows the swap; the server's reopens
    assert "kangaroo_pouch_unique" in _names(before, "kangaroo pouch unique", "bm25")
    assert before.stats().files == stats.files_seen
    before.close()
    with servers.searching(idx) as ix:
        names = [h.name for h in ix.search("kangaroo pouch unique", mode="bm25", limit=5)]
        assert "kangaroo_pouch_unique" in names
    servers.close()
    # and the next plain run adds to the rebuilt index
    assert _run(root, idx).files_unchanged == stats.files_seen


def _fail_write(monkeypatch: pytest.MonkeyPatch, at: int, error: BaseException) -> None:
    """The writer's ``at``-th batch raises ``error`` (the others are written)."""
    calls = 0
    real = IndexWriter.write_batch

    def failing(self: IndexWriter, batch: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == at:
            raise error
        return real(self, batch)

    monkeypatch.setattr(IndexWriter, "write_batch", failing)


def test_a_failed_rebuild_leaves_the_old_index_and_no_folder(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, idx = built
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        old = (s.stats().files, _names(s, "parse toml config"))
    _fail_write(monkeypatch, 5, IndexWriteError("the disk said no"))
    with pytest.raises(IndexWriteError, match="the disk said no"):
        _run(root, idx, force=True)
    assert leftovers(idx) == [] and not is_locked(idx)
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert (s.stats().files, _names(s, "parse toml config")) == old


def test_ctrl_c_during_a_rebuild_says_the_index_is_as_it_was(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a forced rebuild: the live index was never touched, and the message says
    so (not "run again: only what is missing is read", which fits a plain run)."""
    root, idx = built
    _fail_write(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(IndexInterrupted, match="forced rebuild was dropped") as stopped:
        _run(root, idx, force=True)
    assert "only what is missing" not in str(stopped.value)
    assert stopped.value.files > 0 and leftovers(idx) == [] and not is_locked(idx)


@pytest.mark.slow
def test_a_killed_rebuild_leaves_the_old_index_and_the_next_run_clears_it(
    built: tuple[Path, Path], tiny_model: Path
) -> None:
    """kill -9 of a real ``rcm-dask index --force`` once its rebuild has committed."""
    root, idx = built
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCM_")}
    env.update(RCM_MODEL=str(tiny_model), RCM_TORCH_THREADS="1", RCM_COMMIT_EVERY="8")
    cmd = [sys.executable, "-m", "rcm_dask", "index", str(root), "--index-dir", str(idx)]
    first = subprocess.run([*cmd, "--force", "-q"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    with SearchIndex(idx) as s:
        old = (s.stats().files, _names(s, "parse toml config", mode="bm25"))
    proc = subprocess.Popen(
        [*cmd, "--force", "--mode", "sequential", "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = leftovers(idx)
            if found and (found[0] / "manifest.sqlite").exists():
                time.sleep(0.3)  # past its first commits
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(leftovers(idx)) == 1
    with SearchIndex(idx) as s:
        assert (s.stats().files, _names(s, "parse toml config", mode="bm25")) == old
    (root / "src" / "wombat.rs").write_text("pub fn wombat_burrow_unique() {}\n")
    again = subprocess.run([*cmd, "-q"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert leftovers(idx) == []
    with SearchIndex(idx) as s:
        assert s.stats().files == old[0] + 1  # the plain run added to the old index


def test_a_server_rebuild_writes_its_own_collection_and_drops_the_old(
    built: tuple[Path, Path], qdrant_server: LocalQdrantServer
) -> None:
    root, _ = built
    idx = root.parent / "idx-server"
    _run(root, idx, qdrant_url=qdrant_server.url)
    old = str((read_identity(idx) or {})["collection"])
    _run(root, idx, qdrant_url=qdrant_server.url, force=True)
    new = str((read_identity(idx) or {})["collection"])
    assert new != old and leftovers(idx) == []
    import qdrant_client

    client = qdrant_client.QdrantClient(url=qdrant_server.url)
    try:
        assert client.collection_exists(new) and not client.collection_exists(old)
    finally:
        client.close()
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert "kangaroo_pouch_unique" in _names(s, "kangaroo pouch unique", mode="vector")
    # a plain run keeps adding to the collection the identity names
    (root / "src" / "wombat.rs").write_text("pub fn wombat_burrow_unique() {}\n")
    _run(root, idx, qdrant_url=qdrant_server.url)
    assert str((read_identity(idx) or {})["collection"]) == new
    with SearchIndex(idx, embedder=HashEmbedder()) as s:
        assert "wombat_burrow_unique" in _names(s, "wombat burrow unique", mode="vector")


def test_a_run_waiting_through_the_swap_takes_the_new_folders_lock(tmp_path: Path) -> None:
    """A run queued on the live lock before a swap must not take the old tree's lock file
    when it is released: it goes on waiting for the new folder's."""
    idx = tmp_path / "idx"
    live = IndexLock(idx).acquire()
    got = threading.Event()

    def wait() -> None:
        with IndexLock(idx, wait=30):
            got.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.8)  # queued on the old lock file
    built = rebuild_dir(idx)
    new = IndexLock(built).acquire()
    exchange_dirs(idx, built)
    live.exchange(new)
    new.release()  # what ``new`` holds now: the old tree's lock file
    assert not got.wait(1.0), "the waiting run took the old tree's lock"
    live.release()  # the new folder's
    assert got.wait(10.0)
    waiter.join(10)


def test_a_lock_taken_on_a_swapped_out_file_is_dropped_and_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap lands between taking the lock file and writing the holder note: the lock
    held must be the file now in the folder, not the old tree's."""
    from rcm_dask.stores import lock as lock_module

    idx = tmp_path / "idx"
    idx.mkdir()
    swaps: list[Path] = []
    real = lock_module.FileLock.acquire

    def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        if not swaps:
            built = rebuild_dir(idx)
            built.mkdir()
            exchange_dirs(idx, built)
            swaps.append(built)
        return out

    monkeypatch.setattr(lock_module.FileLock, "acquire", acquire)
    with IndexLock(idx) as held:
        assert held._lock is not None
        assert lock_module._holds_current(held._lock, idx / lock_module.LOCK_FILE)
    assert len(swaps) == 1
