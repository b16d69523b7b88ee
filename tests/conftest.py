from __future__ import annotations

import pytest
import torch
import transformers

from encoder.attention import flash_available

BACKENDS = ["sdpa"] + (["flash"] if flash_available() else [])


def tiny_hf_config(**overrides) -> transformers.ModernBertConfig:
    """5 layers (global at 0 and 3), a 4-token window each side: far shorter than the test sequences."""
    kwargs = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=5,
        num_attention_heads=4,
        local_attention=8,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        attn_implementation="sdpa",
    )
    kwargs.update(overrides)
    return transformers.ModernBertConfig(**kwargs)


def ragged_batch(lengths: list[int], vocab_size: int = 96, seed: int = 0):
    """Right-padded input_ids and attention_mask for sequences of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for i, n in enumerate(lengths):
        attention_mask[i, :n] = 1
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask


@pytest.fixture(scope="session")
def hf_mlm_dir(tmp_path_factory):
    """A random-init transformers ModernBertForMaskedLM saved with save_pretrained."""
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(tiny_hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_mlm")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_base_dir(tmp_path_factory):
    """A random-init transformers ModernBertModel (no head) saved with save_pretrained."""
    torch.manual_seed(1)
    model = transformers.ModernBertModel(tiny_hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_base")
    model.save_pretrained(path)
    return path
