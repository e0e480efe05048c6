"""The `.svqs` packet stream: codes sent a packet at a time, each decodable on arrival.

For live audio (issue 18), beside the `.svq` file (`bitstream.py`), which
needs the whole utterance. Version 1, all integers little-endian:

    stream   header, then packets, the last an end packet
    header   4     magic b"SVQS"
             1     version (uint8), currently 1
             2     JSON length N (uint16)
             N     UTF-8 JSON object (`StreamHeader`)
    packet   1     sequence number (uint8, +1 per packet, wrapping at 256)
             1     frames n (uint8, 1..255); 0 marks the end packet
             1     payload length in 32-bit words W (uint8)
             4 W   the n codes, range-coded (`entropy.py`) with the entropy
                   model started afresh for this packet
    end      1     sequence number
             1     0
             4     samples in the stream (uint32), to trim the last frame

Each packet's codes are coded on their own (the entropy model is reset for
each), so any packet decodes without the ones before it: a lost packet is a
gap in the sequence numbers, which the reader reports and the decoder
conceals, and the stream goes on. A packet costs 3 bytes of framing. There
is no checksum: a pipe does not corrupt bytes, and a datagram transport
has its own.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from speechvq.codec.entropy import ProbabilitySource, decode_codes, encode_codes
from speechvq.errors import SpeechVQError

MAGIC = b"SVQS"
STREAM_VERSION = 1
_HEAD = struct.Struct("<4sBH")
_PACKET = struct.Struct("<BBB")
_END = struct.Struct("<I")


@dataclass(frozen=True)
class StreamHeader:
    """What a reader needs before the first packet."""

    model_hash: str
    sample_rate: int
    hop_length: int
    codebook_size: int
    frames_per_packet: int
    entropy_model: str
    speaker: str | None = None  # a training speaker's name, or
    voice: str | None = None  # a packed `Voice` (`inference.compression.pack_voice`)
    package_version: str = ""


@dataclass(frozen=True)
class Packet:
    sequence: int
    codes: np.ndarray  # [n] int64


@dataclass(frozen=True)
class Lost:
    """Packets missing before the next one that arrived (a gap in the sequence numbers)."""

    packets: int


@dataclass(frozen=True)
class End:
    num_samples: int


def header_bytes(header: StreamHeader) -> bytes:
    body = json.dumps(dataclasses.asdict(header), sort_keys=True).encode()
    return _HEAD.pack(MAGIC, STREAM_VERSION, len(body)) + body


def packet_bytes(sequence: int, codes: np.ndarray, source: ProbabilitySource) -> bytes:
    """One packet of 1-255 codes, entropy-coded from a fresh `source`."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    if not 1 <= codes.size <= 255:
        raise ValueError(f"a packet holds 1 to 255 frames, not {codes.size}")
    payload = encode_codes(codes, source)  # resets `source` first
    return _PACKET.pack(sequence % 256, codes.size, len(payload) // 4) + payload


def end_bytes(sequence: int, num_samples: int) -> bytes:
    return _PACKET.pack(sequence % 256, 0, 0) + _END.pack(num_samples)


def read_header(f: BinaryIO, name: str = "<stream>") -> StreamHeader:
    raw = _read(f, _HEAD.size, name, "its header")
    magic, version, n = _HEAD.unpack(raw)
    if magic != MAGIC:
        raise SpeechVQError(f"{name}: not a speechvq packet stream (.svqs)")
    if version != STREAM_VERSION:
        raise SpeechVQError(
            f"{name}: packet stream version {version}; this speechvq reads {STREAM_VERSION}"
        )
    try:
        fields = json.loads(_read(f, n, name, "its header"))
        return StreamHeader(**fields)
    except (ValueError, TypeError) as exc:
        raise SpeechVQError(f"{name}: damaged stream header ({exc})") from None


class PacketReader:
    """The packets of a stream from `f` as they arrive: `events()` yields each `Packet`,
    a `Lost` before one that follows a gap in the sequence numbers, and `End` last,
    and returns when `f` has no more bytes for now (a stream cut off without an end
    packet just stops). It can be called again as more bytes arrive."""

    def __init__(self, f: BinaryIO, header: StreamHeader, source: ProbabilitySource, name: str):
        self.f, self.header, self.source, self.name = f, header, source, name
        self.expected: int | None = None
        self.ended = False

    def events(self) -> Iterator[Packet | Lost | End]:
        f, name = self.f, self.name
        while not self.ended:
            first = f.read(1)
            if not first:
                return
            raw = first + _read(f, _PACKET.size - 1, name, "a packet")
            sequence, n, words = _PACKET.unpack(raw)
            if self.expected is not None and sequence != self.expected:
                yield Lost((sequence - self.expected) % 256)
            self.expected = (sequence + 1) % 256
            if n == 0:
                self.ended = True
                yield End(_END.unpack(_read(f, _END.size, name, "its end packet"))[0])
                return
            payload = _read(f, 4 * words, name, f"packet {sequence}")
            try:
                codes = decode_codes(payload, n, self.source)
            except ValueError as exc:
                raise SpeechVQError(f"{name}: packet {sequence}: cannot decode ({exc})") from None
            yield Packet(sequence, codes)


def _read(f: BinaryIO, n: int, name: str, what: str) -> bytes:
    data = f.read(n)
    while len(data) < n:  # a pipe may give less than asked for
        more = f.read(n - len(data))
        if not more:
            raise SpeechVQError(f"{name}: the stream ends inside {what}")
        data += more
    return data
