"""The distillation recipe: a tiny student moves towards a tiny teacher; teacher vectors are cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from recipes.distill import DistillConfig, teacher_embeddings, train_distill
from tests.conftest import bert_embedder, make_corpus


@pytest.fixture(scope="module")
def teacher_dir(checkpoint_dir, tmp_path_factory):
    """A 32-dimensional BERT sentence-transformers model: another architecture and dimension."""
    return bert_embedder(checkpoint_dir, tmp_path_factory.mktemp("teacher"), hidden_size=32, num_hidden_layers=2,
                         seed=5)


def gap_to_teacher(student, teacher, texts) -> float:
    s = student.encode(texts)
    t = teacher.encode(texts, normalize_embeddings=True)
    return float(((s - t) ** 2).mean())


@pytest.mark.parametrize("loss", ["mse", "both"])
def test_student_moves_towards_teacher(checkpoint_dir, teacher_dir, tmp_path, loss):
    texts = make_corpus(200, 21)
    config = DistillConfig(student=str(checkpoint_dir), teacher=str(teacher_dir), output_dir=str(tmp_path),
                           loss=loss, batch_size=32, epochs=5, lr=1e-3, max_length=128)
    student = train_distill(config, texts=texts)
    teacher = SentenceTransformer(str(teacher_dir), device="cpu")
    assert student.get_embedding_dimension() == 32, "MSE needs a projection to the teacher's dimension"
    held_out = make_corpus(40, 22)
    trained_gap = gap_to_teacher(student, teacher, held_out)
    untrained = SentenceTransformer(str(tmp_path / "final"), device="cpu")
    torch.nn.init.normal_(untrained[2].linear.weight, std=0.1)  # same architecture, projection not learned
    assert trained_gap < 0.5 * gap_to_teacher(untrained, teacher, held_out)
    assert (tmp_path / "teacher_cache").is_dir()


def test_similarity_loss_keeps_student_dimension(checkpoint_dir, teacher_dir, tmp_path):
    config = DistillConfig(student=str(checkpoint_dir), teacher=str(teacher_dir), output_dir=str(tmp_path),
                           loss="similarity", batch_size=16, max_steps=2, max_length=64)
    assert train_distill(config, texts=make_corpus(40, 23)).get_embedding_dimension() == 64


def test_teacher_embeddings_are_computed_once(teacher_dir, tmp_path):
    teacher = SentenceTransformer(str(teacher_dir), device="cpu")
    texts = make_corpus(10, 24)
    first = teacher_embeddings(teacher, texts, tmp_path, "t")

    class Refuses:
        def encode(self, *args, **kwargs):
            raise AssertionError("the cache should have answered")

    again = teacher_embeddings(Refuses(), texts, tmp_path, "t")
    assert torch.equal(first, again)
    assert np.allclose(torch.linalg.norm(first, dim=1).numpy(), 1.0, atol=1e-5)
