"""The fast synthesis engine and folding: exactness, seeding, segment plans, bounded memory."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import speechvq
from speechvq.audio.mulaw import mulaw_decode
from speechvq.config import ModelConfig
from speechvq.models.decoders.folding import (
    FoldConfig,
    HarmonicFrames,
    crossfade_windows,
    plan_segments,
)
from speechvq.models.decoders.mulaw_wavenet import MulawWaveNetDecoder
from speechvq.models.decoders.synthesis import Synthesizer
from speechvq.models.decoders.synthesis_numba import numba_kernel

BACKENDS = [
    "torch",
    pytest.param(
        "numba", marks=pytest.mark.skipif(numba_kernel() is None, reason="numba not installed")
    ),
]


@pytest.fixture(autouse=True)
def one_thread():
    # The reference loops below are many tiny calls: a second thread only adds barriers.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_decoder(preset: str, pitch: bool, **wavenet) -> MulawWaveNetDecoder:
    torch.manual_seed(0)
    cfg = ModelConfig.preset(preset, speakers=["a", "b"], pitch=pitch)
    if wavenet:
        wn = dataclasses.replace(cfg.decoder.wavenet, **wavenet)
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, wavenet=wn))
    return MulawWaveNetDecoder(cfg).eval()


def random_inputs(dec: MulawWaveNetDecoder, batch: int, frames: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = frames * dec.hop
    cond = torch.randn(batch, frames, dec.cfg.decoder.cond_channels, generator=g)
    source = torch.randn(batch, T, dec.cfg.pitch.harmonics, generator=g) * 0.1
    prev = torch.randint(0, dec.cfg.decoder.quantization_channels, (batch, T), generator=g)
    return cond, (source if dec.source_proj is not None else None), prev


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "preset,pitch,batch,frames,wavenet",
    [
        ("tiny", False, 2, 20, {}),
        ("tiny", True, 1, 20, {}),  # batch 1: the single stream
        ("tiny", False, 2, 12, {"kernel_size": 3, "layers": 6, "dilation_cycle": 3}),
        ("small", True, 2, 20, {}),  # random-initialised small-sized WaveNet, 1280 samples
    ],
)
def test_teacher_forced_engine_equals_parallel_forward(
    preset, pitch, batch, frames, wavenet, backend
):
    dec = make_decoder(preset, pitch, **wavenet)
    cond, source, prev = random_inputs(dec, batch, frames)
    with torch.no_grad():
        ref = dec(prev, cond, source)  # (B, T, Q)
    got = Synthesizer(dec, backend=backend).teacher_forced(prev, cond, source)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4


def reference_generate(dec: MulawWaveNetDecoder, cond, source) -> torch.Tensor:
    """The plain loop over `WaveNet.step` with argmax sampling (the slow reference)."""
    B, T = cond.shape[0], cond.shape[1] * dec.hop
    q = dec.cfg.decoder.quantization_channels
    state = dec.wavenet.start(cond)
    prev = torch.full((B,), q // 2, dtype=torch.long)
    out = []
    with torch.no_grad():
        src = dec.source_proj(source) if source is not None else None
        for t in range(T):
            x = dec.embed(prev) + (src[:, t] if src is not None else 0)
            prev = dec.wavenet.step(x, state).argmax(-1)
            out.append(prev)
    return torch.stack(out, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pitch", [False, True])
def test_free_running_generation_equals_step_reference(pitch, backend):
    dec = make_decoder("tiny", pitch)
    for p in dec.parameters():  # sharper logits: no near-ties for argmax
        p.data.mul_(3)
    cond, source, _ = random_inputs(dec, 2, 6)
    want = reference_generate(dec, cond, source)
    got = Synthesizer(dec, backend=backend).generate(cond, source, temperature=0)
    assert torch.equal(got, want)
    assert torch.equal(dec.generate(cond, source, temperature=0), want)  # Decoder API


def test_bfloat16_engine_is_close_and_restores_threads():
    dec = make_decoder("tiny", True)
    cond, source, prev = random_inputs(dec, 2, 8)
    with torch.no_grad():
        ref = dec(prev, cond, source)
    torch.set_num_threads(2)
    got = Synthesizer(dec, dtype=torch.bfloat16).teacher_forced(prev, cond, source)
    assert torch.get_num_threads() == 2
    assert (got - ref).abs().max().item() < 0.05


def test_exact_decode_is_single_stream_engine(tiny_model):
    codes = np.arange(40) % 16
    tiny_model.eval()
    wave = tiny_model.decode(codes, "p225", seed=5, exact=True, temperature=0)
    with torch.no_grad():
        lat = tiny_model.quantizer.lookup(torch.from_numpy(codes)[None])
        cond = tiny_model.decoder.conditioning(lat, torch.tensor([0]), None)
        ints = tiny_model.decoder.generate(cond, None, temperature=0)[0].numpy()
    want = mulaw_decode(ints, 256)
    np.testing.assert_array_equal(wave, want)


@pytest.mark.parametrize("exact", [False, True])
def test_same_seed_same_output(exact):
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["a"], pitch=True)).eval()
    codes = (np.arange(300) * 7) % 16  # 1.2 s: folded into 2 segments
    fold = FoldConfig(segment_seconds=0.5)
    a = model.decode(codes, "a", seed=3, exact=exact, fold=fold)
    b = model.decode(codes, "a", seed=3, exact=exact, fold=fold)
    c = model.decode(codes, "a", seed=4, exact=exact, fold=fold)
    assert a.shape == (300 * 64,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_plan_segments_covers_the_utterance():
    for frames, seg, ov, warm in [(1000, 250, 13, 32), (260, 250, 13, 32), (7, 250, 13, 32)]:
        plan = plan_segments(frames, seg, ov, warm)
        assert len({s.stop - s.start for s in plan}) == 1  # one batch: equal rows
        assert plan[0].keep == 0 and plan[-1].end == frames
        for s in plan:
            assert 0 <= s.start <= s.keep < s.end <= s.stop <= frames
            assert s.keep == 0 or s.keep - s.start >= warm
        for s, n in zip(plan, plan[1:], strict=False):
            assert s.end - n.keep == ov  # exactly the cross-fade
            assert n.keep - s.keep <= seg
    assert len(plan_segments(1000, 250, 13, 32)) == 4


@pytest.mark.parametrize("mode,power", [("linear", 1), ("equal_power", 2)])
def test_crossfade_windows_preserve_level(mode, power):
    fade_in, fade_out = crossfade_windows(200, mode)
    np.testing.assert_allclose(fade_in**power + fade_out**power, 1, atol=1e-6)
    assert fade_in[0] < 0.05 and fade_out[-1] < 0.05


def test_segment_source_is_the_slice_of_the_whole_source():
    dec = make_decoder("tiny", True)
    g = torch.Generator().manual_seed(0)
    frames = 200
    f0 = torch.where(torch.rand(1, frames, generator=g) > 0.3, 100 + 200 * torch.rand(1, frames), 0)
    whole = dec.source(f0, torch.zeros(1))[0]  # (T, H)
    offsets = [0, 37, 150]
    src = HarmonicFrames(dec, f0, offsets)(5, 45)  # (3, 40 * hop, H)
    for k, o in enumerate(offsets):
        ref = whole[(o + 5) * dec.hop : (o + 45) * dec.hop]
        assert (src[k] - ref).abs().max() < 1e-3  # float32 phase sums of the whole utterance


@pytest.mark.slow
def test_long_input_memory_stays_bounded():
    """60 s of codes with the tiny preset: peak memory grows by far less than per-sample
    tensors of the whole utterance would take (logits alone would be ~1 GB)."""
    script = """
import json, resource, sys, numpy as np, torch, speechvq
torch.set_num_threads(1)
torch.manual_seed(0)
m = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["a"], pitch=True)).eval()
codes = (np.arange(15000) * 5) % 16
m.decode(codes[:300], "a", seed=0)  # warm up allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wave = m.decode(codes, "a", seed=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grow_mb": (after - before) / 1024, "n": int(wave.size)}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 15000 * 64
    assert res["grow_mb"] < 120, res


def test_without_numba_auto_falls_back_to_torch(monkeypatch):
    import speechvq.models.decoders.synthesis as synthesis

    monkeypatch.setattr(synthesis, "numba_kernel", lambda: None)
    dec = make_decoder("tiny", False)
    cond, _, _ = random_inputs(dec, 1, 4)
    want = Synthesizer(dec, backend="torch").generate(cond, None, temperature=0)
    assert torch.equal(synthesis.Synthesizer(dec).generate(cond, None, temperature=0), want)
    with pytest.raises(ValueError, match="needs numba"):
        synthesis.Synthesizer(dec, backend="numba")
