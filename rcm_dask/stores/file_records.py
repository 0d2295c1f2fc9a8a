"""Whole-file BM25: one Tantivy document per file, beside the chunks (issue 24).

A question's words are often spread over a file rather than gathered in one item: "fix
the sender blocking when a bounded channel is full" names words of ``send``, of the
waker and of the error type, all in ``flavors/array.rs``. Chunk BM25 sees each item
alone; plain BM25 over whole files (the floor ``benchmarks/search_quality`` measures
against) sees the file. :class:`FileRecords` keeps that second view: each file's text as
its chunks hold it (every chunk's code, so parts of a split item count once), analysed
like the chunks' code (``en_stem`` plus the words of glued identifiers), not stored.
:mod:`rcm_dask.ranking` uses its scores as evidence for a file's items.

The records live in a Tantivy index of their own inside the BM25 store's folder
(``bm25/files/``), and :class:`~rcm_dask.stores.bm25.Bm25Store` owns it: the same writer
calls, deletes by path, commits and rewrites reach both, so nothing outside the store
knows it is there. An index built before the records existed has none; the first writable
open builds them from the stored chunks (about a second per 15,000 chunks), and until
then searches simply go without them.

Schema
------
=====  ==================  ==============================================
field  tokenizer           holds
=====  ==================  ==============================================
path   raw, stored         the file path: deletes by file, path filters
body   en_stem             the file's chunks' code, plus identifier words
=====  ==================  ==============================================
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tantivy

from ..errors import IndexWriteError

FILES_SUBDIR = "files"
"""Folder of the records inside the BM25 store's folder."""


def _build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("path", stored=True, tokenizer_name="raw", index_option="basic")
    # frequencies without positions and nothing stored: the records are only searched
    builder.add_text_field("body", tokenizer_name="en_stem", index_option="freq")
    return builder.build()


_SCHEMA = _build_schema()


class FileRecords:
    """The whole-file records of one BM25 store (see the module docstring).

    Opened by :class:`~rcm_dask.stores.bm25.Bm25Store`: writable with the store's writer,
    read-only otherwise. A read-only open of a folder without records gives an empty
    view (:attr:`present` False) whose searches find nothing.

    Parameters
    ----------
    folder
        The BM25 store's folder; the records are in its ``files/`` subfolder.
    writable
        Take the records' writer (the BM25 store's writer holds its own lock first).
    heap_bytes
        Writer memory budget.
    """

    def __init__(self, folder: Path, *, writable: bool, heap_bytes: int) -> None:
        self.path = folder / FILES_SUBDIR
        """Folder of the records."""
        self._index: tantivy.Index | None = None
        self._writer: tantivy.IndexWriter | None = None
        self.created = False
        """Whether this open made the records' index (the store then fills it)."""
        exists = self.path.is_dir() and tantivy.Index.exists(str(self.path))
        if not writable:
            if exists:
                try:
                    self._index = tantivy.Index(_SCHEMA, path=str(self.path), reuse=True)
                except ValueError:
                    self._index = None  # another layout: searched without until a run rebuilds
            return
        if exists:
            try:
                self._index = tantivy.Index(_SCHEMA, path=str(self.path), reuse=True)
            except ValueError:
                # records of another layout, or damaged: they are derived data, made anew
                shutil.rmtree(self.path, ignore_errors=True)
                exists = False
        if not exists:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._index = tantivy.Index(_SCHEMA, path=str(self.path), reuse=True)
            except (OSError, ValueError) as e:
                raise IndexWriteError(f"cannot create the file records at {self.path}: {e}") from e
            self.created = True
        assert self._index is not None
        try:
            self._writer = self._index.writer(heap_size=heap_bytes, num_threads=1)
        except ValueError as e:
            raise IndexWriteError(f"cannot write the file records at {self.path}: {e}") from e

    @property
    def present(self) -> bool:
        """Whether there are records to search."""
        return self._index is not None

    def _require_writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            raise IndexWriteError(f"the file records at {self.path} are not open for writing")
        return self._writer

    def add(self, bodies: Mapping[str, str]) -> None:
        """Add one record per file (``path -> body``; visible after :meth:`commit`).

        The body is the text as it is to be analysed: the BM25 store hands in its chunks'
        code with the identifier words spelled out
        (:func:`~rcm_dask.stores.bm25.document_text`). Adding does not replace:
        :meth:`delete_paths` first.
        """
        writer = self._require_writer()
        try:
            for path, body in bodies.items():
                doc = tantivy.Document()
                doc.add_text("path", path)
                doc.add_text("body", body)
                writer.add_document(doc)
        except ValueError as e:
            raise IndexWriteError(f"the file records at {self.path} refused a file: {e}") from e

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete the records of these files (visible after :meth:`commit`)."""
        writer = self._require_writer()
        values = list(dict.fromkeys(paths))
        try:
            if len(values) == 1:
                writer.delete_documents_by_term("path", values[0])
            elif values:
                writer.delete_documents_by_query(
                    tantivy.Query.term_set_query(_SCHEMA, "path", values)
                )
        except ValueError as e:
            raise IndexWriteError(f"the file records at {self.path} refused a delete: {e}") from e

    def delete_all(self) -> None:
        """Delete every record (visible after :meth:`commit`)."""
        self._require_writer().delete_all_documents()

    def commit(self) -> None:
        """Make the writes so far durable and searchable."""
        writer = self._require_writer()
        try:
            writer.commit()
        except ValueError as e:
            raise IndexWriteError(f"commit of the file records at {self.path} failed: {e}") from e
        assert self._index is not None
        self._index.reload()

    def rollback(self) -> None:
        """Drop the writes since the last commit."""
        if self._writer is not None:
            self._writer.rollback()

    def count(self) -> int:
        """Records in the latest commit (0 without records)."""
        if self._index is None:
            return 0
        self._index.reload()
        return int(self._index.searcher().num_docs)

    def paths(self) -> list[str]:
        """Paths of every record of the latest commit, sorted (for tests and tools)."""
        if self._index is None:
            return []
        self._index.reload()
        searcher = self._index.searcher()
        total = int(searcher.num_docs)
        if not total:
            return []
        result = searcher.search(tantivy.Query.all_query(), total, count=False)
        return sorted(str(searcher.doc(a).get_first("path")) for _s, a in result.hits)

    def search(
        self,
        terms: Sequence[str],
        limit: int,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """``(path, BM25 score)`` of the files that best match analysed ``terms``, best
        first; empty without records or terms. ``paths`` keeps only those files,
        ``exclude_paths`` leaves some out (inside the query)."""
        if self._index is None or not terms or limit <= 0:
            return []
        should = [
            (tantivy.Occur.Should, tantivy.Query.term_query(_SCHEMA, "body", t)) for t in terms
        ]
        clauses = [(tantivy.Occur.Must, tantivy.Query.boolean_query(should))]
        if paths:
            allowed = tantivy.Query.term_set_query(_SCHEMA, "path", list(paths))
            clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(allowed, 0.0)))
        if exclude_paths:
            unwanted = tantivy.Query.term_set_query(_SCHEMA, "path", list(exclude_paths))
            clauses.append((tantivy.Occur.MustNot, unwanted))
        self._index.reload()
        searcher = self._index.searcher()
        result = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False)
        return [
            (str(searcher.doc(address).get_first("path")), float(score))
            for score, address in result.hits
        ]

    def close(self) -> None:
        """Release the writer, discarding uncommitted writes."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.rollback()
            writer.wait_merging_threads()


def record_text(codes: Iterable[str]) -> str:
    """A file's record text from its chunks' code (any order: the records keep no
    positions, so order does not change a score)."""
    return "\n".join(codes)


def file_texts(payloads: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """Each file's record text (:func:`record_text`) from its chunks' payloads.

    >>> file_texts([{"path": "a.rs", "code": "fn f() {}"}, {"path": "a.rs", "code": "fn g() {}"}])
    {'a.rs': 'fn f() {}\\nfn g() {}'}
    """
    parts: dict[str, list[str]] = {}
    for p in payloads:
        parts.setdefault(str(p["path"]), []).append(str(p.get("code", "")))
    return {path: record_text(codes) for path, codes in parts.items()}


__all__ = ["FILES_SUBDIR", "FileRecords", "file_texts", "record_text"]
