"""Figures of `speechvq analyze-phonemes`: how codes line up with phones, drawn.

`plot_cooccurrence` draws P(phone | code) with codes grouped by their most
frequent phone and phones by class, so phone-like codes form a block
diagonal; `plot_utterance` puts a spectrogram, the reference phones, the codes
and the phones they map to on one time axis. matplotlib is optional (the
`analysis` extra) and imported inside the functions, so `import speechvq`
stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.analysis.phonemes import EPS_S, CodeUnits
from speechvq.data.alignments import Alignment, phone_class
from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

_CLASS_COLOURS = {
    "vowels": "tab:red",
    "stops": "tab:blue",
    "fricatives": "tab:green",
    "nasals": "tab:purple",
    "approximants": "tab:orange",
    "silence": "0.75",
    "other": "tab:brown",
}
_TEXT_COLOURS = {"silence": "0.35"}  # the light grey of silence spans is unreadable as text


def plot_cooccurrence(counts: np.ndarray, phones: Sequence[str], path: str | os.PathLike) -> Path:
    """P(phone | code) for the used codes `[codes, phones]`, grouped by mapped phone and class.

    Rows are ordered by each code's most frequent phone (in column order),
    columns by phone class, so phone-like codes form a block diagonal.
    """
    plt = _pyplot()

    used = np.flatnonzero(counts.sum(1))
    best = counts[used].argmax(1)
    order = used[np.lexsort((-counts[used].max(1), best))]
    probs = counts[order] / counts[order].sum(1, keepdims=True)
    mapped = counts[order].argmax(1)
    fig, ax = plt.subplots(figsize=(11, min(3 + 0.04 * len(order), 16)), layout="constrained")
    image = ax.imshow(probs, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(phones)), phones, rotation=90, fontsize=8)
    for tick, phone in zip(ax.get_xticklabels(), phones, strict=True):
        tick.set_color(_TEXT_COLOURS.get(phone_class(phone), _CLASS_COLOURS[phone_class(phone)]))
    classes = [phone_class(p) for p in phones]
    cuts = [k for k in range(1, len(phones)) if classes[k] != classes[k - 1]]
    for x in cuts:
        ax.axvline(x - 0.5, color="tab:cyan", lw=0.8)
    for a, b in zip([0, *cuts], [*cuts, len(phones)], strict=True):
        ax.text((a + b - 1) / 2, 1.005, classes[a], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)  # fmt: skip
    starts = [k for k in range(len(mapped)) if k == 0 or mapped[k] != mapped[k - 1]]
    for y in starts[1:]:
        ax.axhline(y - 0.5, color="tab:cyan", lw=0.3)
    ends = [*starts[1:], len(mapped)]
    ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)])
    ax.set_yticklabels([phones[mapped[a]] for a in starts], fontsize=6)
    ax.set_xlabel("phone (vowels, stops, fricatives, nasals, approximants, silence)")
    ax.set_ylabel(f"{len(order)} codes used, grouped by their most frequent phone")
    ax.set_title("P(phone | code)", pad=16)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return _save(fig, path)


def plot_utterance(
    wave: np.ndarray,
    sample_rate: int,
    alignment: Alignment,
    units: CodeUnits,
    mapping: dict[int, int],
    phones: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """Spectrogram, reference phones, codes and the phones the codes map to, on one time axis.

    The view is cropped to the speech (first to last non-silence phone, with
    0.2 s either side) so that phone labels stay legible.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    from scipy.signal import spectrogram

    speech = [s for s in alignment.segments if s.phone != "sil"] or list(alignment.segments)
    view = (max(speech[0].start_s - 0.2, 0.0), speech[-1].end_s + 0.2)
    fig, axes = plt.subplots(
        4, 1, figsize=(15, 7), sharex=True, height_ratios=[3, 0.8, 2.5, 0.8], layout="constrained"
    )
    spec_ax, phone_ax, code_ax, map_ax = axes
    freqs, times, power = spectrogram(wave, fs=sample_rate, nperseg=400, noverlap=336)
    db = 10 * np.log10(power + 1e-12)
    spec_ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=db.max() - 80,
        vmax=db.max(),
        extent=(times[0], times[-1], freqs[0], freqs[-1]),
    )
    spec_ax.set_ylabel("Hz")
    spec_ax.set_title(f"{Path(alignment.source).stem}: reference phones against codes")
    _phone_track(phone_ax, _runs([(s.start_s, s.end_s, s.phone) for s in alignment.segments]), view)
    phone_ax.set_ylabel("phones", rotation=0, ha="right", va="center")
    colours = [
        _CLASS_COLOURS[phone_class(phones[mapping[c]]) if c in mapping else "other"]
        for c in units.codes
    ]
    code_ax.hlines(units.codes, units.starts, units.ends, colors=colours, lw=3)
    code_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    code_ax.set_ylabel("code (colour: class\nof its phone)")
    guessed = [phones[mapping[c]] if c in mapping else "?" for c in units.codes]
    _phone_track(map_ax, _runs(list(zip(units.starts, units.ends, guessed, strict=True))), view)
    map_ax.set_ylabel("code -> phone", rotation=0, ha="right", va="center")
    map_ax.set_xlabel("time (s)")
    for t in alignment.boundaries():
        for ax in (code_ax, map_ax):
            ax.axvline(t, color="0.6", lw=0.5, ls=":")
    map_ax.set_xlim(*view)
    return _save(fig, path)


def _runs(segments: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Merge touching segments with the same label (`sil sil` -> one `sil`)."""
    runs: list[tuple[float, float, str]] = []
    for start, end, label in segments:
        if runs and runs[-1][2] == label and abs(runs[-1][1] - start) < EPS_S:
            runs[-1] = (runs[-1][0], end, label)
        else:
            runs.append((start, end, label))
    return runs


def _phone_track(
    ax: Any, segments: Sequence[tuple[float, float, str]], view: tuple[float, float]
) -> None:
    # A label needs about 0.5% of the view per character at fontsize 7 on a
    # 15-inch axis; narrower ones alternate high and low, the narrowest go unlabelled.
    per_char = 0.005 * (view[1] - view[0])
    for k, (start, end, phone) in enumerate(segments):
        ax.axvspan(start, end, color=_CLASS_COLOURS[phone_class(phone)], alpha=0.35, lw=0)
        ax.axvline(start, color="0.3", lw=0.5)
        a, b = max(start, view[0]), min(end, view[1])  # the visible part
        need = per_char * max(len(phone), 2)
        if b - a >= need / 2:
            y = 0.5 if b - a >= need else (0.22 if k % 2 else 0.78)
            ax.text((a + b) / 2, y, phone, ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_yticks([])
    ax.set_ylim(0, 1)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SpeechVQError(
            "plots need matplotlib: pip install 'speechvq[analysis]' (or use --no-plots)"
        ) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
