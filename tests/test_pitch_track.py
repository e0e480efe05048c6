"""The pitch track of an `.svq` file (`codec.pitch_track`, its use in `inference.compression`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechvq.codec import pitch_track as P
from speechvq.errors import SpeechVQError

HALF_STEP = math.log(P.F0_MAX / P.F0_MIN) / (P.LEVELS - 1) / 2

# Frame F0 contours: runs of unvoiced (0) and voiced frames at any pitch in range.
contours = st.lists(
    st.one_of(st.just(0.0), st.floats(P.F0_MIN, P.F0_MAX)), min_size=0, max_size=200
).map(lambda xs: np.array(xs, dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(f0=contours, block=st.integers(1, 7))
def test_symbols_round_trip_through_bytes(f0, block):
    symbols = P.to_symbols(f0, block)
    assert symbols.shape == (-(-f0.size // block),)
    assert symbols.min(initial=0) >= 0 and symbols.max(initial=0) <= P.LEVELS
    np.testing.assert_array_equal(P.from_steps(P.to_steps(symbols)), symbols)
    np.testing.assert_array_equal(P.decode_track(P.encode_track(symbols), symbols.size), symbols)


@settings(max_examples=60, deadline=None)
@given(f0=contours, block=st.integers(1, 7))
def test_decoded_track_keeps_voicing_and_block_pitch(f0, block):
    symbols = P.to_symbols(f0, block)
    back = P.to_f0(symbols, f0.size, block)
    assert back.shape == f0.shape and back.dtype == np.float32
    for b, s in enumerate(symbols):
        frames = f0[b * block : (b + 1) * block]
        voiced = frames > 0
        assert (s > 0) == (2 * voiced.sum() >= block)  # a block is voiced by its majority
        got = back[b * block : (b + 1) * block]
        assert ((got > 0) == (s > 0)).all()
        if s > 0 and voiced.any() and len(frames) == block:
            mean = np.log(frames[voiced].astype(np.float64)).mean()
            # at the block's centre the contour is the block's level, within half a step
            centre = back[b * block + (block - 1) // 2] if block % 2 else None
            if centre is not None:
                assert abs(math.log(centre) - mean) <= HALF_STEP + 1e-6


def test_steady_voice_is_within_a_half_step_and_costs_few_bits():
    f0 = np.full(2500, 180.0, dtype=np.float32)  # 10 s of one pitch at 250 frames/s
    f0[:300] = 0.0
    symbols = P.to_symbols(f0, 5)
    back = P.to_f0(symbols, f0.size, 5)
    assert (back[:300] == 0).all()
    assert np.abs(np.log(back[300:] / 180.0)).max() <= HALF_STEP
    assert 8 * len(P.encode_track(symbols)) / 10 < 20  # bit/s: a repeated step is nearly free


def test_move_level_moves_the_register_and_keeps_unvoiced():
    rng = np.random.default_rng(0)
    f0 = np.exp(np.log(120) + 0.2 * rng.standard_normal(400)).astype(np.float32)
    f0[::7] = 0.0
    moved = P.move_level(f0, math.log(240), 0.1)
    assert ((moved > 0) == (f0 > 0)).all()
    logs = np.log(moved[moved > 0])
    assert logs.mean() == pytest.approx(math.log(240), abs=1e-5)
    assert logs.std() == pytest.approx(0.1, abs=1e-5)
    # with fewer than two voiced frames there is no spread to keep: the voice's mean
    one = P.move_level(np.array([0, 150, 0], dtype=np.float32), math.log(200), 0.2)
    np.testing.assert_allclose(one, [0, 200, 0], rtol=1e-5)


@pytest.fixture
def tiny_sf():
    import torch

    import speechvq

    torch.manual_seed(0)
    return speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny-sf", speakers=["p225", "p226"]))


def test_compress_stores_a_track_that_decompress_follows(tmp_path, tiny_sf):
    from speechvq.codec.bitstream import read_svq
    from speechvq.codec.entropy import AdaptiveSource
    from speechvq.inference.compression import (
        compress,
        decompress,
        pitch_block,
        pitch_symbols,
        pitch_track_f0,
        unpack_codes,
    )

    from .conftest import synth_speechlike

    wave = synth_speechlike(1.0)
    path = tmp_path / "a.svq"
    header = compress(tiny_sf, wave, 16000, path)
    assert header.pitch_block == pitch_block(tiny_sf) == 5 and header.pitch_bytes > 0
    assert path.stat().st_size > header.payload_bytes  # the header returned is the one written
    codes = tiny_sf.encode(wave, 16000)
    # A 0.8 reader knows no track: it range-decodes the whole payload, and the codes
    # come first, so it still gets them (the track's bytes after them go unread).
    whole = unpack_codes(read_svq(path), AdaptiveSource(header.codebook_size))
    np.testing.assert_array_equal(whole, codes)
    symbols = pitch_symbols(tiny_sf, tiny_sf.input_f0(wave, 16000, codes.size))
    f0 = pitch_track_f0(tiny_sf, symbols, codes.size)
    voiced = f0[f0 > 0]  # the input is a 120-160 Hz vibrato
    assert voiced.size > 0.8 * f0.size and 110 < np.median(voiced) < 170
    expected = tiny_sf.decode(codes, "p225", seed=0, f0=f0)[: header.num_samples]
    np.testing.assert_array_equal(decompress(tiny_sf, path, seed=0), expected)
    predicted = tiny_sf.decode(codes, "p225", seed=0)[: header.num_samples]
    np.testing.assert_array_equal(decompress(tiny_sf, path, seed=0, pitch=False), predicted)
    # Another voice: the input's intonation in that voice's register.
    moved = pitch_track_f0(tiny_sf, symbols, codes.size, "p226")
    assert moved.shape == f0.shape and ((moved > 0) == (f0 > 0)).all()
    expected = tiny_sf.decode(codes, "p226", seed=0, f0=moved)[: header.num_samples]
    np.testing.assert_array_equal(decompress(tiny_sf, path, seed=0, speaker="p226"), expected)

    plain = compress(tiny_sf, wave, 16000, tmp_path / "b.svq", pitch=False)
    assert plain.pitch_block == plain.pitch_bytes == 0
    assert plain.payload_bytes == header.payload_bytes - header.pitch_bytes
    np.testing.assert_array_equal(decompress(tiny_sf, tmp_path / "b.svq", seed=0), predicted)


def test_a_model_without_the_pitch_path_stores_no_track(tmp_path, tiny_model):
    from speechvq.inference.compression import compress

    from .conftest import synth_speechlike

    header = compress(tiny_model, synth_speechlike(0.1), 16000, tmp_path / "a.svq")
    assert header.pitch_block == 0 and header.pitch_bytes == 0


def test_a_track_longer_than_the_payload_is_refused(tmp_path, tiny_sf):
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import compress

    from .conftest import synth_speechlike
    from .test_bitstream import _rewrite_header

    path = tmp_path / "a.svq"
    header = compress(tiny_sf, synth_speechlike(0.5), 16000, path)
    _rewrite_header(path, lambda h: h.update(pitch_bytes=header.payload_bytes + 1))
    with pytest.raises(SpeechVQError, match="inconsistent"):
        read_svq(path)


def test_the_input_track_keeps_a_low_voice_and_ignores_mains_hum(tiny_sf):
    """A bass voice at 70 Hz is tracked at 70 Hz (the notch is narrow), and a pause of
    60 Hz hum over hiss is unvoiced (the 80 Hz high-pass of 0.11.1 voiced 84% of it)."""
    from .test_metrics import harmonic, mains_hum

    sr, frames = 16000, 16000 // tiny_sf.hop_length
    low = tiny_sf.input_f0(harmonic(70.0, 1.0), sr, frames)
    assert (low > 0).mean() > 0.8 and np.median(low[low > 0]) == pytest.approx(70.0, rel=0.05)
    assert (tiny_sf.input_f0(mains_hum(1.0, seed=0), sr, frames) == 0).mean() > 0.9


def test_convert_gives_the_input_intonation_in_the_target_register(tiny_sf):
    from .conftest import synth_speechlike

    wave = synth_speechlike(1.0)
    codes = tiny_sf.encode(wave, 16000)
    f0 = tiny_sf.input_f0(wave, 16000, codes.size)
    assert f0.shape == codes.shape and (f0 > 0).mean() > 0.8
    moved = P.move_level(f0, *tiny_sf.voice_level("p226"))
    out = tiny_sf.convert(wave, 16000, "p226", seed=0)
    np.testing.assert_array_equal(out, tiny_sf.decode(codes, "p226", seed=0, f0=moved))
    plain = tiny_sf.convert(wave, 16000, "p226", seed=0, pitch=False)
    np.testing.assert_array_equal(plain, tiny_sf.decode(codes, "p226", seed=0))
