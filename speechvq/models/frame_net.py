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
CHUNK_FRAMES = 5000  # 20 s at 250 frames/s per pass when there are no gradients


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
        if not torch.is_grad_enabled() and x.shape[-1] > CHUNK_FRAMES + 2 * self.receptive_field:
            return self._chunked(x)
        return self._whole(x)

    @property
    def receptive_field(self) -> int:
        """Frames of context on each side that an output frame depends on."""
        convs = [self.inp] + [block[1] for block in self.blocks]
        return sum(c.pad if isinstance(c, CausalConv1d) else c.padding[0] for c in convs)

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return F.leaky_relu(x, SLOPE)

    def _chunked(self, x: torch.Tensor) -> torch.Tensor:
        """`_whole(x)` `CHUNK_FRAMES` at a time, each read with the receptive field of real
        frames on either side (the same up to float rounding). Without gradients only: the
        layers of a 10-minute input at once took 440 MB, a chunk's take 15."""
        F_, margin = x.shape[-1], self.receptive_field
        pieces = []
        for a in range(0, F_, CHUNK_FRAMES):
            b = min(F_, a + CHUNK_FRAMES)
            lo, hi = max(0, a - margin), min(F_, b + margin)
            pieces.append(self._whole(x[..., lo:hi])[..., a - lo : b - lo])
        return torch.cat(pieces, dim=-1)

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
