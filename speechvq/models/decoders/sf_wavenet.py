"""The source-filter decoder with a parallel WaveNet after it (decoder kind `sf-wavenet`).

Issue 17. The harmonic-plus-noise synthesiser (`source_filter`) gives voiced
speech with the right pitch and envelope, but its fixed source model is
what sounds buzzy and smeared. Here a WaveNet reshapes its output sample by
sample, in one parallel pass: the non-causal, gated, dilated convolutions
of Parallel WaveGAN's generator (Yamamoto et al. 2020), fed not noise but
the synthesiser's output and its two parts (harmonics, filtered noise), as
the NSF filter blocks are fed a sine-plus-noise source (Wang et al. 2019),
and conditioned on the frame network's features (latents, voice and F0),
upsampled to samples. It predicts a *correction* that is added to the
synthesiser's output, and its last layer starts at zero, so training starts
from the source-filter decoder's quality (`--init-from` a source-filter
model copies everything else) rather than from noise.

The voicing mask that SawSing (ddsp-singing-vocoders) put on the harmonic
branch against buzz in unvoiced consonants is already the synthesiser's:
harmonic amplitudes are multiplied by the tracker's voicing per frame.

Synthesis is chunked like the synthesiser's: each chunk of samples is
filtered with the network's receptive field of real samples on either side,
so a long file costs memory by the chunk and sounds the same as one pass.

Training: the source-filter decoder's multi-resolution STFT loss, and, with
`TrainConfig.adversarial`, the discriminators' losses
(`training.adversarial`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from speechvq.config import ModelConfig, PostFilterConfig
from speechvq.models.decoders.base import SynthesisOptions
from speechvq.models.decoders.source_filter import (
    SourceFilterDecoder,
    interp_frames,
    noise_generator,
    spectral_loss,
)
from speechvq.models.pqmf import PQMF

CHUNK_SAMPLES = 160_000  # 10 s at 16 kHz per pass of the post-filter in synthesis
# The sub-band STFT loss's sizes at the band rate: 32-128 ms with 4 bands (Multi-band
# MelGAN's, 171-683 points at 6 kHz, are 28-114 ms).
SUBBAND_FFT_SIZES = (512, 256, 128)
HEAD_SLOPE = 0.1  # the output head's leaky units (HiFi-GAN's slope)


class PostFilter(nn.Module):
    """Source `[B, 3, T]` (output, harmonics, noise) and frame features `[B, C, F]`
    (T = F * hop) to a correction `[B, T]`."""

    def __init__(self, cfg: PostFilterConfig, frame_channels: int, hop: int):
        super().__init__()
        K = self.bands = cfg.bands
        if hop % K:
            raise ValueError(f"post_filter.bands {K} must divide the hop {hop}")
        self.hop = hop
        self.pqmf = PQMF(K) if K > 1 else None
        R, k = cfg.channels, cfg.kernel_size
        self.dilations = [2 ** (i % cfg.dilation_cycle) for i in range(cfg.layers)]
        self.cond = nn.Conv1d(frame_channels, cfg.cond_channels, 1)
        self.inp = nn.Conv1d(3 * K, R, 1)
        self.dilated = nn.ModuleList(
            nn.Conv1d(R, 2 * R, k, padding=d * (k // 2), dilation=d) for d in self.dilations
        )
        self.aux = nn.ModuleList(nn.Conv1d(cfg.cond_channels, 2 * R, 1) for _ in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(R, R, 1) for _ in self.dilations)
        self.skip = nn.ModuleList(nn.Conv1d(R, R, 1) for _ in self.dilations)
        # Parallel WaveGAN's head has ReLUs and a biased last layer. Ours did too until
        # 0.18.0, and a CPU adversarial run killed all 24 hidden units within 500 steps
        # (none active on a held-out file, half at the start): the correction was then
        # the last layer's bias alone, a constant in each sub-band, which the bank turns
        # into a steady tone at the bands' edges (4 kHz) and a DC offset. Leaky units
        # always pass a gradient, and with no bias the head has no constant of its own.
        self.out = nn.Sequential(
            nn.LeakyReLU(HEAD_SLOPE),
            nn.Conv1d(R, R, 1),
            nn.LeakyReLU(HEAD_SLOPE),
            nn.Conv1d(R, K, 1, bias=False),
        )
        nn.init.zeros_(self.out[-1].weight)  # the correction starts at zero

    def subband_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The STFT loss of `[B, T]` waveforms on this post-filter's sub-bands (`spectral_loss`
        over `SUBBAND_FFT_SIZES` at the band rate), as Multi-band MelGAN adds one beside the
        full-band loss: a correction that leaks across the bands' edges (a steady tone there)
        costs more here than in the full band. Needs sub-bands."""
        if self.pqmf is None:
            raise ValueError("subband_loss needs a post-filter on sub-bands (bands > 1)")
        T = pred.shape[-1] - pred.shape[-1] % self.bands
        p, t = (self.pqmf.analysis(x[:, None, :T].float()) for x in (pred, target))
        flat = [x.reshape(-1, x.shape[-1]) for x in (p, t)]  # [B * K, T / K]
        return spectral_loss(*flat, SUBBAND_FFT_SIZES)

    @property
    def receptive_field(self) -> int:
        """Samples of context on each side that an output sample depends on (a multiple
        of the bands: with sub-bands, the WaveNet's at their rate and both banks')."""
        k = self.dilated[0].kernel_size[0] if self.dilations else 1
        wavenet = sum(d * (k // 2) for d in self.dilations)
        if self.pqmf is None:
            return wavenet
        K = self.bands
        return K * wavenet + K * -(-self.pqmf.taps // K)  # the banks' taps / 2 each

    def forward(self, source: torch.Tensor, features: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """The correction `[B, T]` for samples t0 .. t0 + T of the utterance whose frame
        features are `features` (all of them: the conditioning is interpolated where it
        lies). With sub-bands, t0 and T are multiples of the bands."""
        B, _, T = source.shape
        K = self.bands
        if self.pqmf is not None:
            if t0 % K or T % K:
                raise ValueError(f"t0 {t0} and length {T} must be multiples of the bands ({K})")
            source = self.pqmf.analysis(source.reshape(B * 3, 1, T)).reshape(B, 3 * K, T // K)
        n, hop, s0 = source.shape[-1], self.hop // K, t0 // K  # at the (sub-)band rate
        # Only the frames these samples lie between: a chunk of a long file costs by the chunk.
        f_lo = max(0, s0 // hop - 1)
        f_hi = min(features.shape[-1], -(-(s0 + n) // hop) + 1)
        cond = self.cond(features[..., f_lo:f_hi])
        c = interp_frames(cond, s0 - f_lo * hop, s0 - f_lo * hop + n, hop).to(source.dtype)
        x = self.inp(source)
        skip = torch.zeros_like(x)
        for dilated, aux, res, sk in zip(self.dilated, self.aux, self.res, self.skip, strict=True):
            a, b = (dilated(x) + aux(c)).chunk(2, dim=1)
            z = torch.tanh(a) * torch.sigmoid(b)
            skip = skip + sk(z)
            x = (x + res(z)) * math.sqrt(0.5)
        out = self.out(skip * math.sqrt(1.0 / max(1, len(self.dilations))))  # [B, K, T / K]
        if self.pqmf is not None:
            out = self.pqmf.synthesis(out)
        return out[:, 0]


class SourceFilterWaveNetDecoder(SourceFilterDecoder):
    """`SourceFilterDecoder`, then `PostFilter`: latents `[B, D, F]`, speakers and F0
    `[B, F]` to a waveform `[B, F * hop]`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.post = PostFilter(
            cfg.decoder.post_filter, cfg.decoder.source_filter.channels, self.hop
        )

    def forward(
        self,
        latents: torch.Tensor,
        speaker: torch.Tensor,
        f0: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        c = self.controls(latents, speaker, f0)
        harmonic, noise = self.render_parts(c, generator)
        source = torch.stack([harmonic + noise, harmonic, noise], dim=1)
        return harmonic + noise + self.post(source, c.features.float()).float()

    def synthesize(self, latents, speaker, f0, options: SynthesisOptions) -> np.ndarray:
        """One parallel pass, the post-filter `CHUNK_SAMPLES` at a time; `options.seed`
        sets the synthesiser's noise."""
        gen = noise_generator(options.seed, latents.device)
        c = self.controls(latents, speaker, f0)
        harmonic, noise = self.render_parts(c, gen)
        features = c.features.float()
        del c  # the envelopes: 60 MB for 10 minutes, no longer needed
        return self.filter_chunked(harmonic, noise, features)[0].cpu().numpy()

    def filter_chunked(
        self,
        harmonic: torch.Tensor,
        noise: torch.Tensor,
        features: torch.Tensor,
        chunk: int = CHUNK_SAMPLES,
    ) -> torch.Tensor:
        """`harmonic + noise + post(...)` `[B, T]`, `chunk` samples at a time, each read
        with the receptive field of real samples on either side (equal to one pass up
        to float rounding)."""
        corrected = harmonic + noise
        T, margin = corrected.shape[-1], self.post.receptive_field
        chunk = max(chunk - chunk % self.post.bands, self.post.bands)  # sub-band aligned
        for a in range(0, T, chunk):  # the source stacked chunk by chunk: memory by the chunk
            b = min(T, a + chunk)
            lo, hi = max(0, a - margin), min(T, b + margin)
            h, n = harmonic[..., lo:hi], noise[..., lo:hi]
            source = torch.stack([h + n, h, n], dim=1)
            corr = self.post(source, features, t0=lo).float()
            corrected[..., a:b] += corr[..., a - lo : b - lo]
        return corrected

    def describe(self) -> str:
        p = self.cfg.decoder.post_filter
        ms = 1000 * self.post.receptive_field / self.sample_rate
        bands = f", on {p.bands} sub-bands" if p.bands > 1 else ""
        return (
            f"{super().describe()}, then a parallel WaveNet ({p.layers} layers, "
            f"{p.channels} channels{bands}, +-{ms:.0f} ms)"
        )
