"""The packets' prefix codes (`codec.prefix`), and a model's table (`train-prior --bigram`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechvq.codec.prefix import PacketCode, bigram_code_lengths, huffman_lengths


def _round_trip(code: PacketCode, codes: np.ndarray) -> tuple[np.ndarray, int]:
    data = code.encode(codes)
    it = iter(data)
    return code.decode(lambda: next(it), len(codes)), len(data)


def test_huffman_lengths_of_a_textbook_case_and_a_complete_code():
    assert huffman_lengths([1, 1, 2, 4]) == [3, 3, 2, 1]
    assert huffman_lengths([5, 5]) == [1, 1]
    w = np.random.default_rng(0).integers(1, 1000, 300)
    lengths = np.asarray(huffman_lengths(w))
    assert np.exp2(-lengths.astype(float)).sum() == pytest.approx(1.0)  # Kraft: complete
    # optimal: no worse than the entropy + 1 bit (a Huffman code's bound)
    p = w / w.sum()
    assert (p * lengths).sum() < -(p * np.log2(p)).sum() + 1
    with pytest.raises(ValueError):
        huffman_lengths([3])


def test_the_fixed_code_is_nine_bits_a_code():
    code = PacketCode.fixed(512)
    codes = np.array([0, 511, 7, 256, 1])
    out, size = _round_trip(code, codes)
    assert np.array_equal(out, codes) and size == 6  # 45 bits
    assert code.encode(np.array([511])) == b"\xff\x80"  # most significant bit first, zero-padded
    with pytest.raises(ValueError, match="not in"):
        code.encode(np.array([512]))


@settings(max_examples=40, deadline=None)
@given(
    K=st.sampled_from([2, 3, 16, 64]),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
)
def test_any_codes_round_trip_under_a_bigram_table(K, seed, n):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, (K, K)) * (rng.random((K, K)) < 0.3)
    code = PacketCode(bigram_code_lengths(counts))
    codes = rng.integers(0, K, n)
    out, _ = _round_trip(code, codes)
    assert np.array_equal(out, codes)
    prepared = PacketCode(code.lengths).prepare()  # every row built ahead, the same code
    assert len(prepared._tables) == K + 1
    assert prepared.encode(codes) == code.encode(codes)


def test_codewords_of_a_row_are_prefix_free():
    counts = np.random.default_rng(1).integers(0, 30, (16, 16))
    code = PacketCode(bigram_code_lengths(counts))
    for row in (None, 3):
        t = code._table(row)
        words = [format(int(v), f"0{int(n)}b") for v, n in zip(t.values, t.lengths, strict=True)]
        assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_a_bigram_table_codes_repetitive_codes_in_fewer_bits_than_fixed():
    K = 64
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.integers(-1, 2, 5000)) % K  # each code near the one before
    counts = np.zeros((K, K), dtype=np.int64)
    np.add.at(counts, (walk[:-1], walk[1:]), 1)
    code = PacketCode(bigram_code_lengths(counts))
    test = np.cumsum(rng.integers(-1, 2, 20)) % K
    out, size = _round_trip(code, test)
    assert np.array_equal(out, test)
    assert size < len(PacketCode.fixed(K).encode(test)) / 2  # ~2.6 bits a code, not 6


def test_impossible_tables_are_refused():
    with pytest.raises(ValueError, match="no prefix code"):
        PacketCode(np.ones((1, 4), dtype=np.uint8))  # four 1-bit codewords
    with pytest.raises(ValueError, match=r"\[1 or K \+ 1, K\]"):
        PacketCode(np.full((3, 4), 2))


def test_train_prior_bigram_puts_the_table_in_the_model(tmp_path):
    """End to end on a tiny prepared corpus: the table, its held-out bitrates, and a stream."""
    import io

    import torch

    import speechvq
    from speechvq.codec import packets as P
    from speechvq.config import ModelConfig
    from speechvq.inference.streaming import StreamCompressor, StreamDecompressor
    from speechvq.training.packet_code import make_packet_code

    from .conftest import make_prepared_corpus, synth_speechlike

    make_prepared_corpus(tmp_path, utterances=4, heldout=0.3)
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny-stream", speakers=["alice", "bob"]))
    model.save(tmp_path / "vq.safetensors", training_steps="12")
    r = make_packet_code(tmp_path / "prepared", tmp_path / "vq.safetensors", tmp_path / "run")
    loaded = speechvq.load(r.model_path)
    K = model.config.quantizer.codebook_size
    assert loaded.packet_code.shape == (K + 1, K) and loaded.packet_code.dtype == torch.uint8
    assert r.train_codes > 0 and set(r.bitrates) == {20, 40, 80}
    assert loaded.metadata["training_steps"] == "12"  # the model's own metadata kept
    assert float(loaded.metadata["packet_code_bitrate_20ms"]) == pytest.approx(r.bitrates[20], 1e-3)
    wave = synth_speechlike(0.4, seed=5)
    comp = StreamCompressor(loaded, 16000)
    data = comp.start() + comp.push(wave) + comp.flush()
    f = io.BytesIO(data)
    decomp = StreamDecompressor(loaded, P.read_header(f))
    assert decomp.header.entropy_model == "bigram"
    codes = [e.codes for e in decomp.reader(f).events() if isinstance(e, P.Packet)]
    assert np.array_equal(np.concatenate(codes), loaded.encode(wave, 16000))


def test_the_train_prior_bigram_command(tmp_path):
    import torch
    from typer.testing import CliRunner

    import speechvq
    from speechvq.cli import app
    from speechvq.config import ModelConfig

    from .conftest import make_prepared_corpus

    make_prepared_corpus(tmp_path, utterances=2, heldout=0.3)
    torch.manual_seed(0)
    speechvq.SpeechVQ(ModelConfig.preset("tiny-stream", speakers=["alice", "bob"])).save(
        tmp_path / "vq.safetensors"
    )
    args = ["train-prior", str(tmp_path / "prepared"), "-m", str(tmp_path / "vq.safetensors")]
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "run"), "--bigram"])
    assert r.exit_code == 0, r.output
    assert "packet code from" in r.output and "bit/s at 20 ms" in r.output
    assert speechvq.load(tmp_path / "run" / "model.safetensors").packet_code is not None
