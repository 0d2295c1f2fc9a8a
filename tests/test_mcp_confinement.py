"""The MCP server goes only where the user allowed it, whatever the agent asks (issue 14).

Each finding is replayed against a real ``rcm-dask mcp`` process driven by the ``mcp``
package's own client over stdio; the policy itself (:mod:`rcm_dask.roots`) is checked on
plain paths first.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from rcm_dask.errors import ConfigError
from rcm_dask.roots import ENV_VAR, AllowedRoots, RootNotAllowedError, roots_from_uris

from . import REPO
from .test_mcp import call, http_session, refused, stdio_session, wait_ready

RUST = "pub fn visible() -> u32 {\n    42\n}\n"
SECRET_WORDS = ("hunter2", "sk_live_", "s3cr3t-db", "root:x:0", "VmRSS", "not for agents")


def assert_refused_by_roots(message: str) -> None:
    """A refusal that names the setting only the user controls, and leaks nothing."""
    assert "--root" in message and ENV_VAR in message, message
    assert not any(word in message for word in SECRET_WORDS), message


# --------------------------------------------------------------------------- the policy


def test_the_user_setting_decides_and_option_beats_variable(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    env = {ENV_VAR: os.pathsep.join([str(a), "", str(b)])}
    assert AllowedRoots.from_settings(environ=env).paths == (str(a), str(b))
    assert AllowedRoots.from_settings([str(c)], environ=env).paths == (str(c),)
    assert AllowedRoots.from_settings(environ={}, cwd=str(c)).paths == (str(c),)
    # nested roots collapse into the outer one; relative ones are taken from cwd
    assert AllowedRoots.from_settings(["a", str(a / ".")], cwd=str(tmp_path)).paths == (str(a),)
    with pytest.raises(ConfigError, match="does not exist"):
        AllowedRoots.from_settings([str(tmp_path / "missing")])


def test_root_and_home_are_never_implicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for cwd in ("/", str(tmp_path)):
        nothing = AllowedRoots.from_settings(environ={}, cwd=cwd)
        assert nothing.paths == ()
        with pytest.raises(RootNotAllowedError) as e:
            nothing.check(str(tmp_path / "x"))
        assert "--root" in str(e.value) and ENV_VAR in str(e.value)
    # named explicitly, / is the user's choice
    assert AllowedRoots.from_settings(["/"]).paths == ("/",)
    assert AllowedRoots.from_settings(environ={ENV_VAR: "/"}).contains("/etc/shadow")


def test_check_compares_real_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to("/etc")
    (tmp_path / "root-sibling").mkdir()
    allowed = AllowedRoots.from_settings([str(root)])
    assert allowed.check(str(root / "src" / "lib.rs")) == str(root / "src" / "lib.rs")
    for bad in (root / "etc" / "shadow", tmp_path / "root-sibling", root / ".." / "x", Path("/")):
        with pytest.raises(RootNotAllowedError, match="--root"):
            allowed.check(str(bad))


def test_client_roots_narrow_and_never_widen(tmp_path: Path) -> None:
    user = AllowedRoots((str(tmp_path),), "--root")
    inner = tmp_path / "ws"
    assert user.narrowed([inner.as_uri()]).paths == (str(inner),)
    # a client root wider than the user's is cut down to the user's
    assert user.narrowed(["file:///"]).paths == (str(tmp_path),)
    outside = user.narrowed(["file:///etc", "https://example.com/"])
    assert outside.paths == () and "/etc" in outside.note and "--root" in outside.note
    assert user.narrowed([]) == user
    assert roots_from_uris(["file://localhost/usr", "file://evil/usr", "s3://b/k"]) == ["/usr"]


def test_cli_refuses_a_root_that_does_not_exist(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rcm_dask.cli import main

    result = CliRunner().invoke(main, ["mcp", "--root", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "--root" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- the server


@pytest.fixture
def env(isolated_home: Path) -> dict[str, str]:
    """The server's environment: its own index home and nothing else (no RCM_MCP_ROOTS)."""
    return {"RCM_HOME": str(isolated_home), "PATH": os.environ.get("PATH", "")}


def test_directory_argument_no_longer_makes_any_folder_a_root(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Finding 1: read_file_content(file="shadow", directory="/etc") on a server that has
    indexed nothing returned /etc/shadow; directory="/" or "/root" read anything."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "etc").symlink_to("/etc")

    async def scenario() -> None:
        async with stdio_session(env, tmp_path / "server.log", [allowed]) as session:
            for file, directory in [
                ("shadow", "/etc"),
                ("passwd", "/etc"),
                ("etc/passwd", "/"),
                ("proc/self/status", "/"),
                (".bashrc", "/root"),
                ("status", "/proc/self"),
                ("passwd", str(allowed / "etc")),  # a symlink inside the root
                ("passwd", f"file://{allowed}/etc"),
            ]:
                for tool in ("read_file_content", "get_dependencies", "analyze_complexity"):
                    assert_refused_by_roots(
                        await refused(session, tool, file=file, directory=directory)
                    )
            for file in ("/etc/passwd", "/proc/self/status", str(allowed / "etc" / "passwd")):
                assert_refused_by_roots(await refused(session, "read_file_content", file=file))
            for directory in ("/etc", "/", "/root", str(allowed / "etc"), str(tmp_path)):
                assert_refused_by_roots(
                    await refused(session, "index_codebase", directory=directory)
                )
                assert_refused_by_roots(await refused(session, "index_status", directory=directory))
                assert_refused_by_roots(
                    await refused(session, "search", query="root", directory=directory)
                )
                for tool in ("find_definition", "find_references", "get_call_graph"):
                    assert_refused_by_roots(
                        await refused(session, tool, symbol="main", directory=directory)
                    )
                assert_refused_by_roots(
                    await refused(
                        session, "get_similar_code", code_or_symbol="main", directory=directory
                    )
                )
            # a missing folder outside is refused as outside: nothing is probed there
            assert_refused_by_roots(
                await refused(session, "index_status", directory="/no/such/folder")
            )
            assert "does not exist" in await refused(
                session, "index_status", directory=str(allowed / "missing")
            )
            status, _ = await call(session, "index_status", directory=str(allowed))
            assert status["state"] == "not_indexed"

    anyio.run(scenario)


def test_root_folder_needs_the_user_and_env_var_and_cwd_default(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Finding 2 (index_codebase("/") was accepted); where the roots come from."""
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    for d in (one, two, other):
        d.mkdir()

    async def scenario() -> None:
        # started in / with no root: nothing at all is allowed, and the message says how
        async with stdio_session(env, tmp_path / "slash.log", cwd=Path("/")) as session:
            for directory in ("/", str(one)):
                assert_refused_by_roots(
                    await refused(session, "index_codebase", directory=directory)
                )
            assert_refused_by_roots(await refused(session, "read_file_content", file="etc/passwd"))
        # RCM_MCP_ROOTS lists several folders
        listed = {**env, ENV_VAR: os.pathsep.join([str(one), str(two)])}
        async with stdio_session(listed, tmp_path / "env.log") as session:
            for d in (one, two):
                status, _ = await call(session, "index_status", directory=str(d))
                assert status["state"] == "not_indexed"
            message = await refused(session, "index_status", directory=str(other))
            assert_refused_by_roots(message)
            assert ENV_VAR in message.split("only the user")[0]  # names where they came from
            assert_refused_by_roots(await refused(session, "index_codebase", directory="/"))
        # no setting: the working directory the server was started in
        async with stdio_session(env, tmp_path / "cwd.log", cwd=one) as session:
            status, _ = await call(session, "index_status", directory=str(one))
            assert status["state"] == "not_indexed"
            assert_refused_by_roots(await refused(session, "index_status", directory=str(two)))

    anyio.run(scenario)


def test_client_roots_narrow_the_server(tmp_path: Path, env: dict[str, str]) -> None:
    """A client offering roots narrows the user's; it can never widen them."""
    ws, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    ws.mkdir()
    elsewhere.mkdir()
    offered = [ws.as_uri(), "file:///"]

    async def list_roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in offered])

    async def scenario() -> None:
        async with stdio_session(
            env, tmp_path / "server.log", [tmp_path], list_roots_callback=list_roots
        ) as session:
            status, _ = await call(session, "index_status", directory=str(ws))
            assert status["state"] == "not_indexed"
            assert_refused_by_roots(await refused(session, "index_status", directory="/etc"))
            offered[:] = [ws.as_uri()]  # asked again on every call
            message = await refused(session, "index_status", directory=str(elsewhere))
            assert_refused_by_roots(message)
            assert "client" in message
            offered[:] = ["file:///etc"]
            message = await refused(session, "index_status", directory=str(ws))
            assert_refused_by_roots(message)
            assert "/etc" in message and "lie outside" in message

    anyio.run(scenario)


def write_codebase(root: Path) -> None:
    """A crate, a second crate in a subfolder, and the files an attacker would want."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "lib.rs").write_text(RUST)
    (root / "Cargo.toml").write_text('[package]\nname = "demo"\nversion = "0.1.0"\n')
    (root / "README.md").write_text("# demo\n")
    (root / "config.yaml").write_text("database:\n  password: hunter2\n")
    (root / "deploy.sh").write_text("export STRIPE_KEY=sk_live_51HqLyjWDarjtT1zdp7dcXYZ\n")
    (root / "notes.txt").write_text("db_password=s3cr3t-db\n")
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("not a crate folder: hunter2\n")
    (root / "sub" / "src").mkdir(parents=True)
    (root / "sub" / "Cargo.toml").write_text('[package]\nname = "sub"\nversion = "0.1.0"\n')
    (root / "sub" / "README").write_text("the sub crate\n")
    (root / "sub" / "src" / "lib.rs").write_text(RUST)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.rs").write_text("// not for agents\n")


async def start_keyword_index(session: Any, code: Path) -> tuple[dict[str, Any], str]:
    """Start a sequential keyword-only index of ``code``, not waiting for it to finish."""
    return await call(
        session,
        "index_codebase",
        directory=str(code),
        mode="sequential",
        vectors="none",
        wait_seconds=0,
    )


def test_failed_or_unfinished_index_runs_make_nothing_readable(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Finding 2: a failed index_codebase("/etc") ("No .rs files found") still registered
    /etc as readable, and so did a run still going."""
    allowed = tmp_path / "allowed"
    etc_like = allowed / "etc"
    etc_like.mkdir(parents=True)
    (etc_like / "shadow").write_text("root:x:0:0:hunter2\n")
    code = allowed / "code"
    write_codebase(code)

    async def scenario() -> None:
        async with stdio_session(env, tmp_path / "server.log", [allowed]) as session:
            failed = await refused(session, "index_codebase", directory=str(etc_like))
            assert "No .rs files found" in failed
            for args in (
                {"file": "shadow"},
                {"file": str(etc_like / "shadow")},
                {"file": "shadow", "directory": str(etc_like)},
            ):
                message = await refused(session, "read_file_content", **args)
                assert "index" in message and "hunter2" not in message, message

            # while the first run of a folder is going, nothing of it is readable
            started, _ = await start_keyword_index(session, code)
            assert started["state"] == "indexing"  # the child is still importing
            for args in (
                {"file": "src/lib.rs"},
                {"file": str(code / "src" / "lib.rs")},
                {"file": "README.md", "directory": str(code)},
            ):
                message = await refused(session, "read_file_content", **args)
                assert "indexed" in message, message
                assert "visible" not in message and "# demo" not in message
            await wait_ready(session, str(code))
            # committed now: readable; the failed folder stays unreadable next to it
            got, _ = await call(session, "read_file_content", file="src/lib.rs")
            assert got["content"] == RUST
            assert "outside the indexed root" in await refused(
                session, "read_file_content", file=str(etc_like / "shadow")
            )

    anyio.run(scenario)


def test_read_file_content_returns_only_what_the_index_covers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Finding 3: inside an indexed root every file not named like a secret was returned
    (config.yaml with a password, deploy.sh with an sk_live_ key, notes.txt...)."""
    code = tmp_path / "code"
    write_codebase(code)

    async def scenario() -> None:
        async with stdio_session(env, tmp_path / "server.log", [tmp_path]) as session:
            done, text = await start_keyword_index(session, code)
            status = await wait_ready(session, str(code))
            assert status["files"] == 2 and status["vectors"] == "none", text

            # what the index covers, and the crates' Cargo.toml and README files
            for file, starts in [
                ("src/lib.rs", "pub fn visible"),
                (str(code / "sub" / "src" / "lib.rs"), "pub fn visible"),
                ("Cargo.toml", "[package]"),
                ("README.md", "# demo"),
                ("sub/Cargo.toml", "[package]"),
                ("sub/README", "the sub crate"),
            ]:
                got, _ = await call(session, "read_file_content", file=file)
                assert got["content"].startswith(starts), file

            # nothing else, however harmless its name
            (code / "src" / "new.rs").write_text(RUST)  # not indexed yet
            for file in (
                "config.yaml",
                "deploy.sh",
                "notes.txt",
                "docs/README.md",
                ".hidden/x.rs",
                "src/new.rs",
                str(code / "config.yaml"),
            ):
                message = await refused(session, "read_file_content", file=file)
                assert "covers" in message, (file, message)
                assert not any(w in message for w in SECRET_WORDS), message
            # the secret scan still applies to the files that are covered
            (code / "README.md").write_text(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
            )
            assert "private key" in await refused(session, "read_file_content", file="README.md")

    anyio.run(scenario)


# --------------------------------------------------------------------------- issue 23, item 1

OUTSIDE_RUST = 'pub const KEY: &str = "not for agents";\n'


def test_hard_links_and_files_changed_since_indexing_are_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Item 1 of issue 23: ``ln ~/secret src/x.rs`` before indexing, or replacing an indexed
    file by a hard link after it, made read_file_content return a file from outside the
    root; an indexed file edited since was returned as it is now, not as indexed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.rs").write_text(OUTSIDE_RUST)
    (outside / "notes").write_text("db_password=s3cr3t-db\n")
    code = tmp_path / "code"
    write_codebase(code)
    os.link(outside / "secret.rs", code / "src" / "linked.rs")  # before indexing
    (code / "README.md").unlink()
    os.link(outside / "notes", code / "README.md")
    sub_lib = code / "sub" / "src" / "lib.rs"

    async def scenario() -> None:
        async with stdio_session(env, tmp_path / "server.log", [code]) as session:
            await start_keyword_index(session, code)
            await wait_ready(session, str(code))
            got, _ = await call(session, "read_file_content", file="src/lib.rs")
            assert got["content"] == RUST

            # a hard link made before indexing: refused whether the indexer took it
            # (refused here for its links) or skipped it (then the index does not cover it)
            message = await refused(session, "read_file_content", file="src/linked.rs")
            assert "hard link" in message or "covers" in message, message
            message = await refused(session, "read_file_content", file="README.md")
            assert "2 hard links" in message, message
            assert "outside the indexed root" in message

            # an indexed file replaced by a hard link after indexing
            (code / "src" / "lib.rs").unlink()
            os.link(outside / "secret.rs", code / "src" / "lib.rs")
            message = await refused(session, "read_file_content", file="src/lib.rs")
            assert "hard links" in message, message

            # edited since: same size, other bytes; then longer
            sub_lib.write_text(RUST.replace("42", "43"))
            message = await refused(session, "read_file_content", file=str(sub_lib))
            assert "re-index first" in message and "content is not what was indexed" in message
            assert "index_codebase" in message, message
            # the same bytes again, only the modification time moved: what was indexed
            sub_lib.write_text(RUST)
            os.utime(sub_lib, (1_000_000_000, 1_000_000_000))
            got, _ = await call(session, "read_file_content", file=str(sub_lib))
            assert got["content"] == RUST
            sub_lib.write_text(RUST + "// more\n")
            message = await refused(session, "read_file_content", file="sub/src/lib.rs")
            assert "re-index first" in message, message
            assert f"{len(RUST) + 8} bytes now, {len(RUST)} when indexed" in message, message

            # after a run, the edited file reads as it is; the hard links stay refused
            await start_keyword_index(session, code)
            await wait_ready(session, str(code))
            got, _ = await call(session, "read_file_content", file="sub/src/lib.rs")
            assert got["content"] == RUST + "// more\n"
            for file in ("src/lib.rs", "src/linked.rs", "README.md"):
                message = await refused(session, "read_file_content", file=file)
                assert not any(w in message for w in SECRET_WORDS), message

    anyio.run(scenario)


def _swap_symlinked_folder(root: Path, outside: Path) -> None:
    """``root/sub`` becomes a symlink to ``outside`` (which has a Cargo.toml)."""
    (root / "sub").rename(root / "sub-was")
    (root / "sub").symlink_to(outside, target_is_directory=True)


def _swap_symlinked_file(root: Path, outside: Path) -> None:
    """``root/sub/Cargo.toml`` becomes a symlink to the one outside."""
    (root / "sub" / "Cargo.toml").unlink()
    (root / "sub" / "Cargo.toml").symlink_to(outside / "Cargo.toml")


def _swap_fifo(root: Path, outside: Path) -> None:
    """``root/sub/Cargo.toml`` becomes a FIFO nobody writes to (reading it would block)."""
    (root / "sub" / "Cargo.toml").unlink()
    os.mkfifo(root / "sub" / "Cargo.toml")


def _swap_hard_link(root: Path, outside: Path) -> None:
    """``root/sub/Cargo.toml`` becomes a hard link to the one outside."""
    (root / "sub" / "Cargo.toml").unlink()
    os.link(outside / "Cargo.toml", root / "sub" / "Cargo.toml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize(
    ("swap", "expected"),
    [
        (_swap_symlinked_folder, "a symlink now stands in it"),
        (_swap_symlinked_file, "is a symlink"),
        (_swap_fifo, "not a regular file"),
        (_swap_hard_link, "2 hard links"),
    ],
)
def test_read_file_judges_the_file_it_opened(tmp_path: Path, swap: Any, expected: str) -> None:
    """What is swapped in between locate_file's checks and the read is never read: the
    path is opened once, without following symlinks, and judged from its descriptor."""
    from rcm_dask.errors import SourceError
    from rcm_dask.mcp_server.sandbox import Located, read_file

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "Cargo.toml").write_text('[package]\nname = "sub"\n')
    outside.mkdir()
    (outside / "Cargo.toml").write_text('[package]\nname = "x"\npassword = "hunter2"\n')
    where = Located(
        root=str(root),
        index_dir=tmp_path / "no-index",  # no manifest: Cargo.toml is read without one
        rel="sub/Cargo.toml",
        real=root / "sub" / "Cargo.toml",
    )
    assert read_file(where, "sub/Cargo.toml", None, None, 1000).content.startswith("[package]")
    swap(root, outside)
    with pytest.raises(SourceError) as e:
        read_file(where, "sub/Cargo.toml", None, None, 1000)
    assert expected in str(e.value), str(e.value)
    assert "hunter2" not in str(e.value)


# --------------------------------------------------------------------------- issue 23, item 6

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


@contextlib.contextmanager
def http_server(
    env: dict[str, str], log: Path, roots: Sequence[Path], *args: str
) -> Iterator[tuple[str, int]]:
    """``python -m rcm_dask mcp --http --port 0 --root R... ARGS`` as a subprocess: its
    URL and port, read from the address it prints on stderr."""
    cmd = [sys.executable, "-m", "rcm_dask", "mcp", "--http", "--port", "0", *args]
    for root in roots:
        cmd += ["--root", str(root)]
    with log.open("w") as errlog:
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(REPO), stdin=subprocess.DEVNULL, stderr=errlog
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/mcp", log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield found.group(0), int(found.group(1))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


async def http_status(url: str, token: str, directory: Path) -> str:
    """The SDK's own client over HTTP, sending ``token``: index_status's state."""
    async with http_session(url, token) as session:
        status, _ = await call(session, "index_status", directory=str(directory))
        return str(status["state"])


def test_http_needs_the_token_and_its_own_address(tmp_path: Path, env: dict[str, str]) -> None:
    """Item 6 of issue 23: the HTTP transport took any request from any local process, and
    an Origin of another localhost port (a page served there) was accepted."""
    log = tmp_path / "http.log"
    with http_server(env, log, [tmp_path]) as (url, port):
        printed = log.read_text()
        token = re.search(r"generated for this run: (\S+)", printed)
        assert token is not None, printed
        token = token.group(1)
        assert len(token) >= 43 and "Authorization: Bearer <token>" in printed

        def post(**headers: str) -> httpx2.Response:
            accept = {"accept": "application/json, text/event-stream"}
            return httpx2.post(url, json=INITIALIZE, headers={**accept, **headers}, timeout=30)

        bearer = f"Bearer {token}"
        for headers, why in [
            ({}, "requires a bearer token"),
            ({"Authorization": f"Bearer {token[:-1]}{'x' if token[-1] != 'x' else 'y'}"}, "wrong"),
            ({"Authorization": "Bearer"}, "wrong"),
            ({"Authorization": f"Basic {token}"}, "not one bearer token"),
            ({"Authorization": token}, "not one bearer token"),
        ]:
            answer = post(**headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer ")
            description = answer.json()["error_description"]
            assert why in description and "Authorization: Bearer <token>" in description
            assert "RCM_MCP_TOKEN" in description and token not in answer.text
        # the right token, from a page of another origin or through a rebound host name
        for origin in (f"http://localhost:{port + 1}", f"http://127.0.0.1:{port + 1}"):
            assert post(Authorization=bearer, Origin=origin).status_code == 403
        assert post(Authorization=bearer, Origin="http://evil.example").status_code == 403
        assert post(Authorization=bearer, Host=f"localhost:{port + 1}").status_code == 421
        assert post(Authorization=bearer, Host=f"evil.example:{port}").status_code == 421
        # the server's own origin, spelled either way
        assert post(Authorization=bearer, Origin=f"http://localhost:{port}").status_code == 200
        assert post(Authorization=f"bearer {token}").status_code == 200  # the scheme: any case
        # the SDK's client: works with the token, fails without
        assert anyio.run(http_status, url, token, tmp_path) == "not_indexed"
        with pytest.raises(Exception) as refused_client:  # an ExceptionGroup
            anyio.run(http_status, url, "not-the-token-at-all", tmp_path)
        assert refused_client.group_contains(MCPError), repr(refused_client.value)
    assert log.read_text().count(token) == 1  # the startup line only

    # a token of the user's (RCM_MCP_TOKEN) is not printed, and is the one required
    mine = secrets.token_urlsafe(24)
    log = tmp_path / "mine.log"
    with http_server({**env, "RCM_MCP_TOKEN": mine}, log, [tmp_path]) as (url, _):
        assert anyio.run(http_status, url, mine, tmp_path) == "not_indexed"
        answer = httpx2.post(url, json=INITIALIZE, headers={"Authorization": bearer}, timeout=30)
        assert answer.status_code == 401
    assert mine not in log.read_text() and "RCM_MCP_TOKEN" in log.read_text()


def test_a_token_of_the_user_must_be_a_strong_bearer_token(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rcm_dask.cli import main
    from rcm_dask.mcp_server.guard import TOKEN_ENV, resolve_token

    assert resolve_token("  correct-horse-battery-staple ", {}) == (
        "correct-horse-battery-staple",
        False,
    )
    assert resolve_token(None, {TOKEN_ENV: "from-the-environment-0123"}) == (
        "from-the-environment-0123",
        False,
    )
    assert resolve_token("", {TOKEN_ENV: "  "})[1] is True  # blank: generated
    first, second = resolve_token(None, {})[0], resolve_token(None, {})[0]
    assert first != second and len(first) == 43
    for bad, why in [("short", "at least 16"), ("has spaces in the token", "characters")]:
        with pytest.raises(ConfigError, match=why) as e:
            resolve_token(bad, {})
        assert bad not in str(e.value)
        result = CliRunner().invoke(
            main, ["mcp", "--http", "--root", str(tmp_path)], env={TOKEN_ENV: bad}
        )
        assert result.exit_code == 1 and why in result.output, result.output
        assert TOKEN_ENV in result.output and "Traceback" not in result.output
