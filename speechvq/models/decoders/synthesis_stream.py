"""The source-filter synthesiser over controls that arrive a few frames at a time.

`SourceFilterDecoder.render_parts` synthesises a whole utterance (in chunks
that equal one pass up to float rounding). `SynthesisStream` does the same
as frames arrive: it keeps the harmonic phase, the last voiced F0, the
white noise drawn so far (from the same generator, in the same order, so
the same numbers as one draw) and a window of recent frames, and renders a
frame once everything its samples depend on is known: the next frame (the
controls are interpolated between frame centres) and the one after it (the
noise filter's 256-sample windows reach two frames ahead). So it holds back
`HOLD` = 3 frames, 12 ms at 16 kHz, and `flush` renders them with the
utterance's true end, as one pass would.
"""

from __future__ import annotations

import numpy as np
import torch

from speechvq.models.decoders.harmonics_numba import harmonic_kernel
from speechvq.models.decoders.source_filter import (
    LEAD_F0,
    NOISE_FFT,
    Controls,
    SourceFilterDecoder,
    fill_unvoiced,
)

HOLD = 3  # frames held back: 1 for the interpolation, 2 for the noise filter


class SynthesisStream:
    """Controls `[1, n, ...]` in, samples `[1, n * hop]` out (delayed by `HOLD` frames)."""

    def __init__(self, decoder: SourceFilterDecoder, generator: torch.Generator | None):
        self.dec, self.gen, self.hop = decoder, generator, decoder.hop
        # Frames kept before the next one to render: the noise filter's margin of
        # a window, and the interpolation's neighbour.
        self.keep = NOISE_FFT // self.hop + 2
        self.off = 0  # absolute index of the window's first frame
        self.done = 0  # frames rendered
        self.total = 0  # frames known
        self.harmonic_env = self.noise_env = self.f0 = self.filled = None
        self.white: torch.Tensor | None = None  # samples from self.off * hop on
        self.phase: torch.Tensor | float | None = None
        self.last_voiced = LEAD_F0  # what unvoiced frames hold until a voiced one arrives
        # The compiled harmonic bank (numba, one stream on a CPU), else the decoder's own.
        self.kernel = harmonic_kernel() if _on_cpu(decoder) else None

    def push(self, c: Controls) -> torch.Tensor:
        """Add frames' controls; returns the samples that are now final."""
        n = c.f0.shape[1]
        if n == 0:
            return self._empty()
        filled = fill_unvoiced(c.f0, self.last_voiced)  # the last voiced F0 carried over
        self.last_voiced = float(filled[0, -1])
        parts = (c.harmonic_env, c.noise_env, c.f0.float(), filled.float())
        if self.f0 is None:
            self.harmonic_env, self.noise_env, self.f0, self.filled = parts
            self.phase = (
                0.0  # the compiled bank's running phase is a float
                if self.kernel is not None
                else torch.zeros(1, 1, dtype=torch.float64, device=c.f0.device)
            )
            self.white = c.f0.new_zeros(1, 0)
        else:
            self.harmonic_env = torch.cat([self.harmonic_env, parts[0]], dim=1)
            self.noise_env = torch.cat([self.noise_env, parts[1]], dim=1)
            self.f0 = torch.cat([self.f0, parts[2]], dim=1)
            self.filled = torch.cat([self.filled, parts[3]], dim=1)
        self.total += n
        return self._render(self.total - HOLD)

    def flush(self) -> torch.Tensor:
        """The frames held back, rendered with the utterance's end where it is."""
        if self.f0 is None:
            return self._empty()
        end = (self.total - self.off) * self.hop
        self._draw(end)
        self.white = self.white[:, :end]  # one pass draws exactly the utterance's noise
        return self._render(self.total, final=True)

    def _render(self, b: int, final: bool = False) -> torch.Tensor:
        a = self.done
        if b <= a:
            return self._empty()
        if not final:
            self._draw((b - self.off) * self.hop + NOISE_FFT)
        lo, hi = a - self.off, b - self.off
        with torch.autocast(self.f0.device.type, enabled=False):
            c = Controls(self.harmonic_env, self.noise_env, self.filled)
            voiced = (self.f0 > 0).float()
            if self.kernel is not None:
                harmonic = self._compiled_harmonics(voiced, lo, hi)
            else:
                harmonic, self.phase = self.dec._harmonics(c, voiced, lo, hi, self.phase)
            out = harmonic + self.dec._noise(self.noise_env, self.white, lo, hi)
        self.done = b
        self._forget(max(self.off, b - self.keep))
        return out

    def _compiled_harmonics(self, voiced: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """`_harmonics` of window frames lo..hi-1 through `harmonics_numba`: `[1, samples]`."""
        a, b = max(0, lo - 1), min(self.f0.shape[1], hi + 1)  # with the neighbours
        out, self.phase = self.kernel(
            np.ascontiguousarray(self.harmonic_env[0, a:b].numpy()),
            np.ascontiguousarray(self.filled[0, a:b].double().numpy()),
            np.ascontiguousarray(voiced[0, a:b].numpy()),
            (lo - a) * self.hop,
            (hi - a) * self.hop,
            self.hop,
            float(self.dec.sample_rate),
            self.dec.harmonics,
            self.phase,
        )
        return torch.from_numpy(out)[None]

    def _draw(self, length: int) -> None:
        """Draw white noise up to `length` samples of the window (as one pass would)."""
        more = length - self.white.shape[1]
        if more > 0:
            new = torch.rand(1, more, generator=self.gen, device=self.white.device) * 2 - 1
            self.white = torch.cat([self.white, new], dim=1)

    def _forget(self, off: int) -> None:
        cut = off - self.off
        if cut <= 0:
            return
        self.harmonic_env = self.harmonic_env[:, cut:]
        self.noise_env = self.noise_env[:, cut:]
        self.f0, self.filled = self.f0[:, cut:], self.filled[:, cut:]
        self.white = self.white[:, cut * self.hop :]
        self.off = off

    def _empty(self) -> torch.Tensor:
        return torch.zeros(1, 0)


def _on_cpu(module: torch.nn.Module) -> bool:
    return next(module.parameters()).device.type == "cpu"
