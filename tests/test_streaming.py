"""Streaming (issue 18, first part): causal layers with state, and the stream encoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import speechvq
from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.models.causal import CausalConv1d, streaming

from .conftest import synth_speechlike


def _causal_model(preset: str = "tiny-sf"):
    cfg = ModelConfig.preset(preset, speakers=["a"])
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, causal=True))
    torch.manual_seed(0)
    return speechvq.SpeechVQ(cfg).eval()


MODEL = _causal_model()
WAVE = synth_speechlike(0.6, seed=3)  # 9600 samples: 150 frames


def _stream_model():
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny-stream", speakers=["a", "b"])).eval()
    with torch.no_grad():  # audible output: heads away from their near-silent start
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.3)
            head.bias.fill_(-1.0)
    return model


STREAM = _stream_model()
# Streamed audio differs from offline by float rounding only (the harmonic phase is
# summed in other pieces): under 2e-4 of the peak, -74 dB.
TOLERANCE = 2e-4
CODES = np.random.default_rng(0).integers(0, 16, 300)  # 1.2 s


@settings(max_examples=25, deadline=None)
@given(
    extra=st.integers(0, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 40), min_size=1, max_size=12).filter(lambda c: sum(c) >= 3),
)
def test_a_causal_conv_streamed_in_any_pieces_equals_it_offline(extra, stride, dilation, cuts):
    torch.manual_seed(0)
    conv = CausalConv1d(2, 3, stride + extra, stride, dilation)
    x = torch.randn(1, 2, sum(cuts) // stride * stride)
    whole = conv(x)
    assert whole.shape[-1] == x.shape[-1] // stride
    pieces, t = [], 0
    with streaming(conv):
        for n in cuts:
            pieces.append(conv(x[..., t : t + n]))
            t += n
    got = torch.cat(pieces, dim=-1)
    assert torch.allclose(got, whole, atol=1e-6)


def test_a_causal_conv_reads_nothing_of_the_future():
    conv = CausalConv1d(1, 1, 4, stride=2)
    x = torch.randn(1, 1, 64)
    y = x.clone()
    y[..., 40:] = 0.0
    assert torch.equal(conv(x)[..., :20], conv(y)[..., :20])  # output i reads inputs <= 2i + 1


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_streamed_codes_equal_the_offline_codes_for_any_chunking(cuts):
    offline = MODEL.encode(WAVE, 16000)
    enc = MODEL.stream_encoder()
    codes, t = [], 0
    for n in cuts:
        codes.append(enc.push(WAVE[t : t + n]))
        t += n
    codes.append(enc.push(WAVE[t:]))
    codes.append(enc.flush())
    assert np.array_equal(np.concatenate(codes), offline)


def test_a_frame_is_coded_as_soon_as_its_samples_are_in():
    enc = MODEL.stream_encoder()
    assert enc.push(WAVE[:63]).size == 0
    assert enc.push(WAVE[63:64]).size == 1  # the 64th sample completes frame 0
    assert enc.push(WAVE[64 : 64 * 11 + 5]).size == 10
    assert enc.flush().size == 1  # the 5 samples left over, zero-padded
    with pytest.raises(SpeechVQError, match="flushed"):
        enc.push(WAVE[:64])


def test_the_causal_encoders_codes_do_not_depend_on_later_audio():
    later = WAVE.copy()
    later[6400:] = np.random.default_rng(0).standard_normal(later.size - 6400) * 0.1
    a, b = MODEL.encode(WAVE, 16000), MODEL.encode(later, 16000)
    assert np.array_equal(a[:100], b[:100]) and not np.array_equal(a, b)


def test_one_stream_at_a_time_and_a_non_causal_model_says_so():
    enc = MODEL.stream_encoder()
    with pytest.raises(SpeechVQError, match="already streaming"):
        MODEL.stream_encoder()
    enc.flush()
    MODEL.stream_encoder().close()  # free again
    plain = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a"]))
    with pytest.raises(SpeechVQError, match="not causal"):
        plain.stream_encoder()


def test_causal_models_chunk_long_inputs_exactly_and_old_configs_are_unchanged():
    long = synth_speechlike(3.0, seed=4)
    assert np.array_equal(MODEL.encode(long, 16000, chunk_seconds=0.5), MODEL.encode(long, 16000))
    assert "causal" in MODEL.config.to_dict()["encoder"]
    assert "causal" not in ModelConfig.preset("small").to_dict()["encoder"]
    assert ModelConfig.from_dict(MODEL.config.to_dict()) == MODEL.config


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 60), min_size=1, max_size=12))
def test_streamed_audio_equals_the_offline_decode_for_any_chunking(cuts):
    offline = STREAM.decode(CODES, "b", seed=7)
    dec = STREAM.stream_decoder("b", seed=7)
    pieces, t = [], 0
    for n in cuts:
        pieces.append(dec.push(CODES[t : t + n]))
        t += n
    pieces.append(dec.push(CODES[t:]))
    pieces.append(dec.flush())
    got = np.concatenate(pieces)
    assert got.shape == offline.shape and np.abs(offline).max() > 0.05
    assert np.abs(got - offline).max() < TOLERANCE * np.abs(offline).max()


def test_the_stream_decoder_holds_back_three_frames():
    from speechvq.models.decoders.synthesis_stream import HOLD

    dec = STREAM.stream_decoder("a", seed=0)
    assert dec.push(CODES[:2]).size == 0
    assert dec.push(CODES[2:10]).size == (10 - HOLD) * 64
    assert dec.push(CODES[10:11]).size == 64
    assert dec.flush().size == HOLD * 64


def test_a_non_causal_decoder_says_it_cannot_stream():
    with pytest.raises(SpeechVQError, match="not a causal source-filter decoder"):
        MODEL.stream_decoder("a")


def test_encoder_and_decoder_stream_at_once_through_one_model():
    enc, dec = STREAM.stream_encoder(), STREAM.stream_decoder("a", seed=1)
    audio = [dec.push(enc.push(WAVE[t : t + 320])) for t in range(0, WAVE.size, 320)]
    audio += [dec.push(enc.flush()), dec.flush()]
    offline = STREAM.decode(STREAM.encode(WAVE, 16000), "a", seed=1)
    assert np.abs(np.concatenate(audio) - offline).max() < TOLERANCE * np.abs(offline).max()


def test_the_latency_follows_from_the_config_and_info_reports_it():
    from speechvq.inference.summary import describe_model
    from speechvq.models.streaming import algorithmic_latency

    assert algorithmic_latency(STREAM) == pytest.approx(0.016)  # 4 ms frame + 3 held back
    assert algorithmic_latency(MODEL) is None  # its decoder is not causal
    rows = dict(describe_model(STREAM))
    assert rows["streaming"].startswith("yes: algorithmic latency 16 ms")
    assert dict(describe_model(MODEL))["streaming"].startswith("no")


def test_a_causal_model_starts_from_a_non_causal_ones_weights():
    from speechvq.training.init import copy_matching

    offline = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a", "b"]))
    assert copy_matching(offline, STREAM.__class__(STREAM.config)) == []  # every tensor copied
