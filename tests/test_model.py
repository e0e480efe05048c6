"""Invariants of the model's parts, on tiny configs (seconds, CPU)."""

import json

import numpy as np
import pytest
import torch

import speechvq
from speechvq.config import ModelConfig, QuantizerConfig, WaveNetConfig
from speechvq.errors import SpeechVQError
from speechvq.models.quantizer import VectorQuantizer
from speechvq.models.wavenet import WaveNet

from .conftest import synth_speechlike


def test_encoder_gives_one_frame_per_hop(tiny_model):
    for n in (64, 640, 8000, 8001):
        codes = tiny_model.encode(np.zeros(n, np.float32) + 0.01, 16000)
        assert codes.shape == (-(-n // 64),)
    z = tiny_model.encoder(torch.zeros(2, 1, 64 * 37))
    assert z.shape == (2, 8, 37)


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(QuantizerConfig(codebook_size=16, dim=4)).train()
    z = torch.randn(2, 4, 10, requires_grad=True)
    out = vq(z)
    g = torch.randn_like(out.quantized)
    (out.quantized * g).sum().backward()
    assert torch.equal(z.grad, g)


@pytest.mark.parametrize("ema", [True, False])
def test_eval_quantized_equals_codebook_rows(ema):
    vq = VectorQuantizer(QuantizerConfig(codebook_size=16, dim=4, ema=ema))
    vq.train()(torch.randn(3, 4, 50))  # k-means init + one update
    vq.eval()
    z = torch.randn(3, 4, 20)
    out = vq(z)
    assert torch.equal(out.quantized, vq.codebook[out.codes].transpose(1, 2))
    # and the codes are the nearest rows
    d = torch.cdist(z.transpose(1, 2).reshape(-1, 4), vq.codebook)
    assert torch.equal(out.codes.reshape(-1), d.argmin(1))


def test_dead_codes_are_restarted_and_usage_reported():
    vq = VectorQuantizer(QuantizerConfig(codebook_size=32, dim=2))
    vq.train()
    data = torch.randn(4, 2, 64)
    for _ in range(50):
        out = vq(data)
    # usage: the share of codes this batch used, exactly as counted from its codes
    used = torch.unique(out.codes).numel()
    assert out.usage.item() == pytest.approx(used / 32) and out.perplexity > 1
    # every code is near some data point: none stranded far away
    d = torch.cdist(vq.codebook, data.transpose(1, 2).reshape(-1, 2)).min(1).values
    assert d.max() < 1.0


def test_wavenet_is_causal():
    cfg = WaveNetConfig(
        layers=6,
        dilation_cycle=3,
        residual_channels=8,
        gate_channels=8,
        skip_channels=8,
        end_channels=8,
    )
    net = WaveNet(cfg, cond_channels=3, out_channels=5, upsample=4).eval()
    x = torch.randn(1, 64, 8)
    c = torch.randn(1, 16, 3)
    base = net(x, c)
    for t in (0, 17, 40, 63):
        x2 = x.clone()
        x2[:, t] += 1.0
        diff = (net(x2, c) - base).abs().amax(dim=2)[0]
        assert diff[:t].max() == 0 if t else True
        assert diff[t] > 0


def test_decoder_output_never_sees_its_own_sample(tiny_model):
    """Logits at t depend only on samples < t (the input is shifted by one)."""
    dec = tiny_model.decoder.eval()
    prev = torch.randint(0, 256, (1, 256))
    cond = dec.conditioning(torch.randn(1, 8, 4), torch.tensor([0]), None)
    base = dec(prev, cond, None)
    prev2 = prev.clone()
    prev2[0, 100] = (prev[0, 100] + 7) % 256  # prev[t] is sample t-1
    diff = (dec(prev2, cond, None) - base).abs().amax(2)[0]
    assert diff[:100].max() == 0 and diff[100] > 0


def test_incremental_generation_matches_parallel_pass(tiny_model):
    net = tiny_model.decoder.wavenet.eval()
    x = torch.randn(2, 320, 16)
    c = torch.randn(2, 5, 16)
    with torch.no_grad():
        full = net(x, c)
        state = net.start(c)
        steps = torch.stack([net.step(x[:, t], state) for t in range(320)], dim=1)
    assert (full - steps).abs().max() < 1e-4


def test_save_load_gives_identical_outputs(tmp_path, tiny_model):
    tiny_model.train()(torch.randn(2, 1280) * 0.1, torch.tensor([0, 1]))  # init codebook
    path = tmp_path / "m.safetensors"
    tiny_model.save(path)
    loaded = speechvq.load(path)
    assert loaded.config == tiny_model.config and loaded.speakers == ("p225", "p226")
    wave = synth_speechlike(0.2)
    codes = tiny_model.encode(wave, 16000)
    np.testing.assert_array_equal(loaded.encode(wave, 16000), codes)
    a = tiny_model.decode(codes[:3], "p226", seed=3)
    b = loaded.decode(codes[:3], "p226", seed=3)
    np.testing.assert_array_equal(a, b)


def test_pitch_model_round_trips_and_trains(tmp_path):
    torch.manual_seed(0)
    m = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["a", "b"], pitch=True))
    f0 = torch.where(torch.rand(2, 20) > 0.3, 120.0, 0.0)
    out = m.train()(torch.randn(2, 1280) * 0.1, torch.tensor([0, 1]), f0)
    assert out.pitch_loss > 0
    out.loss.backward()
    assert m.pitch.net[0].weight.grad is not None
    assert m.decoder.source_proj.weight.grad.abs().sum() > 0
    m.save(tmp_path / "p.safetensors")
    loaded = speechvq.load(tmp_path / "p.safetensors")
    codes = m.encode(synth_speechlike(0.1), 16000)
    np.testing.assert_array_equal(loaded.decode(codes, "a", seed=1), m.decode(codes, "a", seed=1))


def test_config_round_trip_and_presets():
    for name in ("tiny", "small", "paper"):
        cfg = ModelConfig.preset(name, speakers=["x", "y"])
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    small = ModelConfig.preset("small")
    assert small.hop_length == 64 and small.quantizer.codebook_size == 512
    assert small.nominal_bitrate == 2250.0
    assert ModelConfig.preset("paper").decoder.wavenet.layers == 30
    with pytest.raises(SpeechVQError, match="unknown preset"):
        ModelConfig.preset("huge")


def test_unknown_speaker_lists_known_ones(tiny_model):
    with pytest.raises(SpeechVQError, match="p225, p226"):
        tiny_model.decode(np.zeros(3, np.int64), "p999")


def test_bad_model_files_are_refused(tmp_path, tiny_model):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(SpeechVQError, match="junk.safetensors: not a speechvq model"):
        speechvq.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(SpeechVQError, match="not a speechvq model"):
        speechvq.load(other)
    path = tmp_path / "m.safetensors"
    tiny_model.save(path, format_version="99")
    with pytest.raises(SpeechVQError, match="version 99 is not supported"):
        speechvq.load(path)
    with pytest.raises(SpeechVQError, match="no such model file"):
        speechvq.load(tmp_path / "absent.safetensors")
    good = tmp_path / "good.safetensors"
    tiny_model.save(good)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(SpeechVQError, match="trunc.safetensors"):
        speechvq.load(truncated)


def test_bad_codes_are_refused(tiny_model):
    with pytest.raises(SpeechVQError, match=r"\[0, 16\)"):
        tiny_model.decode(np.array([0, 16]), "p225")
    with pytest.raises(SpeechVQError, match="1-D"):
        tiny_model.decode(np.zeros((2, 2), np.int64), "p225")
    with pytest.raises(SpeechVQError, match="integers"):
        tiny_model.decode(np.zeros(3, np.float32), "p225")
    with pytest.raises(SpeechVQError, match="empty"):
        tiny_model.decode(np.zeros(0, np.int64), "p225")
