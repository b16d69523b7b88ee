"""Texts of known token counts -> packed, unpadded encoder batches.

Inputs are sorted longest first and cut into batches of at most `batch_tokens` tokens, so one
8192-token document and a thousand short queries each make sensible batches; each batch runs
through the encoder once as the tokens of all its inputs back to back, with `cu_seqlens`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

DEFAULT_BATCH_TOKENS = 16384


def token_budget_batches(lengths: np.ndarray, batch_tokens: int) -> list[list[int]]:
    """Indices of the inputs, longest first, in batches of at most `batch_tokens` tokens
    (an input longer than the budget makes a batch of its own)."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        if current and current_tokens + lengths[i] > batch_tokens:
            batches.append(current)
            current, current_tokens = [], 0
        current.append(int(i))
        current_tokens += int(lengths[i])
    if current:
        batches.append(current)
    return batches


def encode_packed(model: torch.nn.Module, ids: list[list[int]], batch_tokens: int = DEFAULT_BATCH_TOKENS
                  ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Runs every input through `model` (a ModernBertModel) in token-budget batches: yields, per
    batch, (the inputs' indices, their token states [T, H] back to back, cu_seqlens [N + 1])."""
    lengths = np.array([len(x) for x in ids])
    device = model.device
    for batch in token_budget_batches(lengths, batch_tokens):
        packed_ids = torch.tensor([t for i in batch for t in ids[i]], device=device)
        cu_seqlens = torch.tensor(np.concatenate([[0], np.cumsum(lengths[batch])]), device=device)
        yield batch, model(packed_ids, cu_seqlens=cu_seqlens).last_hidden_state, cu_seqlens
