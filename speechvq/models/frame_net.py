"""The non-causal frame network: dilated residual 1-D convolutions over code frames.

Shared by the source-filter decoder (it predicts the harmonic and noise
envelopes) and the dilated F0 predictor.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from speechvq.models.causal import CausalConv1d, CompiledStream, Layer, pointwise

SLOPE = 0.2  # of the leaky ReLUs


class FrameNet(CompiledStream):
    """Dilated residual convolutions over frames: `[B, C_in, F]` to `[B, C, F]`.

    Non-causal (centred kernels) by default; `causal` pads on the left only
    (`models.causal.CausalConv1d`), so a frame reads no later one and the
    network can stream.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        layers: int,
        kernel: int,
        cycle: int,
        causal: bool = False,
    ):
        super().__init__()

        def conv(cin: int, d: int) -> nn.Module:
            if causal:
                return CausalConv1d(cin, channels, kernel, dilation=d)
            return nn.Conv1d(cin, channels, kernel, padding=d * (kernel // 2), dilation=d)

        self.inp = conv(in_channels, 1)
        self.blocks = nn.ModuleList()
        for i in range(layers):
            d = 2 ** (i % cycle)
            self.blocks.append(
                nn.Sequential(
                    nn.LeakyReLU(SLOPE),
                    conv(channels, d),
                    nn.LeakyReLU(SLOPE),
                    pointwise(channels, channels, causal),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._stream is not None:
            return self._stream(x)
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return F.leaky_relu(x, SLOPE)

    def stream_layers(self) -> list[Layer] | None:
        """`forward` as compiled steps (`models.causal.CompiledStream`); None if not causal."""
        if not isinstance(self.inp, CausalConv1d):
            return None
        layers = [Layer(self.inp)]
        for block in self.blocks:
            layers += [
                Layer(block[1], src=0, dst=1, pre=SLOPE),
                Layer(block[3], src=1, dst=0, pre=SLOPE, add=0),
            ]
        layers[-1] = dataclasses.replace(layers[-1], post=SLOPE)
        return layers
