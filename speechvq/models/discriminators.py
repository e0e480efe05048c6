"""Waveform discriminators for adversarial training of parallel decoders (issue 17).

Spectral losses alone leave vocoders buzzy and smeared: they are blind to
phase and average over fine structure. HiFi-GAN (Kong et al. 2020) and
UnivNet (Jang et al. 2021) remove that with discriminators that look at
the waveform the way the loss cannot:

- `PeriodDiscriminator`s (HiFi-GAN's multi-period discriminator): the
  waveform folded into rows of `period` samples, 2-D convolutions down the
  rows, so each sees the periodic structure at one lag (2, 3, 5, 7, 11);
- `ResolutionDiscriminator`s (UnivNet's multi-resolution discriminator):
  2-D convolutions over an STFT magnitude at one resolution.

`Discriminators` runs them all and returns, for each, its logits and the
feature maps of every layer (for the feature-matching loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass(frozen=True)
class DiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: int = 16  # HiFi-GAN: 32 (widths 32, 128, 512, 1024, 1024)
    resolutions: tuple[tuple[int, int], ...] = ((1024, 256), (2048, 512), (512, 128))
    resolution_channels: int = 32  # UnivNet: 32


Output = tuple[torch.Tensor, list[torch.Tensor]]  # logits, feature maps


def _stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> Output:
    """2-D convolutions with leaky ReLUs, then `post`: the logits and every layer's output."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int):
        super().__init__()
        self.period = period
        widths = [1, channels, 4 * channels, 8 * channels, 16 * channels, 16 * channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> Output:
        """`[B, T]` to logits `[B, rows]` and the feature maps."""
        B, T = wave.shape
        pad = -T % self.period
        x = F.pad(wave, (0, pad), mode="reflect" if pad < T else "constant")
        return _stack(self.convs, self.post, x.view(B, 1, -1, self.period))


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        C = channels
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, C, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(C, C, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(C, C, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(C, C, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(C, C, (3, 3), padding=(1, 1))),
            ]
        )
        self.post = weight_norm(nn.Conv2d(C, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: torch.Tensor) -> Output:
        """`[B, T]` to logits `[B, frames * bins]` and the feature maps."""
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(), self.n_fft, self.hop, window=self.window, return_complex=True
            )
        return _stack(self.convs, self.post, spec.abs().transpose(1, 2)[:, None])


class Discriminators(nn.Module):
    """All the period and resolution discriminators of `cfg`."""

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.nets = nn.ModuleList(
            [PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods]
            + [ResolutionDiscriminator(n, h, cfg.resolution_channels) for n, h in cfg.resolutions]
        )

    def forward(self, wave: torch.Tensor) -> list[Output]:
        return [net(wave) for net in self.nets]
