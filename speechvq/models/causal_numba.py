"""The streaming step of a causal convolution, compiled with numba (optional).

`models.causal.CausalConv1d` streams a few frames at a time. In eager
PyTorch its step is some ten small calls (join the kept inputs, gather the
taps, reshape, matrix product, transpose) of 3-15 us each, and a streaming
model makes 36 such steps per 20 ms chunk: the calls, not the arithmetic,
were half the compute (docs/streaming.md). Here the step is one compiled
call, its matrix product in compiled loops, and it can also apply the
activation before and after the convolution and add a residual, so that a
whole network streams as a list of these steps (`models.causal.Layer`) with
nothing between them. Kept apart because it is a second implementation of
`models.causal.unrolled_conv1d`, with its own dependency (the `fast` extra);
`conv_step_kernel()` is None without numba, and the torch step runs instead.
Tests check that both give the same outputs.

The arrays are time-major (`[B, T, C]`, channels last): a kernel tap then
reads one contiguous row of C inputs, and, with dilation 1, the k taps of an
output are k C contiguous values, so nothing is gathered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


@functools.cache
def conv_step_kernel() -> Callable | None:
    """The compiled step
    `(past, x, weight, bias, kernel, stride, dilation, pre, post, residual) -> (out, past)`,
    or None without numba.

    `past` `[B, P, C]` are the inputs kept from earlier calls (after the input
    activation) and `x` `[B, T, C]` the new ones (float32, C-contiguous,
    time-major); `weight` `[C', kernel * C]` is the convolution's weight
    `[C', C, kernel]` with its tap axis first (`[C', kernel, C]`) and flattened,
    `bias` `[C']`. `pre` and `post` are the negative slopes of leaky ReLUs
    applied to the inputs and to the outputs (0 a ReLU, 1 none), and
    `residual` `[B, n, C']` is added before `post` (a `[B, 0, 0]` array adds
    nothing). Returns the outputs `[B, n, C']` whose inputs have all arrived
    and the inputs to keep. Compiled on the first call of this function, then
    cached on disk.
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _narrow(window, weight, bias, out, n, advance, run):  # pragma: no cover (compiled)
        """`out` `[n, C']` of outputs that read `run` (< 16) inputs each, `advance` apart:
        vectorised over the outputs' channels, as a loop over the inputs cannot be."""
        wt = np.ascontiguousarray(weight.T)  # (run, C')
        for i in range(n):
            row = out[i]
            row[:] = bias
            for q in range(run):
                v = window[i * advance + q]
                taps = wt[q]
                for o in range(row.size):
                    row[o] += taps[o] * v

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def step(
        past, x, weight, bias, kernel, stride, dilation, pre, post, residual
    ):  # pragma: no cover (compiled)
        B, P, C = past.shape
        T = x.shape[1]
        L = P + T
        span = (kernel - 1) * dilation + 1
        n = max(0, (L - span) // stride + 1)
        cout = weight.shape[0]
        keep = L - n * stride
        out = np.empty((B, n, cout), np.float32)
        rest = np.empty((B, keep, C), np.float32)
        window = np.empty(L * C, np.float32)  # the kept and the new inputs, time-major
        # With dilation 1 an output's taps are one run of kernel * C inputs; else
        # `kernel` runs of C, `dilation` rows apart.
        runs, run = (1, kernel * C) if dilation == 1 else (kernel, C)
        for b in range(B):
            window[: P * C] = past[b].reshape(P * C)
            for t in range(T):
                for c in range(C):
                    v = x[b, t, c]
                    window[(P + t) * C + c] = v if v >= 0 else pre * v
            if runs == 1 and run < 16:  # a few inputs an output (the first layer, on samples)
                _narrow(window, weight, bias, out[b], n, stride * C, run)
                first = cout  # done: skip the loop below
            else:
                first = 0
            # The product in plain loops, not BLAS: a weight row is read once for
            # four outputs, and no BLAS thread pool wakes up (one thread, as
            # benchmarked; at 5 frames BLAS is no faster here).
            for o in range(first, cout):
                w = weight[o]
                i = 0
                while i + 4 <= n:
                    a0 = a1 = a2 = a3 = np.float32(0.0)
                    for g in range(runs):
                        wg = w[g * run : (g + 1) * run]
                        s0 = (i * stride + g * dilation) * C
                        r0 = window[s0 : s0 + run]
                        r1 = window[s0 + stride * C : s0 + stride * C + run]
                        r2 = window[s0 + 2 * stride * C : s0 + 2 * stride * C + run]
                        r3 = window[s0 + 3 * stride * C : s0 + 3 * stride * C + run]
                        for q in range(run):
                            wq = wg[q]
                            a0 += wq * r0[q]
                            a1 += wq * r1[q]
                            a2 += wq * r2[q]
                            a3 += wq * r3[q]
                    out[b, i, o] = a0 + bias[o]
                    out[b, i + 1, o] = a1 + bias[o]
                    out[b, i + 2, o] = a2 + bias[o]
                    out[b, i + 3, o] = a3 + bias[o]
                    i += 4
                while i < n:
                    acc = np.float32(0.0)
                    for g in range(runs):
                        wg = w[g * run : (g + 1) * run]
                        s0 = (i * stride + g * dilation) * C
                        r0 = window[s0 : s0 + run]
                        for q in range(run):
                            acc += wg[q] * r0[q]
                    out[b, i, o] = acc + bias[o]
                    i += 1
            for i in range(n if residual.shape[1] else 0):
                for o in range(cout):
                    out[b, i, o] += residual[b, i, o]
            if post != 1.0:
                for i in range(n):
                    for o in range(cout):
                        v = out[b, i, o]
                        out[b, i, o] = v if v >= 0 else post * v
            rest[b] = window[n * stride * C :].reshape(keep, C)
        return out, rest

    # Compile (or load from the cache) now, when a stream starts, not inside its first step.
    f32 = np.float32
    none = np.zeros((1, 0, 0), f32)
    step(np.zeros((1, 1, 1), f32), np.zeros((1, 1, 1), f32), np.zeros((1, 2), f32),
         np.zeros(1, f32), 2, 1, 1, 1.0, 1.0, none)  # fmt: skip
    return step
