"""Training configs from YAML: one reader for every trainer's dataclass."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from speechvq.errors import SpeechVQError


def config_from_yaml(cls: type, path: str | os.PathLike | None, **overrides: Any) -> Any:
    """A config dataclass `cls` from a YAML file of its fields, plus `overrides`.

    Shared by `TrainConfig` and the prior's `PriorTrainConfig`: an unreadable
    file, an unknown option or a value of the wrong kind is a one-line error
    here rather than a failure deep inside training.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise SpeechVQError(f"{path}: cannot read training config ({reason})") from None
        if not isinstance(data, dict):
            raise SpeechVQError(f"{path}: a training config is a YAML mapping of options")
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        unknown_names = ", ".join(sorted(map(str, unknown)))
        raise SpeechVQError(f"{path}: unknown training options {unknown_names}")
    for f in dataclasses.fields(cls):  # a wrong type would only fail deep inside training
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in data and not _same_kind(data[f.name], default):
            raise SpeechVQError(
                f"{path}: training option {f.name} should be like {default!r}, got {data[f.name]!r}"
            )
    return cls(**data)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a config value has its default's type (an int may stand for a float)."""
    if default is None:  # optional booleans, e.g. `pitch`
        return value is None or isinstance(value, bool)
    if isinstance(default, float):
        return type(value) in (int, float)
    return type(value) is type(default)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out
