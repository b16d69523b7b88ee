"""Files -> documents: what `retriever index PATH...` reads, and what it could not read.

A folder is walked recursively. Plain files (`.txt`, `.md`, `.rst`, `.html`/`.htm`) are one
document each, whose id is the path relative to the folder given (a file given itself: its path
as given). Record files (`.jsonl`,
`.json`, `.csv`, `.parquet`) hold one document per row with `_id` or `id`, `title` and `text`
columns; other columns become the document's metadata. A folder holding `corpus.jsonl` is a BEIR
folder: only its corpus is read (never its queries). JSON Lines are read line by line so that a
bad line is reported as file:line and the others still load; the other record formats go
through `datasets`.

Nothing unreadable stops the run: each skipped file or row becomes a `Problem`, and the caller
reports them all at the end.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PLAIN_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}
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


@dataclass
class Corpus:
    documents: list[Document]
    problems: list[Problem]
    roots: list[str]  # the files and folders given, absolute: what a re-index may delete from


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


def read_corpus(paths: list[str | Path]) -> Corpus:
    """All documents under `paths` (possibly none), with every skipped file or row listed, ids unique."""
    documents: list[Document] = []
    problems: list[Problem] = []
    roots: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise CorpusError(f"{given}: no such file or folder")
        roots.append(str(path.resolve()))
        for file, doc_id_base in _files(path):
            for item in _read_file(file, doc_id_base):
                (problems if isinstance(item, Problem) else documents).append(item)
    documents = _unique(documents, problems)
    return Corpus(documents, problems, roots)


def _files(path: Path) -> Iterator[tuple[Path, str]]:
    """(file, id of a plain document there) for each readable kind of file under `path`."""
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
        if file.is_file() and file.suffix.lower() in PLAIN_SUFFIXES | RECORD_SUFFIXES:
            yield file, relative.as_posix()


def _read_file(file: Path, doc_id: str) -> Iterator[Document | Problem]:
    suffix = file.suffix.lower()
    if suffix not in PLAIN_SUFFIXES | RECORD_SUFFIXES:
        yield Problem(str(file), f"unsupported file type {suffix or '(none)'}; expected one of "
                                 f"{', '.join(sorted(PLAIN_SUFFIXES | RECORD_SUFFIXES))}")
        return
    try:
        data = file.read_bytes()
    except OSError as e:
        yield Problem(str(file), f"cannot read: {e.strerror or e}")
        return
    if b"\0" in data[:_SNIFF_BYTES] and suffix != ".parquet":
        yield Problem(str(file), "binary file, not text")
        return
    source = str(file.resolve())
    if suffix == ".parquet" or suffix == ".csv":
        yield from _read_table(file, suffix, source)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield Problem(str(file), f"not valid UTF-8 (byte {e.start})")
        return
    if suffix == ".jsonl":
        yield from _read_jsonl(file, text, source)
    elif suffix == ".json":
        yield from _read_json(file, text, source)
    else:
        yield from _read_plain(file, text, doc_id, source)


def _read_plain(file: Path, text: str, doc_id: str, source: str) -> Iterator[Document | Problem]:
    suffix = file.suffix.lower()
    title = ""
    if suffix in (".html", ".htm"):
        title, text = html_text(text)
    elif suffix in (".md", ".markdown"):
        title = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("# ")), "")
    elif suffix == ".rst":
        lines = text.strip().splitlines()
        if len(lines) > 1 and lines[1].strip() and set(lines[1].strip()) <= set("=-~#*^\"'"):
            title = lines[0].strip()
    if not text.strip():
        yield Problem(str(file), "empty document")
        return
    yield Document(id=doc_id, text=text, title=title or file.stem, source=source)


def _read_jsonl(file: Path, text: str, source: str) -> Iterator[Document | Problem]:
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield Problem(str(file), f"invalid JSON ({e.msg})", line_number)
            continue
        yield _row_document(row, file, line_number, source)


def _read_json(file: Path, text: str, source: str) -> Iterator[Document | Problem]:
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


def _read_table(file: Path, suffix: str, source: str) -> Iterator[Document | Problem]:
    import datasets

    datasets.disable_progress_bars()
    try:
        table = datasets.Dataset.from_parquet(str(file)) if suffix == ".parquet" else \
            datasets.Dataset.from_csv(str(file), keep_default_na=False)
    except Exception as e:  # pyarrow and pandas raise many kinds; one line for the user
        yield Problem(str(file), f"cannot read {suffix[1:]}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return
    # csv: data rows start at line 2 (after the header); parquet: rows from 1
    first = 2 if suffix == ".csv" else 1
    for index, row in enumerate(table):
        yield _row_document(row, file, first + index, source)


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


def _unique(documents: list[Document], problems: list[Problem]) -> list[Document]:
    """The first document of each id; later duplicates become problems naming both places."""
    first: dict[str, Document] = {}
    for doc in documents:
        if doc.id in first:
            problems.append(Problem(doc.source, f"duplicate id {doc.id!r} (first in {first[doc.id].source}); skipped"))
        else:
            first[doc.id] = doc
    return list(first.values())


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


def html_text(markup: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page: scripts and styles dropped, blocks on their own lines."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return " ".join("".join(parser.title_parts).split()), "\n".join(line for line in lines if line)
