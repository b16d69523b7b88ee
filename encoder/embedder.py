"""The encoder as a Sentence-Transformers model.

`load_embedder` opens a model in the standard sentence-transformers layout (`modules.json`:
a `Transformer` module with a ModernBERT checkpoint and tokenizer, then `Pooling`, optionally
`Normalize`, ...; `config_sentence_transformers.json` with prompts) or a bare ModernBERT
checkpoint (then mean pooling), as `encoder.layout.read_layout` reads it. The `Transformer` module
is served by `ModernBertTransformer`, which runs our unpadded encoder; every other module stays
stock. What `ModernBertSentenceTransformer.save` writes
names the stock `Transformer` in `modules.json`, so stock sentence-transformers (transformers
backend, no remote code) loads it.

`ModernBertSentenceTransformer.encode` (and `encode_query` / `encode_document`) tokenizes all
texts once and runs them packed in token-budget batches (`encoder.batching`), returning
embeddings in input order.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule
from sentence_transformers.sentence_transformer.modules import Pooling
from sentence_transformers.util import quantize_embeddings
from transformers import AutoTokenizer

from encoder.batching import DEFAULT_BATCH_TOKENS, encode_packed
from encoder.hub import CheckpointError
from encoder.layout import STOCK_TRANSFORMER, TRANSFORMER_CONFIG, read_layout, transformer_settings
from encoder.model import ModernBertModel
from encoder.progress import TokenProgress


class ModernBertTransformer(InputModule):
    """First module of a SentenceTransformer: the tokenizer and our unpadded ModernBertModel.

    Reads and writes the stock `Transformer` module's files (config.json, model.safetensors,
    tokenizer files, sentence_bert_config.json).
    """

    config_file_name = TRANSFORMER_CONFIG
    config_keys = ["max_seq_length", "do_lower_case"]
    save_in_root = True

    def __init__(self, model: ModernBertModel, tokenizer, max_seq_length: int | None = None,
                 do_lower_case: bool = False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length or model.config.max_position_embeddings
        self.do_lower_case = do_lower_case
        self._prompt_lengths: dict[str, int] = {}

    @property
    def auto_model(self) -> ModernBertModel:
        return self.model

    def get_embedding_dimension(self) -> int:
        return self.model.config.hidden_size

    # sentence-transformers < 6 spells it this way
    get_word_embedding_dimension = get_embedding_dimension

    def tokenize_texts(self, texts: list[str], prompt: str | None = None) -> list[list[int]]:
        """Token ids of each text (prompt prepended), truncated to max_seq_length, unpadded."""
        if not all(isinstance(t, str) for t in texts):
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            raise TypeError(f"input {bad} is a {type(texts[bad]).__name__}, expected str")
        if prompt:
            texts = [prompt + t for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        return self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)["input_ids"]

    def prompt_length(self, prompt: str) -> int:
        """Tokens the prompt takes at the start of an input, its trailing special token excluded."""
        if prompt not in self._prompt_lengths:
            ids = self.tokenize_texts([prompt])[0]
            self._prompt_lengths[prompt] = len(ids) - (ids[-1] in self.tokenizer.all_special_ids)
        return self._prompt_lengths[prompt]

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        ids = self.tokenize_texts(list(inputs), prompt)
        features = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        if prompt:
            features["prompt_length"] = self.prompt_length(prompt)
        return dict(features)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Padded input_ids/attention_mask in, token_embeddings [B, L, H] (pad rows zero) out."""
        out = self.model(features["input_ids"], features["attention_mask"])
        features["token_embeddings"] = out.last_hidden_state
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(output_path)
        self.save_tokenizer(output_path)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", *, dtype: torch.dtype | None = None,
             device: str | torch.device | None = None, max_seq_length: int | None = None) -> ModernBertTransformer:
        path = Path(model_name_or_path) / subfolder
        saved_max_seq_length, do_lower_case = transformer_settings(path)
        model = ModernBertModel.from_pretrained(path, device=device, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)  # never trust_remote_code
        return cls(model, tokenizer, max_seq_length=max_seq_length or saved_max_seq_length,
                   do_lower_case=do_lower_case)


class ModernBertSentenceTransformer(SentenceTransformer):
    """A SentenceTransformer whose first module is ModernBertTransformer: fast, packed encoding."""

    def save(self, path: str, *args, **kwargs) -> None:
        super().save(path, *args, **kwargs)
        # Name the stock module, whose files ours writes, so stock loaders need none of our code.
        modules_path = Path(path) / "modules.json"
        modules = json.loads(modules_path.read_text())
        for entry in modules:
            if entry["type"] == f"{ModernBertTransformer.__module__}.{ModernBertTransformer.__name__}":
                entry["type"] = STOCK_TRANSFORMER
        modules_path.write_text(json.dumps(modules, indent=2))

    def encode(
        self,
        inputs,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: dict | None = None,
        chunk_size: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        **kwargs,
    ):
        """sentence-transformers' encode, with batches of at most `batch_tokens` tokens.

        Texts are packed without padding and batched by token count (longest first), so one
        8192-token document and a thousand short queries each make sensible batches; `batch_size`
        is not used on this path. `precision="float16"` returns half-precision embeddings. Inputs
        other than strings, outputs other than sentence embeddings and multi-process pools go
        through the stock path.
        """
        singular = isinstance(inputs, str)
        texts = [inputs] if singular else list(inputs)
        stock_only = (
            output_value != "sentence_embedding"
            or not all(isinstance(t, str) for t in texts)
            or set(kwargs) - {"task"}
            or pool is not None
            or isinstance(device, list)  # multi-process encoding
        )
        if stock_only:
            return super().encode(
                inputs, prompt_name=prompt_name, prompt=prompt, batch_size=batch_size,
                show_progress_bar=show_progress_bar, output_value=output_value, precision=precision,
                convert_to_numpy=convert_to_numpy, convert_to_tensor=convert_to_tensor, device=device,
                normalize_embeddings=normalize_embeddings, truncate_dim=truncate_dim, pool=pool,
                chunk_size=chunk_size, **kwargs,
            )
        if device is not None:
            self.to(device)
        if show_progress_bar is None:
            show_progress_bar = logging.getLogger("sentence_transformers").getEffectiveLevel() <= logging.INFO
        if prompt is None:
            if prompt_name is not None:
                if prompt_name not in self.prompts:
                    raise ValueError(f"prompt_name {prompt_name!r} is not one of the model's prompts {list(self.prompts)}")
                prompt = self.prompts[prompt_name]
            elif self.default_prompt_name is not None:
                prompt = self.prompts.get(self.default_prompt_name)
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim

        embeddings = self._encode_packed(texts, prompt or None, batch_tokens, show_progress_bar)
        if truncate_dim is not None:
            embeddings = embeddings[:, :truncate_dim]
        if normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
        if precision == "float16":
            embeddings = embeddings.half()
        elif precision != "float32":
            embeddings = torch.from_numpy(quantize_embeddings(embeddings, precision=precision))
        if convert_to_tensor:
            result = embeddings
        elif convert_to_numpy:
            result = embeddings.numpy()
        else:
            result = list(embeddings)
        return result[0] if singular else result

    @torch.inference_mode()
    def _encode_packed(self, texts: list[str], prompt: str | None, batch_tokens: int,
                       show_progress_bar: bool) -> torch.Tensor:
        transformer: ModernBertTransformer = self[0]
        if not texts:
            return torch.empty(0, self.get_embedding_dimension())
        self.eval()
        ids = transformer.tokenize_texts(texts, prompt)
        prompt_length = transformer.prompt_length(prompt) if prompt else None
        out = [None] * len(texts)
        with TokenProgress(show_progress_bar, total=sum(map(len, ids))) as progress:
            for batch, hidden, cu_seqlens in encode_packed(transformer.model, ids, batch_tokens):
                # stock modules after the first expect padded token embeddings
                batch_lengths = cu_seqlens.diff()
                attention_mask = torch.arange(int(batch_lengths.max()), device=hidden.device)[None] \
                    < batch_lengths[:, None]
                token_embeddings = hidden.new_zeros(*attention_mask.shape, hidden.shape[-1])
                token_embeddings[attention_mask] = hidden
                features = {"token_embeddings": token_embeddings, "attention_mask": attention_mask.long()}
                if prompt_length is not None:
                    features["prompt_length"] = prompt_length
                for module in list(self)[1:]:
                    features = module(features)
                for i, embedding in zip(batch, features["sentence_embedding"].float().cpu()):
                    out[i] = embedding
                progress.advance(len(hidden))
        return torch.stack(out)


def _stock_module_class(class_ref: str, source: Path):
    """A module class named in modules.json: sentence-transformers' own only, never remote code."""
    if not class_ref.startswith("sentence_transformers."):
        raise CheckpointError(
            f"{source}: module type {class_ref!r} is not part of sentence-transformers; custom code is not loaded"
        )
    module_name, class_name = class_ref.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{source}: unknown module type {class_ref!r}") from None


def load_embedder(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
    prompts: dict[str, str] | None = None,
    revision: str | None = None,
) -> SentenceTransformer:
    """Opens a ModernBERT embedding model (sentence-transformers layout or bare checkpoint).

    The Transformer module runs our unpadded encoder; Pooling, Normalize and other modules are
    sentence-transformers' own. `prompts` (e.g. {"query": "search_query: "}) override the saved
    ones; models in `encoder.layout.KNOWN_PROMPTS` get theirs when the saved config has none. dtype defaults to
    float32 on CPU and bfloat16 on CUDA; max_length caps the tokens per input.
    """
    layout = read_layout(name_or_path, revision)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    transformer_kwargs = dict(device=device, dtype=dtype, max_seq_length=max_length)
    modules = []
    for entry in layout.modules:
        if entry.is_transformer:
            modules.append(ModernBertTransformer.load(str(layout.directory), entry.path, **transformer_kwargs))
        else:
            module_class = _stock_module_class(entry.class_ref, layout.directory / "modules.json")
            modules.append(module_class.load(str(layout.directory), subfolder=entry.path))
    if not modules:
        transformer = ModernBertTransformer.load(str(layout.directory), **transformer_kwargs)
        modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")]
    return ModernBertSentenceTransformer(
        modules=modules,
        device=str(device),
        prompts={**layout.prompts, **(prompts or {})},
        default_prompt_name=layout.default_prompt_name,
        similarity_fn_name=layout.similarity_fn_name,
    )
