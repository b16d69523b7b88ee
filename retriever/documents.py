"""Files -> documents: what `retriever index PATH...` reads, and what it could not read.

A folder is walked recursively. Plain files (`.txt`, `.md`, `.rst`, `.html`/`.htm`) are one
document each, whose id is the path relative to the folder given (a file given itself: its path
as given). Record files (`.jsonl`,
`.json`, `.csv`, `.parquet`) hold one document per row with `_id` or `id`, `title` and `text`
columns; other columns become the document's metadata. A folder holding `corpus.jsonl` is a BEIR
folder: only its corpus is read (never its queries). JSON Lines are read line by line so that a
bad line is reported as file:line and the others still load; the other record formats go
through `datasets`. `READERS` maps each suffix to its reader: a new format is one entry there.

Nothing unreadable stops the run: each skipped file or row becomes a `Problem`, and the caller
reports them all at the end.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ID_COLUMNS = ("_id", "id")
# Bytes looked at to tell a binary file from text.
_SNIFF_BYTES = 8192


@dataclass
class Document:
    id: str
    text: str
    title: str = ""
    source: str = ""  # the file it came from (absolute), or "" for documents added from Python
    metadata: dict = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """What decides whether a re-indexed document changed: its title, text and metadata."""
        payload = json.dumps([self.title, self.text, self.metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class Problem:
    """Something skipped, and where: a file, or a file and line (or row)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


class CorpusError(ValueError):
    """A path given does not exist."""


class SpilledDocuments:
    """A corpus's documents on disk: each written once, as it is read from its file, to a temporary JSON
    Lines file, and read back from there whenever they are iterated (by several readers at once if need
    be). So a corpus of any size costs its count in memory, and no file is parsed twice."""

    def __init__(self):
        self._file = tempfile.NamedTemporaryFile(prefix="retriever-corpus-", suffix=".jsonl", delete=False)
        self._count = 0
        weakref.finalize(self, _remove, self._file)

    def append(self, document: Document) -> None:
        row = [document.id, document.text, document.title, document.source, document.metadata]
        self._file.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Document]:
        self._file.flush()
        with open(self._file.name, "rb") as spilled:
            for line in spilled:
                doc_id, text, title, source, metadata = json.loads(line)
                yield Document(doc_id, text, title, source, metadata)


def _remove(file) -> None:
    file.close()
    os.unlink(file.name)


@dataclass
class Corpus:
    documents: SpilledDocuments | list[Document]  # iterated more than once: a re-iterable
    problems: list[Problem]
    roots: list[str]  # the files and folders given, absolute: what a re-index may delete from
    ignored: list[str] = field(default_factory=list)  # files of other types inside the folders given


def as_document(item: dict | str, position: int) -> Document:
    """A document from the Python API: a string, or a dict with id/_id, text, title, metadata.
    Without an id, its id is a digest of its text: adding the same text again changes nothing."""
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        raise TypeError(f"document {position}: expected a dict or a str, got {type(item).__name__}")
    text = item.get("text")
    default_id = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] if isinstance(text, str) else ""
    try:
        return _record_document(dict(item), source="", default_id=default_id, where=f"document {position}")
    except ValueError as e:
        raise ValueError(f"document {position}: {e}") from None


def embedding_input(document: Document) -> str:
    """What is embedded for a document: its title, a newline and its text, as dense retrievers are
    trained and evaluated (BEIR's "title text"); the text alone when it opens with its title."""
    title = document.title.strip()
    if not title or title.lower() in document.text[: len(title) + 200].lower():
        return document.text
    return f"{title}\n{document.text}"


def read_corpus(paths: list[str | Path]) -> Corpus:
    """All documents under `paths` (possibly none), with every skipped file or row listed, ids unique:
    the first document of each id is kept, a later one is a problem naming both places, and a page
    reached twice (a folder and a file in it, both given) is read once. The documents are spilled to
    disk as they are read (`SpilledDocuments`)."""
    documents = SpilledDocuments()
    problems: list[Problem] = []
    roots: list[str] = []
    ignored: list[str] = []
    first_source: dict[str, str] = {}  # id -> where it was first read
    pages: set[str] = set()
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise CorpusError(f"{given}: no such file or folder")
        roots.append(str(path.resolve()))
        for file, doc_id_base in _files(path, ignored):
            if str(file.resolve()) in pages:
                continue
            for item in _read_file(file, doc_id_base):
                if isinstance(item, Problem):
                    problems.append(item)
                elif item.id in first_source:
                    problems.append(Problem(item.source, f"duplicate id {item.id!r} (first in "
                                                         f"{first_source[item.id]}); skipped"))
                else:
                    first_source[item.id] = item.source
                    pages.update([item.source] if is_page(item) else [])
                    documents.append(item)
    return Corpus(documents, problems, roots, ignored)


def _files(path: Path, ignored: list[str]) -> Iterator[tuple[Path, str]]:
    """(file, id of a plain document there) for each readable kind of file under `path`; the other
    files of a folder are added to `ignored` (hidden ones aside)."""
    if path.is_file():
        yield path, path.as_posix()  # as given: two README.md of different folders stay apart
        return
    if (path / "corpus.jsonl").is_file():
        yield path / "corpus.jsonl", "corpus.jsonl"
        return
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue  # .git, .retriever, editor files
        if file.is_file() and file.suffix.lower() in READERS:
            yield file, relative.as_posix()
        elif file.is_file():
            ignored.append(str(file))


def _read_file(file: Path, doc_id: str) -> Iterator[Document | Problem]:
    suffix = file.suffix.lower()
    if suffix not in READERS:
        yield Problem(str(file), f"unsupported file type {suffix or '(none)'}; expected one of "
                                 f"{', '.join(sorted(READERS))}")
        return
    try:
        yield from READERS[suffix](file, doc_id, str(file.resolve()))
    except OSError as e:
        yield Problem(str(file), f"cannot read: {e.strerror or e}")


def _is_binary(file: Path) -> bool:
    with file.open("rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


# ---- the readers: (file, id of a plain document, source) -> documents and problems ----

def _text_reader(read_text):
    """A reader of a text format: binary files and invalid UTF-8 are problems, the rest is decoded."""
    def read(file: Path, doc_id: str, source: str) -> Iterator[Document | Problem]:
        data = file.read_bytes()
        if b"\0" in data[:_SNIFF_BYTES]:
            yield Problem(str(file), "binary file, not text")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Problem(str(file), f"not valid UTF-8 (byte {e.start})")
            return
        yield from read_text(file, text, doc_id, source)

    return read


def _page_reader(title_and_text):
    """A reader of a plain format: one document per file, its title found by `title_and_text`
    (the file name when there is none)."""
    def read(file: Path, text: str, doc_id: str, source: str) -> Iterator[Document | Problem]:
        title, text = title_and_text(text)
        if not text.strip():
            yield Problem(str(file), "empty document")
            return
        yield Document(id=doc_id, text=text, title=title or file.stem, source=source)

    return _text_reader(read)


def _untitled(text: str) -> tuple[str, str]:
    return "", text


def _markdown_title(text: str) -> tuple[str, str]:
    return next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("# ")), ""), text


def _rst_title(text: str) -> tuple[str, str]:
    lines = text.strip().splitlines()
    underlined = len(lines) > 1 and lines[1].strip() and set(lines[1].strip()) <= set("=-~#*^\"'")
    return (lines[0].strip() if underlined else ""), text


def read_jsonl(file: Path, source: str) -> Iterator[tuple[int, Document | Problem]]:
    """(line number, document or problem) for each non-blank line of a JSON Lines file, read a line at
    a time (a file of any size costs one line in memory)."""
    if _is_binary(file):
        yield 1, Problem(str(file), "binary file, not text")
        return
    with file.open("rb") as lines:
        for line_number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_number, Problem(str(file), f"not valid UTF-8 (byte {e.start} of the line)", line_number)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_number, Problem(str(file), f"invalid JSON ({e.msg})", line_number)
                continue
            yield line_number, _row_document(row, file, line_number, source)


def _read_jsonl(file: Path, doc_id: str, source: str) -> Iterator[Document | Problem]:
    for _, item in read_jsonl(file, source):
        yield item


def _read_json(file: Path, text: str, doc_id: str, source: str) -> Iterator[Document | Problem]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        yield Problem(str(file), f"invalid JSON ({e.msg})", e.lineno)
        return
    if isinstance(rows, dict):  # {"data": [...]} or a single record
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 and "text" not in rows else [rows]
    if not isinstance(rows, list):
        yield Problem(str(file), "expected a list of records")
        return
    for index, row in enumerate(rows, 1):
        yield _row_document(row, file, index, source)


def _table_reader(kind: str):
    """A reader of a table format through `datasets` (csv: rows numbered as lines, after the header)."""
    def read(file: Path, doc_id: str, source: str) -> Iterator[Document | Problem]:
        if kind == "csv" and _is_binary(file):
            yield Problem(str(file), "binary file, not text")
            return
        import datasets

        datasets.disable_progress_bars()
        try:
            table = datasets.Dataset.from_parquet(str(file)) if kind == "parquet" else \
                datasets.Dataset.from_csv(str(file), keep_default_na=False)
        except Exception as e:  # pyarrow and pandas raise many kinds; one line for the user
            yield Problem(str(file), f"cannot read {kind}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        first = 2 if kind == "csv" else 1
        for index, row in enumerate(table):
            yield _row_document(row, file, first + index, source)

    return read


def _row_document(row, file: Path, line: int, source: str) -> Document | Problem:
    if not isinstance(row, dict):
        return Problem(str(file), f"expected an object, got {type(row).__name__}", line)
    try:
        return _record_document(row, source, default_id=f"{file.name}:{line}", where=f"{file}:{line}")
    except ValueError as e:
        return Problem(str(file), str(e), line)


def _record_document(row: dict, source: str, default_id: str, where: str) -> Document:
    text = row.pop("text", None)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no 'text' (or it is empty)")
    doc_id = next((row.pop(c) for c in ID_COLUMNS if c in row and row[c] not in (None, "")), None)
    for c in ID_COLUMNS:
        row.pop(c, None)
    title = row.pop("title", None) or ""
    metadata = row.pop("metadata", None) or {}
    if not isinstance(metadata, dict):
        metadata = {"metadata": metadata}
    metadata.update(row)
    return Document(id=str(doc_id) if doc_id is not None else default_id, text=text, title=str(title),
                    source=source, metadata=_json_safe(metadata, where))


def _json_safe(metadata: dict, where: str) -> dict:
    try:
        return json.loads(json.dumps(metadata, default=str))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: metadata is not JSON-serialisable ({e})") from None


class _HTMLText(html.parser.HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "svg"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "pre", "blockquote", "table", "ul", "ol", "dd", "dt", "header", "footer"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skipping:
            self.parts.append(data)


# Sphinx's and MkDocs' heading permalinks (the "¶" after every heading)
_PERMALINKS = '//a[contains(concat(" ", @class, " "), " headerlink ")]'


def html_text(markup: str) -> tuple[str, str]:
    """(title, main text) of an HTML page. The main content is trafilatura's: navigation, sidebars,
    headers, footers and other page furniture dropped, headings and list items on their own lines,
    tables kept. A page too small for it to find an article in keeps all its visible text (scripts
    and styles dropped, blocks on their own lines)."""
    import trafilatura  # on the indexing path only

    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    title = " ".join("".join(parser.title_parts).split())
    main = trafilatura.extract(markup, output_format="txt", include_tables=True, include_comments=False,
                               favor_recall=True, prune_xpath=_PERMALINKS) if markup.strip() else None
    if main:  # code keeps its indentation
        return title, "\n".join(line.rstrip() for line in main.splitlines() if line.strip())
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return title, "\n".join(line for line in lines if line)


# One entry per file format: suffix -> reader. A page is one document (its id: its path); a record
# file holds one a row (ids from the rows).
_markdown = _page_reader(_markdown_title)
_html = _page_reader(html_text)
PAGES = {
    ".txt": _page_reader(_untitled), ".md": _markdown, ".markdown": _markdown, ".rst": _page_reader(_rst_title),
    ".html": _html, ".htm": _html,
}
RECORDS = {
    ".jsonl": _read_jsonl, ".json": _text_reader(_read_json),
    ".csv": _table_reader("csv"), ".parquet": _table_reader("parquet"),
}
READERS = {**PAGES, **RECORDS}


def is_page(document: Document) -> bool:
    """Whether a document is a whole file (a page), whose id is its path."""
    return Path(document.source).suffix.lower() in PAGES
