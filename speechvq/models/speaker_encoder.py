"""The speaker encoder: an utterance-level voice vector from a recording.

Log-mel frames (10 ms) go through a 1-D convolution and dilated residual
convolutions, then mean and standard deviation over time (statistics
pooling, as in x-vectors, Snyder et al. 2018) and a linear layer to the
decoder's `speaker_dim`. Pooling over the whole recording makes the vector
carry what stays constant over it (the voice and the channel), not what
changes (the words). Frames far below the loudest one are left out of the
pooling: silence tells nothing about a voice.

Trained with the model: the decoder reconstructs a crop from its codes
conditioned on the vector of *another* utterance of the same speaker
(`training.vqvae.CropSampler`), so content in the vector does not help it.
"""

from __future__ import annotations

import torch
from torch import nn

from speechvq.audio.mel import mel_filterbank
from speechvq.config import SpeakerEncoderConfig


class SpeakerEncoder(nn.Module):
    """Waveforms `[B, T]` at `sample_rate` to voice vectors `[B, out_dim]`."""

    def __init__(self, cfg: SpeakerEncoderConfig, sample_rate: int, out_dim: int):
        super().__init__()
        self.cfg = cfg
        mel = mel_filterbank(sample_rate, cfg.n_fft, cfg.n_mels)
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        C = cfg.channels
        self.first = nn.Conv1d(cfg.n_mels, C, 5, padding=2)
        self.blocks = nn.ModuleList(
            nn.Conv1d(C, C, 3, padding=2**i, dilation=2**i) for i in range(cfg.layers)
        )
        self.out = nn.Linear(2 * C, out_dim)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """`[B, T]` to log-mel frames `[B, n_mels, N]` (natural log of power)."""
        cfg = self.cfg
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(),
                cfg.n_fft,
                cfg.hop,
                window=self.window,
                center=True,
                return_complex=True,
            )
            return torch.log(self.mel @ spec.abs().square() + 1e-6)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.log_mel(wave)  # (B, M, N)
        # Frames within `floor_db` of each recording's loudest count in the pooling.
        energy = x.logsumexp(dim=1)  # (B, N), natural log of the frame power
        floor = energy.amax(dim=1, keepdim=True) - self.cfg.floor_db * 0.2303  # dB -> ln
        weight = (energy > floor).float()[:, None]  # (B, 1, N)
        h = torch.relu(self.first(x - x.mean(dim=(1, 2), keepdim=True)))
        for conv in self.blocks:
            h = h + torch.relu(conv(h))  # (B, C, N)
        n = weight.sum(dim=2).clamp(min=1.0)
        mean = (h * weight).sum(dim=2) / n
        var = ((h - mean[:, :, None]).square() * weight).sum(dim=2) / n
        return self.out(torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=1))
