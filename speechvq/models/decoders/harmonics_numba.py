"""The harmonic bank of a few streamed frames, compiled with numba (optional).

`SourceFilterDecoder._harmonics` samples each frame's envelope at the
harmonics of F0, interpolates amplitudes and F0 sample by sample, runs the
phase and sums the sines: some 40 small torch calls, about 1 ms of a 20 ms
streaming step on one thread, where the arithmetic (5 frames x 64 samples x
128 harmonics) takes a tenth of that. Here it is one compiled loop. Kept
apart because it is a second implementation of `_harmonics` (and of
`harmonic_amplitudes` and `interp_frames` on the way), used by
`synthesis_stream.SynthesisStream` only; `harmonic_kernel()` is None without
numba and the torch path runs. Tests check both against the offline decode.

The sines come from a rotation, sin(k phi) = Im(e^{i phi})^k, in float64, so
128 harmonics cost 128 complex multiplications a sample instead of 128 sines;
torch takes sin(k phi) in float32, so the two differ by about 1e-5 of the
amplitude (the tests allow 2e-4).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np


@functools.cache
def harmonic_kernel() -> Callable | None:
    """The compiled `(env, f0, voiced, t0, t1, hop, sample_rate, harmonics, phase) -> (out,
    phase)`, or None without numba.

    `env` `[f, E]` (float32) is the pre-activation log-envelope of frames
    whose samples t0..t1-1 (counted from the first of them) are wanted, with
    the neighbours their interpolation reads; `f0` `[f]` is F0 with unvoiced
    frames filled (`fill_unvoiced`), `voiced` `[f]` 1 or 0; `phase` the running
    phase in radians before sample t0. Returns the samples `[t1 - t0]` (float32)
    and the phase after them. As `_harmonics` for one row of a batch.
    """
    try:
        import numba
    except ImportError:
        return None

    ln10 = math.log(10.0)
    two_pi = 2.0 * math.pi

    @numba.njit(cache=True, nogil=True, fastmath=False)
    def render(env, f0, voiced, t0, t1, hop, sample_rate, harmonics, phase):  # pragma: no cover
        frames, E = env.shape
        nyquist = sample_rate / 2.0
        # Amplitude of each harmonic in each frame: the envelope at k F0 (harmonic_amplitudes).
        amps = np.zeros((frames, harmonics), np.float32)
        for f in range(frames):
            if voiced[f] == 0.0:
                continue
            for k in range(harmonics):
                freq = np.float32(f0[f] * np.float32(k + 1))
                if freq >= nyquist:
                    break
                pos = min(max(freq / np.float32(nyquist) * np.float32(E - 1), 0.0), E - 1.0)
                i0 = min(int(math.floor(pos)), E - 2)
                w = np.float32(pos - i0)
                lo = 2.0 * (1.0 / (1.0 + math.exp(-env[f, i0]))) ** ln10 + 1e-7
                hi = 2.0 * (1.0 / (1.0 + math.exp(-env[f, i0 + 1]))) ** ln10 + 1e-7
                amps[f, k] = np.float32(lo) * (1 - w) + np.float32(hi) * w
        out = np.empty(t1 - t0, np.float32)
        a = np.empty(harmonics, np.float32)
        for t in range(t0, t1):
            # Frame values at sample t, between frame centres (interp_frames).
            u = min(max((t + 0.5) / hop - 0.5, 0.0), frames - 1.0)
            i0 = min(int(math.floor(u)), max(frames - 2, 0))
            i1 = min(i0 + 1, frames - 1)
            w = u - i0
            f0_t = f0[i0] * (1.0 - w) + f0[i1] * w
            wf = np.float32(w)
            for k in range(harmonics):
                a[k] = amps[i0, k] * (1 - wf) + amps[i1, k] * wf
            phase = (phase + two_pi * f0_t / sample_rate) % two_pi
            c1, s1 = math.cos(phase), math.sin(phase)
            c, s, acc = 1.0, 0.0, 0.0
            for k in range(harmonics):  # (c, s) = e^{i (k + 1) phase}
                c, s = c * c1 - s * s1, s * c1 + c * s1
                acc += s * a[k]
            out[t - t0] = acc
        return out, phase

    f32 = np.float32
    # Compile (or load from the cache) now, when a stream starts, not inside its first step.
    render(np.zeros((2, 3), f32), np.full(2, 100.0), np.ones(2, f32), 0, 2, 1, 16000.0, 2, 0.0)
    return render
