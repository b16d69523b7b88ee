"""Embedding distillation: a student embedder learns a teacher sentence-transformers model's vectors.

texts -> teacher embeddings (computed once, cached to disk as safetensors) -> student trained with
MSE against them and/or with the in-batch cosine-similarity matrix of the teacher -> the standard
sentence-transformers layout in output_dir/final. When the teacher's dimension differs from the
student's, MSE goes through a stock Dense projection appended to the student.

`loss: layers` teaches more per text, for a student of the teacher's width that shares its vocabulary
(recipes/default_model.py's warm start): the teacher (a BERT) runs beside the student on the same
tokens, and each student layer's output learns the teacher layer it stands for, token by token
(TinyBERT's hidden-state loss), besides the sentence embedding and the in-batch similarities.
With `pack_tokens`, the student reads packs of texts up to thousands of tokens long and the teacher each
text alone: a token's state must not depend on where in a long input it sits, which distillation on
short texts never asks (a student distilled on them alone ranks long documents by their opening).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from encoder.model import PackedBatch
from recipes.config import RecipeConfig, last_checkpoint, option, save_final, trainer_arguments


@dataclass
class DistillConfig(RecipeConfig):
    student: str = option("", "Student embedder: sentence-transformers layout or bare ModernBERT checkpoint.")
    teacher: str = option("", "Teacher: any sentence-transformers model folder or hub id (no remote code).")
    data: list[str] = option([], "Texts: .txt/.jsonl/.parquet sources as in the MLM recipe.")
    output_dir: str = option("runs/distill", "Trainer output, and the final model in output_dir/final.")
    cache_dir: str = option("", "Where teacher embeddings are cached; empty: output_dir/teacher_cache.")
    loss: str = option("mse", "mse (match the teacher's vectors), similarity (match its in-batch cosine "
                              "similarities), both, or layers (match the teacher's hidden states layer by layer, "
                              "run beside the student: same width and vocabulary needed).")
    teacher_layers: list[int] = option([], "loss layers: the teacher layer each student layer stands for (empty: "
                                           "the first ones).")
    pack_tokens: int = option(0, "loss layers: join the texts into packs of 256 to this many tokens (pack_texts); the "
                                 "student reads a pack (max_length is then this), the teacher each text alone, and "
                                 "each student token learns the teacher's state of it in its own text, wherever in "
                                 "the pack it sits. 0: no packs.")
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
    save_steps: int = option(0, "Keep a checkpoint every this many steps, and resume from it when rerun "
                                "(0: no checkpoints).")


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


class LayerDistillLoss(nn.Module):
    """The student's layers against the teacher BERT's, on the same tokens (shared vocabulary).

    ModernBERT normalises a layer's input (pre-norm), BERT its output (post-norm): what the student
    layer i hands on is the next layer's attention norm of its output (the final norm after the
    last layer), and that is compared with the output of teacher layer `teacher_layers[i]`. Each
    layer's MSE is divided by the teacher's mean square there, so layers of any scale count alike.
    The sentence embeddings add their cosine distance to the teacher's (mean pooling, as
    sentence-transformers' BERT models pool) and the in-batch similarity matrix's MSE."""

    def __init__(self, model, teacher, teacher_layers: list[int], separator: int | None = None):
        super().__init__()
        self.model, self.teacher = model, teacher.eval().requires_grad_(False)
        self.separator = separator  # pack_tokens: the token after each text of a pack
        encoder = model[0].auto_model
        if len(teacher_layers) != len(encoder.layers) or encoder.config.hidden_size != teacher.config.hidden_size:
            raise ValueError(f"loss layers needs one teacher layer per student layer (got {teacher_layers} for "
                             f"{len(encoder.layers)}) and the teacher's width ({teacher.config.hidden_size}, "
                             f"student {encoder.config.hidden_size})")
        self.teacher_layers = teacher_layers
        self.encoder, self.layers = encoder, encoder.layers
        self.norms = [layer.attn_norm for layer in encoder.layers[1:]] + [encoder.final_norm]

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor | None) -> torch.Tensor:
        (features,) = sentence_features
        outputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda module, args, output: outputs.append(output))
                 for layer in self.layers]
        try:
            student = self.model(features)["sentence_embedding"]
        finally:
            for hook in hooks:
                hook.remove()
        mask = features["attention_mask"].bool()
        # on a CPU the encoder runs a batch in groups of sequences (ModernBertModel.packed_groups), so each
        # layer's hook fires once a group: the groups' real rows are put back in the batch's packed order
        packed = PackedBatch.from_padded(features["input_ids"], features["attention_mask"])
        groups = self.encoder.packed_groups(packed)
        order = torch.cat([rows for rows, _ in groups]).argsort()
        real = [rows.numel() for rows, _ in groups]  # a group's padding rows (bfloat16: token_bucket) come last
        outputs = [torch.cat([output[:n] for output, n in zip(outputs[i::len(self.layers)], real)])[order]
                   for i in range(len(self.layers))]
        if self.separator is None:
            teacher_ids, teacher_mask = features["input_ids"], features["attention_mask"]
            student_rows = torch.arange(len(order))  # every real token, against the teacher's same one
            teacher_rows = torch.arange(len(order))
            pack_of_text = torch.arange(len(teacher_ids))
        else:
            teacher_ids, teacher_mask, student_rows, teacher_rows, pack_of_text = self.unpack(
                features["input_ids"], mask)
        with torch.no_grad():
            hidden = self.teacher(input_ids=teacher_ids, attention_mask=teacher_mask, output_hidden_states=True
                                  ).hidden_states
            # the sentence target: the mean of the teacher's tokens over each pack's texts (its one text unpacked)
            tokens = hidden[-1][teacher_mask.bool()]
            text_of_token = pack_of_text.repeat_interleave(teacher_mask.sum(1))
            sums = tokens.new_zeros(len(mask), tokens.shape[1]).index_add_(0, text_of_token, tokens)
            target = nn.functional.normalize(sums, dim=-1)
        loss = student.new_zeros(())
        # the layers' outputs are packed [tokens, hidden], in the order of the padded grid's real tokens
        for output, norm, layer in zip(outputs, self.norms, self.teacher_layers):
            teacher_tokens = hidden[layer + 1][teacher_mask.bool()][teacher_rows]
            loss = loss + nn.functional.mse_loss(norm(output[student_rows]), teacher_tokens) \
                / teacher_tokens.pow(2).mean()
        loss = loss / len(self.norms)
        s = nn.functional.normalize(student, dim=-1)
        loss = loss + (1 - (s * target).sum(-1)).mean() + nn.functional.mse_loss(s @ s.T, target @ target.T)
        return loss

    def unpack(self, input_ids: torch.Tensor, mask: torch.Tensor):
        """The teacher's batch of a packed one: each text between separators as `[CLS] text [SEP]` (cut to the
        teacher's positions), with the rows of the student's and of the teacher's real tokens that stand for
        the same token of a text (the texts' own tokens; a pack's [CLS] and separators have no one text), and
        the pack each text came from."""
        limit = self.teacher.config.max_position_embeddings - 2
        cls, sep = input_ids[0, 0].item(), self.separator
        flat = (mask.flatten().cumsum(0) - 1).view(mask.shape)  # (pack, position) -> row of the real tokens
        texts, student_rows, packs = [], [], []
        for b, length in enumerate(mask.sum(1).tolist()):
            ids = input_ids[b, :length].tolist()
            start = 1  # after the pack's [CLS]
            for end, token in enumerate(ids):
                if token == sep and end > start:
                    n = min(end - start, limit)
                    texts.append([cls] + ids[start:start + n] + [sep])
                    student_rows.append(flat[b, start:start + n])
                    packs.append(b)
                if token == sep:
                    start = end + 1
        width = max(map(len, texts))
        teacher_ids = input_ids.new_zeros(len(texts), width)
        teacher_mask = input_ids.new_zeros(len(texts), width)
        for r, ids in enumerate(texts):
            teacher_ids[r, : len(ids)] = torch.tensor(ids)
            teacher_mask[r, : len(ids)] = 1
        teacher_flat = (teacher_mask.flatten().cumsum(0) - 1).view(teacher_mask.shape)
        teacher_rows = torch.cat([teacher_flat[r, 1: len(ids) - 1] for r, ids in enumerate(texts)])
        return teacher_ids, teacher_mask, torch.cat(student_rows), teacher_rows, torch.tensor(packs)


def pack_texts(texts: list[str], separator: str, max_tokens: int, rng) -> list[str]:
    """`texts` joined, in order, into packs of a length drawn log-uniformly from 256 tokens to `max_tokens`
    (judged by characters, about 4 a token), each text cut to 2,000 characters (about 500 tokens, what the
    teacher reads) and followed by `separator`: packed distillation's inputs."""
    packs, current, size = [], [], 0
    budget = 4 * math.exp(rng.uniform(math.log(256), math.log(max_tokens)))
    for text in texts:
        current.append(text[:2000] + " " + separator)
        size += min(len(text), 2000)
        if size >= budget:
            packs.append(" ".join(current))
            current, size = [], 0
            budget = 4 * math.exp(rng.uniform(math.log(256), math.log(max_tokens)))
    if current:
        packs.append(" ".join(current))
    return packs


def layer_distillation(student, teacher: str, teacher_layers: list[int], texts: list[str], pack_tokens: int,
                       seed: int) -> tuple[list[str], LayerDistillLoss]:
    """The layers loss of `student` against the teacher BERT at `teacher` (its layers `teacher_layers`, empty:
    the first ones), and the texts it reads: `texts` themselves, or packs of them (`pack_tokens`)."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(teacher).to(student.device)
    layers = teacher_layers or list(range(len(student[0].auto_model.layers)))
    if not pack_tokens:
        return texts, LayerDistillLoss(student, bert, layers)
    packs = pack_texts(texts, student.tokenizer.sep_token, pack_tokens, random.Random(seed))
    return packs, LayerDistillLoss(student, bert, layers, student.tokenizer.sep_token_id)


def train_distill(config: DistillConfig, texts: list[str] | None = None, callbacks: list | None = None):
    """Distils config.teacher into config.student; returns the student (also saved in output_dir/final).

    `callbacks`: extra transformers TrainerCallbacks (e.g. a time budget)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.modules import Dense

    from encoder import load_embedder
    from recipes.mlm import read_texts

    if config.loss not in ("mse", "similarity", "both", "layers"):
        raise ValueError(f"loss must be mse, similarity, both or layers, got {config.loss!r}")
    texts = texts if texts is not None else read_texts(config.data)
    if config.max_texts:
        texts = texts[: config.max_texts]
    if config.loss == "layers":
        return _train_layers(config, texts, callbacks)
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
                               callbacks=callbacks).train(resume_from_checkpoint=last_checkpoint(config))
    save_final(student, config)
    return student


def _train_layers(config: DistillConfig, texts: list[str], callbacks: list | None):
    """`loss: layers`: the teacher's BERT (a sentence-transformers folder or hub id whose root holds it)
    runs beside the student on every batch; nothing is cached."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer

    from encoder import load_embedder

    max_length = config.pack_tokens or config.max_length
    student = load_embedder(config.student, max_length=max_length, dtype=getattr(torch, config.dtype))
    texts, loss = layer_distillation(student, config.teacher, config.teacher_layers, texts, config.pack_tokens,
                                     config.seed)
    SentenceTransformerTrainer(model=student, args=trainer_arguments(config), train_dataset=Dataset.from_dict(
        {"text": texts}), loss=loss, callbacks=callbacks).train(resume_from_checkpoint=last_checkpoint(config))
    save_final(student, config)
    return student
