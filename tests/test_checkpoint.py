"""Loading and saving Hugging Face checkpoints, and refusing bad ones clearly."""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from encoder import CheckpointError, ModernBertConfig, ModernBertForMaskedLM, ModernBertModel
from tests.conftest import ragged_batch, tiny_hf_config

LENGTHS = [30, 7, 19]


def hidden(model, seed=0):
    """Outputs (logits, or hidden states for a base model) at the real tokens of a ragged batch."""
    input_ids, attention_mask = ragged_batch(LENGTHS, seed=seed)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    out = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return out[attention_mask.bool()]


def test_round_trip_ours_to_transformers_and_back(tmp_path):
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(ModernBertConfig.from_dict(tiny_hf_config().to_dict())).eval()
    ours.save_pretrained(tmp_path / "ours")
    assert "decoder.weight" not in load_file(tmp_path / "ours" / "model.safetensors"), "tied weight stored once"

    theirs = transformers.ModernBertForMaskedLM.from_pretrained(tmp_path / "ours", attn_implementation="sdpa").eval()
    assert (hidden(theirs) - hidden(ours)).abs().max() <= 1e-4
    theirs.save_pretrained(tmp_path / "theirs")

    again = ModernBertForMaskedLM.from_pretrained(tmp_path / "theirs")
    assert torch.equal(hidden(again), hidden(ours))
    assert again.decoder.weight is again.model.embeddings.tok_embeddings.weight


def test_fresh_model_has_transformers_initialisation_scale():
    config = ModernBertConfig.from_dict(tiny_hf_config().to_dict())
    model = ModernBertModel(config)
    std = model.layers[1].attn.Wqkv.weight.std().item()
    assert 0.012 < std < 0.02  # truncated normal, std 0.02, cut at 2 sigma
    assert model.layers[1].attn.Wqkv.weight.abs().max() <= 2 * 0.02 + 1e-6


def test_reads_sharded_safetensors(tmp_path, hf_mlm_dir):
    model = transformers.ModernBertForMaskedLM.from_pretrained(hf_mlm_dir)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    ours = ModernBertForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(hidden(ours), hidden(ModernBertForMaskedLM.from_pretrained(hf_mlm_dir)))


def copy_checkpoint(src, dst, edit=None):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(src / "model.safetensors")
    if edit:
        edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_missing_key_is_named(tmp_path, hf_mlm_dir):
    path = copy_checkpoint(hf_mlm_dir, tmp_path / "ckpt", lambda t: t.pop("model.layers.2.mlp.Wi.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys: model\.layers\.2\.mlp\.Wi\.weight"):
        ModernBertForMaskedLM.from_pretrained(path)


def test_unexpected_key_is_named(tmp_path, hf_base_dir):
    def add(tensors):
        tensors["layers.0.attn.extra"] = torch.zeros(3)

    path = copy_checkpoint(hf_base_dir, tmp_path / "ckpt", add)
    with pytest.raises(CheckpointError, match=r"unexpected keys: layers\.0\.attn\.extra"):
        ModernBertModel.from_pretrained(path)


def test_wrong_shape_is_named(tmp_path, hf_base_dir):
    def shrink(tensors):
        tensors["layers.1.attn.Wo.weight"] = tensors["layers.1.attn.Wo.weight"][:, :32].contiguous()

    path = copy_checkpoint(hf_base_dir, tmp_path / "ckpt", shrink)
    with pytest.raises(CheckpointError, match=r"layers\.1\.attn\.Wo\.weight \(64, 32\) != expected \(64, 64\)"):
        ModernBertModel.from_pretrained(path)


def test_masked_lm_from_headless_checkpoint_names_the_head(hf_base_dir):
    with pytest.raises(CheckpointError, match=r"missing keys: .*head\.dense\.weight"):
        ModernBertForMaskedLM.from_pretrained(hf_base_dir)


def test_missing_files(tmp_path, hf_base_dir):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        ModernBertModel.from_pretrained(tmp_path / "does-not-exist")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text((hf_base_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights found"):
        ModernBertModel.from_pretrained(tmp_path / "no_weights")
    (tmp_path / "no_config").mkdir()
    os.link(hf_base_dir / "model.safetensors", tmp_path / "no_config" / "model.safetensors")
    with pytest.raises(CheckpointError, match="no config.json"):
        ModernBertModel.from_pretrained(tmp_path / "no_config")


def test_offline_hub_id_fails_with_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="answerdotai/ModernBERT-base: not a local folder"):
        ModernBertModel.from_pretrained("answerdotai/ModernBERT-base")


class NotATensor:
    """Stands for whatever code an untrusted pickle might carry."""


def test_pickle_checkpoints_are_read_weights_only(tmp_path, hf_base_dir):
    tensors = load_file(hf_base_dir / "model.safetensors")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text((hf_base_dir / "config.json").read_text())
    torch.save(tensors, plain / "pytorch_model.bin")
    assert torch.equal(hidden(ModernBertModel.from_pretrained(plain)), hidden(ModernBertModel.from_pretrained(hf_base_dir)))

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "config.json").write_text((hf_base_dir / "config.json").read_text())
    torch.save({**tensors, "payload": NotATensor()}, hostile / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        ModernBertModel.from_pretrained(hostile)


def test_invalid_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        ModernBertConfig.from_json_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "modernbert", "hidden_size": 65}))
    with pytest.raises(ValueError, match="not a multiple"):
        ModernBertConfig.from_json_file(tmp_path / "config.json")
