"""Reading and writing code sequences as plain integer `.npy` files.

`np.load(path)` gives the `[frames]` array back; reading never unpickles
(`allow_pickle=False`), so a hostile file cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from speechvq.audio import atomic_output
from speechvq.errors import SpeechVQError


def save_codes(path: str | os.PathLike, codes: np.ndarray, *, force: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(codes, dtype=np.int16 if codes.max(initial=0) < 2**15 else np.int64))
    return path


def load_codes(path: str | os.PathLike, codebook_size: int | None = None) -> np.ndarray:
    """A `[frames]` int64 array from a `.npy` file; bad files raise `SpeechVQError`."""
    path = Path(path)
    if not path.is_file():
        raise SpeechVQError(f"{path}: no such codes file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpeechVQError(f"{path}: not a codes .npy file ({reason})") from None
    if not isinstance(arr, np.ndarray):
        raise SpeechVQError(f"{path}: not a single .npy array")
    if arr.ndim != 1:
        raise SpeechVQError(f"{path}: codes must be a 1-D array of frames, got shape {arr.shape}")
    if arr.size == 0:
        raise SpeechVQError(f"{path}: codes array is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        raise SpeechVQError(f"{path}: codes must be integers, got dtype {arr.dtype}")
    if codebook_size is not None and (arr.min() < 0 or arr.max() >= codebook_size):
        raise SpeechVQError(
            f"{path}: codes must lie in [0, {codebook_size}), got [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.int64)
