"""Index status: what an index folder holds, as ``rcm-dask status`` and ``Index.stats()`` show it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class IndexInfo:
    """What an index holds, read from its committed state (:meth:`~rcm_dask.search.SearchIndex.stats`)."""

    index_dir: str
    """The index folder."""
    root: str
    """The codebase it indexes."""
    files: int
    """Files the manifest records."""
    chunks: int
    """Chunks of those files (parts counted separately)."""
    bm25_documents: int
    """Documents in the Tantivy index (equal to :attr:`chunks` when consistent)."""
    updated: float | None
    """Epoch seconds of the last commit, None before the first."""
    identity: dict[str, Any] = field(default_factory=dict)
    """Model, fingerprint, dimensions, token budget, chunker version, vector backend."""
    vectors: str = "qdrant"
    """What the index keeps besides BM25: ``qdrant`` (vectors: hybrid and vector search)
    or ``none`` (keyword-only: BM25 search and code intelligence)."""
    last_run: dict[str, Any] | None = None
    """The last index run's stats (:meth:`~rcm_dask.records.IndexStats.to_dict`)."""
    pending: int = 0
    """Files a run began to change and has not committed: left half-written by an
    interrupted run (the next run redoes them), or being rewritten by the run in
    progress (:attr:`writer`)."""
    writer: str = ""
    """Who is writing the index now (``pid 42 on host h since ...``), or ``""``."""

    @property
    def updated_ago_s(self) -> float | None:
        """Seconds since the last commit."""
        return round(time.time() - self.updated, 1) if self.updated else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output (what :meth:`~rcm_dask.search.SearchIndex.status` returns)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["updated_ago_s"] = self.updated_ago_s
        return out

    def to_json(self, **kwargs: Any) -> str:
        """The :meth:`to_dict` form as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def summary_lines(self) -> list[str]:
        """The record as plain ``key: value`` lines: what ``rcm-dask status`` prints."""
        ident = self.identity
        lines = [
            f"index:    {self.index_dir}",
            f"root:     {self.root}",
            f"files:    {self.files:,}    chunks: {self.chunks:,}",
        ]
        if self.vectors == "none":
            lines += [
                (
                    f"model:    {ident.get('model')} (its tokenizer only: max "
                    f"{ident.get('max_tokens')} tokens per chunk), "
                    f"chunker v{ident.get('chunker_version')}"
                ),
                "vectors:  none (keyword-only: BM25 search and code intelligence, "
                "no search by meaning)",
            ]
        else:
            lines += [
                (
                    f"model:    {ident.get('model')} ({ident.get('dimensions')} dims, max "
                    f"{ident.get('max_tokens')} tokens, {ident.get('precision') or 'fp32'}), "
                    f"chunker v{ident.get('chunker_version')}"
                ),
                f"vectors:  {ident.get('qdrant_url') or 'embedded Qdrant (qdrant-edge)'}",
            ]
        if self.updated:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated))
            lines.append(f"updated:  {when} ({ago(self.updated_ago_s or 0.0)})")
        run = self.last_run
        if run:
            lines.append(
                f"last run: {run.get('mode')} mode, {run.get('files_indexed', 0)} files indexed, "
                f"{run.get('files_unchanged', 0)} unchanged, {run.get('files_removed', 0)} removed, "
                f"{run.get('chunks', 0):,} chunks in {float(run.get('seconds') or 0):.1f} s"
            )
            skipped = run.get("skipped") or {}
            if skipped:
                lines.append(
                    "          skipped " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items()))
                )
        if self.writer:
            lines.append(f"writing:  an index run is writing it now ({self.writer})")
        if self.pending and self.writer:
            lines.append(f"pending:  {self.pending} files being rewritten by the run in progress")
        elif self.pending:
            lines.append(
                f"pending:  {self.pending} files half-written by an interrupted run "
                "(the next index run redoes them)"
            )
        return lines

    def __str__(self) -> str:
        """The multi-line status (``repr`` keeps every field)."""
        return "\n".join(self.summary_lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the status lines."""
        printer.text(str(self))


def ago(seconds: float) -> str:
    """``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


__all__ = ["IndexInfo", "ago"]
