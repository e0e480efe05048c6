"""The decoder interface: what `SpeechVQ` asks of every decoder kind.

A decoder turns quantised latents `[B, D, F]`, speaker ids `[B]` and, with
the pitch path, F0 `[B, F]` (Hz, 0 = unvoiced) into speech. `SpeechVQ`
talks to its decoder through these three methods only, so a new kind (see
docs/architecture.md) is one module in this folder and one entry in
`speechvq.models.decoders.DECODERS`, and the model, the trainers and the
CLI need no change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class SynthesisOptions:
    """How to generate; each decoder kind uses the options that apply to it."""

    temperature: float = 1.0  # sampling temperature of autoregressive kinds (0: argmax)
    seed: int | None = None  # the same seed gives the same waveform
    exact: bool = False  # autoregressive kinds: one stream rather than folded segments
    fold: object | None = None  # the WaveNet's `folding.FoldConfig` (None: its default)


class Decoder(nn.Module):
    """Base class of the decoder kinds.

    A `speaker` argument is either ids `[B]` (rows of the decoder's own table
    of training voices, `self.speaker`) or voice vectors `[B, speaker_dim]`
    (from `models.speaker_encoder`); `voice` turns both into vectors.
    """

    speaker: nn.Embedding  # the table of training voices, [speakers, speaker_dim]
    # Whether `forward(latents, speaker, f0)` makes the whole waveform `[B, T]` in one
    # differentiable pass (what a loss on the output, or a code search, needs); an
    # autoregressive kind's training pass is teacher-forced instead.
    parallel: bool = False

    def voice(self, speaker: torch.Tensor) -> torch.Tensor:
        """Voice vectors `[B, S]` for speaker ids `[B]` or vectors `[B, S]`."""
        return speaker if speaker.is_floating_point() else self.speaker(speaker)

    def reconstruction_loss(
        self,
        wave: torch.Tensor,
        latents: torch.Tensor,
        speaker: torch.Tensor,
        f0: torch.Tensor | None,
    ) -> torch.Tensor:
        """The training loss (scalar) of reconstructing `wave` `[B, T]` from latents `[B, D, F]`."""
        raise NotImplementedError

    def reconstruct(
        self,
        wave: torch.Tensor,
        latents: torch.Tensor,
        speaker: torch.Tensor,
        f0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training loss and, for a kind that makes one in training (a parallel one),
        the reconstruction `[B, T]` it scored, for the adversarial losses; else None."""
        return self.reconstruction_loss(wave, latents, speaker, f0), None

    def synthesize(
        self,
        latents: torch.Tensor,
        speaker: torch.Tensor,
        f0: torch.Tensor | None,
        options: SynthesisOptions,
    ) -> np.ndarray:
        """Speech `[F * hop]` float32 for one utterance: latents `[1, D, F]`, speaker `[1]`."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for `speechvq info`."""
        raise NotImplementedError
