"""The encoder benchmark: our encoder vs transformers' ModernBertModel (sdpa) on the same weights and inputs.

It builds ModernBERT-base-shaped random weights once, saves them as a transformers checkpoint, and runs our
encoder and `transformers.ModernBertModel` (attn_implementation="sdpa") on those weights, in this process, on the
same inputs:

(a) a ragged long batch: documents with lengths spread evenly over [long-min, long-max];
(b) a ragged short batch: texts with random lengths in [short-min, short-max].

It measures tokens/s (real tokens, padding not counted) for both and their ratio, peak memory above the process's
baseline, the max difference between the two outputs, and GFLOP/s: the model's useful FLOPs (no padding, sliding
layers counted at their window) per second, next to a plain matmul measured in the same run.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
import transformers

from encoder import ModernBertModel
from evals.bench.corpus import console
from evals.bench.timing import DTYPES, matmul_gflops, timed


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


def ragged_batch(lengths: list[int], vocab_size: int, seed: int, device: torch.device):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, n in enumerate(lengths):
        attention_mask[row, :n] = 1
    return input_ids.to(device), attention_mask.to(device)


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


def run(device: str, dtype: str | None, attn_backend: str | None, num_layers: int, long_docs: int, long_min: int,
        long_max: int, short_texts: int, short_min: int, short_max: int,
        repeats: int) -> tuple[dict, list[CaseResult]]:
    """The environment (device, versions, plain matmul GFLOP/s) and the results of cases (a) and (b)."""
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
    environment = {
        "device": torch.cuda.get_device_name() if torch_device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "attn_backend": ours.resolve_backend(),
        "layers": num_layers,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "matmul_gflops": matmul_gflops(torch_device, torch_dtype),
    }
    return environment, results
