"""The files `speechvq evaluate` writes: results.json, results.md and PNG figures.

`write_report` turns the `EvaluationReport` of `speechvq.evaluation.evaluate.evaluate`
into a report folder: JSON for programs, `markdown` tables (quality per
system, DNSMOS detail, voice conversion, notes) for people, and figures
(log-mel spectrograms of a few files, quality against bitrate). Kept apart
from the run so that a report can be rewritten from results without scoring
anything again. matplotlib is optional and imported where the figures are
drawn; without it they are skipped with a note.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.evaluation import metrics as M
from speechvq.evaluation.results import (
    MODEL_SYSTEM,
    PITCH_SYSTEM,
    REFERENCE_SYSTEM,
    SEARCH_SYSTEM,
    EvaluationReport,
)

_COLUMNS = (  # (metric, header, decimals)
    ("stoi", "STOI", 3),
    ("pesq", "PESQ", 2),
    ("mel_distance", "mel dist (dB)", 2),
    ("speaker_sim", "speaker sim", 3),
    ("dnsmos_ovrl", "DNSMOS OVRL", 2),
    ("f0_match", "F0 match", 3),
    ("voicing", "voicing", 3),
)


def write_report(
    report: EvaluationReport, out_dir: str | os.PathLike, *, force: bool = False
) -> list[Path]:
    """Write results.json, results.md and the figures into `out_dir`; returns the paths.

    Refuses to overwrite an earlier report unless `force`. Figures need
    matplotlib; without it they are skipped with a note in results.md.
    """
    import json

    from speechvq.files import atomic_output

    out = check_report_dir(out_dir, force=force)
    out.mkdir(parents=True, exist_ok=True)
    try:
        figures = _figures(report, out)
    except ImportError as exc:
        figures = []
        report.notes.append(f"figures skipped: {exc.name or exc} is not installed")
    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text(markdown(report, [f.name for f in figures]), encoding="utf-8")
    return [out / "results.json", out / "results.md", *figures]


def check_report_dir(out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Refuse a folder that already holds a report (unless `force`): call it before the long run."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpeechVQError(f"{out}: exists and is not a folder")
    if (out / "results.json").exists() and not force:
        raise SpeechVQError(f"{out}: already holds a report (use --force to overwrite)")
    return out


def markdown(report: EvaluationReport, figures: list[str] = ()) -> str:
    """The report as Markdown: the quality table, DNSMOS detail, conversion, notes."""
    n = len(report.items)
    lines = [
        "# speechvq evaluation",
        "",
        f"{n} file{'s' * (n != 1)} at {report.sample_rate} Hz; mean ± std over files "
        "(bitrates are nominal; speechvq's entropy-coded rate in brackets when it has a prior;"
        " speechvq+pitch is the encoder's codes with the input's pitch track, as"
        " `compress --search 0` writes them, its measured range-coded rate added"
        + (
            "; speechvq+search is the same with codes searched by synthesis, as"
            " `compress` writes them by default"
            if any(s.name == SEARCH_SYSTEM for s in report.systems)
            else ""
        )
        + ").",
        "",
        "| system | kbit/s | " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(_COLUMNS),
    ]
    detail = ["| system | SIG | BAK | OVRL |", "|---|---:|---:|---:|"]
    for s in report.systems:
        if s.skipped:
            continue
        summ = s.summary()
        rate = "—" if s.bitrate is None else f"{s.bitrate / 1000:.2f}"
        if s.entropy_bitrate is not None:
            rate += f" ({s.entropy_bitrate / 1000:.2f})"
        cells = [_cell(summ.get(m), d) for m, _, d in _COLUMNS]
        lines.append(f"| {s.name} | {rate} | " + " | ".join(cells) + " |")
        dns = [_cell(summ.get(f"dnsmos_{k}"), 2) for k in ("sig", "bak", "ovrl")]
        detail.append(f"| {s.name} | " + " | ".join(dns) + " |")
    lines += ["", "DNSMOS P.835 (non-intrusive, 1-5):", "", *detail]
    lines += _comparison_table(report)
    skipped = [s for s in report.systems if s.skipped]
    if skipped or report.skipped_metrics:
        lines += ["", "Skipped:", ""]
        lines += [f"- system {s.name}: {s.skipped}" for s in skipped]
        lines += [f"- metric {m}: {r}" for m, r in report.skipped_metrics.items()]
    if report.conversions:
        lines += [
            "",
            "## Voice conversion",
            "",
            "| target | n | sim to target | sim to source | target identified | DNSMOS OVRL |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in report.conversion_summary():
            acc = "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.0f} %"
            cells = [_cell(row[k], 3) for k in ("sim_target", "sim_source")]
            lines.append(
                f"| {row['target']} | {row['n']} | {' | '.join(cells)} | {acc} | "
                f"{_cell(row['dnsmos_ovrl'], 2)} |"
            )
    lines += _band_table(report)
    if report.notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in report.notes]]
    if figures:
        lines += ["", "## Figures", "", *[f"![{f}]({f})" for f in figures]]
    return "\n".join(lines) + "\n"


def _comparison_table(report: EvaluationReport) -> list[str]:
    """The headline system minus each baseline, file by file (`EvaluationReport.comparisons`)."""
    diffs = report.comparisons()
    if not diffs:
        return []
    head = diffs[0].system
    cells = {(d.baseline, d.metric): d for d in diffs}
    columns = [(m, h, dec) for m, h, dec in _COLUMNS if any(k[1] == m for k in cells)]
    rows = []
    for base in dict.fromkeys(d.baseline for d in diffs):
        row = []
        for m, _, dec in columns:
            d = cells.get((base, m))
            row.append("—" if d is None else _difference_cell(d, dec))
        rows.append(f"| {base} | " + " | ".join(row) + " |")
    return [
        "",
        f"Paired differences, {head} minus each baseline on the same files: the mean"
        " difference ± the half-width of its 95% interval (Student's t over files), then"
        f" the files where {head} is the better one (mel distance: lower); bold where the"
        " interval leaves out zero, a lead (or a loss) larger than the luck of these files:",
        "",
        "| baseline | " + " | ".join(h for _, h, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
        *rows,
    ]


def _difference_cell(d, decimals: int) -> str:
    half = "—" if not np.isfinite(d.half_width) else f"{d.half_width:.{decimals}f}"
    text = f"{d.mean:+.{decimals}f} ± {half}"
    if d.significant:
        text = f"**{text}**"
    return f"{text} ({d.better}/{d.n})"


# STOI's 15 bands (`metrics.STOI_BAND_CENTRES_HZ`) grouped for the table:
# (label, first band, one past the last).
_BAND_GROUPS = (
    ("150-300 Hz", 0, 4),
    ("380-950 Hz", 4, 9),
    ("1.2-2.4 kHz", 9, 13),
    ("3-3.8 kHz", 13, 15),
)


def _band_table(report: EvaluationReport) -> list[str]:
    """STOI per group of 1/3-octave bands, per system: where intelligibility is lost."""
    rows = []
    for s in report.systems:
        bands = None if s.skipped else s.band_summary()
        if bands is not None:
            groups = [bands[a:b].mean() for _, a, b in _BAND_GROUPS]
            rows.append(f"| {s.name} | " + " | ".join(f"{g:.3f}" for g in groups) + " |")
    if not rows:
        return []
    return [
        "",
        "STOI by band (the mean of the 1/3-octave bands' intermediate intelligibility in each"
        " range; STOI is the mean of all 15; stoi_bands.png draws them):",
        "",
        "| system | " + " | ".join(label for label, _, _ in _BAND_GROUPS) + " |",
        "|---|" + "---:|" * len(_BAND_GROUPS),
        *rows,
    ]


def _cell(stats: dict[str, float] | None, decimals: int) -> str:
    if not stats:
        return "—"
    return f"{stats['mean']:.{decimals}f} ± {stats['std']:.{decimals}f}"


def _figures(report: EvaluationReport, out: Path) -> list[Path]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    paths = []
    for k, ex in enumerate(report.examples):
        names = [
            n
            for n in (REFERENCE_SYSTEM, MODEL_SYSTEM, PITCH_SYSTEM, SEARCH_SYSTEM)
            if n in ex.waves
        ]
        names += [n for n in ex.waves if n not in names][:1]  # one baseline
        fig = spectrogram_figure(
            [(n, ex.waves[n]) for n in names],
            report.sample_rate,
            f"log-mel spectrogram: {ex.item_id}",
        )
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in ex.item_id)
        paths.append(out / f"spectrogram_{k + 1}_{safe}.png")
        fig.savefig(paths[-1], dpi=100)
    points = []
    for s in report.systems:
        summ = s.summary()
        if s.bitrate is not None and not s.skipped and summ:
            points.append((s.name, s.bitrate / 1000, summ))
            if s.entropy_bitrate is not None:
                points.append((f"{s.name} (entropy-coded)", s.entropy_bitrate / 1000, summ))
    if points:
        fig = Figure(figsize=(9, 3.8), layout="constrained")
        axes = fig.subplots(1, 2)
        ref = report.system(REFERENCE_SYSTEM).summary().get("dnsmos_ovrl")
        ticks = sorted({round(kbps, 2) for _, kbps, _ in points})
        for ax, metric, label in zip(
            axes, ("stoi", "dnsmos_ovrl"), ("STOI", "DNSMOS OVRL"), strict=True
        ):
            for k, (name, kbps, summ) in enumerate(points):
                if metric in summ:
                    st = summ[metric]
                    ax.errorbar(kbps, st["mean"], yerr=st["std"], fmt="o", capsize=3, color=f"C{k}")
                    up = k % 2 == 0  # alternate above/below: neighbours' labels do not collide
                    ax.annotate(
                        name,
                        (kbps, st["mean"]),
                        xytext=(5, 6 if up else -14),
                        textcoords="offset points",
                    )
            if metric == "dnsmos_ovrl" and ref:
                ax.axhline(ref["mean"], color="grey", ls="--", lw=1)
                ax.annotate(
                    "reference",
                    (ticks[0], ref["mean"]),
                    xytext=(0, -12),
                    textcoords="offset points",
                    color="grey",
                )
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.margins(y=0.15)  # room for the point labels
            ax.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.6)  # room for the labels
            ax.set_xlabel("bitrate (kbit/s)")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle("quality against bitrate (mean ± std over files)")
        paths.append(out / "quality_vs_bitrate.png")
        fig.savefig(paths[-1], dpi=100)
    bands = [(s.name, s.band_summary()) for s in report.systems if not s.skipped]
    bands = [(name, b) for name, b in bands if b is not None]
    if bands:
        fig = stoi_band_figure(bands)
        paths.append(out / "stoi_bands.png")
        fig.savefig(paths[-1], dpi=100)
    return paths


def stoi_band_figure(rows: list[tuple[str, np.ndarray]]):
    """STOI per 1/3-octave band `(label, [15])` rows, one line each, on a log frequency
    axis: a matplotlib `Figure`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    centres = np.asarray(M.STOI_BAND_CENTRES_HZ)
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    for k, (name, values) in enumerate(rows):
        ax.plot(centres, values, "o-", color=f"C{k}", label=name, ms=4)
    ticks = [150, 300, 600, 1200, 2400, 3800]
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("1/3-octave band centre (Hz)")
    ax.set_ylabel("intermediate intelligibility")
    ax.set_title("STOI by band (mean over files; STOI is the mean of the bands)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def spectrogram_figure(rows: list[tuple[str, np.ndarray]], sample_rate: int, title: str):
    """Log-mel spectrograms of `(label, wave [T])` rows, one above the other on one time
    axis and one dB scale (the loudest row's top 80 dB): a matplotlib `Figure`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    specs = [M.log_mel_spectrogram(wave, sample_rate) for _, wave in rows]
    top = max(s.max() for s in specs)
    fig = Figure(figsize=(9, 2.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, wave), spec in zip(axes, rows, specs, strict=True):
        im = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - 80,
            vmax=top,
            extent=(0, len(wave) / sample_rate, 0, spec.shape[0]),
        )
        ax.set_ylabel(f"{name}\nfrequency (kHz)")
        ax.set_yticks(*_khz_ticks(sample_rate, spec.shape[0]))
    axes[-1].set_xlabel("time (s), aligned to the first row")
    axes[0].set_title(title)
    fig.colorbar(im, ax=list(axes), label="dB")
    return fig


def _khz_ticks(sample_rate: int, n_mels: int) -> tuple[list[float], list[str]]:
    """Mel-band positions of round frequencies, for a spectrogram's y axis in kHz."""
    top = 2595.0 * np.log10(1.0 + sample_rate / 2 / 700.0)
    khz = [k for k in (0.5, 1, 2, 4, 8, 16) if k * 1000 < sample_rate / 2]
    pos = [(n_mels + 1) * 2595.0 * np.log10(1.0 + 1000 * k / 700.0) / top - 1 for k in khz]
    return pos, [f"{k:g}" for k in khz]
