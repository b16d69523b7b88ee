"""The distillation recipe: a tiny student moves towards a tiny teacher; teacher vectors are cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from recipes.distill import DistillConfig, teacher_embeddings, train_distill
from tests.conftest import bert_embedder, make_corpus, tiny_student_and_teacher


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


def test_layer_loss_brings_a_student_to_its_teacher(checkpoint_dir, tmp_path):
    """loss layers: the teacher BERT runs beside a student of its width and vocabulary, matched layer by layer."""
    from recipes.default_model import DefaultModelConfig, init_student

    teacher = bert_embedder(checkpoint_dir, tmp_path / "teacher", hidden_size=32, num_hidden_layers=2, seed=3)
    fresh = DefaultModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              max_length=512, student_init="pca")
    student = init_student(fresh, str(teacher), tmp_path / "student")
    texts, held_out = make_corpus(200, 25), make_corpus(40, 26)
    config = DistillConfig(student=str(student), teacher=str(teacher), output_dir=str(tmp_path / "run"),
                           loss="layers", teacher_layers=[0, 1], batch_size=32, epochs=4, lr=2e-3, max_length=128)
    trained = train_distill(config, texts=texts)

    import transformers

    from encoder import ModernBertModel

    bert = transformers.BertModel.from_pretrained(teacher).eval()
    batch = transformers.AutoTokenizer.from_pretrained(teacher)(held_out, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()

    def gap(model) -> float:  # the last layer's tokens against the teacher's, relative to the teacher's scale
        with torch.no_grad():
            ours = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state[mask]
            theirs = bert(**batch).last_hidden_state[mask]
        return float(((ours - theirs) ** 2).mean() / (theirs ** 2).mean())

    assert trained.get_embedding_dimension() == 32, "same width: no projection"
    assert gap(trained[0].auto_model.eval()) < 0.5 * gap(ModernBertModel.from_pretrained(student).eval())
    assert not (tmp_path / "run" / "teacher_cache").exists(), "the teacher runs beside the student, nothing cached"
    assert not any(layer._forward_hooks for layer in trained[0].auto_model.layers), "the loss leaves no hook behind"


def test_layer_loss_is_the_same_when_the_encoder_runs_a_batch_in_groups(checkpoint_dir, tmp_path, monkeypatch):
    """On a CPU the encoder runs a long batch in groups of sequences, and each layer's hook fires once per
    group: the loss puts the groups' rows back in order, so its value and gradients do not change."""
    import transformers

    import encoder.model
    from encoder import load_embedder
    from recipes.default_model import DefaultModelConfig, init_student
    from recipes.distill import LayerDistillLoss

    teacher = bert_embedder(checkpoint_dir, tmp_path / "teacher", hidden_size=32, num_hidden_layers=2, seed=3)
    fresh = DefaultModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_length=512, student_init="pca")
    student = load_embedder(init_student(fresh, str(teacher), tmp_path / "student"), device="cpu")
    loss = LayerDistillLoss(student, transformers.BertModel.from_pretrained(teacher).eval(), [0, 1])
    features = student.tokenize(make_corpus(6, 28))
    lengths = features["attention_mask"].sum(1).tolist()

    def value_and_gradient() -> tuple[float, torch.Tensor]:
        student.zero_grad()
        value = loss([dict(features)], None)
        value.backward()
        return float(value.detach()), student[0].auto_model.layers[0].attn.Wqkv.weight.grad.clone()

    one_group, one_group_gradient = value_and_gradient()
    monkeypatch.setattr(encoder.model, "CPU_GROUP_ACTIVATION_BYTES", max(lengths) * 3 * 32 * 4)
    packed = encoder.model.PackedBatch.from_padded(features["input_ids"], features["attention_mask"])
    assert len(student[0].auto_model.packed_groups(packed)) > 2, lengths
    grouped, grouped_gradient = value_and_gradient()
    assert grouped == pytest.approx(one_group, rel=1e-5)
    torch.testing.assert_close(grouped_gradient, one_group_gradient, rtol=1e-4, atol=1e-6)


def test_layer_loss_needs_one_teacher_layer_per_student_layer(checkpoint_dir, tmp_path):
    teacher = bert_embedder(checkpoint_dir, tmp_path / "teacher", hidden_size=64, num_hidden_layers=2, seed=3)
    config = DistillConfig(student=str(checkpoint_dir), teacher=str(teacher), output_dir=str(tmp_path / "run"),
                           loss="layers", teacher_layers=[0], max_steps=1, batch_size=4)
    with pytest.raises(ValueError, match="one teacher layer per student layer"):
        train_distill(config, texts=make_corpus(8, 27))


def test_a_stopped_run_resumes_from_its_checkpoint(checkpoint_dir, teacher_dir, tmp_path):
    """save_steps: a run killed after its checkpoint goes on from that step when started again."""
    from transformers import TrainerCallback

    class StopsAt(TrainerCallback):
        def __init__(self, step: int | None):
            self.step, self.first_step = step, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step if self.first_step is None else self.first_step
            if state.global_step == self.step:
                raise KeyboardInterrupt  # what a kill leaves: the checkpoint of step 2 and nothing later

    config = DistillConfig(student=str(checkpoint_dir), teacher=str(teacher_dir), output_dir=str(tmp_path),
                           loss="mse", batch_size=8, max_steps=4, save_steps=2, max_length=64)
    texts = make_corpus(40, 28)
    with pytest.raises(KeyboardInterrupt):
        train_distill(config, texts=texts, callbacks=[StopsAt(3)])
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "final").exists()
    resumed = StopsAt(None)
    train_distill(config, texts=texts, callbacks=[resumed])
    assert resumed.first_step == 2, "the rerun starts where the checkpoint left off"
    assert (tmp_path / "final" / "modules.json").is_file()


def test_a_pack_gives_the_teacher_each_of_its_texts_alone(checkpoint_dir, tmp_path):
    """pack_tokens: texts joined by [SEP] into packs; unpack hands the teacher `[CLS] text [SEP]` for each, and
    the rows it pairs are the same token of the same text on both sides."""
    import random

    import transformers

    from encoder import load_embedder
    from recipes.distill import LayerDistillLoss, pack_texts

    student_dir, teacher = tiny_student_and_teacher(checkpoint_dir, tmp_path)
    student = load_embedder(student_dir, device="cpu", max_length=2048)
    texts = make_corpus(30, 29)
    packs = pack_texts(texts, student.tokenizer.sep_token, 600, random.Random(0))
    assert 1 < len(packs) < len(texts) and sum(p.count(student.tokenizer.sep_token) for p in packs) == len(texts)
    loss = LayerDistillLoss(student, transformers.BertModel.from_pretrained(teacher).eval(), [0, 1],
                            separator=student.tokenizer.sep_token_id)
    features = student.tokenize(packs)
    teacher_ids, teacher_mask, student_rows, teacher_rows, pack_of_text = loss.unpack(
        features["input_ids"], features["attention_mask"].bool())
    tokenizer = transformers.AutoTokenizer.from_pretrained(teacher)
    rows = [row[: int(n)].tolist() for row, n in zip(teacher_ids, teacher_mask.sum(1))]
    assert all(row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id for row in rows)
    # the same text (this tokenizer is byte-level BPE: a text after a separator may gain a space token)
    assert [tokenizer.decode(row[1:-1]).strip() for row in rows] == [
        tokenizer.decode(tokenizer(t[:2000], add_special_tokens=False)["input_ids"]).strip() for t in texts]
    assert pack_of_text.tolist() == sorted(pack_of_text.tolist()) and pack_of_text[-1] == len(packs) - 1
    student_tokens = features["input_ids"][features["attention_mask"].bool()]
    assert torch.equal(student_tokens[student_rows], teacher_ids[teacher_mask.bool()][teacher_rows])
    assert len(student_rows) == sum(len(row) - 2 for row in rows)
    value = loss([dict(features)], None)
    value.backward()
    assert torch.isfinite(value) and student[0].auto_model.layers[0].attn.Wqkv.weight.grad.abs().sum() > 0


def test_distillation_on_packs_lowers_the_packed_loss_of_held_out_packs(checkpoint_dir, tmp_path):
    """pack_tokens through the trainer: the student reads packs of up to 1,024 tokens, and the layer loss of
    packs it never saw (each text against the teacher on it alone) falls. Whether that removes a real
    student's pull towards a long document's opening is measured on the shipped shape, not here: a toy
    student has no such pull to remove."""
    import random

    import transformers

    from encoder import load_embedder
    from recipes.distill import LayerDistillLoss, pack_texts

    student_dir, teacher = tiny_student_and_teacher(checkpoint_dir, tmp_path)
    bert = transformers.BertModel.from_pretrained(teacher).eval()

    def held_out_loss(model) -> float:
        loss = LayerDistillLoss(model, bert, [0, 1], separator=model.tokenizer.sep_token_id)
        packs = pack_texts(make_corpus(60, 31), model.tokenizer.sep_token, 1024, random.Random(1))
        with torch.no_grad():
            return float(loss([dict(model.tokenize(packs))], None))

    config = DistillConfig(student=str(student_dir), teacher=str(teacher), output_dir=str(tmp_path / "run"),
                           loss="layers", teacher_layers=[0, 1], batch_size=8, max_steps=30, lr=2e-3,
                           pack_tokens=1024)
    trained = train_distill(config, texts=make_corpus(300, 30))
    assert trained.max_seq_length == 1024, "the student reads whole packs"
    before = held_out_loss(load_embedder(student_dir, device="cpu", max_length=1024))
    assert held_out_loss(trained) < 0.7 * before
