"""MLM masking as in ModernBERT: 30% of the non-special tokens are chosen for prediction; of those
80% become [MASK], 10% a random token, 10% stay. Only chosen tokens carry a label."""

from __future__ import annotations

from collections.abc import Iterable

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    special_token_ids: Iterable[int],
    vocab_size: int,
    rate: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input_ids, labels): labels hold the original id where a token was chosen, -100 elsewhere."""
    special = torch.isin(input_ids, torch.tensor(sorted(set(special_token_ids)), dtype=input_ids.dtype))
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = (draw < rate) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    # split the chosen tokens 80 / 10 / 10 with a second, independent draw
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
