"""Encoder-based search: index documents into FAISS and search them (CLI `retriever`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modernbert-retriever")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
