"""The packet streams' prefix code, made from a trained model's codes (issue 18).

`speechvq train-prior CORPUS -m MODEL -o RUN --bigram`: encode the prepared
corpus (the codes cached as for the prior, `prior.extract_codes`), count
which code follows which within the train split's utterances, build the
Huffman code lengths of `codec.prefix.bigram_code_lengths`, and write
`RUN/model.safetensors`: the model with the table inside (`packet_code`,
[K + 1, K] uint8) and the held-out bitrate per packet size in its metadata.
Counting takes seconds; no training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechvq.codec import packets as P
from speechvq.codec.prefix import PacketCode, bigram_code_lengths
from speechvq.data.corpus import PreparedCorpus
from speechvq.training.prior import CodeSet, extract_codes, inherited_metadata

PACKET_MS = (20, 40, 80)  # packet sizes whose held-out bitrates go into the metadata


@dataclass
class PacketCodeResult:
    model_path: Path  # the model with its packet code
    train_codes: int  # codes counted
    bitrates: dict[int, float]  # packet ms -> held-out bit/s, one byte of framing a packet included


def bigram_counts(codes: CodeSet, num_symbols: int) -> np.ndarray:
    """`[K, K]` int64: how often code c follows code p within an utterance of `codes`."""
    counts = np.zeros((num_symbols, num_symbols), dtype=np.int64)
    for i in range(len(codes)):
        c = codes.utterance(i)
        np.add.at(counts, (c[:-1], c[1:]), 1)
    return counts


def stream_bitrate(code: PacketCode, codes: CodeSet, frames: int, frame_rate: float) -> float:
    """Bits per second of `codes` sent as `codec.packets` of `frames` codes, each utterance
    a stream (its last packet short), the header and end packet aside."""
    total_bytes, total_codes = 0, 0
    for i in range(len(codes)):
        c = codes.utterance(i)
        for t in range(0, c.size, frames):
            total_bytes += len(P.packet_bytes(t // frames, c[t : t + frames], code, frames))
        total_codes += c.size
    return 8 * total_bytes * frame_rate / max(total_codes, 1)


def make_packet_code(
    corpus_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> PacketCodeResult:
    """Give the model at `model_path` the packet code of its codes of `corpus_dir`."""
    import torch

    from speechvq.inference.loading import load
    from speechvq.inference.streaming import frames_per_packet, packet_code

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = load(model_path)
    corpus = PreparedCorpus(corpus_dir)
    codes = extract_codes(model, corpus, run_dir / "codes.npz", progress=progress)
    K = model.config.quantizer.codebook_size
    counts = bigram_counts(codes["train"], K)
    model.set_packet_code(torch.from_numpy(bigram_code_lengths(counts)))
    code = packet_code(model, "bigram")
    meta = inherited_metadata(model, "packet_code_")
    meta["packet_code_train_codes"] = str(int(counts.sum()))
    bitrates = {}
    if len(codes["valid"]):
        for ms in PACKET_MS:
            frames = frames_per_packet(model, ms)
            bitrates[ms] = stream_bitrate(code, codes["valid"], frames, model.frame_rate)
            meta[f"packet_code_bitrate_{ms}ms"] = f"{bitrates[ms]:.1f}"
    path = run_dir / "model.safetensors"
    model.save(path, **meta)
    return PacketCodeResult(path, int(counts.sum()), bitrates)
