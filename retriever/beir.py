"""A BEIR folder: `corpus.jsonl`, `queries.jsonl` and `qrels/SPLIT.tsv`.

The corpus is read by the same reader as `retriever index` reads JSON Lines (`documents.py`), so
an evaluation sees exactly the documents (id, title, text, metadata) that search would serve;
here any line it cannot read is an error naming the file and line instead of a skipped row.
Query files (`queries.jsonl`, or the `.tsv` and plain-text files of `retriever search --queries`)
are read by `read_queries`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from retriever.documents import Document, Problem, read_jsonl

Qrels = dict[str, dict[str, int]]  # query id -> {doc id: relevance}


class BeirFormatError(ValueError):
    """A BEIR folder or query file that cannot be read: the message names the file and line."""


@dataclass
class BeirDataset:
    corpus: dict[str, Document]
    queries: dict[str, str]  # query id -> text, only queries with judgements in the split
    qrels: Qrels


def read_corpus(path: Path) -> dict[str, Document]:
    """The documents of a corpus.jsonl by id; a line that cannot be read, or an id seen before, is an error."""
    if not path.is_file():
        raise BeirFormatError(f"{path}: not found")
    corpus: dict[str, Document] = {}
    for line_number, item in read_jsonl(path, str(path.resolve())):
        if isinstance(item, Problem):
            raise BeirFormatError(str(item))
        if item.id in corpus:
            raise BeirFormatError(f"{path}:{line_number}: duplicate _id {item.id!r}")
        corpus[item.id] = item
    return corpus


def read_queries(path: Path) -> dict[str, str]:
    """{query id: text} of a query file: `.jsonl` (`_id` or `id`, and `text`: BEIR's queries.jsonl),
    `.tsv` (id<TAB>text), or any other text file (one query a line, numbered from 1)."""
    if not path.is_file():
        raise BeirFormatError(f"{path}: not found")
    queries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                qid, text = str(row.get("_id", row.get("id", number))), row["text"]
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                raise BeirFormatError(f"{path}:{number}: expected a JSON object with a 'text' field") from None
        elif path.suffix == ".tsv":
            qid, _, text = line.partition("\t")
            if not text:
                raise BeirFormatError(f"{path}:{number}: expected id<TAB>query")
        else:
            qid, text = str(number), line
        if not isinstance(text, str) or not text.strip():
            raise BeirFormatError(f"{path}:{number}: empty query")
        queries[qid] = text
    if not queries:
        raise BeirFormatError(f"{path}: no queries")
    return queries


def read_qrels(path: Path) -> Qrels:
    if not path.is_file():
        raise BeirFormatError(f"{path}: not found")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as f:
        for line_number, fields in enumerate(csv.reader(f, delimiter="\t"), 1):
            if line_number == 1 and fields[:2] == ["query-id", "corpus-id"]:
                continue
            if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
                raise BeirFormatError(f"{path}:{line_number}: expected 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    return qrels


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """The corpus, the split's judgements and the queries judged in it."""
    directory = Path(directory)
    corpus = read_corpus(directory / "corpus.jsonl")
    queries = read_queries(directory / "queries.jsonl")
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise BeirFormatError(f"{qrels_path}: not found (is {split!r} a split of this dataset?)")
    qrels = read_qrels(qrels_path)
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise BeirFormatError(f"{qrels_path}: query ids not in queries.jsonl: {missing[:5]}")
    return BeirDataset(corpus, {q: queries[q] for q in qrels}, qrels)
