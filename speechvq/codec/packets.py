"""The `.svqs` packet stream: codes sent a packet at a time, each decodable on arrival.

For live audio (issue 18), beside the `.svq` file (`bitstream.py`), which
needs the whole utterance. Version 3, all integers little-endian:

    stream   header, then packets, the last an end packet
    header   4     magic b"SVQS"
             1     version (uint8), currently 3
             2     JSON length N (uint16)
             N     UTF-8 JSON object (`StreamHeader`)
    packet   1     sequence number mod 128 (bit 7 clear)
             ...   the header's `frames_per_packet` codes, prefix-coded
                   (`prefix.PacketCode`: the model's table, or 9 bits each),
                   zero bits up to the next whole byte
    short    1     128 + sequence number mod 128: only the last packet may be short
             1     frames n (1..255)
             ...   the n codes, as above
    control  1     128 + sequence number mod 128
             1     0
             1     kind: 0 end, 1 voice
    end      4     samples in the stream (uint32), to trim the last frame
    voice    1     length L
             L     a voice (the sender's, measured as the stream went on), packed
                   as in the `.svq` header (`inference.compression.voice_bytes`)

A packet carries no length: its reader decodes the codes it knows are there
and the bits end with them. Each packet's codes are coded on their own (its
first code without context), so any packet decodes without the ones before
it: a lost packet is a gap in the sequence numbers, which the reader reports
and the decoder conceals, and the stream goes on. A voice packet takes no
sequence number (its tag carries the next packet's, unread), so losing one
leaves a gap in nothing: the receiver keeps the voice it had. Framing costs
one byte a packet (0.4 kbit/s at 20 ms). There is no checksum: a pipe does
not corrupt bytes, and a datagram transport has its own. Versions 1 (3 bytes
of framing and a range-coded payload) and 2 (version 3 without the voice
packet, its end packet without the kind byte) are no longer read: a packet
stream is for live audio, and `.svq` is the format to keep.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from speechvq.codec.prefix import PacketCode
from speechvq.errors import SpeechVQError

MAGIC = b"SVQS"
STREAM_VERSION = 3
_HEAD = struct.Struct("<4sBH")
_END = struct.Struct("<I")
_CONTROL = 0x80  # tag bit: a short or control packet, a frame count follows
_END_KIND, _VOICE_KIND = 0, 1  # the kinds of control packet (frame count 0)
_SEQUENCE = 128


@dataclass(frozen=True)
class StreamHeader:
    """What a reader needs before the first packet."""

    model_hash: str
    sample_rate: int
    hop_length: int
    codebook_size: int
    frames_per_packet: int
    entropy_model: str  # the packet code: "bigram" (the model's table) or "fixed"
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


@dataclass(frozen=True)
class VoiceUpdate:
    """A voice sent in the stream: from here on, decode in it (the bytes of
    `inference.compression.voice_bytes`)."""

    data: bytes


def header_bytes(header: StreamHeader) -> bytes:
    body = json.dumps(dataclasses.asdict(header), sort_keys=True).encode()
    return _HEAD.pack(MAGIC, STREAM_VERSION, len(body)) + body


def packet_bytes(
    sequence: int, codes: np.ndarray, code: PacketCode, frames_per_packet: int
) -> bytes:
    """One packet: `frames_per_packet` codes, or fewer for the last packet (1-255)."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    tag = sequence % _SEQUENCE
    if codes.size == frames_per_packet:
        return bytes([tag]) + code.encode(codes)
    if not 1 <= codes.size <= min(255, frames_per_packet):
        raise ValueError(f"a packet holds 1 to {frames_per_packet} frames, not {codes.size}")
    return bytes([_CONTROL | tag, codes.size]) + code.encode(codes)


def end_bytes(sequence: int, num_samples: int) -> bytes:
    return bytes([_CONTROL | sequence % _SEQUENCE, 0, _END_KIND]) + _END.pack(num_samples)


def voice_packet_bytes(sequence: int, data: bytes) -> bytes:
    """A voice packet before packet `sequence` (which it does not use up)."""
    if not 1 <= len(data) <= 255:
        raise ValueError(f"a voice packet holds 1 to 255 bytes, not {len(data)}")
    return bytes([_CONTROL | sequence % _SEQUENCE, 0, _VOICE_KIND, len(data)]) + data


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
    a `Lost` before one that follows a gap in the sequence numbers, a `VoiceUpdate` for
    each voice packet, and `End` last,
    and returns when `f` has no more bytes for now (a stream cut off without an end
    packet just stops). It can be called again as more bytes arrive."""

    def __init__(self, f: BinaryIO, header: StreamHeader, code: PacketCode, name: str):
        self.f, self.header, self.code, self.name = f, header, code, name
        self.expected: int | None = None
        self.ended = False

    def events(self) -> Iterator[Packet | Lost | VoiceUpdate | End]:
        f, name = self.f, self.name
        while not self.ended:
            first = f.read(1)
            if not first:
                return
            tag = first[0]
            sequence, n = tag & ~_CONTROL, self.header.frames_per_packet
            if tag & _CONTROL:
                n = _read(f, 1, name, "a packet")[0]
            if n == 0:
                kind = _read(f, 1, name, "a control packet")[0]
                if kind == _VOICE_KIND:  # no sequence number of its own
                    length = _read(f, 1, name, "a voice packet")[0]
                    yield VoiceUpdate(_read(f, length, name, "a voice packet"))
                    continue
                if kind != _END_KIND:
                    raise SpeechVQError(f"{name}: unknown control packet kind {kind}")
            if self.expected is not None and sequence != self.expected:
                yield Lost((sequence - self.expected) % _SEQUENCE)
            self.expected = (sequence + 1) % _SEQUENCE
            if n == 0:
                self.ended = True
                yield End(_END.unpack(_read(f, _END.size, name, "its end packet"))[0])
                return
            what = f"packet {sequence}"
            try:
                codes = self.code.decode(lambda what=what: _read(f, 1, name, what)[0], n)
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
