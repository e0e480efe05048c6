"""The model file: safetensors weights with JSON metadata.

A file rebuilds its model alone (nanoGPT keeps `model_args` in the
checkpoint): it carries the format name and version, the package version,
the full `ModelConfig` (speaker table included) and the weights. safetensors
never runs code on load, unlike pickle-based `torch.load`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.version import __version__

FORMAT = "speechvq-model"
FORMAT_VERSION = 1
# safetensors checks the header's structure but not the data: a flipped bit in a
# weight, or in a JSON string such as a speaker name, loads silently. This sha256
# over the weights and every other metadata entry catches both. Files written
# before it existed have none and are still read.
CHECKSUM_KEY = "sha256"


@dataclass(frozen=True)
class ModelFile:
    """A model file's contents, checked: the configs, the weights and the metadata."""

    config: ModelConfig
    prior_config: Any  # the PriorConfig when the file holds a prior (`prior.*` tensors), else None
    tensors: dict[str, Any]  # name -> torch.Tensor
    metadata: dict[str, str]


def save(model: Any, path: str | os.PathLike, **extra: str) -> Path:
    """Write a `SpeechVQ` to `path` atomically. `extra` adds string metadata (training info)."""
    from safetensors.torch import save_file

    from speechvq.files import atomic_output

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "config": json.dumps(model.config.to_dict()),
        **{k: str(v) for k, v in extra.items()},
    }
    if model.prior is not None:  # its weights are the `prior.*` tensors
        metadata["prior_config"] = json.dumps(model.prior.config.to_dict())
    metadata[CHECKSUM_KEY] = checksum(tensors, metadata)
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def checksum(tensors: dict, metadata: dict[str, str]) -> str:
    """sha256 hex of the tensors (names, dtypes, shapes, bytes) and the other metadata."""
    return model_hash(tensors, {k: v for k, v in metadata.items() if k != CHECKSUM_KEY})


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The JSON metadata of a model file, validated; raises `SpeechVQError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory, not a model file")
    if not path.is_file():
        raise SpeechVQError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise SpeechVQError(f"{path}: not a speechvq model file ({first_line(exc)})") from None
    if meta.get("format") != FORMAT:
        raise SpeechVQError(f"{path}: not a speechvq model file (no speechvq metadata)")
    version = meta.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise SpeechVQError(
            f"{path}: model file format version {version} is not supported "
            f"(this speechvq reads version {FORMAT_VERSION})"
        )
    return meta


def read(path: str | os.PathLike, device: str = "cpu") -> ModelFile:
    """Read and check a model file; any problem raises `SpeechVQError` naming the file."""
    from safetensors.torch import load_file

    from speechvq.models.prior import PriorConfig

    path = Path(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, SpeechVQError) as exc:
        raise SpeechVQError(f"{path}: invalid model config ({first_line(exc)})") from None
    prior_config = None
    if "prior_config" in meta:
        try:
            prior_config = PriorConfig.from_dict(json.loads(meta["prior_config"]))
        except (ValueError, TypeError, SpeechVQError) as exc:
            raise SpeechVQError(f"{path}: invalid prior config ({first_line(exc)})") from None
    try:
        tensors = load_file(str(path), device=device)
    except Exception as exc:
        raise SpeechVQError(f"{path}: corrupted model file ({first_line(exc)})") from None
    if CHECKSUM_KEY in meta and checksum(tensors, meta) != meta[CHECKSUM_KEY]:
        raise SpeechVQError(
            f"{path}: corrupted model file (sha256 mismatch: weights or metadata changed)"
        )
    return ModelFile(config, prior_config, tensors, meta)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def model_hash(tensors: Mapping[str, Any], config_json: str | Mapping[str, Any]) -> str:
    """sha256 hex of a model's weights and config: any change to either changes it.

    Hashes, in sorted name order, each tensor's name, dtype, shape and
    little-endian bytes (torch tensors and NumPy arrays of the same values give
    the same hash), then the config (a dict is first written as sorted-key JSON).
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, data = _tensor_bytes(tensors[name])
        h.update(json.dumps([name, dtype, list(shape), len(data)]).encode() + b"\n")
        h.update(data)
    if not isinstance(config_json, str):
        config_json = json.dumps(config_json, sort_keys=True, separators=(",", ":"))
    h.update(b"config\n" + config_json.encode("utf-8"))
    return h.hexdigest()


def _tensor_bytes(x: Any) -> tuple[str, tuple[int, ...], bytes]:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        import torch

        t = x.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        # A uint8 view handles every dtype, bfloat16 included (NumPy has none).
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return dtype, tuple(t.shape), data
    a = np.asarray(x)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.dtype.name, a.shape, np.ascontiguousarray(a).tobytes()
