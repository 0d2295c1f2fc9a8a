"""Run planning: what an index run (or its dry run) has to do, before any file is read.

One path from a request to a plan, shared by :func:`rcm_dask.index` and
:func:`rcm_dask.dryrun.plan_dry_run`, so that a dry run is the same plan without the
work:

1. :func:`request_run`: the settings (:func:`~rcm_dask.config.configure`), the listing
   (:func:`list_codebase`) and the index folder (:func:`index_folder`);
2. :func:`read_known`: what the index folder's manifest holds;
3. :func:`plan_run`: the listing against the index: what to read, what to drop;
4. :func:`choose_mode`: the mode that fits the work.

Readers find an index folder the same way (:func:`resolve_index_dir`,
:func:`list_indexes`), and a plain re-run keeps the index's ``vectors`` setting
(:func:`kept_vectors`), from the CLI and the MCP server alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import IndexConfig, configure, data_home, default_index_dir
from .errors import ConfigError, IndexNotFoundError, SourceError
from .identity import vectors_setting
from .records import FileRef, IndexedFile, IndexStats, Skipped
from .sources import Discovery, SourceRoot, discover_sources, open_root
from .stores.manifest import MANIFEST_FILE, read_identity, read_manifest


@dataclass(frozen=True)
class RunRequest:
    """A run as asked for: its settings, its codebase's listing and its index folder."""

    config: IndexConfig
    """The settings, overrides applied."""
    root: SourceRoot
    """The codebase."""
    discovery: Discovery
    """The listing: files to index and files skipped, with reasons."""
    index_dir: Path
    """The index folder (absolute)."""
    discover_seconds: float
    """What the listing took."""


def request_run(
    path: str | SourceRoot, config: IndexConfig | None = None, **overrides: Any) -> RunRequest:
    """Settle a run's settings, list its codebase and find its index folder.

    Parameters
    ----------
    path
        The codebase, as for :func:`rcm_dask.index`.
    config
        Settings; default from ``RCM_*`` variables.
    **overrides
        :class:`~rcm_dask.config.IndexConfig` fields; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        An unknown setting.
    SourceError
        The path is missing, not a folder, or holds no ``.rs`` files.
    """
    config = configure(config, **overrides)
    root, discovery, seconds = list_codebase(path, config)
    return RunRequest(config, root, discovery, index_folder(config, root), seconds)


def list_codebase(path: str | SourceRoot, config: IndexConfig) -> tuple[SourceRoot, Discovery, float]:
    """List a codebase's ``.rs`` files under a run's filters, timed.

    Raises
    ------
    SourceError
        The path is missing, not a folder, or holds no ``.rs`` files (the message
        counts what was skipped, by reason).
    """
    root = path if isinstance(path, SourceRoot) else open_root(path)
    start = time.perf_counter()
    discovery = discover_sources(
        root,
        respect_gitignore=config.respect_gitignore,
        include_hidden=config.include_hidden,
        include_sensitive=config.include_sensitive,
        exclude=config.exclude,
    )
    seconds = time.perf_counter() - start
    if not discovery.files:
        counts: dict[str, int] = {}
        for s in discovery.skipped:
            counts[s.reason] = counts.get(s.reason, 0) + 1
        why = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        raise SourceError(
            f"No .rs files found under {root.url}" + (f" (skipped: {why})" if why else "")
        )
    return root, discovery, seconds


def index_folder(config: IndexConfig, root: SourceRoot) -> Path:
    """The index folder of a run (:func:`resolve_index_dir`'s rule), made absolute."""
    return resolve_index_dir(config.index_dir, root=root).absolute()


def kept_vectors(index_dir: Path) -> str | None:
    """The ``vectors`` setting of a plain re-run on ``index_dir``: what the index was
    built with (a keyword-only index stays keyword-only); None for a new index, which
    takes the run's own setting.

    The CLI and the MCP server both use it, so that a re-run from either keeps what the
    index was built with unless told otherwise."""
    stored = read_identity(index_dir)
    return vectors_setting(stored) if stored is not None else None


@dataclass
class RunPlan:
    """What a run has to do, worked out before any file is read."""

    root: SourceRoot
    """The codebase."""
    index_dir: Path
    """The index folder."""
    todo: list[FileRef]
    """Files to read (new, or changed by size or mtime)."""
    known: dict[str, IndexedFile]
    """What the index held before the run, by path."""
    removed: list[str]
    """Indexed files that are no longer in the codebase."""
    discovery: Discovery
    """The listing."""
    stats: IndexStats = field(default_factory=IndexStats)
    """Stats being filled in."""
    redo: frozenset[str] = frozenset()
    """Paths whose store content is in doubt (a crashed run's pending paths, repairs)."""

    @property
    def todo_bytes(self) -> int:
        """Bytes of the files to read."""
        return sum(ref.size for ref in self.todo)

    def refreshed(self, unchanged: Sequence[IndexedFile]) -> list[IndexedFile]:
        """Manifest records of files read again whose content did not change: the old
        chunk ids with the new size and mtime."""
        return [
            IndexedFile(f.path, f.size, f.mtime, f.sha256, self.known[f.path].chunk_ids)
            for f in unchanged
        ]

    def withheld(self, skipped: Sequence[Skipped]) -> list[str]:
        """Files the index holds that reading now skipped as ``sensitive`` (they came to
        hold a secret): their old chunks must go, not stay searchable, on this run.

        Other skips on reading (unreadable, vanished...) keep what the index held: the
        file may read again next time, and its old chunks hold nothing it should not."""
        return [
            s.path
            for s in skipped
            if s.reason == "sensitive" and (s.path in self.known or s.path in self.redo)
        ]


RACY_SECONDS = 2.0
"""A file modified this close to when it was recorded may have changed again within the
filesystem's timestamp resolution (2 s on FAT, 1 s on ext3/HFS+): its hash decides."""


def read_known(index_dir: Path) -> tuple[dict[str, IndexedFile], set[str]]:
    """What an index folder's manifest holds, by path, and its pending paths (paths a
    crashed run had begun to change); both empty for a new index.

    Raises
    ------
    IndexDamagedError
        The manifest cannot be read (:func:`~rcm_dask.stores.manifest.read_manifest`).
    """
    if not (index_dir / MANIFEST_FILE).exists():
        return {}, set()
    files, pending = read_manifest(index_dir)
    return files, set(pending)


def is_unchanged(old: IndexedFile, ref: FileRef) -> bool:
    """Whether a listed file can be skipped on its size and mtime alone.

    Not when the filesystem gives no mtime, nor when the recorded mtime is within
    :data:`RACY_SECONDS` of the moment it was recorded: such files are re-read and
    their hash decides (an unchanged hash costs a read, not an embedding).
    """
    if old.size != ref.size or ref.mtime is None or old.mtime != ref.mtime:
        return False
    return old.indexed_at is None or ref.mtime < old.indexed_at - RACY_SECONDS


def plan_run(
    root: SourceRoot,
    config: IndexConfig,
    index_dir: Path,
    known: dict[str, IndexedFile],
    discovery: Discovery,
    pending: set[str] | frozenset[str] = frozenset(),
    repair: set[str] | frozenset[str] = frozenset(),
) -> RunPlan:
    """Compare the listing with what the index holds: what to read, what to drop.

    ``pending`` paths were being changed by a run that did not finish: whatever the
    stores hold for them is not what the manifest says, so they are read and
    re-indexed in full (or removed, if they are gone) whatever their size and mtime.
    ``repair`` paths are files whose chunks a store lacks or holds wrongly
    (:func:`~rcm_dask.integrity.check_stores`): they are redone the same way.
    """
    redo = set(pending) | set(repair)
    trusted = {p: f for p, f in known.items() if p not in redo}
    listed = {f.path for f in discovery.files}
    todo = []
    unchanged = 0
    for ref in discovery.files:
        old = trusted.get(ref.path)
        if old is not None and is_unchanged(old, ref):
            unchanged += 1
            continue
        todo.append(ref)
    removed = sorted((set(known) | redo) - listed)
    stats = IndexStats(
        mode=config.mode,
        root=root.url,
        index_dir=str(index_dir),
        files_seen=len(discovery.files),
        files_todo=len(todo),
        files_unchanged=unchanged,
        files_removed=len(removed),
        files_recovered=len(pending),
        files_repaired=len(set(repair) - set(pending)),
        vectors=config.vectors,
    )
    for skip in discovery.skipped:
        stats.add_skip(skip)
    return RunPlan(root, index_dir, todo, trusted, removed, discovery, stats, frozenset(redo))


def choose_mode(config: IndexConfig, plan: RunPlan, has_client: bool) -> str:
    """The mode a run uses: ``config.mode``, or for ``auto`` the one that fits the work.

    Raises
    ------
    ConfigError
        A cluster mode was asked for on an in-memory filesystem, whose files exist
        only in this process.
    """
    in_memory = "memory" in protocols(plan.root.fs)
    mode = config.mode
    if mode == "auto":
        if in_memory:
            return "sequential"
        big = plan.todo_bytes >= config.small_codebase_bytes
        return "pipeline" if big or has_client or config.scheduler else "sequential"
    if mode != "sequential" and in_memory:
        raise ConfigError(
            f"mode {mode!r} reads files in worker processes, but {plan.root.url} is an "
            "in-memory filesystem that only this process sees; use mode='sequential'"
        )
    return mode


def protocols(fs: Any) -> tuple[str, ...]:
    """An fsspec filesystem's protocol names."""
    proto = getattr(fs, "protocol", ())
    return (proto,) if isinstance(proto, str) else tuple(proto)


def resolve_index_dir(
    index_dir: str | Path | None = None,
    path: str | None = None,
    *,
    root: SourceRoot | None = None,
) -> Path:
    """Which index folder to use: explicit, else the codebase's default
    (:func:`~rcm_dask.config.default_index_dir` of ``root``, or of the codebase at
    ``path``), else the latest built. Runs and readers find a folder the same way.

    Raises
    ------
    IndexNotFoundError
        None is given and no index exists under :func:`~rcm_dask.config.data_home`.
    """
    if index_dir:
        return Path(index_dir).expanduser()
    if root is not None or path:
        return default_index_dir((root or open_root(str(path))).url)
    known = list_indexes()
    if not known:
        raise IndexNotFoundError(
            f"no index found under {data_home() / 'indexes'}: run `rcm-dask index PATH` first, "
            "or pass --index-dir"
        )
    return Path(str(known[0]["index_dir"]))


def list_indexes() -> list[dict[str, Any]]:
    """Indexes under the default location, most recently updated first."""
    base = data_home() / "indexes"
    found = []
    for ident_path in base.glob("*/identity.json"):
        ident = read_identity(ident_path.parent) or {}
        found.append(
            {
                "index_dir": str(ident_path.parent),
                "root": ident.get("root", ""),
                "vectors": vectors_setting(ident),
                "mtime": ident_path.parent.joinpath("manifest.sqlite").stat().st_mtime
                if ident_path.parent.joinpath("manifest.sqlite").exists()
                else ident_path.stat().st_mtime,
            }
        )
    return sorted(found, key=lambda d: -float(d["mtime"]))
