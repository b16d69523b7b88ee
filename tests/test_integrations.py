"""The LangChain and LlamaIndex retrievers, through the frameworks' own entry points, on a real index."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from llama_index.core import Settings
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle
from pydantic import ValidationError

from retriever import Retriever
from retriever.langchain import LangChainRetriever, add_documents
from retriever.llamaindex import LlamaIndexRetriever
from tests.conftest import make_corpus

ROOT = Path(__file__).resolve().parents[1]
# long enough that a text searched for itself comes first with the random tiny model
TEXTS = [t for t in make_corpus(120, 11) if len(t.split()) >= 15][:20]
# one per search mode, and a filter
OPTIONS = [{}, {"mode": "dense"}, {"mode": "lexical"}, {"fusion": "rrf"}, {"where": {"team": "ops"}}]


@pytest.fixture(scope="module")
def index(st_model_dir, tmp_path_factory) -> Retriever:
    index = Retriever.create(tmp_path_factory.mktemp("integrations") / "idx", st_model_dir)
    index.add([{"id": f"d{i}", "title": f"title {i}", "text": text, "team": ["ops", "dev"][i % 2], "year": 2000 + i}
               for i, text in enumerate(TEXTS)])
    return index


def expected(index: Retriever, query: str, k: int = 4, **options) -> list[tuple[str, float, str]]:
    return [(h.id, h.score, h.passage) for h in index.search(query, k=k, **options)]


# ---- LangChain ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options", OPTIONS)
def test_langchain_invoke_and_ainvoke_return_the_search_hits_in_order(index, options):
    retriever = LangChainRetriever(index=index, k=4, **options)
    for query in (TEXTS[3], TEXTS[8], "protein cell gene"):
        want = expected(index, query, **options)
        for docs in (retriever.invoke(query), asyncio.run(retriever.ainvoke(query))):
            assert [(d.id, d.metadata["score"], d.page_content) for d in docs] == want
    assert [[d.id for d in docs] for docs in retriever.batch([TEXTS[1], TEXTS[2]])] == \
        [[i for i, _, _ in expected(index, q, **options)] for q in (TEXTS[1], TEXTS[2])]


def test_langchain_documents_carry_the_hit_and_the_document_metadata(index):
    top = LangChainRetriever(index=index, k=3).invoke(TEXTS[5])[0]
    assert top.id == "d5" and top.page_content == TEXTS[5]
    assert top.metadata == {"team": "dev", "year": 2005, "title": "title 5", "score": top.metadata["score"],
                            "rank": 1, "span": [0, len(TEXTS[5])]}
    assert LangChainRetriever(index=index, page_content="text").invoke(TEXTS[5])[0].page_content == TEXTS[5]
    with pytest.raises(ValidationError, match="page_content"):
        LangChainRetriever(index=index, page_content="title")
    with pytest.raises(ValueError, match="no document has a metadata field 'colour'"):
        LangChainRetriever(index=index, where={"colour": "red"}).invoke("x")


def test_langchain_opens_an_index_folder_on_first_use(index):
    retriever = LangChainRetriever(index=str(index.directory), k=3)
    assert [d.id for d in retriever.invoke(TEXTS[7])] == [i for i, _, _ in expected(index, TEXTS[7], k=3)]


def test_add_documents_maps_langchain_documents_and_keeps_their_source(st_model_dir, tmp_path):
    index = Retriever.create(tmp_path / "idx", st_model_dir)
    report = add_documents(index, [
        Document(id="web1", page_content=TEXTS[0], metadata={"title": "A page", "source": "https://example.org/a"}),
        Document(page_content=TEXTS[1], metadata={"lang": "en"}),
    ])
    assert report.added[0] == "web1" and len(report.added) == 2
    first, second = LangChainRetriever(index=index, k=2).invoke(TEXTS[0])
    assert first.id == "web1" and first.metadata["title"] == "A page"
    assert first.metadata["source"] == "https://example.org/a", "a document's own source stays"
    assert second.metadata["lang"] == "en" and second.id == report.added[1]


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.metadata['title']}] {d.page_content}" for d in docs)


def test_langchain_chain_puts_the_passages_into_the_prompt(index):
    retriever = LangChainRetriever(index=index, k=2)
    assert (retriever | RunnableLambda(format_docs)).invoke(TEXTS[9]).startswith(f"[title 9] {TEXTS[9]}\n\n")
    prompt = ChatPromptTemplate.from_template("Answer from the context.\n{context}\nQuestion: {question}")
    chain = {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()} | prompt
    for value in (chain.invoke(TEXTS[9]), asyncio.run(chain.ainvoke(TEXTS[9]))):
        message = value.to_messages()[0].content
        assert f"[title 9] {TEXTS[9]}" in message and message.endswith(f"Question: {TEXTS[9]}")


# ---- LlamaIndex --------------------------------------------------------------------------------

@pytest.mark.parametrize("options", OPTIONS)
def test_llamaindex_retrieve_and_aretrieve_return_the_search_hits_in_order(index, options):
    retriever = LlamaIndexRetriever(index, k=4, **options)
    for query in (TEXTS[3], TEXTS[8], "protein cell gene"):
        want = expected(index, query, **options)
        for nodes in (retriever.retrieve(query), asyncio.run(retriever.aretrieve(query)),
                      retriever.retrieve(QueryBundle(query))):
            assert [(n.node.node_id, n.score, n.node.get_content()) for n in nodes] == want


def test_llamaindex_nodes_carry_the_hit_and_the_document_metadata(index):
    top = LlamaIndexRetriever(str(index.directory), k=3).retrieve(TEXTS[4])[0]
    assert top.node.node_id == "d4" and top.node.text == TEXTS[4]
    assert top.node.metadata == {"team": "ops", "year": 2004, "title": "title 4", "rank": 1,
                                 "span": [0, len(TEXTS[4])]}
    shown = top.node.get_content(metadata_mode="llm")
    assert "title: title 4" in shown and "span" not in shown and "rank" not in shown
    assert LlamaIndexRetriever(index, page_content="text").retrieve(TEXTS[4])[0].node.text == TEXTS[4]
    with pytest.raises(ValueError, match="page_content 'title': expected one of passage, text"):
        LlamaIndexRetriever(index, page_content="title")


def test_llamaindex_query_engine_without_an_llm_returns_the_retrieved_context(index):
    """LlamaIndex's synthesizers all hold an LLM; `Settings.llm = None` makes it the MockLLM
    placeholder, and "context_only" answers with the retrieved passages without calling it."""
    Settings.llm = None
    engine = RetrieverQueryEngine.from_args(LlamaIndexRetriever(index, k=3), response_mode="context_only")
    want = expected(index, TEXTS[6], k=3)
    for response in (engine.query(TEXTS[6]), asyncio.run(engine.aquery(TEXTS[6]))):
        assert [n.node.node_id for n in response.source_nodes] == [i for i, _, _ in want]
        assert all(passage in str(response) for _, _, passage in want)


# ---- the README's snippets ---------------------------------------------------------------------

def readme_snippet(section: str) -> str:
    """The first Python block of a README section, as written."""
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"\n### {section}\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("section, last_line", [("LangChain", "'title': 'Disk'"), ("LlamaIndex", "disk")])
def test_readme_snippet_runs_as_written(section, last_line, tmp_path):
    """Each snippet, with the shipped model, in a new folder: the logs passage first, the disk document last."""
    result = subprocess.run([sys.executable, "-c", readme_snippet(section)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                         "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Rotate the logs weekly with logrotate and keep four weeks." and last_line in lines[-1], lines
