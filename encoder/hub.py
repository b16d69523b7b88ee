"""Where a model comes from: a local folder, or a Hugging Face hub id downloaded to the hub cache.

The bottom of the encoder package: it imports nothing of ours, so the config, the checkpoint
reader and the sentence-transformers layout reader all resolve names and fail the same way.
"""

from __future__ import annotations

import os
from pathlib import Path


class CheckpointError(ValueError):
    """A model or checkpoint that cannot be loaded: the message says which file or keys are at fault."""


def resolve_folder(name_or_path: str | Path, allow_patterns: list[str], *, kind: str = "model",
                   revision: str | None = None) -> Path:
    """A local folder as it is, or a hub id downloaded (only the files matching `allow_patterns`).

    `kind` names what is looked for in the error messages ("checkpoint", "model").
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{path}: expected a {kind} folder, got a file")
    # a path-like name that does not exist is a typo, not a hub id: say so without a network round trip
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        raise CheckpointError(f"{name}: no such {kind} folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=allow_patterns))
    except Exception as e:  # network, auth, unknown repo: all end the same way for the caller
        raise CheckpointError(
            f"{name}: not a local folder, and fetching it from the Hugging Face hub failed ({type(e).__name__}: {e})"
        ) from None
