"""Contrastive fine-tuning: sentence-transformers' trainer and losses on our embedder.

(query, positive[, negative]) pairs -> optional hard negatives mined with the model itself ->
MultipleNegativesRankingLoss (or its cached, GradCache variant for large batches in small
memory), optionally inside MatryoshkaLoss, and optionally beside packs of texts distilled layer by
layer from a teacher (`pack_tokens`) -> IR evaluation on a BEIR dev split -> the standard
sentence-transformers layout in output_dir/final.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from recipes.config import RecipeConfig, last_checkpoint, option, save_final, trainer_arguments

if TYPE_CHECKING:
    from datasets import DatasetDict


@dataclass
class ContrastiveConfig(RecipeConfig):
    model: str = option("", "Model to fine-tune: sentence-transformers layout or bare ModernBERT checkpoint.")
    data: list[str] = option([], "Pairs: .jsonl(.gz) files with query/positive[/negative] fields, or BEIR folders "
                                   "(their train qrels).")
    output_dir: str = option("runs/contrastive", "Trainer checkpoints, and the final model in output_dir/final.")
    loss: str = option("mnrl", "mnrl (in-batch negatives) or cached_mnrl (GradCache: large batches, small memory).")
    mini_batch_size: int = option(16, "cached_mnrl: texts per forward/backward chunk.")
    matryoshka_dims: list[int] = option([], "Embedding sizes trained jointly (MatryoshkaLoss); empty: off.")
    hard_negatives: int = option(0, "Negatives mined per query from the positives, with the model itself.")
    hard_negative_skip: int = option(3, "Top-ranked non-positive passages skipped when mining (likely unlabelled "
                                         "positives).")
    query_prompt: str = option("", "Prefix for queries; empty: the model's 'query' prompt, if any.")
    document_prompt: str = option("", "Prefix for passages; empty: the model's 'document' prompt, if any.")
    teacher: str = option("", "pack_tokens: the teacher BERT (a sentence-transformers folder or hub id whose root "
                              "holds it) the packs are distilled from.")
    teacher_layers: list[int] = option([], "pack_tokens: the teacher layer each model layer stands for (empty: the "
                                           "first ones).")
    pack_tokens: int = option(0, "The mix also holds packs of distillation texts of 256 to this many tokens, "
                                 "trained with recipes/distill.py's layers loss against the teacher (each token's "
                                 "state in its own text), so that what packed distillation taught long inputs holds "
                                 "while the pairs teach retrieval. 0: pairs only.")
    pack_share: float = option(0.25, "pack_tokens: the share of steps that are packs.")
    max_length: int = option(512, "Tokens per text.")
    batch_size: int = option(32, "Pairs per step (in-batch negatives).")
    epochs: float = option(1.0, "Passes over the pairs.")
    max_steps: int = option(-1, "Steps in all; -1: set by epochs.")
    lr: float = option(2e-5, "Peak learning rate (linear warmup then decay).")
    warmup_ratio: float = option(0.05, "Share of steps spent warming the learning rate up.")
    eval_data: str = option("", "BEIR folder for the IR evaluator; empty: no evaluation.")
    eval_split: str = option("dev", "qrels split of eval_data.")
    max_pairs: int = option(0, "Use at most this many pairs (0: all).")
    seed: int = option(0, "Seed of data order and mining.")
    dataloader_workers: int = option(0, "Processes that fetch and tokenize batches (0: the training process). "
                                        "On a GPU, tokenizing long texts can take longer than the step itself.")
    dtype: str = option("float32", "Weights while training: float32 (also on a GPU: the optimizer updates them in "
                                   "place) or bfloat16.")
    save_steps: int = option(0, "Keep a checkpoint every this many steps, and resume from it when rerun "
                                "(0: no checkpoints).")


def read_pairs(sources: list[str], max_pairs: int = 0) -> list[dict[str, str]]:
    """(query, positive[, negative]) dicts from JSONL files (gzip too) or BEIR folders' train qrels."""
    import gzip

    from retriever.beir import load_beir
    from retriever.documents import embedding_input

    pairs: list[dict[str, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            dataset = load_beir(path, "train")
            pairs += [{"query": dataset.queries[q], "positive": embedding_input(dataset.corpus[d])}
                      for q, docs in dataset.qrels.items() for d, rel in docs.items() if rel > 0]
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    pair = {"query": row["query"], "positive": row["positive"]}
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{line_number}: expected a JSON object with 'query' and 'positive'") from None
                if row.get("negative"):
                    pair["negative"] = row["negative"]
                pairs.append(pair)
    if not pairs:
        raise ValueError(f"no pairs found in {sources}")
    if max_pairs:
        pairs = pairs[:max_pairs]
    return pairs


def mine_hard_negatives(model, pairs: list[dict[str, str]], count: int, skip: int,
                        query_prompt: str | None, document_prompt: str | None) -> list[dict[str, str]]:
    """Adds `negative_1..count`: passages ranked just below the top `skip` non-positives for each query."""
    passages = sorted({p["positive"] for p in pairs})
    documents = model.encode(passages, prompt=document_prompt, convert_to_tensor=True, normalize_embeddings=True)
    queries = model.encode([p["query"] for p in pairs], prompt=query_prompt, convert_to_tensor=True,
                           normalize_embeddings=True)
    ranked = torch.topk(queries @ documents.T, min(len(passages), count + skip + 1), dim=1).indices.tolist()
    mined = []
    for pair, candidates in zip(pairs, ranked):
        negatives = [passages[j] for j in candidates if passages[j] != pair["positive"]][skip:skip + count]
        if len(negatives) == count:
            mined.append({"query": pair["query"], "positive": pair["positive"],
                          **{f"negative_{k + 1}": n for k, n in enumerate(negatives)}})
    return mined


def pair_datasets(pairs: list[dict[str, str]]) -> DatasetDict:
    """The pairs as one dataset per set of columns, in order of first appearance (pairs, triplets with a
    negative, ...): a batch comes from one of them, as MNRL needs the same columns in every row."""
    from datasets import Dataset, DatasetDict

    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(tuple(pair), []).append(pair)
    return DatasetDict({"_".join(columns): Dataset.from_dict({c: [p[c] for p in rows] for c in columns})
                        for columns, rows in groups.items()})


def with_packs(train_dataset: DatasetDict, packs: list[str], share: float) -> DatasetDict:
    """The mix plus a `packs` dataset, its rows repeated or cut so that about `share` of the batches (drawn in
    proportion to the datasets' sizes) are packs."""
    from datasets import Dataset, DatasetDict

    rows = sum(len(dataset) for dataset in train_dataset.values())
    count = round(rows * share / (1 - share))
    return DatasetDict({**train_dataset,
                        "packs": Dataset.from_dict({"text": [packs[i % len(packs)] for i in range(count)]})})


def train_contrastive(config: ContrastiveConfig, pairs: list[dict[str, str]] | None = None,
                      callbacks: list | None = None, texts: list[str] | None = None):
    """Fine-tunes config.model on the pairs; returns the trained model (also saved in output_dir/final).

    `callbacks`: extra transformers TrainerCallbacks (e.g. a time budget). `texts`: what config.pack_tokens
    packs (recipes/distill.py's distillation texts)."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss, MatryoshkaLoss, MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers, MultiDatasetBatchSamplers

    from encoder import load_embedder
    from recipes.distill import layer_distillation
    from retriever.beir import load_beir
    from retriever.documents import embedding_input

    if config.loss not in ("mnrl", "cached_mnrl"):
        raise ValueError(f"loss must be mnrl or cached_mnrl, got {config.loss!r}")
    if config.pack_tokens and not (texts and config.teacher and 0 < config.pack_share < 1):
        raise ValueError("pack_tokens needs texts to pack, a teacher and a pack_share between 0 and 1")
    model = load_embedder(config.model, max_length=config.max_length, dtype=getattr(torch, config.dtype))
    query_prompt = config.query_prompt or model.prompts.get("query") or None
    document_prompt = config.document_prompt or model.prompts.get("document") or None
    pairs = pairs if pairs is not None else read_pairs(config.data, config.max_pairs)
    if config.hard_negatives:
        pairs = mine_hard_negatives(model, pairs, config.hard_negatives, config.hard_negative_skip,
                                    query_prompt, document_prompt)
    train_dataset = pair_datasets(pairs)
    columns = list(dict.fromkeys(c for dataset in train_dataset.values() for c in dataset.column_names))

    if config.loss == "cached_mnrl":
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model)
    if config.matryoshka_dims:
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=config.matryoshka_dims)
    if config.pack_tokens:
        packs, pack_loss = layer_distillation(model, config.teacher, config.teacher_layers, texts, config.pack_tokens,
                                              config.seed)
        loss = {**{name: loss for name in train_dataset}, "packs": pack_loss}  # a batch is one dataset's
        train_dataset = with_packs(train_dataset, packs, config.pack_share)
    elif len(train_dataset) == 1:
        train_dataset = next(iter(train_dataset.values()))

    evaluator = None
    if config.eval_data:
        dev = load_beir(config.eval_data, config.eval_split)
        evaluator = InformationRetrievalEvaluator(
            queries=dev.queries, corpus={d: embedding_input(doc) for d, doc in dev.corpus.items()},
            relevant_docs={q: {d for d, rel in docs.items() if rel > 0} for q, docs in dev.qrels.items()},
            name=f"{Path(config.eval_data).name}-{config.eval_split}",
            query_prompt=query_prompt, corpus_prompt=document_prompt, show_progress_bar=False,
        )
    prompts = {c: (query_prompt if c == "query" else document_prompt) for c in columns}
    args = trainer_arguments(
        config,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate text in a batch is a false negative
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,  # each row seen once an epoch
        prompts={c: p for c, p in prompts.items() if p},
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                         evaluator=evaluator, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=last_checkpoint(config))
    final = save_final(model, config)
    if evaluator is not None:
        (final / "eval_results.json").write_text(json.dumps(evaluator(model), indent=2))
    return model
