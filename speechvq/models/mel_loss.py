"""A log-mel L1 loss for parallel decoders: beside the STFT loss in training
(`TrainConfig.mel_loss`), and alone as the code search's objective
(`inference.code_search`).

Why (docs/wavenet-decoder.md, "Where the STOI goes"): the source-filter
decoder loses STOI to codec2 in the 1/3-octave bands from 1 to 2.5 kHz, the
second formant's region, while it wins below 300 Hz. Its multi-resolution STFT
loss compares linear-frequency bins, two thirds of which lie above 2.7 kHz;
a mel scale gives the formant region about as many bands as everything above
it, as HiFi-GAN's mel loss does. L1 of log mel energies, at three resolutions
(HiFi-GAN uses one, 1024 points); 80 HTK mel bands over 0..8 kHz.
"""

from __future__ import annotations

import functools

import torch

from speechvq.audio.mel import mel_filterbank

MEL_FFT_SIZES = (512, 1024, 2048)  # hop a quarter of each
N_MELS = 80
FLOOR = 1e-5  # magnitude floor before the log (HiFi-GAN's clamp)


@functools.cache
def _filters(sample_rate: int, n_fft: int, device: torch.device) -> torch.Tensor:
    """The mel filterbank `[N_MELS, n_fft // 2 + 1]` as a float32 tensor, made once."""
    fb = mel_filterbank(sample_rate, n_fft, N_MELS)
    return torch.as_tensor(fb, dtype=torch.float32, device=device)


def log_mel_loss(pred: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean L1 distance of log mel magnitudes of `[B, T]` waveforms, over `MEL_FFT_SIZES`."""
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        total = pred.new_zeros(())
        for n in MEL_FFT_SIZES:
            window = torch.hann_window(n, device=pred.device)
            fb = _filters(sample_rate, n, pred.device)
            p, t = (
                fb @ torch.stft(x, n, n // 4, window=window, return_complex=True).abs()
                for x in (pred, target)
            )  # [B, N_MELS, frames]
            total = total + (torch.log(p + FLOOR) - torch.log(t + FLOOR)).abs().mean()
        return total / len(MEL_FFT_SIZES)
