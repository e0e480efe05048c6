"""Streaming: causal layers that keep their state between calls (issue 18, in progress).

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

`StreamEncoder` runs a causal encoder and the quantiser on audio as it
arrives: `push(samples)` returns the codes of the frames completed so far,
`flush()` those of the last, zero-padded frame. Its codes equal
`SpeechVQ.encode`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
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


class CausalConv1d(StreamingModule):
    """`nn.Conv1d` padded on the left only: `[B, C, T]` to `[B, C', T / stride]`."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        if kernel < stride:
            raise ValueError(f"a causal conv needs kernel >= stride, not {kernel} < {stride}")
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.stride = stride
        self.span = (kernel - 1) * dilation + 1  # inputs one output reads
        self.pad = self.span - stride  # zeros in front

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.conv.bias

    def start_stream(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch_size, self.conv.in_channels, self.pad, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._stream is None:
            return self.conv(F.pad(x, (self.pad, 0)))
        full = torch.cat([self._stream, x], dim=-1)
        n = max(0, (full.shape[-1] - self.span) // self.stride + 1)
        self._stream = full[..., n * self.stride :]
        if n == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return self.conv(full[..., : (n - 1) * self.stride + self.span])


class StreamEncoder:
    """Codes of audio as it arrives, from a model with a causal encoder (`encoder.causal`).

    `push(samples [T])` at the model's rate returns the codes `[n]` of the
    frames that are complete; `flush()` zero-pads the last partial frame and
    returns its code (if any), then ends the stream. The codes equal
    `model.encode` of the whole input.
    """

    def __init__(self, model: Any):
        if not model.config.encoder.causal:
            raise SpeechVQError(
                "this model's encoder is not causal: it cannot stream (use a -stream preset)"
            )
        self.model = model
        self.hop = model.hop_length
        self.pending = np.zeros(0, dtype=np.float32)  # samples of the frame not yet complete
        self.samples = 0
        self._context = streaming(model.encoder, batch_size=1)
        self._context.__enter__()
        self.closed = False
        model.eval()

    @torch.no_grad()
    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.closed:
            raise SpeechVQError("this stream is flushed; start another")
        x = np.concatenate([self.pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = x.size // self.hop * self.hop
        self.pending = x[whole:]
        self.samples += x.size - self.pending.size
        if whole == 0:
            return np.zeros(0, dtype=np.int64)
        chunk = torch.from_numpy(np.ascontiguousarray(x[:whole]))[None, None]
        latents = self.model.encoder(chunk.to(self.model._device))
        return self.model.quantizer(latents).codes[0].cpu().numpy().astype(np.int64)

    def flush(self) -> np.ndarray:
        """The last frame's code (zero-padded) if samples are left over, or none; ends it."""
        codes = np.zeros(0, dtype=np.int64)
        if self.pending.size:
            tail = np.zeros(self.hop, dtype=np.float32)
            tail[: self.pending.size] = self.pending
            self.pending = np.zeros(0, dtype=np.float32)
            codes = self.push(tail)
        self.close()
        return codes

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._context.__exit__(None, None, None)
