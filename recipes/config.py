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


def trainer_arguments(config, **extra):
    """sentence-transformers' training arguments from a recipe's shared keys (output_dir, epochs,
    max_steps, batch_size, lr, warmup_ratio, seed, dataloader_workers, save_steps); the recipe saves
    the final model itself. With save_steps, the trainer keeps its latest checkpoint (model,
    optimizer, scheduler, data position) in output_dir, and `last_checkpoint` finds it to resume."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    checkpoints = dict(save_strategy="steps", save_steps=config.save_steps, save_total_limit=1) \
        if config.save_steps else dict(save_strategy="no")
    return SentenceTransformerTrainingArguments(
        output_dir=config.output_dir, num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.lr, warmup_ratio=config.warmup_ratio,
        seed=config.seed, logging_steps=10, report_to="none", dataloader_num_workers=config.dataloader_workers,
        use_cpu=not torch.cuda.is_available(), **checkpoints, **extra,
    )


def last_checkpoint(config) -> str | None:
    """The trainer checkpoint a run with save_steps left in output_dir (None: start afresh)."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(config.output_dir)
    return get_last_checkpoint(str(output_dir)) if config.save_steps and output_dir.is_dir() else None


def save_final(model, config) -> Path:
    """The trained model in output_dir/final (standard layout), with the config that made it."""
    import json

    final = Path(config.output_dir) / "final"
    model.save(str(final))
    (final / "training_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return final
