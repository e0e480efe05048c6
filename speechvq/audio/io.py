"""Audio input and output, resampling and mu-law companding.

Everything here is NumPy: waveforms are float32 arrays of shape [T] in
[-1, 1]. Reading goes through libsndfile (soundfile), so wav, flac and ogg in
8/16/24/32-bit integer or float all work; resampling uses soxr (high quality,
fast, and no torchaudio, which has no CPU build beside torch 2.13 here).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au")


# Frames read per block: ~1.4 s at 48 kHz, 1.5 MB as float32 even with 6 channels.
_BLOCK_FRAMES = 1 << 16


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 `[T]`, resampled to `sample_rate` if given.

    The file is read in blocks; each block is downmixed (channel mean) and,
    with `sample_rate`, fed to a streaming soxr resampler (bit-identical to
    resampling the whole), so memory holds the mono output and one block,
    never the whole multichannel file as float32: a 1-hour 48 kHz stereo
    file read at 16 kHz costs ~230 MB instead of ~1.4 GB. A file too short
    to give one output sample gives one zero sample.

    Raises `SpeechVQError` (one line naming the file) for a missing path, a
    directory, bytes libsndfile cannot read, empty audio or NaN/Inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise SpeechVQError(f"{path}: no such file")
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory, not an audio file")
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile raises several types; all mean "not audio"
        raise SpeechVQError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    with f:
        sr = int(f.samplerate)
        rate = sr if sample_rate is None else int(sample_rate)
        stream = None
        if rate != sr:
            import soxr

            try:
                stream = soxr.ResampleStream(sr, rate, 1, dtype="float32", quality="HQ")
            except Exception as exc:
                raise SpeechVQError(f"{path}: cannot resample {sr} Hz ({_reason(exc)})") from None
        out = _Buffer(-(-max(f.frames, 0) * rate // sr) + 16)
        read = 0
        while True:
            try:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except Exception as exc:
                raise SpeechVQError(f"{path}: damaged audio ({_reason(exc)})") from None
            if not np.isfinite(block).all():
                raise SpeechVQError(f"{path}: contains NaN or Inf samples")
            read += block.shape[0]
            mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            last = block.shape[0] < _BLOCK_FRAMES
            if stream is not None:
                mono = stream.resample_chunk(np.ascontiguousarray(mono), last=last)
            out.append(mono, path)
            if last:
                break
    if read == 0:
        raise SpeechVQError(f"{path}: contains no audio samples")
    if out.size == 0:  # shorter than one output sample (e.g. 1 sample at 96 kHz)
        out.append(np.zeros(1, dtype=np.float32), path)
    return out.finish(), rate


class _Buffer:
    """A float32 array filled block by block: allocated once from the header's frame
    count and trimmed in place, so the output is never copied whole (a list of
    blocks and `np.concatenate` would briefly need twice the memory)."""

    def __init__(self, capacity: int):
        try:
            self.data = np.empty(capacity, dtype=np.float32)
        except (MemoryError, ValueError):  # a header claiming absurd lengths: grow instead
            self.data = np.empty(1 << 20, dtype=np.float32)
        self.size = 0

    def append(self, x: np.ndarray, path: Path) -> None:
        need = self.size + x.size
        if need > self.data.size:
            try:
                self.data.resize(max(need, 2 * self.data.size), refcheck=False)
            except MemoryError:
                raise SpeechVQError(f"{path}: too long to hold in memory") from None
        self.data[self.size : need] = x
        self.size = need

    def finish(self) -> np.ndarray:
        self.data.resize(self.size, refcheck=False)  # realloc: shrinks in place
        return self.data


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a `[T]` waveform with soxr's high-quality filter."""
    if orig_rate == target_rate:
        return wave.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(wave.astype(np.float32), orig_rate, target_rate, quality="HQ")


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """A float waveform in [-1, 1] as little-endian 16-bit PCM samples (clipped, rounded)."""
    return (np.clip(wave, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")


def save_audio(
    path: str | os.PathLike, wave: np.ndarray, sample_rate: int, *, force: bool = True
) -> Path:
    """Write a `[T]` float waveform as 16-bit PCM, atomically (temp file, then rename).

    Samples beyond [-1, 1] are clipped with a warning. With `force=False` an
    existing file is refused rather than overwritten.
    """
    import soundfile as sf

    path = Path(path)
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 1.0:
        warnings.warn(f"{path}: output clipped (peak {peak:.2f})", stacklevel=2)
        wave = np.clip(wave, -1.0, 1.0)
    fmt = sf.available_formats()
    subtype = "PCM_16"
    ext = path.suffix.lower().lstrip(".")
    file_format = ext.upper() if ext.upper() in fmt else "WAV"
    if file_format == "OGG":
        subtype = "VORBIS"
    with atomic_output(path) as tmp:
        sf.write(str(tmp), wave, sample_rate, subtype=subtype, format=file_format)
    return path
