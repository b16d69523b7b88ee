"""Benchmarks. `python -m evals.bench encoder|embedder|mlm|retriever` (also `retriever bench ...`).

The encoder benchmark builds ModernBERT-base-shaped random weights once, saves them as a
transformers checkpoint, and runs our encoder and `transformers.ModernBertModel`
(attn_implementation="sdpa") on those weights, in this process, on the same inputs:

(a) a ragged long batch: documents with lengths spread evenly over [long-min, long-max];
(b) a ragged short batch: texts with random lengths in [short-min, short-max].

It prints tokens/s (real tokens, padding not counted) for both and their ratio, peak memory
above the process's baseline, the max difference between the two outputs, and GFLOP/s: the
model's useful FLOPs (no padding, sliding layers counted at their window) per second, next to a
plain matmul measured in the same run.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)



@app.callback()
def main() -> None:
    """Speed benchmarks: figures and ratios against the reference, measured in one run."""


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class CaseResult:
    case: str
    shape: str
    tokens: int
    ours_s: float
    reference_s: float
    ours_tokens_per_s: float
    reference_tokens_per_s: float
    speedup: float
    ours_peak_mib: float
    reference_peak_mib: float
    ours_gflops: float
    reference_gflops: float
    max_abs_diff: float


class PeakMemory:
    """Peak memory above the starting point: CUDA allocator stats, or RSS sampled every 2 ms on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _return_free_memory_to_os()
            self.base = _rss_bytes()
            self.peak_bytes = 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() - self.base)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() - self.base)

    @property
    def mib(self) -> float:
        return self.peak_bytes / 2**20


def _return_free_memory_to_os() -> None:
    """So that one model's freed heap does not hide the next model's peak from RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def model_flops(config, lengths: list[int]) -> float:
    """Forward FLOPs of the real tokens: matmuls (2 per multiply-add) of every layer and attention.

    Attention counts QK^T and PV over the (query, key) pairs that each layer really attends:
    all pairs of a sequence in global layers, |i - j| <= window in sliding layers.
    """
    h, i = config.hidden_size, config.intermediate_size
    per_token_per_layer = 2 * (h * 3 * h + h * h + h * 2 * i + i * h)
    tokens = sum(lengths)
    w = config.local_window
    global_pairs = sum(n * n for n in lengths)
    sliding_pairs = 0
    for n in lengths:
        pos = np.arange(n)
        sliding_pairs += int((np.minimum(pos + w, n - 1) - np.maximum(pos - w, 0) + 1).sum())
    n_global = sum(config.is_global(k) for k in range(config.num_hidden_layers))
    n_sliding = config.num_hidden_layers - n_global
    attention = 4 * h * (n_global * global_pairs + n_sliding * sliding_pairs)
    return config.num_hidden_layers * per_token_per_layer * tokens + attention


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    repeats = 20 if device.type == "cuda" else 3
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ragged_batch(lengths: list[int], vocab_size: int, seed: int, device: torch.device):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, n in enumerate(lengths):
        attention_mask[row, :n] = 1
    return input_ids.to(device), attention_mask.to(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall time over repeats, peak memory of the first run, and the output."""
    best = float("inf")
    peak = None
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            best = min(best, time.perf_counter() - start)
        peak = memory.mib if peak is None else peak
    return best, peak, out


def run_case(name, lengths, ours, reference, config, device, repeats) -> CaseResult:
    input_ids, attention_mask = ragged_batch(lengths, config.vocab_size, seed=len(lengths), device=device)
    warm_ids, warm_mask = input_ids[:2, :64], attention_mask[:2, :64]
    with torch.inference_mode():
        ours(warm_ids, warm_mask)
        reference(input_ids=warm_ids, attention_mask=warm_mask)
        console.print(f"[bold]{name}[/]: {len(lengths)} sequences, {sum(lengths)} tokens "
                      f"(lengths {min(lengths)}..{max(lengths)}), padded to {max(lengths)}")
        with console.status(f"{name}: ours"):
            ours_s, ours_peak, ours_out = timed(lambda: ours(input_ids, attention_mask).last_hidden_state,
                                                device, repeats)
        console.print(f"  ours        {ours_s:8.2f} s")
        with console.status(f"{name}: transformers"):
            ref_s, ref_peak, ref_out = timed(
                lambda: reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
                device, repeats)
        console.print(f"  transformers {ref_s:7.2f} s")
    mask = attention_mask.bool()
    diff = (ours_out[mask].float() - ref_out[mask].float()).abs().max().item()
    tokens = sum(lengths)
    flops = model_flops(config, lengths)
    return CaseResult(
        case=name,
        shape=f"{len(lengths)} x {min(lengths)}..{max(lengths)}",
        tokens=tokens,
        ours_s=ours_s,
        reference_s=ref_s,
        ours_tokens_per_s=tokens / ours_s,
        reference_tokens_per_s=tokens / ref_s,
        speedup=ref_s / ours_s,
        ours_peak_mib=ours_peak,
        reference_peak_mib=ref_peak,
        ours_gflops=flops / ours_s / 1e9,
        reference_gflops=flops / ref_s / 1e9,
        max_abs_diff=diff,
    )


@app.command()
def encoder(
    device: str = typer.Option("cpu", help="Device to run on: cpu or cuda."),
    dtype: str = typer.Option(None, help="fp32, bf16 or fp16. Default: fp32 on CPU, bf16 on CUDA."),
    attn_backend: str = typer.Option(None, help="Our attention backend (flash or sdpa). Default: automatic."),
    num_layers: int = typer.Option(22, help="Encoder layers (ModernBERT-base has 22)."),
    long_docs: int = typer.Option(8, help="Documents in the ragged long batch (a)."),
    long_min: int = typer.Option(512, help="Shortest document of batch (a), tokens."),
    long_max: int = typer.Option(8192, help="Longest document of batch (a), tokens."),
    short_texts: int = typer.Option(64, help="Texts in the ragged short batch (b)."),
    short_min: int = typer.Option(16, help="Shortest text of batch (b), tokens."),
    short_max: int = typer.Option(512, help="Longest text of batch (b), tokens."),
    repeats: int = typer.Option(1, help="Timed runs per case and model; the best is reported."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Our encoder vs transformers' ModernBertModel (sdpa): tokens/s, ratio, peak memory, GFLOP/s."""
    import transformers

    from encoder import ModernBertModel

    torch_device = torch.device(device)
    torch_dtype = DTYPES[dtype] if dtype else (torch.bfloat16 if torch_device.type == "cuda" else torch.float32)
    hf_config = transformers.ModernBertConfig(num_hidden_layers=num_layers, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as checkpoint, console.status("building random ModernBERT-base weights"):
        torch.manual_seed(0)
        transformers.ModernBertModel(hf_config).save_pretrained(checkpoint)
        reference = transformers.ModernBertModel.from_pretrained(
            checkpoint, attn_implementation="sdpa", dtype=torch_dtype).to(torch_device).eval()
        ours = ModernBertModel.from_pretrained(checkpoint, device=torch_device, dtype=torch_dtype,
                                               attn_backend=attn_backend)
    config = ours.config

    long_lengths = np.linspace(long_min, long_max, long_docs).round().astype(int).tolist()
    rng = np.random.default_rng(0)
    short_lengths = rng.integers(short_min, short_max, size=short_texts, endpoint=True).tolist()
    results = [
        run_case("(a) long ragged", long_lengths, ours, reference, config, torch_device, repeats),
        run_case("(b) short ragged", short_lengths, ours, reference, config, torch_device, repeats),
    ]
    matmul = matmul_gflops(torch_device, torch_dtype)

    environment = {
        "device": torch.cuda.get_device_name() if torch_device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "attn_backend": ours.resolve_backend(),
        "layers": num_layers,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "matmul_gflops": matmul,
    }
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
    Console().print(table)
    Console().print(f"plain {environment['dtype']} matmul on this device: {matmul:,.1f} GFLOP/s "
                    f"(ours reaches {results[0].ours_gflops / matmul:.0%} on (a), "
                    f"{results[1].ours_gflops / matmul:.0%} on (b))")


SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def read_beir_corpus(directory: Path, limit: int) -> list[str]:
    corpus_path = directory / "corpus.jsonl"
    if not corpus_path.is_file():
        raise typer.BadParameter(f"{corpus_path} not found: pass --scifact with a BEIR folder")
    texts = []
    with corpus_path.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if len(texts) == limit:
                break
    return texts


def train_tokenizer(texts: list[str], path: Path):
    """A byte-level BPE with ModernBERT's special tokens, trained on the benchmark corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=16384, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=8192)
    fast.save_pretrained(path)
    return fast


def long_documents(texts: list[str], tokenizer, lengths: list[int]) -> list[str]:
    """Abstracts concatenated (cycling through the corpus) and cut to the given token counts."""
    docs, i = [], 0
    for target in lengths:
        ids: list[int] = []
        while len(ids) < target:
            ids += tokenizer(texts[i % len(texts)], add_special_tokens=False)["input_ids"]
            i += 1
        docs.append(tokenizer.decode(ids[: target - 2]))
    return docs


@app.command()
def embedder(
    scifact: Path = typer.Option(SCIFACT, help="BEIR folder whose corpus.jsonl gives the short documents."),
    docs: int = typer.Option(256, help="Abstracts to encode."),
    long_docs: int = typer.Option(2, help="Long documents, lengths spread evenly up to --max-length."),
    max_length: int = typer.Option(
        2048, help="Longest document, tokens (up to 8192; at 8192 stock pads its first batch of "
                   "--batch-size texts to 8192 tokens, about 50 minutes on a 2-core CPU)."),
    num_layers: int = typer.Option(22, help="Encoder layers (ModernBERT-base shape otherwise)."),
    batch_size: int = typer.Option(32, help="Stock batch size (sentence-transformers' default: 32)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """load_embedder(dir) vs stock SentenceTransformer(dir): docs/s on abstracts plus long documents.

    The checkpoint is ModernBERT-base-shaped with random weights, mean pooling and normalisation,
    and a BPE tokenizer trained on the abstracts. Both encode the whole corpus in one call, as a
    user would: stock with --batch-size texts per padded batch, ours with its token budget.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from encoder import ModernBertConfig, ModernBertModel, load_embedder

    texts = read_beir_corpus(scifact, docs)
    with tempfile.TemporaryDirectory() as tmp, console.status("building checkpoint and tokenizer"):
        checkpoint, layout = Path(tmp) / "checkpoint", Path(tmp) / "st"
        tokenizer = train_tokenizer(texts, checkpoint)
        lengths = np.linspace(max_length, max_length / long_docs, long_docs).round().astype(int).tolist()
        long_texts = long_documents(texts, tokenizer, lengths)
        torch.manual_seed(0)
        config = ModernBertConfig.for_tokenizer(tokenizer, num_hidden_layers=num_layers)
        ModernBertModel(config).save_pretrained(checkpoint)
        transformer = Transformer(str(checkpoint), max_seq_length=max_length)
        SentenceTransformer(modules=[transformer, Pooling(config.hidden_size, "mean"), Normalize()],
                            device="cpu").save(str(layout))
        stock = SentenceTransformer(str(layout), device="cpu")
        ours = load_embedder(layout, device="cpu")

    corpus = texts + long_texts
    tokens = sum(len(x) for x in tokenizer(corpus, truncation=True, max_length=max_length)["input_ids"])
    console.print(f"{len(texts)} abstracts + {len(long_texts)} long documents ({lengths} tokens), {tokens} tokens")
    stock.encode(texts[:4])
    ours.encode(texts[:4])
    start = time.perf_counter()
    ours_embeddings = ours.encode(corpus, show_progress_bar=True)
    ours_s = time.perf_counter() - start
    console.print(f"  ours  {ours_s:8.1f} s")
    start = time.perf_counter()
    stock_embeddings = stock.encode(corpus, batch_size=batch_size, show_progress_bar=True)
    stock_s = time.perf_counter() - start
    console.print(f"  stock {stock_s:8.1f} s")
    result = {
        "docs": len(corpus), "tokens": tokens, "layers": num_layers, "threads": torch.get_num_threads(),
        "ours_s": ours_s, "stock_s": stock_s,
        "ours_docs_per_s": len(corpus) / ours_s, "stock_docs_per_s": len(corpus) / stock_s,
        "speedup": stock_s / ours_s,
        "max_abs_diff": float(np.abs(ours_embeddings - stock_embeddings).max()),
    }
    if json_output:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"embedding throughput, ModernBERT-base shape ({num_layers} layers), fp32, "
                        f"cpu ({result['threads']} threads)")
    table.add_column("")
    table.add_column("load_embedder", justify="right")
    table.add_column("stock SentenceTransformer", justify="right")
    table.add_row("docs/s", f"{result['ours_docs_per_s']:.2f}", f"{result['stock_docs_per_s']:.2f}")
    table.add_row("tokens/s", f"{tokens / ours_s:,.0f}", f"{tokens / stock_s:,.0f}")
    table.add_row("wall time s", f"{ours_s:.1f}", f"{stock_s:.1f}")
    Console().print(table)
    Console().print(f"speedup [bold]{result['speedup']:.2f}x[/]; max |ours - stock| = {result['max_abs_diff']:.2e}")


@app.command()
def mlm(
    scifact: Path = typer.Option(SCIFACT, help="BEIR folder whose corpus.jsonl gives the training texts."),
    docs: int = typer.Option(512, help="Texts to train on."),
    num_layers: int = typer.Option(22, help="Encoder layers (ModernBERT-base shape otherwise)."),
    step_tokens: int = typer.Option(4096, help="Token budget of a packed step; the padded baseline takes as many "
                                               "texts per step as a packed step holds on average."),
    steps: int = typer.Option(4, help="Timed training steps per side (after one untimed step)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option(None, help="fp32 or bf16 (autocast). Default: fp32 on CPU, bf16 on CUDA."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """MLM training tokens/s: our packed, unpadded steps vs transformers' padded batches, same data and weights.

    Both sides: same texts, 30% masking, AdamW, forward + backward + step. Ours packs texts
    best-fit into `step_tokens` and runs them with cu_seqlens (sparse prediction); the baseline is
    transformers' ModernBertForMaskedLM (sdpa) on right-padded batches in the same shuffled order.
    """
    import transformers

    from encoder import ModernBertConfig, ModernBertForMaskedLM
    from recipes.masking import mask_tokens
    from recipes.packing import collate_pack, pack_best_fit, packing_efficiency

    torch_device = torch.device(device)
    autocast_dtype = DTYPES[dtype] if dtype else (torch.bfloat16 if torch_device.type == "cuda" else torch.float32)
    texts = read_beir_corpus(scifact, docs)
    with tempfile.TemporaryDirectory() as tmp, console.status("building checkpoint and tokenizer"):
        tokenizer = train_tokenizer(texts, Path(tmp) / "tok")
        sequences = tokenizer(texts, truncation=True, max_length=1024)["input_ids"]
        torch.manual_seed(0)
        config = ModernBertConfig.for_tokenizer(tokenizer, num_hidden_layers=num_layers, sparse_prediction=True)
        ModernBertForMaskedLM(config).save_pretrained(Path(tmp) / "model")
        ours = ModernBertForMaskedLM.from_pretrained(Path(tmp) / "model", device=torch_device, dtype=torch.float32)
        reference = transformers.ModernBertForMaskedLM.from_pretrained(
            Path(tmp) / "model", attn_implementation="sdpa").to(torch_device)
    lengths = [len(s) for s in sequences]
    packs = pack_best_fit(lengths, step_tokens)
    per_batch = max(1, round(len(sequences) / len(packs)))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sequences)).tolist()
    padded_batches = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
    generator = torch.Generator().manual_seed(0)

    def masked(ids: torch.Tensor):
        return mask_tokens(ids, mask_token_id=tokenizer.mask_token_id, special_token_ids=tokenizer.all_special_ids,
                           vocab_size=len(tokenizer), generator=generator)

    def run(model, batches, step_fn) -> tuple[float, int]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()
        tokens, elapsed = 0, 0.0
        for i, batch in enumerate(batches[: steps + 1]):
            _sync(torch_device)
            start = time.perf_counter()
            with torch.autocast(torch_device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
                loss = step_fn(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(torch_device)
            if i:  # the first step warms up kernels and allocators
                elapsed += time.perf_counter() - start
                tokens += sum(lengths[j] for j in batch)
        return elapsed, tokens

    def packed_step(model, batch):
        ids, cu_seqlens = collate_pack(sequences, batch)
        masked_ids, labels = masked(ids)
        return model(masked_ids.to(torch_device), cu_seqlens=cu_seqlens.to(torch_device),
                     labels=labels.to(torch_device)).loss

    def padded_step(model, batch):
        padded = tokenizer.pad({"input_ids": [sequences[j] for j in batch]}, return_tensors="pt")
        masked_ids, labels = masked(padded["input_ids"])
        labels[padded["attention_mask"] == 0] = -100
        return model(input_ids=masked_ids.to(torch_device), attention_mask=padded["attention_mask"].to(torch_device),
                     labels=labels.to(torch_device)).loss

    console.print(f"{len(sequences)} texts, packing efficiency {packing_efficiency(lengths, packs, step_tokens):.1%}, "
                  f"{per_batch} texts per padded batch")
    with console.status("ours: packed steps"):
        ours_s, ours_tokens = run(ours, packs, packed_step)
    with console.status("transformers: padded batches"):
        ref_s, ref_tokens = run(reference, padded_batches, padded_step)
    result = {
        "device": device, "dtype": str(autocast_dtype).removeprefix("torch."), "layers": num_layers,
        "steps": steps, "ours_tokens_per_s": ours_tokens / ours_s, "padded_tokens_per_s": ref_tokens / ref_s,
        "speedup": (ours_tokens / ours_s) / (ref_tokens / ref_s),
        "packing_efficiency": packing_efficiency(lengths, packs, step_tokens),
    }
    if json_output:
        print(json.dumps(result, indent=2))
        return
    Console().print(f"MLM training, ModernBERT-base shape ({num_layers} layers), {result['dtype']}, {device}: "
                    f"packed+unpadded {result['ours_tokens_per_s']:,.0f} tokens/s vs padded "
                    f"{result['padded_tokens_per_s']:,.0f} tokens/s = [bold]{result['speedup']:.2f}x[/]")



@app.command("retriever")
def retriever_command(
    model: str = typer.Option("default", help="Embedding model: 'default' (shipped), a folder or a hub id."),
    docs: int = typer.Option(100_000, help="Documents of the synthetic collection (random vectors)."),
    queries: int = typer.Option(200, help="Queries timed for warm latency."),
    cold_runs: int = typer.Option(3, help="New `retriever search` processes timed."),
    index_types: list[str] = typer.Option(["flat", "hnsw"], "--index-type", help="Index types of the synthetic case."),
    scifact: Path = typer.Option(SCIFACT, help="BEIR SciFact folder for the real-model case (skipped if absent)."),
    scifact_docs: int = typer.Option(0, help="Abstracts indexed (0: all 5,183)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Indexing throughput against the pure encoder, and warm/cold search latency (see evals/bench_retriever.py)."""
    from evals.bench_retriever import run

    with console.status("") as status:
        report = run(model, docs, queries, cold_runs, index_types, scifact, scifact_docs,
                     lambda text: status.update(text))
    report["environment"] = {"device": platform.processor() or "cpu", "threads": torch.get_num_threads(),
                             "torch": torch.__version__}
    if json_output:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"retriever, model {model}, cpu ({torch.get_num_threads()} threads)")
    for column in ("case", "write/index docs/s", "encoder docs/s", "index/encoder", "encoder share",
                   "warm p50 ms", "p99 ms", "query encode ms", "cold CLI s"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        table.add_row(
            r["case"], f"{r.get('write_docs_per_s', r.get('index_docs_per_s')):,.0f}",
            f"{r['encoder_docs_per_s']:,.1f}" if "encoder_docs_per_s" in r else "",
            f"{r['index_vs_encoder']:.0%}" if "index_vs_encoder" in r else "",
            f"{r['encoder_share_of_index_time']:.0%}" if "encoder_share_of_index_time" in r else "",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
            f"{r['query_encode_p50_ms']:.1f}" if "query_encode_p50_ms" in r else "",
            f"{r['cold_cli_median_s']:.2f}" if "cold_cli_median_s" in r else "")
    Console(width=160).print(table)
    Console().print("targets: index >= 90% of pure encoder docs/s; warm p50 <= 30 ms at 100k docs; cold CLI <= 2 s")


if __name__ == "__main__":
    app()
