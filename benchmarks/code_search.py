"""Speed of the code search by synthesis (`compress --search`) on one CPU thread: seconds of
search per second of audio, per wall-clock and per CPU second of this process (the machine
may be shared; the CPU-time figure is what one free core would give), and its peak memory.

A shipped model's weights (speed does not depend on them, but the model file sets the
sizes) on speech-like synthetic audio. Usage:
    python benchmarks/code_search.py [--model small-spk] [--seconds 10] [--steps 30]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import speechvq
from speechvq.inference.code_search import SearchConfig, search_codes


def speechlike(seconds: float, sr: int) -> np.ndarray:
    """Harmonics of a gliding F0 with a moving formant-like tilt, and a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tilt = 1.5 + np.sin(2 * np.pi * 2.3 * t)
    wave = sum(np.sin(k * phase) / k**tilt for k in range(1, 30))
    wave = 0.3 * wave / np.abs(wave).max() + 0.005 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small-spk")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=SearchConfig().steps)
    ap.add_argument("--rate-weight", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = speechvq.load(args.model)
    sr = model.sample_rate
    wave = speechlike(args.seconds, sr)
    frames = model.encode(wave, sr).size
    f0 = model.input_f0(wave, sr, frames)
    voice = model.speakers[0] if model.speakers else 0
    config = SearchConfig(steps=args.steps, rate_weight=args.rate_weight)
    w, c = time.perf_counter(), time.process_time()
    result = search_codes(model, wave, sr, voice, f0, config)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.model}, {args.seconds:g} s, {args.steps} steps per window"
        f"{f', rate weight {args.rate_weight:g}' if args.rate_weight else ''}: "
        f"{wall:.1f} s wall ({wall / args.seconds:.2f} s per audio second), "
        f"{cpu:.1f} s CPU ({cpu / args.seconds:.2f} s per audio second); "
        f"{result.changed:.0%} of codes changed, loss {result.loss_before:.3f} -> "
        f"{result.loss_after:.3f}; peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
