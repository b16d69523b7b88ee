"""Encoder-based search: index documents into FAISS and search them (CLI `retriever`).

    from retriever import Retriever
    index = Retriever.create("my-index")          # the default model; or model="nomic-ai/modernbert-embed-base"
    index.add([{"id": "a", "title": "...", "text": "..."}, "a plain string"])
    index.search("what is late chunking?", k=5)   # [Hit(rank, id, score, title, text, passage, span, ...)]
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modernbert-retriever")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

# the public API and the module that holds each name, imported on first use: `retriever --version`
# and the CLI's start need no torch or faiss
_API = {
    "Retriever": "index", "Hit": "index", "UpdateReport": "index", "IndexManifest": "manifest",
    "RetrieverError": "errors", "Document": "documents", "Chunking": "embedding",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"retriever.{_API[name]}"), name)
    raise AttributeError(f"module 'retriever' has no attribute {name!r}")


__all__ = sorted(_API)
