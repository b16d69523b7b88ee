"""The search commands of `retriever`: index, search, info, remove, serve. The `retriever` console script
(`retriever_command.py`) adds the train, eval and bench sub-apps to these."""

from __future__ import annotations

import bisect
import json
import re
import time
from pathlib import Path

import typer
from typer.core import TyperArgument, TyperGroup


def _without_type_labels(params: list) -> list:
    """typer (0.29) prints a Python type beside every parameter without a metavar: `<bool>` beside each flag
    and --help, `<list[Path]>` beside an argument. A flag takes no value, so it shows none; an argument's
    name column is its placeholder already."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None
    return params


class Group(TyperGroup):
    """The group class of every `retriever` (sub-)app: its own flags and its commands' show no type labels, and
    the list of commands shows each one's summary as a paragraph (typer keeps the docstring's line breaks)."""

    def get_params(self, ctx) -> list:
        return _without_type_labels(super().get_params(ctx))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is not None:
            _without_type_labels(command.get_params(ctx))
            if command.short_help is None and command.help:
                command.short_help = " ".join(command.help.split("\n\n")[0].split())
        return command


app = typer.Typer(cls=Group, no_args_is_help=True, help="Encoder-based search built on ModernBERT.")

INDEX_OPTION = typer.Option(None, "--index", envvar="RETRIEVER_INDEX", metavar="DIR",
                            help="Index folder (default ./.retriever; or set RETRIEVER_INDEX).")
SNIPPET_CHARS = 240
SHOWN_PROBLEMS = 20


def _fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _errors():
    """The exceptions that are the user's input, not our bug: one line each, no traceback."""
    from encoder.hub import CheckpointError
    from retriever.documents import CorpusError
    from retriever.errors import RetrieverError
    from retriever.vectors import VectorIndexError

    return (RetrieverError, CorpusError, CheckpointError, VectorIndexError, ValueError, OSError)


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


@app.command()
def index(
    paths: list[Path] = typer.Argument(..., metavar="PATH",
                                       help="Folders (read recursively) or files: .txt .md .rst .html, and "
                                            ".jsonl .json .csv .parquet with _id/id, title, text columns "
                                            "(a BEIR folder's corpus.jsonl included)."),
    index_dir: Path = INDEX_OPTION,
    model: str = typer.Option(None, "--model", "-m", metavar="NAME",
                              help="Embedding model: a folder or hub id in the sentence-transformers layout. Default:"
                                   " the model shipped with the toolkit. Fixed when the index is created."),
    max_length: int = typer.Option(None, metavar="TOKENS",
                                   help="Tokens per input (default: the model's, 8192 for ModernBERT). Longer "
                                        "documents are split. Fixed at creation."),
    chunking: str = typer.Option(None, metavar="window|late",
                                 help="window: documents longer than --max-length are split into overlapping windows,"
                                      " each embedded alone. late: late chunking, passages of --passage-tokens pooled"
                                      " from one long forward pass (they keep the document's context). Default "
                                      "window; fixed at creation."),
    overlap: int = typer.Option(None, metavar="TOKENS",
                                help="window chunking: tokens shared by neighbouring windows (default 256)."),
    passage_tokens: int = typer.Option(None, metavar="TOKENS",
                                       help="late chunking: tokens per passage vector (default 256)."),
    index_type: str = typer.Option(None, metavar="flat|hnsw|ivfpq",
                                   help="flat (exact), hnsw (approximate, fast at millions) or ivfpq (compressed, "
                                        "needs 9,984+ chunks at creation). Default flat; fixed at creation."),
    device: str = typer.Option(None, metavar="cpu|cuda",
                               help="cpu or cuda (default: cpu). With --engine ray, the actors' (cuda: one GPU "
                                    "each unless --gpus-per-actor says otherwise)."),
    batch_tokens: int = typer.Option(16384, metavar="TOKENS", help="Tokens per encoder batch."),
    wait: float = typer.Option(0, metavar="SECONDS",
                               help="Seconds to wait for another writer of the same index before failing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="",
                                 help="List the files of other types that were ignored."),
    commit_every: int = typer.Option(1000, "--commit-every", metavar="N",
                                     help="Commit every N embedded documents: memory stays bounded, and a rerun after"
                                          " an interruption embeds only what was not committed."),
    dtype: str = typer.Option(None, "--dtype", metavar="float32|bfloat16",
                              help="The encoder's dtype, fixed for a new index (default: bfloat16 on CUDA and on CPUs "
                                   "that multiply it in hardware (AVX512-BF16, AMX), else float32)."),
    engine: str = typer.Option("local", "--engine", metavar="local|ray",
                               help="local: embed in this process. ray: on a Ray cluster, by Ray Data actors that "
                                    "each hold the model (the ray extra), committed as batches come back."),
    ray_address: str = typer.Option(None, "--ray-address", metavar="ADDR",
                                    help="--engine ray: the cluster (auto, ray://HOST:PORT). Default: RAY_ADDRESS, "
                                         "else a cluster started on this machine for the run."),
    actors: int = typer.Option(None, "--actors", metavar="N",
                               help="--engine ray: actors embedding at once, each with the model (default 1)."),
    gpus_per_actor: float = typer.Option(None, "--gpus-per-actor", metavar="G",
                                         help="--engine ray: GPUs per actor (default 0: the actors run on CPUs)."),
    batch_docs: int = typer.Option(None, "--batch-docs", metavar="B",
                                   help="--engine ray: documents per actor batch (default 64): what a dead actor's "
                                        "restart redoes."),
    output_shards: Path = typer.Option(None, "--output-shards", metavar="DIR",
                                       help="--engine ray: write the new and changed documents' vectors as Parquet "
                                            "shards under DIR instead of committing them (retriever import adds "
                                            "them)."),
) -> None:
    """Index documents, or bring an index up to date with them: new and changed documents are
    embedded, documents of these paths that are gone are removed, unchanged ones are kept."""
    from retriever.documents import read_corpus
    from retriever.embedding import Chunking, default_dtype
    from retriever.index import DEFAULT_INDEX_DIR, Retriever
    from retriever.manifest import MANIFEST, IndexManifest

    index_dir = index_dir or DEFAULT_INDEX_DIR
    console = _stderr()
    started = time.perf_counter()
    try:
        ray_engine = _ray_engine(engine, device, ray_address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor,
                                 batch_docs=batch_docs, output_shards=output_shards)
        if ray_engine is not None:
            # the actors run the encoder, on their device and in the index's dtype (by default the one that
            # suits their device); this process loads the model on its CPU only to check or record it
            dtype = dtype or (None if (index_dir / MANIFEST).is_file() else default_dtype(ray_engine.device))
            device = None
        with console.status("reading documents"):
            corpus = read_corpus(paths)
        read_seconds = time.perf_counter() - started
        _report_problems(corpus.problems, console)
        _report_ignored(corpus.ignored, verbose, console)
        if (index_dir / MANIFEST).is_file():
            manifest = IndexManifest.read(index_dir)
            _check_fixed_options(manifest, index_dir, max_length=max_length, index_type=index_type,
                                 chunking=chunking, overlap=overlap, passage_tokens=passage_tokens, dtype=dtype)
            retriever = Retriever.open(index_dir, model, device=device, batch_tokens=batch_tokens)
        else:
            if not corpus.documents:
                _fail(f"no documents found in {', '.join(map(str, paths))}"
                      + (f" ({len(corpus.problems)} skipped, listed above)" if corpus.problems else ""))
            defaults = Chunking()
            retriever = Retriever.create(
                index_dir, model, index_type=index_type or "flat", max_length=max_length, device=device,
                dtype=dtype, batch_tokens=batch_tokens,
                chunking=Chunking(chunking or defaults.mode, overlap if overlap is not None else defaults.overlap,
                                  passage_tokens or defaults.passage_tokens))
        console.print(f"{_count(len(corpus.documents), 'document')} read from {', '.join(map(str, paths))} "
                      f"in {read_seconds:.1f} s")
        if output_shards is not None:
            written = ray_engine.write_shards(retriever, corpus.documents, output_shards)
            console.print(f"{_count(len(written), 'new or changed document')} embedded into Parquet shards under "
                          f"{output_shards} in {time.perf_counter() - started:.1f} s, nothing committed; add them "
                          f"with: retriever import {output_shards} --index {index_dir}", highlight=False)
            return
        report = retriever.sync(corpus, show_progress=True, wait=wait, commit_every=commit_every, engine=ray_engine)
    except KeyboardInterrupt:
        _fail("interrupted: what was committed stays in the index (run again to embed the rest)", 130)
    except _errors() as e:
        _fail(str(e))
    docs_per_s = len(report.added + report.updated) / report.encode_seconds if report.encode_seconds else 0
    console.print(f"{index_dir}: {len(report.added)} added, {len(report.updated)} updated, "
                  f"{report.unchanged} unchanged, {len(report.removed)} removed; "
                  f"{_count(report.chunks_embedded, 'chunk')} ({report.tokens:,} tokens) embedded in "
                  f"{report.encode_seconds:.1f} s"
                  + (f" ({docs_per_s:.1f} docs/s)" if docs_per_s else "")
                  + f"; {time.perf_counter() - started:.1f} s in all, reading included")
    if report.kept:
        console.print(f"kept the indexed version of {_count(len(report.kept), 'document')} whose file could not be "
                      f"read now (listed above as skipped): {', '.join(report.kept[:SHOWN_PROBLEMS])}"
                      + (" ..." if len(report.kept) > SHOWN_PROBLEMS else ""), highlight=False)
    if corpus.problems:
        console.print(f"{len(corpus.problems)} skipped (listed above)")


def _ray_engine(engine: str, device: str | None, **options):
    """The RayEngine of `--engine ray` and its options (those not given: its defaults), or None for local;
    a Ray option without --engine ray is an error. With --engine ray, --device is the actors': cuda gives
    each one GPU unless --gpus-per-actor says otherwise."""
    if engine not in ("local", "ray"):
        _fail(f"--engine {engine}: expected local or ray")
    given = {name: value for name, value in options.items() if value is not None}
    if engine == "local":
        if given:
            _fail(f"--{next(iter(given)).replace('_', '-')} is an option of --engine ray")
        return None
    from retriever.ray_engine import RayEngine

    gpus = given.get("gpus_per_actor")
    if device == "cuda":
        if gpus == 0:
            _fail("--device cuda with --gpus-per-actor 0: the actors would run on CPUs")
        given["gpus_per_actor"] = gpus or 1
    elif device is not None and gpus:
        _fail(f"--device {device} with --gpus-per-actor {gpus}: actors given GPUs run on CUDA")
    given.pop("output_shards", None)
    return RayEngine(**{"address" if name == "ray_address" else name: value for name, value in given.items()})


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _check_fixed_options(manifest, index_dir: Path, **given) -> None:
    fixed = {"max_length": manifest.max_length, "index_type": manifest.index_type,
             "chunking": manifest.chunking["mode"], "overlap": manifest.chunking["overlap"],
             "passage_tokens": manifest.chunking["passage_tokens"], "dtype": manifest.dtype}
    for option, value in given.items():
        if value is not None and value != fixed[option]:
            _fail(f"{index_dir} was created with --{option.replace('_', '-')} {fixed[option]}; it cannot change "
                  f"to {value}: index into a new --index folder instead")


def _report_ignored(ignored: list[str], verbose: bool, console) -> None:
    """Files of other types are not problems, but say how many there were, and of which types."""
    if not ignored:
        return
    from collections import Counter

    kinds = Counter(Path(f).suffix.lower() or "(no suffix)" for f in ignored)
    console.print(f"{_count(len(ignored), 'file')} of other types ignored ("
                  + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common(5))
                  + (", ..." if len(kinds) > 5 else "") + ")" + ("" if verbose else "; --verbose lists them"),
                  highlight=False)
    if verbose:
        for file in ignored:
            console.print(f"  ignored {file}", highlight=False, soft_wrap=True)


def _report_problems(problems, console) -> None:
    for problem in problems[:SHOWN_PROBLEMS]:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False, markup=True, soft_wrap=True)
    if len(problems) > SHOWN_PROBLEMS:
        console.print(f"... and {len(problems) - SHOWN_PROBLEMS} more skipped")


@app.command("import")
def import_command(
    shards: list[Path] = typer.Argument(..., metavar="DIR_OR_FILE",
                                        help="Parquet shards of precomputed vectors, or folders of them (as "
                                             "retriever index --engine ray --output-shards writes them); or .npy "
                                             "arrays, one vector per document, each beside a .jsonl of its documents."),
    index_dir: Path = INDEX_OPTION,
    model: str = typer.Option(None, "--model", "-m", metavar="NAME",
                              help="The model that made the vectors of .npy shards (which do not record it): checked "
                                   "against the index's, and the model of a new index."),
    batch_docs: int = typer.Option(1000, "--batch-docs", metavar="N",
                                   help="Documents read and committed at a time: memory stays bounded, and a rerun "
                                        "after an interruption adds only what was not committed."),
    wait: float = typer.Option(0, metavar="SECONDS",
                               help="Seconds to wait for another writer of the same index before failing."),
) -> None:
    """Add precomputed vectors to an index, with their documents: each shard's dimension and model fingerprint must
    be the index's (for .npy shards, those of the --model named). A new index is made for the shards' model, max
    length and chunking."""
    from retriever.embedding import Chunking
    from retriever.index import DEFAULT_INDEX_DIR, Retriever
    from retriever.manifest import MANIFEST
    from retriever.shards import import_shards, shard_files, shard_info

    index_dir = index_dir or DEFAULT_INDEX_DIR
    started = time.perf_counter()
    try:
        files = shard_files(shards)
        if not (index_dir / MANIFEST).is_file():
            parquet = [path for path in files if path.suffix == ".parquet"]
            if parquet:
                info = shard_info(parquet[0])
                Retriever.create(index_dir, info.model, max_length=info.max_length, chunking=Chunking(**info.chunking))
            elif model is not None:
                Retriever.create(index_dir, model)
            else:
                _fail(f"{files[0]}: a .npy shard does not record the model that made its vectors: name it with "
                      "--model (a new index is made for it)")
        report = import_shards(Retriever.open(index_dir), files, model=model, batch_docs=batch_docs, wait=wait,
                               show_progress=True)
    except KeyboardInterrupt:
        _fail("interrupted: what was committed stays in the index (run again to add the rest)", 130)
    except _errors() as e:
        _fail(str(e))
    _stderr().print(f"{index_dir}: {len(report.added)} added, {len(report.updated)} updated, {report.unchanged} "
                    f"unchanged, {_count(report.chunks_embedded, 'chunk')} from {_count(len(files), 'shard')} in "
                    f"{time.perf_counter() - started:.1f} s", highlight=False)


@app.command()
def search(
    query: str = typer.Argument(None, metavar="QUERY", help="What to search for."),
    index_dir: Path = INDEX_OPTION,
    k: int = typer.Option(10, "-k", metavar="N", help="Documents to return."),
    dense: bool = typer.Option(False, "--dense", metavar="", help="Dense search alone."),
    lexical: bool = typer.Option(False, "--lexical", metavar="", help="BM25 alone."),
    hybrid: bool = typer.Option(False, "--hybrid", metavar="",
                                help="Dense and BM25 rankings fused with the default fusion (z-scores, dense weight "
                                     "0.2): what search does without a flag."),
    fusion: str = typer.Option(None, "--fusion", metavar="NAME[:WEIGHT]",
                               help="Hybrid search fused by NAME[:WEIGHT]: rrf, wrrf, minmax, zscore or dbsf, WEIGHT "
                                    "the dense side's share (0 to 1)."),
    where: list[str] = typer.Option([], "--where", metavar="CONDITION",
                                    help="Only documents whose metadata meet FIELD=VALUE, FIELD!=VALUE, FIELD>=VALUE "
                                         "(or >, <, <=) or FIELD=[A,B]; source=PATH: under PATH. Repeat: all must "
                                         "hold."),
    json_output: bool = typer.Option(False, "--json", metavar="", help="Print hits as JSON on stdout."),
    queries: Path = typer.Option(None, "--queries", metavar="FILE",
                                 help="Search every query of a file (.tsv: id<TAB>text; .jsonl: _id/id and text, BEIR"
                                      " style; else one per line) and write a TREC run file."),
    output: Path = typer.Option(Path("run.trec"), "--output", "-o", metavar="FILE",
                                help="--queries: the TREC run file to write."),
    device: str = typer.Option(None, metavar="cpu|cuda", help="cpu or cuda (default: cpu)."),
) -> None:
    """Search an index: a table of rank, score, document id, title or path, and the best passage. Without a
    flag, dense and BM25 rankings fused (--hybrid); --dense or --lexical for one side."""
    from retriever.index import DEFAULT_INDEX_DIR, Retriever, search_settings

    if (query is None) == (queries is None):
        _fail("give either a QUERY or --queries FILE")
    if dense + lexical + (hybrid or fusion is not None) > 1:
        _fail("--dense, --lexical and --hybrid/--fusion pick one search mode: give one of them")
    try:
        mode, used = search_settings("dense" if dense else "lexical" if lexical else "hybrid" if hybrid else None,
                                     fusion)
        used_fusion = str(used) if used else None
        conditions = None
        if where:
            from retriever.filters import parse_cli

            conditions = parse_cli(where)
        if queries is not None:
            from retriever.beir import read_queries

            query_texts = read_queries(queries)
        retriever = Retriever.open(index_dir or DEFAULT_INDEX_DIR, device=device)
        if queries is not None:
            results = retriever.search_batch(list(query_texts.values()), k=k, mode=mode, fusion=used,
                                             where=conditions)
        else:
            results = [retriever.search(query, k=k, mode=mode, fusion=used, where=conditions)]
    except _errors() as e:
        _fail(str(e))
    if queries is not None:
        from retriever.trec import write_trec_run

        tag = used_fusion or mode
        write_trec_run({qid: {h.id: h.score for h in hits} for qid, hits in zip(query_texts, results)}, output, tag)
        _stderr().print(f"{len(query_texts)} queries searched; TREC run written to {output}")
        return
    hits = results[0]
    score = {"dense": "cosine" if retriever.manifest.normalize else "inner product", "lexical": "BM25",
             "hybrid": f"fused ({used_fusion})"}[mode]
    if json_output:
        print(json.dumps({"query": query, "mode": mode, "fusion": used_fusion, "score": score,
                          "hits": [h.to_dict() for h in hits]},
                         ensure_ascii=False, indent=2))
        return
    _print_hits(query, hits, score)


def snippet(passage: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """Up to `width` characters of the passage: the stretch holding the most distinct query words (a long
    window's answer is rarely at its start), from a little before the first of them."""
    text = " ".join(passage.split())
    if len(text) <= width:
        return text
    lowered = text.lower()
    found = [[m.start() for m in re.finditer(rf"\b{re.escape(w)}", lowered)]
             for w in set(re.findall(r"\w{3,}", query.lower()))]

    def held(first: int) -> int:  # distinct query words in text[first: first + width]
        return sum(bisect.bisect_left(at, first) < bisect.bisect_left(at, first + width) for at in found)

    starts = sorted({max(0, place - width // 4) for at in found for place in at})
    start = max(starts, key=held, default=0)  # the first of the best
    start = lowered.rfind(" ", 0, start) + 1 if start else 0
    cut = text[start: start + width]
    return ("..." if start else "") + cut + ("..." if start + width < len(text) else "")


def _print_hits(query: str, hits, score: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if not hits:
        _stderr().print("no hits")
        return
    table = Table(show_lines=True)
    for column, style in (("rank", "bold"), (f"score\n{score}", None), ("id", "cyan"), ("title / path", None),
                          ("passage", None)):
        table.add_column(column, style=style, overflow="fold")
    for hit in hits:
        where = hit.title or hit.source
        if hit.source and hit.title and Path(hit.source).name not in hit.title:
            where = f"{hit.title}\n[dim]{hit.source}[/]"
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.id, where, snippet(hit.passage, query))
    Console(width=max(100, Console().width)).print(table)


@app.command()
def info(
    index_dir: Path = INDEX_OPTION,
    json_output: bool = typer.Option(False, "--json", metavar="", help="Print as JSON on stdout."),
) -> None:
    """What an index holds: model, dimension, documents and chunks, size, type, times."""
    from retriever.index import DEFAULT_INDEX_DIR, Retriever

    try:
        facts = Retriever.open(index_dir or DEFAULT_INDEX_DIR).info()
    except _errors() as e:
        _fail(str(e))
    if json_output:
        print(json.dumps(facts, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False)
    chunking = facts["chunking"]
    rows = {
        "index": facts["directory"],
        "model": f"{facts['model']} (fingerprint {facts['model_fingerprint']})",
        "dimension": f"{facts['dimension']} ({'cosine' if facts['normalize'] else 'inner product'})",
        "max length": f"{facts['max_length']} tokens",
        "dtype": facts["dtype"],
        "chunking": chunking["mode"] + (f", overlap {chunking['overlap']}" if chunking["mode"] == "window"
                                        else f", passages of {chunking['passage_tokens']} tokens"),
        "prompts": ", ".join(f"{k}: {v!r}" for k, v in facts["prompts"].items()) or "none",
        "index type": facts["index_type"],
        "search": facts["search"]["mode"] + (f" (fusion {facts['search']['fusion']})"
                                             if facts["search"]["mode"] == "hybrid" else ""),
        "documents": f"{facts['documents']:,}",
        "chunks": f"{facts['chunks']:,}",
        "segments": f"{len(facts['segments'])} ({facts['generation']}, index format {facts['format_version']})",
        "size on disk": f"{facts['size_bytes'] / 2**20:.1f} MiB",
        "created": facts["created"],
        "updated": facts["updated"],
        "versions": ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)


@app.command()
def remove(
    ids: list[str] = typer.Argument(..., metavar="ID", help="Ids of the documents to remove."),
    index_dir: Path = INDEX_OPTION,
    wait: float = typer.Option(0, metavar="SECONDS",
                               help="Seconds to wait for another writer of the same index before failing."),
) -> None:
    """Remove documents from an index by id."""
    from retriever.index import DEFAULT_INDEX_DIR, Retriever

    try:
        report = Retriever.open(index_dir or DEFAULT_INDEX_DIR).remove(ids, wait=wait)
    except KeyboardInterrupt:
        _fail("interrupted: the index was left as it was", 130)
    except _errors() as e:
        _fail(str(e))
    console = _stderr()
    console.print(f"{len(report.removed)} removed")
    if report.missing:
        console.print(f"not in the index: {', '.join(report.missing)}", highlight=False)
        if not report.removed:
            raise typer.Exit(1)


@app.command()
def serve(
    index_dir: Path = INDEX_OPTION,
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS",
                             help="Address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every network it "
                                  "is on."),
    port: int = typer.Option(8000, metavar="PORT", help="Port to listen on."),
    api_key: str = typer.Option(None, "--api-key", envvar="RETRIEVER_API_KEY", metavar="KEY",
                                help="Require this key on every request (Authorization: Bearer KEY or X-API-Key: "
                                     "KEY). Prefer the variable: a command line is visible to other users."),
    wait: float = typer.Option(10.0, metavar="SECONDS",
                               help="Seconds a write waits for another writer of the index before it gets 409."),
) -> None:
    """Serve an index over HTTP: JSON search, document writes, info; the OpenAPI page at /docs."""
    from retriever.index import DEFAULT_INDEX_DIR

    try:
        import uvicorn

        from retriever.server import create_app
    except ImportError as e:
        _fail(f"retriever serve needs the server extra (pip install 'modernbert-retriever[server]'): {e}")
    try:
        server_app = create_app(index_dir or DEFAULT_INDEX_DIR, api_key=api_key, wait=wait)
    except _errors() as e:
        _fail(str(e))
    uvicorn.run(server_app, host=host, port=port)
