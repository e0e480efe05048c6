"""Synthesis speed on one CPU thread: single-stream and folded samples/s, real-time factor,
speed-up over naive generation; optionally the peak memory of decoding a long code file.

Random weights (speed does not depend on training). Each rate is reported per wall-clock
second and per CPU second of this process: the machine is shared, and the CPU-time rate is
what one free core would give. Usage:
    python benchmarks/synthesis.py [--preset small] [--seconds 0.5] [--repeat 2]
    python benchmarks/synthesis.py --decode-seconds 64     # end-to-end folded model.decode
    python benchmarks/synthesis.py --memory-minutes 10     # peak RSS of a 10-minute decode
    python benchmarks/synthesis.py --preset small-sf --decode-seconds 60   # source-filter decoder
    python benchmarks/synthesis.py --preset small-sf --memory-minutes 10
    python benchmarks/synthesis.py --model runs/sfwn/model.safetensors --decode-seconds 60
Targets (small preset, 16 kHz): folded >= 32k samples/s (2x real time), single stream
>= 4.8k samples/s (0.3x).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from speechvq.config import ModelConfig
from speechvq.models.decoders.folding import FoldConfig
from speechvq.models.decoders.synthesis import Synthesizer
from speechvq.models.decoders.synthesis_numba import numba_kernel
from speechvq.models.model import SpeechVQ


def timed(fn) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `fn()`."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def line(name: str, samples: int, wall: float, cpu: float, sr: int) -> str:
    return (
        f"{name:<34} {samples / wall:>9,.0f} samples/s wall ({samples / wall / sr:.2f}x real time)"
        f" {samples / cpu:>9,.0f} per CPU-s ({samples / cpu / sr:.2f}x)"
    )


def naive_rate(model: SpeechVQ, samples: int) -> tuple[float, float]:
    """Naive generation: a full parallel forward pass over the receptive field per sample."""
    dec = model.decoder
    hop, rf = dec.hop, dec.cfg.decoder.wavenet.receptive_field
    frames = -(-rf // hop) + 1
    cond = torch.randn(1, frames, dec.cfg.decoder.cond_channels)
    src = torch.randn(1, frames * hop, dec.cfg.pitch.harmonics) * 0.1
    src = src if dec.source_proj is not None else None
    prev = torch.full((1, frames * hop), 128, dtype=torch.long)

    def run():
        with torch.inference_mode():
            for _ in range(samples):
                logits = dec(prev, cond, src)[0, -1]
                prev[0, :-1] = prev[0, 1:].clone()
                prev[0, -1] = torch.multinomial(torch.softmax(logits, -1), 1)[0]

    wall, cpu = timed(run)
    return wall / samples, cpu / samples


def engine_rate(model: SpeechVQ, batch: int, seconds: float, backend: str, dtype) -> tuple:
    dec = model.decoder
    syn = Synthesizer(dec, backend=backend, dtype=dtype)
    frames = max(1, round(seconds * model.frame_rate))
    cond = torch.randn(batch, frames, dec.cfg.decoder.cond_channels)
    src = torch.randn(batch, frames * dec.hop, dec.cfg.pitch.harmonics) * 0.1
    src = src if dec.source_proj is not None else None
    gen = torch.Generator().manual_seed(0)
    syn.generate(cond[:, :1], src[:, : dec.hop] if src is not None else None, 1.0, gen)  # warm
    wall, cpu = timed(lambda: syn.generate(cond, src, 1.0, gen))
    return batch * frames * dec.hop, wall, cpu


def decode_run(model: SpeechVQ, seconds: float, exact: bool, fold: FoldConfig) -> tuple:
    codes = np.random.default_rng(0).integers(0, model.config.quantizer.codebook_size,
                                              int(seconds * model.frame_rate))  # fmt: skip
    out = {}
    wall, cpu = timed(lambda: out.setdefault("w", model.decode(codes, 0, seed=0, exact=exact,
                                                               fold=fold)))  # fmt: skip
    return out["w"].size, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--model", help="a model file (its config and weights) instead of --preset")
    ap.add_argument("--seconds", type=float, default=0.25, help="audio per engine measurement")
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--naive-samples", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--decode-seconds", type=float, default=0.0, help="end-to-end folded decode")
    ap.add_argument("--bf16", action="store_true", help="also time bfloat16 folding")
    ap.add_argument("--memory-minutes", type=float, default=0.0)
    ap.add_argument("--exact", action="store_true", help="memory run: single stream")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.model:
        model = SpeechVQ.from_file(args.model).eval()
    else:
        model = SpeechVQ(ModelConfig.preset(args.preset, speakers=["s0", "s1"])).eval()
    sr = model.sample_rate
    print(f"{args.model or args.preset + ' preset'}, 1 thread, numba {'on' if numba_kernel() else 'off'}, "  # noqa: E501
          f"load average {os.getloadavg()[0]:.2f} (2 cores)")  # fmt: skip
    if args.memory_minutes:  # either decoder kind (the source-filter one ignores exact/fold)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n, wall, cpu = decode_run(model, args.memory_minutes * 60, args.exact, FoldConfig())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(line(f"decode {args.memory_minutes:g} min", n, wall, cpu, sr))
        print(f"peak RSS {peak:.0f} MB (model built: {before:.0f} MB)")
        return
    kind = model.config.decoder.kind
    if kind != "wavenet":  # parallel (source-filter, sf-wavenet): decode speed only
        for _ in range(args.repeat):
            seconds = args.decode_seconds or 10.0
            n, wall, cpu = decode_run(model, seconds, False, FoldConfig())
            print(line(f"decode {seconds:g} s ({kind})", n, wall, cpu, sr))
        return
    for rep in range(args.repeat):
        print(f"-- run {rep + 1}, load average {os.getloadavg()[0]:.2f}")
        naive_wall, naive_cpu = naive_rate(model, args.naive_samples)
        print(line("naive (forward per sample)", 1, naive_wall, naive_cpu, sr))
        single = None
        for backend in ("numba", "torch") if numba_kernel() else ("torch",):
            n, wall, cpu = engine_rate(model, 1, args.seconds, backend, torch.float32)
            single = single or (n / wall, n / cpu)
            print(line(f"single stream ({backend})", n, wall, cpu, sr))
        print(f"{'speed-up over naive (single stream)':<34} {single[0] * naive_wall:,.0f}x wall, "
              f"{single[1] * naive_cpu:,.0f}x CPU")  # fmt: skip
        dtypes = (torch.float32, torch.bfloat16) if args.bf16 else (torch.float32,)
        for dtype in dtypes:
            for b in [int(x) for x in args.batches.split(",") if int(x) > 1]:
                n, wall, cpu = engine_rate(model, b, args.seconds, "torch", dtype)
                print(line(f"batch {b} ({str(dtype)[6:]})", n, wall, cpu, sr))
        if args.decode_seconds:
            for dtype in ("float32", "bfloat16") if args.bf16 else ("float32",):
                n, wall, cpu = decode_run(model, args.decode_seconds, False,
                                          FoldConfig(precision=dtype))  # fmt: skip
                print(line(f"decode {args.decode_seconds:g} s folded ({dtype})", n, wall, cpu, sr))


if __name__ == "__main__":
    main()
