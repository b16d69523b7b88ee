"""A sentence-transformers model folder as our encoder reads it, without importing
sentence-transformers (whose import alone takes seconds: `retriever search` cannot afford it).

`read_layout` resolves the folder (local or hub) and returns an `EmbedderLayout`: the modules
of `modules.json` in order, the Transformer module's folder and settings, the pooling, the
prompts (with those of known models whose config lacks them) and the similarity. Both loaders
build on it: `encoder.embedder.load_embedder` (a SentenceTransformer) and the retriever's
`PassageEncoder` (no sentence-transformers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from encoder.hub import CheckpointError, resolve_folder

# The stock Transformer module's oldest name: every sentence-transformers release resolves it.
STOCK_TRANSFORMER = "sentence_transformers.models.Transformer"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
# Prompts of known models whose config_sentence_transformers.json does not carry them.
KNOWN_PROMPTS = {
    "nomic-ai/modernbert-embed-base": {"query": "search_query: ", "document": "search_document: "},
    "lightonai/modernbert-embed-large": {"query": "search_query: ", "document": "search_document: "},
}
# What the hub download of an embedder needs: configs, safetensors weights, tokenizer files.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*/*.json", "*/*.safetensors"]
_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len")


@dataclass(frozen=True)
class ModuleEntry:
    """One module of modules.json: its class as named there, its kind (the class's own name) and folder."""

    class_ref: str
    kind: str
    path: str  # relative to the model folder ("" for the Transformer module saved in the root)

    @property
    def is_transformer(self) -> bool:
        return self.kind == "Transformer" and self.class_ref.startswith("sentence_transformers.")


@dataclass(frozen=True)
class EmbedderLayout:
    directory: Path
    modules: list[ModuleEntry]  # empty: a bare ModernBERT checkpoint (then mean pooling)
    transformer_dir: Path
    max_seq_length: int | None  # the Transformer module's cap, if it sets one
    do_lower_case: bool
    pooling: tuple[str, ...]  # the Pooling module's modes, e.g. ("mean",) or ("cls",)
    include_prompt: bool  # whether mean pooling counts the prompt's tokens
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity_fn_name: str | None


def read_json(path: Path) -> dict:
    """A JSON config file, or {} where the file is absent (sentence-transformers' optional configs)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def transformer_settings(transformer_dir: Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) of a Transformer module's sentence_bert_config.json."""
    config = read_json(transformer_dir / TRANSFORMER_CONFIG)
    return config.get("max_seq_length"), bool(config.get("do_lower_case", False))


def pooling_modes(config_path: Path) -> tuple[tuple[str, ...], bool]:
    """(modes, include_prompt) from either generation of the Pooling config."""
    config = read_json(config_path)
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [m for m in _POOLING_MODES
                 if config.get(f"pooling_mode_{m}_tokens") or config.get(f"pooling_mode_{m}_token")]
    modes = [modes] if isinstance(modes, str) else list(modes)
    return tuple(modes), bool(config.get("include_prompt", True))


def read_layout(name_or_path: str | Path, revision: str | None = None) -> EmbedderLayout:
    """The layout of a model folder (or hub id): sentence-transformers' or a bare ModernBERT checkpoint."""
    directory = resolve_folder(name_or_path, _HUB_PATTERNS, revision=revision)
    modules_path = directory / "modules.json"
    if modules_path.is_file():
        try:
            modules = [ModuleEntry(entry["type"], entry["type"].rsplit(".", 1)[-1], entry.get("path", ""))
                       for entry in json.loads(modules_path.read_text(encoding="utf-8"))]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{modules_path}: not a modules list ({type(e).__name__}: {e})") from None
        if not modules or not modules[0].is_transformer:
            raise CheckpointError(f"{modules_path}: the first module is not a Transformer module")
        transformer_dir = directory / modules[0].path
        pooling_entry = next((m for m in modules if m.kind == "Pooling"), None)
        pooling, include_prompt = (pooling_modes(directory / pooling_entry.path / "config.json")
                                   if pooling_entry else ((), True))
    elif (directory / "config.json").is_file():
        modules, transformer_dir, pooling, include_prompt = [], directory, ("mean",), True
    else:
        raise CheckpointError(f"{directory}: neither modules.json nor config.json found")

    max_seq_length, do_lower_case = transformer_settings(transformer_dir)
    st_config = read_json(directory / "config_sentence_transformers.json")
    prompts = {k: v for k, v in (st_config.get("prompts") or {}).items() if v}
    if not prompts:
        prompts = dict(KNOWN_PROMPTS.get(str(name_or_path), {}))
    return EmbedderLayout(
        directory=directory, modules=modules, transformer_dir=transformer_dir, max_seq_length=max_seq_length,
        do_lower_case=do_lower_case, pooling=pooling, include_prompt=include_prompt, prompts=prompts,
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity_fn_name=st_config.get("similarity_fn_name"),
    )
