from __future__ import annotations

import json

import transformers

from encoder import ModernBertConfig
from encoder.config import FULL_ATTENTION, SLIDING_ATTENTION

# the keys of answerdotai/ModernBERT-base's config.json as first published
OLD_STYLE = {
    "architectures": ["ModernBertForMaskedLM"],
    "model_type": "modernbert",
    "hidden_size": 768,
    "num_hidden_layers": 22,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 10000.0,
    "local_attention": 128,
    "reference_compile": True,
    "torch_dtype": "float32",
}


def test_reads_original_keys():
    config = ModernBertConfig.from_dict(OLD_STYLE)
    assert config.layer_types[:4] == [FULL_ATTENTION, SLIDING_ATTENTION, SLIDING_ATTENTION, FULL_ATTENTION]
    assert config.layer_types.count(FULL_ATTENTION) == 8
    assert (config.global_rope_theta, config.local_rope_theta) == (160000.0, 10000.0)
    assert config.local_window == 64
    assert config.extra["reference_compile"] is True


def test_reads_transformers_5_keys():
    config = ModernBertConfig.from_dict({
        "num_hidden_layers": 4,
        "layer_types": [SLIDING_ATTENTION, FULL_ATTENTION, SLIDING_ATTENTION, FULL_ATTENTION],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 80000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
        },
    })
    assert config.is_global(1) and not config.is_global(0)
    assert (config.global_rope_theta, config.local_rope_theta) == (80000.0, 500.0)


def test_writes_both_generations_and_round_trips(tmp_path):
    config = ModernBertConfig.from_dict({**OLD_STYLE, "global_attn_every_n_layers": 2, "num_hidden_layers": 6})
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["global_attn_every_n_layers"] == 2
    assert written["global_rope_theta"] == written["rope_parameters"]["full_attention"]["rope_theta"] == 160000.0
    assert written["layer_types"] == config.layer_types
    assert written["reference_compile"] is True
    assert ModernBertConfig.from_json_file(tmp_path / "config.json") == config

    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert theirs.layer_types == config.layer_types
    assert theirs.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
    assert theirs.local_attention == 128


def test_rejects_unsupported_rope_and_bad_layer_types():
    import pytest

    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        ModernBertConfig.from_dict({"rope_parameters": {"full_attention": {"rope_type": "yarn"}}})
    with pytest.raises(ValueError, match="layer_types has 2 entries"):
        ModernBertConfig(num_hidden_layers=3, layer_types=[FULL_ATTENTION, FULL_ATTENTION])
    with pytest.raises(ValueError, match="model_type is 'bert'"):
        ModernBertConfig.from_dict({"model_type": "bert"})
