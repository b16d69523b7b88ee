"""Greedy sequence packing: sequences go whole into fixed token budgets, fed unpadded with cu_seqlens.

Best-fit decreasing: longest sequence first, each into the open pack whose free space it fills
most tightly, a new pack when none has room. No sequence is ever split, so no token attends
across a pack boundary once the pack runs with `cu_seqlens`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


def pack_best_fit(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of the sequences in each pack; every pack's lengths sum to at most `budget`."""
    too_long = [i for i, n in enumerate(lengths) if n > budget]
    if too_long:
        raise ValueError(
            f"{len(too_long)} sequences exceed the pack budget of {budget} tokens (first: index {too_long[0]}, "
            f"{lengths[too_long[0]]} tokens); truncate them to the budget before packing"
        )
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, pack index), sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = bisect.bisect_left(free, (lengths[i], -1))
        if slot < len(free):
            space, pack = free.pop(slot)
        else:
            space, pack = budget, len(packs)
            packs.append([])
        packs[pack].append(i)
        bisect.insort(free, (space - lengths[i], pack))
    return packs


def packing_efficiency(lengths: Sequence[int], packs: list[list[int]], budget: int) -> float:
    """Share of the packs' token budget filled with real tokens."""
    return sum(lengths[i] for pack in packs for i in pack) / (budget * len(packs)) if packs else 0.0


def collate_pack(sequences: Sequence[Sequence[int]], pack: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One pack as the encoder's packed input: input_ids [T] and cu_seqlens [N + 1]."""
    chosen = [torch.as_tensor(sequences[i], dtype=torch.long) for i in pack]
    lengths = torch.tensor([len(s) for s in chosen])
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return torch.cat(chosen), cu_seqlens
