"""Attention over unpadded (packed) sequences.

Every layer sees hidden states as one [T, H] tensor holding all sequences back to back, with
`cu_seqlens` ([N + 1], int32) marking where each sequence starts. No token ever attends across a
sequence boundary. Two backends:

- "flash": flash-attn's varlen kernel, which takes the packed layout as it is (CUDA, fp16/bf16).
- "sdpa": PyTorch's scaled_dot_product_attention, everywhere else (CPU included).
  * Sliding layers run *blocked* attention: sequences are cut into blocks of `local_window`
    queries, and each block attends to its own block and its two neighbours (3 * window keys,
    an overlapping `unfold` view), masked to |i - j| <= window. Cost and memory are
    O(T * window); no T x T mask exists.
    When no sequence is longer than window + 1 the band holds every pair: sliding layers then
    run as global ones.
  * Global layers run SDPA on length buckets: sequences sorted by length and grouped so that
    each bucket wastes at most 1/8 of its rows on padding (more on CUDA where padding costs less
    than another kernel launch); a lone sequence runs unpadded.

`AttentionPlan.build` computes the gather/scatter indices once per forward pass; every layer
reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # flash-attn is an optional extra ("gpu")
    from flash_attn import flash_attn_varlen_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_varlen_func = None

BACKENDS = ("flash", "sdpa")

# A sequence joins a global-attention bucket (padded to the bucket's longest sequence) when it
# is at least this fraction of that length, so at most 1/8 of a bucket's rows are padding ...
_BUCKET_MIN_FILL = 7 / 8
# ... or when padding it adds fewer (query, key) pairs than one more SDPA call costs in fixed
# overhead. On a CPU that overhead is negligible next to the arithmetic; on an H200 a call costs
# about 65 us, the time of ~4M bf16 pairs: 64 texts of <= 512 tokens ran 27% faster as one bucket.
_BUCKET_JOIN_PAIRS = {"cuda": 4_000_000}


def flash_available() -> bool:
    return flash_attn_varlen_func is not None and torch.cuda.is_available()


def default_backend(device: torch.device, dtype: torch.dtype) -> str:
    if flash_available() and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "flash"
    return "sdpa"


def check_backend(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"attn_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "flash":
        if flash_attn_varlen_func is None:
            raise ValueError("attn_backend='flash' needs the flash-attn package (pip install '.[gpu]')")
        if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"attn_backend='flash' runs on CUDA in float16/bfloat16, not on {device.type} in {dtype}"
            )


@dataclass
class GlobalBucket:
    """Sequences of similar length attended together as one padded [b, L] batch."""

    gather: torch.Tensor | None  # [b * L] rows of the packed tensor; None: a plain slice
    scatter: torch.Tensor | None  # [b * L] packed row of each output slot, T (a spare row) for padding
    token_slice: slice | None  # the packed rows of a lone sequence (when gather is None)
    key_mask: torch.Tensor | None  # [b, 1, 1, L] True for real keys; None when nothing is padded
    valid_rows: torch.Tensor | None  # [b * L] True for real queries; None when nothing is padded
    batch: int
    length: int


@dataclass
class AttentionPlan:
    """Index bookkeeping for one packed batch, shared by all layers of a forward pass."""

    backend: str
    cu_seqlens: torch.Tensor  # [N + 1] int32
    max_seqlen: int
    total_tokens: int
    local_window: int
    # sdpa, sliding layers
    block_gather: torch.Tensor | None = None  # [(NB + 2) * window] packed row per block slot, one empty block each end
    block_scatter: torch.Tensor | None = None  # [T] block slot (among the NB * window) of each packed row
    block_mask: torch.Tensor | None = None  # [NB, 1, window, 3 * window]
    block_is_token: torch.Tensor | None = None  # [(NB + 2) * window] True where a slot holds a real token
    # sdpa, global layers
    buckets: list[GlobalBucket] | None = None

    @classmethod
    def build(
        cls, cu_seqlens: torch.Tensor, max_seqlen: int, local_window: int, backend: str
    ) -> AttentionPlan:
        total = int(cu_seqlens[-1])
        plan = cls(backend, cu_seqlens, max_seqlen, total, local_window)
        if backend == "sdpa":
            seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
            if not plan.sliding_is_global:
                plan._build_blocks(seqlens)
            plan._build_buckets(seqlens)
        return plan

    @property
    def sliding_is_global(self) -> bool:
        """No sequence is longer than one window plus one: every |i - j| <= local_window, so sliding layers
        attend as global ones do, without the blocks' 3 * window keys per query (queries, short passages)."""
        return self.max_seqlen <= self.local_window + 1

    def _build_blocks(self, seqlens: list[int]) -> None:
        device = self.cu_seqlens.device
        w = self.local_window
        starts = self.cu_seqlens[:-1].long()
        lengths = self.cu_seqlens[1:].long() - starts
        blocks_per_seq = (lengths + w - 1) // w
        first_block = torch.cumsum(blocks_per_seq, 0) - blocks_per_seq
        num_blocks = int(blocks_per_seq.sum())
        seq_of_token = torch.repeat_interleave(torch.arange(len(seqlens), device=device), lengths)
        offset_in_seq = torch.arange(self.total_tokens, device=device) - starts[seq_of_token]
        self.block_scatter = first_block[seq_of_token] * w + offset_in_seq
        # Padding slots point at row 0: they are masked as keys and dropped as queries, so any
        # finite row serves and no zero row has to be appended to q, k and v.
        gather = torch.zeros((num_blocks + 2) * w, dtype=torch.long, device=device)
        gather[self.block_scatter + w] = torch.arange(self.total_tokens, device=device)
        self.block_gather = gather
        is_token = torch.zeros((num_blocks + 2) * w, dtype=torch.bool, device=device)
        is_token[self.block_scatter + w] = True
        self.block_is_token = is_token

        valid = is_token[w:-w].view(num_blocks, w)
        seq_of_block = torch.repeat_interleave(torch.arange(len(seqlens), device=device), blocks_per_seq)
        same_as_prev = torch.zeros(num_blocks, dtype=torch.bool, device=device)
        same_as_prev[1:] = seq_of_block[1:] == seq_of_block[:-1]
        same_as_next = torch.zeros(num_blocks, dtype=torch.bool, device=device)
        same_as_next[:-1] = same_as_prev[1:]
        no_block = torch.zeros(1, w, dtype=torch.bool, device=device)
        prev_valid = torch.cat([no_block, valid[:-1]]) & same_as_prev[:, None]
        next_valid = torch.cat([valid[1:], no_block]) & same_as_next[:, None]
        key_valid = torch.cat([prev_valid, valid, next_valid], dim=1)  # [NB, 3w]
        # query i of a block sits at position w + i among its 3w keys
        q_pos = torch.arange(w, device=device)[:, None] + w
        k_pos = torch.arange(3 * w, device=device)[None, :]
        band = (q_pos - k_pos).abs() <= w
        self.block_mask = (band[None] & key_valid[:, None, :])[:, None]

    def _build_buckets(self, seqlens: list[int]) -> None:
        device = self.cu_seqlens.device
        starts = self.cu_seqlens[:-1].tolist()
        order = sorted((i for i in range(len(seqlens)) if seqlens[i] > 0), key=lambda i: -seqlens[i])
        groups: list[list[int]] = []
        join_pairs = _BUCKET_JOIN_PAIRS.get(device.type, 0)
        for i in order:
            longest = seqlens[groups[-1][0]] if groups else 0
            if groups and (seqlens[i] >= _BUCKET_MIN_FILL * longest or longest**2 - seqlens[i] ** 2 < join_pairs):
                groups[-1].append(i)
            else:
                groups.append([i])

        self.buckets = []
        for group in groups:
            length = seqlens[group[0]]
            if len(group) == 1:
                s = starts[group[0]]
                self.buckets.append(GlobalBucket(None, None, slice(s, s + length), None, None, 1, length))
                continue
            lens = torch.tensor([seqlens[i] for i in group], device=device)
            group_starts = torch.tensor([starts[i] for i in group], device=device)
            positions = torch.arange(length, device=device)
            valid = positions[None, :] < lens[:, None]  # [b, L]
            rows = group_starts[:, None] + positions
            padded = bool((lens != length).any())
            self.buckets.append(
                GlobalBucket(
                    gather=torch.where(valid, rows, 0).flatten(),  # pads read any row
                    scatter=torch.where(valid, rows, self.total_tokens).flatten(),  # and write the spare one
                    token_slice=None,
                    key_mask=valid[:, None, None, :] if padded else None,
                    valid_rows=valid.flatten() if padded else None,
                    batch=len(group),
                    length=length,
                )
            )


def varlen_attention(qkv: torch.Tensor, plan: AttentionPlan, is_global: bool, dropout_p: float) -> torch.Tensor:
    """qkv: [T, 3, heads, head_dim] (queries, keys, values) -> [T, heads, head_dim].

    q, k and v travel together so that every gather of the sdpa path is one copy of all three.
    """
    if plan.backend == "flash":
        window = (-1, -1) if is_global else (plan.local_window, plan.local_window)
        q, k, v = qkv.unbind(dim=1)
        return flash_attn_varlen_func(
            q, k, v, plan.cu_seqlens, plan.cu_seqlens, plan.max_seqlen, plan.max_seqlen,
            dropout_p=dropout_p, window_size=window,
        )
    if is_global or plan.sliding_is_global:
        return _bucketed_global_attention(qkv, plan, dropout_p)
    return _blocked_local_attention(qkv, plan, dropout_p)


class _GatherRows(torch.autograd.Function):
    """x[index] whose backward writes each row's gradient instead of scatter-adding it.

    Autograd's x[index] backward accumulates with atomic adds, which are slow in bf16 on CUDA
    (MLM training ran at half the fp32 speed). Here every gathered slot either names a distinct
    row or is padding whose gradient is exactly zero (masked key, dropped query), so copying the
    real slots' gradients is exact.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(index if real is None else index[real], real)
        ctx.num_rows = x.shape[0]
        return x[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, real = ctx.saved_tensors
        grad_x = grad.new_zeros((ctx.num_rows, *grad.shape[1:]))
        grad_x.index_copy_(0, rows, grad if real is None else grad[real])
        return grad_x, None, None


def gather_rows(x: torch.Tensor, index: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """x[index]; `real` marks the slots holding distinct rows (None: all), the rest being padding."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x[index]
    return _GatherRows.apply(x, index, real)


def _blocked_local_attention(qkv: torch.Tensor, plan: AttentionPlan, dropout_p: float) -> torch.Tensor:
    heads, head_dim = qkv.shape[2:]
    w = plan.local_window
    num_blocks = plan.block_mask.shape[0]
    inner, inner_is_token = plan.block_gather[w:-w], plan.block_is_token[w:-w]
    q = gather_rows(qkv[:, 0], inner, inner_is_token).view(num_blocks, w, heads, head_dim).transpose(1, 2)
    # each block's keys and values: its previous, own and next block, as overlapping unfold views of one
    # gathered copy (no copy of the 3x larger windows): [NB, 2, heads, head_dim, 3w] -> [NB, heads, 3w, head_dim]
    kv = gather_rows(qkv[:, 1:], plan.block_gather, plan.block_is_token).unfold(0, 3 * w, w)
    k, v = (x.permute(0, 1, 3, 2) for x in kv.unbind(dim=1))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.block_mask, dropout_p=dropout_p)
    out = out.transpose(1, 2).reshape(num_blocks * w, heads, head_dim)
    return gather_rows(out, plan.block_scatter)


def _bucketed_global_attention(qkv: torch.Tensor, plan: AttentionPlan, dropout_p: float) -> torch.Tensor:
    heads, head_dim = qkv.shape[2:]
    if len(plan.buckets) == 1 and plan.buckets[0].gather is None:  # one sequence, unpadded and in packed order
        q, k, v = (x[None].transpose(1, 2) for x in qkv.unbind(dim=1))
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p).transpose(1, 2)[0]
    # every bucket writes its real rows straight into place; padding writes the spare last row, dropped at the end
    out = qkv.new_empty(plan.total_tokens + 1, heads, head_dim)
    for bucket in plan.buckets:
        if bucket.gather is None:
            bucket_qkv = qkv[bucket.token_slice][None]
        else:
            bucket_qkv = gather_rows(qkv, bucket.gather, bucket.valid_rows)
        bucket_qkv = bucket_qkv.view(bucket.batch, bucket.length, 3, heads, head_dim)
        q, k, v = (x.transpose(1, 2) for x in bucket_qkv.unbind(dim=2))
        bucket_out = F.scaled_dot_product_attention(q, k, v, attn_mask=bucket.key_mask, dropout_p=dropout_p)
        bucket_out = bucket_out.transpose(1, 2).reshape(bucket.batch * bucket.length, heads, head_dim)
        if bucket.gather is None:
            out[bucket.token_slice] = bucket_out
        else:
            out.index_copy_(0, bucket.scatter, bucket_out)
    return out[:-1]
