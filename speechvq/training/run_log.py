"""A training run's `log.csv` read back: its figures by range of steps, and a plot.

`train` and `train-prior` append rows `key, value, step` to `log.csv` (a new
header line wherever new columns start), every `log_every` steps and at each
validation. `speechvq log RUN` (`read_log`, `summarise`, `format_summary`,
`plot_log`) answers what a user asks of a long run without a notebook: is the
loss still falling, did validation follow, is the post-filter alive
(`post_active`, `correction_db`), how fast did it go.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from speechvq.errors import SpeechVQError

# The figures shown when none are asked for, those of them that the log has, in this
# order: the losses, the adversarial ones, the post-filter's, the codes', speed.
DEFAULT_KEYS = (
    "recon_loss",
    "mel_loss",
    "subband_loss",
    "disc_loss",
    "adv_loss",
    "fm_loss",
    "post_active",
    "correction_db",
    "bits_per_code",
    "perplexity",
    "grad_norm",
    "audio_s_per_s",
    "codes_per_s",
)
HELD_OUT = "valid_"  # the prefix of validation figures
MAX_ROWS = 20  # a summary's default step range gives at most about this many rows
NICE_STEPS = (1, 2, 5)  # step ranges are 1, 2 or 5 times a power of ten


@dataclass(frozen=True)
class RunLog:
    """Every figure of a log: key -> [(step, value)] in the order written."""

    path: Path
    series: dict[str, list[tuple[int, float]]]

    @property
    def last_step(self) -> int:
        return max((s for points in self.series.values() for s, _ in points), default=0)

    def keys(self) -> list[str]:
        """The training figures (not validation, not bookkeeping) in `DEFAULT_KEYS` order,
        then the others in the order first written."""
        known = [k for k in DEFAULT_KEYS if k in self.series]
        others = [
            k
            for k in self.series
            if k not in known and not k.startswith(HELD_OUT) and k not in ("elapsed", "lr")
        ]
        return known + others

    def default_keys(self) -> list[str]:
        """Those of `DEFAULT_KEYS` that the log has (all its figures if none)."""
        return [k for k in DEFAULT_KEYS if k in self.series] or self.keys()

    @property
    def log_every(self) -> int:
        """The steps between two rows of the training figures (1 if not yet known)."""
        steps = sorted({s for k in self.keys()[:1] for s, _ in self.series[k]})
        return min((b - a for a, b in zip(steps, steps[1:], strict=False)), default=1)

    def held_out_keys(self) -> list[str]:
        return [k for k in self.series if k.startswith(HELD_OUT)]


@dataclass(frozen=True)
class StepRange:
    """One row of a summary: steps first..last."""

    first: int
    last: int
    means: dict[str, float]  # each training figure's mean over its finite values here
    held_out: dict[str, float]  # the last value here of each key's validation figure


def read_log(path: str | os.PathLike) -> RunLog:
    """A run folder's `log.csv`, or that file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.csv"
    if not path.is_file():
        raise SpeechVQError(f"{path}: no training log (a run folder holds log.csv)")
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) != 3 or row[0] == "key":
                continue
            try:
                value, step = float(row[1]), int(row[2])
            except ValueError:
                continue
            series.setdefault(row[0], []).append((step, value))
    if not series:
        raise SpeechVQError(f"{path}: no figures logged yet")
    return RunLog(path, series)


def default_every(log: RunLog, max_rows: int = MAX_ROWS) -> int:
    """The smallest step range of 1, 2 or 5 x 10^k, and a multiple of the log's interval,
    that cuts its steps into at most `max_rows` ranges."""
    scale = 1
    while True:
        for m in NICE_STEPS:
            every = m * scale
            fits = math.ceil(max(log.last_step, 1) / every) <= max_rows
            if fits and every % log.log_every == 0:
                return every
        scale *= 10


def summarise(log: RunLog, every: int, keys: list[str] | None = None) -> list[StepRange]:
    """The log cut into ranges of `every` steps (1..every, every+1..2 every, ...), each
    with the mean of `keys` (default: `log.default_keys()`) and the last validation
    figure of each that has one (`valid_` + key).
    Ranges with nothing logged are left out."""
    if every < 1:
        raise SpeechVQError(f"the step range must be at least 1, not {every}")
    keys = log.default_keys() if keys is None else keys
    missing = [k for k in keys if k not in log.series]
    if missing:
        have = ", ".join(log.keys() + log.held_out_keys())
        raise SpeechVQError(f"{log.path}: no figure {', '.join(missing)} (it has: {have})")
    sums: dict[int, dict[str, list[float]]] = {}
    for k in keys:
        for step, value in log.series[k]:
            if math.isfinite(value):
                sums.setdefault((step - 1) // every, {}).setdefault(k, []).append(value)
    held: dict[int, dict[str, float]] = {}
    for k in (HELD_OUT + k for k in keys if HELD_OUT + k in log.series):
        for step, value in log.series[k]:
            held.setdefault((step - 1) // every, {})[k] = value
    rows = []
    for b in sorted(set(sums) | set(held)):
        means = {k: sum(v) / len(v) for k, v in sums.get(b, {}).items()}
        rows.append(StepRange(b * every + 1, (b + 1) * every, means, held.get(b, {})))
    return rows


def format_summary(rows: list[StepRange], keys: list[str]) -> str:
    """A plain-text table: one line per step range, a column per figure."""
    held = [k for k in dict.fromkeys(k for r in rows for k in r.held_out)]
    head = ["steps", *keys, *held]
    lines = [[f"{r.first}-{r.last}"] for r in rows]
    for line, r in zip(lines, rows, strict=True):
        line += [_number(r.means.get(k)) for k in keys]
        line += [_number(r.held_out.get(k)) for k in held]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def _number(v: float | None) -> str:
    if v is None:
        return "-"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def plot_log(log: RunLog, keys: list[str], every: int, path: str | os.PathLike) -> Path:
    """One panel per figure against the step: every logged value thin, the means over
    ranges of `every` steps thick, and the validation figure of the same name
    (`valid_` + key) as dots. Needs matplotlib (the `analysis` extra)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state
    except ImportError:
        raise SpeechVQError("plots need matplotlib: pip install 'speechvq[analysis]'") from None
    rows = summarise(log, every, keys)
    cols = 2 if len(keys) > 3 else 1
    nrows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(6 * cols, 2.2 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True).ravel()
    for ax, k in zip(axes, keys, strict=False):
        points = [(s, v) for s, v in log.series[k] if math.isfinite(v)]
        if points:
            ax.plot(*zip(*points, strict=True), lw=0.5, alpha=0.4, color="C0")
        means = [((r.first + r.last) / 2, r.means[k]) for r in rows if k in r.means]
        if means:
            ax.plot(*zip(*means, strict=True), lw=2, color="C0", label=f"mean of {every} steps")
        valid = log.series.get(HELD_OUT + k)
        if valid:
            ax.plot(*zip(*valid, strict=True), "o", color="C3", ms=4, label="held out")
        ax.set_title(k, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax in axes[max(0, len(keys) - cols) : len(keys)]:  # the lowest panel of each column
        ax.set_xlabel("step")
        ax.tick_params(labelbottom=True)
    axes[0].legend(fontsize=8)
    fig.suptitle(str(log.path))
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
