"""The `.svq` file: a compressed code sequence with the header needed to decode it.

Self-describing and versioned, after EnCodec's `.ecdc` (magic, version, JSON
metadata). Layout, all integers little-endian:

    offset  size  field
    0       8     magic  b"\\x89SVQ\\r\\n\\x1a\\n"  (PNG-style: catches text-mode
                  transfers and newline rewriting, and is not valid UTF-8)
    8       2     format version (uint16), currently 1
    10      4     header length N (uint32)
    14      N     header: UTF-8 JSON object (see `SVQHeader`)
    14+N    4     CRC32 of the header bytes
    18+N    M     payload: the range-coded codes (`entropy.py`), then the range-coded
                  pitch track if any (`pitch_track.py`, its last pitch_bytes bytes);
                  M = header's payload_bytes

A reader refuses, with one line naming the file: another kind of file, a version
it does not know, a truncated or overlong file, a damaged header or payload
(CRC32), and a file made by another model (`model_hash`). Nothing is unpickled.

The container alone: writing and checking the bytes, and `model_hash`, which
names a model. Turning codes into a payload and back, with or without a
model, is `speechvq.inference.compression`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechvq.codec.entropy import CODER_NAME
from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

MAGIC = b"\x89SVQ\r\n\x1a\n"
FORMAT_VERSION = 1
MODEL_HASH_CHARS = 16  # 64 bits of sha256: ample to tell models apart, short in every file
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_CRC = struct.Struct("<I")
_MAX_HEADER = 1 << 16  # a real header is ~300 bytes; a bigger length means garbage


@dataclass(frozen=True)
class SVQHeader:
    """What a reader needs to decode the payload and synthesise speech."""

    model_hash: str  # first MODEL_HASH_CHARS hex digits of `model_hash(...)`
    sample_rate: int  # Hz of the decoded audio
    hop_length: int  # samples per code
    codebook_size: int  # K
    num_frames: int  # T, the number of codes
    num_samples: int  # length of the original audio at sample_rate (<= T * hop)
    speaker: str | None  # the speaker to synthesise by default (None: let the reader choose)
    entropy_model: str  # "prior", "adaptive", "unigram", "uniform" (see entropy.py)
    codes_crc32: int  # CRC32 of the codes as little-endian uint16: catches a prior mismatch
    coder: str = CODER_NAME
    payload_bytes: int = 0  # filled in by `write_svq`
    payload_crc32: int = 0  # filled in by `write_svq`
    package_version: str = ""  # speechvq version that wrote the file, for information
    # The input's voice for a model with a speaker encoder: base64 of the packed
    # vector and log-F0 level (`inference.compression.pack_voice`); None without.
    voice: str | None = None
    # The input's pitch track (`speechvq.codec.pitch_track`): code frames per block
    # (0: no track), and its range-coded bytes, the last `pitch_bytes` of the payload.
    pitch_block: int = 0
    pitch_bytes: int = 0

    @property
    def bits_per_second(self) -> float:
        """Payload bit rate (codes and pitch track; header excluded) over the coded duration."""
        seconds = self.num_frames * self.hop_length / self.sample_rate
        return 8 * self.payload_bytes / seconds if seconds else 0.0


@dataclass(frozen=True)
class SVQFile:
    """A read `.svq` file: its header and its payload bytes."""

    header: SVQHeader
    payload: bytes
    path: str = ""


def codes_crc32(codes: np.ndarray) -> int:
    """CRC32 of `[T]` codes written as little-endian uint16 (K <= 65536)."""
    return zlib.crc32(np.asarray(codes).astype("<u2").tobytes())


def write_svq(
    path: str | os.PathLike, header: SVQHeader, payload: bytes, *, force: bool = True
) -> Path:
    """Write an `.svq` file atomically; payload_bytes and payload_crc32 are set from `payload`.

    With `force=False` an existing file is refused rather than overwritten.
    """
    path = Path(path)
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    header = dataclasses.replace(
        header, payload_bytes=len(payload), payload_crc32=zlib.crc32(payload)
    )
    header_bytes = json.dumps(dataclasses.asdict(header), separators=(",", ":")).encode("utf-8")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)))
            f.write(header_bytes)
            f.write(_CRC.pack(zlib.crc32(header_bytes)))
            f.write(payload)
    return path


def read_svq(path: str | os.PathLike, expected_model_hash: str | None = None) -> SVQFile:
    """Read and check an `.svq` file; raises `SpeechVQError` (one line) for any defect.

    With `expected_model_hash` (full or short hex), a file written by another model
    is refused, naming both hashes.
    """
    path = Path(path)
    if not path.exists():
        raise SpeechVQError(f"{path}: no such file")
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory, not a .svq file")
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if not prefix:
            raise SpeechVQError(f"{path}: empty file, not a speechvq .svq file")
        if not MAGIC.startswith(prefix[:8]):
            raise SpeechVQError(f"{path}: not a speechvq .svq file (wrong magic bytes)")
        if len(prefix) < _PREFIX.size:
            raise SpeechVQError(f"{path}: truncated .svq file (ends inside its prefix)")
        _, version, header_len = _PREFIX.unpack(prefix)
        if version != FORMAT_VERSION:
            newer = " (written by a newer speechvq? upgrade it)" if version > FORMAT_VERSION else ""
            raise SpeechVQError(
                f"{path}: .svq format version {version} is not known to this speechvq,"
                f" which reads version {FORMAT_VERSION}{newer}"
            )
        if header_len > _MAX_HEADER:
            raise SpeechVQError(f"{path}: corrupted .svq header (length {header_len})")
        header_bytes = f.read(header_len)
        crc = f.read(_CRC.size)
        if len(header_bytes) < header_len or len(crc) < _CRC.size:
            raise SpeechVQError(f"{path}: truncated .svq file (ends inside its header)")
        if zlib.crc32(header_bytes) != _CRC.unpack(crc)[0]:
            raise SpeechVQError(f"{path}: corrupted .svq header (CRC32 mismatch)")
        header = _parse_header(path, header_bytes)
        left = os.fstat(f.fileno()).st_size - f.tell()
        if left < header.payload_bytes:
            raise SpeechVQError(
                f"{path}: truncated .svq file (payload has {left} of {header.payload_bytes} bytes)"
            )
        if left > header.payload_bytes:
            raise SpeechVQError(
                f"{path}: {left - header.payload_bytes} unexpected bytes after the payload"
            )
        payload = f.read(header.payload_bytes)
    if zlib.crc32(payload) != header.payload_crc32:
        raise SpeechVQError(f"{path}: corrupted .svq payload (CRC32 mismatch)")
    if expected_model_hash is not None:
        expected = expected_model_hash[:MODEL_HASH_CHARS]
        if header.model_hash != expected:
            by = f" with speechvq {header.package_version}" if header.package_version else ""
            raise SpeechVQError(
                f"{path}: made by model {header.model_hash}{by}, not by this model {expected};"
                " decode it with the model that encoded it (a shipped model changes between"
                " versions: the version that wrote it has it)"
            )
    return SVQFile(header, payload, str(path))


def _parse_header(path: Path, header_bytes: bytes) -> SVQHeader:
    try:
        d = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SpeechVQError(f"{path}: corrupted .svq header (not JSON)") from None
    if not isinstance(d, dict):
        raise SpeechVQError(f"{path}: corrupted .svq header (not a JSON object)")
    known = {f.name: f for f in dataclasses.fields(SVQHeader)}
    required = [n for n, f in known.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise SpeechVQError(f"{path}: .svq header lacks {', '.join(missing)}")
    # Unknown keys are ignored: a later writer may add optional fields within version 1.
    values = {n: d[n] for n in known if n in d}
    ints = ("sample_rate", "hop_length", "codebook_size", "num_frames", "num_samples")
    ints += ("codes_crc32", "payload_bytes", "payload_crc32", "pitch_block", "pitch_bytes")
    strs = ("model_hash", "entropy_model", "coder", "package_version")
    bad = [n for n in ints if n in values and (type(values[n]) is not int or values[n] < 0)]
    bad += [n for n in strs if n in values and not isinstance(values[n], str)]
    for name in ("speaker", "voice"):
        if values.get(name) is not None and not isinstance(values[name], str):
            bad.append(name)
    if bad:
        raise SpeechVQError(f"{path}: .svq header has invalid {', '.join(bad)}")
    if (
        values["sample_rate"] == 0
        or values["hop_length"] == 0
        or not 2 <= values["codebook_size"] <= 1 << 16
        or values["num_samples"] > values["num_frames"] * values["hop_length"]
        or values.get("pitch_bytes", 0) > values.get("payload_bytes", 0)
    ):
        raise SpeechVQError(f"{path}: .svq header has inconsistent values")
    return SVQHeader(**values)
