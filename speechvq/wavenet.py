"""A causal WaveNet stack, shared by the decoder (over samples) and the prior (over codes).

WaveNet (van den Oord et al. 2016) §2.3-2.4: layers of gated dilated causal
convolutions, tanh(W_f * x + V_f * c) * sigmoid(W_g * x + V_g * c), with
residual and skip paths. The local conditioning c arrives at a lower rate
(one vector per `upsample` steps); its per-layer projections are computed at
that rate and repeated, so conditioning costs nothing per step.

Incremental generation (Paine et al. 2016, "Fast WaveNet") keeps, for every
layer, the last `dilation * (kernel - 1)` inputs in a `WaveNetState`: one step
costs O(layers). `WaveNet.step` is exactly the parallel `forward` computed one
time step at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechvq.config import WaveNetConfig


class ResidualLayer(nn.Module):
    def __init__(self, cfg: WaveNetConfig, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.kernel_size = cfg.kernel_size
        self.gate_channels = cfg.gate_channels
        self.conv = nn.Conv1d(
            cfg.residual_channels, 2 * cfg.gate_channels, cfg.kernel_size, dilation=dilation
        )
        # One 1x1 conv makes both the residual and the skip outputs.
        self.out = nn.Conv1d(cfg.gate_channels, cfg.residual_channels + cfg.skip_channels, 1)

    @property
    def context(self) -> int:
        return (self.kernel_size - 1) * self.dilation

    def gated(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = h.chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        res, skip = self.out(z).split([x.shape[1], self.out.out_channels - x.shape[1]], dim=1)
        return (x + res) * math.sqrt(0.5), skip

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x `[B, R, T]`, cond `[B, 2G, T]` (already projected and upsampled)."""
        h = self.conv(F.pad(x, (self.context, 0))) + cond  # causal: left padding only
        return self.gated(h, x)


@dataclass
class WaveNetState:
    """Per-layer histories for incremental generation: `history[i]` is `[B, R, context_i]`."""

    history: list[torch.Tensor]
    cond: torch.Tensor | None  # [B, L * 2G, F] projected conditioning at its own rate
    step: int = 0


class WaveNet(nn.Module):
    """`[B, R, T]` embedded inputs (+ `[B, C, T / upsample]` conditioning) to `[B, out, T]`.

    Output t depends on inputs 0..t only (causal); callers shift their inputs
    so that output t predicts element t from elements < t.
    """

    def __init__(self, cfg: WaveNetConfig, cond_channels: int, out_channels: int, upsample: int):
        super().__init__()
        self.cfg = cfg
        self.upsample = upsample
        self.layers = nn.ModuleList(
            [ResidualLayer(cfg, 2 ** (i % cfg.dilation_cycle)) for i in range(cfg.layers)]
        )
        # All layers' conditioning projections in one 1x1 conv (V_f, V_g of §2.5).
        self.cond_proj = nn.Conv1d(cond_channels, cfg.layers * 2 * cfg.gate_channels, 1)
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(cfg.skip_channels, cfg.end_channels, 1),
            nn.ReLU(),
            nn.Conv1d(cfg.end_channels, out_channels, 1),
        )

    def _layer_cond(self, c: torch.Tensor, i: int, length: int) -> torch.Tensor:
        g2 = 2 * self.cfg.gate_channels
        ci = c[:, i * g2 : (i + 1) * g2]
        if self.upsample > 1:
            ci = ci.repeat_interleave(self.upsample, dim=2)
        return ci[:, :, :length]

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B, R, T = x.shape
        assert cond.shape[2] * self.upsample >= T, "conditioning shorter than the input"
        c = self.cond_proj(cond)  # (B, L*2G, T/upsample)
        skips = 0
        for i, layer in enumerate(self.layers):
            x, skip = layer(x, self._layer_cond(c, i, T))
            skips = skips + skip
        return self.head(skips)

    # Incremental generation -------------------------------------------------

    def start(self, cond: torch.Tensor) -> WaveNetState:
        """A fresh state for generation under conditioning `[B, C, F]`."""
        B = cond.shape[0]
        R = self.cfg.residual_channels
        x0 = cond.new_zeros(B, R, 0)
        history = [x0.new_zeros(B, R, layer.context) for layer in self.layers]
        return WaveNetState(history=history, cond=self.cond_proj(cond))

    def step(self, x: torch.Tensor, state: WaveNetState) -> torch.Tensor:
        """One time step: `[B, R]` input to `[B, out]` output; advances `state`."""
        assert state.cond is not None
        frame = state.step // self.upsample
        g2 = 2 * self.cfg.gate_channels
        c = state.cond[:, :, frame]  # (B, L*2G)
        skips = 0
        h_in = x[:, :, None]  # (B, R, 1)
        for i, layer in enumerate(self.layers):
            past = state.history[i]
            window = torch.cat([past, h_in], dim=2)  # (B, R, context + 1)
            # Dilated conv over the window: taps are `dilation` apart.
            taps = window[:, :, :: layer.dilation] if layer.context else window
            h = F.conv1d(taps, layer.conv.weight, layer.conv.bias)  # (B, 2G, 1)
            h = h + c[:, i * g2 : (i + 1) * g2, None]
            state.history[i] = window[:, :, 1:]
            h_in, skip = layer.gated(h, h_in)
            skips = skips + skip
        state.step += 1
        return self.head(skips)[:, :, 0]
