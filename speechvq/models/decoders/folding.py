"""Folding: a long utterance generated as one batch of overlapping segments (issue 4).

An autoregressive WaveNet produces one sample at a time, so a single stream
is bound by per-step overhead; a batch of B segments costs little more per
step than one. `plan_segments` cuts the utterance into equal-length segments
that overlap by `overlap_seconds` and start `warmup_frames` early,
`generate_folded` generates them with `speechvq.models.decoders.synthesis.Synthesizer` and
joins them with `crossfade_windows`, and `HarmonicFrames` gives each segment
the slice of the whole utterance's harmonic source (phase continuity), so
voiced parts of neighbouring segments cross-fade in phase. `FoldConfig` holds
the knobs; `speechvq.models.decoders.synthesis.synthesize` is the entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from speechvq.models.pitch import harmonic_source


class HarmonicFrames:
    """The decoder's harmonic source for frame ranges of rows cut from one utterance.

    Row k starts at utterance frame `offsets[k]`; frames [a, b) of every row
    give `[B, (b - a) * hop, H]`, the same samples as the slice of the
    whole-utterance source (phase continuity): the running phase at each
    frame start is summed once in float64 (mod 2 pi), so no per-sample
    tensor of the whole utterance is ever built.
    """

    def __init__(self, decoder, f0: torch.Tensor, offsets: list[int], phase: float = 0.0):
        self.decoder = decoder
        self.f0 = f0.reshape(-1).float()  # [F], Hz, 0 = unvoiced
        cfg = decoder.cfg
        step = 2 * math.pi * self.f0.double() * cfg.hop_length / cfg.sample_rate
        start = torch.cat([step.new_zeros(1), torch.cumsum(step, 0)]) + phase
        self.start_phase = torch.remainder(start, 2 * math.pi)  # [F + 1]
        self.offsets = torch.as_tensor(offsets, dtype=torch.long, device=self.f0.device)

    def __call__(self, a: int, b: int) -> torch.Tensor:
        p = self.decoder.cfg.pitch
        cfg = self.decoder.cfg
        idx = self.offsets[:, None] + torch.arange(a, b, device=self.f0.device)  # (B, b - a)
        phase = self.start_phase[self.offsets + a].float()
        return harmonic_source(
            self.f0[idx], cfg.hop_length, cfg.sample_rate, p.harmonics, p.source_amplitude, phase
        )


@dataclass(frozen=True)
class FoldConfig:
    """How `synthesize` cuts a long utterance into segments generated as one batch.

    Each segment keeps about `segment_seconds` (whole frames; the utterance is
    split evenly), generates `overlap_seconds` more that are cross-faded with
    the next segment, and starts `warmup_frames` earlier than the part it
    keeps: that part is generated and discarded so that the WaveNet's
    receptive field holds its own plausible past at the first kept sample,
    not silence. None means the receptive field in whole frames (2047
    samples = 32 frames for the default WaveNet). Segments are generated
    `max_batch` at a time. `crossfade`: "linear" (for correlated signals:
    the pitch path's harmonic source is shared, so voiced parts are in
    phase), "equal_power" (sin/cos, for uncorrelated ones) or "auto" (linear
    with the pitch path, equal power without). `precision` "bfloat16" runs
    the matrix products in bfloat16 (~1.4x faster where the CPU has bf16
    instructions; logits within ~1e-2 of float32, as in bf16 training);
    "auto" (the default) takes bfloat16 where the CPU has native bf16 and
    the utterance folds into at least `BF16_MIN_SEGMENTS` segments (below
    that batch, bf16 is slower), float32 otherwise; the single stream
    (`exact`) is always float32.
    """

    segment_seconds: float = 1.0
    overlap_seconds: float = 0.05
    warmup_frames: int | None = None
    max_batch: int = 64
    crossfade: str = "auto"
    precision: str = "auto"


BF16_MIN_SEGMENTS = 16


@dataclass(frozen=True)
class Segment:
    """Frames of one folded segment: generated over [start, stop), kept over [keep, end)."""

    start: int
    keep: int
    end: int
    stop: int


def plan_segments(frames: int, segment: int, overlap: int, warmup: int) -> list[Segment]:
    """Cut `frames` into ~`segment`-frame pieces that overlap the next one by `overlap`.

    Every segment generates the same number of frames (one batch): the
    first has no warm-up (the utterance starts from silence, as in
    training) and generates further instead.
    """
    n = max(1, min(-(-frames // max(1, segment)), frames // (overlap + 1)))
    bounds = [round(k * frames / n) for k in range(n + 1)]
    ends = [min(frames, bounds[k + 1] + overlap) for k in range(n)]
    length = max(e - max(0, b - warmup) for b, e in zip(bounds, ends, strict=False))
    starts = [min(max(0, b - warmup), frames - length) for b in bounds[:n]]
    return [Segment(a, b, e, a + length) for a, b, e in zip(starts, bounds, ends, strict=False)]


def crossfade_windows(n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Fade-in and fade-out windows `[n]` (float32): "linear" (they sum to 1) or
    "equal_power" (their squares sum to 1)."""
    ramp = (np.arange(n, dtype=np.float64) + 0.5) / n
    if mode == "linear":
        fade_in = ramp
    elif mode == "equal_power":
        fade_in = np.sin(0.5 * np.pi * ramp)
    else:
        raise ValueError(f"unknown crossfade {mode!r}; use linear, equal_power or auto")
    return fade_in.astype(np.float32), fade_in[::-1].astype(np.float32)


def generate_folded(
    syn: Any,  # the decoder's `synthesis.Synthesizer`
    decoder,
    cond: torch.Tensor,
    f0: torch.Tensor | None,
    fold: FoldConfig,
    temperature: float,
    gen: torch.Generator,
) -> np.ndarray:
    """The folded path of `synthesize`: conditioning `[1, F, C]` to a float32 `[F * hop]`.

    Segments (`plan_segments`) are generated `fold.max_batch` at a time with
    `syn`, mu-law decoded and cross-faded into one waveform.
    """
    from speechvq.audio.mulaw import mulaw_decode

    hop, Q, Fr = syn.hop, syn.Q, cond.shape[1]
    rate = decoder.cfg.frame_rate
    warmup = fold.warmup_frames
    if warmup is None:
        warmup = -(-decoder.cfg.decoder.wavenet.receptive_field // hop)
    overlap = max(1, round(fold.overlap_seconds * rate))
    segments = plan_segments(Fr, max(1, round(fold.segment_seconds * rate)), overlap, warmup)
    mode = fold.crossfade
    if mode == "auto":
        mode = "linear" if syn.uses_source else "equal_power"
    fade_in, fade_out = crossfade_windows(overlap * hop, mode)
    out = np.zeros(Fr * hop, dtype=np.float32)
    groups = -(-len(segments) // fold.max_batch)
    per = -(-len(segments) // groups)  # balanced groups
    for g in range(0, len(segments), per):
        group = segments[g : g + per]
        c = torch.stack([cond[0, s.start : s.stop] for s in group])
        src = HarmonicFrames(decoder, f0, [s.start for s in group]) if syn.uses_source else None
        ints = syn.generate(c, src, temperature, gen).cpu().numpy()
        for k, s in enumerate(group):
            w = mulaw_decode(ints[k, (s.keep - s.start) * hop : (s.end - s.start) * hop], Q)
            if s.keep > 0:
                w[: len(fade_in)] *= fade_in
            if s.end < Fr:
                w[-len(fade_out) :] *= fade_out
            out[s.keep * hop : s.end * hop] += w
    return out
