"""Every message gets an answer: what the MCP SDK cannot parse is refused with a JSON-RPC error.

Over stdio the SDK's reader turns a line it cannot validate as a JSON-RPC message into an
exception that its dispatcher logs at debug level and drops, so a client that sent
something malformed waits forever: not JSON, nested deeper than the JSON parser allows, a
``params`` that is not an object, or a lone surrogate (``"\\ud800"``), which its JSON
parser rightly refuses as text no UTF-8 can carry. Over HTTP it answers, but with id null
and an error code and message that do not say which rule was broken; its newer
single-exchange path parses with :func:`json.loads`, which lets a lone surrogate through to
the tools.

So every message is screened before the SDK sees it (:func:`screen`): one the SDK's own
validator accepts passes unchanged; any other is answered here with the JSON-RPC 2.0 error
it deserves, the request's id when it can be recovered (else null), and a line on the
``rcm_dask.mcp`` logger that names the error, the size and the first characters, never the
whole payload:

======  ================  ==============================================================
code    name              for
======  ================  ==============================================================
-32700  Parse error       not JSON, not UTF-8, nested too deeply to parse
-32600  Invalid Request   JSON that is not one JSON-RPC 2.0 message: a batch, no method,
                          ``jsonrpc`` not ``"2.0"``, an id that is neither string nor
                          integer, ``params`` that is not structured
-32602  Invalid params    ``params`` an array (MCP names its parameters), or text in the
                          params that is not valid Unicode (a lone surrogate)
======  ================  ==============================================================

:class:`ScreenedLines` does it for stdio (the stdin the SDK's transport reads, started by
:func:`serve_stdio`), :class:`ScreenedHTTP` for streamable HTTP (ASGI middleware before the
SDK's app, behind the bearer-token guard).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from io import TextIOWrapper
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import anyio
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import send_json

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.server.mcpserver import MCPServer

logger = logging.getLogger("rcm_dask.mcp")

LOGGED_PREFIX_CHARS = 60
"""Characters of a refused message the log shows (escaped): enough to recognise it."""

ID_MAX_CHARS = 256
"""A longer string id is not echoed back (the error's id is then null)."""

_SURROGATE = re.compile("[\ud800-\udfff]")

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}:,]|[^\s\[\]{}:,"]+')
"""Tokens of JSON-ish text, tolerant of anything: enough to find a top-level ``"id"``."""

_ID_SCAN_CHARS = 1 << 20
"""How far into a message that does not parse the id is looked for."""


def screen(message: str | bytes, transport: str) -> JSONRPCError | None:
    """The error that answers a message the MCP SDK would refuse or mishandle; None when fine.

    Parameters
    ----------
    message
        One JSON-RPC message as received: a line of stdio, the body of an HTTP POST.
    transport
        ``stdio`` or ``HTTP``, for the log line written when the message is refused.

    Returns
    -------
    mcp.types.JSONRPCError or None
        None when the SDK's own validator accepts the message (it then goes on unchanged);
        else the answer, with the request's id where it can be recovered.

    Examples
    --------
    >>> screen('{"jsonrpc": "2.0", "id": 1, "method": "ping"}', "stdio") is None
    True
    >>> screen('{"jsonrpc": "2.0", "id": 7, "method": "ping", "params": "x"}', "stdio").id
    7
    """
    try:
        parsed = jsonrpc_message_adapter.validate_json(message, by_name=False)
    except ValidationError as e:
        refusal = _diagnose(message, e)
    else:
        if not isinstance(parsed, JSONRPCNotification) or not _has_id(message):
            return None
        # a request whose id is no id passes as a notification, which nobody answers
        refusal = _refusal(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    logger.warning(
        "refused a message over %s (%d %s, starting %s): %s %s",
        transport,
        len(message),
        "bytes" if isinstance(message, bytes) else "characters",
        ascii(message[:LOGGED_PREFIX_CHARS]),
        refusal.error.code,
        refusal.error.message,
    )
    return refusal


def _has_id(message: str | bytes) -> bool:
    """Whether a message that parsed as a notification has an ``id`` member (the few small
    notifications a client sends are parsed once more)."""
    needle: str | bytes = b'"id"' if isinstance(message, bytes) else '"id"'
    if needle not in message:  # type: ignore[operator]
        return False
    try:
        value = json.loads(message)
    except (ValueError, RecursionError):
        # what json refuses and the SDK took (a number of 5,000 digits): leave it to the SDK
        return False
    return isinstance(value, dict) and "id" in value


def _refusal(code: int, message: str, request_id: Any = None) -> JSONRPCError:
    """A JSON-RPC error answering ``request_id`` (null when it is not a usable id)."""
    return JSONRPCError(
        jsonrpc="2.0", id=_usable_id(request_id), error=ErrorData(code=code, message=message)
    )


def _usable_id(value: Any) -> str | int | None:
    """``value`` when it can stand as the id of the answer (a string or integer), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= ID_MAX_CHARS and not _SURROGATE.search(value):
        return value
    return None


def _diagnose(message: str | bytes, error: ValidationError) -> JSONRPCError:
    """Why the SDK's validator refused ``message``, as the JSON-RPC error that says so."""
    first = error.errors(include_url=False, include_input=False)[0]
    try:
        # json takes lone surrogates and tells what does not parse without echoing it
        value = json.loads(message)
    except RecursionError:
        return _refusal(
            PARSE_ERROR,
            "Parse error: the message is nested too deeply to parse; send at most a few "
            "hundred levels of arrays and objects",
            _scan_id(message),
        )
    except UnicodeDecodeError:
        return _refusal(PARSE_ERROR, "Parse error: the message is not UTF-8 text")
    except json.JSONDecodeError as e:
        # e.g. "Expecting value: line 1 column 1 (char 0)": json never repeats the input
        return _refusal(PARSE_ERROR, f"Parse error: not JSON ({e})", _scan_id(message))
    except ValueError:
        # JSON both parsers refuse (a number of thousands of digits): the SDK's reason
        return _refusal(PARSE_ERROR, f"Parse error: {first['msg']}", _scan_id(message))
    request_id = value.get("id") if isinstance(value, dict) else None
    found = _lone_surrogate(value)
    if found is not None:
        where, at = found
        code = INVALID_PARAMS if where.startswith("params") else INVALID_REQUEST
        name = "Invalid params" if code == INVALID_PARAMS else "Invalid Request"
        return _refusal(
            code,
            f"{name}: the text of {where} is not valid Unicode: it holds a lone surrogate "
            f"(U+{at:04X}), which no UTF-8 text can; send the text itself, not a broken "
            "\\u escape",
            request_id,
        )
    if first["type"] == "json_invalid":
        # json takes what the SDK's parser refuses: nesting past its limit, NaN...
        return _refusal(PARSE_ERROR, f"Parse error: {first['msg']}", request_id)
    return _invalid_request(value)


def _invalid_request(value: Any) -> JSONRPCError:
    """The error for JSON that is not one JSON-RPC 2.0 message: the first rule it breaks."""
    if isinstance(value, list):
        return _refusal(
            INVALID_REQUEST,
            "Invalid Request: a batch (JSON array) is not supported; send one message at a time",
        )
    if not isinstance(value, dict):
        return _refusal(INVALID_REQUEST, "Invalid Request: a JSON-RPC message is a JSON object")
    request_id = value.get("id")
    if "id" in value and request_id is not None and _usable_id(request_id) is None:
        return _refusal(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if value.get("jsonrpc") != "2.0":
        return _refusal(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"', request_id)
    if "method" not in value and "result" not in value and "error" not in value:
        return _refusal(
            INVALID_REQUEST, "Invalid Request: no method (nor a result or error)", request_id
        )
    if "method" in value and not isinstance(value["method"], str):
        return _refusal(INVALID_REQUEST, "Invalid Request: method must be a string", request_id)
    params = value.get("params")
    if isinstance(params, list):
        # structured, so a valid JSON-RPC request, but MCP's parameters are named
        return _refusal(
            INVALID_PARAMS,
            "Invalid params: params must be an object of named parameters",
            request_id,
        )
    if "params" in value and not isinstance(params, dict):
        # the JSON-RPC spec: params, when present, is a structured value
        return _refusal(
            INVALID_REQUEST,
            f"Invalid Request: params must be an object, not {_json_type(params)}",
            request_id,
        )
    return _refusal(
        INVALID_REQUEST,
        "Invalid Request: not a JSON-RPC 2.0 request, notification or response",
        request_id,
    )


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _lone_surrogate(value: Any) -> tuple[str, int] | None:
    """Where the first lone surrogate of a parsed message is (``params.arguments.query``)
    and its code point; walked without recursion (json has already limited the depth)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            hit = _SURROGATE.search(item)
            if hit:
                return where or "the message", ord(hit.group())
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                hit = _SURROGATE.search(key)
                if hit:
                    return f"a key of {where or 'the message'}", ord(hit.group())
                stack.append((f"{where}.{_shown(key)}" if where else _shown(key), child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", c) for i, c in reversed(list(enumerate(item))))
    return None


def _shown(key: str) -> str:
    """A key as the path in an error shows it: short, printable."""
    return key if len(key) <= 40 and key.isidentifier() else ascii(key[:40])


def _scan_id(message: str | bytes) -> str | int | None:
    """The top-level ``"id"`` of a message that does not parse, if its start shows one."""
    text = message if isinstance(message, str) else message.decode("utf-8", "replace")
    depth = 0
    expect_key = False
    key: str | None = None
    for token in _TOKEN.finditer(text, 0, _ID_SCAN_CHARS):
        t = token.group()
        if t in ("{", "["):
            if depth == 0 and t != "{":
                return None
            depth += 1
            expect_key = t == "{"
        elif t in ("}", "]"):
            depth -= 1
            if depth <= 0:
                return None
        elif t == ",":
            expect_key = depth == 1
        elif t == ":":
            pass
        elif depth == 1 and expect_key:
            key, expect_key = t, False
        elif depth == 1 and key == '"id"':
            with contextlib.suppress(ValueError, RecursionError):
                return _usable_id(json.loads(t))
            return None
        else:
            key = None
    return None


def _screened(message: str | bytes, transport: str) -> JSONRPCError | None:
    """:func:`screen`, which must never take the transport down: should it fail, the
    message goes on to the SDK as it would have without it."""
    try:
        return screen(message, transport)
    except Exception:
        logger.exception("could not screen a message over %s; passed on as it is", transport)
        return None


class ScreenedLines:
    """The stdin of the SDK's stdio transport: the lines of ``source`` that :func:`screen`
    lets through; every other line is answered on ``refusals``, blank lines are skipped.

    Parameters
    ----------
    source
        The wire's lines (an async text file).
    refusals
        Where the answers to refused lines go (:func:`serve_stdio` writes them out).
    """

    def __init__(
        self, source: AsyncIterable[str], refusals: MemoryObjectSendStream[JSONRPCError]
    ) -> None:
        self._source = source
        self._refusals = refusals

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async with self._refusals:
            async for line in self._source:
                if not line.strip():
                    continue
                refusal = _screened(line, "stdio")
                if refusal is None:
                    yield line
                else:
                    await self._refusals.send(refusal)


@contextlib.contextmanager
def _claimed_stdin() -> Iterator[BinaryIO]:
    """The wire of fd 0 on a private descriptor while fd 0 reads the null device, as the
    SDK's transport does with its own stdin, so that a child process never reads the
    protocol; fd 0 is restored on exit. Where descriptors cannot be moved, stdin itself."""
    import sys

    try:
        wire = os.dup(0)
    except OSError:
        yield sys.stdin.buffer
        return
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        os.close(wire)
        yield sys.stdin.buffer
        return
    try:
        # closefd=False: a worker thread may still block reading it after the transport
        # exits; the descriptor must not be closed and reused under it
        yield os.fdopen(wire, "rb", closefd=False)
    finally:
        with contextlib.suppress(OSError):
            os.dup2(wire, 0)


async def serve_stdio(server: MCPServer) -> None:
    """Serve ``server`` over stdin and stdout, every line screened (:class:`ScreenedLines`).

    Parameters
    ----------
    server
        The server, as :func:`~.server.build_server` makes it.
    """
    send, receive = anyio.create_memory_object_stream[JSONRPCError](16)
    with _claimed_stdin() as raw:
        # the SDK's own reading of stdin: UTF-8, undecodable bytes replaced
        text = TextIOWrapper(raw, encoding="utf-8", errors="replace")
        lines = ScreenedLines(anyio.wrap_file(text), send)
        # the SDK reads its stdin only with `async for`
        async with (
            stdio_server(stdin=cast("anyio.AsyncFile[str]", lines)) as (read, write),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_write_refusals, receive, write)
            # what MCPServer.run_stdio_async does with the SDK's own stdin (the SDK has
            # no public way to serve its low-level server on given streams)
            lowlevel = server._lowlevel_server
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()


async def _write_refusals(refusals: MemoryObjectReceiveStream[JSONRPCError], write: Any) -> None:
    """Send each refusal to the client, as the server's own answers go."""
    async with refusals:
        async for refusal in refusals:
            try:
                await write.send(SessionMessage(refusal))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return


class ScreenedHTTP:
    """ASGI middleware: every JSON POST to ``path`` is screened (:func:`screen`) before the
    SDK's streamable HTTP app sees it; a refused one is answered 400 with its JSON-RPC error.

    Bodies larger than ``max_body`` go on unread, for the SDK's own 413.

    Parameters
    ----------
    app
        The SDK's streamable HTTP app.
    path
        Where it serves MCP.
    max_body
        The SDK's limit on a request body, in bytes.
    """

    def __init__(
        self, app: ASGIApp, path: str = "/mcp", max_body: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    ) -> None:
        self.app = app
        self.path = path
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path", "").rstrip("/") != self.path
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        body = bytearray()
        complete = False
        while len(body) <= self.max_body:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                complete = True
                break
        fits = complete and len(body) <= self.max_body
        refusal = _screened(bytes(body), "HTTP") if fits else None
        if refusal is None:
            await self.app(scope, _replay(received, receive), send)
            return
        answer = refusal.model_dump_json(by_alias=True, exclude_unset=True).encode()
        await send_json(send, 400, answer)


def _is_json(scope: Scope) -> bool:
    """Whether the request says its body is JSON (the others get the SDK's 415)."""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == b"application/json")
    return False


def _replay(received: list[Message], receive: Receive) -> Receive:
    """``receive``, first giving back the messages already read."""
    pending = list(received)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
