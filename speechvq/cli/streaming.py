"""Streaming from the command line (issue 18): `compress --stream`, `decompress --stream`
(both work in a Unix pipe, `-` being standard input or output) and `stream`, a
loopback that simulates a live link and prints the latency."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import typer

from speechvq.audio.io import to_pcm16
from speechvq.cli.common import (
    DEFAULT_SEND_VOICE,
    ForceOpt,
    ModelOpt,
    ReferenceAdaptOpt,
    app,
    check_output,
    errors,
    load_model,
    pick_voice,
    sender_voice_seconds,
)
from speechvq.errors import SpeechVQError

PCM_BLOCK = 640  # bytes read from a pipe at a time: 20 ms of 16-bit mono at 16 kHz


def compress_stream(
    m,
    input: Path,
    output: Path,
    rate: int,
    packet_ms: float,
    speaker,
    entropy,
    voice=None,
    send_voice: float | None = None,
):
    """`input` (raw 16-bit little-endian mono PCM at `rate` if '-', else an audio file) to
    `.svqs` packets on `output` ('-': standard output), each written as it is made; the
    header names `speaker` or carries `voice` (a `Voice`) if given, and with
    `send_voice` seconds the sender's measured voice follows in a voice packet."""
    from speechvq.inference.streaming import StreamCompressor

    options = dict(
        packet_ms=packet_ms, speaker=speaker, voice=voice, entropy=entropy, send_voice=send_voice
    )
    if str(input) == "-":
        comp = StreamCompressor(m, rate, **options)  # live: the voice measured in a thread
        blocks = _pcm_blocks(sys.stdin.buffer)
    else:
        from speechvq.audio.io import load_audio

        wave, sr = load_audio(input)
        comp = StreamCompressor(m, sr, threaded=False, **options)  # a file: no hurry
        step = max(1, sr // 50)
        blocks = (wave[t : t + step] for t in range(0, wave.size, step))
    with _open_out(output) as out:
        out.write(comp.start())
        out.flush()
        for block in blocks:
            data = comp.push(block)
            if data:
                out.write(data)
                out.flush()
        out.write(comp.flush())
        out.flush()
    return comp


def decompress_stream(m, input: Path, output: Path, voice, seed: int, match: bool = True):
    """`.svqs` packets from `input` ('-': standard input) to audio in `voice` (a name, a
    `Voice`, or None for the stream's own): raw 16-bit PCM at the model's rate on standard
    output as it is decoded ('-'), or a wav file at the end."""
    from speechvq.audio.io import save_audio
    from speechvq.codec import packets as P
    from speechvq.inference.streaming import StreamDecompressor

    name = "<stdin>" if str(input) == "-" else str(input)
    f = sys.stdin.buffer if str(input) == "-" else open(input, "rb")  # noqa: SIM115
    try:
        header = P.read_header(f, name)
        decomp = StreamDecompressor(m, header, voice=voice, seed=seed, match=match)
        pieces = []
        to_stdout = str(output) == "-"
        if to_stdout:
            _not_a_terminal()
        written = 0
        for event in decomp.reader(f, name).events():
            audio = decomp.feed(event)
            if decomp.num_samples is not None:  # the end: trim the last frame's padding
                audio = audio[: max(0, decomp.num_samples - written)]
            written += audio.size
            if to_stdout:
                sys.stdout.buffer.write(to_pcm16(audio).tobytes())
                sys.stdout.buffer.flush()
            else:
                pieces.append(audio)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    if not to_stdout:
        wave = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        save_audio(output, wave, m.sample_rate)
    return decomp, written


@app.command()
def stream(
    input: Path = typer.Argument(..., help="Speech to send over a simulated live link."),
    output: Path = typer.Argument(..., help="Audio file to write (wav): what arrived."),
    chunk_ms: float = typer.Option(20.0, "--chunk-ms", help="Audio fed in chunks of this."),
    packet_ms: float = typer.Option(20.0, "--packet-ms", help="Audio per packet."),
    target_speaker: str | None = typer.Option(
        None, "--target-speaker", "-s", help="Decode in this voice (a live voice changer)."
    ),
    target_wav: list[Path] | None = typer.Option(
        None, "--target-wav", help="Decode in the voice of these recordings."
    ),
    match: bool = typer.Option(
        True,
        "--match/--no-match",
        help="With --target-wav, move the codes towards the recordings' voice as they arrive "
        "(from the first second on; docs/speaker.md).",
    ),
    send_voice: float | None = typer.Option(
        None,
        "--send-voice",
        metavar="SECONDS",
        help="The sender measures its voice on the first SECONDS and sends it, and the "
        "receiver follows it (a model with a speaker encoder); 0: never. Default "
        f"{DEFAULT_SEND_VOICE:g} s for such a model with no target voice.",
    ),
    adapt: int = ReferenceAdaptOpt,
    model: str | None = ModelOpt,
    threads: int = typer.Option(1, "--threads", help="CPU threads (the timing is per thread)."),
    force: bool = ForceOpt,
):
    """Loopback: encode, packetise, depacketise and decode in chunks, as live; print the
    latency, the compute per chunk and the bitrate."""
    with errors():
        import torch

        from speechvq.audio.io import load_audio, save_audio
        from speechvq.inference.streaming import loopback

        torch.set_num_threads(threads)
        check_output(output, force)
        m = load_model(model)
        voice = None
        if target_speaker is not None or target_wav:
            voice, _ = pick_voice(
                m, target_speaker, target_wav, "--target-speaker", "--target-wav", adapt
            )
        wave, sr = load_audio(input, m.sample_rate)
        seconds = sender_voice_seconds(m, send_voice, voice is not None)
        r = loopback(
            m,
            wave,
            sr,
            chunk_ms=chunk_ms,
            packet_ms=packet_ms,
            voice=voice,
            send_voice=seconds,
            match=match,
        )
        save_audio(output, r.audio, m.sample_rate)
        ms = np.asarray(r.compute_ms)
        typer.echo(f"{output}: {r.audio.size / m.sample_rate:.2f} s")
        typer.echo(
            f"  latency {r.latency_ms:.0f} ms = {r.algorithmic_latency_ms:.0f} ms algorithmic "
            f"+ {r.chunk_ms:g} ms chunk + {r.packet_ms:g} ms packet, before compute"
        )
        typer.echo(
            f"  compute per {chunk_ms:g} ms chunk: mean {ms.mean():.2f} ms, max {ms.max():.2f} ms "
            f"({chunk_ms / max(ms.mean(), 1e-9):.1f}x real time)"
            + ("" if _compiled() else "; without numba: pip install 'speechvq[fast]' for ~2x")
        )
        typer.echo(
            f"  {r.bitrate:,.0f} bit/s on the wire (packet framing and the {r.header_bytes}-byte "
            f"header included; the packets alone {r.packet_bitrate:,.0f} bit/s)"
        )
        if r.voice_sent_at is not None:
            typer.echo(
                f"  the sender's voice, measured on its first {r.voice_sent_at:.1f} s, was sent "
                f"in the stream and decoded in from then on ({r.voice_ms:.0f} ms of compute, "
                "not counted above: live, it runs in a thread beside the stream)"
            )
        elif seconds is not None:
            typer.echo(f"  no voice packet: under {seconds:g} s of input with enough speech")


def _compiled() -> bool:
    """Whether the streaming steps run compiled (numba installed)."""
    from speechvq.models.causal_numba import conv_step_kernel

    return conv_step_kernel() is not None


def _pcm_blocks(f: BinaryIO):
    """Float32 blocks of raw 16-bit little-endian PCM read from a pipe as it arrives."""
    rest = b""
    while True:
        data = f.read1(PCM_BLOCK) if hasattr(f, "read1") else f.read(PCM_BLOCK)
        if not data:
            break
        data = rest + data
        whole = len(data) // 2 * 2
        rest = data[whole:]
        yield np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
    if rest:
        raise SpeechVQError("standard input ended inside a sample (odd byte count)")


def _not_a_terminal() -> None:
    if sys.stdout.isatty():
        raise SpeechVQError("standard output is a terminal: pipe it into a program or a file")


@contextlib.contextmanager
def _open_out(path: Path) -> Iterator[BinaryIO]:
    """Standard output for '-', else the file (written as the stream goes)."""
    if str(path) == "-":
        _not_a_terminal()
        yield sys.stdout.buffer
        return
    with open(path, "wb") as f:
        yield f
