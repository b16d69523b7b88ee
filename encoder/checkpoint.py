"""Hugging Face checkpoints: find them, read their tensors safely, check keys strictly, write them.

A checkpoint is a folder with `config.json` and weights in one of: `model.safetensors`,
`model.safetensors.index.json` (sharded), or `pytorch_model.bin` / its index (read with
`torch.load(weights_only=True)` only: arbitrary pickles are refused, never executed).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from encoder.attention import check_backend
from encoder.config import ModernBertConfig
from encoder.hub import CheckpointError, resolve_folder

if TYPE_CHECKING:
    from encoder.model import ModernBertPreTrainedModel

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)
BASE_PREFIX = "model."  # transformers' base_model_prefix for ModernBERT task models


def resolve_checkpoint(name_or_path: str | Path, *, config_only: bool = False, revision: str | None = None) -> Path:
    """A local checkpoint folder, or a hub id downloaded (config and weights only) to the hub cache."""
    patterns = ["config.json"] if config_only else ["config.json", "*.safetensors", SAFETENSORS_INDEX]
    return resolve_folder(name_or_path, patterns, kind="checkpoint", revision=revision)


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / SAFETENSORS).is_file():
        return load_file(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        return _read_sharded(directory, SAFETENSORS_INDEX, load_file)
    if (directory / PICKLE).is_file():
        return _read_pickle(directory / PICKLE)
    if (directory / PICKLE_INDEX).is_file():
        return _read_sharded(directory, PICKLE_INDEX, _read_pickle)
    raise CheckpointError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def _read_sharded(directory: Path, index_name: str, read_shard) -> dict[str, torch.Tensor]:
    index_path = directory / index_name
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a valid shard index ({e})") from None
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = directory / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: names shard {shard}, which does not exist")
        state_dict.update(read_shard(shard_path))
    return state_dict


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: holds pickled Python objects besides tensors; refusing to unpickle it "
            f"(only weights_only=True loading is allowed). Convert it to safetensors with a tool you trust. "
            f"({str(e).splitlines()[0]})"
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return state_dict


def _match_prefix(state_dict: dict[str, torch.Tensor], is_base_model: bool) -> dict[str, torch.Tensor]:
    """A base model reads a task checkpoint by stripping `model.` and leaving the head, as transformers does."""
    has_prefix = any(k.startswith(BASE_PREFIX) for k in state_dict)
    if is_base_model and has_prefix:
        return {k[len(BASE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(BASE_PREFIX)}
    return state_dict


def _format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_keys(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    tied = model.tied_weights()
    expected = {k: v.shape for k, v in model.state_dict().items() if k not in tied}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - set(tied))
    wrong_shape = sorted(
        f"{k} {tuple(state_dict[k].shape)} != expected {tuple(shape)}"
        for k, shape in expected.items()
        if k in state_dict and state_dict[k].shape != shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_format_keys(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_format_keys(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Module constructors skip their weight initialisation: loading replaces the weights, and on
    meta tensors torch's normal_ runs its reference implementation, which imports torch._dynamo
    (a second of a cold `retriever search`)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "trunc_normal_", "zeros_", "ones_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def load_checkpoint_into(
    cls: type[ModernBertPreTrainedModel],
    name_or_path: str | Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attn_backend: str | None,
    revision: str | None,
) -> ModernBertPreTrainedModel:
    directory = resolve_checkpoint(name_or_path, revision=revision)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    config = ModernBertConfig.from_json_file(config_path)
    with torch.device("meta"), _no_init():
        model = cls(config)
    state_dict = _match_prefix(read_state_dict(directory), is_base_model=not hasattr(model, "model"))
    check_keys(model, state_dict, str(directory))
    for key in model.tied_weights():
        state_dict.pop(key, None)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    model.to(device)
    model.eval()
    if attn_backend is not None:
        check_backend(attn_backend, device, dtype)
    model.attn_backend = attn_backend
    return model


def save_checkpoint(model: ModernBertPreTrainedModel, directory: str | Path) -> None:
    """config.json + model.safetensors; the weights file is written aside and renamed into place."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tied = model.tied_weights()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied}
    dtype_name = str(model.dtype).removeprefix("torch.")
    model.config.extra.update({"dtype": dtype_name, "torch_dtype": dtype_name})
    model.config.save_pretrained(directory, architectures=[type(model).__name__])
    tmp = directory / (SAFETENSORS + ".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, directory / SAFETENSORS)
