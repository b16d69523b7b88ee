"""mteb (v2) integration: our models through mteb's encoder protocol, the index itself through its
search protocol (`IndexSearch`: what `retriever search` serves), our synthetic tasks as mteb tasks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from evals.longctx import generate
from retriever.beir import BeirDataset, load_beir
from retriever.documents import embedding_input


def mteb_encoder(model):
    """mteb's SentenceTransformer wrapper around one of our models: it calls encode_query and
    encode_document on whole splits, so our token-budget batching and prompts apply."""
    from mteb.models import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper(model)


class IndexSearch:
    """mteb's SearchProtocol over a `Retriever`: `index` writes a task split's corpus into a new index
    in a temporary folder (the model, its length and chunking as `retriever index` takes them),
    `search` asks it as `retriever search` does (mode and fusion), so mteb scores the chunking, BM25
    and fusion, not the bare encoder. The folder goes with `close` or the next `index`."""

    def __init__(self, model: str | Path | None, mode: str, fusion: str | None = None, max_length: int | None = None,
                 chunking=None, device: str | None = None):
        from mteb.models import ModelMeta

        from retriever.embedding import Chunking
        from retriever.index import search_settings

        self.model, self.max_length, self.device = model, max_length, device
        self.mode, self.fusion = search_settings(mode, fusion)
        self.chunking = chunking or Chunking()
        self.retriever = None
        self._folder: tempfile.TemporaryDirectory | None = None
        fused = f"-{str(self.fusion).replace(':', '')}" if self.fusion else ""
        self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
            name=f"modernbert-retriever/{Path(str(model or 'default')).name}-{self.mode}{fused}-{self.chunking.mode}",
            revision="index", loader=None))

    def index(self, corpus, *, task_metadata, hf_split: str, hf_subset: str, encode_kwargs: dict,
              num_proc: int | None = None, **kwargs: Any) -> None:
        from retriever.index import Retriever

        self.close()
        self._folder = tempfile.TemporaryDirectory(prefix="mteb-index-")
        self.retriever = Retriever.create(Path(self._folder.name) / "index", self.model, max_length=self.max_length,
                                          chunking=self.chunking, device=self.device)
        self.retriever.add([{"id": str(row["id"]), "title": row.get("title") or "", "text": row["text"]}
                            for row in corpus], show_progress=True)

    def search(self, queries, *, task_metadata, hf_split: str, hf_subset: str, top_k: int, encode_kwargs: dict,
               top_ranked: dict | None = None, num_proc: int | None = None,
               **kwargs: Any) -> dict[str, dict[str, float]]:
        if self.retriever is None:
            raise RuntimeError("IndexSearch.search before index: mteb indexes a split's corpus first")
        ids = [str(i) for i in queries["id"]]
        hits = self.retriever.search_batch(list(queries["text"]), k=top_k, mode=self.mode, fusion=self.fusion)
        return {qid: {hit.id: hit.score for hit in found} for qid, found in zip(ids, hits)}

    def close(self) -> None:
        if self.retriever is not None:
            self.retriever.close()
            self.retriever = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


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
