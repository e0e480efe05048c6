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
moves its codes' rows to, and the encoder's output itself, whose frames
conversion can blend the input's frames towards (`matching.knn_blend`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.models.matching import LatentStats

MIN_VOICED_SECONDS = 0.5  # less voiced speech than this is not enough to hear a voice in
ADAPT_LR = 0.03  # Adam's step on the voice vector in `adapt_voice` (0.01 needed twice the steps)
ADAPT_WINDOW_SECONDS = 4.0  # each adaptation step re-synthesises at most this much audio


@dataclass(frozen=True)
class Voice:
    """A voice to decode in: `vector` `[speaker_dim]` float32 and the log-F0 level;
    `latents` and `codes`, the statistics of the encoder's output and of the codebook
    rows of its codes over the recordings it was measured on, and `frames` that output
    itself `[D, N]` (all None for a voice from a name or a file header)."""

    vector: np.ndarray
    logf0_mean: float
    logf0_std: float
    latents: LatentStats | None = None
    codes: LatentStats | None = None
    frames: np.ndarray | None = None


def voice_from_recordings(
    model: Any,
    recordings: list[tuple[np.ndarray, int]],
    *,
    latents: bool = True,
    f0: list[np.ndarray] | None = None,
) -> Voice:
    """The voice of `(wave [T], sample_rate)` recordings of one speaker (a few seconds do);
    with `latents`, also the content encoder's output over them (`Voice.frames`) and
    its statistics (`Voice.latents`, `Voice.codes`). `f0`, if given, is each
    recording's `model.input_f0`, already tracked (a caller that needs it anyway
    saves the tracker a second pass).

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
    frames = np.concatenate(content, axis=1).astype(np.float32) if latents else None
    return Voice(
        vector=np.mean(vectors, axis=0).astype(np.float32),
        logf0_mean=float(voiced.mean()),
        logf0_std=max(0.05, float(voiced.std())) if voiced.size > 1 else 0.2,
        latents=LatentStats.of(frames) if latents else None,
        codes=LatentStats.of(np.concatenate(rows, axis=1)) if latents else None,
        frames=frames,
    )


def extrapolate(source: Voice, target: Voice, strength: float, *, latents: bool = True) -> Voice:
    """`target` pushed `strength` times as far from `source` as it lies: each part of a
    voice at `source + strength * (target - source)` (spreads on a log scale), with
    the target's own F0 level and frames. `strength` 1 is `target`; above 1 overshoots it, away
    from the input's voice, which the codes partly keep. With `latents`, the content
    statistics move too (both voices need them)."""
    if strength == 1.0:
        return target

    def line(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + strength * (b - a)).astype(np.float32)

    def stats(a: LatentStats | None, b: LatentStats | None) -> LatentStats | None:
        if not latents or a is None or b is None:
            return b
        std = np.exp(line(np.log(np.maximum(a.std, 1e-5)), np.log(np.maximum(b.std, 1e-5))))
        return LatentStats(line(a.mean, b.mean), std.astype(np.float32))

    return Voice(
        vector=line(source.vector, target.vector),
        logf0_mean=target.logf0_mean,
        logf0_std=target.logf0_std,
        latents=stats(source.latents, target.latents),
        codes=stats(source.codes, target.codes),
        frames=target.frames,
    )


def adapt_voice(
    model: Any,
    voice: Voice,
    recordings: list[tuple[np.ndarray, int]],
    steps: int,
    *,
    lr: float = ADAPT_LR,
    seed: int = 0,
    f0: list[np.ndarray] | None = None,
    progress: bool = False,
) -> Voice:
    """`voice` with its vector tuned so that the decoder re-synthesises `recordings` from
    their own codes as closely as it can (speaker adaptation by the embedding alone,
    Arik et al. 2018, "Neural Voice Cloning with a Few Samples"): `steps` steps of Adam
    on the decoder's training loss, from the speaker encoder's vector, the model fixed.

    The speaker encoder's vector is what the decoder was trained with, but the
    decoder does not always reproduce the voice it describes; searching the
    vector against the recordings themselves closes part of that gap (on
    `small-spk`, 60 steps lifted the similarity of unseen speakers' reconstructions
    from 0.785 to 0.817; docs/speaker.md). Each step re-synthesises one recording
    (taken in turn), or a random window of `ADAPT_WINDOW_SECONDS` of a longer one,
    so the cost of a step does not grow with the audio (about 0.2-0.4 s on one
    CPU thread for `small-spk`; the graph of one window takes about 0.5 GB).
    `f0`: each recording's `input_f0`, if already tracked. The F0 level and the
    content statistics are kept.
    """
    import torch

    from speechvq.audio.io import resample

    if steps <= 0:
        return voice
    sr, hop, dev = model.sample_rate, model.hop_length, next(model.parameters()).device
    items = []  # (wave [1, F * hop], latents [1, D, F], f0 [1, F] or None)
    for n, (wave, rate) in enumerate(recordings):
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        wave = resample(wave, rate, sr) if rate != sr else wave
        codes = model.encode(wave, sr)
        frames = codes.size
        target = np.zeros(frames * hop, dtype=np.float32)
        target[: min(wave.size, target.size)] = wave[: target.size]
        track = None
        if model.pitch is not None:
            track = model.input_f0(wave, sr, frames) if f0 is None else np.asarray(f0[n])
            track = np.pad(track, (0, max(0, frames - track.size)))[:frames]  # a frame's rounding
            track = torch.as_tensor(track.astype(np.float32)[None], device=dev)
        with torch.no_grad():
            latents = model.quantizer.lookup(torch.from_numpy(codes)[None].to(dev))
        items.append((torch.from_numpy(target)[None].to(dev), latents, track))
    window = max(1, int(ADAPT_WINDOW_SECONDS * sr / hop))
    rng = np.random.default_rng(seed)
    vector = torch.as_tensor(voice.vector, dtype=torch.float32, device=dev)[None].clone()
    vector.requires_grad_(True)
    opt = torch.optim.Adam([vector], lr=lr)
    was_training = model.training
    model.eval()
    bar = range(steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="tuning the voice", unit="step", leave=False)
    # The decoder's noise comes from the global generator: seed it, within a fork of
    # its state so the caller's is left as it was, and the same call gives the same voice.
    devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for step in bar:
                wave, latents, track = items[step % len(items)]
                frames = latents.shape[-1]
                a = int(rng.integers(0, frames - window + 1)) if frames > window else 0
                b = min(frames, a + window)
                with torch.enable_grad():
                    loss = model.decoder.reconstruction_loss(
                        wave[:, a * hop : b * hop],
                        latents[..., a:b],
                        vector,
                        None if track is None else track[:, a:b],
                    )
                    (grad,) = torch.autograd.grad(loss, [vector])
                vector.grad = grad
                opt.step()
    finally:
        model.train(was_training)
    return replace(voice, vector=vector.detach()[0].cpu().numpy().astype(np.float32))
