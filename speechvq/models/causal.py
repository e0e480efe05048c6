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
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechvq.errors import SpeechVQError


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

    def start_stream(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch_size, self.in_channels, self.pad, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.stride[0]
        if self._stream is None:
            return super().forward(F.pad(x, (self.pad, 0)))
        full = torch.cat([self._stream.to(x.dtype), x], dim=-1)
        n = max(0, (full.shape[-1] - self.span) // stride + 1)
        self._stream = full[..., n * stride :]
        if n == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        return super().forward(full[..., : (n - 1) * stride + self.span])
