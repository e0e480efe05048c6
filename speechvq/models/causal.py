"""Causal layers that keep their state between calls, for streaming (issue 18).

Following Moshi's `with model.streaming(batch_size):`, each layer that needs
past input keeps it in its own state, which exists only inside the
`streaming(module, batch_size)` context: callers never reset buffers, and
outside the context the same layers run offline over whole signals.

`CausalConv1d` is a convolution padded on the left only. Offline it pads
`(kernel - 1) * dilation - (stride - 1)` zeros in front, so output i reads
inputs up to `stride * i + stride - 1` and a signal of `n * stride` samples
gives n outputs; streaming, it keeps the inputs it has not yet used up (the
same zeros at the start), emits every output whose inputs have all arrived,
and so gives exactly the offline outputs, however the input is cut.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechvq.errors import SpeechVQError
from speechvq.models.causal_numba import conv_step_kernel


class StreamingModule(nn.Module):
    """A layer with state inside `streaming(...)`: `_stream` is None outside it."""

    _stream: Any = None

    def start_stream(self, batch_size: int, device: torch.device) -> Any:
        raise NotImplementedError


@contextlib.contextmanager
def streaming(module: nn.Module, batch_size: int = 1) -> Iterator[None]:
    """Give every `StreamingModule` in `module` a fresh state for the length of the block."""
    layers = [m for m in module.modules() if isinstance(m, StreamingModule)]
    if any(m._stream is not None for m in layers):
        raise SpeechVQError("this model is already streaming (one stream at a time per model)")
    device = next(module.parameters()).device
    for m in layers:
        m._stream = m.start_stream(batch_size, device)
    try:
        yield
    finally:
        for m in layers:
            m._stream = None


def pointwise(cin: int, cout: int, causal: bool) -> nn.Conv1d:
    """A 1x1 convolution; in a causal network a `CausalConv1d`, which has no state but
    streams through `unrolled_conv1d` (the same weights and names either way)."""
    return CausalConv1d(cin, cout, 1) if causal else nn.Conv1d(cin, cout, 1)


class CausalConv1d(nn.Conv1d, StreamingModule):
    """`nn.Conv1d` padded on the left only: `[B, C, T]` to `[B, C', T / stride]`.

    A subclass, not a wrapper, so its weights have the names of the plain
    convolution it replaces: a causal model can start from a non-causal one
    (`--init-from`, init_parts `matching`).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        if kernel < stride:
            raise ValueError(f"a causal conv needs kernel >= stride, not {kernel} < {stride}")
        super().__init__(cin, cout, kernel, stride=stride, dilation=dilation)
        self.span = (kernel - 1) * dilation + 1  # inputs one output reads
        self.pad = self.span - stride  # zeros in front

    def start_stream(self, batch_size: int, device: torch.device) -> ConvState:
        matrix = self.weight.detach().reshape(self.out_channels, -1)
        step = conv_step_kernel() if device.type == "cpu" else None
        if step is not None and matrix.dtype == torch.float32:  # the compiled step, on numpy
            past = np.zeros((batch_size, self.in_channels, self.pad), np.float32)
            bias = self.bias if self.bias is not None else torch.zeros(self.out_channels)
            arrays = (np.ascontiguousarray(matrix.numpy()), bias.detach().numpy())
            return ConvState(past, matrix, step, arrays)
        past = torch.zeros(batch_size, self.in_channels, self.pad, device=device)
        return ConvState(past, matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.stride[0]
        state = self._stream
        if state is None:
            return super().forward(F.pad(x, (self.pad, 0)))
        k = self.kernel_size[0]
        if state.step is not None:
            f32 = x.dtype == torch.float32
            xs = np.ascontiguousarray((x if f32 else x.float()).detach().numpy())
            out, state.past = state.step(state.past, xs, *state.arrays, k, stride, self.dilation[0])
            return torch.from_numpy(out) if f32 else torch.from_numpy(out).to(x.dtype)
        past = state.past
        full = torch.cat([past.to(x.dtype), x], dim=-1) if past.shape[-1] else x
        n = max(0, (full.shape[-1] - self.span) // stride + 1)
        state.past = full[..., n * stride :]
        if n == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        return unrolled_conv1d(full, state.matrix, self.bias, n, k, stride, self.dilation[0])


@dataclass
class ConvState:
    """A `CausalConv1d`'s stream: the inputs it has not used up, and its kernel as one
    matrix. Updated in place (`nn.Module.__setattr__` costs more than the step)."""

    past: torch.Tensor | np.ndarray  # [B, C, < span]; numpy for the compiled step
    matrix: torch.Tensor  # [C', C k], a view of the weight
    # The compiled step (`models.causal_numba`, with numba on a CPU) and its
    # weight and bias as numpy arrays; None: the torch step (`unrolled_conv1d`).
    step: Callable | None = None
    arrays: tuple[np.ndarray, np.ndarray] | None = None


def unrolled_conv1d(
    x: torch.Tensor,
    matrix: torch.Tensor,
    bias: torch.Tensor | None,
    n: int,
    kernel: int,
    stride: int,
    dilation: int,
) -> torch.Tensor:
    """The first `n` outputs `[B, C', n]` of an unpadded conv of `x` `[B, C, T]` whose
    weight `[C', C, kernel]` is given as `matrix` `[C', C kernel]`: one matrix product
    over the gathered taps.

    Written out because a streaming step has only a few outputs, where
    `F.conv1d`'s fixed cost per call, not its arithmetic, dominates on a CPU:
    5 frames of a 256-channel kernel-3 conv take 0.35 ms through `F.conv1d`
    and 0.08 ms as `F.linear` on one thread. The result equals the
    convolution up to float rounding.
    """
    B, C, _ = x.shape
    if kernel == 1 and stride == 1:
        taps = x[..., :n].transpose(1, 2)  # [B, n, C]
    else:
        span = (kernel - 1) * dilation + 1
        taps = x[..., : (n - 1) * stride + span].unfold(2, span, stride)[..., ::dilation]
        taps = taps.permute(0, 2, 1, 3).reshape(B, n, C * kernel)  # [B, n, (C, k)], as weight
    return F.linear(taps, matrix, bias).transpose(1, 2)
