"""Live speech <-> `.svqs` packet streams, with a streaming model (issue 18).

`StreamCompressor`: audio in pieces of any size (at any rate; resampled as
it streams) to bytes: the stream header, then a packet every
`frames_per_packet` frames (`codec.packets`), then the end packet.
`StreamDecompressor`: those bytes' events to audio, a lost packet concealed
by holding the last code it had for the frames that are missing.
`loopback` runs both on a file in chunks, as a live link would, timing each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechvq.codec import packets as P
from speechvq.codec.prefix import PacketCode
from speechvq.errors import SpeechVQError
from speechvq.inference.compression import (
    model_hash_of,
    pack_voice,
    unpack_voice,
    voice_bytes,
    voice_from_bytes,
)
from speechvq.models.voice import Voice
from speechvq.version import __version__

PACKET_CODES = ("auto", "bigram", "fixed")


def packet_code(model: Any, name: str = "auto") -> PacketCode:
    """The prefix code of a stream's packets: the one place that chooses.

    "bigram" is the model's table (`SpeechVQ.packet_code`, from `speechvq
    train-prior --bigram`), "fixed" 9 bits a code; "auto" the table when the
    model has one. A reader takes the name from the stream's header.
    """
    if name not in PACKET_CODES:
        raise SpeechVQError(
            f"a packet stream is coded {' or '.join(map(repr, PACKET_CODES))}, not {name!r}"
        )
    table = model.packet_code
    if name == "bigram" and table is None:
        raise SpeechVQError(
            "this model has no packet code table (make one with `speechvq train-prior --bigram`)"
        )
    if name == "fixed" or table is None:
        return PacketCode.fixed(model.config.quantizer.codebook_size)
    return PacketCode(table.cpu().numpy())


def frames_per_packet(model: Any, packet_ms: float) -> int:
    n = round(packet_ms / 1000 * model.frame_rate)
    if not 1 <= n <= 255:
        ms = 1000 / model.frame_rate
        raise SpeechVQError(
            f"--packet-ms {packet_ms:g}: a packet holds 1 to 255 frames of {ms:g} ms"
        )
    return n


class StreamCompressor:
    """Samples `[n]` at `sample_rate` in, `.svqs` bytes out (`header`, `push`, `flush`).

    With `send_voice` (seconds; a model with a speaker encoder), it measures
    the sender's voice on the first `send_voice` seconds of input and sends it
    in a voice packet, so the receiver decodes in it from then on. The
    measurement (0.6 s of compute for 3 s) runs in a thread beside the stream
    (`threaded`; else inside the `push` that completes the seconds); input
    with too little voiced speech is measured again each further second, on
    its last `VOICE_WINDOW_S` seconds.
    """

    def __init__(
        self,
        model: Any,
        sample_rate: int,
        *,
        packet_ms: float = 20.0,
        speaker: str | None = None,
        voice: Voice | None = None,
        entropy: str = "auto",  # the packet code (`PACKET_CODES`)
        send_voice: float | None = None,
        threaded: bool = True,
    ):
        if speaker is not None:
            model.speaker_id(speaker)
        if send_voice is not None and model.speaker_encoder is None:
            raise SpeechVQError(
                "this model has no speaker encoder: it cannot measure the sender's voice "
                "(a -spk model can)"
            )
        self.model, self.rate = model, int(sample_rate)
        self.fpp = frames_per_packet(model, packet_ms)
        self.code = packet_code(model, entropy).prepare()
        self.encoder = model.stream_encoder()  # fails here for a model that cannot stream
        self.resampler = None
        if self.rate != model.sample_rate:
            import soxr

            self.resampler = soxr.ResampleStream(self.rate, model.sample_rate, 1, dtype="float32")
        self.header = P.StreamHeader(
            model_hash=model_hash_of(model),
            sample_rate=model.sample_rate,
            hop_length=model.hop_length,
            codebook_size=model.config.quantizer.codebook_size,
            frames_per_packet=self.fpp,
            entropy_model=self.code.name,
            speaker=speaker,
            voice=pack_voice(voice) if voice is not None else None,
            package_version=__version__,
        )
        self.pending = np.zeros(0, dtype=np.int64)
        self.sequence = 0
        self.samples = 0  # at the model's rate
        self.voice_meter = (
            VoiceMeter(model, send_voice, threaded) if send_voice is not None else None
        )
        self.sent_voice: Voice | None = None  # the voice packet's, once sent
        self.voice_sent_at: float | None = None  # seconds of input by then

    def start(self) -> bytes:
        return P.header_bytes(self.header)

    def push(self, samples: np.ndarray, last: bool = False) -> bytes:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.resampler is not None:
            x = self.resampler.resample_chunk(x, last=last)
        self.samples += x.size
        out = self._voice_packet(x, wait=last)
        self.pending = np.concatenate([self.pending, self.encoder.push(x)])
        return out + self._packets(whole_only=True)

    def flush(self) -> bytes:
        out = self.push(np.zeros(0, dtype=np.float32), last=True)
        self.pending = np.concatenate([self.pending, self.encoder.flush()])
        out += self._packets(whole_only=False)
        return out + P.end_bytes(self.sequence, self.samples)

    def _voice_packet(self, x: np.ndarray, wait: bool) -> bytes:
        """The voice packet, in the push where the sender's voice becomes known."""
        meter = self.voice_meter
        if meter is None or self.sent_voice is not None:
            return b""
        voice = meter.push(x, wait)
        if voice is None:
            return b""
        self.sent_voice = voice
        self.voice_sent_at = self.samples / self.model.sample_rate
        return P.voice_packet_bytes(self.sequence, voice_bytes(voice))

    def _packets(self, whole_only: bool) -> bytes:
        out = b""
        while self.pending.size >= self.fpp or (not whole_only and self.pending.size):
            codes, self.pending = self.pending[: self.fpp], self.pending[self.fpp :]
            out += P.packet_bytes(self.sequence, codes, self.code, self.fpp)
            self.sequence += 1
        return out


VOICE_WINDOW_S = 10.0  # the most input a voice is measured on


class VoiceMeter:
    """The voice of a live input once `seconds` of it have arrived (`push` returns
    it once, then None), measured by the model's speaker encoder."""

    def __init__(self, model: Any, seconds: float, threaded: bool = True):
        if seconds <= 0:
            raise SpeechVQError(f"--send-voice {seconds:g}: give a number of seconds above 0")
        self.model, self.threaded = model, threaded
        self.rate = model.sample_rate
        self.need = max(1.0, seconds)  # a voice needs a second of audio at least
        self.audio = np.zeros(0, dtype=np.float32)  # the last VOICE_WINDOW_S s
        self.heard = 0.0  # seconds of input so far
        self.future: Any = None  # the measurement under way
        self.done = False
        self.compute_ms = 0.0  # spent measuring, when not threaded

    def push(self, x: np.ndarray, wait: bool = False) -> Voice | None:
        if self.done:
            return None
        self.heard += x.size / self.rate
        keep = int(VOICE_WINDOW_S * self.rate)
        self.audio = np.concatenate([self.audio, x])[-keep:]
        if self.future is None and self.heard >= self.need:
            self.future = self._start(self.audio.copy())
        if self.future is None or not (wait or self.future.done()):
            return None
        try:
            voice = self.future.result()
        except SpeechVQError:  # too little voiced speech yet: try again a second on
            self.future, self.need = None, self.heard + 1.0
            return None
        self.done = True
        return voice

    def _measure(self, audio: np.ndarray) -> Voice:
        # What a voice packet carries: no content statistics, so the encoder, which
        # is streaming beside this, is not run; nor tuned (`adapt_voice`), which would
        # hold the voice packet back by seconds.
        return self.model.voice([(audio, self.rate)], latents=False, adapt_steps=0)

    def _start(self, audio: np.ndarray) -> Any:
        import concurrent.futures

        if self.threaded:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            future = pool.submit(self._measure, audio)
            pool.shutdown(wait=False)
            return future
        future = concurrent.futures.Future()
        t0 = time.perf_counter()
        try:
            future.set_result(self._measure(audio))
        except SpeechVQError as exc:
            future.set_exception(exc)
        self.compute_ms += 1000 * (time.perf_counter() - t0)
        return future


class StreamDecompressor:
    """`.svqs` events (`codec.packets.read_packets`) in, samples at the model's rate out."""

    def __init__(
        self,
        model: Any,
        header: P.StreamHeader,
        voice: str | Voice | None = None,
        seed: int = 0,
        *,
        match: bool = True,
    ):
        if header.model_hash != model_hash_of(model):
            raise SpeechVQError(
                f"the stream was made by model {header.model_hash}, not this one "
                f"({model_hash_of(model)})"
            )
        self.follows_sender = voice is None  # a voice packet changes it; a given voice stays
        if voice is None:
            if header.voice is not None:
                voice = unpack_voice(header.voice)
            else:
                voice = header.speaker or model.speakers[0]
        self.model, self.header = model, header
        self.code = packet_code(model, header.entropy_model).prepare()
        # A voice from recordings moves the codes towards it (`StreamDecoder`'s `match`).
        self.decoder = model.stream_decoder(voice, seed=seed, match=match)
        self.last_code = 0
        self.lost_packets = 0
        self.voice_updates = 0  # voice packets followed
        self.num_samples: int | None = None

    def feed(self, event: P.Packet | P.Lost | P.VoiceUpdate | P.End) -> np.ndarray:
        if isinstance(event, P.VoiceUpdate):
            if self.follows_sender:
                self.decoder.set_voice(voice_from_bytes(event.data, "<voice packet>"))
                self.voice_updates += 1
            return np.zeros(0, dtype=np.float32)
        if isinstance(event, P.Packet):
            codes = event.codes
        elif isinstance(event, P.Lost):
            self.lost_packets += event.packets
            codes = np.full(event.packets * self.header.frames_per_packet, self.last_code)
        else:
            self.num_samples = event.num_samples
            return self.decoder.flush()
        if codes.size:
            self.last_code = int(codes[-1])
        return self.decoder.push(codes)

    def reader(self, f, name: str = "<stream>") -> P.PacketReader:
        """The packets of `f` (after its header), decoded with the stream's packet code."""
        return P.PacketReader(f, self.header, self.code, name)


@dataclass
class LoopbackResult:
    audio: np.ndarray  # [T] at the model's rate
    chunk_ms: float
    packet_ms: float
    algorithmic_latency_ms: float  # the model's
    compute_ms: list[float]  # per chunk, encode + entropy coding + decode, one thread
    bytes_sent: int  # the header and every packet
    header_bytes: int  # the stream header's share (sent once, at the start)
    seconds: float
    voice_sent_at: float | None = None  # seconds into the input when the voice packet went
    voice_ms: float = 0.0  # compute of measuring that voice (not in `compute_ms`)

    @property
    def bitrate(self) -> float:
        """Bits per second on the wire, framing and header included."""
        return 8 * self.bytes_sent / max(self.seconds, 1e-9)

    @property
    def packet_bitrate(self) -> float:
        """Bits per second of the packets alone (codes and framing, no header): the
        rate a long stream tends to."""
        return 8 * (self.bytes_sent - self.header_bytes) / max(self.seconds, 1e-9)

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency plus waiting for a whole chunk and a whole packet."""
        return self.algorithmic_latency_ms + self.chunk_ms + self.packet_ms


def loopback(
    model: Any,
    wave: np.ndarray,
    sample_rate: int,
    *,
    chunk_ms: float = 20.0,
    packet_ms: float = 20.0,
    voice: str | Voice | None = None,
    seed: int = 0,
    send_voice: float | None = None,
    match: bool = True,
) -> LoopbackResult:
    """`wave` through compressor, packets and decompressor in chunks of `chunk_ms`, as a
    live link would carry it; each chunk's compute is timed. `send_voice` seconds: the
    sender measures its voice and sends it (`StreamCompressor`), which the receiver
    follows unless `voice` is given; to a `voice` from recordings the codes are moved
    as they arrive unless not `match` (`StreamDecoder`)."""
    import io

    from speechvq.models.streaming import algorithmic_latency

    latency = algorithmic_latency(model)
    if latency is None:
        raise SpeechVQError("this model cannot stream (a -stream preset can)")
    # The voice is measured in the push that completes its seconds, and that time is
    # taken out of the chunk's: live, it runs in a thread beside the stream.
    comp = StreamCompressor(
        model, sample_rate, packet_ms=packet_ms, send_voice=send_voice, threaded=False
    )
    meter = comp.voice_meter
    decomp = StreamDecompressor(model, comp.header, voice=voice, seed=seed, match=match)
    pipe = io.BytesIO()
    reader = decomp.reader(pipe, "<loopback>")
    sent = header = len(comp.start())
    chunk = max(1, round(chunk_ms / 1000 * sample_rate))
    pieces, compute = [], []
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    starts = list(range(0, wave.size, chunk))
    measured = 0.0  # ms spent measuring the voice so far
    for k, t in enumerate(starts):
        t0 = time.perf_counter()
        data = comp.push(wave[t : t + chunk])
        if k == len(starts) - 1:
            data += comp.flush()
        sent += len(data)
        pos = pipe.tell()
        pipe.write(data)
        pipe.seek(pos)
        for event in reader.events():
            pieces.append(decomp.feed(event))
        pipe.seek(0, io.SEEK_END)
        voice_ms = meter.compute_ms if meter is not None else 0.0
        compute.append(1000 * (time.perf_counter() - t0) - (voice_ms - measured))
        measured = voice_ms
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if decomp.num_samples is not None:
        audio = audio[: decomp.num_samples]
    return LoopbackResult(
        audio=audio,
        chunk_ms=chunk_ms,
        packet_ms=comp.fpp * 1000 / model.frame_rate,
        algorithmic_latency_ms=1000 * latency,
        compute_ms=compute,
        bytes_sent=sent,
        header_bytes=header,
        seconds=wave.size / sample_rate,
        voice_sent_at=comp.voice_sent_at,
        voice_ms=measured,
    )
