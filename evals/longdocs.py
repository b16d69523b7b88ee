"""A long-document retrieval set built offline from the machine's own manual pages (BEIR layout).

Pages are rendered by `recipes.man_pages`. The query is what a page's NAME line says it is about
(the part after " - ", so the command name is not given away); the document is the rest of the
page. Only long pages (by default >= 4,000 characters, about 1,000 tokens and more) are used, so
that how much of a page a model reads matters. Only the held-out fifth of the pages
(`recipes.man_pages.is_held_out`, which the training data never reads) is used. Its queries are
split, by a hash of the page's name, into a dev third (`qrels/dev.tsv`: for choosing search
settings) and a test rest (`qrels/test.tsv`: what is reported); both search the whole corpus.

    python -m evals.longdocs OUT_DIR        # then: retriever eval beir OUT_DIR --model ... --hybrid
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recipes.man_pages import MAN_ROOT, ManPage, is_held_out, page_files, render_pages

MIN_PAGE_CHARS = 4000


def is_dev(name: str) -> bool:
    """Whether a page's query belongs to the dev third of the set."""
    return int(hashlib.sha256(b"dev" + name.encode()).hexdigest(), 16) % 3 == 0


def build(out_dir: str | Path, max_queries: int = 300, min_chars: int = MIN_PAGE_CHARS,
          root: Path = MAN_ROOT) -> dict[str, int]:
    """Writes corpus.jsonl, queries.jsonl and qrels/dev.tsv, qrels/test.tsv of the held-out long pages.

    Held-out pages are taken in a fixed pseudo-random order (by hash) until `max_queries` long
    ones are found; a page whose query repeats an earlier one (aliases, families of library
    calls) is skipped, so every query has exactly one relevant document.
    """
    files = [p for p in page_files(root) if is_held_out(p.name.removesuffix(".gz"))]
    files.sort(key=lambda p: hashlib.sha256(b"order" + p.name.encode()).hexdigest())
    pages: list[ManPage] = []
    seen: set[str] = set()
    for start in range(0, len(files), 200):
        for page in render_pages(files[start:start + 200]):
            if len(page.text) >= min_chars and page.query.lower() not in seen and len(pages) < max_queries:
                seen.add(page.query.lower())
                pages.append(page)
        if len(pages) >= max_queries:
            break
    out = Path(out_dir)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for page in pages:
            f.write(json.dumps({"_id": page.name, "title": "", "text": page.text}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for page in pages:
            f.write(json.dumps({"_id": f"q-{page.name}", "text": page.query}) + "\n")
    for split in ("dev", "test"):
        with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for page in pages:
                if is_dev(page.name) == (split == "dev"):
                    f.write(f"q-{page.name}\t{page.name}\t1\n")
    dev = sum(is_dev(page.name) for page in pages)
    return {"documents": len(pages), "queries": len(pages), "dev_queries": dev, "test_queries": len(pages) - dev}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m evals.longdocs OUT_DIR")
    print(build(sys.argv[1]))
