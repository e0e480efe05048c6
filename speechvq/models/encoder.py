"""The encoder: raw waveform to latents 64x shorter (VQ-VAE §4.3).

"The encoder has 6 strided convolutions with stride 2 and window-size 4",
followed here by residual blocks of dilated convolutions at the frame rate so
that each latent sees some context, and a 1x1 projection to the latent size D.
"""

from __future__ import annotations

import torch
from torch import nn

from speechvq.config import EncoderConfig
from speechvq.models.causal import CausalConv1d, CompiledStream, Layer, pointwise


class ResidualBlock(nn.Module):
    """ReLU, dilated conv (kernel 3), ReLU, 1x1 conv, plus the input. Shape-preserving."""

    def __init__(self, channels: int, dilation: int, causal: bool = False):
        super().__init__()
        if causal:
            self.conv = CausalConv1d(channels, channels, 3, dilation=dilation)
        else:
            self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation)
        self.proj = pointwise(channels, channels, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.conv(torch.relu(x))))


class Encoder(CompiledStream):
    """`[B, 1, T]` waveform to `[B, D, T / 2**downsamples]` latents.

    T must be a multiple of the hop (`SpeechVQ.encode` pads); each strided
    conv (kernel 4, stride 2, padding 1) halves the length exactly. With
    `cfg.causal` every convolution is padded on the left only
    (`models.streaming.CausalConv1d`), so the encoder can stream.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.hop = 2**cfg.downsamples
        pad = (cfg.kernel_size - 2) // 2
        layers: list[nn.Module] = []
        in_ch = 1
        for _ in range(cfg.downsamples):
            if cfg.causal:
                layers += [CausalConv1d(in_ch, cfg.channels, cfg.kernel_size, stride=2)]
            else:
                layers += [nn.Conv1d(in_ch, cfg.channels, cfg.kernel_size, stride=2, padding=pad)]
            layers += [nn.ReLU()]
            in_ch = cfg.channels
        self.downsample = nn.Sequential(*layers)
        self.blocks = nn.Sequential(
            *[ResidualBlock(cfg.channels, 3**i, cfg.causal) for i in range(cfg.residual_blocks)]
        )
        self.out = pointwise(cfg.channels, cfg.latent_dim, cfg.causal)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He init with zero biases, residual branches starting at zero.

        With PyTorch's default init the frame-to-frame variation of the
        latents shrinks layer by layer while the biases add a shared offset:
        all latents sit in a tiny cloud, k-means tiles it, and the first
        optimiser steps shift the cloud onto a single code (measured: batch
        perplexity 120 -> 11 in 3 steps). Signal-preserving init avoids that.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            nn.init.zeros_(block.proj.weight)
        nn.init.xavier_uniform_(self.out.weight)

    @property
    def context(self) -> tuple[int, int]:
        """Frames (before, after) of audio that a frame's latent reads beyond its own.

        Each strided conv (kernel k, stride 2, left padding p) maps output i
        to inputs [2i - p, 2i - p + k - 1]; over n of them frame f reads
        samples [hop f - p (hop - 1), hop f + (k - 1 - p)(hop - 1)]. The
        residual blocks (kernel 3, dilation 3**i) then widen that by
        sum(3**i) frames on each side, or 2 sum(3**i) before when causal.
        """
        cfg, hop = self.cfg, self.hop
        blocks = sum(3**i for i in range(cfg.residual_blocks))
        pad = cfg.kernel_size - 2 if cfg.causal else (cfg.kernel_size - 2) // 2
        left = -(-pad * (hop - 1) // hop)
        right = -(-max(0, (cfg.kernel_size - 2 - pad) * (hop - 1)) // hop)
        if cfg.causal:
            return left + 2 * blocks, right
        return left + blocks, right + blocks

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        B, C, T = wave.shape
        assert C == 1 and T % self.hop == 0, f"expected [B, 1, T] with T % {self.hop} == 0"
        if self._stream is not None:
            return self._stream(wave)
        h = self.downsample(wave)  # (B, C, T / hop)
        h = self.blocks(h)
        return self.out(torch.relu(h))  # (B, D, F)

    def stream_layers(self) -> list[Layer] | None:
        """`forward` as compiled steps (`models.causal.CompiledStream`); None if not causal."""
        if not self.cfg.causal:
            return None
        relu = 0.0  # the slope of a ReLU
        layers = [Layer(m, post=relu) for m in self.downsample if isinstance(m, CausalConv1d)]
        for block in self.blocks:
            layers += [
                Layer(block.conv, src=0, dst=1, pre=relu),
                Layer(block.proj, src=1, dst=0, pre=relu, add=0),
            ]
        return [*layers, Layer(self.out, pre=relu)]
