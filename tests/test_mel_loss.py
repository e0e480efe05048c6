"""The log-mel loss of parallel decoders (`TrainConfig.mel_loss`, issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechvq.models.decoders.source_filter import spectral_loss
from speechvq.models.mel_loss import log_mel_loss
from tests.conftest import synth_speechlike

SR = 16000


def _scaled(wave: torch.Tensor, lo: float, hi: float, gain: float) -> torch.Tensor:
    """`wave` `[1, T]` with the band lo..hi Hz scaled by `gain`."""
    spec = torch.fft.rfft(wave)
    freq = torch.fft.rfftfreq(wave.shape[-1], 1 / SR)
    spec[:, (freq >= lo) & (freq < hi)] *= gain
    return torch.fft.irfft(spec, wave.shape[-1])


def test_it_is_zero_for_a_copy_and_weighs_the_formant_region_more_than_the_stft_loss():
    wave = torch.from_numpy(synth_speechlike(1.0, SR, seed=2))[None].float()
    assert log_mel_loss(wave, wave, SR).item() == pytest.approx(0.0, abs=1e-6)
    mid, high = _scaled(wave, 1000, 2500, 0.5), _scaled(wave, 5000, 8000, 0.5)
    mel_ratio = log_mel_loss(mid, wave, SR) / log_mel_loss(high, wave, SR)
    stft_ratio = spectral_loss(mid, wave) / spectral_loss(high, wave)
    assert log_mel_loss(mid, wave, SR) > 0.01
    assert mel_ratio > 1.5 * stft_ratio, (mel_ratio, stft_ratio)


def test_training_logs_it_and_a_wavenet_decoder_refuses_it(tmp_path):
    from speechvq.errors import SpeechVQError
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    cfg = TrainConfig(
        preset="tiny-sf",
        batch_size=2,
        crop_seconds=0.25,
        log_every=1,
        valid_every=0,
        export_every=0,
        max_steps=3,
        mel_loss=1.0,
    )
    train(corpus, tmp_path / "a", cfg, progress=False)
    rows = [r.split(",") for r in (tmp_path / "a" / "log.csv").read_text().splitlines()]
    mel = [float(r[1]) for r in rows if r[0] == "mel_loss"]
    assert len(mel) == 3 and all(np.isfinite(mel)) and min(mel) > 0
    with pytest.raises(SpeechVQError, match="mel_loss needs a parallel decoder"):
        train(corpus, tmp_path / "b", TrainConfig(preset="tiny", mel_loss=1.0), progress=False)
