"""The speaker-conditioned WaveNet decoder over 8-bit mu-law samples (VQ-VAE §4.3).

Conditioning, built once per frame: the quantised latents, the speaker's
learned embedding (global conditioning, broadcast over time) and, with the
pitch path, log-F0 and voicing, go through a few non-causal convolutions
(the latents are all known before decoding starts). The WaveNet repeats each
frame's per-layer projections `hop` times (nearest-neighbour upsampling).

The WaveNet works time-major (`[B, T, C]`, see wavenet.py for why).
Inputs, per sample: the embedding of the previous mu-law sample plus, with
the pitch path, a 1x1 projection of the harmonic source at this sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechvq.audio.mulaw import deemphasis, mulaw_encode
from speechvq.config import ModelConfig
from speechvq.models.decoders.base import Decoder, SynthesisOptions
from speechvq.models.pitch import harmonic_source, pitch_features
from speechvq.models.wavenet import WaveNet


class MulawWaveNetDecoder(Decoder):
    """Teacher-forced logits in training; incremental (or folded) sampling to decode."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dec = cfg.decoder
        self.cfg = cfg
        self.hop = cfg.hop_length
        self.speaker = nn.Embedding(max(1, len(cfg.speakers)), dec.speaker_dim)
        in_ch = cfg.encoder.latent_dim + dec.speaker_dim + (2 if cfg.pitch.enabled else 0)
        layers: list[nn.Module] = [nn.Conv1d(in_ch, dec.cond_channels, 3, padding=1)]
        for _ in range(dec.cond_layers - 1):
            layers += [nn.ReLU(), nn.Conv1d(dec.cond_channels, dec.cond_channels, 3, padding=1)]
        self.cond_net = nn.Sequential(*layers)
        R = dec.wavenet.residual_channels
        self.embed = nn.Embedding(dec.quantization_channels, R)
        self.source_proj = nn.Linear(cfg.pitch.harmonics, R) if cfg.pitch.enabled else None
        self.wavenet = WaveNet(dec.wavenet, dec.cond_channels, dec.quantization_channels, self.hop)

    def conditioning(
        self, latents: torch.Tensor, speaker: torch.Tensor, f0: torch.Tensor | None
    ) -> torch.Tensor:
        """latents `[B, D, F]`, speaker ids `[B]`, F0 `[B, F]` (Hz) to `[B, F, C]` (time-major)."""
        B, D, Fr = latents.shape
        spk = self.voice(speaker)[:, :, None].expand(B, -1, Fr)  # (B, S, F)
        parts = [latents, spk.to(latents.dtype)]
        if self.source_proj is not None:
            assert f0 is not None and f0.shape == (B, Fr), "the pitch path needs F0 [B, F]"
            parts.append(pitch_features(f0).to(latents.dtype))
        return self.cond_net(torch.cat(parts, dim=1)).transpose(1, 2)

    def source(self, f0: torch.Tensor | None, phase: torch.Tensor | None = None):
        """The harmonic excitation `[B, F * hop, H]` for F0 `[B, F]`, or None without pitch."""
        if self.source_proj is None or f0 is None:
            return None
        p = self.cfg.pitch
        return harmonic_source(
            f0.float(), self.hop, self.cfg.sample_rate, p.harmonics, p.source_amplitude, phase
        )

    def inputs(self, prev: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        """Previous samples `[B, T]` (mu-law ints) and source `[B, T, H]` to `[B, T, R]`."""
        x = self.embed(prev)  # (B, T, R)
        if self.source_proj is not None and source is not None:
            x = x + self.source_proj(source.to(x.dtype))
        return x

    def forward(
        self, prev: torch.Tensor, cond: torch.Tensor, source: torch.Tensor | None
    ) -> torch.Tensor:
        """Teacher-forced logits `[B, T, Q]`; `prev[:, t]` is the sample before t."""
        return self.wavenet(self.inputs(prev, source), cond)

    def reconstruction_loss(self, wave, latents, speaker, f0) -> torch.Tensor:
        """Cross-entropy of the mu-law targets, nats per sample (teacher forcing)."""
        B, T = wave.shape
        dec = self.cfg.decoder
        target_wave = wave
        if dec.preemphasis:
            target_wave = torch.cat(
                [wave[:, :1], wave[:, 1:] - dec.preemphasis * wave[:, :-1]], dim=1
            )
        target = mulaw_encode(target_wave.float(), dec.quantization_channels)  # (B, T)
        prev = F.pad(target[:, :-1], (1, 0), value=dec.quantization_channels // 2)
        source = None
        if self.source_proj is not None:
            phase = 2 * math.pi * torch.rand(B, device=wave.device)
            source = self.source(f0, phase)
        logits = self(prev, self.conditioning(latents, speaker, f0), source)  # (B, T, Q)
        return F.cross_entropy(logits.reshape(B * T, -1).float(), target.reshape(B * T))

    def synthesize(self, latents, speaker, f0, options: SynthesisOptions) -> np.ndarray:
        """Sampled speech, de-emphasised (`speechvq.models.decoders.synthesis.synthesize`)."""
        from speechvq.models.decoders.synthesis import synthesize

        cond = self.conditioning(latents, speaker, f0)
        o = options
        wave = synthesize(
            self, cond, f0, temperature=o.temperature, seed=o.seed, exact=o.exact, fold=o.fold
        )
        return deemphasis(wave, self.cfg.decoder.preemphasis).astype(np.float32)

    def describe(self) -> str:
        w = self.cfg.decoder.wavenet
        return f"WaveNet ({w.layers} layers, receptive field {w.receptive_field} samples)"

    @torch.no_grad()
    def generate(
        self,
        cond: torch.Tensor,
        source: torch.Tensor | None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `[B, F * hop]` mu-law ints autoregressively under conditioning `[B, F, C]`.

        Runs the fast incremental engine (`speechvq.models.decoders.synthesis.Synthesizer`,
        the same numbers as `forward`); `source` is `[B, F * hop, H]` or None.
        """
        from speechvq.models.decoders.synthesis import Synthesizer

        return Synthesizer(self).generate(cond, source, temperature, generator)
