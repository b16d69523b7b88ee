"""The varlen attention kernels against a dense, masked reference."""

from __future__ import annotations

import math

import pytest
import torch

from encoder.attention import AttentionPlan, varlen_attention

# CUDA groups global-attention buckets differently: both layouts must give the same attention
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def dense_reference(q, k, v, seqlens, window):
    """Each sequence alone, full softmax, keys limited to |i - j| <= window when window is set."""
    outs, start = [], 0
    for n in seqlens:
        qs, ks, vs = (x[start:start + n].transpose(0, 1) for x in (q, k, v))
        scores = qs @ ks.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if window is not None:
            pos = torch.arange(n)
            scores = scores.masked_fill((pos[:, None] - pos[None, :]).abs() > window, float("-inf"))
        outs.append((scores.softmax(-1) @ vs).transpose(0, 1))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize(
    "seqlens, window",
    [
        ([1], 4),
        ([4], 4),
        ([5, 1, 9], 4),
        ([64, 63, 65, 129, 2], 16),
        ([300], 64),
        ([7, 7, 7, 7], 3),
        ([100, 90, 88, 40, 39, 12], 8),
    ],
)
@pytest.mark.parametrize("is_global", [True, False], ids=["global", "sliding"])
@pytest.mark.parametrize("device", DEVICES)
def test_varlen_attention_matches_dense(seqlens, window, is_global, device):
    generator = torch.Generator().manual_seed(sum(seqlens) + window)
    total = sum(seqlens)
    q, k, v = (torch.randn(total, 3, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    cu_seqlens = torch.tensor([0] + seqlens).cumsum(0).to(torch.int32)
    plan = AttentionPlan.build(cu_seqlens.to(device), max(seqlens), window, "sdpa")
    qkv = torch.stack([q, k, v], dim=1).to(device)
    got = varlen_attention(qkv, plan, is_global=is_global, dropout_p=0.0).cpu()
    expected = dense_reference(q, k, v, seqlens, None if is_global else window)
    assert (got - expected).abs().max() < 1e-10


def test_sliding_layers_never_build_a_quadratic_mask():
    """An 8192-token sequence: the sliding-layer mask is blocks x window x 3*window, not 8192^2."""
    cu_seqlens = torch.tensor([0, 8192, 8192 + 3000], dtype=torch.int32)
    plan = AttentionPlan.build(cu_seqlens, 8192, 64, "sdpa")
    blocks = 8192 // 64 + math.ceil(3000 / 64)
    assert plan.block_mask.shape == (blocks, 1, 64, 192)
    assert plan.block_mask.numel() < 0.02 * (8192 + 3000) ** 2
    # a lone long sequence is its own global bucket, attended without padding or mask
    assert plan.buckets[0].key_mask is None and plan.buckets[0].length == 8192


def test_sliding_layers_of_short_sequences_attend_as_global_ones():
    """Sequences of at most window + 1 tokens: the band is every pair, so no blocks are built."""
    seqlens = [9, 3, 9, 1]
    cu_seqlens = torch.tensor([0] + seqlens).cumsum(0).to(torch.int32)
    plan = AttentionPlan.build(cu_seqlens, 9, 8, "sdpa")
    assert plan.sliding_is_global and plan.block_mask is None
    assert not AttentionPlan.build(torch.tensor([0, 10], dtype=torch.int32), 10, 8, "sdpa").sliding_is_global
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(sum(seqlens), 2, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    got = varlen_attention(torch.stack([q, k, v], dim=1), plan, is_global=False, dropout_p=0.0)
    assert (got - dense_reference(q, k, v, seqlens, 8)).abs().max() < 1e-10


def test_global_buckets_group_similar_lengths():
    seqlens = [100, 95, 90, 50, 48, 10]
    cu_seqlens = torch.tensor([0] + seqlens).cumsum(0).to(torch.int32)
    plan = AttentionPlan.build(cu_seqlens, 100, 4, "sdpa")
    assert [(b.batch, b.length) for b in plan.buckets] == [(3, 100), (2, 50), (1, 10)]
    for bucket in plan.buckets:
        padded_rows = bucket.batch * bucket.length
        assert bucket.valid_rows is None or bucket.valid_rows.sum() >= 7 / 8 * padded_rows


@pytest.mark.parametrize("seqlens", [[70, 3, 33], [40, 38, 36, 5]], ids=["lone-buckets", "padded-bucket"])
def test_backward_through_sliding_and_global_attention(seqlens):
    """Our gathers write gradients instead of scatter-adding them: check them against finite differences."""
    cu_seqlens = torch.tensor([0] + seqlens).cumsum(0).to(torch.int32)
    plan = AttentionPlan.build(cu_seqlens, max(seqlens), 8, "sdpa")
    generator = torch.Generator().manual_seed(0)
    for is_global in (True, False):
        qkv = torch.randn(sum(seqlens), 3, 2, 4, generator=generator, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda qkv: varlen_attention(qkv, plan, is_global=is_global, dropout_p=0.0), (qkv,)
        )
