"""Shared fixtures: tiny models and short synthetic audio (no data files needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synth_speechlike(seconds: float = 0.5, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic tone with vibrato plus a little noise, float32 `[T]`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    wave = 0.3 * wave / np.abs(wave).max() + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


@pytest.fixture
def tiny_model():
    import torch

    import speechvq

    torch.manual_seed(0)
    return speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["p225", "p226"]))


@pytest.fixture
def wav_file(tmp_path):
    import soundfile as sf

    path = tmp_path / "in.wav"
    sf.write(path, synth_speechlike(0.5), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
