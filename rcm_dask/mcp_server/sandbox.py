"""The file sandbox: where the tools may go, and what ``read_file_content`` may read.

The user, not the agent, decides where the tools may go (:mod:`rcm_dask.roots`): every
``directory`` and absolute ``file`` argument must lie inside the allowed roots, symlinks
resolved (:func:`resolve_directory`, :func:`locate_file`). A folder becomes readable
only once it has a committed index inside them (:func:`indexed_roots`: a failed or
unfinished first run makes nothing readable), and :func:`read_file` returns only what
that index covers: its ``.rs`` files, ``Cargo.toml`` files and the README files of the
root and of crate folders, never a file whose name or content looks like a secret (the
checks of :mod:`rcm_dask.sources`, which reads files for indexing).

What is read is what the index covers, checked on the file as opened
(:func:`read_file`): the file is opened once, every folder from the root down and the
file itself without following a symlink, and judged by ``fstat`` of that descriptor,
so nothing swapped in after the checks is read. A file with more than one hard link is
refused (a hard link can bring in a file from anywhere on the same filesystem:
``ln ~/.ssh/id_rsa src/x.rs``), and a ``.rs`` file must still hold what the manifest
recorded when it was indexed (same size and SHA-256), else "re-index first".
``Cargo.toml`` and ``README`` files are not in the manifest: they are read as they are
now, under the same single-open, one-link and secret checks.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexNotFoundError, RootNotAllowedError, SourceError
from ..planning import list_indexes, resolve_index_dir
from ..roots import AllowedRoots
from ..sources import (
    RUST_SUFFIX,
    NotRegularFile,
    NotTextError,
    SymlinkInPath,
    decode_text,
    is_sensitive_name,
    open_local_root,
    open_nofollow,
    sensitive_content,
)
from .models import READ_MAX_CHARS, READ_MAX_LINES, FileContentOut
from .state import manifest_record, manifest_updated


@dataclass(frozen=True)
class Located:
    """A file resolved inside an indexed root."""

    root: str
    """The indexed root (real path)."""
    index_dir: Path
    """Its index folder."""
    rel: str
    """Root-relative posix path."""
    real: Path
    """The file's real path (symlinks resolved), inside the root."""


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def inside_hint(root: str, indexed: list[tuple[str, Path]]) -> str:
    """`` (it lies inside the indexed codebase X: pass that folder)``, or ''."""
    outer = [r for r, _ in indexed if _inside(root, r) and r != root]
    return f" (it lies inside the indexed codebase {outer[0]}: pass that folder)" if outer else ""


def _is_crate_file(root: str, rel: str) -> bool:
    """Whether a root-relative path is a ``Cargo.toml``, or a ``README*`` of the root or of a
    crate folder (one holding a ``Cargo.toml``)."""
    folder, name = posixpath.split(rel)
    if name == "Cargo.toml":
        return True
    if not name.lower().startswith("readme"):
        return False
    return not folder or os.path.isfile(os.path.join(root, folder, "Cargo.toml"))


def _why_sensitive_name(rel: str) -> str:
    """Why a root-relative path must not be read ('' when it may be)."""
    parts = rel.split("/")
    if ".git" in parts[:-1]:
        return "it is inside a .git folder (which can hold credentials)"
    if is_sensitive_name(parts[-1]) or is_sensitive_name(rel):
        return "its name looks like a secret"
    return ""


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
"""A leading ``protocol:`` (``memory:``, ``zip:``, ``simplecache:``, ``s3:``...)."""


def local_path_arg(text: str, what: str = "directory") -> str:
    """A tool's folder argument as a plain local path: refuses what fsspec would read
    as a URL or a chain (``::``, ``protocol://``, ``protocol:``) and bytes no path can hold.

    ``file:///abs`` (and ``file://localhost/abs``), as MCP clients name folders, is
    taken as the local path ``/abs``; nothing else is unwrapped. Everything a tool
    reads is then judged by the one place this names, not by what a URL layer makes of
    it (``ROOT/link::`` is cut at ``::`` by fsspec and read through ``ROOT/link``).

    Raises
    ------
    SourceError
        Empty, a NUL byte or text that is not valid Unicode, ``::``, or a protocol.
    """
    given = text.strip()
    if not given:
        raise SourceError(f"{what} is empty: give the folder of the codebase")
    _check_path_text(given, what)
    if given.startswith("file://"):
        parsed = urllib.parse.urlsplit(given)
        if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
            raise SourceError(
                f"refused {given!r}: only file:///absolute/path names a local folder"
            )
        given = urllib.request.url2pathname(parsed.path)
    if "::" in given or _SCHEME.match(given) or "://" in given:
        raise SourceError(
            f"refused {given!r}: this server takes a {what} as a plain local path (an "
            "absolute path is best), never a URL, a protocol or a chained URL (::)"
        )
    return given


def _check_path_text(text: str, what: str) -> None:
    """Refuse a path argument holding a NUL byte or text that is not valid Unicode (the
    OS calls would raise on either, deep inside a tool)."""
    if "\x00" in text:
        raise SourceError(f"refused the {what}: it contains a NUL byte, which no path can hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SourceError(
            f"refused the {what}: it is not valid Unicode (a lone surrogate at character "
            f"{e.start}); give it as plain text"
        ) from e


def resolve_directory(directory: str, allowed: AllowedRoots) -> tuple[str, Path]:
    """(root, index folder) of a codebase folder inside the allowed roots.

    The argument is a plain local path (:func:`local_path_arg`); refuses a folder
    outside the roots (RootNotAllowedError, before looking whether it exists: no
    probing outside) and a folder that does not exist (SourceError). The root is the
    folder's real location, opened as a local folder without following symlinks
    (:func:`rcm_dask.sources.open_local_root`), so every later step names exactly the
    place that was checked."""
    text = local_path_arg(directory or "")
    real = allowed.check(text, what=text)
    root = open_local_root(real)
    return root.url, resolve_index_dir(root=root)


def indexed_roots(allowed: AllowedRoots, *, committed: bool = True) -> list[tuple[str, Path]]:
    """Indexed local roots inside the allowed roots and their index folders, most
    recently updated first; only those with a commit unless ``committed`` is False.

    Only a commit makes a folder readable: a run that is starting, still writing its
    first batch, or failed registers nothing."""
    seen: dict[str, Path] = {}
    for entry in list_indexes():
        root = str(entry.get("root") or "")
        if not root.startswith("/") or root in seen or not allowed.contains(root):
            continue
        index_dir = Path(str(entry["index_dir"]))
        if committed and manifest_updated(index_dir) is None:
            continue
        seen[root] = index_dir
    return list(seen.items())


def locate_file(file: str, directory: str | None, allowed: AllowedRoots) -> Located:
    """Resolve a file argument to a path inside an indexed root, refusing escapes.

    Accepts a path relative to the root, or an absolute path inside it. Refuses
    ``..`` components, absolute paths outside the allowed roots or outside every
    indexed root, and paths whose real location (symlinks resolved) leaves the root.
    """
    text = file.strip()
    if not text:
        raise SourceError("file is empty: give a path relative to the indexed root")
    _check_path_text(text, "file")
    # a backslash is a character of a POSIX file name, a separator only on Windows
    if os.sep != "/" or os.altsep:
        text = text.replace(os.sep, "/").replace(os.altsep or os.sep, "/")
    parts = text.split("/")
    if ".." in parts:
        raise SourceError(
            f"refused {file!r}: '..' is not allowed; give a path inside the indexed root"
        )
    if os.path.isabs(text):
        allowed.check(text, what=repr(file))
    indexed = indexed_roots(allowed)
    if directory is not None and directory.strip():
        root_url, index_dir = resolve_directory(directory, allowed)
        if root_url not in dict(indexed):
            raise IndexNotFoundError(
                f"{root_url} is not an indexed codebase: files are read only from a "
                f"folder with a committed index; call index_codebase({root_url!r}) first"
                + inside_hint(root_url, indexed)
            )
        candidates = [(root_url, index_dir)]
    else:
        candidates = indexed
        if not allowed.paths:
            raise RootNotAllowedError(f"refused {file!r}: {allowed.note}")
        if not candidates:
            raise IndexNotFoundError(
                "no codebase is indexed yet inside the allowed roots "
                f"({allowed.describe()}): call index_codebase(directory) first"
            )
    if os.path.isabs(text):
        path = os.path.normpath(text)
        inside = [(r, d) for r, d in candidates if _inside(path, r)]
        if not inside:
            # the same place spelled through a symlinked ancestor of the root
            # (/tmp -> /private/tmp): judged by where it really is
            path = os.path.realpath(path)
            inside = [(r, d) for r, d in candidates if _inside(path, os.path.realpath(r))]
        if not inside:
            listed = ", ".join(r for r, _ in candidates)
            raise SourceError(
                f"refused {file!r}: it is outside the indexed root(s) ({listed}); only "
                "files inside an indexed codebase can be read"
            )
        root, index_dir = max(inside, key=lambda c: len(c[0]))
        rel = os.path.relpath(path, root if _inside(path, root) else os.path.realpath(root))
    else:
        rel = posixpath.normpath(text)
        found = [(r, d) for r, d in candidates if os.path.lexists(os.path.join(r, rel))]
        if not found:
            listed = ", ".join(r for r, _ in candidates)
            raise SourceError(
                f"{file!r} is not in any indexed root ({listed}): give a path relative to "
                "the root, or pass directory"
            )
        if len(found) > 1:
            listed = ", ".join(r for r, _ in found)
            raise SourceError(
                f"{file!r} exists in several indexed roots ({listed}): pass directory, or "
                "give an absolute path"
            )
        root, index_dir = found[0]
    rel = rel.replace(os.sep, "/")
    real = os.path.realpath(os.path.join(root, rel))
    real_root = os.path.realpath(root)
    if not _inside(real, real_root) or not allowed.contains(real):
        raise SourceError(
            f"refused {file!r}: it is a symlink (or under one) that resolves to {real}, "
            f"outside the indexed root {root}"
        )
    return Located(root=root, index_dir=index_dir, rel=rel, real=Path(real))


def _open_located(where: Located, file: str) -> int:
    """A read-only descriptor of the located file, opened once.

    Opened a component at a time from ``/`` without following symlinks
    (:func:`rcm_dask.sources.open_nofollow`, which reads files for indexing the same
    way), so a symlink put in the path after :func:`locate_file` resolved it is never
    followed; a FIFO, socket or device is never opened (and one swapped in between the
    check and the open is opened non-blocking, then refused by :func:`read_file` from
    the descriptor)."""
    if not str(where.real).startswith(os.path.realpath(where.root).rstrip(os.sep) + os.sep):
        raise SourceError(f"{where.rel} is not a file under {where.root}")
    try:
        return open_nofollow(str(where.real))
    except SymlinkInPath as e:
        if e.final:
            raise SourceError(_not_regular(where, file, stat.S_IFLNK)) from e
        raise SourceError(
            f"refused {file!r}: its path changed while it was being opened (a symlink "
            "now stands in it); symlinks are never followed out of the indexed root"
        ) from e
    except NotRegularFile as e:
        raise SourceError(_not_regular(where, file, e.mode)) from e
    except (FileNotFoundError, NotADirectoryError) as e:
        raise SourceError(f"{where.rel} is not a file under {where.root}") from e
    except OSError as e:
        raise SourceError(f"cannot read {where.rel} under {where.root}: {e.strerror}") from e


def _not_regular(where: Located, file: str, mode: int) -> str:
    """Why a file of this kind (``st_mode``) is refused."""
    kind = "a folder" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode) else ""
    if kind:
        return f"{where.rel} is {kind}, not a file under {where.root}"
    return (
        f"refused {file!r}: it is not a regular file (a FIFO, socket or device); "
        "only regular files are read"
    )


def _check_opened(where: Located, file: str, info: os.stat_result, max_file_size: int) -> None:
    """Refuse an opened file (``info``: its ``fstat``) that is not a regular file, has
    more than one hard link, or is over ``max_file_size`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(_not_regular(where, file, info.st_mode))
    if info.st_nlink > 1:
        raise SourceError(
            f"refused {file!r}: it has {info.st_nlink} hard links, and a hard link can bring "
            "in a file from outside the indexed root (its other names may lie anywhere on "
            "the filesystem), so files with more than one link are never read; if it is "
            "meant to be part of the codebase, the user can replace it with a plain copy "
            "and re-index (index_codebase)"
        )
    if info.st_size > max_file_size:
        raise SourceError(
            f"{where.rel} is {info.st_size:,} bytes, over the {max_file_size:,}-byte limit "
            "for reading files"
        )


def _changed(where: Located, file: str, how: str) -> SourceError:
    """The refusal of a ``.rs`` file that no longer holds what was indexed."""
    return SourceError(
        f"refused {file!r}: it changed since the last index run ({how}), so the index no "
        f"longer covers what it holds; re-index first (index_codebase({where.root!r})), "
        "then read it again"
    )


def read_file(
    where: Located,
    file: str,
    start_line: int | None,
    end_line: int | None,
    max_file_size: int,
) -> FileContentOut:
    """Lines ``start_line`` to ``end_line`` of a located file (``file``: the argument, for
    messages), cut at :data:`READ_MAX_LINES` / :data:`READ_MAX_CHARS`.

    Refuses what the index does not cover, secrets, files over ``max_file_size`` bytes,
    non-text, files with more than one hard link, and ``.rs`` files whose size or
    SHA-256 is no longer what the manifest recorded ("re-index first"). The file is
    opened once and judged from that descriptor (:func:`_open_located`).

    The modification time is not compared: a file whose bytes are those that were
    indexed (a ``touch``, a checkout that rewrote the same content) holds nothing the
    index does not, and refusing it would only send the agent to re-index."""
    why = _why_sensitive_name(where.rel)
    if why:
        raise SourceError(f"refused {file!r}: {why}; such files are never read")
    record = manifest_record(where.index_dir, where.rel)
    covered = record is not None or _is_crate_file(where.root, where.rel)
    not_covered = SourceError(
        f"refused {file!r}: read_file_content returns only files the index of "
        f"{where.root} covers (its .rs files), Cargo.toml files and the README "
        f"files of the root and of crate folders, and {where.rel} is none of these "
        "(a .rs file added since the last run becomes readable once index_codebase "
        "has indexed it)"
    )
    # an uncovered .rs file is opened only to say why the index left it out (a secret)
    if not covered and not where.rel.endswith(RUST_SUFFIX):
        raise not_covered
    fd = _open_located(where, file)
    try:
        _check_opened(where, file, os.fstat(fd), max_file_size)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_file_size + 1)
    finally:
        os.close(fd)
    if len(data) > max_file_size:
        raise SourceError(f"{where.rel} is over the {max_file_size:,}-byte limit for reading files")
    # secrets first: a secret in a binary or non-UTF-8 file is refused as a secret, and
    # a file that came to hold one is told so ("re-index first" could never succeed: the
    # run that reads it drops it from the index)
    label = sensitive_content(data)
    if label:
        article = "an" if label[0] in "AEIOU" else "a"
        raise SourceError(
            f"refused {file!r}: its content holds {article} {label}; files that hold "
            "secrets are left out of the index and never read"
        )
    if not covered:
        raise not_covered
    if record is not None and hashlib.sha256(data).hexdigest() != record.sha256:
        how = (
            f"{len(data):,} bytes now, {record.size:,} when indexed"
            if len(data) != record.size
            else "its content is not what was indexed"
        )
        raise _changed(where, file, how)
    try:
        text = decode_text(data)
    except NotTextError as e:
        if e.reason == "binary":
            raise SourceError(f"{where.rel} is a binary file") from e
        raise SourceError(f"{where.rel} is not UTF-8 text (byte {e.offset})") from e
    lines = text.splitlines(keepends=True)
    total = len(lines)
    first = 1 if start_line is None else start_line
    last = total if end_line is None else min(end_line, total)
    if first < 1:
        raise SourceError(f"start_line must be at least 1, got {first}")
    if end_line is not None and end_line < first:
        raise SourceError(f"end_line ({end_line}) is before start_line ({first})")
    if first > max(total, 1):
        raise SourceError(f"{where.rel} has {total} lines; start_line {first} is past the end")
    picked: list[str] = []
    chars = 0
    truncated = False
    for n in range(first, last + 1):
        row = lines[n - 1]
        if len(picked) >= READ_MAX_LINES or (picked and chars + len(row) > READ_MAX_CHARS):
            truncated = True
            break
        picked.append(row)
        chars += len(row)
    shown_last = first + len(picked) - 1 if picked else (0 if total == 0 else first - 1)
    return FileContentOut(
        path=where.rel,
        directory=where.root,
        start_line=first,
        end_line=shown_last,
        total_lines=total,
        truncated=truncated,
        next_start_line=shown_last + 1 if truncated else None,
        content="".join(picked),
    )
