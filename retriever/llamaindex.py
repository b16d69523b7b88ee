"""An index as a LlamaIndex retriever (`pip install 'modernbert-retriever[llamaindex]'`).

    from retriever.llamaindex import LlamaIndexRetriever

    retriever = LlamaIndexRetriever(index, k=4, where={"team": "ops"})   # or "my-index": opened on first use
    retriever.retrieve("rotate logs")          # [NodeWithScore(node=TextNode(text=passage, ...), score=...)]
    RetrieverQueryEngine.from_args(retriever, ...)                      # or any other LlamaIndex component

Each hit is a `NodeWithScore`: its score is the hit's, its `TextNode`'s `id_` the document's id,
its text the document's best passage (`page_content="text"`: the whole document), and its
metadata the document's own metadata with the index's facts on top: `title` and `source` where
the index has them, then `rank` and `span` (the passage's characters in the text), always the
hit's. `rank` and `span` are left out of what LlamaIndex shows an LLM or an embedding model.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from pathlib import Path
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from retriever.fusion import Fusion
from retriever.index import Hit, Retriever

PAGE_CONTENT = ("passage", "text")
# bookkeeping of the search, not content: kept from the prompts LlamaIndex builds around a node
_HIDDEN_METADATA = ["rank", "span"]


class LlamaIndexRetriever(BaseRetriever):
    """`Retriever.search` behind LlamaIndex's retriever interface: `retrieve`, `aretrieve`, query engines."""

    def __init__(self, index: Retriever | str | Path, k: int = 4, mode: str | None = None,
                 fusion: Fusion | str | None = None, where: dict[str, Any] | None = None,
                 page_content: str = "passage", **kwargs: Any):
        """`index`: a `Retriever`, or its folder (opened on first use); `k`, `mode`, `fusion`, `where` as
        `Retriever.search`; `page_content`: "passage" (the best passage) or "text" (the whole
        document) as the node's text; `kwargs`: LlamaIndex's own (callback_manager, verbose, ...)."""
        if page_content not in PAGE_CONTENT:
            raise ValueError(f"page_content {page_content!r}: expected one of {', '.join(PAGE_CONTENT)}")
        self.index = index
        self.k, self.mode, self.fusion, self.where, self.page_content = k, mode, fusion, where, page_content
        super().__init__(**kwargs)

    @cached_property
    def opened(self) -> Retriever:
        return self.index if isinstance(self.index, Retriever) else Retriever.open(self.index)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.opened.search(query_bundle.query_str, k=self.k, mode=self.mode, fusion=self.fusion,
                                  where=self.where)
        return [self._node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # the base class would run the blocking search on the event loop; a worker thread runs it
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _node(self, hit: Hit) -> NodeWithScore:
        node = TextNode(text=hit.passage if self.page_content == "passage" else hit.text, id_=hit.id,
                        metadata={**hit.metadata_with_index_facts(), "rank": hit.rank, "span": list(hit.span)},
                        excluded_llm_metadata_keys=_HIDDEN_METADATA, excluded_embed_metadata_keys=_HIDDEN_METADATA)
        return NodeWithScore(node=node, score=hit.score)
