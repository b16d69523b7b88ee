"""The machine's manual pages as plain text: what the default model trains on (recipes/default_data.py)
and what the long-document evaluation set is built from (evals/longdocs.py).

Each page is rendered with `man -l` at a fixed 80-column width, so the text is the same on every
run, and split into what its NAME line says the page is about (the part after " - ") and the rest.
A fixed fifth of all pages, chosen by a hash of the page's file name (`is_held_out`), is kept for
evaluation: the training data never reads it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = tuple(f"man{n}" for n in range(1, 9))
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
