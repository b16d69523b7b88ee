"""The GPU path in one run (`retriever bench gpu-check`), sized to finish within 10 minutes on one GPU.

1. The encoder benchmark (`evals.bench.encoder`) in bfloat16 with the ModernBERT paper's Table 2
   shapes, ModernBERT-base (22 layers, random weights): fixed 8192-token and variable-length long
   documents, fixed 512-token and variable-length short texts. Each case also checks parity: our
   encoder against transformers' ModernBertModel (sdpa) on the same weights and tokens, max |diff|
   of the last hidden states within BF16_TOLERANCE (bfloat16 keeps 8 bits of mantissa: through 22
   layers the two orders of operations drift by a few hundredths).
2. With flash-attn installed, the same shapes again with `attn_backend="sdpa"`: the sliding-window
   path without it (without flash-attn, the first run is that path).
3. A few contrastive training steps (`recipes.contrastive`, in-batch negatives) of a ModernBERT-base
   shaped model with random weights: the training path runs on the device.

`--quick` shrinks every shape (2 layers, short documents, a 64-wide model to train) so that the same
code runs on a CPU in a test. Tokens/s sit beside the paper's RTX 4090 figures for base (Table 2):
147.3k tokens/s on short variable-length texts, 133.8k on long variable-length documents.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import asdict

BF16_TOLERANCE = 0.1
PAPER_RTX4090_BASE = {"short variable": 147_300, "long variable": 133_800}
# (long documents, long min, long max, short texts, short min, short max) per run
FULL_SHAPES = {"fixed": (16, 8192, 8192, 1024, 512, 512), "variable": (16, 1024, 8192, 1024, 16, 512)}
QUICK_SHAPES = {"fixed": (2, 512, 512, 8, 64, 64), "variable": (2, 128, 512, 8, 16, 64)}


def _encoder_runs(device: str, quick: bool) -> list[dict]:
    from evals.bench.encoder import run

    from encoder.attention import flash_available

    layers, repeats = (2, 1) if quick else (22, 3)
    # the backend the model picks (flash-attn when installed), then SDPA's sliding window if that was not it
    backends = [None, "sdpa"] if flash_available() and device == "cuda" else ["sdpa"]
    runs = []
    for backend in backends:
        for lengths, shape in (QUICK_SHAPES if quick else FULL_SHAPES).items():
            environment, results = run(device, "bf16", backend, layers, *shape, repeats)
            for result in results:
                kind = "long" if result.case.startswith("(a)") else "short"
                runs.append({**asdict(result), "set": f"{kind} {lengths}", "attn_backend": environment["attn_backend"],
                             "parity_ok": result.max_abs_diff <= BF16_TOLERANCE,
                             "paper_rtx4090_tokens_per_s": PAPER_RTX4090_BASE.get(f"{kind} {lengths}")})
    return runs


def _contrastive_steps(device: str, quick: bool, workdir: str) -> dict:
    import torch
    import transformers

    from recipes.contrastive import ContrastiveConfig, train_contrastive

    checkpoint = f"{workdir}/model"
    tiny = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, vocab_size=256, pad_token_id=0,
                bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3) if quick else {}
    hf_config = transformers.ModernBertConfig(num_hidden_layers=2 if quick else 22, **tiny)
    torch.manual_seed(0)
    transformers.ModernBertModel(hf_config).save_pretrained(checkpoint)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(hf_config.vocab_size), cls_token="[CLS]", sep_token="[SEP]",
        pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]").save_pretrained(checkpoint)
    words = [f"w{i}" for i in range(200)]
    pairs = [{"query": " ".join(words[i:i + 4]), "positive": " ".join(words[i:i + 60])} for i in range(64)]
    steps = 3
    config = ContrastiveConfig(model=checkpoint, output_dir=f"{workdir}/trained", batch_size=16, max_steps=steps,
                               max_length=128, lr=1e-4, dtype="float32")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its summary; --json owns stdout
        model = train_contrastive(config, pairs=pairs)
    return {"steps": steps, "batch_size": config.batch_size, "seconds": round(time.perf_counter() - started, 2),
            "device": str(model.device), "ok": str(model.device).startswith(device)}


def _tokenizer(vocab_size: int):
    """A word-level tokenizer of the check's made-up words, with ModernBERT's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    vocab.update({f"w{i}": len(vocab) + i for i in range(min(200, vocab_size - len(vocab)))})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return tokenizer


def run(device: str, quick: bool, status) -> dict:
    started = time.perf_counter()
    status("encoder benchmark and parity, bfloat16")
    encoder = _encoder_runs(device, quick)
    status("contrastive training steps")
    with tempfile.TemporaryDirectory() as workdir:
        contrastive = _contrastive_steps(device, quick, workdir)
    return {"device": device, "quick": quick, "bf16_tolerance": BF16_TOLERANCE, "encoder": encoder,
            "contrastive": contrastive, "all_ok": all(r["parity_ok"] for r in encoder) and contrastive["ok"],
            "seconds": round(time.perf_counter() - started, 1)}
