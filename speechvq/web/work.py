"""What each button of the page does: plain functions over NumPy audio and a model.

Each writes its audio, `.svq` and spectrogram files into `folder` under
fixed names and returns what the page shows (JSON-able): the files to play
and download, the spectrogram picture and figures such as the bitrate.
`report(fraction, stage)` follows the progress. The page's jobs
(`speechvq.web.jobs`) run them; tests call them directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.audio.io import save_audio
from speechvq.config import REFERENCE_ADAPT_STEPS
from speechvq.evaluation.baselines import Baseline
from speechvq.evaluation.report import spectrogram_figure
from speechvq.inference.code_search import default_search
from speechvq.inference.compression import compress as compress_file
from speechvq.inference.compression import decompress as decompress_file
from speechvq.inference.sampling import sample_speech
from speechvq.models.voice import Voice, adapt_voice

Report = Callable[[float, str], None]


def convert(
    model: Any,
    wave: np.ndarray,
    voice: str | Voice | None,
    folder: Path,
    report: Report,
    references: list[tuple[np.ndarray, int]] = (),
) -> dict[str, Any]:
    """`wave` `[T]` (at the model's rate) in the voice of speaker `voice` (a name; None:
    the model's first) or of a `Voice` measured on the `references` recordings, whose
    vector is first tuned on them as `convert --target-wav` does (`adapt_voice`)."""
    sr = model.sample_rate
    if isinstance(voice, Voice):
        if references:
            report(0.05, "tuning the voice to the reference")
            voice = adapt_voice(model, voice, list(references), REFERENCE_ADAPT_STEPS)
        label = "the reference recording's voice"
    else:
        voice = voice if voice is not None else model.speakers[0]
        model.speaker_id(voice)  # an unknown name fails before the slow part
        label = str(voice)
    report(0.15, "converting")
    out = model.convert(wave, sr, voice)[: wave.size]  # `convert`'s matching included
    frames = -(-wave.size // model.hop_length)
    report(0.8, "drawing the spectrograms")
    save_audio(folder / "input.wav", wave, sr)
    save_audio(folder / "converted.wav", out, sr)
    _spectrograms(folder, [("original", wave), (f"converted to {label}", out)], sr)
    return {
        "title": f"converted to {label}",
        "audio": [
            {"label": "original", "file": "input.wav"},
            {"label": f"converted to {label}", "file": "converted.wav"},
        ],
        "spectrogram": "spectrogram.png",
        "table": [["seconds", f"{wave.size / sr:.2f}"], ["codes", str(frames)]],
    }


def compress(
    model: Any, wave: np.ndarray, baselines: list[Baseline], folder: Path, report: Report
) -> dict[str, Any]:
    """`wave` `[T]` through `compress` and `decompress` (an `.svq` file), and through
    each of `baselines` whose tools are installed, for listening side by side."""
    sr = model.sample_rate
    seconds = wave.size / sr
    report(0.05, "compressing")
    svq = folder / "compressed.svq"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no voice stored" is in the table instead
        # searched as `speechvq compress` does by default (docs/code-search.md)
        header = compress_file(model, wave, sr, svq, search=default_search(model), force=True)
    report(0.35, "decompressing")
    decoded = decompress_file(model, svq)
    save_audio(folder / "input.wav", wave, sr)
    save_audio(folder / "speechvq.wav", decoded, sr)
    size = svq.stat().st_size
    rows = [["system", "kbit/s"]]
    rows.append(["speechvq (.svq, all of the file)", f"{8 * size / seconds / 1000:.2f}"])
    rows.append(["speechvq (nominal, before entropy coding)", _kbps(model.config.nominal_bitrate)])
    audio = [
        {"label": "original", "file": "input.wav"},
        {"label": f"speechvq, {8 * size / seconds / 1000:.2f} kbit/s", "file": "speechvq.wav"},
    ]
    spectra = [("original", wave), ("speechvq", decoded)]
    notes = [
        f".svq file: {size:,} bytes for {seconds:.2f} s ({header.entropy_model} entropy model)"
    ]
    if model.speaker_encoder is not None and header.voice is None:
        notes.append("no voice stored: the input has too little voiced speech")
    for k, baseline in enumerate(baselines):
        why = baseline.missing()
        if why is not None:
            notes.append(f"{baseline.name}: not run ({why})")
            continue
        report(0.5 + 0.3 * k / max(1, len(baselines)), f"running {baseline.name}")
        other = baseline.roundtrip(wave, sr)
        name = f"{baseline.name}.wav"
        save_audio(folder / name, other, sr)
        rows.append([baseline.name, _kbps(baseline.bitrate)])
        audio.append({"label": f"{baseline.name}, {_kbps(baseline.bitrate)} kbit/s", "file": name})
        spectra.append((baseline.name, other))
    report(0.85, "drawing the spectrograms")
    _spectrograms(folder, spectra, sr)
    return {
        "title": "compressed and decompressed",
        "audio": audio,
        "downloads": [{"label": "the .svq file", "file": "compressed.svq"}],
        "spectrogram": "spectrogram.png",
        "table": rows,
        "notes": notes,
    }


def sample(
    model: Any, speaker: str | None, seconds: float, folder: Path, report: Report
) -> dict[str, Any]:
    """`seconds` of speech made up by the model's prior, in `speaker`'s voice."""
    sr = model.sample_rate
    speaker = speaker or (model.speakers[0] if model.speakers else None)
    report(0.02, "sampling codes")

    def codes_done(done: int, frames: int) -> None:
        report(0.02 + 0.78 * done / frames, f"sampling codes ({done} of {frames})")

    wave = sample_speech(model, seconds, speaker, progress=codes_done)
    report(0.85, "drawing the spectrogram")
    save_audio(folder / "sample.wav", wave, sr)
    _spectrograms(folder, [(f"sampled, {speaker}", wave)], sr)
    return {
        "title": f"{seconds:g} s sampled from the prior, voice {speaker}",
        "audio": [{"label": "sample", "file": "sample.wav"}],
        "spectrogram": "spectrogram.png",
        "table": [["speaker", str(speaker)], ["seconds", f"{seconds:g}"]],
    }


def _spectrograms(folder: Path, rows: list[tuple[str, np.ndarray]], sample_rate: int) -> None:
    fig = spectrogram_figure(rows, sample_rate, "log-mel spectrogram")
    fig.savefig(folder / "spectrogram.png", dpi=90)


def _kbps(bits_per_second: float) -> str:
    return f"{bits_per_second / 1000:g}"
