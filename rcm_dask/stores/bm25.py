"""The BM25 store: chunks in a Tantivy index, searched by words and identifier parts.

Rust names glue words together (``ParseTomlConfig``, ``parse_toml_config``,
``HTTPServer2``), while people search with loose words ("parse toml config"). Both
sides therefore go through the same two steps: Tantivy's ``en_stem`` analyzer
(split on non-alphanumerics, lowercase, English stemming) over the text *plus* the
camel-case parts of every identifier, spelled out as extra words. A query is never
handed to Tantivy's query parser: it is reduced to word terms here and turned into
term queries, so no user input can be a syntax error.

Schema
------
=========  ==================  ===========================================================
field      tokenizer           holds
=========  ==================  ===========================================================
id         raw, stored         the chunk id: deletes by id
path       raw, stored         the file path: deletes by file, path filters
kind       raw                 the item kind: kind filters
symbol     en_stem             name, qualname and parent, plus their identifier words
docs       en_stem             doc comments, plus the identifier words they mention
code       en_stem             the code, plus the words of its camel-case identifiers
module     en_stem             module path, plus its identifier words
path_text  en_stem             file path as words
payload    stored only         :func:`~rcm_dask.stores.chunk_payload` as JSON bytes
=========  ==================  ===========================================================

Beside the chunks, the store keeps one record per whole file in an index of its own
(:mod:`~rcm_dask.stores.file_records`, searched by :meth:`Bm25Store.search_files`); the
store's writes, deletes by path, commits and rewrites reach both.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tantivy

from ..closing import Closing
from ..errors import IndexIdentityError, IndexNotFoundError, IndexWriteError
from ..records import Chunk
from . import PAYLOAD_FIELDS, StoreHit, encode_payloads
from .file_records import FileRecords, file_texts

if TYPE_CHECKING:
    pass

FIELD_BOOSTS: dict[str, float] = {
    "symbol": 1.0,
    "docs": 1.0,
    "code": 2.0,
    "module": 0.5,
    "path_text": 0.5,
}
"""Weight of a matching term in each searched field. The code counts most: it holds the
item's name and signature as well as what it does, so a question's words meet the items
that do the work there. Chosen on the tuning half of ``benchmarks/search_quality``'s
twelve crates (BM25 alone, file nDCG@10: 0.751 with symbol 3, docs 1.5, code 1, module 1,
path 0.5; 0.789 with these); a symbol lookup finds its definition through the symbol
table (:mod:`rcm_dask.ranking`), not through this weight."""

STOP_WORDS = frozenset(
    {
        "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "how", "does",
        "do", "did", "what", "where", "when", "which", "why", "who", "whom", "whose", "this",
        "that", "these", "those", "it", "its", "of", "in", "on", "at", "to", "for", "from",
        "by", "with", "and", "or", "not", "no", "as", "into", "onto", "than", "then", "there",
        "here", "can", "could", "should", "would", "will", "shall", "may", "might", "must",
        "i", "we", "you", "they", "he", "she", "me", "my", "our", "your", "their", "get",
        "gets", "got",
    }
)  # fmt: skip
"""English function words a question is made of ("how does the ... work"). A query's
free-standing stop words are not searched (unless it has no other words): in code and
its comments they match nearly every chunk, and their small weights add up to a long
chunk's advantage. Parts of identifiers (``is`` in ``is_empty``) are kept."""

MAX_QUERY_TERMS = 64
"""Distinct terms kept from one query; a pasted file must not become a huge query."""

DEFAULT_HEAP_BYTES = 64_000_000
"""Writer memory budget: Tantivy flushes a segment when its buffer reaches this."""

DEFAULT_WRITER_THREADS = 1
"""Writer indexing threads; embedding competes for the same few cores."""

FILE_RECORDS_HEAP_BYTES = 20_000_000
"""Writer memory budget of the whole-file records (:mod:`~rcm_dask.stores.file_records`)."""

_TEXT_TOKENIZER = "en_stem"

# Tantivy's built-in ``en_stem``, rebuilt here so query words can be turned into
# exactly the terms the index holds (term queries are not analyzed).
_ANALYZER = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(40))
    .filter(tantivy.Filter.lowercase())
    .filter(tantivy.Filter.stemmer("english"))
    .build()
)

# Letters and digits only: ``_`` and every other separator split words.
_ALNUM_RUN = re.compile(r"[^\W_]+")
_WORD = re.compile(r"\w+")


def _build_schema() -> tantivy.Schema:
    """The one schema every BM25 index of this version has."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("path", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("kind", tokenizer_name="raw", index_option="basic")
    # Frequencies without positions: BM25 needs term counts, and no phrase query is run.
    for name in ("symbol", "docs", "code", "module", "path_text"):
        builder.add_text_field(name, tokenizer_name=_TEXT_TOKENIZER, index_option="freq")
    # A bytes field can be stored without being indexed; a JSON string in a raw text
    # field would also be indexed as one (possibly over-long) term.
    builder.add_bytes_field("payload", stored=True)
    return builder.build()


_SCHEMA = _build_schema()


def _char_class(c: str) -> str:
    """``d``igit, ``u``pper, ``l``ower, or ``o``ther (a letter of a caseless script)."""
    return "d" if c.isdigit() else "u" if c.isupper() else "l" if c.islower() else "o"


@functools.lru_cache(maxsize=65536)
def _split_run(run: str) -> tuple[str, ...]:
    """Split one run of letters and digits at case, digit and script boundaries, lowercased."""
    words: list[str] = []
    start = 0
    classes = [_char_class(c) for c in run] + ["$"]
    for i in range(1, len(run)):
        prev, cur, nxt = classes[i - 1], classes[i], classes[i + 1]
        if (
            (prev == "l" and cur == "u")  # parse|Toml
            or (prev == "u" and cur == "u" and nxt == "l")  # HTTP|Server
            or (prev != cur and "d" in (prev, cur))  # server|2, 2|parse
            or (prev != cur and "o" in (prev, cur))  # 検索|Index
        ):
            words.append(run[start:i].lower())
            start = i
    words.append(run[start:].lower())
    return tuple(words)


def split_identifier_words(text: str) -> list[str]:
    """Split identifiers (and any text around them) into lowercase words.

    Words end at every character that is not a letter or digit (``_``, ``::``,
    spaces, punctuation), at a lower-to-upper case change, before the last capital
    of an acronym that is followed by a lowercase letter, and between letters and
    digits, and between a caseless script and a cased one (``検索Index``). Works
    on Unicode letters; a run in a caseless script stays whole.

    Parameters
    ----------
    text
        An identifier, a path (``a::b::CamelCase``) or free text.

    Returns
    -------
    list of str
        The words in order, lowercased; duplicates are kept.

    Examples
    --------
    >>> split_identifier_words("parseTOMLConfig")
    ['parse', 'toml', 'config']
    >>> split_identifier_words("HTTPServer2")
    ['http', 'server', '2']
    >>> split_identifier_words("std::collections::BinaryHeap")
    ['std', 'collections', 'binary', 'heap']
    """
    words: list[str] = []
    for run in _ALNUM_RUN.findall(text):
        words.extend(_split_run(run))
    return words


def _with_identifier_words(*texts: str) -> str:
    """The texts, then once each the words of every identifier that glues several together.

    Runs that split into one word only are left out: the ``en_stem`` tokenizer already
    finds those (and splits ``snake_case`` by itself), and repeating them would only
    inflate their term frequency.
    """
    seen: set[str] = set()
    extra: list[str] = []
    for text in texts:
        for run in _ALNUM_RUN.findall(text):
            if run in seen:
                continue
            seen.add(run)
            parts = _split_run(run)
            if len(parts) > 1:
                extra.extend(parts)
    return "\n".join([*texts, " ".join(extra)])


def document_text(text: str) -> str:
    """Text as the index analyses a chunk's code: the text, then once each the words of
    every identifier that glues several together (``parse_toml`` is split by the
    analyzer itself, ``ParseToml`` by this).

    >>> document_text("let cfg = ParseToml::new(raw);")
    'let cfg = ParseToml::new(raw);\\nparse toml'
    """
    return _with_identifier_words(text)


def _record_bodies(texts: Mapping[str, str]) -> dict[str, str]:
    """Whole-file record texts as the records index them (:func:`document_text`)."""
    return {path: document_text(text) for path, text in texts.items()}


def query_terms(query: str, skip_stop_words: bool = False) -> list[str]:
    """Reduce free text to the distinct index terms to look up, in first-seen order.

    Each word-like token is kept whole (``parsetomlconfig`` matches the name as
    written) and also split into its identifier words; every word then goes
    through the index's own analyzer. Operators, quotes and punctuation are
    simply not words.

    Parameters
    ----------
    query
        Any text a person typed.
    skip_stop_words
        Leave out tokens that are :data:`STOP_WORDS` ("how", "the"), unless nothing
        else is left; identifiers that contain one (``is_empty``) are kept whole.

    Returns
    -------
    list of str
        At most :data:`MAX_QUERY_TERMS` terms; empty when the text holds no word.

    Examples
    --------
    >>> query_terms("fn ParseTomlConfig(&mut self) -> Result<(), E>")
    ['fn', 'parsetomlconfig', 'pars', 'toml', 'config', 'mut', 'self', 'result', 'e']
    >>> query_terms("how is the heap grown", skip_stop_words=True)
    ['heap', 'grown']
    """
    tokens = _WORD.findall(query)
    if skip_stop_words:
        tokens = [t for t in tokens if t.lower() not in STOP_WORDS] or tokens
    terms: dict[str, None] = {}
    for token in tokens:
        for word in (token, *split_identifier_words(token)):
            for term in _ANALYZER.analyze(word):
                terms.setdefault(term, None)
                if len(terms) >= MAX_QUERY_TERMS:
                    return list(terms)
    return list(terms)


def _payload_document(payload: dict[str, Any], raw: bytes | None = None) -> tantivy.Document:
    """The Tantivy document of one chunk, from its :func:`~rcm_dask.stores.chunk_payload`
    (``raw``: the payload already encoded as stored).

    The payload holds every field the document is made of, so a document rebuilt from
    a stored payload (either store's) is the one the chunk itself gave.
    """
    if raw is None:
        # in PAYLOAD_FIELDS order, whatever order the payload came in (Qdrant's)
        ordered = {name: payload[name] for name in PAYLOAD_FIELDS if name in payload}
        raw = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path = str(payload["path"])
    return _document(payload, raw, path, _with_identifier_words(path))


def _document(
    payload: Mapping[str, Any], raw: bytes, path: str, path_text: str
) -> tantivy.Document:
    """The Tantivy document of one payload, its path's words already spelled out (the
    chunks of one file share them)."""
    text = _with_identifier_words
    doc = tantivy.Document()
    doc.add_text("id", str(payload["id"]))
    doc.add_text("path", path)
    doc.add_text("kind", str(payload["kind"]))
    doc.add_text(
        "symbol",
        text(str(payload["name"]), str(payload["qualname"]), str(payload["parent"])),
    )
    doc.add_text("docs", text(str(payload["docs"])))
    doc.add_text("code", text(str(payload["code"])))
    doc.add_text("module", text(str(payload["module"])))
    doc.add_text("path_text", path_text)
    doc.add_bytes("payload", raw)
    return doc


def _is_index_dir(path: Path) -> bool:
    """Whether ``path`` is a folder that holds a Tantivy index."""
    return path.is_dir() and tantivy.Index.exists(str(path))


class Bm25Store(Closing):
    """A Tantivy index of chunks, opened read-only or as the index's single writer.

    Build one with :meth:`create` (writable; makes the index if missing) or
    :meth:`open` (an existing index, read-only unless ``writable=True``). Writes
    (:meth:`add_batch`, :meth:`delete_paths`, :meth:`delete_ids`) are invisible
    until :meth:`commit`; reads always see the latest commit, from this process
    or another. Operations apply in call order, so deleting a file's chunks and
    adding its new ones before one commit leaves exactly the new ones.

    Parameters
    ----------
    index
        The opened Tantivy index (use :meth:`create` or :meth:`open`).
    path
        Its folder, for messages.
    writable
        Take the index's writer lock now.
    heap_bytes, num_threads
        Writer memory budget and indexing threads.

    Raises
    ------
    IndexWriteError
        ``writable`` and another writer (in this or another process) holds the index.

    Examples
    --------
    >>> store = Bm25Store.create(tmp / "bm25")  # doctest: +SKIP
    >>> store.add_batch(chunks); store.commit()  # doctest: +SKIP
    >>> [h.payload["qualname"] for h in store.search("parse toml config", limit=3)]  # doctest: +SKIP
    ['config::parse_toml_config', ...]
    """

    def __init__(
        self,
        index: tantivy.Index,
        path: Path,
        *,
        writable: bool,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
        num_threads: int = DEFAULT_WRITER_THREADS,
    ) -> None:
        self.path = path
        """Folder of the index."""
        self._index = index
        self._writer: tantivy.IndexWriter | None = None
        self._closed = False
        self._files: FileRecords | None = None
        if writable:
            try:
                self._writer = index.writer(heap_size=heap_bytes, num_threads=num_threads)
            except ValueError as e:
                if "LockBusy" in str(e) or "lock" in str(e).lower():
                    raise IndexWriteError(
                        f"the BM25 index at {path} is already open for writing (by this "
                        "or another process); only one writer at a time can change an "
                        "index: wait for the other run to finish, or close its store"
                    ) from e
                raise IndexWriteError(f"cannot write the BM25 index at {path}: {e}") from e
        try:
            self._files = FileRecords(path, writable=writable, heap_bytes=FILE_RECORDS_HEAP_BYTES)
            if self._files.created and self.count():
                # an index from before the records: made once from the stored chunks
                self._files.add(_record_bodies(file_texts(self.iter_payloads())))
                self._files.commit()
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
        num_threads: int = DEFAULT_WRITER_THREADS,
    ) -> Bm25Store:
        """Open the index at ``path`` for writing, creating the folder and index if missing.

        The same as ``Bm25Store.open(path, writable=True)``.

        Parameters
        ----------
        path
            Index folder; parents are created.
        heap_bytes
            Writer memory budget in bytes (Tantivy needs at least 15 MB per thread).
        num_threads
            Writer indexing threads.

        Returns
        -------
        Bm25Store
            A writable store.

        Raises
        ------
        IndexIdentityError
            The folder holds an index with another schema.
        IndexWriteError
            The folder cannot be written, or another writer holds the index.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise IndexWriteError(f"cannot create the BM25 index folder {path}: {e}") from e
        index = cls._open_index(path)
        return cls(index, path, writable=True, heap_bytes=heap_bytes, num_threads=num_threads)

    @classmethod
    def open(
        cls,
        path: str | Path,
        writable: bool = False,
        *,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
        num_threads: int = DEFAULT_WRITER_THREADS,
    ) -> Bm25Store:
        """Open an index, read-only unless ``writable``.

        A writable open creates the folder and an empty index when missing (the
        writer is what builds an index); a read-only open needs an existing one.

        Parameters
        ----------
        path
            Index folder.
        writable
            Become the index's writer (fails while another writer holds it).
        heap_bytes, num_threads
            Writer settings, as for :meth:`create`.

        Returns
        -------
        Bm25Store

        Raises
        ------
        IndexNotFoundError
            Read-only, and no index at ``path``.
        IndexIdentityError
            The index has another schema (built by another version).
        IndexWriteError
            ``writable`` and another writer holds the index, or the folder cannot
            be created.
        """
        path = Path(path)
        if writable:
            return cls.create(path, heap_bytes=heap_bytes, num_threads=num_threads)
        if not _is_index_dir(path):
            raise IndexNotFoundError(f"no BM25 index at {path}; build one with `rcm-dask index`")
        index = cls._open_index(path)
        return cls(index, path, writable=writable, heap_bytes=heap_bytes, num_threads=num_threads)

    @staticmethod
    def _open_index(path: Path) -> tantivy.Index:
        """Open (or create, in an empty folder) the index, checking its schema."""
        try:
            # reuse=True opens an existing index and verifies its schema equals ours.
            return tantivy.Index(_SCHEMA, path=str(path), reuse=True)
        except ValueError as e:
            if "schema does not match" in str(e):
                raise IndexIdentityError(
                    f"the BM25 index at {path} was built with another schema (another "
                    "rcm_dask version); re-run indexing with --force to rebuild it"
                ) from e
            raise IndexWriteError(f"cannot open the BM25 index at {path}: {e}") from e

    @property
    def writable(self) -> bool:
        """Whether this store holds the index's writer."""
        return self._writer is not None

    def _require_writer(self) -> tantivy.IndexWriter:
        """The writer, or an error saying why there is none."""
        if self._writer is None:
            state = "closed" if self._closed else "opened read-only"
            raise IndexWriteError(
                f"the BM25 index at {self.path} was {state}; it cannot be changed"
            )
        return self._writer

    def add_batch(
        self,
        chunks: Sequence[Chunk],
        encoded: Sequence[tuple[dict[str, Any], str]] | None = None,
    ) -> None:
        """Add chunks (visible after :meth:`commit`).

        Adding does not replace: delete a file's old chunks first (:meth:`delete_paths`).

        Parameters
        ----------
        chunks
            Chunks to index.
        encoded
            Their :func:`~rcm_dask.stores.encode_payloads`, when the caller has them
            already (the index writer encodes each batch once for both stores).

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or Tantivy refused a document.
        """
        writer = self._require_writer()
        if encoded is None:
            encoded = encode_payloads(chunks)
        # a batch holds the chunks of a few files: each path's words are worked out once
        path_words: dict[str, str] = {}
        try:
            add = writer.add_document
            for payload, text in encoded:
                path = str(payload["path"])
                words = path_words.get(path)
                if words is None:
                    words = path_words[path] = _with_identifier_words(path)
                add(_document(payload, text.encode("utf-8"), path, words))
        except ValueError as e:
            raise IndexWriteError(f"the BM25 index at {self.path} refused a chunk: {e}") from e

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete every chunk of the given files (visible after :meth:`commit`).

        Parameters
        ----------
        paths
            File paths exactly as stored (relative to the root).

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or Tantivy refused the delete.
        """
        self._delete_terms("path", paths)
        self._records().delete_paths(paths)

    def add_file_records(self, texts: Mapping[str, str]) -> None:
        """Add the whole-file records of complete files (``path -> text``, the file's
        chunks' code: :func:`~rcm_dask.stores.file_records.file_texts`); visible after
        :meth:`commit`. Delete the files' old ones first (:meth:`delete_paths` does).

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or Tantivy refused a record.
        """
        self._records().add(_record_bodies(texts))

    def _records(self) -> FileRecords:
        """The whole-file records, writable (this store is the writer)."""
        self._require_writer()
        assert self._files is not None
        return self._files

    def search_files(
        self,
        query: str,
        limit: int = 50,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Rank whole files by BM25 over all their code (:mod:`~rcm_dask.stores.file_records`).

        The query is reduced to terms as :meth:`search` reduces it. Returns ``(path,
        score)`` pairs, best first; empty when the index has no file records yet (it
        was built before them and no run has added to it since).
        """
        if self._files is None or (not self._files.present and not self.writable):
            # a read-only store opened before a run made the records: look again
            self._files = FileRecords(self.path, writable=False, heap_bytes=0)
        terms = query_terms(query, skip_stop_words=True)
        return self._files.search(terms, limit, paths=paths, exclude_paths=exclude_paths)

    def file_record_paths(self) -> list[str]:
        """The paths that have a whole-file record, sorted (for tests and tools)."""
        if self._files is None:
            self._files = FileRecords(self.path, writable=False, heap_bytes=0)
        return self._files.paths()

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete chunks by id (visible after :meth:`commit`).

        Parameters
        ----------
        ids
            Chunk ids.

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or Tantivy refused the delete.
        """
        self._delete_terms("id", ids)

    def _delete_terms(self, field: str, values: Iterable[str]) -> None:
        """Queue one delete of every document whose ``field`` is one of ``values``."""
        writer = self._require_writer()
        values = list(dict.fromkeys(values))
        try:
            if len(values) == 1:
                writer.delete_documents_by_term(field, values[0])
            elif values:
                writer.delete_documents_by_query(
                    tantivy.Query.term_set_query(_SCHEMA, field, values)
                )
        except ValueError as e:
            raise IndexWriteError(f"the BM25 index at {self.path} refused a delete: {e}") from e

    def commit(self) -> None:
        """Make every write so far durable and visible to searches.

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or the commit failed (the previous
            commit stays intact).
        """
        writer = self._require_writer()
        try:
            writer.commit()
        except ValueError as e:
            raise IndexWriteError(f"commit of the BM25 index at {self.path} failed: {e}") from e
        self._index.reload()
        # after the chunks: a crash between the two leaves the files pending (the
        # manifest is committed last), and the next run writes both again
        self._records().commit()

    def reload(self) -> None:
        """Point searches at the latest commit (every read does this already)."""
        self._index.reload()

    def _searcher(self) -> tantivy.Searcher:
        """A searcher over the latest commit."""
        # A reload costs microseconds and lets a read-only store see commits made
        # by the writer since it was opened.
        self._index.reload()
        return self._index.searcher()

    def search(
        self,
        query: str,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> list[StoreHit]:
        """Rank chunks by BM25 over their symbol, docs, code, module and path words.

        Parameters
        ----------
        query
            Free text in any form: words, identifiers (``ParseTomlConfig``), Rust
            (``fn foo(&mut self)``), stray quotes or operators. Never a syntax error:
            it is reduced to terms (:func:`query_terms`, stop words left out) that
            are OR-ed, each weighted by :data:`FIELD_BOOSTS`.
        limit
            Most hits returned.
        kinds
            Keep only chunks of these kinds; None or empty keeps all.
        paths
            Keep only chunks of these files (exact paths); None or empty keeps all.
        exclude_paths
            Leave out the chunks of these files (exact paths), inside the query: the
            ``limit`` best of the others come back.

        Returns
        -------
        list of StoreHit
            Best first; the score is the (boosted) BM25 score. Empty when the
            query holds no word.
        """
        terms = query_terms(query, skip_stop_words=True)
        if not terms or limit <= 0:
            return []
        schema = _SCHEMA
        should = [
            (
                tantivy.Occur.Should,
                tantivy.Query.boost_query(tantivy.Query.term_query(schema, field, term), boost),
            )
            for term in terms
            for field, boost in FIELD_BOOSTS.items()
        ]
        clauses = [(tantivy.Occur.Must, tantivy.Query.boolean_query(should))]
        for field, values in (("kind", kinds), ("path", paths)):
            if values:
                # Score 0: a filter must not change the BM25 ranking.
                allowed = tantivy.Query.term_set_query(schema, field, list(values))
                clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(allowed, 0.0)))
        if exclude_paths:
            unwanted = tantivy.Query.term_set_query(schema, "path", list(exclude_paths))
            clauses.append((tantivy.Occur.MustNot, unwanted))
        searcher = self._searcher()
        result = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False)
        hits: list[StoreHit] = []
        for score, address in result.hits:
            payload = _doc_payload(searcher.doc(address))
            hits.append(StoreHit(id=str(payload["id"]), score=float(score), payload=payload))
        return hits

    def get(
        self,
        ids: Sequence[str] = (),
        *,
        paths: Sequence[str] = (),
        kinds: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[StoreHit]:
        """Stored chunks by id, or every chunk of some files (of some kinds), score 0, in
        no particular order; ids not in the index are left out. At least one of ``ids``
        and ``paths`` must be given."""
        clauses = [
            (tantivy.Occur.Must, tantivy.Query.term_set_query(_SCHEMA, field, list(dict.fromkeys(v))))
            for field, v in (("id", ids), ("path", paths), ("kind", kinds))
            if v
        ]
        if not (ids or paths):
            return []
        searcher = self._searcher()
        result = searcher.search(tantivy.Query.boolean_query(clauses), max(limit, len(ids)), count=False)
        hits = []
        for _score, address in result.hits:
            payload = _doc_payload(searcher.doc(address))
            hits.append(StoreHit(id=str(payload["id"]), score=0.0, payload=payload))
        return hits

    def count(self, paths: Sequence[str] | None = None) -> int:
        """Number of chunks in the latest commit.

        Parameters
        ----------
        paths
            Count only the chunks of these files (exact paths); None counts all.

        Returns
        -------
        int
        """
        searcher = self._searcher()
        if paths is None:
            return int(searcher.num_docs)
        if not paths:
            return 0
        query = tantivy.Query.term_set_query(_SCHEMA, "path", list(paths))
        result = searcher.search(query, 1, count=True)
        return int(result.count or 0)  # type: ignore[attr-defined]  # missing from the stub

    def deleted_count(self) -> int:
        """Deleted chunks that Tantivy still keeps in the latest commit's segments.

        A delete only marks a document; it leaves the segment (and stops counting in
        the BM25 statistics: document frequencies, average lengths) when the segment
        is merged, which Tantivy's merge policy may never do for a small index. Until
        then scores differ from those of an index built without the deletes.

        Returns
        -------
        int
            0 when every stored document is live.
        """
        searcher = self._searcher()
        # every document has exactly one path term, and term document frequencies
        # count deleted documents as well
        stored = sum(int(n) for _, n in searcher.terms_with_prefix("path", ""))
        return max(0, stored - int(searcher.num_docs))

    def add_payloads(self, payloads: Iterable[dict[str, Any]]) -> int:
        """Add chunks from their stored payloads (visible after :meth:`commit`).

        Rebuilds the documents :meth:`add_batch` would have made from the chunks: what
        repairs the store from the vector store's payloads.

        Parameters
        ----------
        payloads
            :func:`~rcm_dask.stores.chunk_payload` dicts.

        Returns
        -------
        int
            Chunks added.

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or Tantivy refused a document.
        """
        writer = self._require_writer()
        code: list[dict[str, Any]] = []  # the files' records are made of their chunks' code
        try:
            for payload in payloads:
                writer.add_document(_payload_document(payload))
                code.append({"path": payload["path"], "code": payload.get("code", "")})
        except ValueError as e:
            raise IndexWriteError(f"the BM25 index at {self.path} refused a chunk: {e}") from e
        self.add_file_records(file_texts(code))
        return len(code)

    def purge_deleted(self) -> int:
        """Rewrite the index when it keeps deleted documents (see :meth:`rewrite`).

        Returns
        -------
        int
            Deleted documents purged (0: there were none, nothing was rewritten).

        Raises
        ------
        IndexWriteError
            As :meth:`rewrite`.
        """
        deleted = self.deleted_count()
        if deleted:
            self.rewrite()
        return deleted

    def rewrite(self) -> int:
        """Rewrite the index from its stored payloads, in one commit.

        Tantivy offers no forced merge, so every live document is re-added from its
        stored payload and the old segments are dropped: the BM25 statistics, and so
        every score, become those of an index that never held a deleted chunk. Not
        only deleted documents skew them: a segment merged from segments that held
        deleted documents keeps counting their tokens in its average field length.
        The whole-file records are made again from the same payloads. Costs about one
        second per 15,000 chunks. A crash before the commit leaves
        the previous commit as it was.

        Returns
        -------
        int
            Chunks rewritten.

        Raises
        ------
        IndexWriteError
            The store is read-only or closed, or the rewrite failed (the previous
            commit stays intact).
        """
        writer = self._require_writer()
        records = self._records()
        searcher = self._searcher()
        total = int(searcher.num_docs)
        code: list[dict[str, Any]] = []
        try:
            # the searcher keeps reading the old segments until the commit
            writer.delete_all_documents()
            records.delete_all()
            if total:
                result = searcher.search(tantivy.Query.all_query(), total, count=False)
                for _score, address in result.hits:
                    raw = searcher.doc(address).get_first("payload")
                    if not isinstance(raw, (bytes, bytearray)):
                        raise ValueError("a document without a stored payload")
                    payload = json.loads(bytes(raw).decode("utf-8"))
                    writer.add_document(_payload_document(payload, bytes(raw)))
                    code.append({"path": payload["path"], "code": payload.get("code", "")})
            records.add(_record_bodies(file_texts(code)))
        except (ValueError, IndexWriteError) as e:
            writer.rollback()
            records.rollback()
            raise IndexWriteError(
                f"rewriting the BM25 index at {self.path} failed: {e}; its last commit "
                "is intact"
            ) from e
        self.commit()
        return total

    def iter_payloads(self) -> Iterator[dict[str, Any]]:
        """Every stored payload of the latest commit, in index order.

        Meant for tests and tools that compare two indexes; sort before comparing.

        Yields
        ------
        dict
            One :func:`~rcm_dask.stores.chunk_payload` per chunk.
        """
        searcher = self._searcher()
        total = int(searcher.num_docs)
        if total == 0:
            return
        result = searcher.search(tantivy.Query.all_query(), total, count=False)
        for _score, address in result.hits:
            yield _doc_payload(searcher.doc(address))

    def close(self) -> None:
        """Release the writer lock, discarding uncommitted writes; idempotent.

        Call :meth:`commit` first to keep them. Waits for background segment merges
        so the folder is left tidy.
        """
        writer, self._writer = self._writer, None
        self._closed = True
        if self._files is not None:
            self._files.close()
        if writer is not None:
            writer.rollback()
            # Consumes the writer: merges finish and the lock file is released now,
            # not whenever the object happens to be collected.
            writer.wait_merging_threads()


    def __repr__(self) -> str:
        mode = "closed" if self._closed else "writable" if self.writable else "read-only"
        return f"Bm25Store({str(self.path)!r}, {mode})"


def _doc_payload(doc: tantivy.Document) -> dict[str, Any]:
    """Decode the stored payload of a Tantivy document."""
    raw = doc.get_first("payload")
    if not isinstance(raw, (bytes, bytearray)):
        raise TypeError(f"BM25 document without a stored payload: {doc.to_dict()!r}")
    payload: dict[str, Any] = json.loads(raw.decode("utf-8"))
    return payload


__all__ = [
    "DEFAULT_HEAP_BYTES",
    "DEFAULT_WRITER_THREADS",
    "FIELD_BOOSTS",
    "MAX_QUERY_TERMS",
    "Bm25Store",
    "document_text",
    "query_terms",
    "split_identifier_words",
]
