"""Documents -> tokens -> encoder -> vectors, for indexing and for queries.

`PassageEncoder` opens a ModernBERT embedding model in the sentence-transformers layout
(`encoder.layout.read_layout`: Transformer, Pooling with mean or CLS, optional Dense and
Normalize) with our encoder and the model's own `tokenizer.json`, and pools the packed token
states itself. It gives the vectors that
`encoder.load_embedder(...).encode` gives (tests hold the two together), without importing
sentence-transformers, whose import alone would take longer than a cold `retriever search` may.

How a document becomes vectors (`Chunking`):
- A document that fits in `max_length` tokens (prompt and special tokens included) is one input
  and one vector, exactly as `encode_document` would embed it.
- A longer one is cut, in token space, into windows of up to `max_length` tokens.
  `mode="window"`: the windows overlap by `overlap` tokens and each is embedded on its own.
  `mode="late"` (late chunking, Günther et al. 2024): the windows tile the document, each runs
  through the encoder once, and each passage of `passage_tokens` tokens inside it is mean-pooled
  from that one pass, so every passage vector carries the context of up to `max_length` tokens
  around it. Short documents get passage vectors the same way.
Cuts fall between words (the tokenizer's): a window ends before the word a cut would split, a
passage runs on to the end of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoder.batching import DEFAULT_BATCH_TOKENS, encode_packed
from encoder.hub import CheckpointError
from encoder.layout import read_json, read_layout
from encoder.model import ModernBertModel, cpu_has_native_bfloat16
from encoder.progress import TokenProgress

CHUNKING_MODES = ("window", "late")
# The encoder's dtype, an index's for life: its vectors and its queries' come from one. Pooling, the Dense
# layers and the vectors stay float32 either way.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Tokens held back from each window for the prompt's re-tokenisation at the cut.
_WINDOW_MARGIN = 8
# Cuts move to the nearest word start so that no window or passage begins mid-word, but not by more
# than this many tokens: a longer "word" (a URL, a hash, base64) is cut where it falls.
_MAX_CUT_SHIFT = 16


def default_dtype(device: str | None) -> str:
    """bfloat16 on CUDA and on CPUs that multiply it in hardware, where it is the faster (rankings equal
    within noise: README, `retriever eval dtype`); float32 elsewhere."""
    if (device or "cpu").startswith("cuda") or cpu_has_native_bfloat16():
        return "bfloat16"
    return "float32"


@dataclass(frozen=True)
class Chunking:
    mode: str = "window"
    overlap: int = 256  # window mode: tokens shared by neighbouring windows
    passage_tokens: int = 256  # late mode: tokens per passage vector

    def __post_init__(self):
        if self.mode not in CHUNKING_MODES:
            raise ValueError(f"chunking {self.mode!r}: expected one of {', '.join(CHUNKING_MODES)}")
        if self.overlap < 0 or self.passage_tokens < 1:
            raise ValueError("chunking: overlap must be >= 0 and passage_tokens >= 1")


@dataclass
class Passage:
    """What one vector stands for: characters [start, end) of document `doc`."""

    doc: int
    start: int
    end: int


@dataclass
class _Input:
    doc: int
    ids: list[int]
    spans: list[tuple[int, int, int, int]]  # (first token, end token, start char, end char) per passage


class PassageEncoder:
    """Queries -> vectors, documents -> passages and their vectors, for the index."""

    def __init__(self, directory: Path, name: str, model: ModernBertModel, tokenizer, *, pooling: str,
                 include_prompt: bool, dense: list[_Dense], normalize: bool, prompts: dict[str, str],
                 max_length: int, lowercase: bool):
        self.directory = directory
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.include_prompt = include_prompt
        self.dense = dense
        self.normalize = normalize
        self.prompts = prompts
        self.max_length = max_length
        self.lowercase = lowercase
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.sep_id = self._closing_special_id()

    @property
    def dimension(self) -> int:
        return self.dense[-1].weight.shape[0] if self.dense else self.model.config.hidden_size

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | None = None, max_length: int | None = None,
             dtype: str = "float32") -> PassageEncoder:
        from tokenizers import Tokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        layout = read_layout(name_or_path)
        supported = {"Transformer", "Pooling", "Dense", "Normalize"}
        if unsupported := [m.class_ref for m in layout.modules if m.kind not in supported]:
            raise CheckpointError(f"{layout.directory / 'modules.json'}: module {unsupported[0]} is not supported "
                                  "by the retriever (Transformer, Pooling (mean or CLS), Dense and Normalize are)")
        if layout.pooling not in (("mean",), ("cls",)):
            raise CheckpointError(f"{layout.directory}: pooling {list(layout.pooling)} is not supported by the "
                                  "retriever (mean or cls)")
        dense = [_Dense.load(layout.directory / m.path, device or "cpu") for m in layout.modules if m.kind == "Dense"]
        tokenizer_file = layout.transformer_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise CheckpointError(f"{layout.transformer_dir}: no tokenizer.json (a fast tokenizer is needed)")
        # cosine similarity (the sentence-transformers default) is inner product of unit vectors
        normalize = any(m.kind == "Normalize" for m in layout.modules) \
            or layout.similarity_fn_name in (None, "cosine")
        model = ModernBertModel.from_pretrained(layout.transformer_dir, device=device or "cpu", dtype=DTYPES[dtype])
        limit = min(filter(None, [max_length, layout.max_seq_length, model.config.max_position_embeddings]))
        return cls(layout.directory, str(name_or_path), model, Tokenizer.from_file(str(tokenizer_file)),
                   pooling=layout.pooling[0], include_prompt=layout.include_prompt, dense=dense,
                   normalize=normalize, prompts=layout.prompts, max_length=limit, lowercase=layout.do_lower_case)

    def fingerprint(self) -> str:
        """sha256 of the weights, the tokenizer, the pooling, the prompts and the dtype: what makes the
        vectors, so what an index built with this model must match. (float32 is left out of the hash: indexes
        made before the dtype was chosen were float32, and keep their fingerprints.)"""
        settings = [self.pooling, self.include_prompt, self.normalize, self.prompts, self.lowercase]
        digest = hashlib.sha256(json.dumps(settings + ([self.dtype] if self.dtype != "float32" else []),
                                           sort_keys=True).encode())
        files = sorted(self.directory.rglob("*.safetensors")) + sorted(self.directory.rglob("tokenizer.json"))
        for path in files:
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]

    # ---- inputs -------------------------------------------------------------------------------

    def _closing_special_id(self) -> int | None:
        """The special token the tokenizer ends inputs with ([SEP]), if any: truncation keeps it."""
        with_specials = self.tokenizer.encode("a").ids
        plain = self.tokenizer.encode("a", add_special_tokens=False).ids
        return with_specials[-1] if with_specials[-1:] != plain[-1:] else None

    def _encode(self, texts: list[str], add_special_tokens: bool = True):
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

    def _truncate(self, ids: list[int]) -> list[int]:
        """At most max_length tokens, the closing special token kept (as transformers truncates)."""
        if len(ids) <= self.max_length:
            return ids
        return ids[: self.max_length - 1] + ids[-1:] if self.sep_id is not None else ids[: self.max_length]

    def _whole_inputs(self, texts: list[str], prompt: str) -> list[_Input]:
        """Each text as one input, truncated to max_length (the stock encode_* behaviour)."""
        inputs = []
        for doc, encoding in enumerate(self._encode([prompt + t for t in texts])):
            ids = self._truncate(encoding.ids)
            inputs.append(_Input(doc, ids, [(0, len(ids), 0, len(texts[doc]))]))
        return inputs

    def _document_inputs(self, texts: list[str], chunking: Chunking) -> list[_Input]:
        prompt = self.prompts.get("document", "")
        overhead = len(self.tokenizer.encode(prompt).ids)
        capacity = self.max_length - overhead
        contents = self._encode(texts, add_special_tokens=False)
        slices: list[tuple[int, int, int]] = []  # (doc, start char, end char)
        for doc, content in enumerate(contents):
            offsets, word_ids = content.offsets, content.word_ids  # each read converts the whole list
            if len(offsets) <= capacity and chunking.mode == "window":
                slices.append((doc, 0, len(texts[doc])))
                continue
            window = max(1, capacity - _WINDOW_MARGIN)
            overlap = min(chunking.overlap, window // 2) if chunking.mode == "window" else 0
            first = 0
            while True:
                last = min(first + window, len(offsets))
                if last < len(offsets):  # end before the word the cut falls in, keeping within the window
                    last = _word_start_before(word_ids, last, first)
                start = offsets[first][0] if first else 0
                end = offsets[last - 1][1] if last < len(offsets) else len(texts[doc])
                slices.append((doc, start, end))
                if last >= len(offsets):
                    break
                first = _word_start_before(word_ids, max(last - overlap, first + 1), first)
        inputs = []
        encodings = self._encode([prompt + texts[doc][start:end] for doc, start, end in slices])
        for (doc, start, end), encoding in zip(slices, encodings):
            ids = self._truncate(encoding.ids)
            if chunking.mode == "window":
                spans = [(0, len(ids), start, end)]
            else:
                spans = self._passages(encoding, len(ids), len(prompt), start, chunking.passage_tokens)
            inputs.append(_Input(doc, ids, spans))
        return inputs

    @staticmethod
    def _passages(encoding, length: int, prompt_chars: int, offset: int, passage_tokens: int):
        """Late chunking: consecutive runs of `passage_tokens` content tokens of one input."""
        # each read of an Encoding's attribute converts the whole list: read them once
        special, offsets, word_ids = encoding.special_tokens_mask, encoding.offsets, encoding.word_ids
        # a token is the text's once it ends past the prompt (a leading space may join the prompt's end)
        content = [i for i in range(length) if not special[i] and offsets[i][1] > prompt_chars]
        if not content:  # nothing but special tokens: the input as a whole
            return [(0, length, offset, offset)]
        words = [word_ids[i] for i in content]
        spans = []
        k = 0
        while k < len(content):
            end = min(k + passage_tokens, len(content))
            if end < len(content):  # the rest of the word the cut falls in stays in this passage
                end = _word_start_after(words, end)
            group = content[k:end]
            spans.append((group[0], group[-1] + 1,
                          offset + max(offsets[group[0]][0] - prompt_chars, 0),
                          offset + offsets[group[-1]][1] - prompt_chars))
            k = end
        return spans

    # ---- encoder and pooling ------------------------------------------------------------------

    @torch.inference_mode()
    def _run(self, inputs: list[_Input], prompt: str, batch_tokens: int,
             progress: TokenProgress | None) -> tuple[np.ndarray, list[Passage]]:
        prompt_tokens = len(self.tokenizer.encode(prompt).ids) - (self.sep_id is not None) if prompt else 0
        vectors: list[tuple[int, int, np.ndarray]] = []  # (input, span, vector): put back in input order
        total = sum(len(x.ids) for x in inputs)
        for batch, hidden, cu_seqlens in encode_packed(self.model, [x.ids for x in inputs], batch_tokens):
            hidden = hidden.float()
            # each passage's rows of the packed states, as one segment id per token (-1: not pooled)
            segment = np.full(len(hidden), -1)
            keys = []
            for i, seq_start in zip(batch, cu_seqlens[:-1].tolist()):
                for j, (first, end, _, _) in enumerate(inputs[i].spans):
                    if self.pooling == "mean" and not self.include_prompt:
                        first = max(first, prompt_tokens)
                    segment[seq_start + first: seq_start + (first + 1 if self.pooling == "cls" else end)] = len(keys)
                    keys.append((i, j))
            segment_t = torch.as_tensor(segment, device=hidden.device)
            rows = segment_t >= 0
            sums = hidden.new_zeros(len(keys), hidden.shape[1]).index_add_(0, segment_t[rows], hidden[rows])
            counts = torch.bincount(segment_t[rows], minlength=len(keys)).clamp(min=1)
            pooled = sums / counts[:, None]
            for layer in self.dense:
                pooled = layer(pooled)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            pooled = pooled.cpu().numpy()
            vectors.extend((i, j, pooled[k]) for k, (i, j) in enumerate(keys))
            if progress is not None:
                progress.advance(len(hidden), total)
        vectors.sort(key=lambda item: (item[0], item[1]))
        passages = [Passage(inputs[i].doc, inputs[i].spans[j][2], inputs[i].spans[j][3]) for i, j, _ in vectors]
        matrix = np.stack([v for _, _, v in vectors]) if vectors else np.zeros((0, self.dimension), np.float32)
        return matrix.astype(np.float32), passages

    def encode_queries(self, queries: list[str], batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        prompt = self.prompts.get("query", "")
        return self._run(self._whole_inputs(queries, prompt), prompt, batch_tokens, None)[0]

    def encode_documents(self, texts: list[str], chunking: Chunking = Chunking(),
                         batch_tokens: int = DEFAULT_BATCH_TOKENS,
                         progress: TokenProgress | None = None) -> tuple[np.ndarray, list[Passage]]:
        """Vectors of every passage of every text (see the module docstring), in text order;
        `progress` advances by the tokens of each encoder batch."""
        if chunking.mode == "late" and self.pooling != "mean":
            raise ValueError(f"late chunking pools token states by their mean; {self.name} pools by {self.pooling}")
        return self._run(self._document_inputs(texts, chunking), self.prompts.get("document", ""), batch_tokens,
                         progress)


def _starts_word(word_ids: list[int | None], index: int) -> bool:
    return word_ids[index] is None or word_ids[index] != word_ids[index - 1]


def _word_start_after(word_ids: list[int | None], cut: int) -> int:
    """`cut` moved forward to the next word's first token (or the end), when that is near."""
    for index in range(cut, min(cut + _MAX_CUT_SHIFT, len(word_ids))):
        if _starts_word(word_ids, index):
            return index
    return len(word_ids) if len(word_ids) - cut < _MAX_CUT_SHIFT else cut


def _word_start_before(word_ids: list[int | None], cut: int, first: int) -> int:
    """`cut` moved back to the first token of the word it falls in, staying after `first`, when that is near."""
    for index in range(cut, max(first, cut - _MAX_CUT_SHIFT), -1):
        if _starts_word(word_ids, index):
            return index
    return cut


class _Dense:
    """sentence-transformers' Dense module: a linear layer and an activation (identity or tanh)."""

    _ACTIVATIONS = {"torch.nn.modules.linear.Identity": None, "torch.nn.modules.activation.Tanh": torch.tanh}

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation):
        self.weight, self.bias, self.activation = weight, bias, activation

    @classmethod
    def load(cls, directory: Path, device: str) -> _Dense:
        from safetensors.torch import load_file

        config = read_json(directory / "config.json")
        name = config.get("activation_function", "torch.nn.modules.linear.Identity")
        if name not in cls._ACTIVATIONS:
            raise CheckpointError(f"{directory}: Dense activation {name} is not supported (identity or tanh are)")
        weights_path = directory / "model.safetensors"
        if not weights_path.is_file():
            raise CheckpointError(f"{directory}: no model.safetensors")
        weights = load_file(weights_path, device=device)
        return cls(weights["linear.weight"].float(), weights.get("linear.bias"), cls._ACTIVATIONS[name])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.linear(x, self.weight, None if self.bias is None else self.bias.float())
        return self.activation(x) if self.activation else x
