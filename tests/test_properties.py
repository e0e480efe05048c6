"""Property-based tests (hypothesis) of the two readers that meet users' files.

Whatever the bytes, `load_audio` returns a finite mono float32 array or raises
`SpeechVQError`, and `load_codes` returns a 1-D int64 array in [0, K) or raises
`SpeechVQError`: never another exception. `max_examples` is kept modest so the
file runs in well under a minute on a shared CPU.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from speechvq.audio.io import load_audio
from speechvq.codec.codes import load_codes
from speechvq.errors import SpeechVQError

K = 16
SETTINGS = settings(
    max_examples=60,
    deadline=None,  # a shared CPU makes timings meaningless
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _valid_file(fmt: str, subtype: str, frames: int = 300, channels: int = 2) -> bytes:
    buf = io.BytesIO()
    data = 0.3 * np.sin(np.arange(frames * channels, dtype=np.float32) / 7).reshape(-1, channels)
    sf.write(buf, data, 16000, format=fmt, subtype=subtype)
    return buf.getvalue()


VALID_AUDIO = [
    _valid_file("WAV", "PCM_16"),
    _valid_file("WAV", "FLOAT"),
    _valid_file("FLAC", "PCM_16"),
    _valid_file("WAV", "IMA_ADPCM", channels=1),
]


def _check_audio(path: Path, rate: int | None) -> np.ndarray | None:
    try:
        wave, sr = load_audio(path, rate)
    except SpeechVQError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return None
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size >= 1
    assert np.isfinite(wave).all()
    assert rate is None or sr == rate
    return wave


# Audio: damaged files ----------------------------------------------------------

damaged_audio = st.one_of(
    st.binary(max_size=2000),  # random bytes
    st.tuples(st.sampled_from([b"RIFF", b"RIFF\x00\x10\x00\x00WAVEfmt ", b"fLaC", b"OggS"]),
              st.binary(max_size=1000)).map(b"".join),  # a real magic, then garbage
    st.tuples(st.sampled_from(VALID_AUDIO), st.integers(0, 10**6), st.integers(1, 255),
              st.integers(0, 3)).map(lambda t: _damage(*t)),  # a real file, flipped or cut
)  # fmt: skip


def _damage(data: bytes, at: int, xor: int, mode: int) -> bytes:
    i = at % len(data)
    if mode == 0:  # truncated
        return data[:i]
    if mode == 1:  # one byte flipped (often in the header: the first 60 bytes)
        i = at % 60 if at % 2 else i
    return data[:i] + bytes([data[i] ^ xor]) + data[i + 1 :]


@SETTINGS
@given(data=damaged_audio, ext=st.sampled_from([".wav", ".flac"]), resample=st.booleans())
def test_audio_reader_on_damaged_bytes(folder, data, ext, resample):
    path = folder / f"damaged{ext}"
    path.write_bytes(data)
    _check_audio(path, 16000 if resample else None)


# Audio: valid files of every shape -------------------------------------------

SUBTYPES = {".wav": ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]}
SUBTYPES[".flac"] = ["PCM_S8", "PCM_16", "PCM_24"]


@st.composite
def valid_audio(draw):
    ext = draw(st.sampled_from(sorted(SUBTYPES)))
    subtype = draw(st.sampled_from(SUBTYPES[ext]))
    frames = draw(st.integers(1, 5000))
    channels = draw(st.integers(1, 6))
    rate = draw(st.integers(8000, 96000))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))  # silence to full scale
    data = scale * np.random.default_rng(seed).uniform(-1, 1, (frames, channels))
    return ext, subtype, rate, data.astype(np.float32)


@SETTINGS
@given(case=valid_audio())
def test_audio_reader_on_valid_files(folder, case):
    ext, subtype, rate, data = case
    path = folder / f"valid{ext}"
    try:
        sf.write(path, data, rate, subtype=subtype)
    except sf.LibsndfileError:  # e.g. FLAC has no header field for 65536 Hz: no such file
        reject()
    stored = sf.read(path, dtype="float32", always_2d=True)[0]  # after the format's rounding
    wave = _check_audio(path, None)
    assert wave is not None
    np.testing.assert_allclose(wave, stored.mean(axis=1), atol=1e-6)
    wave = _check_audio(path, 16000)
    assert wave is not None
    assert abs(wave.size - max(1, round(len(data) * 16000 / rate))) <= 1


# Codes ---------------------------------------------------------------------------


def _check_codes(path: Path) -> np.ndarray | None:
    try:
        codes = load_codes(path, K)
    except SpeechVQError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return None
    assert codes.dtype == np.int64 and codes.ndim == 1 and codes.size >= 1
    assert codes.min() >= 0 and codes.max() < K
    return codes


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


damaged_codes = st.one_of(
    st.binary(max_size=500),
    st.tuples(st.sampled_from([b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x03\x00"]),
              st.binary(max_size=300)).map(b"".join),
    st.tuples(st.sampled_from([_npy(np.arange(10) % K), _npy(np.array([1, None], dtype=object))]),
              st.integers(0, 10**6), st.integers(1, 255), st.integers(0, 3))
    .map(lambda t: _damage(*t)),
)  # fmt: skip


@SETTINGS
@given(data=damaged_codes)
def test_codes_reader_on_damaged_bytes(folder, data):
    path = folder / "damaged.npy"
    path.write_bytes(data)
    _check_codes(path)


dtypes = st.one_of(
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(),
    hnp.boolean_dtypes(),
    hnp.datetime64_dtypes(),
    hnp.byte_string_dtypes(max_len=4),
)
arrays = hnp.arrays(
    dtype=dtypes,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    elements=None,  # the dtype's whole range, out-of-range codes included
)


@SETTINGS
@given(arr=st.one_of(arrays, hnp.arrays(np.int64, st.integers(1, 20), elements=st.integers(-2, K))))
def test_codes_reader_on_arrays(folder, arr):
    path = folder / "codes.npy"
    np.save(path, arr)
    codes = _check_codes(path)
    valid = (
        np.issubdtype(arr.dtype, np.integer)
        and arr.ndim == 1
        and arr.size > 0
        and arr.min() >= 0
        and arr.max() < K
    )
    assert (codes is not None) == bool(valid), (arr.dtype, arr.shape, arr)
    if codes is not None:
        np.testing.assert_array_equal(codes, arr.astype(np.int64))


@settings(max_examples=10, deadline=None, database=None)
@given(items=st.lists(st.one_of(st.integers(0, K - 1), st.text(max_size=3), st.none()), max_size=5))
def test_pickled_object_arrays_are_never_loaded(folder, items):
    path = folder / "object.npy"
    np.save(path, np.array(items + [object()], dtype=object), allow_pickle=True)
    with pytest.raises(SpeechVQError, match="pickled Python objects"):
        load_codes(path, K)
