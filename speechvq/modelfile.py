"""The model file: safetensors weights with JSON metadata.

A file rebuilds its model alone (nanoGPT keeps `model_args` in the
checkpoint): it carries the format name and version, the package version,
the full `ModelConfig` (speaker table included) and the weights. safetensors
never runs code on load, unlike pickle-based `torch.load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from speechvq.errors import SpeechVQError

if TYPE_CHECKING:
    from speechvq.model import SpeechVQ

FORMAT = "speechvq-model"
FORMAT_VERSION = 1
# safetensors checks the header's structure but not the data: a flipped bit in a
# weight, or in a JSON string such as a speaker name, loads silently. This sha256
# over the weights and every other metadata entry catches both. Files written
# before it existed have none and are still read.
CHECKSUM_KEY = "sha256"


def save(model: SpeechVQ, path: str | os.PathLike, **extra: str) -> Path:
    """Write `model` to `path` atomically. `extra` adds string metadata (e.g. training info)."""
    from safetensors.torch import save_file

    import speechvq
    from speechvq.audio import atomic_output

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": speechvq.__version__,
        "config": json.dumps(model.config.to_dict()),
        **{k: str(v) for k, v in extra.items()},
    }
    if getattr(model, "prior", None) is not None:  # its weights are the `prior.*` tensors
        metadata["prior_config"] = json.dumps(model.prior.config.to_dict())
    metadata[CHECKSUM_KEY] = checksum(tensors, metadata)
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def checksum(tensors: dict, metadata: dict[str, str]) -> str:
    """sha256 hex of the tensors (names, dtypes, shapes, bytes) and the other metadata."""
    from speechvq.bitstream import model_hash

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
        raise SpeechVQError(f"{path}: not a speechvq model file ({_first_line(exc)})") from None
    if meta.get("format") != FORMAT:
        raise SpeechVQError(f"{path}: not a speechvq model file (no speechvq metadata)")
    version = meta.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise SpeechVQError(
            f"{path}: model file format version {version} is not supported "
            f"(this speechvq reads version {FORMAT_VERSION})"
        )
    return meta


def load(path: str | os.PathLike, device: str = "cpu") -> SpeechVQ:
    """Rebuild a `SpeechVQ` from a model file, or from the name of a shipped model."""
    from safetensors.torch import load_file

    from speechvq.config import ModelConfig
    from speechvq.model import SpeechVQ
    from speechvq.pretrained import resolve

    path = resolve(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, SpeechVQError) as exc:
        raise SpeechVQError(f"{path}: invalid model config ({_first_line(exc)})") from None
    try:
        tensors = load_file(str(path), device=device)
    except Exception as exc:
        raise SpeechVQError(f"{path}: corrupted model file ({_first_line(exc)})") from None
    if CHECKSUM_KEY in meta and checksum(tensors, meta) != meta[CHECKSUM_KEY]:
        raise SpeechVQError(
            f"{path}: corrupted model file (sha256 mismatch: weights or metadata changed)"
        )
    model = SpeechVQ(config)
    if "prior_config" in meta:
        from speechvq.prior import Prior, PriorConfig

        try:
            model.prior = Prior(PriorConfig.from_dict(json.loads(meta["prior_config"])))
        except (ValueError, TypeError, SpeechVQError) as exc:
            raise SpeechVQError(f"{path}: invalid prior config ({_first_line(exc)})") from None
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise SpeechVQError(
            f"{path}: weights do not match the config ({_first_line(exc)})"
        ) from None
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:3])
        raise SpeechVQError(f"{path}: weights do not match the config ({names} ...)")
    model.metadata = meta
    return model.to(device).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
