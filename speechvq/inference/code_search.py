"""Analysis-by-synthesis code search: codes chosen for what the decoder makes of them.

The encoder gives each frame the codebook row nearest its output. That is the
best code for the encoder's latent, not always the one from which the decoder
re-synthesises the input most closely: the encoder and decoder were trained
together, but not to the point where the decoder's use of each code is what
the encoder assumes. `search_codes` closes part of that gap at the sender, as
CELP coders search their codebooks by synthesis (Schroeder and Atal 1985). It
starts from the encoder's latents and moves them by Adam on the distance
between the decoder's output and the input (log-mel by default), re-quantising
them at every step; the gradient reaches them through the straight-through
estimator of VQ-VAE training (van den Oord et al. 2017, section 3.1), the
model frozen. Pauses keep the encoder's codes (`quiet_db`). The file format
and the decoder are unchanged: a searched `.svq` file decodes as any other,
and only the sender pays.

With `rate_weight` (mu) the re-quantisation is entropy-constrained (Chou,
Lookabaugh and Gray 1989): each frame takes
argmin_k |z - e_k|^2 - mu * log p_prior(k | the codes before it), the prior's
probabilities teacher-forced on the previous step's codes, so the search can
trade quality for an entropy-coded rate that does not grow.

On `small-spk`'s held-out files, the default (30 steps) lifted STOI from 0.838
to 0.861 on seen speakers and from 0.798 to 0.827 on unseen ones, past codec2
2400's (docs/code-search.md).

A long input is searched a window at a time (`window_seconds`), each window
with the decoder's receptive field of codes on either side as context (those
before it already searched), so memory follows the window, not the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechvq.config import COMPRESS_SEARCH_STEPS
from speechvq.errors import SpeechVQError
from speechvq.models.voice import Voice

OBJECTIVES = ("log-mel", "decoder")

# Steps between refreshes of the prior's probabilities in a rate-constrained search: they
# follow the codes chosen, which change little from one step to the next.
PRIOR_EVERY = 5


@dataclass(frozen=True)
class SearchConfig:
    """How hard `search_codes` looks; `steps` = 0 keeps the encoder's codes."""

    steps: int = COMPRESS_SEARCH_STEPS  # Adam steps per window
    lr: float = 0.04  # on latents whose rows have norms of about 6-8 (small-spk)
    # What the search lowers: "log-mel" (`models.mel_loss`, the default: on small-spk it
    # kept DNSMOS where the decoder's own loss cost 0.08) or "decoder" (the decoder's
    # training loss; the only one for a kind that makes no waveform in training).
    objective: str = "log-mel"
    # Frames this far (dB) below the input's loudest, its level smoothed over 9 frames,
    # keep the encoder's codes: searched, the pauses took on the input's background and
    # cost DNSMOS (on small-spk's 4 files that lost most, 0.27 searched everywhere, 0.08
    # with 20 dB, for 88% of the STOI gain; docs/code-search.md). None: search them all.
    quiet_db: float | None = 20.0
    rate_weight: float = 0.0  # mu, squared latent distance per nat of the prior; 0 = off
    window_seconds: float = 4.0
    seed: int = 0  # the decoder's noise at step i is seeded with seed + i

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SpeechVQError(
                f"code search: unknown objective {self.objective!r} (one of: "
                f"{', '.join(OBJECTIVES)})"
            )
        if self.quiet_db is not None and self.quiet_db <= 0:
            raise SpeechVQError(f"code search: quiet_db > 0 or None, got {self.quiet_db}")
        if self.steps < 0 or self.lr <= 0 or self.rate_weight < 0 or self.window_seconds <= 0:
            raise SpeechVQError(
                "code search: steps >= 0, lr > 0, rate weight >= 0 and window > 0, got "
                f"{self.steps}, {self.lr}, {self.rate_weight}, {self.window_seconds}"
            )


def default_search(model: Any, rate_weight: float = 0.0) -> SearchConfig | None:
    """What `compress` searches with when not told: `SearchConfig()` for a parallel
    decoder; None (the encoder's codes) for the autoregressive WaveNet, whose teacher-forced
    loss is no measure of what it will generate and costs far more a step."""
    if not model.decoder.parallel:
        return None
    return SearchConfig(rate_weight=rate_weight)


@dataclass(frozen=True)
class SearchResult:
    """The searched codes, where they started, and the objective before and after (NaN
    when nothing was searched)."""

    codes: np.ndarray  # [F] int64: the searched codes
    encoder_codes: np.ndarray  # [F] int64: the encoder's, where the search began
    loss_before: float  # the objective on the encoder's codes (mean over windows)
    loss_after: float  # and on the searched ones, with the same noise

    @property
    def changed(self) -> float:
        """The fraction of frames whose code the search changed."""
        return float(np.mean(self.codes != self.encoder_codes)) if self.codes.size else 0.0


def search_codes(
    model: Any,
    wave: np.ndarray,
    sample_rate: int,
    voice: str | int | Voice,
    f0: np.ndarray | None = None,
    config: SearchConfig = SearchConfig(),
    *,
    latents: np.ndarray | None = None,
    prior_speaker: int | None = None,
    progress: bool = False,
) -> SearchResult:
    """The codes `[F]` of a `[T]` waveform that `model`'s decoder turns back into it most
    closely, in `voice` (a name or a `Voice`, as the receiver will decode it).

    `f0` `[F]` (Hz, 0 = unvoiced) is the F0 the receiver will use (a file's
    pitch track, `pitch_track_f0`); None: the F0 predicted from the codes being
    searched, as a file without a track is decoded. `latents` `[D, F]` are the
    encoder's output (`SpeechVQ.latents`) if the caller has it, so the encoder
    does not run twice. `prior_speaker` is the prior's conditioning (a speaker
    index, None = unknown) for `rate_weight`.
    A window keeps the encoder's codes where the search did not lower the
    loss (judged with one noise draw), so `loss_after <= loss_before`.
    """
    from speechvq.audio.io import resample

    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate != model.sample_rate:
        wave = resample(wave, sample_rate, model.sample_rate)
    if config.rate_weight > 0 and model.prior is None:
        raise SpeechVQError("a rate-constrained code search needs a model with a prior")
    if latents is None:
        latents = model.latents(wave, model.sample_rate)
    if config.steps == 0:
        codes = model.quantize(latents)
        return SearchResult(codes, codes, math.nan, math.nan)
    search = _Search(model, wave, latents, voice, f0, config, prior_speaker)
    encoder_codes = search.encoder_codes.cpu().numpy().astype(np.int64)
    frames = encoder_codes.size
    window = max(1, round(config.window_seconds * model.frame_rate))
    starts = range(0, frames, window)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(starts) * config.steps, desc="searching codes", unit="step", leave=False
        )
    was_training = model.training
    model.eval()
    before, after = [], []
    try:
        for a in starts:
            b = min(frames, a + window)
            lb, la = search.window(a, b, bar)
            before.append(lb * (b - a))
            after.append(la * (b - a))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    codes = search.codes.cpu().numpy().astype(np.int64)
    return SearchResult(codes, encoder_codes, sum(before) / frames, sum(after) / frames)


class _Search:
    """One input's search in progress: its target, latents, voice, and the codes so far."""

    def __init__(
        self, model, wave: np.ndarray, latents, voice, f0, config: SearchConfig, prior_speaker
    ):
        import torch

        from speechvq.models.prior import speaker_index

        self.model, self.config = model, config
        dev = next(model.parameters()).device
        frames, hop = latents.shape[1], model.hop_length
        target = np.zeros(frames * hop, dtype=np.float32)
        target[: min(wave.size, target.size)] = wave[: target.size]
        self.target = torch.from_numpy(target)[None].to(dev)  # [1, F * hop]
        self.z = torch.as_tensor(np.asarray(latents, dtype=np.float32))[None].to(dev)  # [1, D, F]
        self.codes = model.quantizer.codes(self.z)[0]  # [F]
        self.encoder_codes = self.codes.clone()
        self.quiet = torch.from_numpy(_quiet_frames(target, hop, config.quiet_db)).to(dev)  # [F]
        self.vector, self.level_mean, self.level_std = model._voice_tensors(voice)
        self.f0 = None
        if f0 is not None:
            f0 = np.pad(np.asarray(f0, dtype=np.float32), (0, max(0, frames - len(f0))))[:frames]
            self.f0 = torch.from_numpy(f0)[None].to(dev)  # [1, F]
        self.context = int(getattr(model.decoder, "receptive_field", 0))
        self.codebook = model.quantizer.codebook.detach().float()  # [K, D]
        self.norms = self.codebook.pow(2).sum(1)  # [K]
        self.prior = model.prior if config.rate_weight > 0 else None
        if self.prior is not None:
            self.prior_row = torch.tensor([speaker_index(self.prior, prior_speaker)], device=dev)
            self.prior_context = int(self.prior.config.receptive_field) + 1

    def window(self, a: int, b: int, bar) -> tuple[float, float]:
        """Search the codes of frames [a, b); their losses before and after."""
        import torch

        cfg, frames = self.config, self.codes.numel()
        lo, hi = max(0, a - self.context), min(frames, b + self.context)
        start = self.codes[a:b].clone()
        z = self.z[:, :, a:b].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr)
        log_prior = None
        for step in range(cfg.steps):
            with torch.no_grad():
                if step % PRIOR_EVERY == 0:  # the prior costs more than the codebook search
                    log_prior = self._log_prior(a, b)
                self.codes[a:b] = self._pick(z.detach(), a, b, log_prior)
            q = self.model.quantizer.lookup(self.codes[None, a:b])
            with torch.enable_grad():
                middle = z + (q - z).detach()  # straight-through: forward q, backward to z
                loss = self._loss(middle, a, b, lo, hi, cfg.seed + step)
                (grad,) = torch.autograd.grad(loss, [z])
            z.grad = grad
            opt.step()
            if bar is not None:
                bar.update()
        with torch.no_grad():
            for _ in range(3 if self.prior is not None else 1):  # the rate term's context
                self.codes[a:b] = self._pick(z.detach(), a, b, self._log_prior(a, b))
            found = self.codes[a:b].clone()
            judge = cfg.seed + cfg.steps
            after = float(self._loss(self.model.quantizer.lookup(found[None]), a, b, lo, hi, judge))
            self.codes[a:b] = start
            before = float(
                self._loss(self.model.quantizer.lookup(start[None]), a, b, lo, hi, judge)
            )
            if after < before:
                self.codes[a:b] = found
        return before, min(before, after)

    def _loss(self, middle, a: int, b: int, lo: int, hi: int, seed: int):
        """The decoder's loss on frames [lo, hi), frames [a, b) given as latents `middle`."""
        import torch

        model, hop = self.model, self.model.hop_length
        quantizer = model.quantizer
        left = quantizer.lookup(self.codes[None, lo:a])
        right = quantizer.lookup(self.codes[None, b:hi])
        latents = torch.cat([left, middle, right], dim=2)  # [1, D, hi - lo]
        f0 = self.f0[:, lo:hi] if self.f0 is not None else self._predicted_f0(latents)
        wave = self.target[:, lo * hop : hi * hop]
        decoder = model.decoder
        # The decoder's noise comes from the global generator: seeded in a fork of its state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.config.objective == "log-mel" and decoder.parallel:
                from speechvq.models.mel_loss import log_mel_loss

                return log_mel_loss(decoder(latents, self.vector, f0), wave, model.sample_rate)
            return decoder.reconstruction_loss(wave, latents, self.vector, f0)

    def _predicted_f0(self, latents):  # [1, F] Hz, as `SpeechVQ.decode` predicts it
        import torch

        if self.model.pitch is None:
            return None
        with torch.no_grad():
            return self.model.f0_at_level(latents, self.level_mean, self.level_std)

    def _pick(self, z, a: int, b: int, log_prior=None):
        """Codes `[b - a]` for latents `[1, D, b - a]`: the nearest, or with the rate term
        on `log_prior` `[K, b - a]` (`_log_prior`); the encoder's in quiet frames."""
        import torch

        score = self.norms[:, None] - 2 * self.codebook @ z[0]  # [K, b - a]; |z|^2 dropped
        if log_prior is not None:
            score = score - self.config.rate_weight * log_prior
        return torch.where(self.quiet[a:b], self.encoder_codes[a:b], score.argmin(0))

    def _log_prior(self, a: int, b: int):
        """The prior's log-probabilities `[K, b - a]` of frames [a, b), teacher-forced on
        the codes so far; None without the rate term."""
        import torch

        if self.prior is None:
            return None
        s = max(0, a - self.prior_context)
        if s == 0:
            prev = self.prior.shift(self.codes[None, :b])
        else:
            prev = self.codes[None, s - 1 : b - 1]
        logits = self.prior(prev, self.prior_row)[0, a - s :].float()  # [b - a, K]
        return torch.log_softmax(logits, -1).T


def _quiet_frames(wave: np.ndarray, hop: int, quiet_db: float | None) -> np.ndarray:
    """Frames `[F]` (bool) of `wave` `[F * hop]` whose level, smoothed over 9 frames, is
    more than `quiet_db` below the loudest frame's; none for None."""
    frames = wave.size // hop
    if quiet_db is None or frames == 0:
        return np.zeros(frames, dtype=bool)
    power = np.mean(wave[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2, axis=1)
    level = np.pad(10 * np.log10(power + 1e-10), 4, mode="edge")
    level = np.convolve(level, np.ones(9) / 9, mode="valid")
    return level < level.max() - quiet_db
