"""The MCP layer: the tools' MCP signatures, the server that serves them, its transports.

Each tool is declared once, in :class:`_Signatures`: its name, parameters (the input
schema), docstring (the description) and return annotation (the output schema);
:func:`build_server` registers each as a call into the :class:`~.tools.CodeTools`
method of the same name, within the roots of the call (:func:`_call_roots`), in a
worker thread, its result rendered as text plus structured content (:func:`_answer`).
Booleans and integers are strict and strings capped (:data:`QUERY_MAX_CHARS`,
:data:`PATH_MAX_CHARS`, :data:`NAME_MAX_CHARS`), so the SDK refuses a mistyped or huge
argument before any work. :func:`serve` screens every message on either transport
first (:mod:`.wire`), so a malformed one is answered instead of dropped.
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CallToolResult,
    ListRootsRequest,
    ListRootsResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from .. import __version__
from ..errors import RcmError
from ..roots import HOW_TO_ALLOW, AllowedRoots
from .guard import TOKEN_ENV, BearerTokenGuard, resolve_token, transport_security
from .models import (
    CallGraphOut,
    ComplexityOut,
    DefinitionsOut,
    DependenciesOut,
    FileContentOut,
    HealthOut,
    IndexRunOut,
    IndexStatusOut,
    ReferencesOut,
    SearchOut,
)
from .tools import QUICK_RUN_SECONDS, CodeTools
from .wire import ScreenedHTTP, serve_stdio

logger = logging.getLogger("rcm_dask.mcp")

SERVER_NAME = "rcm-dask"
DEFAULT_PORT = 8765
"""Port of ``rcm-dask mcp --http`` unless ``--port`` says otherwise."""

CLIENT_ROOTS_TIMEOUT = 10.0
"""Seconds a client that offers the roots capability has to list its roots."""

QUERY_MAX_CHARS = 4000
"""Characters of ``search``'s query and ``get_similar_code``'s fragment at most: the embedder
reads only its model's first few hundred tokens of it anyway, BM25 parses all of it, and
the answer repeats the query."""

PATH_MAX_CHARS = 4096
"""Characters of a ``directory`` or ``file`` argument at most (Linux's PATH_MAX)."""

NAME_MAX_CHARS = 1000
"""Characters of a symbol, a kind or a path glob at most."""

SearchMode = Literal["hybrid", "bm25", "vector"]
SearchGroup = Literal["item", "file"]
IndexMode = Literal["auto", "sequential", "parallel", "pipeline"]
VectorsSetting = Literal["qdrant", "none"]

_Out = TypeVar("_Out", bound=BaseModel)


def _answer(tool: str, produce: Callable[[], _Out]) -> CallToolResult:
    """Run a tool body: its result as text plus structured content, its errors as tool errors."""
    try:
        out = produce()
    except ToolError:
        raise
    except RcmError as e:
        raise ToolError(str(e)) from e
    except Exception as e:
        logger.exception("tool %s failed unexpectedly", tool)
        raise ToolError(f"{type(e).__name__}: {e}") from e
    return CallToolResult(
        content=[TextContent(type="text", text=str(out))],
        structured_content=out.model_dump(mode="json"),
    )


async def _call_roots(ctx: Context, user: AllowedRoots) -> AllowedRoots:
    """The user's roots, narrowed by the client's when the client offers the roots capability.

    Asked on every call, so a client that changes its workspace folders is followed at
    once. A client that offers roots and fails to list them is refused rather than
    trusted to be as wide as the user allowed."""
    session = ctx.session
    caps = session.client_capabilities
    if caps is None or caps.roots is None:
        return user
    try:
        with anyio.fail_after(CLIENT_ROOTS_TIMEOUT):
            # the request ServerSession.list_roots sends (deprecated with the roots
            # capability in the 2026-07-28 protocol; clients that still offer roots are
            # the ones to honour), tied to this call so that it also reaches an HTTP client
            listed = await session.send_request(
                ListRootsRequest(),
                ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
    except NoBackChannelError:
        logger.warning("the client offers roots but this connection cannot ask for them")
        return user
    except (MCPError, TimeoutError, ValueError) as e:
        raise RcmError(
            f"the MCP client offers roots but did not list them ({type(e).__name__}: {e}); "
            "nothing is done until it does"
        ) from e
    return user.narrowed([str(r.uri) for r in listed.roots])


async def _answer_within(
    tool: str, ctx: Context, tools: CodeTools, produce: Callable[[AllowedRoots], _Out]
) -> CallToolResult:
    """:func:`_answer` within the roots of this call, run in a worker thread."""
    try:
        roots = await _call_roots(ctx, tools.roots)
    except RcmError as e:
        raise ToolError(str(e)) from e
    return await anyio.to_thread.run_sync(lambda: _answer(tool, lambda: produce(roots)))


_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

Directory = Annotated[
    str,
    Field(
        max_length=PATH_MAX_CHARS,
        description="The codebase folder, as given to index_codebase (an absolute path is best).",
    ),
]


Symbol = Annotated[
    str,
    Field(
        max_length=NAME_MAX_CHARS,
        description="A name (push), or a path ending a qualified name (BinaryHeap::push, "
        "collections::binary_heap::BinaryHeap::push).",
    ),
]

FileArg = Annotated[
    str,
    Field(
        max_length=PATH_MAX_CHARS,
        description="The file: a path relative to the indexed root, or absolute inside it.",
    ),
]

RootArg = Annotated[
    str | None,
    Field(
        max_length=PATH_MAX_CHARS,
        description="The indexed root (default: the indexed codebase that holds the file).",
    ),
]

# strict=True on every boolean and integer parameter: lax pydantic took force="yes" as
# true (a forced rebuild) and limit="10" as 10; a client that sends the wrong type is told
# so. A float parameter still takes an integer (JSON has one number type).

_WRITES = ToolAnnotations(
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=True,
    open_world_hint=False,
)

_ANNOTATIONS = {"index_codebase": _WRITES}
"""The tools that are not read-only (the others: :data:`_READ_ONLY`)."""

_METHODS = {"index_status": "status"}
"""Tools whose :class:`~.tools.CodeTools` method has another name."""


class _Signatures(Protocol):
    """Every tool as an MCP client sees it, in the order they are listed: the name, the
    parameters (after ``ctx``: the input schema), the docstring (the description) and
    the return annotation (the output schema). :func:`build_server` runs the
    :class:`~.tools.CodeTools` method of the same name instead of these bodies."""

    @staticmethod
    async def index_codebase(
        ctx: Context,
        directory: Directory,
        mode: Annotated[
            IndexMode,
            Field(
                description="pipeline (Dask, overlapping stages), parallel, sequential (one "
                "process) or auto (sequential for small work)."
            ),
        ] = "pipeline",
        force: Annotated[
            bool,
            Field(
                strict=True, description="Rebuild from scratch instead of indexing what changed."
            ),
        ] = False,
        wait_seconds: Annotated[
            float,
            Field(
                strict=True,
                ge=0,
                le=600,
                description="How long to wait for the run to finish before answering with "
                "its run_id (it goes on in the background either way).",
            ),
        ] = QUICK_RUN_SECONDS,
        vectors: Annotated[
            VectorsSetting | None,
            Field(
                description="qdrant: embed every chunk (hybrid and vector search, "
                "get_similar_code); none: keyword-only, nothing embedded (BM25 search and "
                "code navigation; far faster on huge codebases or without a GPU). Default: "
                "what the existing index was built with, else qdrant. Changing an existing "
                "index's setting needs force=true."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, IndexRunOut]:
        """Index (or re-index) the Rust codebase in a folder, for search and code navigation.

        Incremental: only new and changed files are read and embedded. A run that
        takes longer than wait_seconds goes on in the background: the answer then
        holds its run_id and state "indexing"; poll index_status until "ready".
        Calling it again while a run is going returns that run. Only folders inside
        the roots the user allowed (rcm-dask mcp --root, RCM_MCP_ROOTS) can be indexed.
        """

    @staticmethod
    async def index_status(
        ctx: Context, directory: Directory
    ) -> Annotated[CallToolResult, IndexStatusOut]:
        """The state of a codebase's index: not_indexed, indexing (with files and chunks
        done so far), ready, or failed (with the reason); counts, model, last run's metrics."""

    @staticmethod
    async def search(
        ctx: Context,
        query: Annotated[
            str,
            Field(
                max_length=QUERY_MAX_CHARS,
                description="Words, identifiers, a question or a code fragment "
                f"(at most {QUERY_MAX_CHARS:,} characters).",
            ),
        ],
        directory: Directory,
        limit: Annotated[int, Field(strict=True, ge=1, le=100, description="Hits to return.")] = 10,
        kind: Annotated[
            str | None,
            Field(
                max_length=NAME_MAX_CHARS,
                description="Only items of this kind (function, method, struct, enum, union, "
                "trait, impl, mod, const, static, type, macro); several separated by commas.",
            ),
        ] = None,
        path_glob: Annotated[
            str | None,
            Field(
                max_length=NAME_MAX_CHARS,
                description="Only files matching this gitignore-style glob (src/io/**).",
            ),
        ] = None,
        mode: Annotated[
            SearchMode,
            Field(
                description="hybrid (keywords and meaning, fused), bm25 or vector. A "
                "keyword-only index answers hybrid with BM25 (a notice says so) and refuses "
                "vector."
            ),
        ] = "hybrid",
        group: Annotated[
            SearchGroup,
            Field(
                description="item (one hit per item) or file (one entry per file with its "
                "best items: which files to read)."
            ),
        ] = "item",
    ) -> Annotated[CallToolResult, SearchOut]:
        """Search an indexed codebase; each hit has its file, line range, symbol and a snippet.
        A bare name (BinaryHeap, fmt::Display) finds its definition first; a question is
        answered by keywords and meaning together."""

    @staticmethod
    async def get_similar_code(
        ctx: Context,
        code_or_symbol: Annotated[
            str,
            Field(
                max_length=QUERY_MAX_CHARS,
                description="A code fragment, or the name of a symbol in the index (push, "
                "BinaryHeap::push): then code similar to that item, the item itself left out "
                f"(at most {QUERY_MAX_CHARS:,} characters).",
            ),
        ],
        directory: Directory,
        limit: Annotated[int, Field(strict=True, ge=1, le=100, description="Hits to return.")] = 10,
    ) -> Annotated[CallToolResult, SearchOut]:
        """Find code that means the same as a fragment or as a named symbol (vector search;
        not on a keyword-only index)."""

    @staticmethod
    async def find_definition(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        kind: Annotated[
            str | None,
            Field(
                max_length=NAME_MAX_CHARS,
                description="Only definitions of this kind (struct, method...).",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, DefinitionsOut]:
        """Where a symbol is defined: file, line range, kind, signature, docs."""

    @staticmethod
    async def find_references(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        limit: Annotated[
            int, Field(strict=True, ge=1, le=1000, description="References to return.")
        ] = 100,
    ) -> Annotated[CallToolResult, ReferencesOut]:
        """Where a symbol is used (calls, type mentions, impls), with file and line; uses
        tied to the definition come first, same-name uses after."""

    @staticmethod
    async def get_call_graph(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        depth: Annotated[
            int, Field(strict=True, ge=1, le=5, description="How many calls away to go.")
        ] = 1,
    ) -> Annotated[CallToolResult, CallGraphOut]:
        """Callers and callees of a function or method, to a depth."""

    @staticmethod
    async def get_dependencies(
        ctx: Context,
        file: FileArg,
        directory: RootArg = None,
    ) -> Annotated[CallToolResult, DependenciesOut]:
        """A file's `use` imports (and the indexed files they lead to) and the files that
        import it."""

    @staticmethod
    async def analyze_complexity(
        ctx: Context,
        file: FileArg,
        directory: RootArg = None,
    ) -> Annotated[CallToolResult, ComplexityOut]:
        """A file's lines (code, comment, blank), items by kind, and the cyclomatic
        complexity of each function."""

    @staticmethod
    async def read_file_content(
        ctx: Context,
        file: Annotated[
            str,
            Field(
                max_length=PATH_MAX_CHARS,
                description="Path relative to the indexed root, or absolute inside it.",
            ),
        ],
        start_line: Annotated[
            int | None, Field(strict=True, ge=1, description="First line (1-based).")
        ] = None,
        end_line: Annotated[
            int | None, Field(strict=True, ge=1, description="Last line (inclusive).")
        ] = None,
        directory: Annotated[
            str | None,
            Field(
                max_length=PATH_MAX_CHARS,
                description="The indexed root (default: the one that holds the file).",
            ),
        ] = None,
    ) -> Annotated[CallToolResult, FileContentOut]:
        """Read lines of a file of an indexed codebase, with line numbers.

        Only the files the index covers (its .rs files), Cargo.toml files and README
        files of the root and of crate folders; no '..', no absolute path or symlink that
        leads out of the root, no files that look like secrets (.env, keys...).
        """

    @staticmethod
    async def health_check(ctx: Context) -> Annotated[CallToolResult, HealthOut]:
        """Check the embedding model, the Dask cluster and both stores of every index."""


def _register(server: MCPServer, tools: CodeTools, signature: Callable[..., Any]) -> None:
    """Register one tool: ``signature``'s name, parameters, description and output schema,
    answered by the ``tools`` method of that name with the call's arguments."""
    name = signature.__name__
    work = getattr(tools, _METHODS.get(name, name))

    @functools.wraps(signature)
    async def tool(ctx: Context, **arguments: Any) -> CallToolResult:
        return await _answer_within(name, ctx, tools, lambda roots: work(**arguments, roots=roots))

    server.add_tool(tool, annotations=_ANNOTATIONS.get(name, _READ_ONLY))


def build_server(tools: CodeTools | None = None) -> MCPServer:
    """The MCP server with every tool registered.

    Parameters
    ----------
    tools
        The tools' state and work (default: a :class:`CodeTools` configured from
        ``RCM_*`` variables). Each call works within ``tools.roots``, narrowed by the
        client's roots when the client offers them.

    Returns
    -------
    mcp.server.mcpserver.MCPServer
        Run it with ``.run("stdio")`` or serve ``.streamable_http_app()``.
    """
    tools = tools or CodeTools()
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=(
            "Search and navigate Rust codebases. Call index_codebase(directory) once per "
            "codebase (re-runs are incremental), poll index_status(directory) until its state "
            "is ready, then use search, get_similar_code, find_definition, find_references, "
            "get_call_graph, get_dependencies, analyze_complexity and read_file_content. For a "
            "huge codebase, index_codebase(directory, vectors='none') skips embedding: search "
            "then uses BM25 and the code-navigation tools work as usual. Every tool works only "
            "inside the folders the user allowed ("
            + (", ".join(tools.roots.paths) or "none yet")
            + f"); only the user can allow more, with {HOW_TO_ALLOW}."
        ),
        log_level="WARNING",
    )
    for member in vars(_Signatures).values():
        if isinstance(member, staticmethod):
            _register(server, tools, member.__func__)
    return server


def serve(
    transport: Literal["stdio", "http"] = "stdio",
    *,
    port: int = DEFAULT_PORT,
    roots: Sequence[str] = (),
    auth_token: str | None = None,
) -> None:
    """Run the MCP server until its client goes away (stdio) or it is stopped (HTTP).

    Parameters
    ----------
    transport
        ``stdio`` (the client starts this process and talks over its stdin/stdout) or
        ``http`` (streamable HTTP at ``http://127.0.0.1:PORT/mcp``, to clients that send
        the bearer token and name this address: :mod:`.guard`).
    port
        The HTTP port; 0 picks a free one. The address is printed on stderr.
    roots
        The folders the tools may index and read (``--root``); none: ``RCM_MCP_ROOTS``,
        else the working directory (see :mod:`rcm_dask.roots`).
    auth_token
        The bearer token every HTTP request must carry (``--auth-token``); none:
        ``RCM_MCP_TOKEN``, else one generated for this run and printed on stderr with
        the address (see :mod:`.guard`). Unused over stdio.

    Raises
    ------
    ConfigError
        A root does not exist or is not a folder, or the token is too short or holds
        characters a bearer token cannot.
    """
    # plain lines on stderr (configured before the SDK's own logging setup, which then
    # keeps them): stdout belongs to the protocol
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s rcm-dask mcp %(levelname)s %(name)s: %(message)s",
    )
    token, generated = resolve_token(auth_token) if transport == "http" else ("", False)
    tools = CodeTools(roots=AllowedRoots.from_settings(roots))
    if not tools.roots.paths:
        logger.warning("no folder is allowed: %s", tools.roots.note)
    server = build_server(tools)
    try:
        if transport == "stdio":
            anyio.run(serve_stdio, server)
        else:
            _serve_http(server, port, token, generated)
    finally:
        tools.close()


def _serve_http(server: MCPServer, port: int, token: str, generated: bool) -> None:
    """Serve streamable HTTP on 127.0.0.1 only (the tools read local files), to clients
    that send ``token`` and name this address (:mod:`.guard`)."""
    import anyio
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        raise RcmError(f"cannot listen on 127.0.0.1:{port}: {e}; pick another --port") from e
    # listening before the address is printed: a client that reads it and connects at
    # once waits in the backlog until uvicorn accepts, instead of being refused
    sock.listen(2048)
    actual = sock.getsockname()[1]
    # the token first: nothing from a client without it is even parsed
    app = BearerTokenGuard(
        ScreenedHTTP(
            server.streamable_http_app(
                host="127.0.0.1", transport_security=transport_security(actual)
            )
        ),
        token,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    # the one place the token is ever written: a generated one, for the user to pass on
    given = (
        f"the token generated for this run: {token} (choose your own with --auth-token "
        f"or {TOKEN_ENV})"
        if generated
        else f"the token of --auth-token or {TOKEN_ENV}"
    )
    print(
        f"rcm-dask MCP server: http://127.0.0.1:{actual}/mcp\n"
        f"  clients send the header 'Authorization: Bearer <token>' with {given}",
        file=sys.stderr,
        flush=True,
    )
    anyio.run(uvicorn.Server(config).serve, [sock])
