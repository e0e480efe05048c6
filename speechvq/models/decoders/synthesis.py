"""Fast WaveNet synthesis on a CPU: the incremental engine and `synthesize` (issue 4).

Engine (`Synthesizer`). Fast WaveNet (Paine et al. 2016): every layer keeps
its last `dilation * (kernel - 1)` inputs, so a sample costs O(layers), and
the conditioning is projected once per frame. In eager PyTorch each call
costs ~1-3 us of dispatch, as much as the arithmetic at batch 1, so the
weights are rearranged once to make a step as few calls as possible:
- a layer's kernel taps are one matrix, and its inputs live on a "tape"
  laid out `[B, d, n, R]` (time t = n d + r), where the window
  x(t - (K-1)d) .. x(t) is one contiguous `[B, K R]` view: one `addmm` per
  layer with the frame's conditioning as its input, no copies, no `cat`;
- tanh(a) = 2 sigmoid(2a) - 1: the gate is one `sigmoid` and one `addcmul`;
- biases and the residual scale sqrt(1/2) live in the weights, and the skip
  outputs of all layers are one product at the end;
- buffer views for every step are built once per call (list lookups in the
  loop), and sampling is inverse-CDF with uniforms drawn per chunk from a
  seeded generator.
That loop serves batches (folding). A single stream is bound by call
overhead and by streaming ~4 MB of weights from the L3 cache per sample;
there the same loop compiled by numba (optional, `speechvq.models.decoders.synthesis_numba`)
is ~2x faster. No state outlives a call: each builds its own tapes.

`synthesize` generates one utterance, as a single stream (`exact`) or folded:
cut into overlapping segments generated together as one batch and
cross-faded (`speechvq.models.decoders.folding`, `FoldConfig`).
Measured speeds: docs/synthesis.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from speechvq.models.decoders.folding import (
    BF16_MIN_SEGMENTS,
    FoldConfig,
    HarmonicFrames,
    generate_folded,
)
from speechvq.models.decoders.synthesis_numba import numba_kernel

# A source of per-sample decoder inputs: frames [a, b) to `[B, (b - a) * hop, H]`.
SourceFn = Callable[[int, int], torch.Tensor]

CHUNK_FRAMES = 16  # conditioning, source and uniforms are prepared this many frames at a time
MIN_PERIOD = 64  # every tape period is a multiple of this (wrap checks run every 64 samples)
NUMBA_MAX_BATCH = 4  # "auto" runs batches up to this size in the numba loop, larger ones in torch


class Synthesizer:
    """Incremental generation for a `Decoder`, weights rearranged once (see module doc)."""

    def __init__(self, decoder, backend: str = "auto", dtype: torch.dtype = torch.float32):
        if backend not in ("auto", "torch", "numba"):
            raise ValueError(f"unknown backend {backend!r}; use auto, torch or numba")
        if backend == "numba" and numba_kernel() is None:
            raise ValueError("backend 'numba' needs numba: pip install numba")
        self.backend = backend
        wn = decoder.wavenet
        cfg = wn.cfg
        self.hop = wn.upsample
        self.R, self.G, self.K, self.L = (
            cfg.residual_channels,
            cfg.gate_channels,
            cfg.kernel_size,
            cfg.layers,
        )
        self.Q = decoder.cfg.decoder.quantization_channels
        G, R = self.G, self.R
        p = next(decoder.parameters())
        self.device, self.dtype = p.device, dtype
        if dtype != torch.float32:  # the numba loop is float32 only
            if backend == "numba":
                raise ValueError("backend 'numba' computes in float32")
            self.backend = "torch"

        def w(t: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
            return (t.detach().float() * scale).to(dtype=dtype, device=p.device).contiguous()

        gate = torch.cat([torch.full((G,), 2.0), torch.ones(G)]).to(p.device)  # tanh half x2
        self.dilations = [layer.dilation for layer in wn.layers]
        # The tapes hold layer i's input divided by sqrt(1/2)^i: the residual update
        # x' = (x + res) sqrt(1/2) becomes x~' = x~ + res sqrt(2)^i, a plain addmm,
        # with the scales in the weights. Tap matrices [K*R, 2G], oldest input first.
        scale = [math.sqrt(0.5) ** i for i in range(self.L)]
        taps = [
            torch.cat([lay.taps[j].weight.T for j in reversed(range(self.K))]) for lay in wn.layers
        ]
        self.tap_w = [w(t * gate, scale[i]) for i, t in enumerate(taps)]
        tap_b = torch.cat([layer.taps[0].bias for layer in wn.layers])
        self.cond_w = w(wn.cond_proj.weight.T, gate.repeat(self.L))  # [C, L*2G]
        self.cond_b = w(wn.cond_proj.bias + tap_b, gate.repeat(self.L))
        # Residual [G+1, R] and skip [L*(G+1), S] matrices over [-z, 1] (the gate gives -z).
        self.res_w, skips = [], []
        for i, layer in enumerate(wn.layers):
            wt, b = layer.out.weight, layer.out.bias  # [R+S, G], [R+S]
            self.res_w.append(w(torch.cat([-wt[:R].T, b[None, :R]]), 1 / scale[i]))
            skips.append(torch.cat([-wt[R:].T, b[None, R:]]))
        self.skip_w = w(torch.cat(skips))
        self.head1_w, self.head1_b = w(wn.head[1].weight.T), w(wn.head[1].bias)
        self.head2_w, self.head2_b = w(wn.head[3].weight.T), w(wn.head[3].bias)
        self.embed = w(decoder.embed.weight)
        proj = decoder.source_proj
        self.src_w = w(proj.weight.T) if proj is not None else None
        self.src_b = w(proj.bias) if proj is not None else None

    @property
    def uses_source(self) -> bool:
        return self.src_w is not None

    # Public entry points ------------------------------------------------------

    def generate(
        self,
        cond: torch.Tensor,
        source: torch.Tensor | SourceFn | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `[B, F * hop]` mu-law ints under conditioning `[B, F, C]`.

        `source` is the harmonic excitation `[B, F * hop, H]` or a `SourceFn`
        computing it per chunk (`HarmonicFrames`); temperature 0 takes the argmax.
        """
        B, Fr = cond.shape[:2]
        out = torch.empty(B, Fr * self.hop, dtype=torch.long, device=self.device)
        self._run(cond, source, temperature, generator, out=out)
        return out

    def teacher_forced(
        self, prev: torch.Tensor, cond: torch.Tensor, source: torch.Tensor | SourceFn | None = None
    ) -> torch.Tensor:
        """Logits `[B, T, Q]` for given previous samples `[B, T]`: equals `Decoder.forward`."""
        B, T = prev.shape
        logits = torch.empty(B, T, self.Q, dtype=torch.float32, device=self.device)
        self._run(cond, source, 1.0, None, prev=prev, logits=logits)
        return logits

    # The loop -------------------------------------------------------------------

    def _run(self, *args, **kwargs) -> None:
        # One thread: every call in the loop is small (at most [64, 256] x [256, 256]),
        # and intra-op threads only add a barrier per call; on the shared 2-core
        # machine two threads ran batch 64 ~6x slower than one (docs/synthesis.md).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                self._loop(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    def _loop(self, cond, source, temperature, generator, *, out=None, prev=None, logits=None):
        B, hop, R, G, L, Q = cond.shape[0], self.hop, self.R, self.G, self.L, self.Q
        T = out.shape[1] if out is not None else prev.shape[1]
        assert T % hop == 0 and cond.shape[1] * hop >= T, "generate whole conditioning frames"
        if isinstance(source, torch.Tensor):
            source = tensor_frames(source, hop)
        if self.uses_source and source is None:
            raise ValueError("this decoder has the pitch path: give the harmonic source")
        dev = self.device
        new = dict(dtype=self.dtype, device=dev)
        cond = cond.to(**new)
        Pc = CHUNK_FRAMES * hop
        cbuf = torch.empty(CHUNK_FRAMES, B, L, 2 * G, **new)  # projected conditioning
        sbuf = torch.zeros(Pc, B, R, **new)  # projected source
        inp = torch.full((Pc + 1, B), Q // 2, dtype=torch.long, device=dev)  # mu-law of 0
        head2 = (self.head2_w, self.head2_b)
        if temperature > 0 and temperature != 1.0:
            head2 = (self.head2_w / temperature, self.head2_b / temperature)
        mode = 0 if logits is not None else 1 if temperature <= 0 else 2
        kernel = numba_kernel() if self._use_numba(B) else None
        if kernel is not None:
            steps = self._numba_steps(kernel, B, mode, cbuf, sbuf, inp, head2, logits)
        else:
            steps = self._torch_steps(B, mode, cbuf, sbuf, inp, head2, logits)
        for a in range(0, T // hop, CHUNK_FRAMES):
            nf = min(CHUNK_FRAMES, T // hop - a)
            n, t0 = nf * hop, a * hop
            c = cond[:, a : a + nf].transpose(0, 1).reshape(nf * B, -1)  # (nf*B, C)
            torch.addmm(self.cond_b, c, self.cond_w, out=cbuf.view(-1, L * 2 * G)[: nf * B])
            if self.uses_source:
                sx = source(a, a + nf).to(**new).transpose(0, 1).reshape(n * B, -1)
                torch.addmm(self.src_b, sx, self.src_w, out=sbuf.view(-1, R)[: n * B])
            if prev is not None:
                inp[:n] = prev[:, t0 : t0 + n].T
            u = torch.rand(n, B, 1, generator=generator, device=dev) if mode == 2 else None
            steps(n, t0, u)
            if out is not None:
                out[:, t0 : t0 + n] = inp[1 : n + 1].T
                inp[0] = inp[n]

    def _use_numba(self, batch: int) -> bool:
        if self.backend == "torch" or self.device.type != "cpu":
            return False
        return self.backend == "numba" or batch <= NUMBA_MAX_BATCH

    def _numba_steps(self, kernel, B, mode, cbuf, sbuf, inp, head2, logits):
        R = self.R
        ctx = [(self.K - 1) * d for d in self.dilations]
        offs = np.cumsum([0] + ctx[:-1]).astype(np.int64)
        ring = np.zeros((B, max(1, sum(ctx)), R), np.float32)  # per-layer rings, side by side
        dil = np.asarray(self.dilations, dtype=np.int64)
        L, G = self.L, self.G
        arrays = [
            torch.stack(self.tap_w),
            torch.stack(self.res_w),
            self.skip_w.view(L, G + 1, -1),
            self.head1_w,
            self.head1_b,
            *head2,
            self.embed,
        ]
        weights = [a.contiguous().numpy() for a in arrays]
        lg = logits.numpy() if logits is not None else np.zeros((1, 1, 1), np.float32)
        no_u = np.zeros((1, 1, 1), np.float32)
        c_np, s_np, inp_np = cbuf.numpy(), sbuf.numpy(), inp.numpy()

        def steps(n: int, t0: int, u: torch.Tensor | None) -> None:
            u_np = u.numpy() if u is not None else no_u
            kernel(n, t0, self.hop, mode, c_np, s_np, inp_np, u_np, lg, ring, offs, dil, *weights)

        return steps

    def _torch_steps(self, B, mode, cbuf, sbuf, inp, head2, logits):
        R, G, K, L, Q, hop = self.R, self.G, self.K, self.L, self.Q, self.hop
        new = dict(dtype=self.dtype, device=self.device)
        # Tapes: layer i's input at time t sits at [:, t % d, K - 1 + (t % P) // d]; after
        # each period P the last K-1 rows move to the front (one copy per P samples).
        periods, tapes, wins, writes = [], [], [], []
        for d in self.dilations:
            P = _period(d, K)
            tape = torch.zeros(B, d, P // d + K - 1, R, **new)
            periods.append(P)
            tapes.append(tape)
            wins.append([tape[:, t % d, t // d : t // d + K].reshape(B, K * R) for t in range(P)])
            writes.append([tape[:, t % d, t // d + K - 1] for t in range(P)])
        h = torch.empty(B, 2 * G, **new)
        ha, hb = h[:, :G], h[:, G:]
        z = torch.ones(B, L, G + 1, **new)  # column G stays 1 (the bias input)
        zflat = z.view(B, L * (G + 1))
        skip = torch.empty(B, self.skip_w.shape[1], **new)
        e = torch.empty(B, self.head1_w.shape[1], **new)
        lg = torch.empty(B, Q, **new)
        cdf = torch.empty(B, Q - 1, dtype=torch.float32, device=self.device)
        x0 = torch.empty(B, R, **new)
        cviews = [[cbuf[f, :, i] for i in range(L)] for f in range(cbuf.shape[0])]
        src, inp_v = list(sbuf), list(inp)
        inp_next = [inp[t + 1].view(B, 1) for t in range(len(inp) - 1)]
        nxt = [(writes[i + 1], periods[i + 1]) for i in range(L - 1)] + [(None, 1)]
        layers = [
            (self.tap_w[i], periods[i], wins[i], writes[i], z[:, i, :G], z[:, i], self.res_w[i])
            + (i,)
            + nxt[i]
            for i in range(L)
        ]
        embed, skip_w, h1w, h1b = self.embed, self.skip_w, self.head1_w, self.head1_b
        head2_w, head2_b = head2
        addmm, addcmul = torch.addmm, torch.addcmul
        source = self.uses_source

        def steps(n: int, t0: int, u: torch.Tensor | None) -> None:
            for k in range(n):
                t = t0 + k
                if t % MIN_PERIOD == 0 and t:
                    _wrap(tapes, periods, t, K)
                torch.index_select(embed, 0, inp_v[k], out=x0)
                w0 = writes[0][t % periods[0]]
                if source:
                    torch.add(x0, src[k], out=w0)
                else:
                    w0.copy_(x0)
                cv = cviews[k // hop]
                for tw, P, win, wr, zvi, zci, rw, i, wnext, Pn in layers:
                    tau = t % P
                    addmm(cv[i], win[tau], tw, out=h)
                    h.sigmoid_()
                    addcmul(hb, ha, hb, value=-2.0, out=zvi)  # -tanh(a) sigmoid(b)
                    if wnext is not None:
                        addmm(wr[tau], zci, rw, out=wnext[t % Pn])
                torch.mm(zflat, skip_w, out=skip)
                skip.relu_()
                addmm(h1b, skip, h1w, out=e)
                e.relu_()
                addmm(head2_b, e, head2_w, out=lg)
                if mode == 0:
                    logits[:, t] = lg
                    continue
                if mode == 1:
                    torch.argmax(lg, dim=1, keepdim=True, out=inp_next[k])
                else:
                    p = torch.softmax(lg, dim=1, dtype=torch.float32)
                    torch.cumsum(p[:, : Q - 1], dim=1, out=cdf)
                    torch.searchsorted(cdf, u[k], right=True, out=inp_next[k])

        return steps


def _period(dilation: int, kernel: int) -> int:
    """A tape's period: a multiple of the dilation and of MIN_PERIOD, at least (K-1) d."""
    lcm = dilation * MIN_PERIOD // math.gcd(dilation, MIN_PERIOD)
    return lcm * max(1, -(-(kernel - 1) * dilation // lcm))


def _wrap(tapes: list[torch.Tensor], periods: list[int], t: int, K: int) -> None:
    """At the end of a tape's period, move its last K-1 rows (the context) to the front."""
    for tape, P in zip(tapes, periods, strict=True):
        if t % P == 0:
            m = tape.shape[2] - (K - 1)
            tape[:, :, : K - 1] = tape[:, :, m:]  # disjoint: m = P / d >= K - 1


def tensor_frames(source: torch.Tensor, hop: int) -> SourceFn:
    """A `SourceFn` slicing a materialised source `[B, T, H]`."""
    return lambda a, b: source[:, a * hop : b * hop]


def _fold_dtype(fold: FoldConfig, frames: int, decoder) -> torch.dtype:
    """The folded path's matrix precision; see `FoldConfig.precision`."""
    if fold.precision != "auto":
        return torch.bfloat16 if fold.precision == "bfloat16" else torch.float32
    from speechvq.models.precision import cpu_has_bf16

    seg = max(1, round(fold.segment_seconds * decoder.cfg.frame_rate))
    many = frames / seg >= BF16_MIN_SEGMENTS
    return torch.bfloat16 if many and cpu_has_bf16() else torch.float32


def synthesize(
    decoder,
    cond: torch.Tensor,
    f0: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    seed: int | None = None,
    exact: bool = False,
    fold: FoldConfig | None = None,
) -> np.ndarray:
    """Generate one utterance: conditioning `[1, F, C]`, F0 `[1, F]` (pitch path) to `[F * hop]`.

    Returns the float32 waveform (mu-law decoded, before de-emphasis).
    `exact` generates a single stream (what `Decoder.forward` models);
    otherwise the utterance is folded into segments (`FoldConfig`) generated
    as one batch. The same `seed` gives the same output.
    """
    from speechvq.audio.mulaw import mulaw_decode

    assert cond.dim() == 3 and cond.shape[0] == 1, "one utterance: cond [1, F, C]"
    fold = fold or FoldConfig()
    if fold.precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"unknown precision {fold.precision!r}; use auto, float32 or bfloat16")
    dtype = torch.float32 if exact else _fold_dtype(fold, cond.shape[1], decoder)
    syn = Synthesizer(decoder, dtype=dtype)
    gen = torch.Generator(device=syn.device)
    gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    if syn.uses_source and f0 is None:
        raise ValueError("this decoder has the pitch path: give F0 [1, F]")
    if exact:
        src = HarmonicFrames(decoder, f0, [0]) if syn.uses_source else None
        ints = syn.generate(cond, src, temperature, gen)[0]
        return mulaw_decode(ints.cpu().numpy(), syn.Q)
    return generate_folded(syn, decoder, cond, f0, fold, temperature, gen)
