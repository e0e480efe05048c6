"""The shipped model: found by name, sha256-checked, loads with its speakers and prior."""

import numpy as np
import pytest

import speechvq
from speechvq.errors import SpeechVQError
from speechvq.inference import loading

from .conftest import synth_speechlike


def test_default_model_loads_by_name_and_encodes():
    assert loading.DEFAULT_MODEL == "small-spk"  # since 0.12.0 (issue 16)
    model = speechvq.load(None)
    assert {"p225", "p226", "p227", "p228"} <= set(model.speakers)
    assert model.prior is not None and model.config.pitch.enabled
    assert model.speaker_encoder is not None  # any voice, not only the table's
    codes = model.encode(synth_speechlike(0.2), 16000)
    assert codes.shape == (50,) and codes.max() < 512


def test_the_previous_default_still_loads_by_name():
    model = speechvq.load("small")
    assert model.speaker_encoder is None and model.prior is not None
    assert len(model.speakers) == 238


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    name, sha = loading.REGISTRY["small"]
    (tmp_path / name).write_bytes((loading.pretrained_dir() / name).read_bytes()[:-1] + b"x")
    monkeypatch.setenv("SPEECHVQ_PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setattr(loading, "_verified", set())
    with pytest.raises(SpeechVQError, match="fails its sha256 check"):
        loading.resolve("small")
    np.testing.assert_equal(loading.resolve(tmp_path / name), tmp_path / name)  # a path is a path


def test_the_default_speaker_model_hears_any_voice():
    model = speechvq.load("small-spk")
    assert model.speaker_encoder is not None and model.prior is not None  # its own (0.10.0)
    voice = model.voice([(synth_speechlike(1.5), 16000)])
    out = model.convert(synth_speechlike(0.5, seed=2), 16000, voice, seed=0)
    assert out.shape == (8000,) and np.isfinite(out).all()
    from speechvq.inference.sampling import sample_speech

    sampled = sample_speech(model, 0.2, model.speakers[0], temperature=1.0, seed=0)
    assert sampled.shape == (3200,) and np.isfinite(sampled).all()


def test_the_experimental_streaming_model_streams_as_it_decodes_offline():
    from speechvq.models.streaming import algorithmic_latency

    model = speechvq.load("small-stream")
    assert algorithmic_latency(model) == pytest.approx(0.016)
    assert model.packet_code is not None  # its packets are coded with its bigram table
    wave = synth_speechlike(0.5, seed=3)
    enc, dec = model.stream_encoder(), model.stream_decoder(model.speakers[0], seed=0)
    audio = [dec.push(enc.push(wave[t : t + 320])) for t in range(0, wave.size, 320)]
    audio += [dec.push(enc.flush()), dec.flush()]
    offline = model.decode(model.encode(wave, 16000), model.speakers[0], seed=0)
    got = np.concatenate(audio)
    assert got.shape == offline.shape
    assert np.abs(got - offline).max() < 2e-4 * max(1.0, np.abs(offline).max())


def test_the_experimental_streaming_speaker_model_streams_in_a_recordings_voice():
    model = speechvq.load("small-stream-spk")
    assert model.speaker_encoder is not None and model.packet_code is not None
    voice = model.voice([(synth_speechlike(1.5, seed=4), 16000)], adapt_steps=0)
    wave = synth_speechlike(0.5, seed=3)
    enc, dec = model.stream_encoder(), model.stream_decoder(voice, seed=0)
    audio = [dec.push(enc.push(wave[t : t + 320])) for t in range(0, wave.size, 320)]
    audio += [dec.push(enc.flush()), dec.flush()]
    offline = model.decode(model.encode(wave, 16000), voice, seed=0)
    got = np.concatenate(audio)
    assert got.shape == offline.shape
    assert np.abs(got - offline).max() < 2e-4 * max(1.0, np.abs(offline).max())
