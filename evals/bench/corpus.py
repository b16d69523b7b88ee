"""The benchmarks' text: SciFact's abstracts, a tokenizer trained on them, long documents cut from them.

Also the progress console. Nothing here imports torch at import time: cli.py takes SCIFACT as a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# progress and status lines go to stderr, so that --json output on stdout stays clean
console = Console(stderr=True)

# beside the checkout, in the workspace's shared data
SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"


def read_beir_corpus(directory: Path, limit: int) -> list[str]:
    """The first `limit` documents of a BEIR folder, as the index embeds them (`embedding_input`)."""
    from retriever.beir import BeirFormatError, read_corpus
    from retriever.documents import embedding_input

    try:
        corpus = read_corpus(directory / "corpus.jsonl")
    except BeirFormatError as e:
        raise typer.BadParameter(f"{e}: pass --scifact with a BEIR folder") from None
    return [embedding_input(document) for document in list(corpus.values())[:limit]]


def train_tokenizer(texts: list[str], path: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE with ModernBERT's special tokens, trained on the benchmark corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=16384, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=8192)
    fast.save_pretrained(path)
    return fast


def long_documents(texts: list[str], tokenizer: PreTrainedTokenizerFast, lengths: list[int]) -> list[str]:
    """Abstracts concatenated (cycling through the corpus) and cut to the given token counts."""
    docs, i = [], 0
    for target in lengths:
        ids: list[int] = []
        while len(ids) < target:
            ids += tokenizer(texts[i % len(texts)], add_special_tokens=False)["input_ids"]
            i += 1
        docs.append(tokenizer.decode(ids[: target - 2]))
    return docs
