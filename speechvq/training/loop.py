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

    def extra_state(self) -> dict:
        """Training state of the task's own that the checkpoint keeps (may be empty),
        e.g. discriminators and their optimiser."""
        ...

    def load_extra_state(self, state: dict) -> None:
        """Restore `extra_state` from a checkpoint."""
        ...


@dataclass(frozen=True)
class LoopResult:
    steps: int
    elapsed: float  # seconds spent in steps, over all sessions of the run
    interrupted: bool  # stopped by a signal, `stop_after` or `max_minutes` before `max_steps`
    out_of_time: bool  # stopped by `max_minutes`
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
    max_minutes: float | None = None,
) -> LoopResult:
    """Train `task.module` from `state` (a checkpoint, or None) up to `cfg.max_steps`.

    `max_minutes` ends this call, checkpointed and exported, at the first step
    that ends that long (wall clock) after it began: a time budget, e.g. for
    comparing recipes at equal CPU time or for a lent GPU's minutes; a rerun
    with `resume` goes on. `stop_after` ends it after that many steps (tests).
    Either leaves the run unfinished, as an interruption does.
    """
    loop = _Loop(task, cfg, run_dir, dist, device, state, progress)
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    with StopFlag() as flag:
        while loop.step < cfg.max_steps:
            loop.train_step()
            loop.out_of_time = deadline is not None and loop.agreed(time.monotonic() >= deadline)
            stopping = (
                flag.stop
                or loop.out_of_time
                or (stop_after is not None and loop.step - loop.start_step >= stop_after)
            )
            loop.after_step(stopping)
            if stopping:
                loop.interrupted = loop.step < cfg.max_steps
                break
    return loop.finish()


class _Loop:
    """The state of one `run`: module, optimiser, counters, log, bar; rank 0 writes files."""

    def __init__(self, task: Task, cfg: Any, run_dir: Path, dist, device, state, progress):
        self.task, self.cfg, self.dist, self.device = task, cfg, dist, device
        self.module = task.module
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=cfg.lr)
        self.step, self.elapsed = restore(state, self.module, self.optimizer)
        if state is not None:
            task.load_extra_state(state.get("task", {}))
        self.start_step = self.step
        self.net = dist.wrap(self.module, device)
        self.dtype = autocast_dtype(cfg.precision, device)
        self.ckpt = run_dir / "checkpoint.pt"
        self.log = _start_run_dir(run_dir, cfg) if dist.main else None
        self.bar = None
        if progress and dist.main:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True)
        self.interrupted, self.out_of_time, self.last = False, False, None
        self.validated = self.exported = -1  # the last step each was done at
        self.t_last, self.amount = time.time(), 0.0

    def agreed(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank: ranks whose clocks differ still stop at one step."""
        if self.dist.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.broadcast(t, src=0)
        return bool(t.item())

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def train_step(self) -> None:
        cfg, step = self.cfg, self.step
        batch = {k: v.to(self.device) for k, v in self.task.batch(step, self.dist.rank).items()}
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        t0 = time.time()
        self.last = self.task.step(self.net, batch, step, self.dist.rank, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        self.last.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.elapsed += time.time() - t0
        self.amount += self.last.amount * self.dist.world
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(self.last.postfix)
        if self.log is not None and self.step % cfg.log_every == 0:
            now = time.time()
            figures = {**self.last.figures(), "grad_norm": grad_norm.item(), "lr": lr_at(step, cfg)}
            figures[self.task.throughput] = round(self.amount / max(now - self.t_last, 1e-9), 3)
            self.t_last, self.amount = now, 0.0
            self.log.write(step=self.step, elapsed=round(self.elapsed, 1), **figures)

    def after_step(self, stopping: bool) -> None:
        """Validation, checkpoint and export on their schedules (rank 0)."""
        cfg, step = self.cfg, self.step
        if not self.dist.main:
            return
        if cfg.valid_every and step % cfg.valid_every == 0:
            self.validate()
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or stopping:
            self.checkpoint()
        if cfg.export_every and step % cfg.export_every == 0 and self.exported != step:
            self.export()

    def validate(self) -> None:  # then export: a model file carries its held-out figures
        figures, line = self.task.validate(self.step, self.elapsed)
        if figures:
            self.log.write(step=self.step, elapsed=round(self.elapsed, 1), **figures)
        if line and self.bar is not None:
            self.bar.write(line)
        self.validated = self.step
        self.export()

    def export(self) -> None:
        self.task.export(self.step, self.elapsed)
        self.exported = self.step

    def checkpoint(self) -> None:
        extra = {"elapsed": self.elapsed, "task": self.task.extra_state()}
        save_checkpoint(self.ckpt, self.module, self.optimizer, self.step, self.cfg, extra)

    def finish(self) -> LoopResult:
        if self.bar is not None:
            self.bar.close()
        if self.dist.main:
            done = not self.interrupted and self.step > self.start_step
            if not self.interrupted:
                self.checkpoint()
            if self.cfg.valid_every and done and self.validated != self.step:
                self.validate()  # the run's final figures
            if self.exported != self.step:
                self.export()
        if self.dist.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return LoopResult(self.step, self.elapsed, self.interrupted, self.out_of_time, self.last)


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
