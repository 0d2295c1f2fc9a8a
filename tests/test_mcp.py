"""The MCP server as agents meet it: a real ``rcm-dask mcp`` process driven by the ``mcp``
package's own client (stdio, and streamable HTTP once), on a slice of rust-src.

Every answer checked here comes from a real index built through ``index_codebase`` (a child
process running the pipeline mode on a real LocalCluster, with a tiny real model).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from rcm_dask.config import default_index_dir
from rcm_dask.stores.lock import IndexLock

from . import REPO

COLLECTIONS = [
    "mod.rs",
    "btree/mem.rs",
    "btree/dedup_sorted_iter.rs",
    "btree/borrow.rs",
    "btree/split.rs",
    "btree/merge_iter.rs",
    "btree/append.rs",
    "vec_deque/ring_slices.rs",
    "vec_deque/drain.rs",
]
"""Small files of alloc/src/collections (25 KB together), at their paths under src/."""

TOOLS = {
    "index_codebase",
    "index_status",
    "search",
    "get_similar_code",
    "find_definition",
    "find_references",
    "get_call_graph",
    "get_dependencies",
    "analyze_complexity",
    "read_file_content",
    "health_check",
}

POLL_SECONDS = 240.0


@pytest.fixture
def crate(tmp_path: Path, rust_src: Path) -> Path:
    """A codebase of rust-src files plus things the server must refuse to read."""
    root = tmp_path / "crate"
    src = rust_src / "library" / "alloc" / "src" / "collections"
    for rel in COLLECTIONS:
        dest = root / "src" / "collections" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dest)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.rs").write_text('pub const TOKEN: &str = "not for agents";\n')
    (root / "src" / "escape.rs").symlink_to(outside / "secret.rs")
    (root / ".env").write_text("API_TOKEN=hunter2\n")
    (root / "notes.txt").write_text(
        "deploy key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    (root / "README.md").write_text("# crate\n\nA slice of alloc.\n")
    return root


@pytest.fixture
def server_env(isolated_home: Path, tiny_model: Path) -> dict[str, str]:
    """Environment of the server process: its own index home, the tiny model."""
    return {
        "RCM_HOME": str(isolated_home),
        "RCM_MODEL": str(tiny_model),
        # whole items as chunks (the tiny model allows 512 positions): fewer, stable hits
        "RCM_MAX_TOKENS": "512",
        "RCM_N_WORKERS": "1",
    }


@contextlib.asynccontextmanager
async def stdio_session(
    env: dict[str, str],
    log: Path,
    roots: Sequence[Path] = (),
    cwd: Path = REPO,
    **client: Any,
) -> AsyncIterator[ClientSession]:
    """``python -m rcm_dask mcp --root R...`` as a subprocess started in ``cwd``, with an
    initialised client session (``client``: more ClientSession arguments)."""
    args = ["-m", "rcm_dask", "mcp"]
    for root in roots:
        args += ["--root", str(root)]
    params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(cwd))
    with log.open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, **client) as session,
        ):
            await session.initialize()
            yield session


@contextlib.asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """The SDK's own client over streamable HTTP to ``url``, sending ``token`` as the
    bearer token, initialised."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[dict[str, Any], str]:
    """Call a tool that must succeed: its structured content and its text."""
    result = await session.call_tool(tool, args)
    text = "\n".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, f"{tool}({args}) failed: {text}"
    assert result.structured_content is not None, f"{tool} gave no structured content"
    return result.structured_content, text


async def refused(session: ClientSession, tool: str, **args: Any) -> str:
    """Call a tool that must answer with a tool error; its message."""
    result = await session.call_tool(tool, args)
    text = "\n".join(getattr(c, "text", "") for c in result.content)
    assert result.is_error, f"{tool}({args}) should have been refused, got: {text}"
    return text


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line of a file that contains ``needle``."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


async def wait_ready(session: ClientSession, directory: str) -> dict[str, Any]:
    """Poll index_status until the index is ready; every state seen must be a real one."""
    deadline = time.monotonic() + POLL_SECONDS
    seen = []
    while True:
        status, _ = await call(session, "index_status", directory=directory)
        seen.append(status["state"])
        assert status["state"] in ("indexing", "ready"), status
        if status["state"] == "ready":
            return status
        # while indexing, "ready" is never claimed and search agrees with searchable
        assert status["run"] is not None or status["writer"]
        assert time.monotonic() < deadline, f"not ready after {POLL_SECONDS} s: {seen[-3:]}"
        await anyio.sleep(0.5)


def test_tools_are_listed_with_schemas_and_bad_input_is_refused(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    empty = tmp_path / "no-rust"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to index\n")

    async def scenario() -> None:
        async with stdio_session(server_env, tmp_path / "server.log", [tmp_path]) as session:
            listed = (await session.list_tools()).tools
            by_name = {t.name: t for t in listed}
            assert set(by_name) == TOOLS
            for tool in listed:
                assert tool.description and tool.output_schema, tool.name
                assert tool.input_schema["type"] == "object"
            search = by_name["search"].input_schema
            assert set(search["required"]) == {"query", "directory"}
            assert search["properties"]["mode"]["enum"] == ["hybrid", "bm25", "vector"]
            assert search["properties"]["limit"]["default"] == 10
            index = by_name["index_codebase"].input_schema
            assert index["required"] == ["directory"]
            assert index["properties"]["mode"]["default"] == "pipeline"
            assert index["properties"]["force"]["default"] is False
            assert index["properties"]["wait_seconds"]["minimum"] == 0
            vectors = index["properties"]["vectors"]
            assert vectors["default"] is None and "keyword-only" in vectors["description"]
            assert {"enum": ["qdrant", "none"], "type": "string"} in vectors["anyOf"]
            assert by_name["read_file_content"].input_schema["required"] == ["file"]
            assert by_name["health_check"].input_schema.get("required", []) == []

            missing = str(tmp_path / "missing")
            assert "does not exist" in await refused(
                session, "search", query="x", directory=missing
            )
            assert "does not exist" in await refused(session, "index_status", directory=missing)
            never = await refused(session, "search", query="push", directory=str(empty))
            assert "not indexed yet" in never and "index_codebase" in never
            status, text = await call(session, "index_status", directory=str(empty))
            assert status["state"] == "not_indexed" and not status["searchable"]
            assert "not_indexed" in text
            assert "no codebase is indexed" in await refused(
                session, "read_file_content", file="src/lib.rs"
            )
            # arguments outside the input schema are refused before any work
            assert "mode" in await refused(
                session, "search", query="x", directory=str(empty), mode="fuzzy"
            )
            assert "limit" in await refused(
                session, "search", query="x", directory=str(empty), limit=0
            )

            # a run that fails at once answers with its reason, and the state says failed
            failed = await refused(session, "index_codebase", directory=str(empty))
            assert "No .rs files found" in failed
            status, _ = await call(session, "index_status", directory=str(empty))
            assert status["state"] == "failed" and "No .rs files" in status["error"]
            assert not status["searchable"]
            # still serving after every refusal
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS

    anyio.run(scenario)


@pytest.mark.slow
def test_index_through_the_server_then_every_tool_answers(
    tmp_path: Path, crate: Path, server_env: dict[str, str]
) -> None:
    root = str(crate)
    collections = crate / "src" / "collections"
    mem = collections / "btree" / "mem.rs"
    take_mut_line = line_of(mem, "pub fn take_mut")
    replace_line = line_of(mem, "pub fn replace")
    log = tmp_path / "server.log"

    async def scenario() -> None:
        async with stdio_session(server_env, log, [tmp_path]) as session:
            started, text = await call(session, "index_codebase", directory=root, wait_seconds=0)
            assert started["state"] == "indexing" and started["run_id"], text
            assert "poll index_status" in text
            again, _ = await call(session, "index_codebase", directory=root, wait_seconds=0)
            assert again["run_id"] == started["run_id"]  # the same run, not a second one
            # search never answers before the first commit, in step with the status
            early = await session.call_tool("search", {"query": "take_mut", "directory": root})
            status, _ = await call(session, "index_status", directory=root)
            if not status["searchable"]:
                assert early.is_error or status["state"] == "ready"

            status = await wait_ready(session, root)
            assert status["files"] == len(COLLECTIONS)
            assert status["chunks"] > 50
            assert status["identity"]["dimensions"] == 32
            assert status["identity"]["root"] == root
            assert status["last_run"]["mode"] == "pipeline"
            assert status["last_run"]["stage_seconds"]["embed"] > 0
            assert status["run"]["state"] == "ready"
            assert status["run"]["stats"]["files_indexed"] == len(COLLECTIONS)

            # a re-run finds nothing changed and answers with its final stats (waited for:
            # on a loaded machine the child's imports alone can outlast the default 5 s)
            rerun, text = await call(session, "index_codebase", directory=root, wait_seconds=120)
            assert rerun["state"] == "ready", text
            assert rerun["stats"]["files_unchanged"] == len(COLLECTIONS)
            assert rerun["stats"]["files_indexed"] == 0

            # search: hits point at the real file and lines
            found, text = await call(
                session, "search", query="take_mut", directory=root, mode="bm25", limit=3
            )
            top = found["hits"][0]
            assert top["name"] == "take_mut" and top["path"] == "src/collections/btree/mem.rs"
            assert top["start_line"] <= take_mut_line <= top["end_line"]
            assert f"src/collections/btree/mem.rs:{top['start_line']}" in text
            assert found["directory"] == root and found["notices"] == []
            hybrid, _ = await call(
                session,
                "search",
                query="replace the value behind a unique reference",
                directory=root,
                kind="function",
                path_glob="src/collections/btree/**",
            )
            assert hybrid["mode"] == "hybrid" and hybrid["hits"]
            assert {h["kind"] for h in hybrid["hits"]} == {"function"}
            assert all(h["path"].startswith("src/collections/btree/") for h in hybrid["hits"])
            assert any(h["name"] in ("replace", "take_mut") for h in hybrid["hits"])
            vector, _ = await call(
                session, "search", query="ring buffer slices", directory=root, mode="vector"
            )
            assert vector["mode"] == "vector" and len(vector["hits"]) == 10
            assert all(h["vector_rank"] is not None for h in vector["hits"])
            assert "unknown kind" in await refused(
                session, "search", query="x", directory=root, kind="closure"
            )
            # one entry per file, each with its best items (which files to read)
            files, text = await call(
                session, "search", query="take_mut", directory=root, group="file", limit=3
            )
            assert files["files"][0]["path"] == "src/collections/btree/mem.rs"
            assert files["files"][0]["hits"][0]["name"] == "take_mut"
            paths = [f["path"] for f in files["files"]]
            assert len(paths) == len(set(paths)) <= 3
            assert text.splitlines()[1].startswith(" 1. src/collections/btree/mem.rs")

            # similar code: a symbol (its own item left out) and a fragment
            similar, text = await call(
                session, "get_similar_code", code_or_symbol="take_mut", directory=root, limit=5
            )
            assert similar["source"]["name"] == "take_mut"
            assert similar["source"]["path"] == "src/collections/btree/mem.rs"
            assert len(similar["hits"]) == 5
            assert all(
                not (h["path"] == similar["source"]["path"] and h["name"] == "take_mut")
                for h in similar["hits"]
            )
            fragment, _ = await call(
                session,
                "get_similar_code",
                code_or_symbol="fn len(&self) -> usize { self.a.len() + self.b.len() }",
                directory=root,
                limit=4,
            )
            assert fragment["source"] is None and len(fragment["hits"]) == 4

            # read_file_content: the right lines, numbered
            part, text = await call(
                session,
                "read_file_content",
                file="src/collections/btree/mem.rs",
                start_line=replace_line,
                end_line=replace_line + 2,
            )
            want = mem.read_text().splitlines(keepends=True)[replace_line - 1 : replace_line + 2]
            assert part["content"] == "".join(want)
            assert part["start_line"] == replace_line and part["end_line"] == replace_line + 2
            assert part["total_lines"] == len(mem.read_text().splitlines())
            assert f"{replace_line} | pub fn replace" in text
            whole, _ = await call(session, "read_file_content", file=str(mem))
            assert whole["content"] == mem.read_text() and not whole["truncated"]
            readme, _ = await call(session, "read_file_content", file="README.md", directory=root)
            assert readme["content"].startswith("# crate")

            # refusals: each a tool error with a clear message
            for bad, why in [
                ("../outside/secret.rs", "'..' is not allowed"),
                ("src/../../outside/secret.rs", "'..' is not allowed"),
                (str(tmp_path / "outside" / "secret.rs"), "outside the indexed root"),
                ("/etc/passwd", "outside the folders this server may use"),
                ("src/escape.rs", "symlink"),
                (str(crate / "src" / "escape.rs"), "symlink"),
                (".env", "looks like a secret"),
                ("notes.txt", "covers"),
                ("src/nowhere.rs", "not in any indexed root"),
            ]:
                message = await refused(session, "read_file_content", file=bad)
                assert why in message, (bad, message)
                assert "not for agents" not in message and "hunter2" not in message
            assert "past the end" in await refused(
                session, "read_file_content", file=str(mem), start_line=10_000
            )
            never = tmp_path / "never"
            never.mkdir()
            assert "not indexed yet" in await refused(
                session, "search", query="take_mut", directory=str(never)
            )
            assert "does not exist" in await refused(
                session, "find_definition", symbol="x", directory=str(tmp_path / "nope")
            )

            # a run held by another process (as `rcm-dask index` holds it) shows as indexing,
            # and search answers from the last commit with BM25 alone, saying so
            with IndexLock(default_index_dir(root)):
                busy, text = await call(session, "index_status", directory=root)
                assert busy["state"] == "indexing" and busy["searchable"]
                assert f"pid {os.getpid()}" in busy["writer"]
                joined, _ = await call(session, "index_codebase", directory=root)
                assert joined["run_id"] == "" and joined["state"] == "indexing"
                during, _ = await call(session, "search", query="take_mut", directory=root)
                assert during["mode"] == "bm25" and during["hits"][0]["name"] == "take_mut"
                assert any("BM25 only" in n for n in during["notices"])
                assert "in use by an index run" in await refused(
                    session, "search", query="take_mut", directory=root, mode="vector"
                )
            status, _ = await call(session, "index_status", directory=root)
            assert status["state"] == "ready"

            health, text = await call(session, "health_check")
            assert health["ok"], text
            assert health["model"]["info"]["dimensions"] == 32
            assert health["cluster"]["ok"] and health["versions"]["mcp"].startswith("2.")
            (ix,) = health["indexes"]
            assert ix["directory"] == root and ix["state"] == "ready"
            assert ix["bm25"]["info"]["documents"] == status["chunks"]
            assert ix["vectors"]["info"]["points"] == status["chunks"]

    anyio.run(scenario)
    # stdout is the protocol: nothing else may have been written there (the session would
    # have failed on a stray line), and the server logged no crash
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_code_intelligence_tools_answer_from_the_index(
    tmp_path: Path, crate: Path, server_env: dict[str, str]
) -> None:
    from rcm_dask import intel

    if not hasattr(intel, "CodeIntel"):
        pytest.skip("rcm_dask.intel.CodeIntel is not written yet")
    root = str(crate)
    btree = crate / "src" / "collections" / "btree"
    mem, split = btree / "mem.rs", btree / "split.rs"
    call_line = line_of(mem, "replace(v, |value|")
    log = tmp_path / "server.log"

    async def scenario() -> None:
        async with stdio_session(server_env, log, [tmp_path]) as session:
            assert "not indexed yet" in await refused(
                session, "find_definition", symbol="take_mut", directory=root
            )
            # auto: small enough to be indexed sequentially, in the child process alone
            done, text = await call(
                session, "index_codebase", directory=root, mode="auto", wait_seconds=120
            )
            assert done["state"] == "ready" and done["stats"]["mode"] == "sequential", text

            defs, text = await call(session, "find_definition", symbol="take_mut", directory=root)
            (d,) = [d for d in defs["definitions"] if d["path"].endswith("mem.rs")]
            assert d["path"] == "src/collections/btree/mem.rs" and d["kind"] == "function"
            assert d["start_line"] <= line_of(mem, "pub fn take_mut") <= d["end_line"]
            assert f"src/collections/btree/mem.rs:{d['start_line']}" in text
            defs, _ = await call(
                session, "find_definition", symbol="Root::split_off", directory=root
            )
            d = defs["definitions"][0]
            assert d["path"] == "src/collections/btree/split.rs" and d["name"] == "split_off"
            assert d["start_line"] <= line_of(split, "pub fn split_off") <= d["end_line"]
            none, text = await call(
                session, "find_definition", symbol="no_such_symbol_here", directory=root
            )
            assert none["definitions"] == [] and "No definition" in text

            refs, text = await call(session, "find_references", symbol="replace", directory=root)
            assert any(
                r["path"] == "src/collections/btree/mem.rs"
                and r["line"] == call_line
                and r["in_qualname"].endswith("take_mut")
                for r in refs["references"]
            ), text

            graph, text = await call(
                session, "get_call_graph", symbol="take_mut", directory=root, depth=1
            )
            assert graph["graph"]["roots"][0]["name"] == "take_mut"
            assert any(
                e["callee"].endswith("replace") and e["line"] == call_line
                for e in graph["graph"]["callees"]
            ), text
            graph, text = await call(session, "get_call_graph", symbol="replace", directory=root)
            assert any(e["caller"].endswith("take_mut") for e in graph["graph"]["callers"]), text

            deps, text = await call(
                session, "get_dependencies", file="src/collections/btree/append.rs"
            )
            uses = [e["use_path"] for e in deps["dependencies"]["imports"]]
            assert any(u.endswith("merge_iter::MergeIterInner") for u in uses), uses
            assert "MergeIterInner" in text
            absolute, _ = await call(session, "get_dependencies", file=str(btree / "append.rs"))
            assert absolute == deps
            importers, text = await call(
                session, "get_dependencies", file="src/collections/btree/merge_iter.rs"
            )
            assert "src/collections/btree/append.rs" in {
                e["path"] for e in importers["dependencies"]["imported_by"]
            }, text

            report, text = await call(
                session, "analyze_complexity", file="src/collections/btree/mem.rs", directory=root
            )
            c = report["complexity"]
            assert c["lines_total"] == len(mem.read_text().splitlines())
            assert {f["name"] for f in c["functions"]} >= {"take_mut", "replace"}
            assert all(f["complexity"] >= 1 for f in c["functions"])
            assert "take_mut" in text and "complexity" in text

            # the file arguments are confined like read_file_content's
            assert "'..' is not allowed" in await refused(
                session, "get_dependencies", file="src/../../outside/secret.rs"
            )
            assert "outside the indexed root" in await refused(
                session, "analyze_complexity", file=str(tmp_path / "outside" / "secret.rs")
            )

    anyio.run(scenario)
    assert "Traceback" not in log.read_text()


def _free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_streamable_http_transport(tmp_path: Path, server_env: dict[str, str]) -> None:
    port = _free_port()
    log = tmp_path / "http.log"
    token = secrets.token_urlsafe(32)
    env = {**os.environ, **server_env, "RCM_MCP_TOKEN": token}
    with log.open("w") as errlog:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rcm_dask", "mcp", "--http", "--port", str(port)]
            + ["--root", str(tmp_path)],
            env=env,
            cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 60
        while url not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        async def scenario() -> None:
            async with http_session(url, token) as session:
                assert {t.name for t in (await session.list_tools()).tools} == TOOLS
                status, text = await call(session, "index_status", directory=str(tmp_path))
                assert status["state"] == "not_indexed"
                assert "Not indexed yet" in text
                assert "does not exist" in await refused(
                    session, "index_status", directory=str(tmp_path / "missing")
                )

        anyio.run(scenario)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert out == b""  # HTTP mode writes nothing to stdout either
