"""Full disks, on real small filesystems (tmpfs mounted per test; needs root).

The embedded Qdrant writes through memory maps, so a full disk used to kill the process
with SIGBUS (exit 135) instead of failing a write; keyword-only runs died with whatever
traceback the first store to hit ENOSPC raised. The promise checked here: a full disk
gives one clear :class:`DiskFullError` (``Error: not enough free space in DIR: N MiB
free, about M MiB needed ...``), nothing dies of SIGBUS or hangs, and a search after a
refused run answers from the last commit.

The index and search commands that could die of SIGBUS run as real ``rcm-dask``
subprocesses (a SIGBUS would take pytest with it); the rest calls the library.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rcm_dask import IndexConfig, index, open_index
from rcm_dask.errors import DiskFullError, IndexWriteError
from rcm_dask.stores import space
from rcm_dask.stores.space import MIB, free_bytes, is_disk_full
from rcm_dask.testing import HashEmbedder

from . import DATA

RCM_DASK = Path(sys.executable).parent / "rcm-dask"
TIMEOUT = 180
"""Seconds a CLI run may take; past it the test fails (a hang was one of the findings)."""

Mount = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """Mount a tmpfs of N MiB (``small_disk(N)``); unmounted at teardown."""
    mounted: list[Path] = []

    def mount(mib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (EPERM?): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    size = max(free_bytes(disk) - leave, 0)
    with open(filler, "wb") as f:
        while size > 0:
            step = min(size, MIB)
            try:
                f.write(b"\0" * step)
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            size -= step
    return filler


def _grow(root: Path, files: int, first: int = 0) -> None:
    """Add generated Rust files (30 documented functions each) under ``root/src/gen``."""
    out = root / "src" / "gen"
    out.mkdir(parents=True, exist_ok=True)
    for f in range(first, first + files):
        items = [
            f"/// Parses widget frame {i} of module {f} and returns its pixel count.\n"
            f"pub fn widget_frame_{f}_{i}(x: u64) -> u64 {{\n"
            f"    let y = x * {i} + {f};\n    if y > 10 {{ y - 1 }} else {{ y + 2 }}\n}}\n"
            for i in range(30)
        ]
        (out / f"m{f}.rs").write_text("\n".join(items))


def _crate(tmp_path: Path) -> Path:
    root = tmp_path / "crate"
    shutil.copytree(DATA / "mini_crate", root)
    return root


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RCM_DASK), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "RCM_HOME": str(home), "RCM_TORCH_THREADS": "1"},
    )


def _one_clear_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with one ``Error:`` naming the free and needed space; no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    err = " ".join(done.stderr.split())  # rich wraps long lines
    assert err.count("Error:") == 1 and "Traceback" not in err, done.stderr
    for w in words:
        assert w in err, done.stderr


# --------------------------------------------------------------------------- finding 1


def test_index_on_a_3_mib_disk_is_one_clear_error(
    small_disk: Mount, tiny_model: Path, tmp_path: Path
) -> None:
    """Was: SIGBUS (exit 135) while the shard preallocated its files."""
    disk = small_disk(3)
    idx = disk / "idx"
    done = _cli(
        "index", str(_crate(tmp_path)), "--model", str(tiny_model), "--index-dir", str(idx),
        home=tmp_path / "home",
    )  # fmt: skip
    _one_clear_error(done, f"not enough free space in {idx}", "MiB free", "MiB needed")
    assert not (idx / "vectors").exists() and not (idx / "bm25").exists()


# --------------------------------------------------------------------------- finding 2


def test_small_disk_search_and_growth_are_refused_and_the_last_commit_answers(
    small_disk: Mount, tiny_model: Path, tmp_path: Path
) -> None:
    """Was (12 MB): a growing index hung before the writer started, and hybrid search
    died of SIGBUS opening the shard (on tmpfs, reading a mapped hole allocates it)."""
    disk = small_disk(18)
    idx, root, home = disk / "idx", _crate(tmp_path), tmp_path / "home"
    model = ("--model", str(tiny_model), "--index-dir", str(idx))
    assert _cli("index", str(root), "-q", *model, home=home).returncode == 0

    filler = _fill(disk, leave=MIB)  # the first search would fill ~10 MiB of holes
    refused = _cli("search", "parse toml config", "--json", *model, home=home)
    _one_clear_error(refused, "not enough free space", "open the vector shard")
    filler.unlink()

    first = _cli("search", "parse toml config", "--json", *model, home=home)
    assert first.returncode == 0, first.stderr
    assert "parse_toml_config" in first.stdout

    _grow(root, 40)
    grown = _cli("index", str(root), "-q", *model, home=home)
    _one_clear_error(grown, "not enough free space", "index 40 files")

    again = _cli("search", "parse toml config", "--json", *model, home=home)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


@pytest.mark.parametrize("mode", ["sequential", "pipeline"])
def test_writer_refuses_a_batch_the_disk_cannot_take(
    small_disk: Mount,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    mode: str,
) -> None:
    """Past the plan's check (here switched off), the writer checks each batch itself:
    the run stops with DiskFullError before the shard writes through its maps, also
    when the writer is an actor on a Dask worker (the cluster run used to hang)."""
    client = None if mode == "sequential" else request.getfixturevalue("dask_client")
    disk = small_disk(24)
    idx, root = disk / "idx", _crate(tmp_path)
    config = IndexConfig(index_dir=str(idx), mode=mode)
    index(str(root), config, client=client, embedder=HashEmbedder())
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:  # fills tmpfs holes
        before = [h.id for h in ix.search("parse toml config", limit=5)]

    monkeypatch.setattr("rcm_dask.modes.require_run_space", lambda *a, **k: None)
    _grow(root, 3)
    filler = _fill(disk, leave=space.RESERVE_BYTES + 48 * 1024)
    with pytest.raises(DiskFullError, match=r"MiB free, about .* MiB needed to write \d+ chunk"):
        index(str(root), config, client=client, embedder=HashEmbedder())
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        assert [h.id for h in ix.search("parse toml config", limit=5)] == before

    filler.unlink()
    stats = index(str(root), config, client=client, embedder=HashEmbedder())
    assert stats.files_indexed == 3
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        assert ix.search("widget frame module", limit=1)[0].name.startswith("widget_frame_")


def test_forced_rebuild_needs_room_for_both_indexes(small_disk: Mount, tmp_path: Path) -> None:
    """``--force`` builds beside the live index, which keeps its space until the swap: with
    too little free for a whole new index beside it, the run is refused before it starts,
    the old index answers as before, and no rebuild folder is left; with room, the swap
    gives the old index's space back."""
    from rcm_dask.stores.swap import leftovers

    disk = small_disk(40)
    idx, root = disk / "idx", _crate(tmp_path)
    config = IndexConfig(index_dir=str(idx), mode="sequential")
    index(str(root), config, embedder=HashEmbedder())
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:  # fills tmpfs holes
        before = [h.id for h in ix.search("parse toml config", limit=5)]
    settled = free_bytes(disk)

    filler = _fill(disk, leave=6 * MIB)  # less than a new embedded shard needs on tmpfs
    with pytest.raises(DiskFullError, match="beside the current index"):
        index(str(root), config, embedder=HashEmbedder(), force=True)
    assert leftovers(idx) == []
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        assert [h.id for h in ix.search("parse toml config", limit=5)] == before

    filler.unlink()
    index(str(root), config, embedder=HashEmbedder(), force=True)
    assert leftovers(idx) == []
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        assert [h.id for h in ix.search("parse toml config", limit=5)] == before
    assert abs(free_bytes(disk) - settled) < 2 * MIB  # one index on the disk, not two


# --------------------------------------------------------------------------- finding 3


def test_keyword_only_on_a_full_disk_is_one_clear_error(
    small_disk: Mount, tiny_model: Path, tmp_path: Path
) -> None:
    """Was: a different traceback depending on which write hit the full disk first (the
    lock file's OSError, sqlite's OperationalError in the manifest commit, ...)."""
    disk = small_disk(4)
    idx, root, home = disk / "idx", _crate(tmp_path), tmp_path / "home"
    args = ("--vectors", "none", "--model", str(tiny_model), "--index-dir", str(idx), "-q")
    assert _cli("index", str(root), *args, home=home).returncode == 0
    _grow(root, 40)
    for leave in (0, 64 * 1024, MIB):
        filler = _fill(disk, leave=leave)
        refused = _cli("index", str(root), *args, home=home)
        _one_clear_error(refused, f"not enough free space in {idx}", "MiB free")
        filler.unlink()
    # at 0 bytes free sqlite may fail to make the manifest's shared-memory file (32 KiB):
    # then the search is refused for the full disk, never as a damaged index to rebuild
    filler = _fill(disk, leave=0)
    full = _cli("search", "parse toml config", "--index-dir", str(idx), "--json", home=home)
    said = " ".join(full.stderr.split())
    assert "damaged" not in said and "Traceback" not in said, full.stderr
    assert (full.returncode == 0 and "parse_toml_config" in full.stdout) or (
        full.returncode == 1 and "not enough free space" in said
    ), full.stderr
    filler.unlink()
    _fill(disk, leave=64 * 1024)
    found = _cli("search", "parse toml config", "--index-dir", str(idx), "--json", home=home)
    assert found.returncode == 0 and "parse_toml_config" in found.stdout, found.stderr


@pytest.mark.parametrize("leave", [0, 64 * 1024, MIB], ids=["lock", "pending", "commit"])
def test_store_errors_of_a_full_disk_become_disk_full_error(
    small_disk: Mount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leave: int
) -> None:
    """With every check switched off, ENOSPC from the lock file, sqlite or Tantivy still
    comes out as DiskFullError, and the last commit answers (keyword-only: no maps)."""
    disk = small_disk(4)
    idx, root = disk / "idx", _crate(tmp_path)
    config = IndexConfig(index_dir=str(idx), mode="sequential", vectors="none")
    index(str(root), config, embedder=HashEmbedder())
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        before = [h.id for h in ix.search("parse toml config", limit=5)]

    monkeypatch.setattr("rcm_dask.modes.require_run_space", lambda *a, **k: None)
    monkeypatch.setattr("rcm_dask.writer.require_space", lambda *a, **k: None)
    _grow(root, 60)
    _fill(disk, leave=leave)
    with pytest.raises(DiskFullError, match=r"not enough free space in .*MiB free, the disk"):
        index(str(root), config, embedder=HashEmbedder())
    with open_index(index_dir=idx, embedder=HashEmbedder()) as ix:
        # a failed manifest commit leaves the stores one commit ahead (their new files
        # stay pending, and the next run redoes them); the old answer is still there
        assert [h.id for h in ix.search("parse toml config", limit=5)][0] == before[0]


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        sqlite3.OperationalError("database or disk is full"),
        ValueError("Failed to commit: IoError(No space left on device (os error 28))"),
    ],
    ids=["enospc", "edquot", "sqlite", "tantivy"],
)
def test_disk_full_errors_are_recognised_through_wrapping(error: Exception) -> None:
    assert is_disk_full(error)
    try:
        try:
            raise error
        except Exception as e:
            raise IndexWriteError("committing the index failed") from e
    except IndexWriteError as wrapped:
        assert is_disk_full(wrapped)


@pytest.mark.parametrize(
    "error",
    [OSError(errno.EACCES, "Permission denied"), ValueError("incompatible vector size")],
)
def test_other_errors_are_not_disk_full(error: Exception) -> None:
    assert not is_disk_full(error)


def test_estimate_grows_with_chunks_and_dimension() -> None:
    small = space.estimate_index_bytes(100, 40_000, 384)
    assert space.estimate_index_bytes(1000, 400_000, 384) > small
    assert space.estimate_index_bytes(100, 40_000, 768) > small
    assert space.estimate_index_bytes(100, 40_000, None) < small


def test_require_space_names_the_folder_and_both_figures(tmp_path: Path) -> None:
    space.require_space(tmp_path, 0, "do nothing")
    with pytest.raises(DiskFullError) as info:
        space.require_space(tmp_path / "new" / "idx", 1 << 60, "write 10 chunks")
    text = str(info.value)
    assert f"not enough free space in {tmp_path}:" in text
    assert "MiB free, about" in text and "MiB needed to write 10 chunks" in text
    assert "--index-dir" in text


def test_a_manifest_unreadable_for_lack_of_space_is_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only open still writes SQLite's shared-memory file: on a full disk it fails
    as a "disk I/O error". That is the full disk, not a damaged index to rebuild."""
    from rcm_dask.errors import IndexDamagedError
    from rcm_dask.stores import manifest

    idx = tmp_path / "idx"
    index(str(_crate(tmp_path)), IndexConfig(index_dir=str(idx)), embedder=HashEmbedder())

    def io_error(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(manifest.Manifest, "__init__", io_error)
    with pytest.raises(IndexDamagedError):  # plenty of space: the error is the file's
        manifest.read_manifest(idx)
    monkeypatch.setattr(manifest, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFullError, match="read the manifest"):
        manifest.read_manifest(idx)


# --------------------------------------------------------------------------- issue 23, item 8

_CLI_WITHOUT_THE_PLAN_CHECK = (
    "import sys, rcm_dask.modes\n"
    "rcm_dask.modes.require_run_space = lambda *a, **k: None\n"
    "from rcm_dask.cli import main\n"
    "main(sys.argv[1:])\n"
)


def test_a_full_disk_in_a_worker_is_one_clear_error_without_dask_s_report(
    small_disk: Mount, tiny_model: Path, tmp_path: Path
) -> None:
    """Was: the worker's "Compute Failed" block (key, task, exception, remote traceback) on
    stderr before the clean error, when the writer refused a batch on a Dask worker."""
    disk = small_disk(24)
    idx, root, home = disk / "idx", _crate(tmp_path), tmp_path / "home"
    args = ("--vectors", "none", "--model", str(tiny_model), "--index-dir", str(idx))
    assert _cli("index", str(root), "-q", *args, home=home).returncode == 0
    _grow(root, 3)
    filler = _fill(disk, leave=space.RESERVE_BYTES + 48 * 1024)
    done = subprocess.run(
        [sys.executable, "-c", _CLI_WITHOUT_THE_PLAN_CHECK, "index", str(root), *args,
         "--mode", "pipeline", "--workers", "1"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env={**os.environ, "RCM_HOME": str(home), "RCM_TORCH_THREADS": "1"},
    )  # fmt: skip
    assert "Compute Failed" not in done.stderr, done.stderr
    _one_clear_error(done, f"not enough free space in {idx}", "MiB free")
    filler.unlink()
    again = _cli("index", str(root), "-q", *args, home=home)
    assert again.returncode == 0 and "3 files indexed" in again.stdout, again.stderr


def test_a_store_error_that_names_no_cause_on_a_full_disk_is_disk_full(
    small_disk: Mount,
) -> None:
    """Tantivy's writer thread dies of ENOSPC and says only "io::Error most likely": with
    the disk full that is a DiskFullError, with room left it stays what it was."""
    disk = small_disk(2)
    killed = ValueError(
        "An error occurred in a thread: 'An index writer was killed.. A worker thread "
        "encountered an error (io::Error most likely) or panicked.'"
    )
    with pytest.raises(ValueError, match="index writer was killed"):
        with space.disk_full_errors(disk, "write to the index"):
            raise killed
    _fill(disk, leave=0)
    with pytest.raises(DiskFullError, match="the disk filled up while trying to write to the"):
        with space.disk_full_errors(disk, "write to the index"):
            raise killed
    # an OS error that names its own cause keeps it, full disk or not
    with pytest.raises(IndexWriteError, match="Read-only") as refused:
        with space.disk_full_errors(disk, "write to the index"):
            raise IndexWriteError("Read-only file system") from OSError(errno.EROFS, "ro")
    assert not isinstance(refused.value, DiskFullError)
