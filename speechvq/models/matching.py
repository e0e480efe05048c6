"""Latent statistics matching: the content of one voice, placed where another's lies.

The encoder's output keeps part of the speaker: over an utterance, each of
its dimensions has a mean and a spread that differ from voice to voice, and
the decoder hears them as voice as much as the speaker vector. One-shot
conversion therefore moves the input's latents to the target's statistics
before quantising them: each dimension is standardised over the input and
given the mean and spread it has over the target's reference recordings
(the per-dimension form of AdaIN, Huang & Belongie 2017, as AdaIN-VC uses it).
The words stay, as they live in how the latents move within an utterance,
not in their level. `knn_blend` then moves each frame part of the way to the
mean of its nearest frames of the target's own recordings (after kNN-VC,
Baas et al. 2023, which replaces frames outright; replacing cost more
intelligibility than it bought identification, docs/speaker.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_FRAMES = 250  # 1 s at 250 frames/s: statistics of less input are too noisy to move


@dataclass(frozen=True)
class LatentStats:
    """Per-dimension mean and spread `[D]` float32 of latents over some recordings."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, latents: np.ndarray) -> LatentStats:
        """The statistics of latents `[D, F]` over their frames."""
        z = np.asarray(latents)  # sums in float64, without a float64 copy of z
        mean, std = z.mean(axis=1, dtype=np.float64), z.std(axis=1, dtype=np.float64)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def move(self, z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """`z` `[D, F]` standardised by `mean` and `std` (`[D]` or `[D, F]`), given these."""
        scale = self.std[:, None] / np.maximum(std, 1e-5).reshape(z.shape[0], -1)
        return ((z - mean.reshape(z.shape[0], -1)) * scale + self.mean[:, None]).astype(np.float32)


def match_latents(latents: np.ndarray, target: LatentStats) -> np.ndarray:
    """Latents `[D, F]` with each dimension moved to `target`'s mean and spread.

    Input of under `MIN_FRAMES` frames is returned unchanged: its own
    statistics would be mostly its words.
    """
    z = np.asarray(latents, dtype=np.float32)
    if z.shape[1] < MIN_FRAMES:
        return z
    source = LatentStats.of(z)
    return target.move(z, source.mean, source.std)


def swap_statistics(latents, partner):
    """Training's counterpart of `match_latents`: latents `[B, D, F]` (a torch tensor),
    each item `i` standardised over its frames and given the per-dimension mean and
    spread of item `partner[i]` (`[B]` int64; `partner[i] == i` leaves it as it is).

    Decoding a crop's latents moved to another speaker's statistics, while the
    target stays the crop's own audio and the speaker vector its own speaker's,
    teaches the decoder to take the voice from the vector rather than from the
    latents' level, which is what `convert` replaces (TrainConfig.latent_swap).
    The partner's statistics are detached: they only set where the item lands.
    """
    import torch  # a training-time function; the rest of this module is NumPy

    mean = latents.mean(dim=2, keepdim=True)
    std = latents.std(dim=2, keepdim=True, unbiased=False).clamp(min=1e-5)
    moved = (latents - mean) / std * std[partner].detach() + mean[partner].detach()
    keep = (partner == torch.arange(len(partner), device=partner.device))[:, None, None]
    return torch.where(keep, latents, moved)


def knn_blend(
    latents: np.ndarray,
    frames: np.ndarray,
    *,
    k: int,
    amount: float,
    scale: np.ndarray | None = None,
    chunk: int = 4096,
) -> np.ndarray:
    """Latents `[D, F]` each moved `amount` of the way (0 keeps them, 1 replaces them) to
    the mean of its `k` nearest `frames` `[D, N]` (the target's own latents), by
    Euclidean distance over dimensions divided by `scale` `[D]` (None: the spread
    of `frames`, so that no dimension's range dominates). Frames are
    compared `chunk` at a time, so a long input needs `chunk * N` floats at once.
    """
    z = np.asarray(latents, dtype=np.float32)
    ref = np.asarray(frames, dtype=np.float32)
    if amount == 0.0 or ref.shape[1] == 0 or z.shape[1] == 0:
        return z
    k = min(k, ref.shape[1])
    scale = LatentStats.of(ref).std if scale is None else np.asarray(scale)
    w = 1.0 / np.maximum(scale, 1e-5)[:, None]
    r = (ref * w).T.astype(np.float32)  # [N, D], scaled
    r2 = np.einsum("nd,nd->n", r, r)
    out = np.empty_like(z)
    for start in range(0, z.shape[1], chunk):
        q = (z[:, start : start + chunk] * w).T.astype(np.float32)  # [c, D]
        dist = r2[None, :] - 2.0 * q @ r.T  # + |q|^2, the same along a row
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]  # [c, k]
        target = ref[:, nearest].mean(axis=2)  # [D, c]
        zc = z[:, start : start + chunk]
        out[:, start : start + chunk] = zc + amount * (target - zc)
    return out


class RunningMatch:
    """`match_latents` as frames arrive: each frame `[D]` is moved with the statistics of
    the frames up to and including it, from the `MIN_FRAMES`-th on (earlier frames pass
    unchanged). `push` gives the same frames however the input is cut: the sums run
    in float64 in frame order, as one `np.cumsum` over the whole input would."""

    def __init__(self, target: LatentStats):
        self.target = target
        self.frames = 0
        self.sum: np.ndarray | None = None  # [D] float64
        self.sumsq: np.ndarray | None = None

    def push(self, latents: np.ndarray) -> np.ndarray:
        """`[D, n]` latents (the frames after the last push's) moved; `[D, n]` float32."""
        z = np.asarray(latents, dtype=np.float32)
        n = z.shape[1]
        if n == 0:
            return z
        if self.sum is None:
            self.sum = np.zeros(z.shape[0])
            self.sumsq = np.zeros(z.shape[0])
        z64 = z.astype(np.float64)
        sums = np.cumsum(np.concatenate([self.sum[:, None], z64], axis=1), axis=1)[:, 1:]
        sumsqs = np.cumsum(np.concatenate([self.sumsq[:, None], z64**2], axis=1), axis=1)[:, 1:]
        self.sum, self.sumsq = sums[:, -1], sumsqs[:, -1]
        count = self.frames + np.arange(1, n + 1)
        self.frames += n
        mean = sums / count
        std = np.sqrt(np.maximum(sumsqs / count - mean**2, 0.0))
        moved = self.target.move(z, mean, std)
        keep = count < MIN_FRAMES
        moved[:, keep] = z[:, keep]
        return moved
