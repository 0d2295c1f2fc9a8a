"""Every message gets an answer within a bound, and arguments are taken as typed.

Issue 24's items 5 and 6: over stdio a non-JSON line, a 100,000-deep array, ``"params":
"str"`` and a lone surrogate escape got no reply at all (the SDK drops what it cannot
validate); over HTTP they were answered with id null and codes that did not say what was
wrong. ``force: "yes"`` started a forced rebuild, ``limit: "10"`` was taken, and a 5 MB
query came back twice in a 10 MB answer. The servers here are real subprocesses on
127.0.0.1, spoken to byte by byte and with the SDK's own client; every read has a timeout
so that a regression fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from rcm_dask.mcp_server.server import NAME_MAX_CHARS, PATH_MAX_CHARS, QUERY_MAX_CHARS
from rcm_dask.mcp_server.wire import screen

from . import REPO
from .test_mcp import http_session, refused, stdio_session
from .test_mcp_confinement import INITIALIZE, http_server

REPLY_SECONDS = 20.0
"""The bound on every answer here (each comes in milliseconds; a loaded CI machine is slow)."""

SURROGATE_CALL = (
    b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"index_status",'
    b'"arguments":{"directory":"/tmp/x\\ud800y"}}}'
)
DEEP = (
    b'{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"index_status",'
    b'"arguments":{"directory":' + b"[" * 100_000 + b"]" * 100_000 + b"}}}"
)

MALFORMED = [
    # (message, code, id, words of the answer)
    (SURROGATE_CALL, -32602, 11, "params.arguments.directory is not valid Unicode"),
    (b"this is not json", -32700, None, "Parse error: not JSON"),
    (b'{"jsonrpc":"2.0","id":12,"method":"tools/list"', -32700, 12, "Parse error"),
    (DEEP, -32700, 13, "nested too deeply"),
    (b'{"jsonrpc":"2.0","id":14,"method":"tools/call","params":"str"}', -32600, 14, "params"),
    (b'{"jsonrpc":"2.0","id":"a","method":"tools/call","params":[1]}', -32602, "a", "named"),
    (b'[{"jsonrpc":"2.0","id":15,"method":"ping"}]', -32600, None, "batch"),
    (b'{"jsonrpc":"1.0","id":16,"method":"ping"}', -32600, 16, '"2.0"'),
    (b'{"jsonrpc":"2.0","id":17}', -32600, 17, "no method"),
    (b'{"jsonrpc":"2.0","id":18,"method":5}', -32600, 18, "method must be a string"),
    (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', -32600, None, "id must be"),
    (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600, None, "id must be"),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600, None, "id must be"),
    (b'{"jsonrpc":"2.0","id":"\\udc00","method":"ping"}', -32600, None, "not valid Unicode"),
    (b"5", -32600, None, "JSON object"),
    (
        b'{"jsonrpc":"2.0","id":19,"method":"ping","params":{"n":' + b"9" * 5000 + b"}}",
        -32700,
        19,
        "number out of range",
    ),
]


@pytest.mark.parametrize(("message", "code", "request_id", "words"), MALFORMED)
def test_screen_answers_what_the_sdk_would_drop(
    message: bytes, code: int, request_id: Any, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="rcm_dask.mcp"):
        refusal = screen(message, "stdio")
    assert refusal is not None
    assert (refusal.error.code, refusal.id) == (code, request_id)
    assert words in refusal.error.message, refusal.error.message
    # the answer and the log name the rule, never the payload
    assert len(refusal.error.message) < 300
    (record,) = caplog.records
    assert "refused a message over stdio" in record.getMessage()
    assert len(record.getMessage()) < 600
    # it encodes: a lone surrogate never reaches the writer
    refusal.model_dump_json().encode("utf-8")


@pytest.mark.parametrize(
    "message",
    [
        # a surrogate pair is one character: fine
        (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search",'
            '"arguments":{"query":"\\ud83d\\ude00 push"}}}'
        ),
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","id":2,"result":{}}',
    ],
)
def test_screen_lets_well_formed_messages_through(message: str) -> None:
    assert screen(message, "stdio") is None
    assert screen(message.encode(), "HTTP") is None


class RawStdio:
    """``python -m rcm_dask mcp`` as a subprocess spoken to line by line: bytes in,
    JSON lines out through a reader thread, each read bounded by a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = REPLY_SECONDS) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout} s") from None
        return answer

    def ask(self, line: bytes) -> tuple[dict[str, Any], float]:
        """Send one line: its answer and how long it took."""
        start = time.monotonic()
        self.send(line)
        answer = self.reply()
        return answer, time.monotonic() - start


@contextlib.contextmanager
def raw_stdio(env: dict[str, str], root: Path, log: Path) -> Iterator[RawStdio]:
    """An initialised stdio server, read and written byte by byte."""
    with log.open("w") as errlog:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rcm_dask", "mcp", "--root", str(root)],
            env=env,
            cwd=str(REPO),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
    try:
        server = RawStdio(proc)
        server.send(json.dumps(INITIALIZE).encode())
        # the first answer waits for the server's imports
        assert server.reply(timeout=120)["id"] == INITIALIZE["id"]
        server.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        yield server
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def env(isolated_home: Path) -> dict[str, str]:
    """The server's environment: its own index home and nothing else."""
    return {"RCM_HOME": str(isolated_home), "PATH": os.environ.get("PATH", "")}


def _status_call(request_id: int, directory: str) -> bytes:
    """An index_status tools/call line."""
    call = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "index_status", "arguments": {"directory": directory}},
    }
    return json.dumps(call).encode()


def test_stdio_answers_every_malformed_line(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "server.log"
    with raw_stdio(env, tmp_path, log) as server:
        for message, code, request_id, words in MALFORMED:
            answer, seconds = server.ask(message)
            assert answer["id"] == request_id, answer
            assert answer["error"]["code"] == code and words in answer["error"]["message"]
            assert seconds < REPLY_SECONDS
        # blank lines are no messages: nothing to answer, and the next call is the next reply
        server.send(b"")
        server.send(b"   \r")
        answer, _ = server.ask(_status_call(99, str(tmp_path)))
        assert answer["id"] == 99 and answer["result"]["structuredContent"]["state"] == (
            "not_indexed"
        )
    logged = log.read_text()
    assert logged.count("refused a message over stdio") == len(MALFORMED)
    # the log names each refusal, with the start of the message, never the whole of it
    assert "[" * 200 not in logged and "Traceback" not in logged
    assert "-32602 Invalid params: the text of params.arguments.directory" in logged


def test_http_answers_every_malformed_body(tmp_path: Path, env: dict[str, str]) -> None:
    token = secrets.token_urlsafe(32)
    log = tmp_path / "http.log"
    with http_server({**env, "RCM_MCP_TOKEN": token}, log, [tmp_path]) as (url, _):
        headers = {
            "Authorization": f"Bearer {token}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        with httpx2.Client(headers=headers, timeout=REPLY_SECONDS) as http:
            session = http.post(url, json=INITIALIZE).headers["mcp-session-id"]
            headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
            for message, code, request_id, words in MALFORMED:
                response = http.post(url, content=message, headers=headers)
                assert response.status_code == 400, response.text
                answer = response.json()
                assert answer["id"] == request_id, answer
                assert answer["error"]["code"] == code and words in answer["error"]["message"]
            # no token: refused before anything is parsed (and nothing logged about it)
            anonymous = httpx2.post(
                url,
                content=SURROGATE_CALL,
                headers={**headers, "content-type": "application/json"},
                timeout=REPLY_SECONDS,
            )
            assert anonymous.status_code == 401
    logged = log.read_text()
    assert logged.count("refused a message over HTTP") == len(MALFORMED)
    assert "[" * 200 not in logged and "Traceback" not in logged


def test_arguments_are_strict_and_bounded_over_stdio(tmp_path: Path, env: dict[str, str]) -> None:
    empty = tmp_path / "no-rust"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to index\n")
    directory = str(empty)
    huge = "x" * 5_000_000

    async def scenario() -> None:
        async with stdio_session(env, tmp_path / "server.log", [tmp_path]) as session:
            listed = {t.name: t.input_schema for t in (await session.list_tools()).tools}
            index = listed["index_codebase"]["properties"]
            assert index["force"]["type"] == "boolean"
            assert index["wait_seconds"]["type"] == "number"
            search = listed["search"]["properties"]
            assert search["limit"]["type"] == "integer"
            assert search["query"]["maxLength"] == QUERY_MAX_CHARS
            assert f"{QUERY_MAX_CHARS:,} characters" in search["query"]["description"]
            similar = listed["get_similar_code"]["properties"]
            assert similar["code_or_symbol"]["maxLength"] == QUERY_MAX_CHARS
            assert search["directory"]["maxLength"] == PATH_MAX_CHARS
            assert search["path_glob"]["anyOf"][0]["maxLength"] == NAME_MAX_CHARS

            # a string for a boolean or an integer is refused, and no run is started
            for args in ({"force": "yes"}, {"force": 1}, {"wait_seconds": "5"}):
                message = await refused(session, "index_codebase", directory=directory, **args)
                (name,) = args
                assert name in message and "valid" in message, message
            status = await session.call_tool("index_status", {"directory": directory})
            assert status.structured_content is not None
            assert status.structured_content["state"] == "not_indexed"
            for value in ("10", 10.0, True):
                message = await refused(
                    session, "search", query="push", directory=directory, limit=value
                )
                assert "limit" in message and "integer" in message, message
            message = await refused(session, "read_file_content", file="src/lib.rs", start_line="3")
            assert "start_line" in message
            # proper types pass validation and reach the tool (which says why it cannot)
            assert "not indexed yet" in await refused(
                session, "search", query="push", directory=directory, limit=10
            )

            # a 5 MB query is refused, naming the limit, without coming back
            for tool, arg in (("search", "query"), ("get_similar_code", "code_or_symbol")):
                start = time.monotonic()
                result = await session.call_tool(tool, {arg: huge, "directory": directory})
                seconds = time.monotonic() - start
                text = "\n".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error and f"at most {QUERY_MAX_CHARS} characters" in text
                assert len(text) < 2000 and seconds < REPLY_SECONDS
            message = await refused(session, "index_status", directory="/" + "d" * 10_000)
            assert f"at most {PATH_MAX_CHARS} characters" in message and len(message) < 2000
            # at the limit, the query is searched (here: the folder is not indexed)
            assert "not indexed yet" in await refused(
                session, "search", query="y" * QUERY_MAX_CHARS, directory=directory
            )

            # an integer for a float is a number: the run starts (and soon fails, no .rs)
            started = await session.call_tool(
                "index_codebase", {"directory": directory, "force": False, "wait_seconds": 1}
            )
            text = "\n".join(getattr(c, "text", "") for c in started.content)
            assert "validation error" not in text
            assert "No .rs files found" in text or "in the background" in text, text

    anyio.run(scenario)


def test_arguments_are_strict_and_bounded_over_http(tmp_path: Path, env: dict[str, str]) -> None:
    token = secrets.token_urlsafe(32)
    with http_server({**env, "RCM_MCP_TOKEN": token}, tmp_path / "http.log", [tmp_path]) as (
        url,
        _,
    ):

        async def scenario() -> None:
            async with http_session(url, token) as session:
                directory = str(tmp_path)
                message = await refused(session, "index_codebase", directory=directory, force="yes")
                assert "force" in message
                status = await session.call_tool("index_status", {"directory": directory})
                assert status.structured_content is not None
                assert status.structured_content["state"] == "not_indexed"
                message = await refused(
                    session, "search", query="q" * (QUERY_MAX_CHARS + 1), directory=directory
                )
                assert f"at most {QUERY_MAX_CHARS} characters" in message
                assert len(message) < 2000

        anyio.run(scenario)


def test_a_long_query_is_quoted_short_in_the_text() -> None:
    from rcm_dask.mcp_server.models import QUOTED_QUERY_CHARS, SearchOut

    long = "q" * QUERY_MAX_CHARS
    out = SearchOut(query=long, directory="/d", index_dir="/i", mode="bm25", hits=[])
    assert len(str(out)) < QUOTED_QUERY_CHARS + 100 and "4,000 characters" in str(out)
    assert out.query == long  # the structured content keeps all of it
    assert str(SearchOut(query="push", directory="/d", index_dir="/i", mode="bm25", hits=[])) == (
        "0 hits for 'push' in /d (bm25):"
    )
