"""ModernBERT in PyTorch, unpadded end to end, weight-compatible with Hugging Face checkpoints."""

from encoder.checkpoint import CheckpointError
from encoder.config import ModernBertConfig
from encoder.model import MaskedLMOutput, ModernBertForMaskedLM, ModernBertModel, ModernBertOutput

__all__ = [
    "CheckpointError",
    "MaskedLMOutput",
    "ModernBertConfig",
    "ModernBertForMaskedLM",
    "ModernBertModel",
    "ModernBertOutput",
]
