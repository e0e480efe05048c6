"""The fused per-sample WaveNet loop compiled with numba (optional).

`speechvq.models.decoders.synthesis.Synthesizer` runs a single stream (and batches up to
`NUMBA_MAX_BATCH`) through this loop when numba is installed: a step in eager
PyTorch is ~90 small calls of ~1-5 us each, and at batch 1 that overhead
weighs as much as the arithmetic. Kept apart because it is a second
implementation of the same step, in plain loops, with its own dependency;
`numba_kernel()` is None without numba and the torch loop runs instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


@functools.cache
def numba_kernel() -> Callable | None:
    """The fused per-sample loop compiled with numba (optional: None without numba).

    Eager PyTorch spends ~1-5 us per call and a step makes ~90 calls, while
    at batch 1 the arithmetic is ~1 M multiply-adds whose 4 MB of weights
    stream from the L3 cache (~100 us): the fused loop removes the calls.
    Row by row (a batch costs B times one row); compiled once, then cached
    on disk. Same weights and tapes layout as the torch loop, but a ring
    buffer per layer (index arithmetic is free here).
    """
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def run(n, t0, hop, mode, cproj, srcx, inp, u, logits, ring, offs, dil, tap_w, res_w,
            skip_w, h1w, h1b, h2w, h2b, embed):  # fmt: skip
        L, KR, G2 = tap_w.shape
        G, R, S, E, Q = G2 // 2, embed.shape[1], skip_w.shape[2], h1w.shape[1], h2w.shape[1]
        K = KR // R
        x, xn = np.empty(R, np.float32), np.empty(R, np.float32)
        h, z = np.empty(G2, np.float32), np.empty(G, np.float32)
        skip, e, lg = np.empty(S, np.float32), np.empty(E, np.float32), np.empty(Q, np.float32)
        for b in range(inp.shape[1]):
            for k in range(n):
                t = t0 + k
                q = inp[k, b]
                for r in range(R):
                    x[r] = embed[q, r] + srcx[k, b, r]
                skip[:] = 0.0
                for i in range(L):
                    d, off = dil[i], offs[i]
                    ctx = (K - 1) * d
                    h[:] = cproj[k // hop, b, i]
                    for j in range(K):  # oldest input first
                        lag = (K - 1 - j) * d
                        v = x if lag == 0 else ring[b, off + (t - lag) % ctx]
                        for r in range(R):
                            vr = v[r]
                            for o in range(G2):
                                h[o] += vr * tap_w[i, j * R + r, o]
                    if ctx > 0:
                        ring[b, off + t % ctx] = x  # after reading x(t - ctx) from this slot
                    for g in range(G):  # -tanh(a) sigmoid(b), the tanh half pre-scaled by 2
                        sb = 1.0 / (1.0 + np.exp(-h[G + g]))
                        z[g] = sb - 2.0 * sb / (1.0 + np.exp(-h[g]))
                    for o in range(S):
                        skip[o] += skip_w[i, G, o]
                    for g in range(G):
                        for o in range(S):
                            skip[o] += z[g] * skip_w[i, g, o]
                    if i < L - 1:
                        for o in range(R):
                            xn[o] = x[o] + res_w[i, G, o]
                        for g in range(G):
                            for o in range(R):
                                xn[o] += z[g] * res_w[i, g, o]
                        x, xn = xn, x
                e[:] = h1b
                for s in range(S):
                    if skip[s] > 0:
                        for o in range(E):
                            e[o] += skip[s] * h1w[s, o]
                lg[:] = h2b
                for s in range(E):
                    if e[s] > 0:
                        for o in range(Q):
                            lg[o] += e[s] * h2w[s, o]
                if mode == 0:  # teacher forcing
                    logits[b, t] = lg
                    continue
                best = 0
                if mode == 1:  # argmax
                    for q in range(Q):
                        if lg[q] > lg[best]:
                            best = q
                else:  # inverse CDF, as torch.searchsorted(cdf[:Q-1], u, right=True)
                    top = lg.max()
                    tot = 0.0
                    for q in range(Q):
                        lg[q] = np.exp(lg[q] - top)
                        tot += lg[q]
                    target, acc = u[k, b, 0] * tot, 0.0
                    while best < Q - 1:
                        acc += lg[best]
                        if acc > target:
                            break
                        best += 1
                inp[k + 1, b] = best

    return run
