"""The MCP server: rcm_dask's index, search and code-intelligence tools for AI coding agents.

``rcm-dask mcp`` serves these tools over stdio (what MCP clients such as Claude Desktop
start); ``rcm-dask mcp --http --port N`` serves them over streamable HTTP on 127.0.0.1,
to clients that send its bearer token and name its own address (:mod:`.guard`).
Each tool is a thin call into the library with a typed input schema, a structured
result (its JSON schema is the tool's output schema) and a readable text rendering:

=====================  ====================================================================
index_codebase         index a folder (incremental); long runs go on in the background
index_status           not_indexed / indexing (progress) / ready / failed (why), counts
search                 hybrid, BM25 or vector search, kind and path filters
get_similar_code       code that means the same as a fragment, or as a named symbol
find_definition        where a symbol is defined (file, lines, signature)
find_references        where a symbol is used
get_call_graph         callers and callees of a function, to a depth
get_dependencies       a file's ``use`` imports and the files that import it
analyze_complexity     lines, items by kind, cyclomatic complexity per function
read_file_content      lines of an indexed file, a Cargo.toml or a README (nothing else)
health_check           both stores of each index, the model, the Dask cluster, versions
=====================  ====================================================================

The package, one concern a module:

===========  ==========================================================================
server.py    the MCP layer: each tool's signature, :func:`build_server`, :func:`serve`
             (stdio or HTTP), the client's roots, tool errors
tools.py     :class:`CodeTools`: the tools as plain methods, each a thin library call
models.py    what the tools answer: pydantic records and their text renderings
runs.py      index runs in child processes (:func:`run_index_child`), their JSON lines
state.py     an index's state (not_indexed / indexing / ready / failed), the searchers
sandbox.py   where the tools may go and what ``read_file_content`` may read
guard.py     who may talk to the HTTP transport: bearer token, Host and Origin
wire.py      every message answered: malformed JSON-RPC refused with its error, both
             transports (:func:`.wire.serve_stdio`, :class:`.wire.ScreenedHTTP`)
health.py    the probes of ``health_check``: model, Dask cluster, stores, versions
===========  ==========================================================================

Index runs go to a child process, not to a thread of the server (:mod:`.runs` says
why), and the server keeps a registry of its runs. What ``index_status`` says is
derived from the index folder itself and from that registry, and every tool that reads
an index goes through the same derivation (:mod:`.state`), so the status never says
``ready`` while a search would refuse.

A keyword-only index (``index_codebase(directory, vectors="none")``: nothing embedded,
for huge codebases) serves ``search`` from BM25 (hybrid says so in its notices), every
code-intelligence tool and ``read_file_content``; ``search`` in vector mode and
``get_similar_code`` refuse, naming the rebuild that would give them vectors.

The user, not the agent, decides where the tools may go (:mod:`rcm_dask.roots`): every
``directory`` and absolute ``file`` argument must lie inside the allowed roots
(``rcm-dask mcp --root DIR``, ``RCM_MCP_ROOTS``, else the working directory; narrowed by
the client's roots when it offers them), symlinks resolved. A folder becomes readable
only once it has a committed index inside them, and ``read_file_content`` returns only
what that index covers, never a file whose name or content looks like a secret
(:mod:`.sandbox`).

Arguments are taken as their schema types them: a boolean or an integer parameter refuses
a string (``force: "yes"``, ``limit: "10"``; a number parameter takes an integer), and
strings have a length cap published as ``maxLength``: 4,000 characters for ``search``'s
query and ``get_similar_code``'s fragment (:data:`~.server.QUERY_MAX_CHARS`), 4,096 for
paths, 1,000 for symbols, kinds and globs. Such a refusal is a tool error naming the
parameter and the rule, before any work, and never repeats a long argument.

Errors come back as MCP tool errors (``is_error``) with the library's message; an
unexpected exception is logged with its traceback to stderr and reported as its type
and message. A message that is not one well-formed JSON-RPC message (not JSON, nested too
deeply, ``params`` not an object, an id that is no id, text holding a lone surrogate) is
answered with its JSON-RPC error (-32700, -32600 or -32602, with its id where it can be
recovered) and logged on ``rcm_dask.mcp`` without its payload (:mod:`.wire`): every request
gets an answer. Nothing is ever printed to stdout.
"""

from __future__ import annotations

from .models import (
    CallGraphOut,
    ComplexityOut,
    ComponentHealth,
    DefinitionsOut,
    DependenciesOut,
    FileContentOut,
    FileOut,
    HealthOut,
    HitOut,
    IndexHealth,
    IndexRunOut,
    IndexStatusOut,
    ReferencesOut,
    RunOut,
    SearchOut,
)
from .runs import IndexRun, run_index_child
from .server import DEFAULT_PORT, SERVER_NAME, build_server, serve
from .tools import CodeTools

__all__ = [
    "CallGraphOut",
    "CodeTools",
    "ComplexityOut",
    "ComponentHealth",
    "DEFAULT_PORT",
    "DefinitionsOut",
    "DependenciesOut",
    "FileContentOut",
    "FileOut",
    "HealthOut",
    "HitOut",
    "IndexHealth",
    "IndexRun",
    "IndexRunOut",
    "IndexStatusOut",
    "ReferencesOut",
    "RunOut",
    "SERVER_NAME",
    "SearchOut",
    "build_server",
    "run_index_child",
    "serve",
]
