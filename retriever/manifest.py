"""`manifest.json`: what an index is (model and fingerprint, dimension, prompts, chunking, index
type), what it holds (counts), and which generation folder is current. Replacing it is the
commit point of every write."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retriever.commit import utc_now, write_atomic
from retriever.errors import IndexNotFoundError, RetrieverError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# The packages whose versions decide what an index's files hold, recorded with every write.
INDEX_PACKAGES = ("modernbert-retriever", "faiss-cpu", "faiss-gpu-cu12", "torch", "tokenizers", "bm25s")


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """{package: version} of those installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def _index_package_versions() -> dict[str, str]:
    return package_versions(INDEX_PACKAGES)


@dataclass
class IndexManifest:
    model: str  # as named: "default", a hub id, or a local folder (absolute)
    model_fingerprint: str
    dimension: int
    normalize: bool
    prompts: dict[str, str]
    max_length: int
    chunking: dict
    index_type: str
    generation: str = ""
    documents: int = 0
    chunks: int = 0
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    versions: dict = field(default_factory=_index_package_versions)
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, directory: Path) -> IndexManifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise IndexNotFoundError(f"{directory}: no index here (no {MANIFEST}); create one with `retriever index`")
        try:
            data = json.loads(path.read_text())
            manifest = cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise RetrieverError(f"{path}: not a manifest this version can read ({e})") from None
        if manifest.format_version != FORMAT_VERSION:
            raise RetrieverError(f"{path}: index format {manifest.format_version}, this version reads {FORMAT_VERSION}")
        return manifest

    def write(self, directory: Path) -> None:
        """Atomically: the commit point of every write."""
        write_atomic(directory / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    def updated_with(self, generation: str, documents: int, chunks: int) -> IndexManifest:
        """The manifest of the next generation: counts, time and versions of this write."""
        return IndexManifest(**{**asdict(self), "generation": generation, "documents": documents, "chunks": chunks,
                                "updated": utc_now(), "versions": _index_package_versions()})
