"""Which folders the MCP server may index and read: the user decides, never the agent.

The user names the allowed roots when starting the server, with ``rcm-dask mcp --root DIR``
(repeatable) or the ``RCM_MCP_ROOTS`` variable (folders separated by ``os.pathsep``, ``:``
on Linux and macOS); ``--root`` wins over the variable. With neither, the one allowed root
is the working directory the server was started in, unless that is ``/`` or the home
folder (where MCP clients often start servers without anyone choosing it): then nothing
is allowed until the user names a root.

An MCP client that offers the *roots* capability (its workspace folders, as ``file://``
URIs) narrows the user's roots, never widens them: the server then works only inside the
parts of the client's roots that lie inside the user's (:meth:`AllowedRoots.narrowed`). A
client, or an agent steered by what it reads, can thus never reach a folder the user did
not allow.

Every path is compared by its real location (symlinks resolved), so a symlink inside an
allowed root that leads out of it is outside. ``/`` is allowed only when the user names
it explicitly.

Examples
--------
>>> allowed = AllowedRoots.from_settings(["/tmp"])
>>> allowed.check("/etc/shadow")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
RootNotAllowedError: refused /etc/shadow: it is outside the folders this server may use ...
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import ConfigError, RootNotAllowedError

ENV_VAR = "RCM_MCP_ROOTS"
"""The environment variable that lists the allowed roots (``os.pathsep``-separated)."""

HOW_TO_ALLOW = f"`rcm-dask mcp --root DIR` (repeatable) or the {ENV_VAR} variable"
"""How a user allows a folder; every refusal names it."""


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def real_path(path: str, base: str | None = None) -> str:
    """The absolute, normalised real location of ``path`` (``~`` expanded, symlinks resolved).

    Parameters
    ----------
    path
        Absolute, or relative to ``base``.
    base
        Folder a relative ``path`` is taken from (default: the working directory).

    Returns
    -------
    str
        The real path; it need not exist.

    Examples
    --------
    >>> real_path("/usr/../usr")
    '/usr'
    """
    expanded = os.path.expanduser(path)
    if base is not None and not os.path.isabs(expanded):
        expanded = os.path.join(base, expanded)
    return os.path.realpath(os.path.abspath(expanded))


def _collapse(paths: Iterable[str]) -> tuple[str, ...]:
    """Sorted, without duplicates and without roots that lie inside another one."""
    unique = sorted(set(paths), key=lambda p: (len(p), p))
    kept: list[str] = []
    for p in unique:
        if not any(_inside(p, k) for k in kept):
            kept.append(p)
    return tuple(sorted(kept))


def parse_roots(text: str) -> list[str]:
    """The folders of an ``RCM_MCP_ROOTS`` value: split on ``os.pathsep``, blanks dropped.

    Examples
    --------
    >>> parse_roots(os.pathsep.join(["/a", "", " /b "]))
    ['/a', '/b']
    """
    return [part.strip() for part in text.split(os.pathsep) if part.strip()]


def roots_from_uris(uris: Iterable[str]) -> list[str]:
    """Local real paths of ``file://`` root URIs (as MCP clients send them); others dropped.

    Examples
    --------
    >>> roots_from_uris(["file:///usr/lib/../lib", "https://example.com/x"])
    ['/usr/lib']
    """
    out = []
    for uri in uris:
        parsed = urllib.parse.urlparse(str(uri))
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            continue
        path = urllib.request.url2pathname(parsed.path)
        if path and os.path.isabs(path):
            out.append(real_path(path))
    return out


@dataclass(frozen=True)
class AllowedRoots:
    """The folders the MCP server may index and read, and where that setting came from."""

    paths: tuple[str, ...]
    """Real absolute paths, sorted, none inside another; empty when nothing is allowed."""
    source: str
    """Who set them, for messages: ``--root``, ``RCM_MCP_ROOTS``, ``the working directory``..."""
    note: str = ""
    """Why nothing is allowed, when :attr:`paths` is empty."""

    @classmethod
    def from_settings(
        cls,
        roots: Sequence[str] = (),
        *,
        environ: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> AllowedRoots:
        """The user's allowed roots: ``roots`` (``--root``), else ``RCM_MCP_ROOTS``, else ``cwd``.

        Parameters
        ----------
        roots
            Folders given with ``--root``; relative ones are taken from ``cwd``.
        environ
            Where to read ``RCM_MCP_ROOTS`` (default: ``os.environ``).
        cwd
            The working directory (default: ``os.getcwd()``).

        Returns
        -------
        AllowedRoots
            With no setting and a working directory of ``/`` or the home folder, no paths
            and a :attr:`note` that says how to allow some.

        Raises
        ------
        ConfigError
            A named root does not exist or is not a folder.

        Examples
        --------
        >>> AllowedRoots.from_settings(environ={ENV_VAR: "/usr"}).paths
        ('/usr',)
        >>> AllowedRoots.from_settings(environ={}, cwd="/").paths
        ()
        """
        env = os.environ if environ is None else environ
        base = os.getcwd() if cwd is None else cwd
        if roots:
            given, source = list(roots), "--root"
        elif parse_roots(env.get(ENV_VAR, "")):
            given, source = parse_roots(env.get(ENV_VAR, "")), ENV_VAR
        else:
            here = real_path(base)
            home = real_path(os.path.expanduser("~"))
            if here in ("/", home) or os.path.dirname(here) == here:
                where = "/" if os.path.dirname(here) == here else f"the home folder {here}"
                return cls(
                    paths=(),
                    source="the working directory",
                    note=(
                        f"the server was started in {where} and no root was given, so it "
                        f"may use no folder: the user allows folders with {HOW_TO_ALLOW}"
                    ),
                )
            return cls(paths=(here,), source="the working directory (no --root given)")
        found = []
        for raw in given:
            path = real_path(raw, base)
            if not os.path.isdir(path):
                what = "does not exist" if not os.path.exists(path) else "is not a folder"
                raise ConfigError(
                    f"{source} {raw} {what}: give existing folders the MCP server may index "
                    "and read"
                )
            found.append(path)
        return cls(paths=_collapse(found), source=source)

    def narrowed(self, client_uris: Sequence[str]) -> AllowedRoots:
        """These roots narrowed to the client's: the parts of both that overlap.

        A client root inside an allowed root is kept; an allowed root inside a client
        root is kept; anything else is dropped. An empty list (a client that offers the
        capability but names no folder) leaves the roots as they are.

        Parameters
        ----------
        client_uris
            The client's roots, as ``file://`` URIs (others are ignored).

        Returns
        -------
        AllowedRoots
            Never wider than ``self``.

        Examples
        --------
        >>> AllowedRoots(("/usr",), "--root").narrowed(["file:///usr/lib", "file:///etc"]).paths
        ('/usr/lib',)
        """
        if not client_uris:
            return self
        client = roots_from_uris(client_uris)
        kept = []
        for c in client:
            for u in self.paths:
                if _inside(c, u):
                    kept.append(c)
                elif _inside(u, c):
                    kept.append(u)
        source = f"the MCP client's roots within {self.source}"
        if kept:
            return AllowedRoots(paths=_collapse(kept), source=source)
        listed = ", ".join(client) or ", ".join(str(u) for u in client_uris)
        return AllowedRoots(
            paths=(),
            source=source,
            note=(
                f"the MCP client's roots ({listed}) lie outside the folders the user allowed "
                f"({self.describe()}); the user allows folders with {HOW_TO_ALLOW}"
            ),
        )

    def describe(self) -> str:
        """The roots and their source, for messages (``/a, /b (from --root)``)."""
        if not self.paths:
            return f"none (from {self.source})"
        return f"{', '.join(self.paths)} (from {self.source})"

    def contains(self, path: str) -> bool:
        """Whether the real location of an absolute ``path`` lies inside an allowed root."""
        real = real_path(path)
        return any(_inside(real, root) for root in self.paths)

    def check(self, path: str, *, what: str = "") -> str:
        """The real location of ``path``, or a refusal when it lies outside every root.

        Parameters
        ----------
        path
            An absolute path (a relative one is taken from the working directory).
        what
            How the caller named it, for the message (default: ``path``).

        Returns
        -------
        str
            The real path (symlinks resolved) inside an allowed root.

        Raises
        ------
        RootNotAllowedError
            Outside every allowed root; the message names the setting that allows more.
        """
        real = real_path(path)
        if any(_inside(real, root) for root in self.paths):
            return real
        shown = what or path
        if real != os.path.normpath(os.path.abspath(os.path.expanduser(path))):
            shown += f" (really {real})"
        if not self.paths:
            raise RootNotAllowedError(f"refused {shown}: {self.note or self.describe()}")
        raise RootNotAllowedError(
            f"refused {shown}: it is outside the folders this server may use, "
            f"{self.describe()}; only the user can allow another folder, with {HOW_TO_ALLOW}"
        )


__all__ = [
    "ENV_VAR",
    "HOW_TO_ALLOW",
    "AllowedRoots",
    "RootNotAllowedError",
    "parse_roots",
    "real_path",
    "roots_from_uris",
]
