"""Training throughput: seconds of audio trained per wall-clock second.

Runs full training steps (forward, backward, Adam) on random crops of
synthetic audio, after warm-up, in fp32 and with bf16 autocast where the CPU
has it: the `small` preset with and without the pitch path, and `small-sf`
(source-filter decoder, batch 8 x 1 s as in recipes/configs/small-sf.yaml).
Usage: python benchmarks/train_throughput.py [--steps 6] [--threads 2]
The target on the project's 2-core machine is 1.5 s/s or more.
"""

from __future__ import annotations

import argparse
import time

import torch

from speechvq.config import ModelConfig
from speechvq.models.model import SpeechVQ
from speechvq.models.precision import autocast_dtype


def bench(preset: str, pitch: bool, dtype, steps: int, batch: int, seconds: float) -> float:
    torch.manual_seed(0)
    model = SpeechVQ(ModelConfig.preset(preset, speakers=[f"s{i}" for i in range(8)], pitch=pitch))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    T = int(seconds * 16000) // 64 * 64
    wave = 0.1 * torch.randn(batch, T)
    f0 = torch.where(torch.rand(batch, T // 64) > 0.4, 150.0, 0.0)
    spk = torch.arange(batch) % 8
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(wave, spk, f0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return batch * T / 16000 / (sum(times) / len(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = autocast_dtype("auto", torch.device("cpu"))
    print(f"{args.threads} threads")
    runs = [
        ("small", True, args.batch, args.seconds),
        ("small", False, args.batch, args.seconds),
        ("small-sf", True, 8, 1.0),
    ]
    for preset, pitch, batch, seconds in runs:
        for dtype in (None, bf16) if bf16 else (None,):
            rate = bench(preset, pitch, dtype, args.steps, batch, seconds)
            name = "bf16" if dtype else "fp32"
            print(
                f"{preset:<8} pitch={'on ' if pitch else 'off'} batch {batch} x {seconds:g} s "
                f"{name}: {rate:.2f} s of audio per s ({rate * 16000:,.0f} samples/s)"
            )


if __name__ == "__main__":
    main()
