"""VTLP: the envelope moves, F0 and timing stay, and training with it stays reproducible."""

from __future__ import annotations

import numpy as np
import torch

from speechvq.audio.augment import vtlp_factors, warp_envelope

from .conftest import synth_speechlike


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / 16000), spec


def _formant_tone(seconds: float = 1.0) -> np.ndarray:
    """A steady 150 Hz pulse train through one resonance at 1.2 kHz: a clear envelope peak."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = sum(
        np.sin(2 * np.pi * 150 * k * t) / (1 + ((150 * k - 1200) / 200) ** 2) for k in range(1, 50)
    )
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_factor_one_is_the_identity():
    x = torch.from_numpy(np.stack([synth_speechlike(0.5, seed=s) for s in (0, 1)]))
    y = warp_envelope(x, torch.ones(2))
    assert y.shape == x.shape and torch.allclose(y, x, atol=1e-5)


def test_the_formant_moves_and_the_harmonics_stay():
    x = torch.from_numpy(_formant_tone())[None]
    for factor in (0.85, 1.15):
        y = warp_envelope(x, torch.tensor([factor]))[0].numpy()
        f, s = _spectrum(y[2000:-2000])
        peak = f[np.argmax(s)]
        # the strongest harmonic follows the formant: 1200 Hz -> ~1020 / ~1380 Hz
        assert abs(peak - 1200 * factor) <= 150, (factor, peak)
        assert abs(peak / 150 - round(peak / 150)) < 0.02  # still a harmonic of 150 Hz


def test_factors_lie_in_the_range_and_follow_the_generator():
    a = vtlp_factors(1000, 0.1, torch.Generator().manual_seed(5))
    b = vtlp_factors(1000, 0.1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0.9 and a.max() <= 1.1 and a.std() > 0.04


def test_training_with_vtlp_resumes_exactly(tmp_path):
    from speechvq.training.checkpoint import load_checkpoint
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    torch.set_num_threads(1)
    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    cfg = TrainConfig(
        preset="tiny-sf",
        batch_size=2,
        crop_seconds=0.5,
        vtlp=0.15,
        max_steps=6,
        valid_every=0,
        export_every=0,
        log_every=1,
    )
    train(corpus, tmp_path / "a", cfg, progress=False)
    train(corpus, tmp_path / "b", cfg, progress=False, stop_after=3)
    train(corpus, tmp_path / "b", cfg, resume=True, progress=False)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
