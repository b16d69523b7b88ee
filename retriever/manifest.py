"""`manifest.json`: what an index is (model and fingerprint, dimension, prompts, chunking, index
type), what it holds (counts), its commit (`generation`) and the live segments. Replacing it is
the commit point of every write."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retriever.commit import utc_now, write_atomic
from retriever.errors import IndexNotFoundError, RetrieverError

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: segments and one versioned store; 1: a folder per generation (upgraded on open)
UPGRADABLE_VERSIONS = (1,)
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


@functools.cache  # read once per process: importlib.metadata costs ms per package, and commits are frequent
def _installed_index_packages() -> tuple[tuple[str, str], ...]:
    return tuple(package_versions(INDEX_PACKAGES).items())


def _index_package_versions() -> dict[str, str]:
    return dict(_installed_index_packages())


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
    dtype: str = "float32"  # the encoder's, for the index's life; indexes made before it was recorded: float32
    generation: str = ""  # the commit: "gen-000007" is the 7th write
    documents: int = 0
    chunks: int = 0
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    versions: dict = field(default_factory=_index_package_versions)
    format_version: int = FORMAT_VERSION
    segments: list[dict] = field(default_factory=list)  # SegmentInfo.to_dict() of each live segment

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
        if manifest.format_version != FORMAT_VERSION and manifest.format_version not in UPGRADABLE_VERSIONS:
            raise RetrieverError(f"{path}: index format {manifest.format_version}, this version reads "
                                 f"{FORMAT_VERSION} (and upgrades {', '.join(map(str, UPGRADABLE_VERSIONS))})")
        return manifest

    @property
    def commit(self) -> int:
        return int(self.generation.removeprefix("gen-") or 0)

    def write(self, directory: Path) -> None:
        """Atomically: the commit point of every write."""
        write_atomic(directory / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    def updated_with(self, documents: int, chunks: int, segments: list[dict]) -> IndexManifest:
        """The manifest of the next commit: counts, segments, time and versions of this write."""
        return IndexManifest(**{**asdict(self), "generation": commit_name(self.commit + 1), "documents": documents,
                                "chunks": chunks, "segments": segments, "updated": utc_now(),
                                "versions": _index_package_versions(), "format_version": FORMAT_VERSION})


def manifest_stamp(directory: Path) -> tuple[int, ...]:
    """What changes whenever a commit renames a new manifest into place: a new inode, new times."""
    status = (directory / MANIFEST).stat()
    return status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_size


def commit_name(commit: int) -> str:
    return f"gen-{commit:06d}"
