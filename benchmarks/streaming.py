"""Streaming on one CPU thread: compute per chunk, and the bitrate on the wire per packet size.

For a streaming model (`-m FILE`, default an untrained `small-stream`: the
compute does not depend on training, the bitrate does) and an input (default
`examples/demo.wav`), runs the loopback of `speechvq stream` at each chunk
size and packet size (`--repeat` times, the run of median mean compute
shown) and prints, per row, the mean and 95th-percentile compute of one
chunk (wall clock, and this process's CPU time, which is what one free core
gives on a shared machine), the real-time factor, and the bitrate of the
packets alone (codes and their one byte of framing each: what a long stream
tends to) and on the wire (the stream header included, here for the input's
few seconds).
    python benchmarks/streaming.py [-m MODEL] [--input WAV] [--repeat N]
Goal (issue 18): under 5 ms per 20 ms chunk on one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import speechvq
from speechvq.audio.io import load_audio
from speechvq.config import ModelConfig
from speechvq.inference.streaming import loopback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="a streaming model file")
    ap.add_argument("--input", default="examples/demo.wav")
    ap.add_argument("--chunks", default="10,20,40,80", help="chunk sizes, ms")
    ap.add_argument("--packets", default="20,40,80", help="packet sizes, ms")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row (the median shown)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.model:
        model = speechvq.load(args.model)
    else:
        torch.manual_seed(0)
        model = speechvq.SpeechVQ(ModelConfig.preset("small-stream", speakers=["a"])).eval()
    wave, sr = load_audio(args.input, model.sample_rate)
    loopback(model, wave[: sr // 2], sr)  # warm up
    print(f"model: {args.model or 'small-stream (untrained)'}; input {wave.size / sr:.2f} s")
    print(
        "chunk ms  packet ms  compute/chunk mean  p95    CPU mean  x real time"
        "  packets bit/s  wire bit/s"
    )
    for packet in map(float, args.packets.split(",")):
        for chunk in map(float, args.chunks.split(",")):
            runs = []
            for _ in range(max(1, args.repeat)):
                c0 = time.process_time()
                r = loopback(model, wave, sr, chunk_ms=chunk, packet_ms=packet)
                cpu = 1000 * (time.process_time() - c0) / len(r.compute_ms)
                runs.append((float(np.mean(r.compute_ms)), cpu, r))
            mean, cpu, r = sorted(runs, key=lambda x: x[0])[len(runs) // 2]
            p95 = np.percentile(r.compute_ms, 95)
            print(
                f"{chunk:8g}  {r.packet_ms:9g}  {mean:15.2f} ms  {p95:5.2f}  {cpu:7.2f}"
                f"  {chunk / mean:11.1f}  {r.packet_bitrate:13,.0f}  {r.bitrate:10,.0f}"
            )


if __name__ == "__main__":
    main()
