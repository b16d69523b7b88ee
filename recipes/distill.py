"""Embedding distillation: a student embedder learns a teacher sentence-transformers model's vectors.

texts -> teacher embeddings (computed once, cached to disk as safetensors) -> student trained with
MSE against them and/or with the in-batch cosine-similarity matrix of the teacher -> the standard
sentence-transformers layout in output_dir/final. When the teacher's dimension differs from the
student's, MSE goes through a stock Dense projection appended to the student.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recipes.config import RecipeConfig, option, save_final, trainer_arguments


@dataclass
class DistillConfig(RecipeConfig):
    student: str = option("", "Student embedder: sentence-transformers layout or bare ModernBERT checkpoint.")
    teacher: str = option("", "Teacher: any sentence-transformers model folder or hub id (no remote code).")
    data: list[str] = option([], "Texts: .txt/.jsonl/.parquet sources as in the MLM recipe.")
    output_dir: str = option("runs/distill", "Trainer output, and the final model in output_dir/final.")
    cache_dir: str = option("", "Where teacher embeddings are cached; empty: output_dir/teacher_cache.")
    loss: str = option("mse", "mse (match the teacher's vectors), similarity (match its in-batch cosine "
                              "similarities) or both.")
    max_length: int = option(512, "Tokens per text for the student.")
    max_texts: int = option(0, "Use at most this many texts (0: all).")
    batch_size: int = option(64, "Texts per step.")
    epochs: float = option(1.0, "Passes over the texts.")
    max_steps: int = option(-1, "Steps in all; -1: set by epochs.")
    lr: float = option(1e-4, "Peak learning rate (linear warmup then decay).")
    warmup_ratio: float = option(0.05, "Share of steps spent warming the learning rate up.")
    seed: int = option(0, "Seed of the data order.")
    dataloader_workers: int = option(0, "Processes that fetch and tokenize batches (0: the training process). "
                                        "On a GPU, tokenizing long texts can take longer than the step itself.")
    dtype: str = option("float32", "Weights while training: float32 (also on a GPU: the optimizer updates them in "
                                   "place) or bfloat16.")


def teacher_embeddings(teacher, texts: list[str], cache_dir: Path, teacher_name: str) -> torch.Tensor:
    """The teacher's normalised embeddings of `texts`, read from the cache when this exact set was done."""
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256(teacher_name.encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = cache_dir / f"{digest.hexdigest()[:24]}.safetensors"
    if path.is_file():
        return load_file(path)["embeddings"]
    embeddings = teacher.encode(texts, batch_size=256, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=True).float().cpu()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"embeddings": embeddings.contiguous()}, tmp)
    tmp.replace(path)
    return embeddings


class DistillLoss(nn.Module):
    """MSE to the teacher's vectors and/or MSE between student and teacher in-batch cosine matrices."""

    def __init__(self, model, mse: bool, similarity: bool):
        super().__init__()
        self.model, self.mse, self.similarity = model, mse, similarity

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        (features,) = sentence_features
        student = self.model(features)["sentence_embedding"]
        teacher = labels.to(student.dtype)
        loss = student.new_zeros(())
        if self.mse:
            loss = loss + nn.functional.mse_loss(student, teacher)
        if self.similarity:
            s = nn.functional.normalize(student, dim=-1)
            t = nn.functional.normalize(teacher, dim=-1)
            loss = loss + nn.functional.mse_loss(s @ s.T, t @ t.T)
        return loss


def train_distill(config: DistillConfig, texts: list[str] | None = None, callbacks: list | None = None):
    """Distils config.teacher into config.student; returns the student (also saved in output_dir/final).

    `callbacks`: extra transformers TrainerCallbacks (e.g. a time budget)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.modules import Dense

    from encoder import load_embedder
    from recipes.mlm import read_texts

    if config.loss not in ("mse", "similarity", "both"):
        raise ValueError(f"loss must be mse, similarity or both, got {config.loss!r}")
    texts = texts if texts is not None else read_texts(config.data)
    if config.max_texts:
        texts = texts[: config.max_texts]
    teacher = SentenceTransformer(config.teacher, device="cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = Path(config.cache_dir or Path(config.output_dir) / "teacher_cache")
    targets = teacher_embeddings(teacher, texts, cache_dir, config.teacher)
    del teacher

    student = load_embedder(config.student, max_length=config.max_length, dtype=getattr(torch, config.dtype))
    use_mse = config.loss in ("mse", "both")
    if use_mse and student.get_embedding_dimension() != targets.shape[1]:
        # linear, no bias: a later step can fold it into a square map with the same similarities
        student.append(Dense(student.get_embedding_dimension(), targets.shape[1], bias=False,
                             activation_function=nn.Identity()).to(student.device))
    dataset = Dataset.from_dict({"text": texts, "label": targets.tolist()})
    loss = DistillLoss(student, mse=use_mse, similarity=config.loss in ("similarity", "both"))
    SentenceTransformerTrainer(model=student, args=trainer_arguments(config), train_dataset=dataset, loss=loss,
                               callbacks=callbacks).train()
    save_final(student, config)
    return student
