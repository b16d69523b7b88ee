"""The benchmarks' commands (`python -m evals.bench ...`, `retriever bench ...`): options, JSON output and tables.

Each command imports its benchmark in its body: `retriever` mounts this app, and `retriever --help` must not wait
for torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from evals.bench.corpus import SCIFACT, console
from retriever.cli import Group

app = typer.Typer(cls=Group, no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Speed benchmarks: figures and ratios against the reference, measured in one run."""


@app.command()
def encoder(
    device: str = typer.Option("cpu", metavar="cpu|cuda", help="Device to run on: cpu or cuda."),
    dtype: str = typer.Option(None, metavar="fp32|bf16|fp16",
                              help="fp32, bf16 or fp16. Default: fp32 on CPU, bf16 on CUDA."),
    attn_backend: str = typer.Option(None, metavar="flash|sdpa",
                                     help="Our attention backend (flash or sdpa). Default: automatic."),
    num_layers: int = typer.Option(22, metavar="N", help="Encoder layers (ModernBERT-base has 22)."),
    long_docs: int = typer.Option(8, metavar="N", help="Documents in the ragged long batch (a)."),
    long_min: int = typer.Option(512, metavar="TOKENS", help="Shortest document of batch (a), tokens."),
    long_max: int = typer.Option(8192, metavar="TOKENS", help="Longest document of batch (a), tokens."),
    short_texts: int = typer.Option(64, metavar="N", help="Texts in the ragged short batch (b)."),
    short_min: int = typer.Option(16, metavar="TOKENS", help="Shortest text of batch (b), tokens."),
    short_max: int = typer.Option(512, metavar="TOKENS", help="Longest text of batch (b), tokens."),
    repeats: int = typer.Option(1, metavar="N", help="Timed runs per case and model; the best is reported."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Our encoder vs transformers' ModernBertModel (sdpa): tokens/s, ratio, peak memory, GFLOP/s."""
    from evals.bench.encoder import run

    environment, results = run(device, dtype, attn_backend, num_layers, long_docs, long_min, long_max,
                               short_texts, short_min, short_max, repeats)
    if json_output:
        print(json.dumps({"environment": environment, "results": [asdict(r) for r in results]}, indent=2))
        return
    table = Table(title=f"ModernBERT-base shape ({num_layers} layers), {environment['dtype']}, "
                        f"{device} ({environment['threads']} threads), our backend: {environment['attn_backend']}")
    table.add_column("")
    for r in results:
        table.add_column(f"{r.case}\n{r.shape}", justify="right")
    rows = [
        ("real tokens", lambda r: f"{r.tokens:,}"),
        ("ours tokens/s", lambda r: f"{r.ours_tokens_per_s:,.0f}"),
        ("transformers tokens/s", lambda r: f"{r.reference_tokens_per_s:,.0f}"),
        ("speedup", lambda r: f"[bold]{r.speedup:.2f}x[/]"),
        ("ours peak MiB", lambda r: f"{r.ours_peak_mib:,.0f}"),
        ("transformers peak MiB", lambda r: f"{r.reference_peak_mib:,.0f}"),
        ("ours GFLOP/s", lambda r: f"{r.ours_gflops:,.1f}"),
        ("transformers GFLOP/s", lambda r: f"{r.reference_gflops:,.1f}"),
        ("max |ours - transformers|", lambda r: f"{r.max_abs_diff:.2e}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    matmul = environment["matmul_gflops"]
    Console().print(table)
    Console().print(f"plain {environment['dtype']} matmul on this device: {matmul:,.1f} GFLOP/s "
                    f"(ours reaches {results[0].ours_gflops / matmul:.0%} on (a), "
                    f"{results[1].ours_gflops / matmul:.0%} on (b))")


@app.command()
def embedder(
    scifact: Path = typer.Option(SCIFACT, metavar="DIR",
                                 help="BEIR folder whose corpus.jsonl gives the short documents."),
    docs: int = typer.Option(256, metavar="N", help="Abstracts to encode."),
    long_docs: int = typer.Option(2, metavar="N", help="Long documents, lengths spread evenly up to --max-length."),
    max_length: int = typer.Option(
        2048, metavar="TOKENS", help="Longest document, tokens (up to 8192; at 8192 stock pads its first batch of "
                                     "--batch-size texts to 8192 tokens, about 50 minutes on a 2-core CPU)."),
    num_layers: int = typer.Option(22, metavar="N", help="Encoder layers (ModernBERT-base shape otherwise)."),
    batch_size: int = typer.Option(32, metavar="N", help="Stock batch size (sentence-transformers' default: 32)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """load_embedder(dir) vs stock SentenceTransformer(dir): docs/s on abstracts plus long documents.

    The checkpoint is ModernBERT-base-shaped with random weights, mean pooling and normalisation,
    and a BPE tokenizer trained on the abstracts. Both encode the whole corpus in one call, as a
    user would: stock with --batch-size texts per padded batch, ours with its token budget.
    """
    from evals.bench.embedder import run

    result = run(scifact, docs, long_docs, max_length, num_layers, batch_size)
    if json_output:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"embedding throughput, ModernBERT-base shape ({num_layers} layers), fp32, "
                        f"cpu ({result['threads']} threads)")
    table.add_column("")
    table.add_column("load_embedder", justify="right")
    table.add_column("stock SentenceTransformer", justify="right")
    table.add_row("docs/s", f"{result['ours_docs_per_s']:.2f}", f"{result['stock_docs_per_s']:.2f}")
    table.add_row("tokens/s", f"{result['tokens'] / result['ours_s']:,.0f}",
                  f"{result['tokens'] / result['stock_s']:,.0f}")
    table.add_row("wall time s", f"{result['ours_s']:.1f}", f"{result['stock_s']:.1f}")
    Console().print(table)
    Console().print(f"speedup [bold]{result['speedup']:.2f}x[/]; max |ours - stock| = {result['max_abs_diff']:.2e}")


@app.command("dtype")
def dtype_command(
    scifact: Path = typer.Option(SCIFACT, metavar="DIR", help="BEIR folder whose abstracts are embedded."),
    docs: int = typer.Option(300, metavar="N", help="Abstracts to embed."),
    num_layers: int = typer.Option(22, metavar="N", help="Layers of the base-shaped model (22: ModernBERT-base)."),
    repeats: int = typer.Option(2, metavar="N", help="Timed runs per model and dtype (the best is kept)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """An index's encoder in float32 and bfloat16: docs/s of the shipped model and a base-shaped one, as
    `retriever index` embeds (see evals/bench/dtype.py)."""
    from evals.bench.dtype import run

    report = run(scifact, docs, num_layers, repeats)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{report['docs']} SciFact abstracts, cpu ({report['threads']} threads), native bfloat16: "
                        f"{report['native_bfloat16']}")
    for column in ("model", "float32 docs/s", "bfloat16 docs/s", "bfloat16 / float32", "least cosine"):
        table.add_column(column, justify="right")
    for name, r in report["models"].items():
        table.add_row(name, f"{r['docs_per_s']['float32']:.1f}", f"{r['docs_per_s']['bfloat16']:.1f}",
                      f"{r['bfloat16_vs_float32']:.2f}x", f"{r['min_cosine']:.5f}")
    Console().print(table)
    Console().print(f"a new index on this CPU: {report['index_default']}")


@app.command()
def mlm(
    scifact: Path = typer.Option(SCIFACT, metavar="DIR",
                                 help="BEIR folder whose corpus.jsonl gives the training texts."),
    docs: int = typer.Option(512, metavar="N", help="Texts to train on."),
    num_layers: int = typer.Option(22, metavar="N", help="Encoder layers (ModernBERT-base shape otherwise)."),
    step_tokens: int = typer.Option(4096, metavar="TOKENS",
                                    help="Token budget of a packed step; the padded baseline takes as many "
                                         "texts per step as a packed step holds on average."),
    steps: int = typer.Option(4, metavar="N", help="Timed training steps per side (after one untimed step)."),
    device: str = typer.Option("cpu", metavar="cpu|cuda", help="cpu or cuda."),
    dtype: str = typer.Option(None, metavar="fp32|bf16",
                              help="fp32 or bf16 (autocast). Default: fp32 on CPU, bf16 on CUDA."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """MLM training tokens/s: our packed, unpadded steps vs transformers' padded batches, same data and weights.

    Both sides: same texts, 30% masking, AdamW, forward + backward + step. Ours packs texts
    best-fit into `step_tokens` and runs them with cu_seqlens (sparse prediction); the baseline is
    transformers' ModernBertForMaskedLM (sdpa) on right-padded batches in the same shuffled order.
    """
    from evals.bench.mlm import run

    result = run(scifact, docs, num_layers, step_tokens, steps, device, dtype)
    if json_output:
        print(json.dumps(result, indent=2))
        return
    Console().print(f"MLM training, ModernBERT-base shape ({num_layers} layers), {result['dtype']}, {device}: "
                    f"packed+unpadded {result['ours_tokens_per_s']:,.0f} tokens/s vs padded "
                    f"{result['padded_tokens_per_s']:,.0f} tokens/s = [bold]{result['speedup']:.2f}x[/]")


@app.command("retriever")
def retriever_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model: 'default' (shipped), a folder or a hub id."),
    docs: int = typer.Option(100_000, metavar="N", help="Documents of the synthetic collection (random vectors)."),
    queries: int = typer.Option(200, metavar="N", help="Queries timed for warm latency."),
    cold_runs: int = typer.Option(3, metavar="N", help="New `retriever search` processes timed."),
    index_types: list[str] = typer.Option(["flat", "hnsw"], "--index-type", metavar="flat|hnsw|ivfpq",
                                          help="Index types of the synthetic case."),
    scifact: Path = typer.Option(SCIFACT, metavar="DIR",
                                 help="BEIR SciFact folder for the real-model case (skipped if absent)."),
    scifact_docs: int = typer.Option(0, metavar="N", help="Abstracts indexed (0: all 5,183)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Indexing throughput against the pure encoder, and warm/cold search latency (see evals/bench/retriever.py)."""
    from evals.bench.retriever import run

    with console.status("") as status:
        report = run(model, docs, queries, cold_runs, index_types, scifact, scifact_docs, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"retriever, model {model}, cpu ({report['environment']['threads']} threads)")
    for column in ("case", "write/index docs/s", "encoder docs/s", "index/encoder", "encoder share",
                   "warm p50 ms", "p99 ms", "dense p50 ms", "p99 ms", "1% filter p50 ms", "p99 ms", "query encode ms",
                   "cold CLI s",
                   "add 1 doc s", "remove 1 s", "add 1 / full write"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(
            r["case"], f"{r.get('write_docs_per_s', r.get('index_docs_per_s')):,.0f}",
            f"{r['encoder_docs_per_s']:,.1f}" if "encoder_docs_per_s" in r else "",
            f"{r['index_vs_encoder']:.0%}" if "index_vs_encoder" in r else "",
            f"{r['encoder_share_of_index_time']:.0%}" if "encoder_share_of_index_time" in r else "",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['dense_p50_ms']:.1f}", f"{r['dense_p99_ms']:.1f}",
            *(f"{r[key]:.1f}" if key in r else "" for key in ("filtered_p50_ms", "filtered_p99_ms")),
            f"{r['query_encode_p50_ms']:.1f}" if "query_encode_p50_ms" in r else "",
            f"{r['cold_cli_median_s']:.2f}" if "cold_cli_median_s" in r else "",
            f"{r['add_one_median_s']:.3f}" if "add_one_median_s" in r else "",
            f"{r['remove_one_median_s']:.3f}" if "remove_one_median_s" in r else "",
            f"{r['add_one_vs_full_write']:.2%}" if "add_one_vs_full_write" in r else "")
    Console(width=200).print(table)
    Console().print("warm p50/p99: the default (hybrid) search mode; targets: index >= 90% of pure encoder docs/s; "
                    "warm p50 <= 30 ms at 100k docs; cold CLI <= 2 s; a one-document write <= 1% of the full write")


@app.command("writes")
def writes_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model: 'default' (shipped), a folder or a hub id."),
    sizes: str = typer.Option("10000,100000,1000000", metavar="N,N,...",
                              help="Index sizes in chunks, comma-separated."),
    scifact: Path = typer.Option(SCIFACT, metavar="DIR",
                                 help="BEIR SciFact folder: its sentences are the texts (else random words)."),
    queries: int = typer.Option(200, metavar="N", help="Queries timed at the largest size."),
    index_type: str = typer.Option("flat", metavar="flat|hnsw|ivfpq", help="FAISS index type of the indexes."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """What a 1-document and a 1,000-document write cost as the index grows, and search at the largest size
    (see evals/bench/writes.py)."""
    from evals.bench.writes import write_cost

    with console.status("") as status:
        report = write_cost(model, [int(s) for s in sizes.split(",")], scifact, queries, status.update, index_type)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"writes, model {model}, {index_type} index, texts: {report['texts']}")
    for column in ("chunks", "build s", "add 1 doc s", "remove 1 s", "add 1,000 s", "segments", "warm p50 ms",
                   "p99 ms", "dense p50 ms", "p99 ms", "1% filter p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(f"{r['chunks']:,}", f"{r['build_seconds']:.1f}", f"{r['add_one_median_s']:.3f}",
                      f"{r['remove_one_median_s']:.3f}", f"{r['add_1000_s']:.3f}", str(r["segments_after"]),
                      *(f"{r[key]:.1f}" if key in r else "" for key in ("p50_ms", "p99_ms", "dense_p50_ms",
                                                                         "dense_p99_ms", "filtered_p50_ms",
                                                                         "filtered_p99_ms")))
    Console(width=160).print(table)
    Console().print(f"a 1-document write at the largest size / at the smallest: "
                    f"{report['add_one_largest_vs_smallest']:.2f}x (target <= 3x)")


@app.command("memory")
def memory_command(
    sizes: str = typer.Option("20000,200000", metavar="N,N,...", help="Corpus sizes in documents, comma-separated."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Peak RSS of `retriever index` (the shipped model) over short documents, by corpus size, and of the
    writer alone (the model's forward replaced by random vectors: reading, diffing, committing, merging)."""
    from evals.bench.writes import peak_memory

    with console.status("") as status:
        results = peak_memory([int(s) for s in sizes.split(",")], status.update)
    if json_output:
        print(json.dumps(results, indent=2))
        return
    table = Table(title="retriever index: peak RSS")
    for column in ("documents", "seconds", "docs/s", "peak RSS MiB", "writer alone: s", "peak anonymous MiB"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(f"{r['documents']:,}", f"{r['seconds']:.1f}", f"{r['documents'] / r['seconds']:,.0f}",
                      f"{r['peak_rss_mib']:,.0f}", f"{r['writer_seconds']:.1f}", f"{r['writer_anon_mib']:,.0f}")
    Console().print(table)
    Console().print(f"largest / smallest corpus: {results[-1]['peak_rss_mib'] / results[0]['peak_rss_mib']:.2f}x "
                    "the memory (target: flat); the writer alone (forward replaced by random vectors): "
                    f"{results[-1]['writer_anon_mib'] / results[0]['writer_anon_mib']:.2f}x")


@app.command("lexical")
def lexical_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model of the indexes: 'default' (shipped), a folder or a hub id."),
    sizes: str = typer.Option("10000,100000", metavar="N,N,...", help="Documents, comma-separated."),
    scifact: Path = typer.Option(SCIFACT, metavar="DIR",
                                 help="BEIR SciFact folder: its quality, and its sentences as the texts."),
    queries: int = typer.Option(200, metavar="N", help="Queries timed at each size."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """The index's BM25 (per segment, global statistics) against SQLite FTS5: SciFact nDCG@10, the cost of a
    one-document write and search latency (see evals/bench/lexical.py)."""
    from evals.bench.lexical import run

    with console.status("") as status:
        report = run([int(s) for s in sizes.split(",")], scifact, model, queries, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"lexical: the index's BM25 against SQLite FTS5, texts: {report['texts']}")
    for column in ("documents", "index add 1 s", "FTS5 add 1 s", "index p50 ms", "p99 ms", "FTS5 p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(f"{r['documents']:,}", f"{r['index_add_one_median_s']:.4f}", f"{r['fts5_add_one_median_s']:.4f}",
                      *(f"{r[key]:.1f}" for key in ("index_p50_ms", "index_p99_ms", "fts5_p50_ms", "fts5_p99_ms")))
    Console().print(table)
    if quality := report.get("quality"):
        Console().print(f"SciFact test nDCG@10: the index's BM25 {quality['index_bm25_ndcg_at_10']:.4f}, "
                        f"FTS5 {quality['fts5_ndcg_at_10']:.4f}")


@app.command("crash")
def crash_command(
    documents: int = typer.Option(40_000, metavar="N",
                                  help="Short documents in the growing index (every kill lands mid-run)."),
    kills: int = typer.Option(20, metavar="N", help="SIGKILLs at random moments, each followed by a rerun."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """kill -9 a growing `retriever index` at random moments: every index opens, its counts agree, nothing
    committed is lost."""
    from evals.bench.writes import crashes

    with console.status("") as status:
        report = crashes(documents, kills, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"crash: {kills} kill -9 of retriever index over {documents:,} documents")
    for column in ("kill", "moment", "after s", "committed before", "documents", "counts agree", "kept committed",
                   "committed found"):
        table.add_column(column, justify="right")
    for c in report["kills"]:
        table.add_row(str(c["kill"]), c["moment"], f"{c['after_s']:.2f}", f"{c['committed_before']:,}",
                      f"{c['documents']:,}", str(c["counts_agree"]), str(c["kept_committed"]), str(c["committed_found"]))
    Console().print(table)
    Console().print(f"final run: {report['final']['documents']:,} documents; all checks passed: {report['all_ok']}")


@app.command("server")
def server_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model: 'default' (shipped), a folder or a hub id."),
    docs: int = typer.Option(10_000, metavar="N", help="Documents of the synthetic collection (random vectors)."),
    queries: int = typer.Option(50, metavar="N", help="Searches per client."),
    clients: int = typer.Option(8, metavar="N", help="Concurrent clients: threads in-process, connections over HTTP."),
    k: int = typer.Option(10, "-k", metavar="N", help="Documents per search."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Search latency over HTTP (`retriever serve`) against Retriever.search in-process, N concurrent clients."""
    from evals.bench.server import run

    with console.status("") as status:
        report = run(model, docs, queries, clients, k, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"search, {docs:,} documents, model {model}, {clients} concurrent clients x {queries} "
                        f"searches, k={k}, cpu ({report['environment']['cpus']} cores)")
    for column in ("", "p50 ms", "p99 ms", "searches/s"):
        table.add_column(column, justify="right")
    for label, side in (("Retriever.search in-process", report["in_process"]), ("HTTP /search", report["http"])):
        table.add_row(label, f"{side['p50_ms']:.1f}", f"{side['p99_ms']:.1f}", f"{side['searches_per_s']:,.0f}")
    Console().print(table)
    Console().print(f"HTTP adds {report['http_overhead_p50_ms']:.1f} ms at p50")


@app.command("chunking")
def chunking_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model: 'default' (shipped), a folder or a hub id (mean pooling)."),
    lengths: str = typer.Option("2048,4096,6144,8192,8192,8192,8192,8192,8192", metavar="TOKENS,TOKENS,...",
                                help="Long documents' lengths in tokens (SciFact abstracts joined), comma-separated."),
    scifact: Path = typer.Option(SCIFACT, metavar="DIR", help="BEIR SciFact folder: its abstracts make the texts."),
    repeats: int = typer.Option(3, metavar="N", help="Timed runs per chunking, in turns; the best is reported."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Late against window chunking: the same long documents encoded both ways (see evals/bench/chunking.py)."""
    from evals.bench.chunking import cost

    with console.status("") as status:
        report = cost(model, scifact, [int(n) for n in lengths.split(",")], repeats, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"chunking cost, model {model}: {report['documents']} documents, {report['tokens']:,} "
                        f"tokens, best of {repeats}")
    for column in ("chunking", "vectors", "best s", "all s", "tokens/s"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(r["chunking"], str(r["vectors"]), f"{r['best_s']:.2f}", " ".join(f"{s:.2f}" for s in r["all_s"]),
                      f"{r['tokens_per_s']:,}")
    Console().print(table)
    Console().print(f"late / window: {report['late_vs_window']:.2f}x (target <= {report['target']:.2f}x)")


@app.command("ray")
def ray_command(
    model: str = typer.Option("default", metavar="MODEL",
                              help="Embedding model: 'default' (shipped), a folder or a hub id."),
    scifact: Path = typer.Option(SCIFACT, metavar="DIR", help="BEIR SciFact folder: its abstracts are the documents."),
    docs: int = typer.Option(500, metavar="N", help="Abstracts indexed in each case."),
    actors: str = typer.Option("1,2", metavar="N,N,...", help="Actor counts of the Ray cases, comma-separated."),
    cpus: int = typer.Option(2, metavar="N", help="CPUs of the local Ray cluster, split evenly between the actors."),
    batch_docs: int = typer.Option(64, metavar="N", help="Documents per actor batch."),
    commit_every: int = typer.Option(1000, metavar="N", help="Documents per commit (retriever index's default)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Indexing docs/s of the Ray engine (--engine ray) with 1 and 2 actors against the single process, same
    documents, same run (see evals/bench/ray.py)."""
    from evals.bench.ray import run

    with console.status("") as status:
        report = run(model, scifact, docs, [int(n) for n in actors.split(",")], cpus, batch_docs, commit_every,
                     status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"indexing {report['documents']:,} SciFact abstracts, model {model}, "
                        f"{report['environment']['cpus']} cores, ray {report['environment']['ray']}")
    for column in ("case", "CPUs per actor", "seconds", "docs/s", "vs single process"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(r["case"], f"{r['cpus_per_actor']:g}" if "cpus_per_actor" in r else "", f"{r['seconds']:.1f}",
                      f"{r['docs_per_s']:,.1f}", f"{r['vs_single_process']:.2f}x")
    Console().print(table)
    Console().print(f"local Ray cluster started in {report['cluster_start_s']:.1f} s (not in the Ray cases' times); "
                    "each Ray case includes starting its actors and loading the model in each")


@app.command("ondisk")
def ondisk_command(
    index_mib: int = typer.Option(2048, metavar="MIB", help="Size of the ivfpq index's segment files."),
    limit_mib: int = typer.Option(256, metavar="MIB", help="Memory limit of the searching process (a cgroup)."),
    dimension: int = typer.Option(256, metavar="D", help="Vector dimension (ivfpq: D / 4 bytes of code each)."),
    segment_chunks: int = typer.Option(900_000, metavar="N",
                                       help="Chunks per segment (the merge cap holds 932k of 256-d)."),
    queries: int = typer.Option(200, metavar="N", help="Timed searches (k=10, one query each)."),
    directory: Path = typer.Option(None, "--dir", metavar="DIR", help="Where the index is built (default: TMPDIR)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """An ivfpq index larger than the memory its searching process may use: resident memory and search
    latency memory-mapped under the limit, against the same index read into memory (see evals/bench/ondisk.py)."""
    from evals.bench.ondisk import ondisk

    with console.status("") as status:
        report = ondisk(index_mib, limit_mib, dimension, segment_chunks, queries, status.update, directory)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    layout = report["layout"]
    limit = f"{report['limit_mib']:,} MiB (cgroup {report['cgroup']})" if report["limit_mib"] else \
        "none (no memory cgroup could be made here)"
    table = Table(title=f"ivfpq index: {layout['chunks']:,} chunks of {layout['dimension']} dimensions, "
                        f"{report['segments']} segments, {layout['index_mib']:,.0f} MiB; limit {limit}")
    for column in ("lists", "load s", "p50 ms", "p99 ms", "RSS MiB", "anonymous", "file-backed", "VmHWM",
                   "cgroup peak", "best hit its own"):
        table.add_column(column, justify="right")
    for case in (report["mapped"], report["memory"]):
        table.add_row(("mapped: " if case["mapped"] else "in memory: ") + case["lists"], f"{case['load_seconds']:.2f}",
                      f"{case['p50_ms']:.2f}", f"{case['p99_ms']:.2f}", f"{case['VmRSS_mib']:,.0f}",
                      f"{case['RssAnon_mib']:,.0f}", f"{case['RssFile_mib']:,.0f}", f"{case['VmHWM_mib']:,.0f}",
                      f"{case['cgroup_peak_mib']:,.0f}" if "cgroup_peak_mib" in case else "",
                      f"{case['top_is_own']:.2f}")
    Console(width=160).print(table)
    Console().print(f"index / limit: {report['index_vs_limit']:.1f}x; mapped p50 / in-memory p50: "
                    f"{report['p50_mapped_vs_memory']:.2f}x; same ids both ways: {report['same_ids']}; "
                    f"built in {report['build_seconds']:.0f} s")


@app.command("gpu-check")
def gpu_check_command(
    device: str = typer.Option("cuda", metavar="cuda|cpu", help="Device to check (cpu: with --quick, in a test)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny shapes (2 layers, short texts): the same code on a CPU."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """The GPU path in one run, within 10 minutes: bfloat16 parity and speed at the paper's shapes (flash-attn
    when installed, then SDPA's sliding window), and contrastive training steps (see evals/bench/gpu_check.py)."""
    from evals.bench.gpu_check import run

    with console.status("") as status:
        report = run(device, quick, status.update)
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"gpu check, {device}{' (quick shapes)' if quick else ''}, bfloat16, {report['seconds']} s")
    for column in ("set", "shape", "backend", "tokens", "ours tokens/s", "transformers tokens/s", "speedup",
                   "paper RTX 4090", "max |diff|", "parity"):
        table.add_column(column, justify="right")
    for r in report["encoder"]:
        paper = r["paper_rtx4090_tokens_per_s"]
        table.add_row(r["set"], r["shape"], r["attn_backend"], f"{r['tokens']:,}", f"{r['ours_tokens_per_s']:,.0f}",
                      f"{r['reference_tokens_per_s']:,.0f}", f"{r['speedup']:.2f}x", f"{paper:,}" if paper else "",
                      f"{r['max_abs_diff']:.3f}", "ok" if r["parity_ok"] else "FAILED")
    Console(width=160).print(table)
    c = report["contrastive"]
    Console().print(f"contrastive: {c['steps']} steps of {c['batch_size']} pairs on {c['device']} in {c['seconds']} s; "
                    f"all checks passed: {report['all_ok']}")
