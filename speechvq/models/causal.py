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
import functools
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
            # Time-major, as the compiled step takes it (`models.causal_numba`).
            past = np.zeros((batch_size, self.pad, self.in_channels), np.float32)
            taps_first = self.weight.detach().permute(0, 2, 1).reshape(self.out_channels, -1)
            bias = self.bias if self.bias is not None else torch.zeros(self.out_channels)
            arrays = (np.ascontiguousarray(taps_first.numpy()), bias.detach().numpy())
            return ConvState(past, matrix, step, arrays)
        past = torch.zeros(batch_size, self.in_channels, self.pad, device=device)
        return ConvState(past, matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.stride[0]
        state = self._stream
        if state is None:
            return super().forward(F.pad(x, (self.pad, 0)))
        k = self.kernel_size[0]
        if state.step is not None:  # the compiled step: a list of one layer
            return _run_layers([Layer(self)], x).to(x.dtype)
        past = state.past
        full = torch.cat([past.to(x.dtype), x], dim=-1) if past.shape[-1] else x
        n = max(0, (full.shape[-1] - self.span) // stride + 1)
        state.past = full[..., n * stride :]
        if n == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        return unrolled_conv1d(full, state.matrix, self.bias, n, k, stride, self.dilation[0])


_NO_RESIDUAL = np.zeros((1, 0, 0), np.float32)  # what the compiled step takes for none


@dataclass
class ConvState:
    """A `CausalConv1d`'s stream: the inputs it has not used up, and its kernel as one
    matrix. Updated in place (`nn.Module.__setattr__` costs more than the step)."""

    past: torch.Tensor | np.ndarray  # [B, C, < span]; numpy [B, < span, C] for the compiled step
    matrix: torch.Tensor  # [C', C k], a view of the weight
    # The compiled step (`models.causal_numba`, with numba on a CPU) and its
    # weight (taps first) and bias as numpy arrays; None: the torch step (`unrolled_conv1d`).
    step: Callable | None = None
    arrays: tuple[np.ndarray, np.ndarray] | None = None

    def run(
        self,
        x: np.ndarray,
        kernel: int,
        stride: int,
        dilation: int,
        pre: float = 1.0,
        post: float = 1.0,
        residual: np.ndarray | None = None,
    ) -> np.ndarray:
        """The compiled step on time-major `x` `[B, T, C]`: the outputs `[B, n, C']`."""
        assert self.step is not None and self.arrays is not None
        if residual is None:
            residual = _NO_RESIDUAL
        out, self.past = self.step(
            self.past, x, *self.arrays, kernel, stride, dilation, pre, post, residual
        )
        return out


@dataclass(frozen=True)
class Layer:
    """One convolution of a network's compiled stream (`CompiledStream`).

    It reads buffer `src` through a leaky ReLU of negative slope `pre` (0 a
    ReLU, 1 none), adds buffer `add` (a residual) if given, applies `post`,
    and writes buffer `dst`. Buffer 0 holds the network's input at the start
    and its output at the end.
    """

    conv: CausalConv1d
    src: int = 0
    dst: int = 0
    pre: float = 1.0
    post: float = 1.0
    add: int | None = None


class CompiledStream(StreamingModule):
    """A network of causal convolutions that streams as one list of compiled steps.

    Streaming layer by layer, a network pays for each module call, the
    conversions to and from numpy around each compiled step, and each
    activation and residual sum as torch calls on a few frames: about as much
    as the arithmetic (docs/streaming.md). A subclass lists its convolutions
    as `Layer`s (`stream_layers`, beside its `forward`, which it must match:
    the streaming tests compare both with the offline output), and its
    `forward` starts with `if self._stream is not None: return self._stream(x)`.
    Without numba, off the CPU, or for other float types the state is None and
    `forward` streams layer by layer as before.
    """

    def stream_layers(self) -> list[Layer] | None:
        raise NotImplementedError

    def start_stream(self, batch_size: int, device: torch.device) -> Callable | None:
        layers = self.stream_layers()
        if layers is None or device.type != "cpu" or conv_step_kernel() is None:
            return None
        if any(layer.conv.weight.dtype != torch.float32 for layer in layers):
            return None
        return functools.partial(_run_layers, layers)


def _run_layers(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    """`[B, C, T]` through `layers`, each on its own `ConvState`, to `[B, C', T']`."""
    buffers = {0: np.ascontiguousarray(x.detach().float().transpose(1, 2).numpy())}
    for layer in layers:
        conv = layer.conv
        residual = buffers[layer.add] if layer.add is not None else None
        buffers[layer.dst] = conv._stream.run(
            buffers[layer.src],
            conv.kernel_size[0],
            conv.stride[0],
            conv.dilation[0],
            layer.pre,
            layer.post,
            residual,
        )
    return torch.from_numpy(buffers[0]).transpose(1, 2)


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
