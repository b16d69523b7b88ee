"""ModernBERT in PyTorch, unpadded end to end, weight-compatible with Hugging Face checkpoints."""

from encoder.hub import CheckpointError
from encoder.config import ModernBertConfig
from encoder.model import MaskedLMOutput, ModernBertForMaskedLM, ModernBertModel, ModernBertOutput


def __getattr__(name: str):
    # sentence-transformers is heavy to import: load the embedder only when it is asked for
    if name == "load_embedder":
        from encoder.embedder import load_embedder

        return load_embedder
    raise AttributeError(f"module 'encoder' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "MaskedLMOutput",
    "ModernBertConfig",
    "ModernBertForMaskedLM",
    "ModernBertModel",
    "ModernBertOutput",
    "load_embedder",
]
