"""Checkpoints: written atomically, read with `weights_only=True` (no code runs on load)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from speechvq.errors import SpeechVQError


def save_checkpoint(path: Path, model, optimizer, step: int, cfg: Any, extra: dict) -> None:
    from speechvq.files import atomic_output

    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "model_config": json.dumps(model.config.to_dict()),
        "train_config": json.dumps(dataclasses.asdict(cfg)),
        "elapsed": float(extra.get("elapsed", 0.0)),
        "task": extra.get("task", {}),  # the task's own state (`Task.extra_state`)
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def restore(state: dict | None, model, optimizer) -> tuple[int, float]:
    """Load a checkpoint's weights, optimiser and torch RNG; returns (step, elapsed seconds)."""
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"])


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SpeechVQError(f"{path}: unreadable checkpoint ({exc})") from None
