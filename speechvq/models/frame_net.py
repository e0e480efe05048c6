"""The non-causal frame network: dilated residual 1-D convolutions over code frames.

Shared by the source-filter decoder (it predicts the harmonic and noise
envelopes) and the dilated F0 predictor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameNet(nn.Module):
    """Non-causal dilated residual convolutions over frames: `[B, C_in, F]` to `[B, C, F]`."""

    def __init__(self, in_channels: int, channels: int, layers: int, kernel: int, cycle: int):
        super().__init__()
        self.inp = nn.Conv1d(in_channels, channels, kernel, padding=kernel // 2)
        self.blocks = nn.ModuleList()
        for i in range(layers):
            d = 2 ** (i % cycle)
            self.blocks.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2),
                    nn.Conv1d(channels, channels, kernel, padding=d * (kernel // 2), dilation=d),
                    nn.LeakyReLU(0.2),
                    nn.Conv1d(channels, channels, 1),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return F.leaky_relu(x, 0.2)
