"""The training loop every trainer shares."""

from __future__ import annotations

import csv
import signal
from pathlib import Path
from typing import Any


def lr_at(step: int, cfg: Any) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop checkpoints and returns after the current step."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.stop = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class CsvLog:
    """Appends rows to a CSV a user can plot; new columns start a new header line."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **row: Any) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["key", "value", "step"])
            step = row.get("step")
            for k, v in row.items():
                if k != "step":
                    w.writerow([k, v, step])
