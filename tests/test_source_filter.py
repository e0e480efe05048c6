"""The source-filter decoder: its synthesis, its loss, the model around it and training it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechvq
from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.models.decoders.source_filter import (
    Controls,
    SourceFilterDecoder,
    fill_unvoiced,
    interp_frames,
    spectral_loss,
)
from speechvq.training.init import transplant_encoder
from speechvq.training.vqvae import TrainConfig, train

from .conftest import make_prepared_corpus, synth_speechlike


@pytest.fixture
def sf_model():
    torch.manual_seed(0)
    return speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["p225", "p226"]))


def flat_controls(dec: SourceFilterDecoder, f0: torch.Tensor, harm: float, noise: float):
    B, Fr = f0.shape
    sf = dec.cfg.decoder.source_filter
    return Controls(
        harmonic_env=torch.full((B, Fr, sf.envelope_bins), harm),
        noise_env=torch.full((B, Fr, sf.noise_bins), noise),
        f0=f0,
    )


def test_interp_frames_hits_frame_centres_and_chunks_agree():
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    whole = interp_frames(x, 0, 640, 64)
    # F.interpolate(align_corners=False) is the reference for the whole signal
    ref = torch.nn.functional.interpolate(x, size=640, mode="linear", align_corners=False)
    assert torch.allclose(whole, ref, atol=1e-12)
    assert torch.equal(
        torch.cat([interp_frames(x, a, a + 100, 64) for a in range(0, 640, 100)], -1)[..., :640],
        whole,
    )


def test_fill_unvoiced_holds_the_last_voiced_value():
    f0 = torch.tensor([[0.0, 0.0, 120.0, 0.0, 0.0, 150.0, 0.0], [0.0] * 7])
    filled = fill_unvoiced(f0)
    assert filled[0].tolist() == [120.0, 120.0, 120.0, 120.0, 120.0, 150.0, 150.0]
    assert (filled[1] > 0).all()  # nothing voiced: a constant, never 0 Hz


def test_render_is_the_same_in_any_chunk_size(sf_model):
    dec = sf_model.decoder
    f0 = torch.tensor([[0.0] * 5 + [180.0 + i for i in range(20)] + [0.0] * 5])
    c = Controls(torch.randn(1, 30, 33), torch.randn(1, 30, 17), f0)
    a = dec.render(c, torch.Generator().manual_seed(3))
    assert a.shape == (1, 30 * 64)
    for chunk in (1, 7, 29):
        b = dec.render(c, torch.Generator().manual_seed(3), chunk_frames=chunk)
        assert torch.allclose(a, b, atol=1e-5), (chunk, (a - b).abs().max())


@pytest.mark.parametrize("causal", [False, True])
def test_the_frame_network_runs_long_inputs_in_chunks_without_gradients(monkeypatch, causal):
    from speechvq.models import frame_net

    monkeypatch.setattr(frame_net, "CHUNK_FRAMES", 40)
    torch.manual_seed(0)
    net = frame_net.FrameNet(8, 16, layers=4, kernel=3, cycle=4, causal=causal).eval()
    rf = (2 if causal else 1) * (1 + 1 + 2 + 4 + 8)  # a causal kernel's taps all lie behind
    assert net.receptive_field == rf
    x = torch.randn(2, 8, 301)
    whole = net(x)  # with gradients: one pass
    calls = []
    monkeypatch.setattr(net, "_whole", lambda y, f=net._whole: calls.append(y.shape[-1]) or f(y))
    with torch.no_grad():
        chunked = net(x)
    assert len(calls) == 8 and max(calls) == 40 + 2 * rf  # a chunk and its margins
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_voiced_frames_give_harmonics_of_f0_and_unvoiced_ones_no_tone(sf_model):
    dec = sf_model.decoder
    f0 = torch.full((1, 250), 200.0)
    voiced = dec.render(flat_controls(dec, f0, 0.0, -30.0))[0].numpy()  # harmonics only
    spec = np.abs(np.fft.rfft(voiced[2000:14000] * np.hanning(12000)))
    freqs = np.fft.rfftfreq(12000, 1 / 16000)
    peaks = freqs[np.argsort(spec)[-5:]]
    assert np.all(np.abs(peaks / 200 - np.round(peaks / 200)) < 0.01), peaks
    assert np.abs(voiced).max() > 0.1
    silent = dec.render(flat_controls(dec, torch.zeros(1, 250), 0.0, -30.0))[0]
    assert silent.abs().max() < 1e-3  # unvoiced, noise filter shut: (near) silence


def test_harmonics_above_nyquist_are_silent(sf_model):
    dec = sf_model.decoder  # 32 harmonics: at 400 Hz, number 20 and up lie above 8 kHz
    amps = dec.harmonic_amplitudes(flat_controls(dec, torch.full((1, 4), 400.0), 0.0, 0.0))
    assert (amps[..., :19] > 0).all() and (amps[..., 19:] == 0).all()


def test_spectral_loss_is_zero_only_for_the_same_signal():
    x = torch.randn(2, 4000)
    assert spectral_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert spectral_loss(0.5 * x, x).item() > 0.1


def test_forward_trains_the_encoder_through_the_spectral_loss(sf_model):
    wave = torch.from_numpy(np.stack([synth_speechlike(0.5, seed=s) for s in (0, 1)]))
    f0 = torch.full((2, 125), 140.0)
    out = sf_model.train()(wave, torch.tensor([0, 1]), f0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.recon_loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sf_model.encoder.parameters())
    assert sf_model.decoder.harmonic_head.weight.grad.abs().sum() > 0


def test_decode_is_seeded_speaker_dependent_and_survives_save_load(sf_model, tmp_path):
    for p in sf_model.decoder.parameters():  # move off the quiet initial heads
        torch.nn.init.normal_(p, std=0.3)
    codes = sf_model.encode(synth_speechlike(0.5), 16000)
    a = sf_model.decode(codes, "p225", seed=1)
    assert a.shape == (codes.size * 64,) and a.dtype == np.float32
    assert np.array_equal(a, sf_model.decode(codes, "p225", seed=1))
    assert not np.allclose(a, sf_model.decode(codes, "p226", seed=1))
    sf_model.save(tmp_path / "m.safetensors")
    again = speechvq.load(tmp_path / "m.safetensors")
    assert isinstance(again.decoder, SourceFilterDecoder)
    assert np.array_equal(a, again.decode(codes, "p225", seed=1))


def test_config_needs_the_pitch_path_and_round_trips():
    cfg = ModelConfig.preset("small-sf", speakers=["a"])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SpeechVQError, match="pitch"):
        ModelConfig.preset("tiny-sf", pitch=False)
    bad = cfg.to_dict()
    bad["decoder"]["kind"] = "vocoder"
    with pytest.raises(SpeechVQError, match="decoder kind"):
        ModelConfig.from_dict(bad)


def test_transplant_copies_encoder_codebook_and_pitch_only():
    torch.manual_seed(0)
    src = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["a"], pitch=True))
    dst = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a"]))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    transplant_encoder(src, dst)
    for k, v in dst.state_dict().items():
        if k.startswith(("encoder.", "quantizer.", "pitch.")):
            assert torch.equal(v, src.state_dict()[k]), k
        else:
            assert torch.equal(v, before[k]), k
    plain = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["a"]))
    with pytest.raises(SpeechVQError, match="pitch"):
        transplant_encoder(plain, dst)


def test_training_lowers_the_spectral_loss_from_a_wavenet_models_encoder(tmp_path):
    torch.set_num_threads(1)
    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    common = dict(batch_size=2, crop_seconds=0.5, valid_every=0, export_every=0, log_every=5)
    first = train(
        corpus,
        tmp_path / "wn",
        TrainConfig(preset="tiny", pitch=True, max_steps=2, **common),
        progress=False,
    )
    cfg = TrainConfig(preset="tiny-sf", lr=1e-2, max_steps=60, init_parts="encoder", **common)
    result = train(corpus, tmp_path / "sf", cfg, progress=False, init_from=first.model_path)
    import csv

    with open(tmp_path / "sf" / "log.csv") as f:
        curve = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "recon_loss"]
    assert curve[-1] < 0.7 * curve[0], curve
    model = speechvq.load(result.model_path)
    assert model.config.decoder.kind == "source-filter"
    assert model.metadata["training_steps"] == "62"


def test_dilated_pitch_predictor_sees_far_context_and_old_files_keep_theirs():
    base = ModelConfig.preset("small-sf", speakers=["a"]).to_dict()
    base["pitch"].update(predictor_channels=32, predictor_layers=6, predictor_dilation_cycle=6)
    model = speechvq.SpeechVQ(ModelConfig.from_dict(base)).eval()
    x = torch.zeros(1, 64, 200, requires_grad=True)
    model.pitch(x).norm_logf0[0, 100].backward()
    reach = (x.grad[0].abs().sum(0) > 0).nonzero()[:, 0]
    assert reach.min() <= 100 - 60 and reach.max() >= 100 + 60  # +-63 frames
    old = ModelConfig.preset("small").to_dict()
    del old["pitch"]["predictor_dilation_cycle"]  # a file written before the option
    assert ModelConfig.from_dict(old).pitch.predictor_dilation_cycle == 0


def test_copy_matching_keeps_what_fits_and_reports_the_rest():
    from speechvq.training.init import copy_matching

    torch.manual_seed(0)
    src = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a"]))
    cfg = ModelConfig.preset("tiny-sf", speakers=["a"])
    bigger = ModelConfig.from_dict(
        {**cfg.to_dict(), "pitch": {**cfg.to_dict()["pitch"], "predictor_dilation_cycle": 2}}
    )
    dst = speechvq.SpeechVQ(bigger)
    fresh = copy_matching(src, dst)
    assert fresh and all(k.startswith("pitch.") for k in fresh)
    for k, v in dst.state_dict().items():
        if not k.startswith("pitch."):
            assert torch.equal(v, src.state_dict()[k]), k


def test_the_compiled_harmonic_bank_equals_the_torch_one(sf_model):
    """`harmonics_numba` (the stream's harmonic bank) against `_harmonics`, on an envelope
    that varies over frequency and time, voiced and unvoiced frames, a running phase."""
    from speechvq.models.decoders.harmonics_numba import harmonic_kernel

    if harmonic_kernel() is None:
        pytest.skip("numba not installed")
    dec = sf_model.decoder
    g = torch.Generator().manual_seed(0)
    Fr, E = 40, dec.cfg.decoder.source_filter.envelope_bins
    f0 = 90 + 200 * torch.rand(1, Fr, generator=g)
    f0[:, 10:14] = 0.0  # unvoiced
    env = torch.randn(1, Fr, E, generator=g)
    filled = fill_unvoiced(f0, 100.0)
    c = Controls(env, torch.zeros(1, Fr, 3), filled)
    voiced = (f0 > 0).float()
    phase, kphase = torch.full((1, 1), 1.0, dtype=torch.float64), 1.0
    for lo, hi in ((0, 7), (7, 19), (19, 40)):
        want, phase = dec._harmonics(c, voiced, lo, hi, phase)
        a, b = max(0, lo - 1), min(Fr, hi + 1)
        got, kphase = harmonic_kernel()(
            env[0, a:b].numpy().copy(),
            filled[0, a:b].double().numpy(),
            voiced[0, a:b].numpy().copy(),
            (lo - a) * dec.hop,
            (hi - a) * dec.hop,
            dec.hop,
            float(dec.sample_rate),
            dec.harmonics,
            kphase,
        )
        assert np.abs(want[0].numpy()).max() > 0.1
        np.testing.assert_allclose(got, want[0].numpy(), atol=5e-5 * np.abs(want.numpy()).max())
        assert kphase == pytest.approx(float(phase), abs=1e-9)
