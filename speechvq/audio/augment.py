"""Vocal-tract-length perturbation of the encoder's input, for speaker-free codes.

Voice conversion works when the codes say *what* was said and the speaker
embedding says *who* says it. Nothing in the VQ-VAE's loss asks the encoder
to leave the speaker out, and a decoder that predicts the spectral envelope
from the codes (the source-filter decoder) rewards codes that carry the
source speaker's timbre, which conversion then keeps. VTLP (Jaitly & Hinton
2013, used in ASR for speaker invariance) warps the frequency axis of the
spectral envelope by a random factor, as a longer or shorter vocal tract
would: the encoder sees a different "speaker" each time while the decoder
must still produce the original, so timbre is better taken from the speaker
embedding than from the codes.

Only the envelope is warped: the log-magnitude spectrum is split into an
envelope (low-quefrency cepstrum) and a fine structure (the harmonics), the
envelope is resampled along frequency, and the original fine structure and
phase are put back. F0 and timing are unchanged, so the F0 targets and the
frame alignment still hold.
"""

from __future__ import annotations

import torch

N_FFT = 512  # 32 ms at 16 kHz: resolves harmonics down to ~60 Hz
HOP = 128
LIFTER = 30  # cepstral cut-off in samples (1.9 ms): below the pitch period of F0 <= 500 Hz


def warp_envelope(wave: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """`[B, T]` waveforms with their spectral envelopes stretched by `factors` `[B]`.

    A factor above 1 moves formants up (a shorter vocal tract); 1 returns the
    input up to STFT round-off.
    """
    with torch.autocast(wave.device.type, enabled=False):
        x = wave.float()
        window = torch.hann_window(N_FFT, device=x.device)
        spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)  # (B, K, N)
        mag = spec.abs()
        logmag = torch.log(mag + 1e-7)
        cep = torch.fft.irfft(logmag, n=N_FFT, dim=1)  # real cepstrum (B, N_FFT, N)
        lifter = torch.zeros(N_FFT, device=x.device)
        lifter[:LIFTER] = 1
        lifter[N_FFT - LIFTER + 1 :] = 1
        env = torch.fft.rfft(cep * lifter[:, None], dim=1).real  # (B, K, N)
        K = env.shape[1]
        pos = (torch.arange(K, device=x.device)[None] / factors[:, None].float()).clamp(0, K - 1)
        i0 = pos.floor().long().clamp(max=K - 2)  # (B, K)
        w = (pos - i0)[:, :, None]
        idx = i0[:, :, None].expand(-1, -1, env.shape[2])
        warped = env.gather(1, idx) * (1 - w) + env.gather(1, idx + 1) * w
        scale = torch.exp(warped - env)  # new magnitude / old, per bin and frame
        out = torch.istft(spec * scale, N_FFT, HOP, window=window, length=x.shape[1])
        return out.to(wave.dtype)


def vtlp_factors(batch: int, amount: float, generator: torch.Generator) -> torch.Tensor:
    """`[B]` warp factors drawn uniformly from [1 - amount, 1 + amount]."""
    return 1 + amount * (2 * torch.rand(batch, generator=generator) - 1)
