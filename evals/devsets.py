"""Development data for choosing search settings (the fusion method and weight): never SciFact,
never a set reported as zero-shot, never trained on.

`train-dev`: (query, positive) pairs of ../shared/data/train that the default model's training
data leaves out (`recipes.default_data.is_dev_pair`), from the sources it samples from (so that
unused pairs exist): MedQuAD, the two Stack Exchange sets and Wikipedia. Pairs that a given older
bundle holds are left out too, so that the model trained on that bundle never saw them either.
The corpus is every chosen pair's passage (as the training cuts it); the first `max_queries`
pairs, in a fixed order, are the queries (`qrels/dev.tsv`). The man-page set's dev split is the
other development set (evals/longdocs.py).

    python -m evals.devsets OUT_DIR [--exclude-bundle runs/v1_data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from recipes.default_data import MAX_POSITIVE_CHARS, SHARED_TRAIN, cut_text, is_dev_pair, read_rows

SOURCES = ("medquad", "stackexchange_startups_title_body", "stackexchange_startups_title_answer", "wikipedia_en")


def build(out_dir: str | Path, root: Path = SHARED_TRAIN, exclude_bundle: Path | None = None,
          max_pairs: int = 4000, max_queries: int = 1000) -> dict[str, int]:
    """Writes corpus.jsonl, queries.jsonl and qrels/dev.tsv; returns the counts."""
    seen = {row["query"] for row in read_rows(exclude_bundle / "pairs.jsonl.xz")} if exclude_bundle else set()
    pairs = [(source, row) for source in SOURCES for row in read_rows(root / source / "pairs.jsonl.gz")
             if is_dev_pair(row["query"]) and row["query"] not in seen]
    pairs.sort(key=lambda item: hashlib.sha256(b"order" + item[1]["query"].encode("utf-8")).hexdigest())
    pairs = pairs[:max_pairs]
    passages: dict[str, str] = {}  # passage -> doc id: a passage several queries share is one document
    qrels: dict[str, str] = {}
    for number, (source, row) in enumerate(pairs):
        passage = cut_text(row["positive"], MAX_POSITIVE_CHARS)
        doc_id = passages.setdefault(passage, f"{source}-{len(passages)}")
        if number < max_queries:
            qrels[f"q{number}"] = doc_id
    out = Path(out_dir)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for passage, doc_id in passages.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": passage}, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for number, (_, row) in enumerate(pairs[:max_queries]):
            f.write(json.dumps({"_id": f"q{number}", "text": row["query"]}, ensure_ascii=False) + "\n")
    with (out / "qrels" / "dev.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{qid}\t{doc_id}\t1\n" for qid, doc_id in qrels.items())
    return {"documents": len(passages), "queries": len(qrels)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build the train-dev set (evals/devsets.py).")
    parser.add_argument("out_dir")
    parser.add_argument("--exclude-bundle", type=Path, help="A data bundle whose pairs are left out too.")
    args = parser.parse_args()
    print(build(args.out_dir, exclude_bundle=args.exclude_bundle))
