"""An index as a LangChain retriever (`pip install 'modernbert-retriever[langchain]'`).

    from retriever.langchain import LangChainRetriever, add_documents

    add_documents(index, docs)                       # LangChain Documents into a `Retriever`
    retriever = LangChainRetriever(index=index, k=4, where={"team": "ops"})   # or index="my-index": opened on first use
    retriever.invoke("rotate logs")                  # [Document(page_content=passage, metadata={..., "score": ...})]

Each hit is a `Document` whose `id` is the document's id, whose `page_content` is its best passage
(`page_content="text"`: the whole document), and whose `metadata` is the document's own metadata
with the index's facts on top: `title` and `source` where the index has them (so a `source` the
document brought, as LangChain's loaders set it, stays unless the document was indexed from a
file), then `score`, `rank` and `span` (the passage's characters in the text), always the hit's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from retriever.fusion import Fusion
from retriever.index import Hit, Retriever, UpdateReport


class LangChainRetriever(BaseRetriever):
    """`Retriever.search` behind LangChain's retriever interface: `invoke`, `ainvoke`, `batch`, chains."""

    index: Retriever | str | Path
    """The index, or its folder (opened on first use)."""
    k: int = 4
    """Documents per query (LangChain's usual retriever default)."""
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    """As `Retriever.search`: None is hybrid with the default fusion."""
    fusion: Fusion | str | None = None
    """Hybrid search's fusion, a `Fusion` or "NAME[:WEIGHT]"."""
    where: dict[str, Any] | None = None
    """A metadata filter (retriever/filters.py), applied inside the search."""
    page_content: Literal["passage", "text"] = "passage"
    """What a Document holds: the hit's best passage, or its whole text."""

    @cached_property
    def opened(self) -> Retriever:
        return self.index if isinstance(self.index, Retriever) else Retriever.open(self.index)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.opened.search(query, k=self.k, mode=self.mode, fusion=self.fusion, where=self.where)
        return [self._document(hit) for hit in hits]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        # the search blocks (encoder, FAISS, BM25): a worker thread runs it, never the event loop
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync())

    def _document(self, hit: Hit) -> Document:
        return Document(page_content=hit.passage if self.page_content == "passage" else hit.text, id=hit.id,
                        metadata={**hit.metadata_with_index_facts(), "score": hit.score, "rank": hit.rank,
                                  "span": list(hit.span)})


def add_documents(index: Retriever, documents: Iterable[Document]) -> UpdateReport:
    """Adds (or replaces, by id) LangChain Documents: `page_content` is the text, `id` the id (None: a
    digest of the text), `metadata` the metadata, its "title" the document's title (embedded with the
    text, and given back as `metadata["title"]`)."""
    records = []
    for document in documents:
        metadata = dict(document.metadata)
        records.append({"id": document.id, "text": document.page_content, "title": metadata.pop("title", ""),
                        "metadata": metadata})
    return index.add(records)
