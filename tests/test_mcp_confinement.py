"""The MCP server goes only where the user allowed it, whatever the agent asks (issue 14).

Each finding is replayed against a real ``rcm-dask mcp`` process driven by the ``mcp``
package's own client over stdio; the policy itself (:mod:`rcm_dask.roots`) is checked on
plain paths first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest

from rcm_dask.errors import ConfigError
from rcm_dask.roots import ENV_VAR, AllowedRoots, RootNotAllowedError, roots_from_uris

from .test_mcp import call, refused, stdio_session, wait_ready

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
