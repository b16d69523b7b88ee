"""ModernBERT configuration, read from and written to Hugging Face `config.json` files.

Two generations of keys exist on the hub: the original release wrote `global_rope_theta`,
`local_rope_theta` and `global_attn_every_n_layers`; transformers >= 5 writes `layer_types` and
`rope_parameters`. We read both and write both, so that every transformers version that knows
ModernBERT loads what we save.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoder.hub import resolve_folder

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"

# Keys that describe the same thing as a dataclass field in another spelling: they are consumed
# when reading and regenerated when writing, never stored among the extras.
_DERIVED_KEYS = {
    "global_rope_theta",
    "local_rope_theta",
    "global_attn_every_n_layers",
    "rope_parameters",
    "rope_scaling",
    "sliding_window",
}


@dataclass
class ModernBertConfig:
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int | None = 50283
    eos_token_id: int | None = 50282
    bos_token_id: int | None = 50281
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    sparse_prediction: bool = False
    sparse_pred_ignore_index: int = -100
    tie_word_embeddings: bool = True
    # Keys of config.json we do not interpret (architectures, torch_dtype, id2label, ...), kept so
    # that a load/save round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.layer_types is None:
            self.layer_types = layer_types_every_n(self.num_hidden_layers, 3)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                f"{self.num_hidden_layers}"
            )
        unknown = set(self.layer_types) - {FULL_ATTENTION, SLIDING_ATTENTION}
        if unknown:
            raise ValueError(f"unknown layer types {sorted(unknown)} in layer_types")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def local_window(self) -> int:
        """Tokens each side a sliding-attention query sees: |i - j| <= local_window."""
        return self.local_attention // 2

    def is_global(self, layer_idx: int) -> bool:
        return self.layer_types[layer_idx] == FULL_ATTENTION

    def rope_theta(self, layer_idx: int) -> float:
        return self.global_rope_theta if self.is_global(layer_idx) else self.local_rope_theta

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], source: str = "config") -> ModernBertConfig:
        d = dict(config_dict)
        model_type = d.get("model_type", "modernbert")
        if model_type != "modernbert":
            raise ValueError(f"{source}: model_type is {model_type!r}, expected 'modernbert'")

        kwargs: dict[str, Any] = {}
        rope = d.get("rope_parameters") or {}
        rope_scaling = d.get("rope_scaling")
        for layer_type, params in rope.items():
            if params and params.get("rope_type", "default") != "default":
                raise ValueError(
                    f"{source}: rope_parameters[{layer_type!r}] has rope_type "
                    f"{params['rope_type']!r}; only 'default' RoPE is supported"
                )
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise ValueError(f"{source}: rope_scaling {rope_scaling} is not supported")
        global_theta = (rope.get(FULL_ATTENTION) or {}).get("rope_theta", d.get("global_rope_theta"))
        local_theta = (rope.get(SLIDING_ATTENTION) or {}).get("rope_theta", d.get("local_rope_theta"))
        if global_theta is not None:
            kwargs["global_rope_theta"] = float(global_theta)
        if local_theta is not None:
            kwargs["local_rope_theta"] = float(local_theta)

        num_layers = d.get("num_hidden_layers", cls.num_hidden_layers)
        if d.get("layer_types") is None:
            every_n = d.get("global_attn_every_n_layers", 3)
            kwargs["layer_types"] = layer_types_every_n(num_layers, every_n)
        if "local_attention" not in d and "sliding_window" in d:
            kwargs["local_attention"] = 2 * int(d["sliding_window"])

        field_names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {}
        for key, value in d.items():
            if key in field_names:
                kwargs.setdefault(key, value)
            elif key not in _DERIVED_KEYS and key != "model_type":
                extra[key] = value
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        return cls(**kwargs, extra=extra)

    @classmethod
    def for_tokenizer(cls, tokenizer, **fields: Any) -> ModernBertConfig:
        """Fresh-model config matching a tokenizer: its special-token ids, and its vocabulary
        rounded up to a multiple of 64 (as ModernBERT's, for matmul efficiency)."""
        return cls(**{
            "vocab_size": (len(tokenizer) + 63) // 64 * 64,
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            **fields,
        })

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModernBertConfig:
        path = Path(path)
        try:
            config_dict = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(config_dict, source=str(path))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> ModernBertConfig:
        return cls.from_json_file(resolve_folder(name_or_path, ["config.json"], kind="checkpoint") / "config.json")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["layer_types"] = list(self.layer_types)
        d["model_type"] = "modernbert"
        d["rope_parameters"] = {
            FULL_ATTENTION: {"rope_type": "default", "rope_theta": self.global_rope_theta},
            SLIDING_ATTENTION: {"rope_type": "default", "rope_theta": self.local_rope_theta},
        }
        every_n = _every_n_of(self.layer_types)
        if every_n is not None:
            d["global_attn_every_n_layers"] = every_n
        # global_rope_theta / local_rope_theta stay as top-level keys too: transformers < 5 reads them.
        return {**self.extra, **d}

    def save_pretrained(self, save_directory: str | Path, architectures: list[str] | None = None) -> None:
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        if architectures is not None:
            d["architectures"] = architectures
        (save_directory / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def layer_types_every_n(num_layers: int, every_n: int) -> list[str]:
    """ModernBERT's pattern: layer i is global when i % every_n == 0, sliding otherwise."""
    return [SLIDING_ATTENTION if i % every_n else FULL_ATTENTION for i in range(num_layers)]


def _every_n_of(layer_types: list[str]) -> int | None:
    for n in range(1, len(layer_types) + 1):
        if layer_types_every_n(len(layer_types), n) == layer_types:
            return n
    return None
