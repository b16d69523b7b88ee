"""TREC run files: what `retriever search --queries` and the evaluations write."""

from __future__ import annotations

from pathlib import Path

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}


def write_trec_run(run: Run, path: str | Path, tag: str) -> None:
    """TREC format: `qid Q0 docid rank score tag`, ranks from 1, best first."""
    with Path(path).open("w", encoding="utf-8") as f:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, 1):
                f.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")
