"""ModernBERT (Warner et al., 2024), unpadded end to end.

Parameter names match transformers' `modeling_modernbert.py`, so Hugging Face checkpoints load
as they are. The forward pass unpads once: padded [B, L] input becomes one packed [T] sequence
of real tokens with `cu_seqlens` boundaries, every layer runs on [T, H], and the output is
re-padded only at the end. Packed input ([T] + `cu_seqlens`) skips both steps. On a CPU a large
batch runs in groups of whole sequences (see CPU_GROUP_ACTIVATION_BYTES).

Layer i uses global attention with RoPE theta `global_rope_theta` when `layer_types[i]` is
"full_attention", else attention limited to `local_window` tokens each side with
`local_rope_theta`. RoPE positions restart at 0 in every sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoder.attention import AttentionPlan, check_backend, default_backend, varlen_attention
from encoder.batching import token_budget_batches
from encoder.checkpoint import load_checkpoint_into, save_checkpoint
from encoder.config import ModernBertConfig

# On a CPU a packed batch runs in groups of whole sequences whose widest activation ([tokens, max(3H, 2I)])
# stays under this size: glibc serves buffers under its 32 MiB mmap threshold again and again from its heap,
# while larger ones are mapped fresh from the kernel and page-faulted in on every use. `evals.bench encoder`'s
# 64 texts of 17..511 tokens, base-shaped, 4 layers, 2 cores: 3,161 tokens/s as one group, 3,954 in groups of
# <= 1,820 tokens (groups of 1.5k..3k tokens measured alike; whole batches were 25% slower).
# Sequences never attend across each other, so the groups' outputs are the whole batch's.
CPU_GROUP_ACTIVATION_BYTES = 16 * 2**20

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16, or AMX): oneDNN's bfloat16 matmuls
    then beat float32's (the shipped model: 70 against 45 SciFact abstracts/s on a 2-core EPYC); without
    it they are emulated."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, private but stable since 2.3
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclass
class ModernBertOutput:
    last_hidden_state: torch.Tensor  # [B, L, H] (pad rows zero), or [T, H] for packed input


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # [B, L, V] / [T, V]; [M, V] for the M labelled tokens with sparse prediction
    loss: torch.Tensor | None = None


@dataclass
class PackedBatch:
    """Real tokens of a batch back to back, and how to put them back in a padded [B, L] grid."""

    input_ids: torch.Tensor  # [T]
    cu_seqlens: torch.Tensor  # [N + 1] int32
    max_seqlen: int
    position_ids: torch.Tensor  # [T], restarting at 0 in every sequence
    padded_indices: torch.Tensor | None = None  # [T] flat index into B * L; None for packed input
    padded_shape: tuple[int, int] | None = None

    @classmethod
    def from_padded(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> PackedBatch:
        if input_ids.dim() != 2:
            raise ValueError(f"padded input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        mask = attention_mask.bool()
        seqlens = mask.sum(dim=1, dtype=torch.int32)
        padded_indices = torch.nonzero(mask.flatten(), as_tuple=True)[0]
        batch = cls.from_packed(input_ids.flatten()[padded_indices], _cu_seqlens(seqlens))
        batch.padded_indices = padded_indices
        batch.padded_shape = tuple(input_ids.shape)
        return batch

    @classmethod
    def from_packed(cls, input_ids: torch.Tensor, cu_seqlens: torch.Tensor) -> PackedBatch:
        if input_ids.dim() != 1:
            raise ValueError(f"packed input_ids must be [tokens], got shape {tuple(input_ids.shape)}")
        cu_seqlens = cu_seqlens.to(device=input_ids.device, dtype=torch.int32)
        if cu_seqlens[0] != 0 or cu_seqlens[-1] != input_ids.numel():
            raise ValueError(
                f"cu_seqlens must start at 0 and end at the token count {input_ids.numel()}, "
                f"got {cu_seqlens.tolist()[:3]}...{cu_seqlens[-1].item()}"
            )
        seqlens = cu_seqlens[1:] - cu_seqlens[:-1]
        if (seqlens < 0).any():
            raise ValueError("cu_seqlens must be non-decreasing")
        starts = torch.repeat_interleave(cu_seqlens[:-1].long(), seqlens.long())
        position_ids = torch.arange(input_ids.numel(), device=input_ids.device) - starts
        max_seqlen = int(seqlens.max()) if seqlens.numel() else 0
        return cls(input_ids, cu_seqlens, max_seqlen, position_ids)

    def repad(self, x: torch.Tensor) -> torch.Tensor:
        """[T, ...] -> [B, L, ...] with zeros at padding; packed input stays [T, ...]."""
        if self.padded_indices is None:
            return x
        batch, length = self.padded_shape
        out = x.new_zeros(batch * length, *x.shape[1:])
        out = out.index_put((self.padded_indices,), x)
        return out.view(batch, length, *x.shape[1:])


def token_bucket(tokens: int) -> int:
    """`tokens` rounded up to one of 8 sizes per doubling (at most 12.5% more): 100 -> 104, 5,000 -> 5,120."""
    step = 1 << max(0, tokens.bit_length() - 4)
    return -(-tokens // step) * step


def _padded_to_bucket(input_ids: torch.Tensor, seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed tokens and their sequence lengths, with sequences of token 0 added up to token_bucket's size;
    none longer than the longest real one, so that the attention plan stays the real sequences' plan."""
    missing = token_bucket(input_ids.numel()) - input_ids.numel()
    if not missing:
        return input_ids, seqlens
    longest = max(int(seqlens.max()), 1)
    pads = [longest] * (missing // longest) + ([missing % longest] if missing % longest else [])
    return torch.cat([input_ids, input_ids.new_zeros(missing)]), torch.cat([seqlens, seqlens.new_tensor(pads)])


def _cu_seqlens(seqlens: torch.Tensor) -> torch.Tensor:
    return F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotation angles, [T, head_dim / 2], computed in float32 as transformers does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    angles = position_ids.float()[:, None] * inv_freq.to(position_ids.device)[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """qk: [T, ..., head_dim], rotated in place: each pair (i, i + head_dim / 2) turns by its angle, in float32.

    In place because these are the largest activations of a layer, and on a CPU every fresh buffer of that size
    costs more in page faults than the arithmetic done in it."""
    x = qk.float()  # qk itself when it is float32, else a float32 copy written back at the end
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # slices, not chunk(): autograd lets single views change in place
    shape = (cos.shape[0],) + (1,) * (x.dim() - 2) + (cos.shape[1],)
    cos, sin = cos.view(shape), sin.view(shape)
    x2_sin = x2 * sin
    x2.mul_(cos).addcmul_(x1, sin)  # x2 cos + x1 sin
    x1.mul_(cos).sub_(x2_sin)  # x1 cos - x2 sin
    if x is not qk:
        qk.copy_(x)


class ModernBertEmbeddings(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertAttention(nn.Module):
    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.is_global = config.is_global(layer_idx)
        self.attention_dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout) if config.attention_dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        qkv = self.Wqkv(x).view(-1, 3, self.num_heads, self.head_dim)
        apply_rotary_(qkv[:, :2], cos, sin)
        dropout_p = self.attention_dropout if self.training else 0.0
        out = varlen_attention(qkv, plan, self.is_global, dropout_p)
        return self.out_drop(self.Wo(out.reshape(x.shape)))


class ModernBertMLP(nn.Module):
    """GeGLU: Wi projects to 2 x intermediate, half of it gates the other half."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(input).mul_(gate)))  # in place: see apply_rotary_


class ModernBertEncoderLayer(nn.Module):
    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        # the embeddings end in a LayerNorm already, so layer 0 does not normalise again
        if layer_idx == 0:
            self.attn_norm = nn.Identity()
        else:
            self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.attn = ModernBertAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.mlp = ModernBertMLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        # the residual adds land in the sublayers' fresh outputs (see apply_rotary_)
        x = self.attn(self.attn_norm(x), cos, sin, plan).add_(x)
        return self.mlp(self.mlp_norm(x)).add_(x)


class ModernBertPreTrainedModel(nn.Module):
    """Loading, saving, device/dtype and attention-backend plumbing shared by the models."""

    config: ModernBertConfig

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.attn_backend: str | None = None  # None: chosen per call from device and dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def resolve_backend(self) -> str:
        backend = self.attn_backend or default_backend(self.device, self.dtype)
        check_backend(backend, self.device, self.dtype)
        return backend

    def init_weights(self) -> None:
        """Truncated-normal initialisation of a model trained from scratch, as transformers does it."""
        config = self.config
        cutoff = config.initializer_cutoff_factor or 3.0
        std_in = config.initializer_range
        std_out = config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers)

        def trunc_normal(weight: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)

        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            if isinstance(module, ModernBertEmbeddings):
                trunc_normal(module.tok_embeddings.weight, std_in)
            elif isinstance(module, ModernBertAttention):
                trunc_normal(module.Wqkv.weight, std_in)
                trunc_normal(module.Wo.weight, std_out)
            elif isinstance(module, ModernBertMLP):
                trunc_normal(module.Wi.weight, std_in)
                trunc_normal(module.Wo.weight, std_out)
            elif isinstance(module, ModernBertPredictionHead):
                trunc_normal(module.dense.weight, std_out)
        if isinstance(self, ModernBertForMaskedLM) and not config.tie_word_embeddings:
            trunc_normal(self.decoder.weight, std_out)

    def tied_weights(self) -> dict[str, str]:
        """Checkpoint keys that alias another parameter: not stored, restored by tying."""
        return {}

    def tie_weights(self) -> None:
        pass

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_backend: str | None = None,
        revision: str | None = None,
    ):
        """Loads a Hugging Face ModernBERT checkpoint: a local folder or a hub id.

        dtype defaults to float32 on CPU and bfloat16 on CUDA.
        """
        device = torch.device(device or "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return load_checkpoint_into(cls, name_or_path, device=device, dtype=dtype,
                                    attn_backend=attn_backend, revision=revision)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Writes config.json + model.safetensors, loadable by transformers' from_pretrained."""
        save_checkpoint(self, save_directory)


class ModernBertModel(ModernBertPreTrainedModel):
    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
    ) -> ModernBertOutput:
        """input_ids [B, L] (+ attention_mask [B, L]) -> [B, L, H]; input_ids [T] + cu_seqlens -> [T, H]."""
        batch = self.pack(input_ids, attention_mask, cu_seqlens)
        return ModernBertOutput(batch.repad(self.forward_packed(batch)))

    def pack(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None
    ) -> PackedBatch:
        if cu_seqlens is not None:
            if attention_mask is not None:
                raise ValueError("give either attention_mask (padded input) or cu_seqlens (packed input), not both")
            return PackedBatch.from_packed(input_ids, cu_seqlens)
        return PackedBatch.from_padded(input_ids, attention_mask)

    def forward_packed(self, batch: PackedBatch) -> torch.Tensor:
        """Runs the encoder on packed tokens: [T] -> [T, H]."""
        config = self.config
        if batch.max_seqlen > config.max_position_embeddings:
            raise ValueError(
                f"a sequence has {batch.max_seqlen} tokens, more than max_position_embeddings "
                f"({config.max_position_embeddings})"
            )
        groups = self.packed_groups(batch)
        if len(groups) == 1 and groups[0][1] is batch:
            return self.forward_group(batch)
        out = None
        for rows, group in groups:
            hidden = self.forward_group(group)[: rows.numel()]  # a group's real tokens come first
            if out is None:
                out = hidden.new_empty(batch.input_ids.numel(), config.hidden_size)
            out.index_copy_(0, rows, hidden)
        return out

    def packed_groups(self, batch: PackedBatch) -> list[tuple[torch.Tensor, PackedBatch]]:
        """The groups forward_packed runs the batch in (cpu_sequence_groups): each group's rows in the
        batch's packed tokens, and the group as a packed batch of its own, its real tokens first. In bfloat16
        or float16 on a CPU a group is padded up to a `token_bucket` size by sequences of token 0 (their
        outputs are dropped): oneDNN keeps a reordered copy of the weights for each input shape it meets, in
        two caches of 1,024 shapes, and groups of every size took `retriever index` over 200k short
        documents to 2,077 MiB in bfloat16 (float32: 672 MiB; bucketed: 740 MiB, and 9% faster)."""
        groups = self.cpu_sequence_groups(batch)
        bucketed = batch.input_ids.device.type == "cpu" and self.dtype in (torch.bfloat16, torch.float16)
        if len(groups) == 1 and not bucketed:
            return [(torch.arange(batch.input_ids.numel()), batch)]
        seqlens = batch.cu_seqlens.diff().long()
        starts = batch.cu_seqlens[:-1].long()
        result = []
        for group in groups:
            group = torch.tensor(group)
            lengths = seqlens[group]
            rows = torch.arange(int(lengths.sum())) + torch.repeat_interleave(
                starts[group] - _cu_seqlens(lengths)[:-1], lengths)
            input_ids = batch.input_ids[rows]
            if bucketed:
                input_ids, lengths = _padded_to_bucket(input_ids, lengths)
            result.append((rows, PackedBatch.from_packed(input_ids, _cu_seqlens(lengths))))
        return result

    def cpu_sequence_groups(self, batch: PackedBatch) -> list[list[int]]:
        """The sequences of a packed batch in the groups it runs in: one group off the CPU; on it (see
        CPU_GROUP_ACTIVATION_BYTES) longest first, as many to a group as keep its widest activation in budget."""
        config = self.config
        if batch.input_ids.device.type != "cpu":
            return [list(range(len(batch.cu_seqlens) - 1))]
        widest_row = max(3 * config.hidden_size, 2 * config.intermediate_size) * self.dtype.itemsize
        budget = max(1, CPU_GROUP_ACTIVATION_BYTES // widest_row)
        if batch.input_ids.numel() <= budget:
            return [list(range(len(batch.cu_seqlens) - 1))]
        return token_budget_batches(batch.cu_seqlens.diff().numpy(), budget)

    def forward_group(self, batch: PackedBatch) -> torch.Tensor:
        """The encoder on packed tokens run together: [T] -> [T, H]."""
        config = self.config
        plan = AttentionPlan.build(batch.cu_seqlens, batch.max_seqlen, config.local_window, self.resolve_backend())
        x = self.embeddings(batch.input_ids)
        rope = {
            theta: rotary_cos_sin(batch.position_ids, config.head_dim, theta, x.dtype)
            for theta in {config.global_rope_theta, config.local_rope_theta}
        }
        for i, layer in enumerate(self.layers):
            cos, sin = rope[config.rope_theta(i)]
            x = layer(x, cos, sin, plan)
        return self.final_norm(x)


class ModernBertPredictionHead(nn.Module):
    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = activation(config.classifier_activation)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class ModernBertForMaskedLM(ModernBertPreTrainedModel):
    def __init__(self, config: ModernBertConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.tie_weights()
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    def tied_weights(self) -> dict[str, str]:
        if self.config.tie_word_embeddings:
            return {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
        return {}

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        """Logits over the vocabulary, padded like the input; cross-entropy loss when labels are given.

        labels have the input's layout ([B, L] or [T]) with -100 (`sparse_pred_ignore_index`) where
        no prediction is scored. With `config.sparse_prediction` only labelled tokens get logits.
        """
        batch = self.model.pack(input_ids, attention_mask, cu_seqlens)
        hidden = self.model.forward_packed(batch)
        packed_labels = None
        if labels is not None:
            packed_labels = labels.flatten()[batch.padded_indices] if batch.padded_indices is not None else labels
        if self.config.sparse_prediction and packed_labels is not None:
            scored = packed_labels != self.config.sparse_pred_ignore_index
            hidden, packed_labels = hidden[scored], packed_labels[scored]
        logits = self.decoder(self.head(hidden))
        loss = None
        if packed_labels is not None:
            loss = F.cross_entropy(
                logits.float(), packed_labels, ignore_index=self.config.sparse_pred_ignore_index
            )
        if not (self.config.sparse_prediction and labels is not None):
            logits = batch.repad(logits)
        return MaskedLMOutput(logits=logits, loss=loss)
