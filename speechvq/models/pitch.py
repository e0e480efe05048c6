"""The pitch path: a harmonic excitation for the WaveNet and an F0 predictor.

A WaveNet decoder trained for a few CPU-hours does not learn to invent
periodicity (issue 7 measured noise shaped by the envelope). Following the
neural source-filter idea (Wang et al. 2019, "Neural source-filter-based
waveform model"), the decoder is given sines at the first harmonics of F0 as
extra input channels, so it shapes an excitation instead of inventing one.

F0 at decode time comes from `PitchPredictor`: a small convolutional network
reading the quantised latents and producing a *speaker-normalised* log-F0
contour and voicing. The decoding speaker's log-F0 mean and spread (measured
on the training data, stored in the model) set the level and range, so the
codes and the bitrate are unchanged and voice conversion moves the pitch to
the target speaker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechvq.config import PitchConfig
from speechvq.models.causal import CausalConv1d, CompiledStream, Layer, pointwise

# Global scaling of log-F0 for the decoder's conditioning input.
LOG_F0_CENTER = math.log(150.0)
LOG_F0_SCALE = math.log(2.0)


def harmonic_source(
    f0: torch.Tensor,
    hop_length: int,
    sample_rate: int,
    harmonics: int,
    amplitude: float,
    phase: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sines at harmonics of F0: `[B, F]` frame F0 in Hz (0 = unvoiced) to `[B, F * hop, H]`.

    F0 is held constant over each frame (the running phase keeps the sines
    continuous); harmonics above Nyquist and unvoiced samples are zero.
    `phase` `[B]` is the initial phase in radians (random in training).
    """
    f0_s = f0.repeat_interleave(hop_length, dim=1)  # (B, T)
    phi = 2 * math.pi * torch.cumsum(f0_s / sample_rate, dim=1)
    if phase is not None:
        phi = phi + phase[:, None]
    k = torch.arange(1, harmonics + 1, device=f0.device, dtype=f0.dtype)
    arg = phi[:, :, None] * k  # (B, T, H)
    below_nyquist = (f0_s[:, :, None] * k) < sample_rate / 2
    voiced = (f0_s > 0)[:, :, None]
    return amplitude * torch.sin(arg) * (below_nyquist & voiced)


def pitch_features(f0: torch.Tensor) -> torch.Tensor:
    """`[B, F]` F0 in Hz to `[B, 2, F]` decoder conditioning: scaled log-F0 and voicing."""
    voiced = (f0 > 0).to(f0.dtype)
    logf0 = torch.log(f0.clamp(min=1.0))
    scaled = (logf0 - LOG_F0_CENTER) / LOG_F0_SCALE * voiced
    return torch.stack([scaled, voiced], dim=1)


@dataclass
class PitchPrediction:
    norm_logf0: torch.Tensor  # [B, F], speaker-normalised log-F0
    voicing_logit: torch.Tensor  # [B, F]


class PitchPredictor(CompiledStream):
    """`[B, D, F]` latents to a speaker-normalised log-F0 contour and voicing logits."""

    def __init__(self, latent_dim: int, cfg: PitchConfig):
        super().__init__()
        if cfg.predictor_dilation_cycle:
            # Dilated residual blocks (`source_filter.FrameNet`): +-63 frames (252 ms)
            # of context with 6 layers, where plain convs see +-6 frames. An option,
            # not yet shown to help (docs/pitch.md).
            from speechvq.models.frame_net import FrameNet

            ch = cfg.predictor_channels
            self.net = nn.Sequential(
                FrameNet(
                    latent_dim,
                    ch,
                    cfg.predictor_layers,
                    3,
                    cfg.predictor_dilation_cycle,
                    causal=cfg.causal,
                ),
                pointwise(ch, 2, cfg.causal),
            )
            return
        layers: list[nn.Module] = []
        ch = latent_dim
        for _ in range(cfg.predictor_layers):
            if cfg.causal:  # reads the frame and the 4 before it
                layers += [CausalConv1d(ch, cfg.predictor_channels, 5), nn.ReLU()]
            else:
                layers += [nn.Conv1d(ch, cfg.predictor_channels, 5, padding=2), nn.ReLU()]
            ch = cfg.predictor_channels
        layers += [pointwise(ch, 2, cfg.causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> PitchPrediction:
        out = self.net(latents) if self._stream is None else self._stream(latents)  # (B, 2, F)
        return PitchPrediction(norm_logf0=out[:, 0], voicing_logit=out[:, 1])

    def stream_layers(self) -> list[Layer] | None:
        """The plain causal net as compiled steps (`models.causal.CompiledStream`); None
        otherwise (a dilated `FrameNet` streams as its own compiled steps)."""
        if not all(isinstance(m, CausalConv1d | nn.ReLU) for m in self.net):
            return None
        layers: list[Layer] = []
        for m in self.net:
            if isinstance(m, nn.ReLU):
                layers[-1] = dataclasses.replace(layers[-1], post=0.0)
            else:
                layers.append(Layer(m))
        return layers

    @staticmethod
    def loss(
        pred: PitchPrediction, f0: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """Voicing BCE plus L1 on normalised log-F0 of voiced frames; mean/std `[B]`."""
        voiced = f0 > 0
        bce = F.binary_cross_entropy_with_logits(pred.voicing_logit, voiced.float())
        target = (torch.log(f0.clamp(min=1.0)) - mean[:, None]) / std[:, None]
        if voiced.any():
            l1 = (pred.norm_logf0 - target).abs()[voiced].mean()
        else:
            l1 = pred.norm_logf0.sum() * 0
        return bce + l1

    @staticmethod
    def to_hz(
        pred: PitchPrediction, mean: torch.Tensor, std: torch.Tensor, cfg: PitchConfig
    ) -> torch.Tensor:
        """Predicted F0 `[B, F]` in Hz (0 = unvoiced) for log-F0 `mean`, `std` `[B]`."""
        logf0 = mean[:, None] + std[:, None] * pred.norm_logf0
        f0 = torch.exp(logf0).clamp(cfg.f0_floor, cfg.f0_ceil)
        return f0 * (pred.voicing_logit > 0)
