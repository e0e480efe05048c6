"""Reading and writing code sequences as plain integer `.npy` files.

`np.load(path)` gives the `[frames]` array back; reading never unpickles
(`allow_pickle=False`), so a hostile file cannot run code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

_NPY_MAGIC = b"\x93NUMPY"


def save_codes(path: str | os.PathLike, codes: np.ndarray, *, force: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(codes, dtype=np.int16 if codes.max(initial=0) < 2**15 else np.int64))
    return path


def load_codes(path: str | os.PathLike, codebook_size: int | None = None) -> np.ndarray:
    """A `[frames]` int64 array from a `.npy` file; bad files raise `SpeechVQError`.

    The header (magic, dtype, shape) is checked against the file size before
    any data is read, so a file that is not `.npy`, a pickled object array, a
    truncated file or a header claiming terabytes is refused with one line.
    Codes are non-negative integers, below `codebook_size` when given.
    """
    path = Path(path)
    if not path.exists():
        raise SpeechVQError(f"{path}: no such codes file")
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory, not a codes .npy file")
    shape, dtype = _check_header(path)
    if dtype.hasobject:
        raise SpeechVQError(f"{path}: holds pickled Python objects, not codes (not loaded)")
    if not np.issubdtype(dtype, np.integer):
        raise SpeechVQError(f"{path}: codes must be integers, got dtype {dtype}")
    if len(shape) != 1:
        raise SpeechVQError(f"{path}: codes must be a 1-D array of frames, got shape {shape}")
    if shape[0] == 0:
        raise SpeechVQError(f"{path}: codes array is empty")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # a header that passed but data numpy cannot read
        raise SpeechVQError(f"{path}: not a codes .npy file ({_first_line(exc)})") from None
    lo, hi = arr.min(), arr.max()
    top = np.iinfo(np.int64).max if codebook_size is None else codebook_size - 1
    if lo < 0 or hi > top:
        where = f"[0, {codebook_size})" if codebook_size is not None else "[0, 2**63)"
        raise SpeechVQError(f"{path}: codes must lie in {where}, got [{lo}, {hi}]")
    return arr.astype(np.int64)


def _check_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a `.npy` header, refusing non-npy and truncated files."""
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise SpeechVQError(f"{path}: not a .npy file (codes come from `speechvq encode`)")
        f.seek(0)
        try:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
        except Exception as exc:
            raise SpeechVQError(f"{path}: damaged .npy header ({_first_line(exc)})") from None
        data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    if not dtype.hasobject and math.prod(shape) * dtype.itemsize > data_bytes:
        raise SpeechVQError(
            f"{path}: truncated .npy file (header says {shape} {dtype}, {data_bytes} data bytes)"
        )
    return shape, dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
