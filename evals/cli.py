"""`retriever eval ...`: evaluation commands, each writing JSON results and a Markdown table."""

from __future__ import annotations

import datetime
import json
import platform
import re
import time
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Evaluate models: BEIR folders.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Evaluate models: BEIR folders."""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("modernbert-retriever", "torch", "transformers", "sentence-transformers", "bm25s",
                    "pytrec-eval-terrier"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_")


@app.command()
def beir(
    directory: Path = typer.Argument(..., help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv."),
    model: str = typer.Option(..., "--model", "-m", help="Model folder or hub id (sentence-transformers "
                                                         "layout or bare ModernBERT checkpoint)."),
    split: str = typer.Option("test", help="qrels split to score."),
    max_length: int = typer.Option(8192, help="Tokens per input, longer ones truncated."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Also score BM25 and BM25 + dense fusion (RRF, k=60)."),
    k: int = typer.Option(100, help="Hits retrieved per query (Recall@100 and MAP@100 need 100)."),
    batch_tokens: int = typer.Option(16384, help="Tokens per encoder batch."),
    device: str = typer.Option(None, help="cpu or cuda. Default: cuda when available."),
    output: Path = typer.Option(Path("eval-results"), help="Folder for the JSON results, Markdown table "
                                                           "and TREC run files."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """nDCG@10, Recall@100, MRR@10 and MAP@100 of a model on a BEIR folder, plus its TREC run file."""
    from encoder import CheckpointError, load_embedder
    from evals.beir import (
        BeirFormatError, bm25_run, dense_run, evaluate, load_beir, markdown_table, model_fingerprint,
        reciprocal_rank_fusion, write_trec_run,
    )

    started = time.perf_counter()
    try:
        dataset = load_beir(directory, split)
        embedder = load_embedder(model, device=device, max_length=max_length)
    except (BeirFormatError, CheckpointError, OSError) as e:
        typer.echo(f"error: {e}", err=True)  # one line, never wrapped
        raise typer.Exit(2) from None
    console.print(f"{directory}: {len(dataset.corpus)} documents, {len(dataset.queries)} {split} queries")

    runs = {"dense": dense_run(embedder, dataset, k=k, batch_tokens=batch_tokens)}
    if hybrid:
        runs["bm25"] = bm25_run(dataset, k=k)
        runs["hybrid"] = reciprocal_rank_fusion([runs["dense"], runs["bm25"]], k=k)

    name = f"{_slug(directory.name)}-{split}-{_slug(model)}"
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    for method, run in runs.items():
        results[method] = evaluate(dataset.qrels, run)
        write_trec_run(run, output / f"{name}-{method}.trec", tag=f"{_slug(model)}-{method}")
    report = {
        "dataset": str(directory),
        "split": split,
        "model": model,
        "fingerprint": model_fingerprint(embedder),
        "max_length": max_length,
        "dtype": str(embedder[0].model.dtype).removeprefix("torch."),
        "device": str(embedder.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "results": results,
    }
    (output / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [{"method": method, **metrics} for method, metrics in results.items()]
    table = markdown_table(rows, ["method", "ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"])
    (output / f"{name}.md").write_text(f"# {directory.name} ({split}), {model}\n\n{table}")
    if json_output:
        print(json.dumps(report, indent=2))
    else:
        Console().print(table)
        console.print(f"results, table and run files in {output}/{name}*")
