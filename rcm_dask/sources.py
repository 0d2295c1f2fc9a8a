"""Find and read Rust files through fsspec (local paths, ``file://``, ``memory://``, ``s3://``...).

Two stages: :func:`discover_sources` lists ``**/*.rs`` under a root once (the only
place that walks the tree) and :func:`read_source` reads one listed file into a
:class:`~rcm_dask.records.SourceFile`, or says why not with a
:class:`~rcm_dask.records.Skipped`. ``read_source`` is a plain function over a
pickled filesystem and a :class:`~rcm_dask.records.FileRef`, so it runs the same in a
loop or in a worker process.

What is skipped by default, each with its reason:

- ``target-dir``: Cargo build output folders named ``target``;
- ``hidden``: folders and files whose name starts with ``.``;
- ``ignored``: paths matched by a ``.gitignore`` under the root (or ``exclude``);
- ``sensitive``: names that look like secrets (:data:`SENSITIVE_NAME_PATTERNS`) and files
  whose content holds one (:func:`sensitive_content`; see *Secrets* below);
- ``not-regular``: FIFOs, sockets and devices named ``*.rs``, decided from the listing
  (never opened: opening a FIFO blocks until something writes to it);
- ``hard-link``: regular files with more than one hard link (another name of the same
  file may lie outside the root, and its content would be indexed and shown);
- ``not-utf8-name``: file and folder names that are not valid UTF-8 (no ``mod``
  declaration can name such a file; tokenizers, stores and terminals refuse the name);
- ``too-large``, ``binary``, ``not-utf8``, ``unreadable``, ``vanished``: found on reading.

Secrets
-------
A file named like a secret is never read: ``.env*``, ``*.pem``, ``*.key``, ``*.p12``,
``*.pfx``, ``*.keystore`` (also with a suffix after them: ``deploy.key.rs``, which no
``mod`` can name, is key material dressed as Rust), SSH keys (``id_rsa*``...),
``*credentials*`` and ``secrets.*``, except ``.rs`` modules named for what they handle
(``credentials.rs``, ``aws_credentials.rs``, ``secrets.rs``: hundreds of public crates hold
such a module of plain code), whose content is checked like any other file's.

A file whose content holds a secret is skipped whole, with the kind of secret as the
detail; the MCP server refuses to show it for the same reason. Skipping rather than
redacting: a file that holds one secret often holds more that no rule knows (the user
name and host beside a password), and an index that left a file out says so in the run's
summary, where a redacted chunk would be served silently. The kinds, each written so that
a header or a name mentioned in code, docs or an error message does not trip it:

- known token formats (:data:`SENSITIVE_CONTENT_PATTERNS`): private key blocks (a header
  followed by a body, not the header alone), PGP private key blocks, AWS access key ids
  (``AKIA``/``ASIA`` + 16), GitHub, Slack, Stripe live and Google API keys, Slack webhook
  URLs (not the documented ``T00000000/B00000000/XXXX…`` placeholders), and JWTs (three
  base64url segments, the first two JSON objects (``eyJ``), a signature of 16+ characters:
  an unsigned ``alg: none`` token is not one);
- secrets told by their context (:data:`SENSITIVE_CONTENT_CHECKS`):

  - ``AWS secret access key``: 40 characters of mixed case and digits after a
    ``secret_access_key`` name (``aws_secret_access_key = …``, ``AWS_SECRET_ACCESS_KEY=…``,
    ``"SecretAccessKey": "…"``, ``.secret_access_key("…")``);
  - ``AWS access key id`` cut into string literals joined in one expression, the pieces
    making exactly 20 characters: ``concat!("AKIA", "…")`` (also after other arguments),
    ``["AKIA", "…"].concat()``/``.join("")``, ``format!("{}{}", "AKIA", "…")``,
    ``"AKIA".to_owned() + "…"``; a list of prefixes is not one;
  - ``password literal``: a name holding ``password``, ``passwd``, ``passphrase``,
    ``pwd``, ``secret``, ``token``, ``api_key``/``apikey``/``api-key`` or ``private_key``
    (any case, in snake, camel or screaming case; not ``tokenizer``, ``tokens``: the word
    must end there or at a ``_`` or capital) given a string literal by ``=`` or ``:``
    (``DB_PASSWORD = "…"``, ``password: "…"``, ``let api_key = "…"``, ``const
    SECRET_TOKEN: &str = "…"``, ``Some("…")``, ``String::from("…")``, JSON keys in raw or
    escaped strings). Not a name whose last word says it holds something else
    (``TOKEN_URL``, ``password_file``, ``api_key_env``, ``*_name``, ``*_header``,
    ``*_id``, ``*_hash``...), a comparison (``==``), a call (``env::var("DB_PASSWORD")``)
    or a field declaration (``password: String``). The literal must look like a secret:
    8 to 256 characters without whitespace (so no message: ``"invalid password"``),
    letters with digits or one of ``!@#^&*+=?~``, no ``{ } < > $ %`` (format strings,
    ``${VAR}``, ``<password>``), no ``://`` or ``::`` and no leading ``/ . ~`` (URLs,
    paths, code), not a snake or screaming-case identifier (``OPENAI_API_KEY``, an env
    var's name), and none of the placeholder words (``example``, ``sample``, ``dummy``,
    ``fake``, ``placeholder``, ``change``, ``redacted``, ``your``, ``xxx``, ``***``,
    ``...``, ``test``, ``todo``, ``replace``, ``insert``, ``foo``, ``mock``, and the name
    words themselves: ``"secret-password"``, ``"stress-token-abc123"`` are made up).

On the 22,331 ``.rs`` files of the Rust 1.63 sources (``library``, ``compiler``,
``src``) and 6,007 of Debian's crate sources (regex, hyper, rustls, url, clap, reqwest
and their dependencies) no file is flagged. Every pattern starts with a literal, so that
``re`` finds candidates by substring search: about 11 ms a MB on a 2-core EPYC, and no
more than about 0.2 s a MB on inputs built to make regexes backtrack (every run is
bounded or possessive).
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import pathspec
from fsspec.implementations.local import LocalFileSystem

from .errors import SourceError
from .records import FileRef, Skipped, SourceFile

SENSITIVE_NAME_PATTERNS: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.pem",
    "*.pem.*",
    "*.key",
    "*.key.*",
    "*.p12",
    "*.p12.*",
    "*.pfx",
    "*.pfx.*",
    "*.keystore",
    "*.keystore.*",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*credentials*",
    "secrets.*",
    # a module may be named for what it handles (hundreds of crates have a
    # src/credentials.rs or src/secrets.rs of plain code): its content is checked instead
    "!*credentials*.rs",
    "!secrets.rs",
)
"""Gitignore-style name patterns of files never read unless ``include_sensitive`` (the
``!`` lines take ``.rs`` modules back out; a later line wins, as in ``.gitignore``)."""

_PRIVATE_KEY_BLOCK = re.compile(
    rb"""
    -----BEGIN[ ](?:[A-Z0-9]+[ ])*PRIVATE[ ]KEY-----
    (?:[\s"',*#!]|\\[nrt]?|//+)*+  # a gap: newlines, \n escapes, quotes, commas, comment marks
    (?:
        Proc-Type:  # an encrypted PEM's header
      | [A-Za-z0-9+/=]{40}  # a base64 line
      | [A-Za-z0-9+/=]{4}[A-Za-z0-9+/=]*+  # short base64 lines up to the END line
        (?:(?:[\s"',*#!]|\\[nrt]?|//+)++[A-Za-z0-9+/=]++){0,400}
        (?:[\s"',*#!]|\\[nrt]?|//+)*+-----END[ ]
    )
    """,
    re.VERBOSE,
)
"""A private key's header followed by its body (a header named in code or docs, as
openssl's ``rsa.rs`` does, is not a key). A gap's characters are not base64's, and each
run is possessive: nothing backtracks."""

# Each pattern starts with a literal and checks the byte before it with a lookbehind
# placed after it (``AKIA(?<![0-9A-Za-z_]AKIA)``, not ``\bAKIA``): Python's re then finds
# candidates by a fast substring search, about 0.5 ms a MB per pattern instead of 6.
SENSITIVE_CONTENT_PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("private key block", _PRIVATE_KEY_BLOCK),
    (
        "AWS access key id",
        re.compile(rb"(?:AKIA|ASIA)(?<![0-9A-Za-z_]A[KS]IA)[0-9A-Z]{16}(?![0-9A-Za-z_])"),
    ),
    ("PGP private key block", re.compile(rb"-----BEGIN PGP PRIVATE KEY BLOCK-----")),
    (
        "GitHub token",
        re.compile(rb"gh[pousr]_(?<![0-9A-Za-z_]gh._)[A-Za-z0-9]{36,}(?![0-9A-Za-z_])"),
    ),
    # fine-grained personal access tokens: github_pat_ + 22 + _ + 59 alphanumerics
    ("GitHub token", re.compile(rb"github_pat_(?<![0-9A-Za-z_]github_pat_)[A-Za-z0-9_]{50,}")),
    ("Slack token", re.compile(rb"xox[abprs]-(?<![0-9A-Za-z_]xox.-)[A-Za-z0-9-]{10,}")),
    # incoming webhooks: whoever has the URL posts to the channel; placeholders such as
    # Slack's documented T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX are not secrets
    (
        "Slack webhook URL",
        re.compile(
            rb"hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,}/[A-Z0-9]{6,}/"
            rb"(?![A-Za-z0-9]*?(?:XXXX|xxxx|placeholder|example))[A-Za-z0-9]{16,}"
        ),
    ),
    # Stripe live secret and restricted keys (test-mode sk_test_ keys are not secrets)
    (
        "Stripe live key",
        re.compile(rb"k_live_(?<=[rs]k_live_)(?<![0-9A-Za-z_].k_live_)[0-9A-Za-z]{20,}"),
    ),
    (
        "Google API key",
        re.compile(rb"AIza(?<![0-9A-Za-z_]AIza)[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    ),
    # three base64url segments; header and payload are JSON objects ({" is eyJ); a token
    # signed with "alg": "none" has no signature and is not matched
    (
        "JWT",
        re.compile(
            rb"eyJ(?<![0-9A-Za-z_-]eyJ)[A-Za-z0-9_-]{8,}\.ey[A-Za-z0-9_-]{8,}\."
            rb"[A-Za-z0-9_-]{16,}"
        ),
    ),
)
"""(label, pattern) pairs: a file whose bytes match one is skipped as ``sensitive``."""

# --- secrets found by their context: run by sensitive_content over the bytes and over
# their lowercase copy (same offsets: bytes.lower() changes ASCII letters only)

_AWS_SECRET_KEY = re.compile(
    rb"secret_?access_?key[\"'\\]*+(?:[\s:=>,(&\"'\\]|some\(|string::from\(){1,8}"
    rb"(?P<key>[a-z0-9/+]{40})(?![a-z0-9/+=])"
)
"""On lowercase bytes: ``aws_secret_access_key = …``, ``AWS_SECRET_ACCESS_KEY=…``,
``"SecretAccessKey": "…"``, ``.secret_access_key("…")`` with a 40-character key."""


def _aws_secret_access_key(data: bytes, lower: bytes) -> bool:
    """A 40-character key after a ``secret_access_key`` name, mixed as real keys are
    (upper case, lower case and digits: no placeholder is)."""
    for m in _AWS_SECRET_KEY.finditer(lower):
        key = data[m.start("key") : m.end("key")]
        if _has_upper(key) and _has_lower(key) and _has_digit(key):
            return True
    return False


_KEY_ID_HEAD = re.compile(rb'"A(?:KIA|SIA)(?P<rest>[0-9A-Z]{0,15})"')
_KEY_ID_PIECE = {
    # "AKIA".to_owned() + "…", String::from("AKIA") + &"…"
    b"+": re.compile(
        rb"\s*\)?\s*(?:\.(?:to_string|to_owned|into)\(\)\s*)?\+\s*&?\s*"
        rb'(?:String::from\(\s*)?(?:b|r#*)?"(?P<part>[0-9A-Z]*)"'
    ),
    # concat!("AKIA", "…"), ["AKIA", "…"].concat()
    b",": re.compile(rb'\s*,\s*(?:b|r#*)?"(?P<part>[0-9A-Z]*)"'),
}
_CONCAT_OPEN = re.compile(rb'(?:concat|format)!\s*[(\[{]\s*(?:(?:b|r#*)?"[^"\n]*"#*\s*,\s*)*$')
_CONCAT_CLOSE = re.compile(rb"\s*,?\s*\]\s*\.\s*(?:concat|join)\(")


def _split_aws_key_id(data: bytes, lower: bytes) -> bool:
    """An AWS key id cut into string literals joined in one expression: ``concat!("AKIA",
    "…")``, ``["AKIA", "…"].concat()``, ``"AKIA".to_owned() + "…"``; the pieces make
    exactly the 20 characters of a key id."""
    seen = 0  # end of the pieces already joined: a head among them is not tried again
    for m in _KEY_ID_HEAD.finditer(data):
        if m.start() < seen:
            continue
        for joiner, piece in _KEY_ID_PIECE.items():
            key, pos = m.group("rest"), m.end()
            for _ in range(16):  # at most 16 more pieces: empty ones cannot run on
                p = piece.match(data, pos)
                if p is None or len(key) > 16:
                    break
                key, pos = key + p.group("part"), p.end()
            seen = max(seen, pos)
            if len(key) != 16 or pos == m.end():
                continue
            if joiner == b"+" or _CONCAT_OPEN.search(data, max(0, m.start() - 300), m.start()):
                return True
            if _CONCAT_CLOSE.match(data, pos):
                return True
    return False


_ASSIGNED_LITERAL = (
    rb"(?P<tail>[a-z0-9_]{0,64}+)"  # bounded, possessive: "tokentoken..." stays linear
    rb"(?:\\?[\"'])?[ \t]*+"  # the closing quote of a JSON or YAML key
    rb"(?::[ \t]*[a-z0-9_:<>\[\]&' ]{1,40}?[ \t]*=(?![=>~])|=(?![=>~])|:(?!:))[ \t]*+"
    rb"(?:&[ \t]*+|some\([ \t]*+|string::from\([ \t]*+)?(?:b|br|r)?#*"
    rb"(?P<q>\\?[\"'])(?P<value>[^\"'\\\s]{8,256})(?P=q)"
)
_PASSWORD_ASSIGNMENTS = tuple(
    re.compile(rb"(?P<word>" + word + rb")" + _ASSIGNED_LITERAL)
    for word in (
        rb"passw(?:or)?d",
        rb"passphrase",
        rb"pwd",
        rb"secret",
        rb"token",
        rb"api[_-]?key",
        rb"private[_-]?key",
    )
)
"""Run on lowercase bytes, one pattern per word so that each starts with a literal: a
name holding the word, ``=`` or ``:`` (after an optional type: ``const SECRET_TOKEN: &str
=``), then a string literal of 8 or more characters without whitespace (what the literal
may not be is :func:`_is_secret_value`'s)."""

_NAME_WORDS = re.compile(rb"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
_NOT_SECRET_LAST_WORDS = frozenset(
    b"url uri path file dir env var name header type kind field len prefix pattern regex re "
    b"endpoint format fmt msg message label help id hash digest".split()
)
"""A name ending in one of these (``TOKEN_URL``, ``passwordFile``, ``api_key_env``) holds
something about the secret, not the secret."""

_PLACEHOLDER_WORDS = tuple(
    b"example sample dummy fake placeholder change redacted your xxx *** ... test todo "
    b"replace insert foo mock secret passw token api_key api-key apikey".split()
)
"""A literal holding one of these is a placeholder or a made-up test value ("changeme",
"your-api-key", "stress-token-abc123"): a random secret holds no word."""

_IDENTIFIER = re.compile(rb"[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def _password_literal(data: bytes, lower: bytes) -> bool:
    """A password, token or key written as a string literal (see the module docstring
    for what is taken as a placeholder instead)."""
    for pattern in _PASSWORD_ASSIGNMENTS:
        for m in pattern.finditer(lower):
            if data[m.end("word") : m.end("word") + 1].islower():  # tokenizer, secretary
                continue
            name = data[m.start("word") : m.end("tail")]
            if _NAME_WORDS.findall(name)[-1].lower() in _NOT_SECRET_LAST_WORDS:
                continue
            if _is_secret_value(data[m.start("value") : m.end("value")]):
                return True
    return False


def _is_secret_value(value: bytes) -> bool:
    """Whether a literal's text (8+ characters, no whitespace) can be a secret: letters
    with digits or symbols, and no sign of a placeholder, template, path or identifier."""
    if any(c in value for c in b"{}<>$%") or b"://" in value or b"::" in value:
        return False
    if value[:1] in b"/.~":  # a path
        return False
    if not _has_letter(value) or not (_has_digit(value) or _has_symbol(value)):
        return False
    if _IDENTIFIER.fullmatch(value):
        return False
    low = value.lower()
    return not any(w in low for w in _PLACEHOLDER_WORDS)


def _has_upper(b: bytes) -> bool:
    """Whether ``b`` holds an ASCII upper-case letter."""
    return b.lower() != b


def _has_lower(b: bytes) -> bool:
    """Whether ``b`` holds an ASCII lower-case letter."""
    return b.upper() != b


def _has_letter(b: bytes) -> bool:
    """Whether ``b`` holds an ASCII letter."""
    return b.upper() != b.lower()


def _has_digit(b: bytes) -> bool:
    """Whether ``b`` holds an ASCII digit."""
    return any(48 <= c <= 57 for c in b)


def _has_symbol(b: bytes) -> bool:
    """Whether ``b`` holds one of the symbols passwords are told to hold."""
    return any(c in b"!@#^&*+=?~" for c in b)


SENSITIVE_CONTENT_CHECKS: tuple[tuple[str, Callable[[bytes, bytes], bool]], ...] = (
    ("AWS secret access key", _aws_secret_access_key),
    ("AWS access key id", _split_aws_key_id),
    ("password literal", _password_literal),
)
"""(label, check) pairs for secrets told by their context: ``check(data, data.lower())``
says whether the file holds one; such a file is skipped as ``sensitive`` too."""

_SENSITIVE_NAMES = pathspec.GitIgnoreSpec.from_lines(SENSITIVE_NAME_PATTERNS)

RUST_SUFFIX = ".rs"


@dataclass(frozen=True)
class SourceRoot:
    """A folder to index, on some fsspec filesystem."""

    fs: Any
    """The fsspec filesystem (pickles; opened again inside worker processes)."""
    path: str
    """Root path as the filesystem names it (no protocol)."""
    url: str
    """Canonical URL of the root (``/abs/path`` for local files, ``memory://x``...)."""

    def relpath(self, full: str) -> str:
        """Root-relative posix path of a listed file."""
        return posixpath.relpath(full.rstrip("/"), self.path.rstrip("/") or "/")


@dataclass
class Discovery:
    """What :func:`discover_sources` found."""

    root: SourceRoot
    """The root that was listed."""
    files: list[FileRef] = field(default_factory=list)
    """Rust files to read, sorted by path."""
    skipped: list[Skipped] = field(default_factory=list)
    """Files and folders left out, each with its reason."""


def open_root(path_or_url: str) -> SourceRoot:
    """Resolve a local path or fsspec URL to a :class:`SourceRoot`.

    Parameters
    ----------
    path_or_url
        ``./crate``, ``/abs/path``, ``file:///abs``, ``memory://name``, ``s3://bucket/prefix``...

    Raises
    ------
    SourceError
        The path does not exist, is not a folder, or its protocol is not installed.

    Examples
    --------
    >>> open_root("/definitely/missing")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SourceError: /definitely/missing does not exist
    """
    target = os.path.expanduser(str(path_or_url))
    try:
        fs, path = fsspec.core.url_to_fs(target)
    except (ImportError, ValueError) as e:
        raise SourceError(f"cannot open {path_or_url}: {e}") from e
    if isinstance(fs, LocalFileSystem):
        path = os.path.realpath(path)
    path = path.rstrip("/") or "/"
    try:
        info = fs.info(path)
    except FileNotFoundError as e:
        raise SourceError(f"{path_or_url} does not exist") from e
    except OSError as e:
        raise SourceError(f"cannot read {path_or_url}: {e}") from e
    if info.get("type") != "directory":
        raise SourceError(
            f"{path_or_url} is a file, not a folder: give the folder of the codebase to index"
        )
    url = path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
    return SourceRoot(fs=fs, path=path, url=url)


def open_local_root(path: str | os.PathLike[str]) -> SourceRoot:
    """A local folder given as a plain path that must already be its real location.

    Unlike :func:`open_root`, nothing in ``path`` is read as a URL (no protocol, no
    ``::`` chaining: a folder named ``a::b`` is that folder) and no symlink is followed:
    the folder is opened a component at a time from ``/`` (:func:`open_nofollow`), so
    a path that a symlink now stands in is refused, never followed. For callers that
    resolved and checked a path and must index exactly that place (the MCP server).

    Raises
    ------
    SourceError
        The path is relative, missing, not a folder, or a symlink stands in it.

    Examples
    --------
    >>> open_local_root("/usr").url
    '/usr'
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise SourceError(f"{text} is not an absolute path")
    norm = os.path.normpath(text)
    if not _NOFOLLOW:  # pragma: no cover - Windows
        if not os.path.isdir(norm) or os.path.islink(norm):
            raise SourceError(f"{text} is not a folder (or is a symlink)")
        return SourceRoot(fs=LocalFileSystem(), path=norm, url=norm)
    try:
        fd = open_nofollow(norm, folder=True)
    except SymlinkInPath as e:
        raise SourceError(
            f"refused {text}: a symlink stands in its path ({e}); symlinks are not followed here"
        ) from e
    except FileNotFoundError as e:
        raise SourceError(f"{text} does not exist") from e
    except NotADirectoryError as e:
        raise SourceError(
            f"{text} is a file, not a folder: give the folder of the codebase to index"
        ) from e
    except OSError as e:
        raise SourceError(f"cannot read {text}: {e.strerror or e}") from e
    os.close(fd)
    return SourceRoot(fs=LocalFileSystem(), path=norm, url=norm)


class SymlinkInPath(OSError):
    """A symlink stands where :func:`open_nofollow` expected a folder or a file."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final
        """Whether the symlink is the file itself (not a folder above it)."""


_NOFOLLOW = (
    hasattr(os, "O_NOFOLLOW")
    and hasattr(os, "O_DIRECTORY")
    and os.open in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
)
"""Whether paths can be opened a component at a time, refusing symlinks (POSIX)."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def open_nofollow(path: str, *, folder: bool = False) -> int:
    """A read-only descriptor of an absolute local path, opened without following symlinks.

    Each folder from ``/`` down, and the file itself, is opened relative to the one
    above it with ``O_NOFOLLOW``: a symlink anywhere in the path (one swapped in after
    the path was listed or checked) is refused, never followed, so what is opened is
    exactly the place the path names. A file that is not a regular file (FIFO, socket,
    device) is never opened: a FIFO would block.

    Parameters
    ----------
    path
        An absolute path with no symlink in it (a real path, or one listed from one).
    folder
        Open a folder (``os.scandir`` takes the descriptor) instead of a regular file.

    Returns
    -------
    int
        The descriptor; the caller closes it.

    Raises
    ------
    SymlinkInPath
        A component (or the file itself) is a symlink.
    OSError
        ``FileNotFoundError``, ``NotADirectoryError``..., or the file is not a regular
        file (``NotRegularFile``, the message saying what it is).
    """
    path = os.path.abspath(path)
    if not _NOFOLLOW:  # pragma: no cover - Windows: no O_NOFOLLOW nor dir_fd
        if folder:
            raise OSError("opening a folder as a descriptor needs POSIX")
        if os.path.islink(path):
            raise SymlinkInPath(f"{path} is a symlink")
        return os.open(path, _OPEN_FLAGS)
    parts = [p for p in path.split(os.sep) if p]
    downs = parts if folder else parts[:-1]
    fd = os.open(os.sep, _OPEN_FLAGS | os.O_DIRECTORY)
    try:
        for i, part in enumerate(downs):
            try:
                nxt = os.open(part, _OPEN_FLAGS | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    where = os.sep + os.sep.join(parts[: i + 1])
                    raise SymlinkInPath(f"{where} is a symlink") from e
                raise
            os.close(fd)
            fd = nxt
        if folder:
            out, fd = fd, -1
            return out
        mode = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise SymlinkInPath(f"{path} is a symlink", final=True)
        if not stat.S_ISREG(mode):
            raise NotRegularFile(_mode_kind(mode), mode)
        # non-blocking: a FIFO swapped in since the stat is opened, then refused by
        # the caller's fstat, instead of blocking until something writes to it
        try:
            return os.open(parts[-1], _OPEN_FLAGS | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkInPath(f"{path} is a symlink", final=True) from e
            raise
    finally:
        if fd >= 0:
            os.close(fd)


def _list_local(folder: str) -> list[dict[str, Any]]:
    """The entries of a local folder as ``fs.ls(folder, detail=True)`` gives them, listed
    from a descriptor opened by :func:`open_nofollow` (symlinks show as ``islink``, with
    the kind of the link itself, never followed)."""
    fd = open_nofollow(folder, folder=True)
    base = folder.rstrip("/")
    out = []
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                mode = st.st_mode
                kind = "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
                out.append(
                    {
                        "name": f"{base}/{entry.name}",
                        "type": kind,
                        "size": st.st_size,
                        "islink": stat.S_ISLNK(mode),
                        "mtime": st.st_mtime,
                        "mode": mode,
                        "nlink": st.st_nlink,
                    }
                )
    finally:
        os.close(fd)
    return out


def discover_sources(
    root: SourceRoot,
    *,
    respect_gitignore: bool = True,
    include_hidden: bool = False,
    include_sensitive: bool = False,
    exclude: tuple[str, ...] = (),
) -> Discovery:
    """List the ``.rs`` files under ``root``: one listing, no file contents read.

    The walk is iterative (no recursion limit), prunes skipped folders instead of
    listing inside them, and follows no local symlink: one pointing out of the
    root is skipped, and one pointing inside it is skipped because its target is
    listed at its own path (so no loops and no duplicate chunks).

    Parameters
    ----------
    root
        From :func:`open_root`.
    respect_gitignore
        Apply ``.gitignore`` files found in the root and its subfolders.
    include_hidden
        Also descend into hidden folders and take hidden files.
    include_sensitive
        Also take files whose names look like secrets.
    exclude
        Extra gitignore-style patterns, relative to the root.

    Returns
    -------
    Discovery
        Files sorted by path, and the skipped files and folders.
    """
    found = Discovery(root=root)
    fs = root.fs
    local = isinstance(fs, LocalFileSystem)
    real_root = os.path.realpath(root.path) if local else root.path
    extra = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None
    # (folder relative to root, spec) for every .gitignore seen on the way down
    ignores: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    stack = [root.path]
    while stack:
        folder = stack.pop()
        rel_folder = "" if folder == root.path else root.relpath(folder)
        try:
            # a local folder is listed from a descriptor opened without following
            # symlinks: one swapped in for a folder during the walk is refused, never
            # listed (and its files, read the same way, never read)
            entries = _list_local(folder) if local and _NOFOLLOW else fs.ls(folder, detail=True)
        except (OSError, ValueError) as e:
            found.skipped.append(Skipped(rel_folder or ".", "unreadable", str(e)))
            continue
        names = {posixpath.basename(e["name"].rstrip("/")): e for e in entries}
        if respect_gitignore and names.get(".gitignore", {}).get("type") == "file":
            spec = _load_gitignore(fs, names[".gitignore"]["name"])
            if spec is not None:
                ignores.append((rel_folder, spec))
        subfolders: list[str] = []
        for name in sorted(names):
            entry = names[name]
            full = entry["name"].rstrip("/")
            if full == folder:
                continue
            rel = posixpath.join(rel_folder, name) if rel_folder else name
            is_dir = entry.get("type") == "directory" or (
                local and bool(entry.get("islink")) and os.path.isdir(full)
            )
            reason = _skip_reason(
                rel,
                name,
                is_dir,
                include_hidden,
                ignores,
                extra,
                not include_sensitive,
            )
            if reason is None and not _is_utf8(name):
                reason = "not-utf8-name", "the name is not valid UTF-8"
            if is_dir:
                if reason is not None:
                    found.skipped.append(Skipped(rel + "/", reason[0], reason[1]))
                    continue
                if local and entry.get("islink"):
                    found.skipped.append(
                        Skipped(rel + "/", "ignored", _link_detail(full, real_root))
                    )
                    continue
                subfolders.append(full)
                continue
            if not name.endswith(RUST_SUFFIX):
                continue
            if reason is not None:
                found.skipped.append(Skipped(rel, reason[0], reason[1]))
                continue
            if local and entry.get("islink"):
                found.skipped.append(Skipped(rel, "ignored", _link_detail(full, real_root)))
                continue
            if entry.get("type") != "file":
                found.skipped.append(Skipped(rel, "not-regular", _kind_detail(entry)))
                continue
            found.files.append(
                FileRef(path=rel, url=full, size=int(entry.get("size") or 0), mtime=_mtime(entry))
            )
        # reversed so that the stack pops folders in sorted order
        stack.extend(reversed(subfolders))
        # drop .gitignore specs of folders we have left (stack is depth-first)
        if ignores and stack:
            nxt = "" if stack[-1] == root.path else root.relpath(stack[-1])
            ignores = [(d, s) for d, s in ignores if d == "" or nxt == d or nxt.startswith(d + "/")]
    found.files.sort(key=lambda f: f.path)
    return found


def _is_utf8(name: str) -> bool:
    """Whether a listed name came from valid UTF-8 bytes (Python keeps other bytes as
    lone surrogates, which no encoder, tokenizer or store accepts)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind_detail(entry: dict[str, Any]) -> str:
    """What a listed entry that is neither a file nor a folder is (FIFO, socket...)."""
    mode = entry.get("mode")
    if isinstance(mode, int):
        return _mode_kind(mode) + ": only regular files are read"
    return f"listed as {entry.get('type')!r}: only regular files are read"


def _mode_kind(mode: int) -> str:
    """A stat mode's file kind in words."""
    for test, kind in (
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "Unix socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _link_detail(full: str, real_root: str) -> str:
    """Why a symlink is not followed: it leaves the root, loops, or its target is listed anyway."""
    target = os.path.realpath(full)
    folder = os.path.dirname(full)
    if target == folder or folder.startswith(target.rstrip(os.sep) + os.sep) or (
        not os.path.exists(target) and os.path.islink(target)
    ):
        # realpath stops at a cycle (a -> b -> a) and leaves a link there
        inside = target == real_root or target.startswith(real_root + os.sep)
        shown = os.path.relpath(target, real_root) if inside else target
        return f"symlink to {shown}, the folder it is in or one above it: a loop, not followed"
    if target == real_root or target.startswith(real_root + os.sep):
        rel = os.path.relpath(target, real_root)
        return (
            f"symlink to {rel}, inside the root: indexed at its own path (no loops, no duplicates)"
        )
    return f"symlink to {target}, outside the root"


def _skip_reason(
    rel: str,
    name: str,
    is_dir: bool,
    include_hidden: bool,
    ignores: list[tuple[str, pathspec.GitIgnoreSpec]],
    extra: pathspec.GitIgnoreSpec | None,
    sensitive: bool,
) -> tuple[Any, str] | None:
    """Why a listed entry is skipped, as (reason, detail), or None to keep it."""
    if is_dir and name == "target":
        return "target-dir", "Cargo build output"
    if name.startswith(".") and not include_hidden:
        if sensitive and not is_dir and is_sensitive_name(name):
            return "sensitive", "name looks like a secret"
        return "hidden", "hidden " + ("folder" if is_dir else "file")
    probe = rel + "/" if is_dir else rel
    if extra is not None and extra.match_file(probe):
        return "ignored", "matches --exclude"
    decision: bool | None = None
    source = ""
    for folder, spec in ignores:
        sub = probe[len(folder) + 1 :] if folder else probe
        if folder and not probe.startswith(folder + "/"):
            continue
        result = spec.check_file(sub)
        if result.include is not None:
            decision = result.include
            source = posixpath.join(folder, ".gitignore") if folder else ".gitignore"
    if decision:
        return "ignored", f"matches {source}"
    if not is_dir and sensitive and is_sensitive_name(name):
        return "sensitive", "name looks like a secret"
    return None


def _load_gitignore(fs: Any, path: str) -> pathspec.GitIgnoreSpec | None:
    """Parse one .gitignore; an unreadable one is treated as absent."""
    try:
        text = read_bytes(fs, path, 1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def _mtime(info: dict[str, Any]) -> float | None:
    """Modification time from an fsspec info dict, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, _dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class NotRegularFile(OSError):
    """A local path is a FIFO, socket, device or folder (the message says which)."""

    def __init__(self, kind: str, mode: int = 0) -> None:
        super().__init__(kind)
        self.mode = mode
        """The ``st_mode`` that was found."""


class _HardLinked(OSError):
    """A local regular file with more than one hard link: its other names may lie outside
    the root (``ln ~/.ssh/id_ed25519 src/x.rs``, or ``/etc/passwd``), so it is not read."""

    def __init__(self, links: int) -> None:
        super().__init__(
            f"has {links} hard links, and a hard link can bring in a file from outside the "
            "root; replace it with a plain copy (cp) to index it"
        )


def read_bytes(fs: Any, url: str, limit: int = -1) -> bytes:
    """Up to ``limit`` bytes (all with -1) of a file on ``fs``, never blocking on a local
    FIFO, socket or device: those raise ``OSError`` (see :func:`read_source`, which
    turns that into the ``not-regular`` skip). For readers of files an index already
    lists (code intelligence, crate manifests), which may have been swapped since."""
    if isinstance(fs, LocalFileSystem):
        return _read_local(url, limit)
    with fs.open(url, "rb") as f:
        data: bytes = f.read(limit)
    return data


def _read_local(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of a local regular file, opened by :func:`open_nofollow` (a
    symlink anywhere in the path raises :class:`SymlinkInPath`); raises
    :class:`NotRegularFile` for any other kind without blocking (the file may have been
    swapped for a FIFO since it was listed: opened non-blocking, its kind is checked on
    the open descriptor)."""
    fd = open_nofollow(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(_mode_kind(info.st_mode), info.st_mode)
        if info.st_nlink > 1:
            raise _HardLinked(info.st_nlink)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


def is_sensitive_name(path: str) -> bool:
    """Whether a file name (or a root-relative path) matches :data:`SENSITIVE_NAME_PATTERNS`.

    Examples
    --------
    >>> [is_sensitive_name(p) for p in (".env", "config/id_rsa.pub", "lib.rs")]
    [True, True, False]
    """
    return _SENSITIVE_NAMES.match_file(path)


def sensitive_content(data: bytes) -> str:
    """The label of the first :data:`SENSITIVE_CONTENT_PATTERNS` entry the bytes match,
    else of the first :data:`SENSITIVE_CONTENT_CHECKS` entry that finds a secret ('' when
    none does).

    Examples
    --------
    >>> sensitive_content(b"-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----")
    'private key block'
    >>> sensitive_content(b'if !pem.starts_with(b"-----BEGIN PRIVATE KEY-----") {}')
    ''
    >>> sensitive_content(b'const DB_PASSWORD: &str = "pr0d-Hunter2";')
    'password literal'
    >>> sensitive_content(b'let password = env::var("DB_PASSWORD")?;')
    ''
    """
    for label, pattern in SENSITIVE_CONTENT_PATTERNS:
        if pattern.search(data):
            return label
    lower = data.lower()
    for label, check in SENSITIVE_CONTENT_CHECKS:
        if check(data, lower):
            return label
    return ""


class NotTextError(ValueError):
    """Bytes that :func:`decode_text` refuses: a NUL byte, or not UTF-8."""

    def __init__(self, reason: Literal["binary", "not-utf8"], offset: int, detail: str) -> None:
        super().__init__(detail)
        self.reason: Literal["binary", "not-utf8"] = reason
        """The skip reason: ``binary`` or ``not-utf8``."""
        self.offset = offset
        """Where: the first NUL byte, or the first byte that is not UTF-8."""
        self.detail = detail
        """The skip detail (``NUL byte at offset 12``, ``invalid UTF-8 at byte 7``)."""


def decode_text(data: bytes) -> str:
    """A source file's bytes as text: UTF-8, a leading BOM dropped, no NUL byte.

    Raises
    ------
    NotTextError
        ``binary`` (a NUL byte) or ``not-utf8``, with where.

    Examples
    --------
    >>> decode_text(b"\\xef\\xbb\\xbffn main() {}")
    'fn main() {}'
    >>> decode_text(b"\\x00")
    Traceback (most recent call last):
    rcm_dask.sources.NotTextError: NUL byte at offset 0
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise NotTextError("binary", nul, f"NUL byte at offset {nul}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise NotTextError("not-utf8", e.start, f"invalid UTF-8 at byte {e.start}") from e


def read_source(
    fs: Any,
    ref: FileRef,
    *,
    max_file_size: int = 8 * 1024 * 1024,
    include_sensitive: bool = False,
) -> SourceFile | Skipped:
    """Read and decode one listed file, or say why it is skipped. Never raises for a bad file.

    Parameters
    ----------
    fs
        The root's filesystem (:attr:`SourceRoot.fs`).
    ref
        The file, from :func:`discover_sources`.
    max_file_size
        Bytes; a larger file is skipped as ``too-large`` without reading it whole.
    include_sensitive
        Do not skip files whose content matches :data:`SENSITIVE_CONTENT_PATTERNS`.

    Returns
    -------
    SourceFile or Skipped
        ``Skipped`` reasons: ``too-large``, ``vanished``, ``not-regular`` (a local file
        that turned into a FIFO, socket or device since it was listed: never left
        blocking in ``open``), ``unreadable``, ``binary``, ``not-utf8``, ``sensitive``.

    Examples
    --------
    >>> import fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> fs.pipe("/doc/a.rs", b"fn main() {}")
    >>> read_source(fs, FileRef("a.rs", "/doc/a.rs", 12, None)).text
    'fn main() {}'
    """
    if ref.size > max_file_size:
        return Skipped(ref.path, "too-large", f"{ref.size} bytes > limit {max_file_size}")
    try:
        data = read_bytes(fs, ref.url, max_file_size + 1)
    except NotRegularFile as e:
        return Skipped(ref.path, "not-regular", f"{e}: only regular files are read")
    except _HardLinked as e:
        return Skipped(ref.path, "hard-link", str(e))
    except SymlinkInPath as e:
        return Skipped(
            ref.path,
            "not-regular",
            f"a symlink now stands in its path ({e}), since it was listed: symlinks are "
            "never followed",
        )
    except FileNotFoundError:
        return Skipped(ref.path, "vanished", "deleted after it was listed")
    except (OSError, ValueError) as e:
        return Skipped(ref.path, "unreadable", f"{type(e).__name__}: {e}")
    if len(data) > max_file_size:
        return Skipped(ref.path, "too-large", f"more than {max_file_size} bytes")
    try:
        text = decode_text(data)
    except NotTextError as e:
        return Skipped(ref.path, e.reason, e.detail)
    label = "" if include_sensitive else sensitive_content(data)
    if label:
        article = "an" if label[0] in "AEIOU" else "a"
        return Skipped(ref.path, "sensitive", f"content holds {article} {label}")
    return SourceFile(
        path=ref.path,
        size=len(data),
        mtime=ref.mtime,
        sha256=hashlib.sha256(data).hexdigest(),
        text=text,
    )
