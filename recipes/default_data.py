"""Training data of the default model, built offline from what this machine holds.

Sources (licences in retriever/default_model/README.md):
- the (query, passage) pairs of `../shared/data/train`, each source capped (`PAIR_CAPS`) so that
  Wikipedia, 69% of the pairs there, becomes about a quarter of the mix; whole Wikipedia
  articles are kept together (`group`) so the training can rebuild long articles from them;
- Debian's package descriptions (apt's Translation-en lists): synopsis -> long description;
- manual pages (recipes/man_pages.py renders them): NAME line -> page, the long documents; the
  fifth of pages held out for evaluation (`recipes.man_pages.is_held_out`) is never read;
- a sample of the raw texts of `../shared/data/train`, for distillation.

It writes three xz-compressed JSON Lines files (xz: the bundle travels to a GPU machine whose
upload is size-limited): `pairs.jsonl.xz` ({query, positive, source[, group]}), `man.jsonl.xz`
({query, text, name}) and `texts.jsonl.xz` ({text}), plus `manifest.json` with the counts.
SciFact is never read, nor the pairs of the development set (`is_dev_pair`: evals/devsets.py
builds it), so that search settings can be chosen on data no model was trained on.

    python -m recipes.default_data runs/default_model/data
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
APT_LISTS = Path("/var/lib/apt/lists")
# Pairs kept per source of ../shared/data/train (None: all). Wikipedia is capped in articles.
PAIR_CAPS: dict[str, int | None] = {
    "squad_dev_explorer": None,
    "medquad": 10_000,
    "pubmedqa_labeled": None,
    "covid_qa_deepset": None,
    "scitldr": None,
    "stackexchange_startups_title_body": 6_000,
    "stackexchange_startups_title_answer": 6_000,
}
WIKIPEDIA_ARTICLES = 3_000
DEBIAN_PAIRS = 12_000
MAN_PAGES = 3_000
RAW_TEXTS = 4_000
MAX_POSITIVE_CHARS = 1_500  # short pairs: enough for what a query is about, keeps the bundle small
MAX_MAN_CHARS = 24_000  # about 6k tokens


def is_dev_pair(query: str) -> bool:
    """Whether a pair (by its query) belongs to the development set: one in fifty, never trained on."""
    return int(hashlib.sha256(b"dev" + query.encode("utf-8")).hexdigest(), 16) % 50 == 0


def read_rows(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    # preset 9: its 64 MiB window also catches passages repeated far apart (SQuAD paragraphs)
    with lzma.open(path, "wt", encoding="utf-8", preset=9) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def cut_text(text: str, limit: int) -> str:
    """At most `limit` characters, ending at a sentence or word boundary when one is near."""
    if len(text) <= limit:
        return text
    text = text[:limit]
    boundary = max(text.rfind(". "), text.rfind("\n"))
    return text[: boundary + 1] if boundary > limit * 0.6 else text.rsplit(" ", 1)[0]


def shared_pairs(root: Path, rng: random.Random) -> list[dict]:
    """The capped mix of ../shared/data/train pairs; Wikipedia as whole articles."""
    pairs = []
    for source, cap in PAIR_CAPS.items():
        rows = [r for r in read_rows(root / source / "pairs.jsonl.gz") if not is_dev_pair(r["query"])]
        if cap is not None and len(rows) > cap:
            rows = rng.sample(rows, cap)
        pairs += [{"query": r["query"], "positive": cut_text(r["positive"], MAX_POSITIVE_CHARS),
                   "source": source} for r in rows]
    articles: dict[str, list[dict]] = {}
    for r in read_rows(root / "wikipedia_en" / "pairs.jsonl.gz"):
        if is_dev_pair(r["query"]):
            continue
        # queries are "Title" (the lead) or "Title: Section"
        articles.setdefault(r["query"].split(": ", 1)[0], []).append(r)
    # only articles whose lead is there, so a rebuilt article starts as the real one does
    titles = sorted(t for t, rows in articles.items() if any(r["query"] == t for r in rows))
    for title in rng.sample(titles, min(WIKIPEDIA_ARTICLES, len(titles))):
        rows = sorted(articles[title], key=lambda r: r["query"] != title)  # lead first
        pairs += [{"query": r["query"], "positive": cut_text(r["positive"], MAX_POSITIVE_CHARS),
                   "source": "wikipedia_en", "group": title} for r in rows]
    return pairs


def parse_translations(text: str) -> Iterator[tuple[str, str]]:
    """(synopsis, long description) of each paragraph of an apt Translation-en list."""
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        try:
            start = next(i for i, line in enumerate(lines) if line.startswith("Description-en: "))
        except StopIteration:
            continue
        synopsis = lines[start].removeprefix("Description-en: ").strip()
        body = []
        for line in lines[start + 1:]:
            if not line.startswith(" "):
                break
            # " ." is an empty line of the description; other lines are text
            body.append("" if line.strip() == "." else line.strip())
        description = "\n".join(" ".join(part.split("\n")) for part in "\n".join(body).split("\n\n")).strip()
        if synopsis and description:
            yield synopsis, description


def debian_pairs(rng: random.Random, lists: Path = APT_LISTS) -> list[dict]:
    """Synopsis -> long description of Debian's packages, from the Translation-en lists apt fetched
    (`apt-get update -o Acquire::Languages=en`); empty when there are none."""
    seen: set[str] = set()
    pairs = []
    for path in sorted(lists.glob("*Translation-en*")):
        # apt-helper decompresses whatever compression apt chose (lz4, xz, ...)
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True,
                              text=True, check=True).stdout
        for synopsis, description in parse_translations(text):
            # -dev, -doc, ... packages repeat their library's description: keep it once
            if len(description) >= 100 and description not in seen and not is_dev_pair(synopsis):
                seen.add(description)
                pairs.append({"query": synopsis, "positive": cut_text(description, MAX_POSITIVE_CHARS),
                              "source": "debian_descriptions"})
    return rng.sample(pairs, min(DEBIAN_PAIRS, len(pairs)))


def man_pages(rng: random.Random) -> list[dict]:
    """Training manual pages (never the held-out fifth), NAME query -> page."""
    from recipes.man_pages import is_held_out, page_files, render_pages

    files = [p for p in page_files() if not is_held_out(p.name.removesuffix(".gz"))]
    files = rng.sample(files, min(MAN_PAGES, len(files)))
    return [{"query": page.query, "text": cut_text(page.text, MAX_MAN_CHARS), "name": page.name}
            for page in render_pages(files) if len(page.text) >= 500]


def raw_texts(root: Path, rng: random.Random) -> list[dict]:
    texts = [r["text"] for source in sorted(root.iterdir()) if (source / "text.jsonl.gz").is_file()
             for r in read_rows(source / "text.jsonl.gz")]
    return [{"text": cut_text(t, MAX_POSITIVE_CHARS)} for t in rng.sample(texts, min(RAW_TEXTS, len(texts)))]


def build(out_dir: str | Path, root: Path = SHARED_TRAIN, seed: int = 0) -> dict:
    """Writes the bundle to out_dir and returns its manifest (counts per source)."""
    from rich.console import Console

    console = Console(stderr=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with console.status("pairs of ../shared/data/train"):
        pairs = shared_pairs(root, rng)
    with console.status("Debian package descriptions"):
        pairs += debian_pairs(rng)
    with console.status("manual pages"):
        man = man_pages(rng)
    with console.status("raw texts"):
        texts = raw_texts(root, rng)
    with console.status("writing"):
        _write_jsonl(out / "pairs.jsonl.xz", pairs)
        _write_jsonl(out / "man.jsonl.xz", man)
        _write_jsonl(out / "texts.jsonl.xz", texts)
    sources: dict[str, int] = {}
    for pair in pairs:
        sources[pair["source"]] = sources.get(pair["source"], 0) + 1
    manifest = {"seed": seed, "pairs": sources, "man_pages": len(man), "raw_texts": len(texts)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load(data_dir: str | Path) -> tuple[list[dict], list[dict], list[str]]:
    """The bundle: pairs, man pages and raw texts."""
    data = Path(data_dir)
    return (list(read_rows(data / "pairs.jsonl.xz")), list(read_rows(data / "man.jsonl.xz")),
            [r["text"] for r in read_rows(data / "texts.jsonl.xz")])


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m recipes.default_data OUT_DIR")
    print(json.dumps(build(sys.argv[1]), indent=2))
