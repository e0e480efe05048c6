"""Audio input and output, resampling and mu-law companding.

Everything here is NumPy: waveforms are float32 arrays of shape [T] in
[-1, 1]. Reading goes through libsndfile (soundfile), so wav, flac and ogg in
8/16/24/32-bit integer or float all work; resampling uses soxr (high quality,
fast, and no torchaudio, which has no CPU build beside torch 2.13 here).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from speechvq.errors import SpeechVQError

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


class atomic_output:
    """Context manager giving a temporary path that is renamed onto `path` on success.

    A failure (or Ctrl-C) leaves `path` untouched and removes the temporary file,
    so no command ever leaves a half-written output behind.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp" + self.path.suffix, dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            # mkstemp (and some writers, e.g. safetensors, which recreate the
            # file) leave it readable by its owner only; give the output the
            # permissions a plain open() would: 0666 less the umask.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that `atomic_output(path)` calls left when killed.

    Only SIGKILL (or a power cut) leaves one: any exception, Ctrl-C and (in the
    CLI) SIGTERM remove it. Call this only where no other process is writing
    `path`, e.g. when a training run resumes in its own folder.
    """
    import glob

    path = Path(path)
    pattern = f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"
    removed = sorted(path.parent.glob(pattern))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def _xp(x):
    # mu-law is used on NumPy arrays (I/O) and torch tensors (training targets);
    # both libraries spell these ufuncs alike, so one implementation serves both.
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def mulaw_encode(wave, channels: int = 256):
    """Mu-law compand floats in [-1, 1] to integers in [0, channels) (WaveNet §2.2).

    Works on NumPy arrays and torch tensors of any shape; returns int64.
    """
    xp = _xp(wave)
    mu = channels - 1
    x = xp.clip(wave, -1.0, 1.0)
    y = xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.log1p(mu)
    q = xp.clip(xp.floor((y + 1) / 2 * mu + 0.5), 0, mu)
    return q.long() if xp is not np else q.astype(np.int64)


def mulaw_decode(index: np.ndarray, channels: int = 256) -> np.ndarray:
    """Inverse of `mulaw_encode` for NumPy: integers in [0, channels) to float32 in [-1, 1]."""
    mu = channels - 1
    y = 2 * (np.asarray(index, dtype=np.float64) / mu) - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def preemphasis(wave: np.ndarray, coef: float) -> np.ndarray:
    """y[t] = x[t] - coef * x[t-1]; boosts highs before mu-law, as LPCNet does."""
    if coef == 0:
        return wave
    out = np.empty_like(wave)
    out[0] = wave[0]
    out[1:] = wave[1:] - coef * wave[:-1]
    return out


def deemphasis(wave: np.ndarray, coef: float) -> np.ndarray:
    """Inverse of `preemphasis`: y[t] = x[t] + coef * y[t-1]."""
    if coef == 0:
        return wave
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -coef], wave).astype(np.float32)
