"""The `.svq` container: round trips, and a one-line SpeechVQError for every defect."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from speechvq.codec.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    MODEL_HASH_CHARS,
    SVQHeader,
    read_svq,
    write_svq,
)
from speechvq.codec.entropy import AdaptiveSource, UniformSource
from speechvq.errors import SpeechVQError
from speechvq.inference.compression import (
    compress,
    decompress,
    model_hash_of,
    pack_codes,
    unpack_codes,
)
from speechvq.models.modelfile import model_hash

pytest.importorskip("constriction")

HASH = "0123456789abcdef" * 4


def _packed(n: int = 40, source=None):
    source = source or AdaptiveSource(512)
    codes = np.random.default_rng(0).integers(0, 512, n) // 8  # some repetition
    svq = pack_codes(
        codes, source, model_hash=HASH, sample_rate=16000, hop_length=64, num_samples=n * 64 - 10,
        speaker="p225", package_version="0.1.0",
    )  # fmt: skip
    return codes, svq


def _file(tmp_path: Path, n: int = 40) -> tuple[np.ndarray, Path]:
    codes, svq = _packed(n)
    path = write_svq(tmp_path / "x.svq", svq.header, svq.payload)
    return codes, path


def test_round_trip(tmp_path):
    codes, path = _file(tmp_path)
    svq = read_svq(path, expected_model_hash=HASH)
    h = svq.header
    assert (h.sample_rate, h.hop_length, h.codebook_size, h.num_frames) == (16000, 64, 512, 40)
    assert (h.speaker, h.entropy_model, h.num_samples) == ("p225", "adaptive", 40 * 64 - 10)
    assert h.model_hash == HASH[:MODEL_HASH_CHARS] and h.payload_bytes == len(svq.payload)
    np.testing.assert_array_equal(unpack_codes(svq, AdaptiveSource(512)), codes)
    assert path.read_bytes().startswith(MAGIC)
    assert h.bits_per_second == 8 * h.payload_bytes / (40 * 64 / 16000)


def test_empty_sequence(tmp_path):
    svq = pack_codes(
        np.zeros(0, int), UniformSource(512), model_hash=HASH, sample_rate=16000, hop_length=64
    )
    path = write_svq(tmp_path / "e.svq", svq.header, svq.payload)
    read = read_svq(path)
    assert read.payload == b"" and read.header.num_frames == 0
    assert unpack_codes(read, UniformSource(512)).shape == (0,)


def test_write_fills_payload_fields_and_respects_force(tmp_path):
    _, svq = _packed()
    header = dataclasses.replace(svq.header, payload_bytes=0, payload_crc32=0)
    path = write_svq(tmp_path / "x.svq", header, svq.payload)
    assert read_svq(path).header == svq.header
    with pytest.raises(SpeechVQError, match="already exists"):
        write_svq(path, header, svq.payload, force=False)


def test_truncation_at_every_byte_is_refused(tmp_path):
    _, path = _file(tmp_path, n=12)
    data = path.read_bytes()
    cut = tmp_path / "cut.svq"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(SpeechVQError) as err:
            read_svq(cut)
        assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_every_flipped_byte_is_refused(tmp_path):
    _, path = _file(tmp_path, n=12)
    data = path.read_bytes()
    bad = tmp_path / "bad.svq"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x40
        bad.write_bytes(bytes(flipped))
        with pytest.raises(SpeechVQError):
            read_svq(bad)


def test_flipped_payload_byte_is_a_crc_error(tmp_path):
    _, path = _file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SpeechVQError, match="corrupted .svq payload"):
        read_svq(path)


def test_trailing_bytes_are_refused(tmp_path):
    _, path = _file(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(SpeechVQError, match="unexpected bytes"):
        read_svq(path)


def test_another_models_file_is_refused(tmp_path):
    _, path = _file(tmp_path)
    other = "fedcba9876543210" + "0" * 48
    with pytest.raises(SpeechVQError) as err:
        read_svq(path, expected_model_hash=other)
    assert HASH[:16] in str(err.value) and other[:16] in str(err.value)
    read_svq(path, expected_model_hash=HASH[:16])  # the short form is accepted


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 65535])
def test_unknown_version_is_refused(tmp_path, version):
    _, path = _file(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:10] = struct.pack("<H", version)
    path.write_bytes(bytes(data))
    with pytest.raises(SpeechVQError, match=f"version {version} is not known"):
        read_svq(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"hello world, not a codec file\n",
        bytes(range(256)) * 4,
    ],
)
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "g.svq"
    path.write_bytes(content)
    with pytest.raises(SpeechVQError, match="not a speechvq"):
        read_svq(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpeechVQError, match="no such file"):
        read_svq(tmp_path / "none.svq")
    with pytest.raises(SpeechVQError, match="directory"):
        read_svq(tmp_path)


def _rewrite_header(path: Path, edit) -> None:
    import json
    import zlib

    data = path.read_bytes()
    (n,) = struct.unpack("<I", data[10:14])
    header = json.loads(data[14 : 14 + n])
    edit(header)
    raw = json.dumps(header).encode()
    out = data[:10] + struct.pack("<I", len(raw)) + raw + struct.pack("<I", zlib.crc32(raw))
    path.write_bytes(out + data[18 + n :])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.pop("num_frames"), "lacks num_frames"),
        (lambda h: h.update(hop_length="64"), "invalid hop_length"),
        (lambda h: h.update(num_frames=-1), "invalid num_frames"),
        (lambda h: h.update(speaker=3), "invalid speaker"),
        (lambda h: h.update(num_samples=10**9), "inconsistent"),
        (lambda h: h.update(payload_bytes=10**30), "truncated"),
    ],
)
def test_bad_header_values_are_refused(tmp_path, edit, message):
    _, path = _file(tmp_path)
    _rewrite_header(path, edit)
    with pytest.raises(SpeechVQError, match=message):
        read_svq(path)


def test_unknown_header_keys_are_ignored(tmp_path):
    codes, path = _file(tmp_path)
    _rewrite_header(path, lambda h: h.update(future_field=[1, 2]))
    np.testing.assert_array_equal(unpack_codes(read_svq(path), AdaptiveSource(512)), codes)


def test_wrong_or_disagreeing_source_is_refused(tmp_path):
    _, path = _file(tmp_path)
    svq = read_svq(path)
    with pytest.raises(SpeechVQError, match="entropy model 'adaptive'"):
        unpack_codes(svq, UniformSource(512))

    class Drifted(AdaptiveSource):  # same name, other probabilities: a prior that differs
        def next(self, previous_code):
            return super().next(previous_code) + 0.5

    with pytest.raises(SpeechVQError, match="checksum"):
        unpack_codes(svq, Drifted(512))


def test_model_hash_sees_every_change():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weights = {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5)}
    config = '{"k": 512}'
    base = model_hash(weights, config)
    assert len(base) == 64 and base == model_hash(dict(reversed(weights.items())), config)
    assert base == model_hash({k: torch.from_numpy(v) for k, v in weights.items()}, config)
    changed = {**weights, "a.weight": weights["a.weight"].copy()}
    changed["a.weight"][2, 3] = np.nextafter(changed["a.weight"][2, 3], np.float32(9))
    variants = [
        model_hash(changed, config),
        model_hash({**weights, "a.weight": weights["a.weight"].reshape(4, 3)}, config),
        model_hash({**weights, "b": weights["b"].astype(np.int32)}, config),
        model_hash({"a.weigh": weights["a.weight"], "b": weights["b"]}, config),
        model_hash(weights, '{"k": 256}'),
        model_hash({**weights, "c": np.zeros(0)}, config),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert model_hash({"x": torch.ones(3, dtype=torch.bfloat16)}, {"k": 1}) != model_hash(
        {"x": torch.ones(3, dtype=torch.float16)}, {"k": 1}
    )


def test_no_pickle_on_the_read_path():
    import speechvq.codec.bitstream as bitstream
    import speechvq.codec.entropy as entropy
    import speechvq.inference.compression as codec

    for module in (bitstream, codec, entropy):
        text = Path(module.__file__).read_text()
        assert "import pickle" not in text and "torch.load" not in text


def test_header_is_frozen():
    _, svq = _packed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        svq.header.num_frames = 3  # type: ignore[misc]
    assert isinstance(svq.header, SVQHeader)


@pytest.fixture
def one_thread():
    # The WaveNet's sample-by-sample loop is slower with threads fighting over a busy CPU.
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_compress_decompress_with_a_model(tmp_path, tiny_model, one_thread):
    import torch

    from .conftest import synth_speechlike

    wave = synth_speechlike(0.1, 22050)
    path = tmp_path / "a.svq"
    header = compress(tiny_model, wave, 22050, path, speaker="p226")
    assert header.num_samples == round(wave.size * 16000 / 22050) and header.speaker == "p226"
    svq = read_svq(path, expected_model_hash=model_hash_of(tiny_model))
    codes = tiny_model.encode(wave, 22050)
    np.testing.assert_array_equal(unpack_codes(svq, AdaptiveSource(header.codebook_size)), codes)
    out = decompress(tiny_model, path, seed=0)
    assert out.dtype == np.float32 and out.shape == (header.num_samples,)
    with pytest.raises(SpeechVQError, match="already exists"):
        compress(tiny_model, wave, 22050, path)
    with pytest.raises(SpeechVQError, match="nobody"):
        compress(tiny_model, wave, 22050, tmp_path / "b.svq", speaker="nobody")

    class FakePrior(UniformSource):
        name = "prior"

    svq = pack_codes(
        codes, FakePrior(16), model_hash=model_hash_of(tiny_model), sample_rate=16000, hop_length=64
    )
    write_svq(tmp_path / "p.svq", svq.header, svq.payload)
    with pytest.raises(SpeechVQError, match="'prior' entropy model, which this model lacks"):
        decompress(tiny_model, tmp_path / "p.svq")

    # The hash survives save/load, and any weight change makes the file foreign.
    tiny_model.save(tmp_path / "m.safetensors")
    import speechvq

    assert model_hash_of(speechvq.load(tmp_path / "m.safetensors")) == model_hash_of(tiny_model)
    with torch.no_grad():
        next(tiny_model.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(SpeechVQError, match="made by model") as err:
        decompress(tiny_model, path)
    # it names the version that wrote it, which has the model that did
    assert f"with speechvq {read_svq(path).header.package_version}," in str(err.value)
