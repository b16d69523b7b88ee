"""Training schedules from the ModernBERT recipe.

- Learning rate: warmup-stable-decay (trapezoidal). Linear warmup to the peak, constant, then
  a 1-sqrt decay to zero over the last `decay_steps`.
- Batch size warmup: the token budget per step grows linearly from `start_tokens` to
  `full_tokens` over the first `warmup_tokens` training tokens.
"""

from __future__ import annotations

import math


def wsd_learning_rate(step: int, *, peak: float, total_steps: int, warmup_steps: int, decay_steps: int) -> float:
    if not 0 <= warmup_steps <= total_steps - decay_steps:
        raise ValueError(f"warmup ({warmup_steps}) + decay ({decay_steps}) steps exceed total steps ({total_steps})")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return peak
    progress = min((step - decay_start) / decay_steps, 1.0)
    return peak * (1.0 - math.sqrt(progress))


def batch_tokens_at(tokens_seen: int, *, start_tokens: int, full_tokens: int, warmup_tokens: int) -> int:
    """Token budget of the next step after `tokens_seen` training tokens."""
    if warmup_tokens <= 0 or tokens_seen >= warmup_tokens:
        return full_tokens
    return int(start_tokens + (full_tokens - start_tokens) * tokens_seen / warmup_tokens)
