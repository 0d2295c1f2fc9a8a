"""A forced rebuild is built beside the live index and swapped in when it is complete.

``rcm-dask index --force`` used to delete every store of the folder first, so searches
found nothing until the rebuild ended (and a rebuild that failed left nothing). Now the
run, holding the live folder's lock, builds into a hidden sibling folder on the same
filesystem (``<parent>/.<name>.rebuild-<token>``, :func:`rebuild_dir`) under that
folder's own lock, while searches keep answering from the live index. At the end the
two folders trade places in one step (:func:`exchange_dirs`: Linux's
``renameat2(RENAME_EXCHANGE)``), and the old tree, now under the hidden name, is
deleted. A reader that had the old stores open keeps reading them (an unlinked file
lives while it is open) until it notices the new folder and reopens.

A rebuild that fails is deleted at once; one that is killed is left behind, and the next
run of the index (which takes the live lock first, so no rebuild can be in progress)
deletes it (:func:`clear_leftovers`). With a Qdrant server the vectors live in a
collection named after the folder, so a rebuild writes a collection of its own (named
after its hidden folder) that ``identity.json`` records; the collection the old index
named is dropped with its tree.

Where ``renameat2`` is missing (not Linux, an old kernel or C library, a filesystem
without it), the swap is two renames: for a moment the folder does not exist, and a
search in that moment says there is no index.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REBUILD_MARK = ".rebuild-"
"""What a rebuild's folder name holds between the index folder's name and its token."""

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def rebuild_dir(index_dir: Path) -> Path:
    """A new hidden sibling folder name for a rebuild of ``index_dir`` (not created)."""
    return index_dir.parent / f".{index_dir.name}{REBUILD_MARK}{secrets.token_hex(4)}"


def leftovers(index_dir: Path) -> list[Path]:
    """Rebuild folders of ``index_dir`` on disk (of a rebuild in progress, or left by one
    that was killed, or an old tree not yet deleted)."""
    return sorted(index_dir.parent.glob(f".{index_dir.name}{REBUILD_MARK}*"))


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two folders' names; True when done in one atomic step.

    Linux's ``renameat2(..., RENAME_EXCHANGE)``; where it is not available, ``a`` is
    renamed aside, ``b`` takes its name, and the aside folder takes ``b``'s (so for a
    moment ``a`` does not exist).
    """
    if _renameat2_exchange(a, b):
        return True
    aside = b.with_name(b.name + "-old")
    os.rename(a, aside)
    os.rename(b, a)
    os.rename(aside, b)
    return False


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """``renameat2(a, b, RENAME_EXCHANGE)``; False where the system lacks it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        return False
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # an old kernel, or a filesystem that cannot exchange
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def remove_tree(folder: Path, live: Mapping[str, Any] | None, qdrant_api_key: str | None) -> None:
    """Delete a rebuild folder (or an old tree swapped out), and the Qdrant server
    collection its ``identity.json`` names unless the live index (``live``, its identity)
    uses that one."""
    from .manifest import read_identity

    ident = read_identity(folder) or {}
    url, name = ident.get("qdrant_url"), ident.get("collection")
    if url and name and name != (live or {}).get("collection"):
        try:
            drop_collection(str(url), str(name), qdrant_api_key)
        except Exception:  # the server may be away: a stray collection costs only space
            pass
    shutil.rmtree(folder, ignore_errors=True)


def drop_collection(url: str, name: str, api_key: str | None) -> None:
    """Delete a Qdrant server's collection if it exists."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, api_key=api_key)
    try:
        if client.collection_exists(name):
            client.delete_collection(name)
    finally:
        client.close()


def clear_leftovers(
    index_dir: Path, live: Mapping[str, Any] | None, qdrant_api_key: str | None
) -> list[Path]:
    """Delete what killed rebuilds of ``index_dir`` left; call only while holding the
    live folder's lock (then no rebuild is in progress). Returns the folders deleted."""
    found = leftovers(index_dir)
    for folder in found:
        remove_tree(folder, live, qdrant_api_key)
    return found
