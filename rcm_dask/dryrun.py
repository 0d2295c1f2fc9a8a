"""Dry run: what ``rcm-dask index`` would do, worked out without embedding or writing.

People and coding agents have burned hours embedding build artefacts and vendored
dependencies by mistake. :func:`plan_dry_run` lists the codebase the way a run does
(:func:`~rcm_dask.sources.discover_sources`), compares the listing with the index
(:func:`~rcm_dask.planning.read_known`, :func:`~rcm_dask.planning.plan_run`), reads and
chunks a sample of the files to read with the real chunker (the token counter needs
only the model's tokenizer, not its weights), and returns a :class:`DryRun`: files by
folder, skipped files by reason, what a re-run would do, folders that look like build
output or vendored code, and the estimated chunks and time. It builds no Dask graph,
loads no model weights, opens no store and takes no lock.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import IndexConfig
from .embedding import Embedder
from .errors import IndexIdentityError, ModelError
from .records import FileRef, SourceFile, display_path
from .sources import read_source

DEFAULT_CHUNKS_PER_SECOND = 50.0
"""Indexing rate assumed when the index has no earlier run to measure: a whole run of the
bundled all-MiniLM-L6-v2 on 2 CPU cores writes about 53 chunks/s (README, "Quick start";
``benchmarks/modes/REPORT.md``). More cores or a GPU are faster; once the index has a run
of at least :data:`MIN_RATE_CHUNKS` chunks, that run's own rate is used instead."""

DEFAULT_KEYWORD_CHUNKS_PER_SECOND = 1000.0
"""The same for a keyword-only run (``vectors="none"``): nothing is embedded, so reading,
chunking and the BM25 writes set the pace. On rust-src's ``library/core`` (17,514 chunks, 2
shared CPU cores) it ran at 1,001 chunks/s in the pipeline and 1,288 sequentially (README,
"Keyword-only indexes")."""

MIN_RATE_CHUNKS = 100
"""A last run that wrote fewer chunks says more about start-up than about throughput."""

SAMPLE_FILES = 64
"""At most this many files are read and chunked to estimate the chunk count."""

SAMPLE_BYTES = 2 * 1024 * 1024
"""...and at most this many bytes (a sample stops at whichever limit it reaches first)."""

LARGE_FILE_BYTES = 512 * 1024
"""Files at least this big are listed: hand-written Rust rarely is, generated code often."""

VENDORED_NAMES = frozenset(
    {
        "vendor",
        "vendored",
        "third_party",
        "third-party",
        "thirdparty",
        "3rdparty",
        "external",
        "externals",
        "node_modules",
        "registry",
        "site-packages",
    }
)
"""Folder names that usually hold other people's code."""

BUILD_NAMES = frozenset({"build", "builds", "_build", "out", "dist", "gen", "generated", "deps"})
"""Folder names that usually hold build output or generated code."""

BUILD_PATTERN = re.compile(r"^(target[-_.0-9].*|bazel-.*|cmake-build-.*)$", re.IGNORECASE)
"""Build-output folder names beyond these: ``target-release/``, ``bazel-out/``..."""

CARGO_VENDOR_MARK = ".cargo-checksum.json"
"""``cargo vendor`` writes this file into every crate it copies."""


@dataclass(frozen=True, slots=True)
class FolderCount:
    """Rust files under one folder."""

    folder: str
    """Folder relative to the root, ``.`` for files directly in it."""
    files: int
    """``.rs`` files a run would take from it."""
    bytes: int
    """Their total size."""
    reason: str = ""
    """For a suspicious folder: why it looks like code not to index."""


@dataclass(slots=True)
class DryRun:
    """What an index run would do (see :func:`plan_dry_run`)."""

    root: str
    """The codebase, as a run names it."""
    index_dir: str
    """The index folder a run would write."""
    index_exists: bool
    """Whether that folder already holds an index."""
    mode: str
    """The mode a run would use (``auto`` resolved)."""
    files_found: int
    """``.rs`` files a run would take (already indexed ones included)."""
    bytes_found: int
    """Their total size."""
    folders: list[FolderCount]
    """Where those files are: the biggest folders first (at the depth that splits the
    codebase into several parts)."""
    other_folders: int
    """Folders left out of :attr:`folders` (only the biggest are listed)."""
    suspicious: list[FolderCount]
    """Folders that look like build output, generated or vendored code, biggest first."""
    large_files: list[FolderCount]
    """Files of :data:`LARGE_FILE_BYTES` or more (``folder`` holds the file's path)."""
    skipped: dict[str, int]
    """Files and folders discovery leaves out, by reason (a pruned folder counts once)."""
    skipped_examples: dict[str, list[str]]
    """A few examples per reason, with their detail."""
    new: int
    """Files not in the index yet."""
    changed: int
    """Indexed files whose size or mtime moved (read again; re-embedded only if their
    content changed)."""
    unchanged: int
    """Indexed files a run would not read."""
    removed: int
    """Indexed files that left the codebase (their chunks would be removed)."""
    recovered: int
    """Files an interrupted run left half-written (redone in full)."""
    files_to_read: int
    """New and changed files."""
    bytes_to_read: int
    """Their total size."""
    sample_files: int
    """Files of :attr:`files_to_read` read and chunked for the estimate."""
    sample_bytes: int
    """Their total size."""
    sample_chunks: int
    """Chunks the sample produced (long items split with the model's tokenizer)."""
    sample_skipped: dict[str, int]
    """Sampled files that a run would skip on reading them (``binary``, ``not-utf8``...)."""
    sample_same_content: int
    """Sampled changed files whose content hash is the one indexed (touched, not edited):
    a run reads them but embeds nothing."""
    estimated_chunks: int
    """Chunks a run would embed: exact when the sample is every file to read, else the
    sample's chunks per byte times :attr:`bytes_to_read` (sampled files a run would skip,
    or would find unchanged by their hash, count as bytes without chunks)."""
    exact: bool
    """Whether :attr:`estimated_chunks` comes from chunking every file to read."""
    chunks_per_second: float
    """The rate the time estimate assumes."""
    rate_source: str
    """Where that rate comes from: the index's last run, or the default."""
    estimated_seconds: float
    """:attr:`estimated_chunks` at :attr:`chunks_per_second`."""
    warnings: list[str] = field(default_factory=list)
    """What to look at before running: suspicious folders, a run that would be refused."""
    vectors: str = "qdrant"
    """What the run would keep besides BM25: ``qdrant``, or ``none`` (keyword-only: the
    estimated chunks are written, not embedded)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dataclasses.asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """The :meth:`to_dict` form as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary_lines(self) -> list[str]:
        """The report as plain lines: what ``rcm-dask index --dry-run`` prints."""
        lines = [
            (
                f"Dry run: {self.root} -> {self.index_dir} "
                f"({'existing index' if self.index_exists else 'new index'}, {self.mode} mode"
                f"{', keyword-only' if self.vectors == 'none' else ''})"
            ),
            f"  found: {self.files_found:,} .rs files, {format_bytes(self.bytes_found)}",
        ]
        shown = [display_path(f.folder) for f in self.folders]
        width = max((len(name) for name in shown), default=0)
        for name, f in zip(shown, self.folders, strict=True):
            lines.append(f"    {name:<{width}}  {f.files:>6,} files  {format_bytes(f.bytes):>10}")
        if self.other_folders:
            lines.append(f"    ... and {self.other_folders} smaller folders")
        if self.skipped:
            lines.append(f"  skipped: {sum(self.skipped.values()):,} files or folders")
            for reason, n in sorted(self.skipped.items()):
                examples = "; ".join(self.skipped_examples.get(reason, [])[:3])
                lines.append(f"    {reason}: {n}" + (f"  e.g. {examples}" if examples else ""))
        if self.index_exists:
            lines.append(
                f"  a run would: read {self.new:,} new and {self.changed:,} changed files, "
                f"keep {self.unchanged:,} unchanged, remove {self.removed:,}"
                + (f", redo {self.recovered:,} half-written" if self.recovered else "")
            )
        else:
            lines.append(f"  a run would: read all {self.files_to_read:,} files")
        if self.files_to_read:
            how = (
                "every file to read chunked"
                if self.exact
                else f"from {self.sample_files} sampled files, {format_bytes(self.sample_bytes)}"
            )
            lines.append(f"  estimated chunks: {self.estimated_chunks:,} ({how})")
            lines.append(
                f"  estimated time: {format_seconds(self.estimated_seconds)} at "
                f"{self.chunks_per_second:.0f} chunks/s ({self.rate_source})"
            )
        if self.sample_same_content:
            lines.append(
                f"  sampled changed files with the same content: {self.sample_same_content} "
                "(read, not re-embedded)"
            )
        if self.sample_skipped:
            lines.append(
                "  sampled files a run would skip: "
                + ", ".join(f"{r} {n}" for r, n in sorted(self.sample_skipped.items()))
            )
        if self.large_files:
            lines.append("  large files (often generated):")
            for f in self.large_files:
                lines.append(f"    {display_path(f.folder)}  {format_bytes(f.bytes)}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        lines.append("Nothing was embedded or written.")
        return lines

    def __str__(self) -> str:
        """The multi-line report (``repr`` keeps every field)."""
        return "\n".join(self.summary_lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the report."""
        printer.text(str(self))


def format_bytes(n: int) -> str:
    """Human size.

    Examples
    --------
    >>> format_bytes(512), format_bytes(3 * 1024 * 1024)
    ('512 B', '3.0 MiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_seconds(s: float) -> str:
    """Human duration.

    Examples
    --------
    >>> format_seconds(42), format_seconds(3725)
    ('42 s', '1 h 2 min')
    """
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def folder_counts(
    files: Sequence[FileRef], top: int = 12, max_depth: int = 3
) -> tuple[list[FolderCount], int]:
    """Files grouped by folder, biggest (in bytes) first.

    The depth is the shallowest (up to ``max_depth``) that splits the files into at
    least three folders, so that a ``src/``-only crate or a ``crates/*`` workspace still
    shows where its bytes are. Files shallower than that depth count under their own
    folder.

    Returns
    -------
    (folders, others)
        At most ``top`` folders, and how many more there are.

    Examples
    --------
    >>> refs = [FileRef(p, p, 10, None) for p in ("src/a.rs", "src/x/b.rs", "src/y/c.rs")]
    >>> [f.folder for f in folder_counts(refs)[0]]
    ['src', 'src/x', 'src/y']
    """
    groups: dict[str, list[int]] = {}
    for depth in range(1, max_depth + 1):
        groups = {}
        for ref in files:
            parts = ref.path.split("/")[:-1]
            key = "/".join(parts[:depth]) or "."
            g = groups.setdefault(key, [0, 0])
            g[0] += 1
            g[1] += ref.size
        if len(groups) >= 3:
            break
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return [FolderCount(k, n, b) for k, (n, b) in ordered[:top]], max(0, len(ordered) - top)


def suspicious_folders(
    files: Sequence[FileRef], vendored: set[str] | frozenset[str] = frozenset()
) -> list[FolderCount]:
    """Folders that look like build output, generated or vendored code, biggest first.

    A folder counts when its name is one of :data:`VENDORED_NAMES`, :data:`BUILD_NAMES`
    or matches :data:`BUILD_PATTERN` and no ancestor of it is a ``src`` folder (inside
    ``src/``, ``build/`` or ``vendor/`` are Rust modules), or when it is in ``vendored``
    (folders found to hold ``cargo vendor``'s checksum file). Only the outermost such
    folder of a file counts.

    Examples
    --------
    >>> refs = [FileRef(p, p, 10, None) for p in ("src/build/a.rs", "vendor/x/src/lib.rs")]
    >>> [(f.folder, f.files) for f in suspicious_folders(refs)]
    [('vendor', 1)]
    """
    found: dict[str, list[Any]] = {}
    for ref in files:
        parts = ref.path.split("/")[:-1]
        for i, name in enumerate(parts):
            folder = "/".join(parts[: i + 1])
            reason = _suspicion(name, in_src="src" in parts[:i], vendored=folder in vendored)
            if reason:
                g = found.setdefault(folder, [0, 0, reason])
                g[0] += 1
                g[1] += ref.size
                break
    for folder, g in found.items():
        inside = sum(1 for v in vendored if v.startswith(folder + "/"))
        if inside:
            g[2] += f"; {inside} crate(s) in it were copied by `cargo vendor` ({CARGO_VENDOR_MARK})"
    ordered = sorted(found.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return [FolderCount(k, n, b, r) for k, (n, b, r) in ordered]


def _suspicion(name: str, *, in_src: bool, vendored: bool) -> str:
    """Why a folder of this name looks like code not to index, or ``""``."""
    if vendored:
        return f"a crate copied by `cargo vendor` (holds {CARGO_VENDOR_MARK})"
    if in_src:
        return ""
    low = name.lower()
    if low in VENDORED_NAMES:
        return "its name usually means vendored or third-party code"
    if low in BUILD_NAMES or BUILD_PATTERN.match(name):
        return "its name usually means build output or generated code"
    return ""


def _vendored_folders(fs: Any, root_path: str, files: Sequence[FileRef], limit: int) -> set[str]:
    """Folders (relative) holding ``cargo vendor``'s checksum file; probes at most ``limit``."""
    candidates: set[str] = set()
    for ref in files:
        parts = ref.path.split("/")[:-1]
        # a vendored crate is the folder above its src/, or a folder one level down a
        # vendor-like folder; probing every folder of a big tree would cost a stat each
        if "src" in parts:
            i = parts.index("src")
            if i > 0:
                candidates.add("/".join(parts[:i]))
    found = set()
    for folder in sorted(candidates)[:limit]:
        try:
            if fs.exists(posixpath.join(root_path, folder, CARGO_VENDOR_MARK)):
                found.add(folder)
        except OSError:
            continue
    return found


def pick_sample(
    refs: Sequence[FileRef], max_files: int = SAMPLE_FILES, max_bytes: int = SAMPLE_BYTES
) -> list[FileRef]:
    """Files spread evenly over ``refs`` (sorted by path), within both limits.

    Evenly spread rather than the first ones, so that one folder of unusual files
    (generated tables, tests) does not set the estimate alone. All of ``refs`` when
    they fit.

    Examples
    --------
    >>> refs = [FileRef(f"{i}.rs", f"{i}.rs", 100, None) for i in range(10)]
    >>> [r.path for r in pick_sample(refs, max_files=3)]
    ['0.rs', '4.rs', '8.rs']
    """
    if len(refs) <= max_files and sum(r.size for r in refs) <= max_bytes:
        return list(refs)
    step = max(1, -(-len(refs) // max_files))
    picked: list[FileRef] = []
    total = 0
    for ref in refs[::step]:
        if picked and total + ref.size > max_bytes:
            continue
        picked.append(ref)
        total += ref.size
        if len(picked) >= max_files:
            break
    return picked


def last_run_rate(last_run: object) -> float | None:
    """Chunks per second of an index's last run, if it wrote enough chunks to tell.

    Examples
    --------
    >>> last_run_rate({"chunks": 1000, "seconds": 20.0})
    50.0
    >>> last_run_rate({"chunks": 3, "seconds": 1.0}) is None
    True
    """
    if not isinstance(last_run, dict):
        return None
    try:
        chunks, seconds = int(last_run.get("chunks") or 0), float(last_run.get("seconds") or 0)
    except (TypeError, ValueError):
        return None
    if chunks < MIN_RATE_CHUNKS or seconds <= 0:
        return None
    return chunks / seconds


def plan_dry_run(
    path: str,
    config: IndexConfig | None = None,
    *,
    force: bool = False,
    embedder: Embedder | None = None,
    sample_files: int = SAMPLE_FILES,
    sample_bytes: int = SAMPLE_BYTES,
    top: int = 12,
    **overrides: Any,
) -> DryRun:
    """Work out what ``rcm_dask.index(path, ...)`` would do, without doing it.

    Parameters
    ----------
    path
        The codebase, as for :func:`rcm_dask.index`.
    config
        Settings; default from ``RCM_*`` variables.
    force
        Plan a rebuild from scratch, as ``force=True`` / ``--force`` would.
    embedder
        Whose tokenizer splits long items (any object with ``count_tokens``,
        ``max_tokens`` and ``identity``); default: the model ``config`` names. Its
        weights are never loaded.
    sample_files, sample_bytes
        Limits of the sample that is read and chunked for the estimate.
    top
        Folders to list.
    **overrides
        Any :class:`~rcm_dask.config.IndexConfig` field (``index_dir=``, ``exclude=``...).

    Returns
    -------
    DryRun
        Printable (``str``) and convertible (``to_dict``, ``to_json``).

    Raises
    ------
    SourceError
        The path is missing, not a folder, or holds no ``.rs`` files.
    ConfigError
        An unknown setting, or a cluster mode asked for on an in-memory filesystem.

    Examples
    --------
    >>> from rcm_dask.dryrun import plan_dry_run
    >>> print(plan_dry_run("path/to/crate"))                     # doctest: +SKIP
    Dry run: /abs/path/to/crate -> ~/.local/share/rcm_dask/indexes/crate-1a2b3c4d (new index...
    """
    from .identity import check_identity, run_identity
    from .planning import choose_mode, plan_run, protocols, read_known, request_run
    from .stages import chunk_file
    from .stores.lock import describe_holder, is_locked, read_holder
    from .stores.manifest import MANIFEST_FILE, Manifest, read_identity

    request = request_run(path, config, **overrides)
    config, root, discovery, index_dir = (
        request.config,
        request.root,
        request.discovery,
        request.index_dir,
    )
    embedder = embedder or Embedder(config.model, max_tokens=config.max_tokens)
    identity = run_identity(root, embedder, config.vectors)
    warnings: list[str] = []
    if isinstance(embedder, Embedder):
        try:
            embedder.check_files(weights=config.vectors != "none")
        except ModelError as e:
            warnings.append(f"a run would be refused: {e}")
    exists = read_identity(index_dir) is not None
    foreign = False
    if exists and not force:
        try:
            check_identity(index_dir, identity, config.qdrant_url, False)
        except IndexIdentityError as e:
            warnings.append(f"a run would be refused: {e} (planned here as a rebuild)")
            foreign = True
    rebuild = force or foreign
    if is_locked(index_dir):
        warnings.append(
            f"an index run is writing this index now ({describe_holder(read_holder(index_dir))});"
            " a run would fail at once, or queue behind it with --wait"
        )
    known, pending = ({}, set()) if rebuild else read_known(index_dir)
    plan = plan_run(root, config, index_dir, known, discovery, pending)
    mode = choose_mode(config, plan, False)

    changed = sum(1 for ref in plan.todo if ref.path in known)
    basis = [ref for ref in plan.todo if ref.size <= config.max_file_size]
    sample = pick_sample(basis, sample_files, sample_bytes)
    sample_chunks = same_content = 0
    sample_skipped: dict[str, int] = {}
    too_large = len(plan.todo) - len(basis)
    if too_large:
        sample_skipped["too-large"] = too_large
    for ref in sample:
        got = read_source(
            root.fs,
            ref,
            max_file_size=config.max_file_size,
            include_sensitive=config.include_sensitive,
        )
        if isinstance(got, SourceFile):
            old = known.get(ref.path)
            if old is not None and old.sha256 == got.sha256:
                # only its size or mtime moved: a run reads it and re-embeds nothing
                same_content += 1
            else:
                sample_chunks += len(chunk_file(got, embedder))
        else:
            sample_skipped[got.reason] = sample_skipped.get(got.reason, 0) + 1
    basis_bytes = sum(r.size for r in basis)
    sampled_bytes = sum(r.size for r in sample)
    exact = len(sample) == len(basis)
    if exact:
        estimate = sample_chunks
    else:
        estimate = round(sample_chunks * basis_bytes / sampled_bytes) if sampled_bytes else 0

    rate = None
    # another model's rate says nothing about this one
    if exists and not foreign and (index_dir / MANIFEST_FILE).exists():
        manifest = Manifest(index_dir, readonly=True)
        try:
            last = manifest.get_meta("last_run")
        finally:
            manifest.close()
        rate = last_run_rate(last)
        if rate is not None and isinstance(last, dict):
            source = (
                f"this index's last run: {int(last['chunks']):,} chunks in "
                f"{float(last['seconds']):.0f} s"
            )
    if rate is None and config.vectors == "none":
        rate = DEFAULT_KEYWORD_CHUNKS_PER_SECOND
        source = "default keyword-only rate on 2 CPU cores: nothing is embedded"
    elif rate is None:
        rate = DEFAULT_CHUNKS_PER_SECOND
        source = "default rate: all-MiniLM-L6-v2 on 2 CPU cores; a GPU is much faster"

    found_bytes = sum(r.size for r in discovery.files)
    folders, others = folder_counts(discovery.files, top=top)
    vendored = (
        _vendored_folders(root.fs, root.path, discovery.files, limit=500)
        if "file" in protocols(root.fs)
        else set()
    )
    suspicious = suspicious_folders(discovery.files, vendored)
    for f in suspicious[:5]:
        share = 100 * f.bytes / found_bytes if found_bytes else 0
        warnings.append(
            f"{display_path(f.folder + '/')} holds {f.files:,} files "
            f"({format_bytes(f.bytes)}, {share:.0f}% of "
            f"the bytes): {f.reason}. If it is not your code, add --exclude '{f.folder}/'"
        )
    large = sorted(
        (r for r in discovery.files if r.size >= LARGE_FILE_BYTES), key=lambda r: (-r.size, r.path)
    )
    stats = plan.stats
    return DryRun(
        root=root.url,
        index_dir=str(index_dir),
        index_exists=exists,
        mode=mode,
        files_found=len(discovery.files),
        bytes_found=found_bytes,
        folders=folders,
        other_folders=others,
        suspicious=suspicious,
        large_files=[FolderCount(r.path, 1, r.size) for r in large[:top]],
        skipped=dict(stats.skipped),
        skipped_examples={k: list(v) for k, v in stats.skipped_examples.items()},
        new=len(plan.todo) - changed,
        changed=changed,
        unchanged=stats.files_unchanged,
        removed=len(plan.removed),
        recovered=stats.files_recovered,
        files_to_read=len(plan.todo),
        bytes_to_read=plan.todo_bytes,
        sample_files=len(sample),
        sample_bytes=sampled_bytes,
        sample_chunks=sample_chunks,
        sample_skipped=sample_skipped,
        sample_same_content=same_content,
        estimated_chunks=estimate,
        exact=exact,
        chunks_per_second=round(rate, 2),
        rate_source=source,
        estimated_seconds=round(estimate / rate, 1),
        warnings=warnings,
        vectors=config.vectors,
    )


__all__ = [
    "DEFAULT_CHUNKS_PER_SECOND",
    "DryRun",
    "FolderCount",
    "folder_counts",
    "format_bytes",
    "format_seconds",
    "last_run_rate",
    "pick_sample",
    "plan_dry_run",
    "suspicious_folders",
]
