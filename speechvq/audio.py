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


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 `[T]`, resampled to `sample_rate` if given.

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
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean "not audio"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpeechVQError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise SpeechVQError(f"{path}: contains no audio samples")
    if not np.isfinite(data).all():
        raise SpeechVQError(f"{path}: contains NaN or Inf samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and sr != sample_rate:
        wave = resample(wave, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


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
        # mkstemp creates files readable by their owner only; give the output
        # the permissions a plain open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


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
