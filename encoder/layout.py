"""A sentence-transformers model folder as our encoder reads it, without importing
sentence-transformers (whose import alone takes seconds: `retriever search` cannot afford it).

Where the folder comes from (a local path or a hub download), the prompts of known models whose
config lacks them, and how texts of known token counts are cut into packed batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoder.checkpoint import CheckpointError

# The stock Transformer module's oldest name: every sentence-transformers release resolves it.
STOCK_TRANSFORMER = "sentence_transformers.models.Transformer"
# Prompts of known models whose config_sentence_transformers.json does not carry them.
KNOWN_PROMPTS = {
    "nomic-ai/modernbert-embed-base": {"query": "search_query: ", "document": "search_document: "},
    "lightonai/modernbert-embed-large": {"query": "search_query: ", "document": "search_document: "},
}
DEFAULT_BATCH_TOKENS = 16384
# What the hub download of an embedder needs: configs, safetensors weights, tokenizer files.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*/*.json", "*/*.safetensors"]


def resolve_embedder_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local model folder as it is, or a hub id downloaded (configs, safetensors, tokenizer)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"{name}: no such model folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # network, auth, unknown repo: one message for the caller
        raise CheckpointError(
            f"{name}: not a local folder, and fetching it from the Hugging Face hub failed ({type(e).__name__}: {e})"
        ) from None


def token_budget_batches(lengths: np.ndarray, batch_tokens: int) -> list[list[int]]:
    """Indices of the inputs, longest first, in batches of at most `batch_tokens` tokens
    (an input longer than the budget makes a batch of its own)."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_tokens = 0
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        if current and current_tokens + lengths[i] > batch_tokens:
            batches.append(current)
            current, current_tokens = [], 0
        current.append(int(i))
        current_tokens += int(lengths[i])
    if current:
        batches.append(current)
    return batches
