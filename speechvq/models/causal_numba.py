"""The streaming step of a causal convolution, compiled with numba (optional).

`models.causal.CausalConv1d` streams a few frames at a time. In eager
PyTorch its step is some ten small calls (join the kept inputs, gather the
taps, reshape, matrix product, transpose) of 3-15 us each, and a streaming
model makes 36 such steps per 20 ms chunk: the calls, not the arithmetic,
were half the compute (docs/streaming.md). Here the step is one compiled
call, its matrix product in compiled loops. Kept apart because it is a second
implementation of `models.causal.unrolled_conv1d`, with its own dependency
(the `fast` extra); `conv_step_kernel()` is None without numba, and the
torch step runs instead. Tests check that both give the same outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


@functools.cache
def conv_step_kernel() -> Callable | None:
    """The compiled step `(past, x, weight, bias, kernel, stride, dilation) -> (out, past)`,
    or None without numba.

    `past` `[B, C, P]` are the inputs kept from earlier calls and `x` `[B, C, T]`
    the new ones (float32, C-contiguous); `weight` `[C', C * kernel]` is the
    convolution's weight `[C', C, kernel]` flattened, `bias` `[C']`. Returns the
    outputs `[B, C', n]` whose inputs have all arrived and the inputs to keep.
    Compiled on the first call of this function, then cached on disk.
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def step(past, x, weight, bias, kernel, stride, dilation):  # pragma: no cover (compiled)
        B, C, P = past.shape
        L = P + x.shape[2]
        span = (kernel - 1) * dilation + 1
        n = max(0, (L - span) // stride + 1)
        cout, width = weight.shape
        out = np.empty((B, cout, n), np.float32)
        keep = L - n * stride
        rest = np.empty((B, C, keep), np.float32)
        taps = np.empty((n, width), np.float32)  # each output's inputs, in the weight's order
        for b in range(B):
            for i in range(n):
                for c in range(C):
                    for j in range(kernel):
                        t = i * stride + j * dilation
                        taps[i, c * kernel + j] = past[b, c, t] if t < P else x[b, c, t - P]
            # The product in plain loops, not BLAS: a weight row is read once for all
            # n outputs, and no BLAS thread pool wakes up (one thread, as benchmarked).
            # Four outputs at a time share each load of the weight row.
            for o in range(cout):
                w = weight[o]
                i = 0
                while i + 4 <= n:
                    a0 = a1 = a2 = a3 = np.float32(0.0)
                    for q in range(width):
                        wq = w[q]
                        a0 += wq * taps[i, q]
                        a1 += wq * taps[i + 1, q]
                        a2 += wq * taps[i + 2, q]
                        a3 += wq * taps[i + 3, q]
                    out[b, o, i] = a0 + bias[o]
                    out[b, o, i + 1] = a1 + bias[o]
                    out[b, o, i + 2] = a2 + bias[o]
                    out[b, o, i + 3] = a3 + bias[o]
                    i += 4
                while i < n:
                    acc = np.float32(0.0)
                    for q in range(width):
                        acc += w[q] * taps[i, q]
                    out[b, o, i] = acc + bias[o]
                    i += 1
            for c in range(C):
                for t in range(keep):
                    s = n * stride + t
                    rest[b, c, t] = past[b, c, s] if s < P else x[b, c, s - P]
        return out, rest

    # Compile (or load from the cache) now, when a stream starts, not inside its first step.
    f32 = np.float32
    step(
        np.zeros((1, 1, 1), f32),
        np.zeros((1, 1, 1), f32),
        np.zeros((1, 2), f32),
        np.zeros(1, f32),
        2,
        1,
        1,
    )
    return step
