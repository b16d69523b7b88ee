"""A long-document retrieval set built offline from the machine's own manual pages (BEIR layout).

Each page is rendered to plain text (`man -l`, fixed 80-column width so the text is the same on
every run). The query is what its NAME line says the page is about (the part after " - ", so the
command name is not given away); the document is the rest of the page. Only long pages (by
default >= 4,000 characters, about 1,000 tokens and more) are used, so that how much of a page a
model reads matters.

A fixed fifth of all pages, chosen by a hash of the page's file name, is held out for evaluation:
`is_held_out` is also what the training-data builder (recipes/default_data.py) uses to keep
those pages out of training.

    python -m evals.longdocs OUT_DIR        # then: retriever eval beir OUT_DIR --model ... --hybrid
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = tuple(f"man{n}" for n in range(1, 9))
MIN_PAGE_CHARS = 4000
MAX_PAGE_CHARS = 60_000  # about 15k tokens: more than any model here reads
# The Google Cloud SDK installs 16k near-identical generated pages; they would be most of the set.
EXCLUDED_PREFIXES = ("gcloud",)
_HEADER = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]*$")  # section titles are flush-left capitals


@dataclass
class ManPage:
    name: str  # file name without .gz, e.g. "ls.1"
    query: str  # what the NAME line says the page is about
    text: str  # the page without its NAME section


def is_held_out(name: str) -> bool:
    """Whether a page (file name without .gz) belongs to the evaluation fifth."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 5 == 0


def page_files(root: Path = MAN_ROOT) -> list[Path]:
    """English manual pages of sections 1-8 in a fixed order; aliases (symbolic links) and
    generated families (EXCLUDED_PREFIXES) left out."""
    files = []
    for section in SECTIONS:
        directory = root / section
        if directory.is_dir():
            files += [p for p in directory.iterdir()
                      if p.is_file() and not p.is_symlink() and not p.name.startswith(EXCLUDED_PREFIXES)]
    return sorted(files, key=lambda p: p.name)


def render(path: Path) -> ManPage | None:
    """The page as plain text split into its NAME query and the rest; None for stubs and odd pages."""
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(["man", "-l", "-P", "cat", str(path)], capture_output=True, text=True, env=env,
                            errors="replace", timeout=60)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 5:
        return None
    lines = lines[1:-1]  # running header and footer: title, section, date
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "NAME" and _HEADER.match(line))
    except StopIteration:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and _HEADER.match(lines[i])), len(lines))
    name_line = " ".join(" ".join(lines[start + 1:end]).split())
    name_line = name_line.replace("\u2010 ", "")  # rejoin words hyphenated at line ends
    if " - " not in name_line:
        return None
    query = name_line.split(" - ", 1)[1].strip()
    text = "\n".join(lines[:start] + lines[end:]).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)[:MAX_PAGE_CHARS]
    if len(query) < 8:
        return None
    return ManPage(path.name.removesuffix(".gz"), query, text)


def render_pages(files: list[Path], workers: int = 4) -> list[ManPage]:
    """Rendered pages in the order of `files` (man runs as a subprocess, so threads suffice)."""
    with ThreadPoolExecutor(workers) as pool:
        return [page for page in pool.map(render, files) if page is not None]


def build(out_dir: str | Path, max_queries: int = 300, min_chars: int = MIN_PAGE_CHARS,
          root: Path = MAN_ROOT) -> dict[str, int]:
    """Writes corpus.jsonl, queries.jsonl and qrels/test.tsv of the held-out long pages.

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
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for page in pages:
            f.write(f"q-{page.name}\t{page.name}\t1\n")
    return {"documents": len(pages), "queries": len(pages)}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m evals.longdocs OUT_DIR")
    print(build(sys.argv[1]))
