"""The MLM benchmark: training tokens/s of our packed, unpadded steps vs transformers' padded batches.

Both sides: same texts (SciFact's abstracts), same weights, 30% masking, AdamW, forward + backward + step. Ours packs
texts best-fit into `step_tokens` and runs them with cu_seqlens (sparse prediction); the baseline is transformers'
ModernBertForMaskedLM (sdpa) on right-padded batches in the same shuffled order.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from encoder import ModernBertConfig, ModernBertForMaskedLM
from evals.bench.corpus import console, read_beir_corpus, train_tokenizer
from evals.bench.timing import DTYPES, sync
from recipes.masking import mask_tokens
from recipes.packing import collate_pack, pack_best_fit, packing_efficiency


def run(scifact: Path, docs: int, num_layers: int, step_tokens: int, steps: int, device: str,
        dtype: str | None) -> dict:
    """Tokens/s of both sides over `steps` timed steps, their ratio, and the packing efficiency."""
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

    def train(model, batches, step_fn) -> tuple[float, int]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()
        tokens, elapsed = 0, 0.0
        for i, batch in enumerate(batches[: steps + 1]):
            sync(torch_device)
            start = time.perf_counter()
            with torch.autocast(torch_device.type, dtype=autocast_dtype, enabled=autocast_dtype != torch.float32):
                loss = step_fn(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(torch_device)
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
        ours_s, ours_tokens = train(ours, packs, packed_step)
    with console.status("transformers: padded batches"):
        ref_s, ref_tokens = train(reference, padded_batches, padded_step)
    return {
        "device": device, "dtype": str(autocast_dtype).removeprefix("torch."), "layers": num_layers,
        "steps": steps, "ours_tokens_per_s": ours_tokens / ours_s, "padded_tokens_per_s": ref_tokens / ref_s,
        "speedup": (ours_tokens / ours_s) / (ref_tokens / ref_s),
        "packing_efficiency": packing_efficiency(lengths, packs, step_tokens),
    }
