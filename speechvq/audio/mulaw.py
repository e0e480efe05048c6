"""8-bit mu-law companding (WaveNet, van den Oord et al. 2016, section 2.2) and pre-emphasis.

The same functions serve NumPy arrays (I/O) and torch tensors (training
targets).
"""

from __future__ import annotations

import numpy as np


def _xp(x):
    # mu-law is used on NumPy arrays (I/O) and torch tensors (training targets);
    # both libraries spell these ufuncs alike, so one implementation serves both.
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def mulaw_encode(wave, channels: int = 256):
    """Mu-law compand floats in [-1, 1] to integers in [0, channels) (WaveNet §2.2).

    Works on NumPy arrays and torch tensors of any shape; returns int64.
    """
    xp = _xp(wave)
    mu = channels - 1
    x = xp.clip(wave, -1.0, 1.0)
    y = xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.log1p(mu)
    q = xp.clip(xp.floor((y + 1) / 2 * mu + 0.5), 0, mu)
    return q.long() if xp is not np else q.astype(np.int64)


def mulaw_decode(index: np.ndarray, channels: int = 256) -> np.ndarray:
    """Inverse of `mulaw_encode` for NumPy: integers in [0, channels) to float32 in [-1, 1]."""
    mu = channels - 1
    y = 2 * (np.asarray(index, dtype=np.float64) / mu) - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def preemphasis(wave: np.ndarray, coef: float) -> np.ndarray:
    """y[t] = x[t] - coef * x[t-1]; boosts highs before mu-law, as LPCNet does."""
    if coef == 0:
        return wave
    out = np.empty_like(wave)
    out[0] = wave[0]
    out[1:] = wave[1:] - coef * wave[:-1]
    return out


def deemphasis(wave: np.ndarray, coef: float) -> np.ndarray:
    """Inverse of `preemphasis`: y[t] = x[t] + coef * y[t-1]."""
    if coef == 0:
        return wave
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -coef], wave).astype(np.float32)
