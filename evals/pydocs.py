"""A question set over the Python documentation's HTML pages (BEIR layout), for what a user asks of
a documentation site: everyday questions, each answered by one page.

The pages are Debian's `python3-doc` (`/usr/share/doc/python3-doc/html`, Python Software Foundation
License Version 2; `apt-get install python3-doc`): the library reference, the tutorial and the
HOWTOs, read by `retriever index`'s own reader (`retriever.documents.read_corpus`: trafilatura's
main content), so the set scores the text the index holds. The questions and the page that
answers each are this repository's (`evals/data/pydocs_questions.tsv`, written for it, under the
repository's licence); they were written before any model was scored on them and are a test set
only: never trained on, never used to choose settings.

    python -m evals.pydocs OUT_DIR          # then: retriever eval beir OUT_DIR --hybrid
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from retriever.documents import read_corpus

HTML_ROOT = Path("/usr/share/doc/python3-doc/html")
QUESTIONS = Path(__file__).parent / "data" / "pydocs_questions.tsv"
SECTIONS = ("library/", "tutorial/", "howto/")


def build(out_dir: str | Path, root: Path = HTML_ROOT, questions: Path = QUESTIONS) -> dict[str, int]:
    """Writes corpus.jsonl (every page of SECTIONS), queries.jsonl and qrels/test.tsv."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no Python documentation here (apt-get install python3-doc)")
    corpus = read_corpus([root])
    pages = {doc.id: doc for doc in corpus.documents if doc.id.startswith(SECTIONS)}
    with questions.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if missing := sorted({row["page"] for row in rows} - set(pages)):
        raise ValueError(f"{questions}: pages not in {root}: {', '.join(missing)}")
    out = Path(out_dir)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc in pages.values():
            f.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for number, row in enumerate(rows):
            f.write(json.dumps({"_id": f"q{number}", "text": row["query"]}) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for number, row in enumerate(rows):
            f.write(f"q{number}\t{row['page']}\t1\n")
    return {"documents": len(pages), "queries": len(rows)}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m evals.pydocs OUT_DIR")
    print(build(sys.argv[1]))
