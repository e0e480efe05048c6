"""The training loop every trainer shares (audiocraft's `StandardSolver`: one loop, many steps).

A trainer (the VQ-VAE's in `speechvq.training.vqvae`, the prior's in
`speechvq.training.prior`) builds its module and data and hands `run` a
`Task`: how to draw step `step`'s batch, compute its loss, validate and
export. `run` does the rest once for all of them: Adam with the warm-up
schedule, resume from a checkpoint (weights, optimiser, torch RNG),
DistributedDataParallel under torchrun, bf16 autocast where it pays,
gradient clipping, the progress bar, `log.csv` with throughput, periodic
validation, atomic checkpoints every `checkpoint_every` steps and on
SIGTERM/Ctrl-C, and the exported model.

The config `cfg` is any trainer's dataclass with the fields `lr`,
`warmup_steps`, `grad_clip`, `max_steps`, `log_every`, `valid_every`,
`checkpoint_every`, `export_every` and `precision`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from speechvq.errors import SpeechVQError
from speechvq.files import remove_stale_temporaries
from speechvq.models.precision import autocast_dtype
from speechvq.training.checkpoint import load_checkpoint, restore, save_checkpoint
from speechvq.training.distributed import Distributed


@dataclass(frozen=True)
class Step:
    """What a task's step computed: the loss to minimise and what to report of it."""

    loss: torch.Tensor  # scalar; backward() runs on it
    amount: float  # work done on this rank, in the unit of `Task.throughput` (e.g. seconds)
    postfix: dict[str, str]  # the progress bar's figures
    figures: Callable[[], dict[str, float]]  # log.csv's, asked for every `log_every` steps


class Task(Protocol):
    """The part of training that differs between trainers."""

    module: torch.nn.Module  # what is trained, checkpointed and DDP-wrapped
    throughput: str  # log.csv key of the throughput, e.g. "audio_s_per_s"

    def batch(self, step: int, rank: int) -> dict[str, torch.Tensor]:
        """Step `step`'s batch on this rank, a pure function of (seed, step, rank)."""
        ...

    def step(
        self,
        net: torch.nn.Module,
        batch: dict[str, torch.Tensor],
        step: int,
        rank: int,
        autocast: Callable[[], AbstractContextManager],
    ) -> Step:
        """The training loss of one batch; `net` is `module`, DDP-wrapped where there are ranks."""
        ...

    def validate(self, step: int, elapsed: float) -> tuple[dict[str, float], str | None]:
        """Held-out figures for log.csv (may be empty) and a line for the console, or None."""
        ...

    def export(self, step: int, elapsed: float) -> None:
        """Write the run's model file (rank 0)."""
        ...


@dataclass(frozen=True)
class LoopResult:
    steps: int
    elapsed: float  # seconds spent in steps, over all sessions of the run
    interrupted: bool  # stopped by a signal or `stop_after` before `max_steps`
    last: Step | None  # the last step of this call


def open_run(run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from (None: a new run); refuses to clobber or invent a run."""
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise SpeechVQError(f"{run_dir}: holds a run already (use --resume to continue it)")
    if resume and not ckpt.exists():
        raise SpeechVQError(f"{run_dir}: no checkpoint to resume from")
    return load_checkpoint(ckpt) if resume else None


def run(
    task: Task,
    cfg: Any,
    run_dir: Path,
    dist: Distributed,
    device: torch.device,
    state: dict | None,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> LoopResult:
    """Train `task.module` from `state` (a checkpoint, or None) up to `cfg.max_steps`.

    `stop_after` ends this call after that many steps as if interrupted (tests).
    """
    module = task.module
    optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    step, elapsed = restore(state, module, optimizer)
    net = dist.wrap(module, device)
    dtype = autocast_dtype(cfg.precision, device)

    def autocast() -> AbstractContextManager:
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    ckpt = run_dir / "checkpoint.pt"
    log = _start_run_dir(run_dir, cfg) if dist.main else None
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, unit="step", dynamic_ncols=True)

    done = {"validated": -1, "exported": -1}  # the last step each was done at

    def export() -> None:
        task.export(step, elapsed)
        done["exported"] = step

    def validate() -> None:  # then export: a model file carries its held-out figures
        figures, line = task.validate(step, elapsed)
        if figures:
            log.write(step=step, elapsed=round(elapsed, 1), **figures)
        if line and bar is not None:
            bar.write(line)
        done["validated"] = step
        export()

    interrupted, last = False, None
    t_last, amount, start_step = time.time(), 0.0, step
    with StopFlag() as flag:
        while step < cfg.max_steps:
            batch = {k: v.to(device) for k, v in task.batch(step, dist.rank).items()}
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, cfg)
            t0 = time.time()
            last = task.step(net, batch, step, dist.rank, autocast)
            optimizer.zero_grad(set_to_none=True)
            last.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            elapsed += time.time() - t0
            amount += last.amount * dist.world
            if bar is not None:
                bar.update(1)
                bar.set_postfix(last.postfix)
            if log is not None and step % cfg.log_every == 0:
                now = time.time()
                rate = round(amount / max(now - t_last, 1e-9), 3)
                t_last, amount = now, 0.0
                figures = {**last.figures(), "grad_norm": grad_norm.item(), "lr": lr_at(step, cfg)}
                figures[task.throughput] = rate
                log.write(step=step, elapsed=round(elapsed, 1), **figures)
            if dist.main and cfg.valid_every and step % cfg.valid_every == 0:
                validate()
            stopping = flag.stop or (stop_after is not None and step - start_step >= stop_after)
            if dist.main and (step % cfg.checkpoint_every == 0 or stopping):
                save_checkpoint(ckpt, module, optimizer, step, cfg, {"elapsed": elapsed})
            if dist.main and cfg.export_every and step % cfg.export_every == 0:
                if done["exported"] != step:
                    export()
            if stopping:
                interrupted = step < cfg.max_steps
                break
    if bar is not None:
        bar.close()
    if dist.main:
        if not interrupted:
            save_checkpoint(ckpt, module, optimizer, step, cfg, {"elapsed": elapsed})
        final = cfg.valid_every and not interrupted and step > start_step
        if final and done["validated"] != step:
            validate()  # the run's final figures
        if done["exported"] != step:
            export()
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return LoopResult(step, elapsed, interrupted, last)


def _start_run_dir(run_dir: Path, cfg: Any) -> CsvLog:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "model.safetensors"):  # left by a SIGKILLed write
        remove_stale_temporaries(run_dir / name)
    (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return CsvLog(run_dir / "log.csv")


def lr_at(step: int, cfg: Any) -> float:
    """The learning rate at `step`: a linear warm-up over `warmup_steps`, then constant."""
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
