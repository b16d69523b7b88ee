"""Our encoder against transformers' ModernBERT on the same random-init checkpoints."""

from __future__ import annotations

import pytest
import torch
import transformers

import encoder.model
from encoder import ModernBertForMaskedLM, ModernBertModel
from tests.conftest import BACKENDS, ragged_batch, tiny_hf_config

# longest sequence 37 tokens, window 4 each side: every sliding layer truncates attention
LENGTHS = [37, 5, 20, 1, 12]


def max_diff_on_tokens(a: torch.Tensor, b: torch.Tensor, attention_mask: torch.Tensor) -> float:
    mask = attention_mask.bool()
    return (a[mask].float() - b[mask].float()).abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_states_match_transformers(hf_base_dir, backend):
    reference = transformers.ModernBertModel.from_pretrained(hf_base_dir, attn_implementation="sdpa").eval()
    ours = ModernBertModel.from_pretrained(hf_base_dir, attn_backend=backend)
    input_ids, attention_mask = ragged_batch(LENGTHS)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        got = ours(input_ids, attention_mask).last_hidden_state
    assert got.shape == expected.shape
    assert max_diff_on_tokens(got, expected, attention_mask) <= 1e-4
    assert got[attention_mask == 0].abs().max() == 0, "pad rows must be zero"


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlm_logits_match_transformers(hf_mlm_dir, backend):
    reference = transformers.ModernBertForMaskedLM.from_pretrained(hf_mlm_dir, attn_implementation="sdpa").eval()
    ours = ModernBertForMaskedLM.from_pretrained(hf_mlm_dir, attn_backend=backend)
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=1)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).logits
        got = ours(input_ids, attention_mask).logits
    assert got.shape == expected.shape
    assert max_diff_on_tokens(got, expected, attention_mask) <= 1e-4


def test_base_model_reads_masked_lm_checkpoint(hf_mlm_dir):
    """Like transformers: strip the `model.` prefix, leave the head."""
    reference = transformers.ModernBertModel.from_pretrained(hf_mlm_dir, attn_implementation="sdpa").eval()
    ours = ModernBertModel.from_pretrained(hf_mlm_dir)
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=2)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        got = ours(input_ids, attention_mask).last_hidden_state
    assert max_diff_on_tokens(got, expected, attention_mask) <= 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        dict(local_attention=16, global_attn_every_n_layers=2, num_hidden_layers=4),
        dict(hidden_activation="gelu_pytorch_tanh", norm_bias=True, attention_bias=True, mlp_bias=True),
        dict(layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
             num_hidden_layers=4, global_rope_theta=20_000.0, local_rope_theta=500.0),
    ],
    ids=["every-2nd-global", "biases-tanh-gelu", "explicit-layer-types"],
)
def test_config_variants_match_transformers(tmp_path, overrides):
    torch.manual_seed(3)
    reference = transformers.ModernBertModel(tiny_hf_config(**overrides)).eval()
    reference.save_pretrained(tmp_path)
    ours = ModernBertModel.from_pretrained(tmp_path)
    input_ids, attention_mask = ragged_batch([50, 3, 33], seed=3)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        got = ours(input_ids, attention_mask).last_hidden_state
    assert max_diff_on_tokens(got, expected, attention_mask) <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_input_equals_one_by_one(hf_mlm_dir, backend):
    model = ModernBertModel.from_pretrained(hf_mlm_dir, attn_backend=backend)
    generator = torch.Generator().manual_seed(4)
    sequences = [torch.randint(3, 96, (n,), generator=generator) for n in [29, 1, 8, 9, 64, 4]]
    cu_seqlens = torch.tensor([0] + [len(s) for s in sequences]).cumsum(0)
    with torch.no_grad():
        packed = model(torch.cat(sequences), cu_seqlens=cu_seqlens).last_hidden_state
        alone = torch.cat([model(s[None]).last_hidden_state[0] for s in sequences])
    assert packed.shape == (int(cu_seqlens[-1]), 64)
    assert (packed - alone).abs().max() <= 1e-5


def test_all_padding_row_gives_zeros(hf_base_dir):
    model = ModernBertModel.from_pretrained(hf_base_dir)
    input_ids, attention_mask = ragged_batch([9, 1, 30], seed=9)
    attention_mask[1] = 0
    with torch.no_grad():
        out = model(input_ids, attention_mask).last_hidden_state
        alone = model(input_ids[2:, :30]).last_hidden_state
    assert out[1].abs().max() == 0
    assert (out[2] - alone[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "cpu-groups"])
def test_masked_lm_loss_and_gradients_match_transformers(hf_mlm_dir, grouped, monkeypatch):
    """Training relies on backward through our attention: gradients must match too, also when a CPU batch
    runs in several groups of sequences (forced here by a small activation budget)."""
    if grouped:
        monkeypatch.setattr(encoder.model, "CPU_GROUP_ACTIVATION_BYTES", 25 * 3 * 64 * 4)  # 25 tokens at H = 64
    reference = transformers.ModernBertForMaskedLM.from_pretrained(hf_mlm_dir, attn_implementation="sdpa")
    ours = ModernBertForMaskedLM.from_pretrained(hf_mlm_dir)
    reference.train()
    ours.train()  # dropout is 0 in this config: train mode must not change the math
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=5)
    labels = torch.full_like(input_ids, -100)
    labels[:, ::3] = input_ids[:, ::3]
    labels[attention_mask == 0] = -100

    expected = reference(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    expected.backward()
    batch = ours.model.pack(input_ids, attention_mask, None)
    assert len(ours.model.cpu_sequence_groups(batch)) == (3 if grouped else 1)  # [37], [20], [12, 5, 1]
    got = ours(input_ids, attention_mask, labels=labels).loss
    got.backward()
    assert abs(got.item() - expected.item()) <= 1e-5
    ref_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert (param.grad - ref_params[name].grad).abs().max() <= 1e-5, name


def test_sparse_prediction_scores_only_labelled_tokens(hf_mlm_dir):
    model = ModernBertForMaskedLM.from_pretrained(hf_mlm_dir)
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=6)
    labels = torch.full_like(input_ids, -100)
    labels[0, 3] = 7
    labels[2, 10] = 9
    with torch.no_grad():
        dense = model(input_ids, attention_mask, labels=labels)
        model.config.sparse_prediction = True
        sparse = model(input_ids, attention_mask, labels=labels)
    assert sparse.logits.shape == (2, 96)
    assert torch.allclose(sparse.logits, dense.logits[labels != -100], atol=1e-5)
    assert abs(sparse.loss.item() - dense.loss.item()) <= 1e-5


def test_bfloat16_on_cpu_stays_close_to_float32(hf_mlm_dir):
    fp32 = ModernBertModel.from_pretrained(hf_mlm_dir)
    bf16 = ModernBertModel.from_pretrained(hf_mlm_dir, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=7)
    with torch.no_grad():
        a = fp32(input_ids, attention_mask).last_hidden_state
        b = bf16(input_ids, attention_mask).last_hidden_state
    assert b.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(a[attention_mask.bool()], b[attention_mask.bool()].float(), dim=-1)
    assert cosine.min() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bfloat16_error_no_worse_than_transformers(hf_mlm_dir, backend):
    """bf16 cannot match to 1e-4: our bf16 error against fp32 must be about transformers' own."""
    reference32 = transformers.ModernBertForMaskedLM.from_pretrained(hf_mlm_dir, attn_implementation="sdpa").eval()
    reference16 = transformers.ModernBertForMaskedLM.from_pretrained(
        hf_mlm_dir, attn_implementation="sdpa", dtype=torch.bfloat16
    ).cuda().eval()
    ours = ModernBertForMaskedLM.from_pretrained(hf_mlm_dir, device="cuda", attn_backend=backend)
    assert ours.dtype == torch.bfloat16
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=8)
    with torch.no_grad():
        truth = reference32(input_ids=input_ids, attention_mask=attention_mask).logits
        ref_err = max_diff_on_tokens(
            reference16(input_ids=input_ids.cuda(), attention_mask=attention_mask.cuda()).logits.cpu(),
            truth, attention_mask,
        )
        our_err = max_diff_on_tokens(ours(input_ids.cuda(), attention_mask.cuda()).logits.cpu(), truth, attention_mask)
    print(f"bf16 max abs error vs fp32: ours {our_err:.4g}, transformers {ref_err:.4g}")
    assert our_err <= 1.5 * ref_err + 1e-2
