"""`retriever eval ...`: evaluation commands, each writing JSON results and a Markdown table."""

from __future__ import annotations

import datetime
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from retriever.cli import Group

app = typer.Typer(cls=Group, no_args_is_help=True, add_completion=False,
                  help="Evaluate models: BEIR folders, mteb tasks, synthetic long-context tasks.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Evaluate models: BEIR folders, mteb tasks, synthetic long-context tasks."""


# The packages whose versions decide an evaluation's figures, recorded in every report.
REPORT_PACKAGES = ("modernbert-retriever", "torch", "transformers", "sentence-transformers", "bm25s",
                   "pytrec-eval-terrier", "mteb")


def _open_model(name: str, device: str | None, max_length: int):
    """The model, or one error line and exit status 2."""
    from encoder import CheckpointError
    from evals.beir import open_model
    from retriever.errors import RetrieverError
    from retriever.index import DEFAULT_MODEL, default_model_path

    try:
        return open_model(default_model_path() if name == DEFAULT_MODEL else name, device=device,
                          max_length=max_length)
    except (CheckpointError, RetrieverError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _model_facts(model) -> dict:
    """Which weights ran, and how: fingerprint, max length, dtype, device."""
    from evals.beir import model_fingerprint

    return {
        "fingerprint": model_fingerprint(model),
        "max_length": model.max_seq_length,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
    }


def _run_facts(started: float) -> dict:
    from retriever.manifest import package_versions

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), **package_versions(REPORT_PACKAGES)},
        "wall_time_s": round(time.perf_counter() - started, 2),
    }


def _write_report(output: Path, name: str, report: dict[str, Any], title: str, table: str, json_output: bool,
                  written: str) -> None:
    """NAME.json and NAME.md in `output`; the report as JSON on stdout, or the table and where the files are."""
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (output / f"{name}.md").write_text(f"# {title}\n\n{table}")
    if json_output:
        print(json.dumps(report, indent=2, default=str))
    else:
        Console().print(table)
        console.print(f"{written} in {output}/{name}*")


def _load_sets(sets: list[str], default_split: str) -> dict:
    """{"DIR:SPLIT": BeirDataset} of each argument; a DIR without a split reads `default_split`."""
    from retriever.beir import load_beir

    return {item: load_beir(*item.rsplit(":", 1)) if ":" in item else load_beir(item, default_split)
            for item in sets}


def _slug(text: str) -> str:
    """A file-name-safe short name: a hub id, or the last two parts of a local path."""
    if Path(text).exists():
        text = "_".join(Path(text).resolve().parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_")


@app.command()
def beir(
    directory: Path = typer.Argument(..., metavar="DIR",
                                     help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (the shipped model), a model folder or "
                                   "hub id (sentence-transformers layout or bare "
                                   "ModernBERT checkpoint)."),
    split: str = typer.Option("test", metavar="SPLIT", help="qrels split to score."),
    max_length: int = typer.Option(8192, metavar="TOKENS", help="Tokens per input, longer ones truncated."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Also score BM25 and its fusion with dense (the default "
                                                        "fusion of `retriever search --hybrid`)."),
    fusion: str = typer.Option(None, "--fusion", metavar="NAME[:WEIGHT]",
                               help="With --hybrid: fuse by NAME[:WEIGHT] (rrf, wrrf, minmax, "
                                    "zscore, dbsf) instead of the default."),
    k: int = typer.Option(100, metavar="N", help="Hits retrieved per query (Recall@100 and MAP@100 need 100)."),
    batch_tokens: int = typer.Option(16384, metavar="TOKENS", help="Tokens per encoder batch."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda. Default: cuda when available."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR", help="Folder for the JSON results, Markdown table "
                                                                          "and TREC run files."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """nDCG@10, Recall@100, MRR@10 and MAP@100 of a model on a BEIR folder, plus its TREC run file."""
    from evals.beir import bm25_run, dense_run, evaluate, fuse_runs, markdown_table
    from retriever.beir import BeirFormatError, load_beir
    from retriever.fusion import DEFAULT_FUSION, Fusion, candidate_depths
    from retriever.trec import write_trec_run

    started = time.perf_counter()
    try:
        fuse = Fusion.parse(fusion) if fusion else DEFAULT_FUSION
        dataset = load_beir(directory, split)
    except (BeirFormatError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)  # one line, never wrapped
        raise typer.Exit(2) from None
    embedder = _open_model(model, device, max_length)
    console.print(f"{directory}: {len(dataset.corpus)} documents, {len(dataset.queries)} {split} queries")

    # as hybrid search does: fused from the candidates `retriever search --hybrid` would fuse for k hits
    dense_depth, lexical_depth = candidate_depths(k)
    runs = {"dense": dense_run(embedder, dataset, k=dense_depth, batch_tokens=batch_tokens)}
    if hybrid:
        runs["bm25"] = bm25_run(dataset, k=lexical_depth)
        runs["hybrid"] = fuse_runs(runs["dense"], runs["bm25"], fuse, k=k)
    runs = {method: {qid: dict(list(hits.items())[:k]) for qid, hits in run.items()} for method, run in runs.items()}

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
        **({"fusion": str(fuse)} if hybrid else {}),
        **_model_facts(embedder),
        **_run_facts(started),
        "results": results,
    }
    rows = [{"method": method, **metrics} for method, metrics in results.items()]
    table = markdown_table(rows, ["method", "ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_100"])
    _write_report(output, name, report, f"{directory.name} ({split}), {model}", table, json_output,
                  "results, table and run files")


@app.command("fusion")
def fusion_command(
    sets: list[str] = typer.Argument(..., metavar="DIR:SPLIT",
                                     help="DIR:SPLIT of BEIR folders to choose on (development splits: never "
                                          "a set you report), e.g. runs/train-dev:dev runs/longdocs:dev."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (the shipped model), a model folder or "
                                   "hub id."),
    weights: str = typer.Option("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", metavar="W,W,...",
                                help="Dense weights to try, comma-separated."),
    max_length: int = typer.Option(8192, metavar="TOKENS", help="Tokens per input, longer ones truncated."),
    batch_tokens: int = typer.Option(16384, metavar="TOKENS", help="Tokens per encoder batch."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda. Default: cuda when available."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR", help="Folder for fusion-MODEL.json and .md."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """nDCG@10 of every fusion method and dense weight (and of each side alone) on each set, and their mean:
    the table the default fusion is chosen from. The candidates are those hybrid search fuses for 10 hits."""
    from evals.beir import bm25_run, dense_run, evaluate, fuse_runs, markdown_table
    from retriever.beir import BeirFormatError
    from retriever.fusion import METHODS, Fusion, candidate_depths

    started = time.perf_counter()
    try:
        datasets = _load_sets(sets, "dev")
        candidates = [Fusion("rrf")] + [Fusion(name, float(w)) for name, (_, weighted) in METHODS.items()
                                        if weighted for w in weights.split(",")]
    except (BeirFormatError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    embedder = _open_model(model, device, max_length)
    dense_depth, lexical_depth = candidate_depths(10)
    scores: dict[str, dict[str, float]] = {}  # method -> set -> nDCG@10
    for item, dataset in datasets.items():
        console.print(f"{item}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries")
        dense = dense_run(embedder, dataset, k=dense_depth, batch_tokens=batch_tokens)
        lexical = bm25_run(dataset, k=lexical_depth)
        runs = {"dense": dense, "bm25": lexical, **{str(f): fuse_runs(dense, lexical, f, k=10) for f in candidates}}
        for method, run in runs.items():
            scores.setdefault(method, {})[item] = evaluate(dataset.qrels, run)["ndcg_at_10"]
    for by_set in scores.values():
        by_set["mean"] = sum(by_set.values()) / len(datasets)
    best = max((m for m in scores if m not in ("dense", "bm25")), key=lambda m: scores[m]["mean"])
    report = {"sets": sets, "model": model, "best": best, **_model_facts(embedder), **_run_facts(started),
              "ndcg_at_10": scores}
    rows = [{"fusion": method, **by_set} for method, by_set in scores.items()]
    table = markdown_table(rows, ["fusion", *sets, "mean"])
    _write_report(output, f"fusion-{_slug(model)}", report, f"Fusion, nDCG@10, {model} (best: {best})", table,
                  json_output, "results and table")


@app.command()
def chunking(
    sets: list[str] = typer.Argument(..., metavar="DIR:SPLIT",
                                     help="DIR:SPLIT of BEIR folders, e.g. runs/longdocs:test."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (the shipped model), a model folder or hub id."),
    modes: str = typer.Option("window,late", "--modes", metavar="MODE,MODE", help="Chunking modes to compare."),
    max_length: int = typer.Option(None, metavar="TOKENS",
                                   help="Tokens per input (default: the model's), as `retriever index --max-length`."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (default: cpu), as `retriever index`."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR", help="Folder for chunking-MODEL.json and .md."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Window against late chunking through the index: each set indexed with each chunking (timed) and
    searched dense, lexical and hybrid, as `retriever index` and `retriever search` do; nDCG@10 and Recall@100."""
    from dataclasses import asdict

    from evals.beir import markdown_table
    from evals.chunking import measure
    from retriever.beir import BeirFormatError
    from retriever.embedding import Chunking
    from retriever.index import DEFAULT_MODEL, SEARCH_MODES

    started = time.perf_counter()
    try:
        datasets = _load_sets(sets, "test")
        chunkings = [Chunking(mode.strip()) for mode in modes.split(",")]
    except (BeirFormatError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    results = []
    for item, dataset in datasets.items():
        for chunk_mode in chunkings:
            console.print(f"{item}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries, "
                          f"{chunk_mode.mode} chunking")
            results.append(measure(item, dataset, chunk_mode, None if model == DEFAULT_MODEL else model,
                                   max_length, device))
    rows = [{"set": r.set, "chunking": r.chunking, "chunks": r.chunks, "index s": r.index_seconds,
             **{f"{mode} nDCG@10": r.scores[mode]["ndcg_at_10"] for mode in SEARCH_MODES},
             **{f"{mode} R@100": r.scores[mode]["recall_at_100"] for mode in SEARCH_MODES}} for r in results]
    report = {"sets": sets, "model": model, **_run_facts(started), "results": [asdict(r) for r in results]}
    table = markdown_table(rows, list(rows[0]))
    _write_report(output, f"chunking-{_slug(model)}", report, f"Chunking, {model}", table, json_output,
                  "results and table")


@app.command()
def dtype(
    sets: list[str] = typer.Argument(..., metavar="DIR:SPLIT",
                                     help="DIR:SPLIT of BEIR folders, e.g. ../shared/data/scifact:test."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (the shipped model), a model folder or hub id."),
    dtypes: str = typer.Option("float32,bfloat16", "--dtypes", metavar="DTYPE,DTYPE",
                               help="Encoder dtypes to compare; the first is the reference of the top-10 overlap."),
    max_length: int = typer.Option(None, metavar="TOKENS",
                                   help="Tokens per input (default: the model's), as `retriever index --max-length`."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (default: cpu), as `retriever index`."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR", help="Folder for dtype-MODEL.json and .md."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """bfloat16 against float32 through the index: each set indexed in each dtype (timed) and searched dense,
    lexical and hybrid as `retriever search` does; nDCG@10, Recall@100 and the top-10 overlap with the first."""
    from dataclasses import asdict

    from evals.beir import markdown_table
    from evals.dtype import compare
    from retriever.beir import BeirFormatError
    from retriever.index import DEFAULT_MODEL, SEARCH_MODES

    started = time.perf_counter()
    try:
        datasets = _load_sets(sets, "test")
    except (BeirFormatError, OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    results = []
    for item, dataset in datasets.items():
        console.print(f"{item}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries")
        results += compare(item, dataset, [d.strip() for d in dtypes.split(",")],
                           None if model == DEFAULT_MODEL else model, max_length, device)
    rows = [{"set": r.set, "dtype": r.dtype, "index s": r.index_seconds, "docs/s": r.docs_per_s,
             **{f"{mode} nDCG@10": r.scores[mode]["ndcg_at_10"] for mode in SEARCH_MODES},
             **{f"{mode} top-10 overlap": r.top10_overlap[mode] for mode in SEARCH_MODES if mode != "lexical"}}
            for r in results]
    report = {"sets": sets, "model": model, **_run_facts(started), "results": [asdict(r) for r in results]}
    _write_report(output, f"dtype-{_slug(model)}", report, f"Encoder dtype, {model}",
                  markdown_table(rows, list(rows[0])), json_output, "results and table")


@app.command()
def longctx(
    models: list[str] = typer.Option(["default"], "--model", "-m", metavar="MODEL",
                                     help="'default' (the shipped model), a model "
                                          "folder or hub id; repeat to compare."),
    lengths: str = typer.Option("256,512,1024,2048,4096,8192", metavar="TOKENS,TOKENS,...",
                                help="Document lengths in tokens, comma-separated."),
    tasks: str = typer.Option("passkey,needle", metavar="TASK,TASK", help="Tasks, comma-separated: passkey, needle."),
    docs: int = typer.Option(50, metavar="N", help="Documents (and queries) per task and length."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the generator."),
    batch_tokens: int = typer.Option(16384, metavar="TOKENS", help="Tokens per encoder batch."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda. Default: cuda when available."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR",
                                help="Folder for longctx.json, longctx.md and longctx.png."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """LongEmbed-style passkey and needle retrieval (nDCG@1) at each length, with a plot."""
    from evals.beir import dense_run, markdown_table
    from evals.longctx import TASKS, generate, ndcg_at_1, plot

    started = time.perf_counter()
    length_list = [int(x) for x in lengths.split(",")]
    task_list = [t.strip() for t in tasks.split(",")]
    if unknown := set(task_list) - set(TASKS):
        typer.echo(f"error: unknown tasks {sorted(unknown)}; choose from {list(TASKS)}", err=True)
        raise typer.Exit(2)
    report_models, scores = {}, {}
    for name in models:
        model = _open_model(name, device, max(length_list))
        scores[name] = {}
        for task in task_list:
            scores[name][task] = {}
            for length in length_list:
                dataset = generate(task, model.tokenizer, length, num_docs=docs, seed=seed)
                run = dense_run(model, dataset, k=10, batch_tokens=batch_tokens, show_progress_bar=False)
                scores[name][task][length] = ndcg_at_1(dataset, run)
                console.print(f"{name} {task} {length}: nDCG@1 {scores[name][task][length]:.3f}")
        report_models[name] = {**_model_facts(model), "scores": scores[name]}
    report = {
        "tasks": task_list, "lengths": length_list, "docs": docs, "seed": seed, "models": report_models,
        **_run_facts(started),
    }
    rows = [{"task": task, "length": length, **{name: scores[name][task][length] for name in models}}
            for task in task_list for length in length_list]
    table = markdown_table(rows, ["task", "length", *models])
    output.mkdir(parents=True, exist_ok=True)
    plot(scores, output / "longctx.png")
    _write_report(output, "longctx", report, f"Long-context retrieval, nDCG@1 ({docs} documents per cell)", table,
                  json_output, "results, table and plot")


@app.command("mteb")
def mteb_command(
    tasks: list[str] = typer.Option(..., "--tasks", "-t", metavar="TASK",
                                    help="mteb task names (e.g. LEMBPasskeyRetrieval), or "
                                         "SyntheticPasskeyN / SyntheticNeedleN (N tokens, "
                                         "generated offline). Repeat for several."),
    model: str = typer.Option("default", "--model", "-m", metavar="MODEL",
                              help="'default' (the shipped model), a model folder or "
                                   "hub id."),
    local: list[str] = typer.Option([], "--local", metavar="TASK=DIR",
                                    help="TASK=DIR: read that retrieval task's data from a local "
                                         "BEIR-layout copy instead of the hub. Repeatable."),
    max_length: int = typer.Option(8192, metavar="TOKENS", help="Tokens per input, longer ones truncated."),
    search: str = typer.Option(None, "--search", metavar="dense|lexical|hybrid",
                               help="Score the index instead of the bare encoder: each split's corpus is indexed "
                                    "(as `retriever index` does) and searched in this mode (as `retriever search`)."),
    fusion: str = typer.Option(None, "--fusion", metavar="NAME[:WEIGHT]",
                               help="With --search hybrid: fuse by NAME[:WEIGHT] instead of the "
                                    "default."),
    chunking: str = typer.Option("window", metavar="window|late", help="With --search: how documents are chunked."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda. Default: cuda when available."),
    output: Path = typer.Option(Path("eval-results"), metavar="DIR",
                                help="Folder for the JSON results and Markdown table."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Runs mteb (v2) tasks on a model through mteb's encoder protocol (query/document prompts), or on
    the index built from each task's corpus through mteb's search protocol (--search)."""
    import mteb

    from evals.beir import markdown_table
    from evals.mteb_tasks import IndexSearch, load_local_copy, longctx_mteb_task, mteb_encoder
    from retriever.embedding import Chunking
    from retriever.index import DEFAULT_MODEL, SEARCH_MODES

    started = time.perf_counter()
    if search is not None and search not in SEARCH_MODES:
        typer.echo(f"error: --search {search!r}: expected one of {', '.join(SEARCH_MODES)}", err=True)
        raise typer.Exit(2)
    try:
        searcher = IndexSearch(None if model == DEFAULT_MODEL else model, search, fusion, max_length,
                               Chunking(chunking), device) if search else None
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    embedder = _open_model(model, device, max_length)
    task_objects = []
    for name in tasks:
        synthetic = re.fullmatch(r"Synthetic(Passkey|Needle)(\d+)", name)
        if synthetic:
            task_objects.append(longctx_mteb_task(synthetic[1].lower(), embedder.tokenizer, int(synthetic[2])))
            continue
        try:
            task_objects.extend(mteb.get_tasks(tasks=[name]))
        except KeyError:
            typer.echo(f"error: {name}: no such mteb task", err=True)
            raise typer.Exit(2) from None
    local_copies = dict(item.split("=", 1) for item in local if "=" in item)
    if bad := [item for item in local if "=" not in item]:
        typer.echo(f"error: --local expects TASK=DIR, got {bad[0]!r}", err=True)
        raise typer.Exit(2)
    for task in task_objects:
        if task.metadata.name in local_copies:
            try:
                load_local_copy(task, Path(local_copies[task.metadata.name]))
            except ValueError as e:  # a BeirFormatError included
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None
            continue
        try:
            task.load_data()
        except Exception as e:  # offline hub, missing files: all end in the same one-line message
            path = task.metadata.dataset.get("path")
            typer.echo(f"error: {task.metadata.name}: its dataset {path} could not be loaded "
                       f"(offline, or not downloaded yet): {type(e).__name__}", err=True)
            raise typer.Exit(2) from None

    try:
        result = mteb.evaluate(searcher or mteb_encoder(embedder), task_objects, cache=None, show_progress_bar=False)
    finally:
        if searcher is not None:
            searcher.close()
    scores = {}
    for task_result in result.task_results:
        split_scores = {split: entries[0] for split, entries in task_result.scores.items()}
        scores[task_result.task_name] = {"main_score": task_result.get_score(), "splits": split_scores}
    served = {"search": search, "fusion": str(searcher.fusion) if searcher.fusion else None,
              "chunking": chunking} if searcher else {"search": None}
    report = {"model": model, **_model_facts(embedder), **served, **_run_facts(started), "results": scores}
    rows = [{"task": task, "main score": s["main_score"]} for task, s in scores.items()]
    table = markdown_table(rows, ["task", "main score"])
    _write_report(output, f"mteb-{_slug(model)}", report, f"mteb, {model}", table, json_output, "results and table")
