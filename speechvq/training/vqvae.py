"""Training the VQ-VAE on a prepared corpus: one CPU, one GPU, or many under torchrun.

The data order is a pure function of (seed, step, rank): each step draws its
random crops from `np.random.default_rng([seed, step, rank])`. A resumed run
therefore sees exactly the batches the uninterrupted run would have, and,
with the model, optimiser and torch RNG restored from the checkpoint, ends
with the same weights.

This module supplies the VQ-VAE's part (`VQVAETask`: crops, the loss,
validation, export) and its start (`--init-from`, pitch statistics, k-means
codebook); the loop itself, with resume, atomic checkpoints on SIGTERM, DDP,
progress and logging, is `speechvq.training.loop`, shared with the prior.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechvq.config import ModelConfig
from speechvq.data.corpus import PreparedCorpus, Utterance
from speechvq.errors import SpeechVQError
from speechvq.models.mel_loss import log_mel_loss
from speechvq.models.precision import autocast_dtype
from speechvq.models.quantizer import VectorQuantizer
from speechvq.training import loop
from speechvq.training.adversarial import Adversary
from speechvq.training.code_speaker import SpeakerCritic
from speechvq.training.config import config_from_yaml, merge
from speechvq.training.distributed import Distributed
from speechvq.training.init import base_model, build_model, kept_code_models
from speechvq.training.loop import open_run
from speechvq.training.speaker_loss import speaker_loss, update_table


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    pitch: bool | None = None  # None: the preset's default
    model: dict[str, Any] = field(default_factory=dict)  # overrides of ModelConfig fields
    batch_size: int = 6
    crop_seconds: float = 0.5
    lr: float = 2e-4  # VQ-VAE paper
    warmup_steps: int = 0
    grad_clip: float = 1.0
    max_steps: int = 100_000
    log_every: int = 10
    valid_every: int = 1000
    valid_max_seconds: float = 0.0  # 0: the whole validation split
    checkpoint_every: int = 200
    export_every: int = 1000  # also write model.safetensors this often
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    # Vocal-tract-length perturbation of the encoder's input (`speechvq.audio.augment`):
    # envelope warp factors drawn from [1 - vtlp, 1 + vtlp]; 0 disables.
    vtlp: float = 0.0
    # Weight of the speaker-identification loss on the speaker encoder's vectors
    # (`speechvq.training.speaker_loss`); 0 disables. Only with a speaker encoder.
    speaker_loss: float = 0.0
    # Length of the speaker encoder's reference crops (another utterance of the
    # crop's speaker); 0: as long as the training crop. A reference utterance
    # shorter than this is taken whole, zero-padded (the encoder's energy gate
    # leaves the padding out of its pooling).
    reference_seconds: float = 0.0
    # Weight of the speaker-adversarial loss on the encoder's latents
    # (`speechvq.training.code_speaker`): a frame-level speaker critic is trained
    # beside the model and the encoder is pushed to confuse it; 0 disables.
    code_speaker: float = 0.0
    code_speaker_lr: float = 2e-4  # the critic's learning rate
    # Fraction of the crops whose latents are moved to another speaker's crop's
    # per-dimension mean and spread before quantising (`matching.swap_statistics`),
    # so the decoder learns to take the voice from the speaker vector; 0 disables.
    latent_swap: float = 0.0
    # Adversarial training of a parallel decoder (`speechvq.training.adversarial`):
    # the weight of the generator loss (0 disables), of feature matching (summed
    # over the discriminators' 48 feature maps), the discriminators' learning rate
    # and width, and the step they start at. HiFi-GAN weighs its mel loss 45,
    # feature matching 2 and the adversarial loss 1, about 15 : 5 : 3 in value;
    # against our STFT loss, near 1, that balance is about 0.2 and 0.1.
    adversarial: float = 0.0
    feature_matching: float = 0.2
    disc_lr: float = 2e-4
    disc_channels: int = 16
    adversarial_start: int = 0
    # Steps the discriminators train alone, from `adversarial_start`, before their
    # losses reach the decoder: a decoder started from a trained one is then
    # pushed by discriminators that tell its output from speech, not at random.
    disc_warmup: int = 0
    # Weight of a log-mel L1 loss on a parallel decoder's output beside its STFT
    # loss (`speechvq.models.mel_loss`): more weight on the formant region; 0 disables.
    mel_loss: float = 0.0
    # Weight of the STFT loss on the sf-wavenet post-filter's sub-bands beside the
    # full-band one (`PostFilter.subband_loss`, Multi-band MelGAN's); 0 disables.
    subband_loss: float = 0.0
    # Set by `train(init_from=...)`: the model file the run started from, and its
    # own training steps/hours, so exported models report the total.
    init_from: str | None = None
    # What `--init-from` takes from its model: "all" (keep training it, its own
    # config), "encoder" (its encoder, codebook, F0 predictor and pitch
    # statistics; the decoder is built fresh from this config, e.g. a new kind)
    # or "matching" (the model is built from this config; every tensor whose
    # name and shape match is copied, the others start fresh, e.g. a new F0
    # predictor under a trained encoder and decoder).
    init_parts: str = "all"
    # Parts of the model whose weights stay as they are (names of its submodules,
    # e.g. ["encoder", "quantizer", "pitch", "speaker_encoder"] to train the decoder
    # alone: the codes, and the prior and analyses made on them, stay valid).
    frozen: list[str] = field(default_factory=list)
    base_steps: int = 0
    base_hours: float = 0.0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None, **overrides: Any) -> TrainConfig:
        return config_from_yaml(cls, path, **overrides)

    def model_config(self, speakers: list[str]) -> ModelConfig:
        base = ModelConfig.preset(self.preset, speakers=speakers, pitch=self.pitch).to_dict()
        return ModelConfig.from_dict(merge(base, self.model))


class CropSampler:
    """Batches of random hop-aligned crops, utterances drawn in proportion to their length.

    With `references`, each crop comes with a reference crop of the same
    speaker for the speaker encoder: from another of their utterances when
    they have one (so the voice vector cannot carry the crop's words), else
    from elsewhere in the same utterance. References are drawn from their own
    random stream, so the training crops are those of a run without them.
    """

    def __init__(
        self,
        corpus: PreparedCorpus,
        crop: int,
        batch_size: int,
        speakers: list[str],
        references: bool = False,
        reference_length: int = 0,
    ):
        self.corpus = corpus
        self.crop = crop
        self.reference_length = reference_length or crop  # samples
        self.batch_size = batch_size
        self.utts = [u for u in corpus.utterances("train") if u.length >= crop]
        if not self.utts:
            raise SpeechVQError(f"{corpus.path}: no training utterance is {crop} samples long")
        weights = np.array([u.length for u in self.utts], dtype=np.float64)
        self.p = weights / weights.sum()
        self.spk = {s: i for i, s in enumerate(speakers)}
        self.references = references
        self.by_speaker: dict[str, list[int]] = {}
        for i, u in enumerate(self.utts):
            self.by_speaker.setdefault(u.speaker, []).append(i)

    def batch(self, seed: int, step: int, rank: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step, rank])
        picks = rng.choice(len(self.utts), size=self.batch_size, p=self.p)
        crops = [self.corpus.random_crop(self.utts[i], self.crop, rng) for i in picks]
        out = {
            "wave": torch.from_numpy(np.stack([c.audio for c in crops])),
            "f0": torch.from_numpy(np.stack([c.f0 for c in crops])),
            "speaker": torch.tensor([self.spk[self.utts[i].speaker] for i in picks]),
        }
        if self.references:
            ref_rng = np.random.default_rng([seed, step, rank, 2])
            refs = [self._reference(int(i), ref_rng) for i in picks]
            out["reference"] = torch.from_numpy(np.stack(refs))
        return out

    def _reference(self, i: int, rng: np.random.Generator) -> np.ndarray:
        same = self.by_speaker[self.utts[i].speaker]
        others = [j for j in same if j != i]
        j = others[rng.integers(len(others))] if others else i
        audio = self.corpus.random_crop(self.utts[j], self.reference_length, rng).audio
        return np.pad(audio, (0, self.reference_length - audio.size))


@torch.no_grad()
def init_codebook(model, sampler: CropSampler, cfg: TrainConfig, device) -> None:
    """k-means of the untrained encoder's outputs over the first batches (VQ init).

    The batches come from their own seed stream, so the run's data order
    (and thus resume) is unaffected.
    """
    want = model.config.quantizer.kmeans_vectors
    vectors, i = [], 0
    while sum(v.shape[0] for v in vectors) < want and i < 1000:
        wave = sampler.batch(cfg.seed + 7919, i, 0)["wave"].to(device)
        z = model.encoder(wave[:, None])  # (B, D, F)
        vectors.append(z.transpose(1, 2).reshape(-1, z.shape[1]))
        i += 1
    model.quantizer.init_codebook(torch.cat(vectors)[:want])


def perturb(wave: torch.Tensor, cfg: TrainConfig, step: int, rank: int) -> torch.Tensor | None:
    """The encoder's augmented input `[B, T]` (VTLP), or None; drawn from (seed, step, rank)."""
    if not cfg.vtlp:
        return None
    from speechvq.audio.augment import vtlp_factors, warp_envelope

    gen = torch.Generator().manual_seed(
        int(np.random.default_rng([cfg.seed, step, rank, 1]).integers(2**62))
    )
    return warp_envelope(wave, vtlp_factors(wave.shape[0], cfg.vtlp, gen).to(wave.device))


def swap_partners(speaker: torch.Tensor, cfg: TrainConfig, step: int, rank: int):
    """For `TrainConfig.latent_swap`: each crop's partner `[B]`, a crop of another speaker
    for a `latent_swap` fraction of them and itself for the rest (and where the batch
    holds no other speaker); None when off. Drawn from (seed, step, rank)."""
    if not cfg.latent_swap:
        return None
    rng = np.random.default_rng([cfg.seed, step, rank, 2])
    ids = speaker.cpu().numpy()
    partner = np.arange(len(ids))
    for i in np.flatnonzero(rng.random(len(ids)) < cfg.latent_swap):
        others = np.flatnonzero(ids != ids[i])
        if others.size:
            partner[i] = rng.choice(others)
    return torch.from_numpy(partner).to(speaker.device)


VALID_MIN_SAMPLES = 4096


@torch.no_grad()
def validate(model, corpus: PreparedCorpus, speakers: list[str], cfg: TrainConfig, device, dtype):
    """Loss and codebook usage over the validation split (whole utterances, in crops)."""
    utts: list[Utterance] = corpus.utterances("valid")
    crop = int(cfg.crop_seconds * 4 * corpus.sample_rate) // corpus.hop_length * corpus.hop_length
    budget = cfg.valid_max_seconds * corpus.sample_rate or math.inf
    model.eval()
    # The same random numbers at every check (the source-filter decoder's noise),
    # without disturbing the training run's stream.
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return _validate(model, corpus, utts, crop, budget, speakers, device, dtype)


def _validate(model, corpus, utts, crop, budget, speakers, device, dtype) -> dict[str, float]:
    totals = {"recon_loss": 0.0, "pitch_loss": 0.0, "samples": 0}
    counts = torch.zeros(model.config.quantizer.codebook_size)
    spk = {s: i for i, s in enumerate(speakers)}
    for u in utts:
        # Crops of at least VALID_MIN_SAMPLES (a tail shorter than the spectral
        # loss's longest STFT frame is left out).
        for start in range(0, u.length - VALID_MIN_SAMPLES + 1, crop):
            if totals["samples"] >= budget:
                break
            c = corpus.crop(u, start, min(crop, u.length - start))
            wave = torch.from_numpy(c.audio)[None].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(
                    wave,
                    torch.tensor([spk[u.speaker]], device=device),
                    torch.from_numpy(c.f0)[None].to(device),
                    reference=wave,  # the crop's own voice (a loss figure, not a leak test)
                )
            n = wave.shape[1]
            totals["recon_loss"] += float(out.recon_loss) * n
            totals["pitch_loss"] += float(out.pitch_loss) * n
            totals["samples"] += n
            counts += torch.bincount(out.codes.flatten().cpu(), minlength=counts.numel())
    model.train()
    n = max(totals["samples"], 1)
    p = counts / counts.sum().clamp(min=1)
    return {
        "valid_recon_loss": totals["recon_loss"] / n,
        "valid_pitch_loss": totals["pitch_loss"] / n,
        "valid_perplexity": float(torch.exp(-(p * torch.log(p + 1e-10)).sum())),
        "valid_codes_used": int((counts > 0).sum()),
        "valid_seconds": totals["samples"] / corpus.sample_rate,
    }


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    model_path: Path
    last_loss: float
    seconds: float
    interrupted: bool
    out_of_time: bool  # stopped by `max_minutes`


def train(
    corpus_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    stop_after: int | None = None,
    init_from: str | os.PathLike | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue) a model; returns where the exported model lies.

    A resumed run keeps its own config (`cfg` is ignored) except `max_steps`,
    which may extend it. `init_from` starts a new run from a model file's
    weights, config and speaker table (a fresh optimiser; e.g. to go on
    training a shipped model when its run folder is gone); its speakers must
    be the corpus's. `stop_after` ends this call after that many steps as if
    interrupted (tests); `max_minutes` after that much wall-clock time, checkpointed
    and exported (`loop.run`'s).
    """
    dist = Distributed.setup()
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    run_dir = Path(run_dir)
    corpus = PreparedCorpus(corpus_dir)
    state = open_run(run_dir, resume)
    if state is not None:
        cfg = TrainConfig(**json.loads(state["train_config"]))
        model_cfg = ModelConfig.from_dict(json.loads(state["model_config"]))
    else:
        model_cfg = cfg.model_config(corpus.speakers)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)
    torch.manual_seed(cfg.seed)
    base = None
    if state is None and init_from is not None:
        base, cfg = base_model(init_from, corpus, cfg)
        if cfg.init_parts == "all":
            model_cfg = base.config
    model = build_model(model_cfg, base, cfg, corpus, fresh=state is None, verbose=dist.main)
    if cfg.speaker_loss and model.speaker_encoder is None:
        raise SpeechVQError("speaker_loss needs a model with a speaker encoder (a -spk preset)")
    for name in ("adversarial", "mel_loss"):
        if getattr(cfg, name) and model.config.decoder.kind == "wavenet":
            raise SpeechVQError(f"{name} needs a parallel decoder (source-filter or sf-wavenet)")
    dec = model.config.decoder
    if cfg.subband_loss and not (dec.kind == "sf-wavenet" and dec.post_filter.bands > 1):
        raise SpeechVQError("subband_loss needs an sf-wavenet decoder on sub-bands (bands > 1)")
    model.to(device).train()
    freeze(model, cfg.frozen)
    task = VQVAETask(model, corpus, cfg, run_dir, device, base)
    if state is None and base is None and model_cfg.quantizer.kmeans_init:
        init_codebook(model, task.sampler, cfg, device)
    r = loop.run(
        task,
        cfg,
        run_dir,
        dist,
        device,
        state,
        progress=progress,
        stop_after=stop_after,
        max_minutes=max_minutes,
    )
    last_loss = float(r.last.figures()["recon_loss"]) if r.last is not None else float("nan")
    return TrainResult(
        run_dir,
        r.steps,
        run_dir / "model.safetensors",
        last_loss,
        r.elapsed,
        r.interrupted,
        r.out_of_time,
    )


def freeze(model, names) -> None:
    """Stop training the submodules `names` of `model` (`TrainConfig.frozen`): no
    gradients, and a frozen codebook takes no EMA updates."""
    for name in names:
        try:
            part = model.get_submodule(name)
        except AttributeError:
            known = ", ".join(n for n, _ in model.named_children())
            raise SpeechVQError(
                f"frozen: the model has no part {name!r}; its parts: {known}"
            ) from None
        part.requires_grad_(False)
        for m in part.modules():
            if isinstance(m, VectorQuantizer):
                m.frozen = True
    if names and not any(p.requires_grad for p in model.parameters()):
        raise SpeechVQError("frozen: nothing is left to train")


class VQVAETask:
    """The VQ-VAE's part of the loop (`speechvq.training.loop.Task`): crops in, losses out."""

    throughput = "audio_s_per_s"

    def __init__(
        self, model, corpus: PreparedCorpus, cfg: TrainConfig, run_dir: Path, device, base=None
    ):
        self.module = model
        self.corpus, self.cfg, self.run_dir, self.device = corpus, cfg, run_dir, device
        crop = int(cfg.crop_seconds * corpus.sample_rate) // corpus.hop_length * corpus.hop_length
        refs = model.speaker_encoder is not None
        hop = corpus.hop_length
        ref_len = int(cfg.reference_seconds * corpus.sample_rate) // hop * hop
        self.sampler = CropSampler(corpus, crop, cfg.batch_size, corpus.speakers, refs, ref_len)
        # The speakers with training utterances (the speaker loss's classes).
        trained = [s in self.sampler.by_speaker for s in corpus.speakers]
        self.trained = torch.tensor(trained, device=device)
        self.adversary = Adversary(cfg, device) if cfg.adversarial else None
        self.kept = kept_code_models(cfg, corpus, base)  # the base's prior, if the codes are its
        dec = model.decoder
        self.probe = PostFilterProbe(dec.post) if hasattr(dec, "post") else None
        self.critic = None
        if cfg.code_speaker:
            dim = model.config.encoder.latent_dim
            self.critic = SpeakerCritic(dim, self.trained, cfg.code_speaker_lr, device)

    def batch(self, step: int, rank: int) -> dict[str, torch.Tensor]:
        return self.sampler.batch(self.cfg.seed, step, rank)

    def step(self, net, batch, step: int, rank: int, autocast) -> loop.Step:
        enc_in = perturb(batch["wave"], self.cfg, step, rank)
        with autocast():
            ref = batch.get("reference")  # with a speaker encoder
            swap = swap_partners(batch["speaker"], self.cfg, step, rank)
            out = net(batch["wave"], batch["speaker"], batch["f0"], enc_in, ref, swap)
        loss, spk_loss = out.loss, torch.zeros(())
        if self.cfg.speaker_loss and out.voice is not None:
            table = self.module.speaker_vectors
            spk_loss = speaker_loss(out.voice, batch["speaker"], table, self.trained)
            loss = loss + self.cfg.speaker_loss * spk_loss
            update_table(out.voice, batch["speaker"], table)
        extra = {}  # the critic's and the discriminators' figures, the mel loss
        if self.critic is not None:
            extra = self.critic.critic_step(out.latents, batch["speaker"])
            with autocast():
                confusion = self.critic.confusion_loss(out.latents)
            loss = loss + self.cfg.code_speaker * confusion
            extra["confusion_loss"] = confusion.detach()
        if self.cfg.mel_loss:
            mel = log_mel_loss(out.output, batch["wave"], self.corpus.sample_rate)
            loss = loss + self.cfg.mel_loss * mel
            extra["mel_loss"] = mel.detach()
        if self.cfg.subband_loss:
            sub = self.module.decoder.post.subband_loss(out.output, batch["wave"])
            loss = loss + self.cfg.subband_loss * sub
            extra["subband_loss"] = sub.detach()
        if self.adversary is not None and step >= self.cfg.adversarial_start:
            real, fake = batch["wave"], out.output
            with autocast():
                extra["disc_loss"] = self.adversary.discriminator_step(real, fake)
            if step >= self.cfg.adversarial_start + self.cfg.disc_warmup:
                with autocast():
                    adv, fm = self.adversary.generator_losses(real, fake)
                loss = loss + self.cfg.adversarial * adv + self.cfg.feature_matching * fm
                extra |= {"adv_loss": adv.detach(), "fm_loss": fm.detach()}
        return loop.Step(
            loss=loss,
            amount=batch["wave"].numel() / self.corpus.sample_rate,
            postfix={"loss": f"{out.recon_loss.item():.3f}", "ppl": f"{out.perplexity.item():.0f}"},
            figures=lambda: {
                "loss": loss.item(),
                "recon_loss": float(out.recon_loss.detach()),
                "vq_loss": out.vq_loss.item(),
                "pitch_loss": out.pitch_loss.item(),
                "speaker_loss": spk_loss.item(),
                **{k: v.item() for k, v in extra.items()},
                **(self.probe.figures() if self.probe is not None else {}),
                "perplexity": out.perplexity.item(),
                "usage": out.usage.item(),
            },
        )

    def extra_state(self) -> dict:
        """What the checkpoint keeps beside the model: the discriminators and the speaker
        critic, if any."""
        state = {}
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        if self.adversary is not None and "adversary" in state:
            self.adversary.load_state_dict(state["adversary"])
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])

    def validate(self, step: int, elapsed: float) -> tuple[dict[str, float], str]:
        dtype = autocast_dtype(self.cfg.precision, self.device)
        m = validate(self.module, self.corpus, self.corpus.speakers, self.cfg, self.device, dtype)
        return m, f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items())

    def export(self, step: int, elapsed: float) -> None:
        _export(self.module, self.run_dir, self.corpus, step, elapsed, self.cfg, self.kept)


class PostFilterProbe:
    """What an sf-wavenet post-filter did in the last forward pass, for the training log:
    - `post_active`: the share of its head's hidden pre-activations above zero. 0 is
      a dead head, how 0.17.0's adversarial CPU runs ended (issue 17);
    - `correction_db`: the correction's energy against the synthesiser's output's, in dB
      (-inf at the start, when the correction is zero)."""

    def __init__(self, post: torch.nn.Module):
        self._seen: dict[str, torch.Tensor] = {}
        post.out[1].register_forward_hook(self._head)
        post.register_forward_hook(self._correction)

    def _head(self, module, args, out: torch.Tensor) -> None:
        self._seen["post_active"] = (out.detach() > 0).float().mean()

    def _correction(self, module, args, out: torch.Tensor) -> None:
        source = args[0].detach()  # [B, 3, T]: the synthesiser's output first
        ratio = out.detach().float().square().mean() / source[:, 0].float().square().mean()
        self._seen["correction_db"] = 10 * torch.log10(ratio)

    def figures(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._seen.items()}


def _export(
    model, run_dir: Path, corpus: PreparedCorpus, step: int, elapsed: float, cfg, kept=None
) -> None:
    """Write the run's model file; steps and hours count any model it started from.
    `kept` (`kept_code_models`) lends the file its prior and packet code."""
    if model.speaker_encoder is not None:
        model.set_speaker_vectors(speaker_vectors(model, corpus))
    extra = {"initialized_from": cfg.init_from} if cfg.init_from else {}
    if kept is not None:
        model.prior = kept.prior
        model.set_packet_code(kept.packet_code)
        extra |= {
            k: v for k, v in kept.metadata.items() if k.startswith("prior_") and k != "prior_config"
        }
    try:
        model.save(
            run_dir / "model.safetensors",
            training_steps=str(cfg.base_steps + step),
            training_hours=f"{cfg.base_hours + elapsed / 3600:.2f}",
            trained_on=str(corpus.path),
            **extra,
        )
    finally:
        model.prior = None
        model.set_packet_code(None)
    model.train()


@torch.no_grad()
def speaker_vectors(
    model, corpus: PreparedCorpus, utterances: int = 3, seconds: float = 4.0
) -> torch.Tensor:
    """Each speaker's voice vector `[S, speaker_dim]`: the mean of the speaker encoder's
    vectors of (up to) their first `utterances` training utterances, `seconds` of each."""
    device = next(model.parameters()).device
    train: dict[str, list[Utterance]] = {}  # speaker -> utterances, grouped once
    every: dict[str, list[Utterance]] = {}
    for u in corpus.utterances():
        every.setdefault(u.speaker, []).append(u)
        if u.split == "train":
            train.setdefault(u.speaker, []).append(u)
    model.eval()
    rows = []
    for name in model.speakers:
        utts = (train.get(name) or every.get(name, []))[:utterances]
        vecs = []
        for u in utts:
            n = min(u.length, int(seconds * corpus.sample_rate)) // corpus.hop_length
            audio = corpus.crop(u, 0, n * corpus.hop_length).audio
            vecs.append(model.speaker_encoder(torch.from_numpy(audio)[None].to(device))[0])
        rows.append(
            torch.stack(vecs).mean(0) if vecs else torch.zeros_like(model.speaker_vectors[0])
        )
    model.train()
    return torch.stack(rows)
