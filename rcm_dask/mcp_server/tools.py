"""The tools as plain methods (:class:`CodeTools`): each a thin call into the library.

The MCP layer (:mod:`.server`) only renders what these return; tests and other front
ends can call them directly. Index runs are :mod:`.runs`, index states and searchers
:mod:`.state`, where a tool may go and what it may read :mod:`.sandbox`, the health
probes :mod:`.health`.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import IndexConfig
from ..errors import RcmError
from ..planning import kept_vectors
from ..roots import AllowedRoots
from ..search import SearchIndex, check_kinds, payload_hit
from ..stores.lock import describe_holder, is_locked, read_holder
from .health import HealthChecks, check_index, versions
from .models import (
    CallGraphOut,
    ComplexityOut,
    DefinitionsOut,
    DependenciesOut,
    FileContentOut,
    FileOut,
    HealthOut,
    HitOut,
    IndexHealth,
    IndexRunOut,
    IndexState,
    IndexStatusOut,
    ReferencesOut,
    SearchOut,
    run_summary,
)
from .runs import IndexRun, start_run, stop_runs
from .sandbox import (
    Located,
    indexed_roots,
    inside_hint,
    locate_file,
    read_file,
    resolve_directory,
)
from .state import Searchers, derive_state, require_searchable

if TYPE_CHECKING:
    from ..intel import CodeIntel

QUICK_RUN_SECONDS = 5.0
"""``index_codebase`` waits this long for a run to finish before answering with its run
id; a re-run that finds nothing changed answers with its final stats well within it."""

_R = TypeVar("_R")

_SYMBOL = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)*!?$")


class CodeTools:
    """The tools as plain methods: state (runs, cached searchers) and the work of each.

    The MCP layer (:func:`~rcm_dask.mcp_server.build_server`) only renders what these
    return; tests and other front ends can call them directly.

    Every folder a tool touches must lie inside the allowed roots: :attr:`roots`, or the
    narrower ``roots`` a call passes (the user's narrowed by the MCP client's, see
    :mod:`rcm_dask.roots`). Files are read only from indexed roots (a committed index)
    inside them.

    Parameters
    ----------
    config
        Search settings and model (default: from ``RCM_*`` variables).
    roots
        The folders the user allows (default: :meth:`AllowedRoots.from_settings`:
        ``RCM_MCP_ROOTS``, else the working directory).
    """

    def __init__(
        self, config: IndexConfig | None = None, roots: AllowedRoots | None = None
    ) -> None:
        self.config = config or IndexConfig.from_env()
        self.roots = roots if roots is not None else AllowedRoots.from_settings()
        self._lock = threading.Lock()
        self._runs: dict[Path, IndexRun] = {}
        self._searchers = Searchers(self.config)
        self._health = HealthChecks(self.config)

    # ----------------------------------------------------------------- resolving

    def _allowed(self, roots: AllowedRoots | None) -> AllowedRoots:
        """The roots a call may use: its own (narrowed by the client), else the user's."""
        return self.roots if roots is None else roots

    def _resolve(self, directory: str, roots: AllowedRoots | None = None) -> tuple[str, Path]:
        """(root, index folder) of a codebase folder inside the allowed roots."""
        return resolve_directory(directory, self._allowed(roots))

    def _indexed(
        self, roots: AllowedRoots | None = None, *, committed: bool = True
    ) -> list[tuple[str, Path]]:
        """Indexed local roots inside the allowed roots (see :func:`.sandbox.indexed_roots`)."""
        return indexed_roots(self._allowed(roots), committed=committed)

    def _locate(
        self, file: str, directory: str | None, roots: AllowedRoots | None = None
    ) -> Located:
        """A file argument inside an indexed root (see :func:`.sandbox.locate_file`)."""
        return locate_file(file, directory, self._allowed(roots))

    # ----------------------------------------------------------------- state

    def _latest_run(self, index_dir: Path) -> IndexRun | None:
        """This server's latest run of an index, if any."""
        with self._lock:
            return self._runs.get(index_dir)

    def status(self, directory: str, *, roots: AllowedRoots | None = None) -> IndexStatusOut:
        """The state of a codebase's index (see :meth:`_state`)."""
        root, index_dir = self._resolve(directory, roots)
        return self._state(root, index_dir)

    def _state(self, root: str, index_dir: Path) -> IndexStatusOut:
        """The index's state (:func:`.state.derive_state`), which every tool asks first."""
        return derive_state(root, index_dir, self.config, self._latest_run(index_dir))

    def _require_searchable(
        self, root: str, index_dir: Path, roots: AllowedRoots | None = None
    ) -> list[str]:
        """Refuse unless the index has a commit; notices to pass on otherwise."""
        return require_searchable(
            self._state(root, index_dir), lambda: inside_hint(root, self._indexed(roots))
        )

    # ----------------------------------------------------------------- tools

    def index_codebase(
        self,
        directory: str,
        mode: str = "pipeline",
        force: bool = False,
        wait_seconds: float = QUICK_RUN_SECONDS,
        vectors: str | None = None,
        *,
        roots: AllowedRoots | None = None,
    ) -> IndexRunOut:
        """Start (or join) an index run; answer with its outcome, or with its run id when
        it is still going after ``wait_seconds``.

        ``vectors`` None keeps what the index was built with (a plain re-run of a
        keyword-only index stays keyword-only), and for a new index (or with ``force``)
        takes the server's setting (``RCM_VECTORS``, else ``qdrant``). The folder must lie
        inside the allowed roots; it becomes readable once the run has committed."""
        root, index_dir = self._resolve(directory, roots)
        index_dir = index_dir.absolute()
        if vectors is None:
            kept = None if force else kept_vectors(index_dir)
            vectors = kept or self.config.vectors
        with self._lock:
            run = self._runs.get(index_dir)
            if run is not None and run.state == "indexing":
                return IndexRunOut(
                    run_id=run.run_id,
                    state="indexing",
                    directory=root,
                    index_dir=str(index_dir),
                    message=f"Already indexing {root} (run {run.run_id}): poll index_status.",
                    run=run.out(),
                )
            if is_locked(index_dir):
                who = describe_holder(read_holder(index_dir))
                return IndexRunOut(
                    run_id="",
                    state="indexing",
                    directory=root,
                    index_dir=str(index_dir),
                    message=f"{root} is being indexed by {who}; poll index_status until it is "
                    "ready, then call index_codebase again if files changed meanwhile.",
                )
            run = start_run(
                root, index_dir, mode, force, vectors, roots=self._allowed(roots).paths
            )
            self._runs[index_dir] = run
        run.done.wait(max(0.0, wait_seconds))
        if run.state == "failed":
            raise RcmError(f"indexing {root} failed: {run.error}")
        if run.state == "ready":
            return IndexRunOut(
                run_id=run.run_id,
                state="ready",
                directory=root,
                index_dir=str(index_dir),
                message=f"Indexed {root} (run {run.run_id}).",
                run=run.out(),
                stats=run_summary(run.stats),
            )
        return IndexRunOut(
            run_id=run.run_id,
            state="indexing",
            directory=root,
            index_dir=str(index_dir),
            message=f"Indexing {root} in the background (run {run.run_id}): poll "
            "index_status until its state is ready.",
            run=run.out(),
        )

    def search(
        self,
        query: str,
        directory: str,
        limit: int = 10,
        kind: str | None = None,
        path_glob: str | None = None,
        mode: str = "hybrid",
        group: str = "item",
        *,
        roots: AllowedRoots | None = None,
    ) -> SearchOut:
        """Search one index (``group="file"``: one entry per file)."""
        root, index_dir = self._resolve(directory, roots)
        notices = self._require_searchable(root, index_dir, roots)
        kinds = _kinds(kind)
        files: list[FileOut] | None = None
        with self._searchers.searching(index_dir) as idx:
            if group == "file":
                found = idx.search_files(
                    query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob
                )
                files = [
                    FileOut(path=f.path, score=f.score, hits=[HitOut.of(h) for h in f.hits])
                    for f in found
                ]
                hits = [h for f in found for h in f.hits]
            else:
                hits = idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)
            notices += idx.notices
        used = "bm25" if mode == "hybrid" and any("BM25 only" in n for n in notices) else mode
        return SearchOut(
            query=query,
            directory=root,
            index_dir=str(index_dir),
            mode=used,
            hits=[HitOut.of(h) for h in hits],
            notices=notices,
            files=files,
        )

    def get_similar_code(
        self,
        code_or_symbol: str,
        directory: str,
        limit: int = 10,
        *,
        roots: AllowedRoots | None = None,
    ) -> SearchOut:
        """Vector search from a code fragment, or from a named symbol's own code."""
        root, index_dir = self._resolve(directory, roots)
        notices = self._require_searchable(root, index_dir, roots)
        text = code_or_symbol.strip()
        if not text:
            raise RcmError("code_or_symbol is empty: give a code fragment or a symbol name")
        with self._searchers.searching(index_dir) as idx:
            if idx.keyword_only:
                raise RcmError(
                    f"get_similar_code compares meanings, and the index of {root} is "
                    "keyword-only (built with vectors='none'): it has no vectors. Use search "
                    f"(BM25), or rebuild it with index_codebase({root!r}, vectors='qdrant', "
                    "force=True)."
                )
            source: dict[str, Any] | None = None
            if _SYMBOL.match(text):
                source, others = _find_symbol(idx, text)
                if source is not None and others:
                    notices.append(
                        f"{others + 1} items are named {text}; using {source['qualname']} "
                        f"({source['path']}:{source['start_line']}): pass a qualified name "
                        "(Type::method) to pick another"
                    )
            query = str(source["code"]) if source is not None else text
            # the symbol's own item comes back first: ask for enough to leave it out
            # nearest in meaning, as the vectors have it: no question-answering steps
            hits = idx.search(query, limit=limit + 5, mode="vector", ranking="none")
            notices += idx.notices
        # score 1: the stored chunk is the query itself
        src = payload_hit(source, 1.0) if source is not None else None
        if src is not None:
            hits = [
                h
                for h in hits
                if h.id != src.id
                and not (h.path == src.path and h.qualname == src.qualname and h.kind == src.kind)
            ]
        return SearchOut(
            query=text,
            directory=root,
            index_dir=str(index_dir),
            mode="vector",
            hits=[HitOut.of(h) for h in hits[:limit]],
            notices=notices,
            source=HitOut.of(src) if src is not None else None,
        )

    @contextlib.contextmanager
    def _intel(
        self, directory: str, roots: AllowedRoots | None = None
    ) -> Iterator[tuple[str, CodeIntel]]:
        """(root, CodeIntel) of a searchable index."""
        root, index_dir = self._resolve(directory, roots)
        self._require_searchable(root, index_dir, roots)
        from ..intel import CodeIntel

        with CodeIntel(index_dir) as intel:
            yield root, intel

    def _file_intel(
        self,
        file: str,
        directory: str | None,
        roots: AllowedRoots | None,
        ask: Callable[[CodeIntel, str], _R],
    ) -> tuple[str, _R]:
        """(root, what ``ask`` answers for a file argument located inside an indexed root)."""
        where = self._locate(file, directory, roots)
        with self._intel(where.root, roots) as (root, intel):
            return root, ask(intel, where.rel)

    def find_definition(
        self,
        symbol: str,
        directory: str,
        kind: str | None = None,
        limit: int = 20,
        *,
        roots: AllowedRoots | None = None,
    ) -> DefinitionsOut:
        """Where a symbol is defined."""
        kinds = _kinds(kind)
        with self._intel(directory, roots) as (root, intel):
            found = intel.find_definition(
                _symbol_arg(symbol), kind=kinds[0] if kinds else None, limit=limit
            )
        text = _listing(
            found,
            f"{len(found)} definitions of {symbol} in {root}:",
            f"No definition of {symbol} in {root}.",
        )
        return DefinitionsOut(symbol=symbol, directory=root, definitions=list(found)).with_text(
            text
        )

    def find_references(
        self,
        symbol: str,
        directory: str,
        limit: int = 100,
        *,
        roots: AllowedRoots | None = None,
    ) -> ReferencesOut:
        """Where a symbol is used."""
        with self._intel(directory, roots) as (root, intel):
            found = intel.find_references(_symbol_arg(symbol), limit=limit)
        text = _listing(
            found,
            f"{len(found)} references to {symbol} in {root}:",
            f"No references to {symbol} in {root}.",
        )
        return ReferencesOut(symbol=symbol, directory=root, references=list(found)).with_text(text)

    def get_call_graph(
        self,
        symbol: str,
        directory: str,
        depth: int = 1,
        limit: int = 50,
        *,
        roots: AllowedRoots | None = None,
    ) -> CallGraphOut:
        """Callers and callees of a symbol."""
        with self._intel(directory, roots) as (root, intel):
            graph = intel.call_graph(_symbol_arg(symbol), depth=depth, limit=limit)
        text = str(graph) if graph.roots else f"No definition of {symbol} in {root}.\n{graph}"
        return CallGraphOut(directory=root, graph=graph).with_text(text)

    def get_dependencies(
        self, file: str, directory: str | None = None, *, roots: AllowedRoots | None = None
    ) -> DependenciesOut:
        """A file's imports and importers."""
        root, deps = self._file_intel(file, directory, roots, lambda i, rel: i.dependencies(rel))
        return DependenciesOut(directory=root, dependencies=deps).with_text(str(deps))

    def analyze_complexity(
        self, file: str, directory: str | None = None, *, roots: AllowedRoots | None = None
    ) -> ComplexityOut:
        """Lines, items by kind and cyclomatic complexity of a file."""
        root, report = self._file_intel(file, directory, roots, lambda i, rel: i.complexity(rel))
        return ComplexityOut(directory=root, complexity=report).with_text(str(report))

    def read_file_content(
        self,
        file: str,
        start_line: int | None = None,
        end_line: int | None = None,
        directory: str | None = None,
        *,
        roots: AllowedRoots | None = None,
    ) -> FileContentOut:
        """Lines of a file the index covers: its ``.rs`` files (as the committed manifest
        lists them), ``Cargo.toml`` files, and the README files of the root and of crate
        folders; never one whose name or content looks like a secret."""
        where = self._locate(file, directory, roots)
        return read_file(where, file, start_line, end_line, self.config.max_file_size)

    def health_check(self, *, roots: AllowedRoots | None = None) -> HealthOut:
        """Model, cluster, stores of every index inside the allowed roots, versions."""
        model, cluster = self._health.model_and_cluster()
        indexes = [
            self._check_index(root, index_dir)
            for root, index_dir in self._indexed(roots, committed=False)
        ]
        broken = any(not (ix.bm25.ok and ix.vectors.ok) for ix in indexes)
        return HealthOut(
            ok=model.ok and cluster.ok and not broken,
            model=model,
            cluster=cluster,
            indexes=indexes,
            versions=versions(),
        )

    def _check_index(self, root: str, index_dir: Path) -> IndexHealth:
        """One index's stores (:func:`.health.check_index`), with its state (``failed`` when
        it cannot be derived)."""
        state: IndexState
        try:
            state = self._state(root, index_dir).state
        except RcmError:
            state = "failed"
        return check_index(root, index_dir, self.config, state)

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop: interrupt running index runs (they commit what they wrote) and release stores."""
        with self._lock:
            runs = [r for r in self._runs.values() if r.state == "indexing"]
        stop_runs(runs)
        self._searchers.close()


def _find_symbol(idx: SearchIndex, symbol: str) -> tuple[dict[str, Any] | None, int]:
    """The chunk payload of the item a symbol names (its first part), and how many other
    items share the name; (None, 0) when no item has that name.

    ``push`` matches any item named ``push``; ``BinaryHeap::push`` only those whose
    qualified name ends with it. Among several, definitions of code (functions, methods,
    types) come before summaries (impl, mod), then the best BM25 score."""
    path = symbol.rstrip("!").split("::")
    name = path[-1] + ("!" if symbol.endswith("!") else "")
    suffix = "::".join(path)
    candidates: dict[str, tuple[int, float, dict[str, Any]]] = {}
    for h in idx.bm25.search(" ".join(path), limit=200, exclude_paths=idx.unsettled() or None):
        p = h.payload
        if str(p.get("name", "")) != name:
            continue
        qualname = str(p.get("qualname", ""))
        if len(path) > 1 and not (qualname == suffix or qualname.endswith("::" + suffix)):
            continue
        key = str(p.get("symbol_id") or h.id)
        rank = 1 if p.get("kind") in ("impl", "mod") else 0
        best = candidates.get(key)
        # keep each item's first part: its signature and the start of its body
        if best is None or int(p.get("part", 1)) < int(best[2].get("part", 1)):
            candidates[key] = (rank, -h.score, p)
    if not candidates:
        return None, 0
    ordered = sorted(candidates.values(), key=lambda c: (c[0], c[1], str(c[2].get("path"))))
    return ordered[0][2], len(ordered) - 1


def _listing(found: Sequence[object], head: str, none: str) -> str:
    """``head`` and one indented line per item found, or ``none`` alone."""
    return "\n".join([head if found else none, *(f"  {x}" for x in found)])


def _symbol_arg(symbol: str) -> str:
    """A symbol argument, trimmed; refuses an empty one."""
    text = symbol.strip()
    if not text:
        raise RcmError("symbol is empty: give a name (push) or a path (BinaryHeap::push)")
    return text


def _kinds(kind: str | None) -> list[str] | None:
    """Parse the ``kind`` argument (one kind, or several separated by commas)."""
    if not kind or not kind.strip():
        return None
    return check_kinds([k.strip() for k in kind.split(",") if k.strip()])
