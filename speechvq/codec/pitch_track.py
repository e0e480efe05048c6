"""The pitch track: the input's own F0, coarsely, beside the codes of an `.svq` file.

The codes carry pitch only as well as the F0 predictor reads it from them, and
that is the weakest link of the decoder: on 12 held-out files of seen speakers,
`small` decoded with the tracker's F0 instead of the predictor's scores STOI
0.839 against 0.789 and PESQ 1.55 against 1.21 (docs/pitch.md). So a file can
carry the tracker's F0, as codec2 and every vocoder codec carry theirs:

- one symbol per block of `block` code frames (5 frames = 20 ms at 250 Hz):
  0 when under half of the block is voiced, else 1 + the level of the block's
  mean log-F0 on a grid of `LEVELS` steps from `F0_MIN` to `F0_MAX` (4.5% a
  step, so within 2.3% of the mean);
- sent as the step from the previous voiced block's level (mod `LEVELS`), so
  a steady or gliding voice repeats a few small symbols, range-coded under
  the `adaptive` model of `speechvq.codec.entropy` (140-170 bit/s on
  held-out speech);
- decoded back to frames by interpolating log-F0 between the centres of
  voiced blocks, each block's frames voiced or not as the block.

Only numbers here (no model, no torch): `speechvq.inference.compression` puts
the track in the file and gives it to the decoder.
"""

from __future__ import annotations

import math

import numpy as np

from speechvq.codec.entropy import AdaptiveSource, decode_codes, encode_codes

F0_MIN = 50.0  # Hz, the tracker's floor (speechvq.audio.f0)
F0_MAX = 800.0
LEVELS = 64
NUM_SYMBOLS = LEVELS + 1  # 0 = unvoiced
BLOCK_SECONDS = 0.02
_STEP = math.log(F0_MAX / F0_MIN) / (LEVELS - 1)  # log-F0 per level


def block_frames(frame_rate: float) -> int:
    """Code frames per block of the track: 20 ms worth, at least one."""
    return max(1, round(BLOCK_SECONDS * frame_rate))


def to_symbols(f0: np.ndarray, block: int) -> np.ndarray:
    """Frame F0 `[F]` in Hz (0 = unvoiced) to block symbols `[ceil(F / block)]` int64."""
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    n = -(-f0.size // block)
    padded = np.zeros(n * block)
    padded[: f0.size] = f0
    blocks = padded.reshape(n, block)
    voiced = blocks > 0
    count = voiced.sum(axis=1)
    logs = np.log(np.where(voiced, blocks, 1.0)).sum(axis=1)  # log 1 = 0: unvoiced add nothing
    mean = logs / np.maximum(count, 1)
    level = np.clip(np.round((mean - math.log(F0_MIN)) / _STEP), 0, LEVELS - 1).astype(np.int64)
    return np.where(2 * count >= block, 1 + level, 0)


def to_f0(symbols: np.ndarray, num_frames: int, block: int) -> np.ndarray:
    """Block symbols back to frame F0 `[num_frames]` float32 in Hz (0 = unvoiced)."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    voiced = symbols > 0
    frames = np.arange(num_frames)
    if not voiced.any():
        return np.zeros(num_frames, dtype=np.float32)
    centres = np.flatnonzero(voiced) * block + (block - 1) / 2
    logf0 = math.log(F0_MIN) + (symbols[voiced] - 1) * _STEP
    contour = np.exp(np.interp(frames, centres, logf0))
    frame_voiced = np.repeat(voiced, block)[:num_frames]
    return np.where(frame_voiced, contour, 0.0).astype(np.float32)


def move_level(f0: np.ndarray, logf0_mean: float, logf0_std: float) -> np.ndarray:
    """F0 `[F]` given the log-F0 mean and spread of another voice: each voiced frame's
    log-F0 standardised over the track's voiced frames, then scaled to theirs (the
    intonation kept, the register moved; as conversion moves the predictor's F0)."""
    f0 = np.asarray(f0, dtype=np.float32)
    voiced = f0 > 0
    if voiced.sum() < 2:
        return np.where(voiced, np.float32(math.exp(logf0_mean)), 0.0).astype(np.float32)
    logs = np.log(f0[voiced].astype(np.float64))
    spread = max(float(logs.std()), 1e-3)
    moved = logf0_mean + logf0_std * (logs - logs.mean()) / spread
    out = np.zeros_like(f0)
    out[voiced] = np.exp(moved)
    return out


def to_steps(symbols: np.ndarray) -> np.ndarray:
    """Symbols to what is coded: 0 stays 0 (unvoiced); a voiced block is 1 + its level's
    step up from the previous voiced block's (mod LEVELS; the first from level 0)."""
    out = np.zeros(len(symbols), dtype=np.int64)
    previous = 0
    for i, s in enumerate(np.asarray(symbols, dtype=np.int64)):
        if s > 0:
            out[i] = 1 + (s - 1 - previous) % LEVELS
            previous = s - 1
    return out


def from_steps(steps: np.ndarray) -> np.ndarray:
    """The inverse of `to_steps`."""
    out = np.zeros(len(steps), dtype=np.int64)
    previous = 0
    for i, s in enumerate(np.asarray(steps, dtype=np.int64)):
        if s > 0:
            previous = (previous + s - 1) % LEVELS
            out[i] = 1 + previous
    return out


def encode_track(symbols: np.ndarray) -> bytes:
    """Block symbols to range-coded bytes (steps under the adaptive model)."""
    return encode_codes(to_steps(symbols), AdaptiveSource(NUM_SYMBOLS))


def decode_track(data: bytes, num_blocks: int) -> np.ndarray:
    """`num_blocks` block symbols from the bytes of `encode_track`."""
    return from_steps(decode_codes(data, num_blocks, AdaptiveSource(NUM_SYMBOLS)))
