"""Training the VQ-VAE on a prepared corpus: one CPU, one GPU, or many under torchrun.

The data order is a pure function of (seed, step, rank): each step draws its
random crops from `np.random.default_rng([seed, step, rank])`. A resumed run
therefore sees exactly the batches the uninterrupted run would have, and,
with the model, optimiser and torch RNG restored from the checkpoint, ends
with the same weights.

Checkpoints are written atomically (temp file, then rename) every
`checkpoint_every` steps and on Ctrl-C or SIGTERM, so a kill at any moment
leaves the previous checkpoint intact. Loading uses `weights_only=True`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechvq.config import ModelConfig
from speechvq.corpus import PreparedCorpus, Utterance
from speechvq.errors import SpeechVQError


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
    # Vocal-tract-length perturbation of the encoder's input (`speechvq.augment`):
    # envelope warp factors drawn from [1 - vtlp, 1 + vtlp]; 0 disables.
    vtlp: float = 0.0
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
    base_steps: int = 0
    base_hours: float = 0.0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None, **overrides: Any) -> TrainConfig:
        return config_from_yaml(cls, path, **overrides)

    def model_config(self, speakers: list[str]) -> ModelConfig:
        base = ModelConfig.preset(self.preset, speakers=speakers, pitch=self.pitch).to_dict()
        return ModelConfig.from_dict(merge(base, self.model))


def config_from_yaml(cls: type, path: str | os.PathLike | None, **overrides: Any) -> Any:
    """A config dataclass `cls` from a YAML file of its fields, plus `overrides`.

    Shared by `TrainConfig` and the prior's `PriorTrainConfig`: an unreadable
    file, an unknown option or a value of the wrong kind is a one-line error
    here rather than a failure deep inside training.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise SpeechVQError(f"{path}: cannot read training config ({reason})") from None
        if not isinstance(data, dict):
            raise SpeechVQError(f"{path}: a training config is a YAML mapping of options")
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        unknown_names = ", ".join(sorted(map(str, unknown)))
        raise SpeechVQError(f"{path}: unknown training options {unknown_names}")
    for f in dataclasses.fields(cls):  # a wrong type would only fail deep inside training
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in data and not _same_kind(data[f.name], default):
            raise SpeechVQError(
                f"{path}: training option {f.name} should be like {default!r}, got {data[f.name]!r}"
            )
    return cls(**data)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a config value has its default's type (an int may stand for a float)."""
    if default is None:  # optional booleans, e.g. `pitch`
        return value is None or isinstance(value, bool)
    if isinstance(default, float):
        return type(value) in (int, float)
    return type(value) is type(default)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`model` under DistributedDataParallel when there are several processes."""
        if self.world == 1:
            return model
        ids = [self.local_rank] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @classmethod
    def setup(cls) -> Distributed:
        """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        return cls(torch.distributed.get_rank(), world, local)


class CropSampler:
    """Batches of random hop-aligned crops, utterances drawn in proportion to their length."""

    def __init__(self, corpus: PreparedCorpus, crop: int, batch_size: int, speakers: list[str]):
        self.corpus = corpus
        self.crop = crop
        self.batch_size = batch_size
        self.utts = [u for u in corpus.utterances("train") if u.length >= crop]
        if not self.utts:
            raise SpeechVQError(f"{corpus.path}: no training utterance is {crop} samples long")
        weights = np.array([u.length for u in self.utts], dtype=np.float64)
        self.p = weights / weights.sum()
        self.spk = {s: i for i, s in enumerate(speakers)}

    def batch(self, seed: int, step: int, rank: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step, rank])
        picks = rng.choice(len(self.utts), size=self.batch_size, p=self.p)
        crops = [self.corpus.random_crop(self.utts[i], self.crop, rng) for i in picks]
        return {
            "wave": torch.from_numpy(np.stack([c.audio for c in crops])),
            "f0": torch.from_numpy(np.stack([c.f0 for c in crops])),
            "speaker": torch.tensor([self.spk[self.utts[i].speaker] for i in picks]),
        }


def pitch_stats(corpus: PreparedCorpus, speakers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-speaker mean and std of log-F0 over voiced training frames `[S]`."""
    by_spk: dict[str, list[np.ndarray]] = {s: [] for s in speakers}
    for u in corpus.utterances("train"):
        f0 = corpus.f0(u)
        by_spk[u.speaker].append(np.log(f0[f0 > 0]))
    all_voiced = np.concatenate([x for v in by_spk.values() for x in v] or [np.log([150.0])])
    mean, std = [], []
    for s in speakers:
        x = np.concatenate(by_spk[s]) if by_spk[s] else np.zeros(0)
        if x.size < 20:  # too little voiced speech: fall back to the corpus statistics
            x = all_voiced
        mean.append(x.mean())
        std.append(max(x.std(), 0.05))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


INIT_PARTS = ("all", "encoder", "matching")


def copy_matching(src, dst) -> list[str]:
    """Copy each tensor of `src` whose name and shape `dst` shares; returns those left fresh."""
    theirs = src.state_dict()
    own = dst.state_dict()
    same = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    dst.load_state_dict(same, strict=False)
    return [k for k in own if k not in same]


ENCODER_PARTS = ("encoder.", "quantizer.", "pitch.", "logf0_mean", "logf0_std")


def transplant_encoder(src, dst) -> None:
    """Copy the encoder, codebook, F0 predictor and pitch statistics of `src` into `dst`."""
    if src.pitch is None or dst.pitch is None:
        raise SpeechVQError("init_parts: encoder needs the pitch path in both models")
    own = dst.state_dict()
    parts = {k: v for k, v in src.state_dict().items() if k.startswith(ENCODER_PARTS)}
    for k, v in parts.items():
        if k not in own or own[k].shape != v.shape:
            raise SpeechVQError(f"init_parts: encoder: {k} does not fit the new model's config")
    dst.load_state_dict(parts, strict=False)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it pays: CUDA, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and cpu_has_bf16() else None


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    from speechvq.augment import vtlp_factors, warp_envelope

    gen = torch.Generator().manual_seed(
        int(np.random.default_rng([cfg.seed, step, rank, 1]).integers(2**62))
    )
    return warp_envelope(wave, vtlp_factors(wave.shape[0], cfg.vtlp, gen).to(wave.device))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


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
        for start in range(0, u.length - corpus.hop_length * 4, crop):
            if totals["samples"] >= budget:
                break
            c = corpus.crop(u, start, min(crop, u.length - start))
            wave = torch.from_numpy(c.audio)[None].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(
                    wave,
                    torch.tensor([spk[u.speaker]], device=device),
                    torch.from_numpy(c.f0)[None].to(device),
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


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop checkpoints and returns after the current step."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.stop = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def save_checkpoint(path: Path, model, optimizer, step: int, cfg: TrainConfig, extra: dict) -> None:
    from speechvq.audio import atomic_output

    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "model_config": json.dumps(model.config.to_dict()),
        "train_config": json.dumps(dataclasses.asdict(cfg)),
        "elapsed": float(extra.get("elapsed", 0.0)),
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def restore(state: dict | None, model, optimizer) -> tuple[int, float]:
    """Load a checkpoint's weights, optimiser and torch RNG; returns (step, elapsed seconds)."""
    if state is None:
        return 0, 0.0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"])


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SpeechVQError(f"{path}: unreadable checkpoint ({exc})") from None


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
) -> TrainResult:
    """Train (or, with `resume`, continue) a model; returns where the exported model lies.

    A resumed run keeps its own config (`cfg` is ignored) except `max_steps`,
    which may extend it. `init_from` starts a new run from a model file's
    weights, config and speaker table (a fresh optimiser; e.g. to go on
    training a shipped model when its run folder is gone); its speakers must
    be the corpus's. `stop_after` ends this call after that many steps as if
    interrupted (tests).
    """
    from speechvq.audio import remove_stale_temporaries
    from speechvq.model import SpeechVQ

    dist = Distributed.setup()
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    corpus = PreparedCorpus(corpus_dir)
    speakers = corpus.speakers

    if ckpt_path.exists() and not resume:
        raise SpeechVQError(f"{run_dir}: holds a run already (use --resume to continue it)")
    if resume and not ckpt_path.exists():
        raise SpeechVQError(f"{run_dir}: no checkpoint to resume from")
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        cfg = TrainConfig(**json.loads(state["train_config"]))
        model_cfg = ModelConfig.from_dict(json.loads(state["model_config"]))
    else:
        model_cfg = cfg.model_config(speakers)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)
    torch.manual_seed(cfg.seed)
    base = None
    if state is None and init_from is not None:
        from speechvq.modelfile import load

        base = load(init_from)
        if list(base.speakers) != speakers:
            raise SpeechVQError(
                f"{init_from}: its {len(base.speakers)} speakers are not the corpus's "
                f"{len(speakers)}; --init-from needs the same speaker table"
            )
        if cfg.init_parts not in INIT_PARTS:
            raise SpeechVQError(
                f"init_parts must be one of {', '.join(INIT_PARTS)}, got {cfg.init_parts!r}"
            )
        if cfg.init_parts == "all":
            model_cfg = base.config
        cfg = dataclasses.replace(
            cfg,
            init_from=str(init_from),
            base_steps=int(base.metadata.get("training_steps", 0)),
            base_hours=float(base.metadata.get("training_hours", 0.0)),
        )
    model = SpeechVQ(model_cfg)
    if base is not None and cfg.init_parts == "encoder":
        transplant_encoder(base, model)
    elif base is not None and cfg.init_parts == "matching":
        fresh = copy_matching(base, model)
        if fresh and dist.main:
            names = ", ".join(fresh[:4])
            print(f"init_parts matching: {len(fresh)} tensors start fresh ({names} ...)")
    elif base is not None:  # a prior in the file is left out: new codes need a new prior
        model.load_state_dict(
            {k: v for k, v in base.state_dict().items() if not k.startswith("prior.")}
        )
    elif state is None and model.pitch is not None:
        model.set_pitch_stats(*pitch_stats(corpus, speakers))
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, elapsed = restore(state, model, optimizer)
    net = dist.wrap(model, device)
    dtype = autocast_dtype(cfg.precision, device)
    crop = int(cfg.crop_seconds * corpus.sample_rate) // corpus.hop_length * corpus.hop_length
    sampler = CropSampler(corpus, crop, cfg.batch_size, speakers)
    if state is None and base is None and model_cfg.quantizer.kmeans_init:
        init_codebook(model, sampler, cfg, device)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("checkpoint.pt", "model.safetensors"):  # left by a SIGKILLed write
            remove_stale_temporaries(run_dir / name)
        (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    log = CsvLog(run_dir / "log.csv") if dist.main else None
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, unit="step", dynamic_ncols=True)

    last_loss, interrupted = float("nan"), False
    t_last, samples_since = time.time(), 0
    start_step = step
    with StopFlag() as flag:
        while step < cfg.max_steps:
            batch = {k: v.to(device) for k, v in sampler.batch(cfg.seed, step, dist.rank).items()}
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, cfg)
            t0 = time.time()
            enc_in = perturb(batch["wave"], cfg, step, dist.rank)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = net(batch["wave"], batch["speaker"], batch["f0"], enc_in)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            elapsed += time.time() - t0
            samples_since += batch["wave"].numel() * dist.world
            last_loss = float(out.recon_loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", ppl=f"{out.perplexity.item():.0f}")
            if log is not None and step % cfg.log_every == 0:
                now = time.time()
                rate = samples_since / corpus.sample_rate / max(now - t_last, 1e-9)
                t_last, samples_since = now, 0
                log.write(
                    step=step,
                    elapsed=round(elapsed, 1),
                    loss=out.loss.item(),
                    recon_loss=last_loss,
                    vq_loss=out.vq_loss.item(),
                    pitch_loss=out.pitch_loss.item(),
                    perplexity=out.perplexity.item(),
                    usage=out.usage.item(),
                    grad_norm=grad_norm.item(),
                    lr=lr_at(step, cfg),
                    audio_s_per_s=round(rate, 3),
                )
            if dist.main and cfg.valid_every and step % cfg.valid_every == 0:
                metrics = validate(model, corpus, speakers, cfg, device, dtype)
                log.write(step=step, elapsed=round(elapsed, 1), **metrics)
                if bar is not None:
                    bar.write(
                        f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                    )
            stopping = flag.stop or (stop_after is not None and step - start_step >= stop_after)
            if dist.main and (step % cfg.checkpoint_every == 0 or stopping):
                save_checkpoint(ckpt_path, model, optimizer, step, cfg, {"elapsed": elapsed})
            if dist.main and cfg.export_every and step % cfg.export_every == 0:
                _export(model, run_dir, corpus, step, elapsed, cfg)
            if stopping:
                interrupted = step < cfg.max_steps
                break
    if bar is not None:
        bar.close()
    model_path = run_dir / "model.safetensors"
    if dist.main:
        if not interrupted:
            save_checkpoint(ckpt_path, model, optimizer, step, cfg, {"elapsed": elapsed})
        _export(model, run_dir, corpus, step, elapsed, cfg)
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, step, model_path, last_loss, elapsed, interrupted)


def _export(model, run_dir: Path, corpus: PreparedCorpus, step: int, elapsed: float, cfg) -> None:
    """Write the run's model file; steps and hours count any model it started from."""
    extra = {"initialized_from": cfg.init_from} if cfg.init_from else {}
    model.save(
        run_dir / "model.safetensors",
        training_steps=str(cfg.base_steps + step),
        training_hours=f"{cfg.base_hours + elapsed / 3600:.2f}",
        trained_on=str(corpus.path),
        **extra,
    )
    model.train()


class CsvLog:
    """Appends rows to a CSV a user can plot; new columns start a new header line."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **row: Any) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["key", "value", "step"])
            step = row.get("step")
            for k, v in row.items():
                if k != "step":
                    w.writerow([k, v, step])
