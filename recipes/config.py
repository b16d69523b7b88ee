"""Recipe configs: dataclasses whose every key has a default and a one-line explanation,
read from YAML or TOML files."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any


def option(default, help: str):
    """A config key: its default and what it does (shown by `--show-config`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class RecipeConfig:
    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None):
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
        values.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def describe(cls) -> str:
        """Every key with its default and meaning, as config-file lines."""
        lines = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"{f.name} = {default!r}  # {f.metadata['help']}")
        return "\n".join(lines)
