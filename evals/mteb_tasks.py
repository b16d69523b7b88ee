"""mteb (v2) integration: our models through mteb's encoder protocol, our synthetic tasks as mteb tasks."""

from __future__ import annotations

from typing import Any

from evals.longctx import generate
from retriever.beir import BeirDataset, load_beir
from retriever.documents import embedding_input


def mteb_encoder(model):
    """mteb's SentenceTransformer wrapper around one of our models: it calls encode_query and
    encode_document on whole splits, so our token-budget batching and prompts apply."""
    from mteb.models import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(model)


def _split_data(dataset: BeirDataset):
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    return RetrievalSplitData(
        # the text the index embeds, whole: mteb would join a separate title with a space instead
        corpus=Dataset.from_list([{"id": i, "text": embedding_input(d), "title": ""}
                                  for i, d in dataset.corpus.items()]),
        queries=Dataset.from_list([{"id": i, "text": t} for i, t in dataset.queries.items()]),
        relevant_docs=dataset.qrels,
        top_ranked=None,
    )


def load_local_copy(task, directory) -> None:
    """Fills an mteb retrieval task from a local BEIR-layout copy of its data instead of the hub."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    if not isinstance(task, AbsTaskRetrieval):
        raise ValueError(f"{task.metadata.name}: local copies are supported for retrieval tasks only")
    task.dataset = {"default": {split: _split_data(load_beir(directory, split)) for split in task.eval_splits}}
    task.data_loaded = True


def longctx_mteb_task(task: str, tokenizer, length: int, num_docs: int = 50, seed: int = 0):
    """A generated passkey/needle set (see evals.longctx) as an mteb retrieval task, scored by nDCG@1."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    dataset = generate(task, tokenizer, length, num_docs=num_docs, seed=seed)
    name = f"Synthetic{task.capitalize()}{length}"

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = {"default": {"test": _split_data(dataset)}}
        self.data_loaded = True

    metadata = TaskMetadata(
        name=name,
        type="Retrieval",
        description=f"LongEmbed-style synthetic {task} retrieval, {num_docs} documents of {length} tokens, "
                    f"generated offline (seed {seed}).",
        reference="https://arxiv.org/abs/2404.12096",
        dataset={"path": f"local/{name}", "revision": f"seed-{seed}"},
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_1",
        date=("2026-01-01", "2026-01-01"),
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        dialect=[],
        sample_creation="created",
        bibtex_citation="",
    )
    task_class = type(name, (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data})
    return task_class()
