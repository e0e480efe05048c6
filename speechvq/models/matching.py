"""Latent statistics matching: the content of one voice, placed where another's lies.

The encoder's output keeps part of the speaker: over an utterance, each of
its dimensions has a mean and a spread that differ from voice to voice, and
the decoder hears them as voice as much as the speaker vector. One-shot
conversion therefore moves the input's latents to the target's statistics
before quantising them: each dimension is standardised over the input and
given the mean and spread it has over the target's reference recordings
(the per-dimension form of AdaIN, Huang & Belongie 2017, as AdaIN-VC uses it;
kNN-VC's frame matching measured better identification but cost more
intelligibility, docs/speaker.md). The words stay, as they live in how the
latents move within an utterance, not in their level.
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


def match_latents(latents: np.ndarray, target: LatentStats) -> np.ndarray:
    """Latents `[D, F]` with each dimension moved to `target`'s mean and spread.

    Input of under `MIN_FRAMES` frames is returned unchanged: its own
    statistics would be mostly its words.
    """
    z = np.asarray(latents, dtype=np.float32)
    if z.shape[1] < MIN_FRAMES:
        return z
    source = LatentStats.of(z)
    scale = target.std / np.maximum(source.std, 1e-5)
    return ((z - source.mean[:, None]) * scale[:, None] + target.mean[:, None]).astype(np.float32)
