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
import torch.nn.functional as F

from speechvq.models.decoders.harmonics_numba import harmonic_kernel
from speechvq.models.decoders.source_filter import (
    LEAD_F0,
    NOISE_FFT,
    Controls,
    SourceFilterDecoder,
    _hann,
    exp_sigmoid,
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
        # On a CPU the noise filter's FFTs run in numpy (`_numpy_noise`), with torch's window.
        cpu = torch.device("cpu")
        self.window = _hann(NOISE_FFT, cpu).numpy() if _on_cpu(decoder) else None
        self.noise_mag = np.zeros((0, NOISE_FFT // 2 + 1), np.float32)  # [frames, bins]
        self._norms: dict[int, np.ndarray] = {}  # the window-square sums, by frame count

    def push(self, c: Controls) -> torch.Tensor:
        """Add frames' controls; returns the samples that are now final."""
        n = c.f0.shape[1]
        if n == 0:
            return self._empty()
        filled = self._fill_unvoiced(c.f0)
        parts = (c.harmonic_env, c.noise_env, c.f0.float(), filled)
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
        if self.window is not None:  # each frame's noise filter, once
            mag = exp_sigmoid(c.noise_env.float())  # (1, n, N)
            mag = F.interpolate(mag, size=NOISE_FFT // 2 + 1, mode="linear", align_corners=True)
            self.noise_mag = np.concatenate([self.noise_mag, mag[0].cpu().numpy()])
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
            if self.window is not None:
                noise = self._numpy_noise(lo, hi)
            else:
                noise = self.dec._noise(self.noise_env, self.white, lo, hi)
            out = harmonic + noise
        self.done = b
        self._forget(max(self.off, b - self.keep))
        return out

    def _fill_unvoiced(self, f0: torch.Tensor) -> torch.Tensor:
        """`fill_unvoiced(f0, self.last_voiced)` of `[1, n]` F0, carrying the last voiced
        value on. A loop over the few frames of a push, where the torch version's
        eight calls cost 0.25 ms."""
        filled = f0[0].float().cpu().numpy().copy()
        last = self.last_voiced
        for i, hz in enumerate(filled.tolist()):
            last = hz if hz > 0 else last
            filled[i] = last
        self.last_voiced = last
        return torch.from_numpy(filled)[None].to(f0.device)

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

    def _numpy_noise(self, lo: int, hi: int) -> torch.Tensor:
        """`SourceFilterDecoder._noise` of window frames lo..hi-1 `[1, samples]`, its STFT
        and inverse in numpy.

        The same arithmetic as `torch.stft` and `torch.istft` (centred, reflect
        padding, window-square normalisation), written out for the few frames
        of a push, where torch's calls took 0.8 ms; the frames' filters are made
        as they arrive (`push`). The streaming tests compare the output with the
        offline decode.
        """
        n, hop, half = NOISE_FFT, self.hop, NOISE_FFT // 2
        white = self.white[0].numpy()
        s0, s1 = max(0, lo * hop - n), min(white.size, hi * hop + n)
        count = 1 + (s1 - s0) // hop  # STFT frames, as torch.stft centred
        seg = white[s0:s1]
        if seg.size > half:  # reflect padding, as np.pad's (which costs more than the FFTs)
            padded = np.concatenate([seg[half:0:-1], seg, seg[-2 : -half - 2 : -1]])
        else:
            padded = np.pad(seg, half, mode="reflect")
        step = padded.strides[0]
        frames = np.lib.stride_tricks.as_strided(padded, (count, n), (hop * step, step))
        index = np.minimum(s0 // hop + np.arange(count), len(self.noise_mag) - 1)
        spec = np.fft.rfft(frames * self.window, axis=1) * self.noise_mag[index]
        frames = np.fft.irfft(spec, n, axis=1) * self.window  # (count, n)
        if count not in self._norms:  # what torch.istft divides by
            squares = np.broadcast_to(self.window**2, (count, n))
            self._norms[count] = _overlap_add(squares, hop)
        out = _overlap_add(frames, hop)[half : half + s1 - s0]
        out /= self._norms[count][half : half + s1 - s0]
        return torch.from_numpy(out[lo * hop - s0 : hi * hop - s0])[None]

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
        self.noise_mag = self.noise_mag[cut:]
        self.f0, self.filled = self.f0[:, cut:], self.filled[:, cut:]
        self.white = self.white[:, cut * self.hop :]
        self.off = off

    def _empty(self) -> torch.Tensor:
        return torch.zeros(1, 0)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Frames `[count, n]` `hop` apart, summed into one signal `[n + hop (count - 1)]`:
    a frame spans n // hop hops, so it is added in hop-long pieces."""
    count, n = frames.shape
    out = np.zeros((count + n // hop - 1, hop), np.float32)
    for q in range(n // hop):
        out[q : q + count] += frames[:, q * hop : (q + 1) * hop]
    return out.reshape(-1)


def _on_cpu(module: torch.nn.Module) -> bool:
    return next(module.parameters()).device.type == "cpu"
