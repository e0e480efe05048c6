"""Voices: what the decoder needs to speak as someone, from a name or from recordings.

A `Voice` is a speaker vector (the decoder's conditioning) and a log-F0
level (mean and spread over voiced frames, which set the pitch of the
predicted contour). A model with a speaker encoder measures one from any
recordings (`voice_from_recordings`): the vector is the mean of the
encoder's vectors of the recordings, and the F0 level is measured on them
with WORLD, rather than predicted. A voice measured from recordings also
keeps the statistics of the content encoder's output over them
(`models.matching`), which one-shot conversion moves the input's latents to,
and those of the codebook rows of their codes, which a decoder of codes alone
moves its codes' rows to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.models.matching import LatentStats

MIN_VOICED_SECONDS = 0.5  # less voiced speech than this is not enough to hear a voice in


@dataclass(frozen=True)
class Voice:
    """A voice to decode in: `vector` `[speaker_dim]` float32 and the log-F0 level;
    `latents` and `codes`, the statistics of the encoder's output and of the codebook
    rows of its codes over the recordings it was measured on (None for a voice from a
    name or a file header)."""

    vector: np.ndarray
    logf0_mean: float
    logf0_std: float
    latents: LatentStats | None = None
    codes: LatentStats | None = None


def voice_from_recordings(
    model: Any,
    recordings: list[tuple[np.ndarray, int]],
    *,
    latents: bool = True,
    f0: list[np.ndarray] | None = None,
) -> Voice:
    """The voice of `(wave [T], sample_rate)` recordings of one speaker (a few seconds do);
    with `latents`, also the content encoder's statistics over them (`Voice.latents`,
    `Voice.codes`). `f0`, if given, is each recording's `model.input_f0`, already
    tracked (a caller that needs it anyway saves the tracker a second pass).

    A recording that is silent, shorter than a second or has too little
    voiced speech raises `SpeechVQError` with one line.
    """
    import torch

    from speechvq.audio.io import resample

    if model.speaker_encoder is None:
        raise SpeechVQError(
            "this model has no speaker encoder: it knows its training voices by name only "
            "(use --speaker/--target-speaker NAME)"
        )
    if not recordings:
        raise SpeechVQError("no reference recording given")
    sr = model.sample_rate
    vectors, logf0, content, rows = [], [], [], []
    for n, (wave, rate) in enumerate(recordings, start=1):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        wave = resample(wave, rate, sr) if rate != sr else wave
        if wave.size < sr:
            raise SpeechVQError(f"reference {n}: {wave.size / sr:.2f} s, under 1 s of audio")
        if float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))) < 1e-4:
            raise SpeechVQError(f"reference {n}: silent")
        track = model.input_f0(wave, sr, wave.size // model.hop_length) if f0 is None else f0[n - 1]
        logf0.append(np.log(track[track > 0]))
        with torch.inference_mode():
            x = torch.from_numpy(wave)[None].to(next(model.parameters()).device)
            vectors.append(model.speaker_encoder(x)[0].float().cpu().numpy())
        if latents:
            content.append(model.latents(wave, sr))
            rows.append(model.code_rows(model.quantize(content[-1])))
    voiced = np.concatenate(logf0)
    if voiced.size * model.hop_length / sr < MIN_VOICED_SECONDS:
        seconds = voiced.size * model.hop_length / sr
        raise SpeechVQError(
            f"the reference has {seconds:.2f} s of voiced speech; it needs at least "
            f"{MIN_VOICED_SECONDS} s (is it speech?)"
        )
    return Voice(
        vector=np.mean(vectors, axis=0).astype(np.float32),
        logf0_mean=float(voiced.mean()),
        logf0_std=max(0.05, float(voiced.std())) if voiced.size > 1 else 0.2,
        latents=LatentStats.of(np.concatenate(content, axis=1)) if latents else None,
        codes=LatentStats.of(np.concatenate(rows, axis=1)) if latents else None,
    )
