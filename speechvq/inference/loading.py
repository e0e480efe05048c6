"""Loading a model: from a file, or a shipped model by name (DAC's tag table, EnCodec's hashes).

A name maps to a file in this package folder (`speechvq/pretrained/`,
installed with the package as package data, so a wheel or a `pip install .`
carries it; or under `$SPEECHVQ_PRETRAINED_DIR`) and its sha256, checked on
first use so a damaged or stale file is caught with a clear message.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from speechvq.errors import SpeechVQError

# name -> (file name, sha256). The first entry is the default model.
REGISTRY: dict[str, tuple[str, str]] = {
    # See speechvq/pretrained/README.md (the model card).
    # The default since 0.12.0: a speaker encoder (any voice; `--target-wav`, and
    # `compress` keeps the input's own voice), with its own prior. See the model card.
    "small-spk": (
        "speechvq-small-spk.safetensors",
        "223a9605052ce71814d886d5fc2b6668cd4551a317bde607f64b4e008b8a395d",
    ),
    # The default up to 0.11: the voices of its 238 training speakers only.
    "small": (
        "speechvq-small.safetensors",
        "d0f89f8cde346315f8208bfc56c598aca8c7142a1a96314f77301e2fed3e85f8",
    ),
    # Experimental: every network causal, so it streams (16 ms algorithmic latency;
    # `compress --stream`, `speechvq stream`), with its packet code. See the model card.
    "small-stream": (
        "speechvq-small-stream.safetensors",
        "5bfa00b95d4928af1129904c3e00271f47ffc039dd4f02d40cb88bdd1e86a892",
    ),
    # Experimental: small-stream with the speaker encoder, so a stream decodes in the
    # voice of any recording (a live voice changer to anyone). See the model card.
    "small-stream-spk": (
        "speechvq-small-stream-spk.safetensors",
        "eb5f551ab1661ba1bfdbf7206579f011a5a20c45b6a74fd33763cbc1a674f75b",
    ),
}

DEFAULT_MODEL = next(iter(REGISTRY), None)


def pretrained_dir() -> Path:
    env = os.environ.get("SPEECHVQ_PRETRAINED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


_verified: set[Path] = set()


def resolve(model: str | os.PathLike | None) -> Path:
    """A model path from a path or a shipped model's name; None means the default model."""
    if model is None:
        if DEFAULT_MODEL is None:
            raise SpeechVQError("no --model given and no pretrained model is shipped yet")
        model = DEFAULT_MODEL
    path = Path(model)
    if path.exists() or str(model) not in REGISTRY:
        return path
    filename, sha256 = REGISTRY[str(model)]
    path = pretrained_dir() / filename
    if not path.is_file():
        raise SpeechVQError(f"pretrained model {model!r}: {path} is missing")
    if path not in _verified:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise SpeechVQError(f"pretrained model {model!r}: {path} fails its sha256 check")
        _verified.add(path)
    return path


def load(model: str | os.PathLike | None = None, device: str = "cpu") -> Any:
    """A `SpeechVQ` from a model file or a shipped model's name (None: the default model)."""
    from speechvq.models.model import SpeechVQ

    return SpeechVQ.from_file(resolve(model), device)
