"""Training the WaveNet prior over a trained VQ-VAE's codes (VQ-VAE §4.3).

1. `extract_codes` encodes every utterance of the prepared corpus once with
   the VQ-VAE's encoder (or, with `search_steps`, as `compress` would send it:
   searched by synthesis) and caches the codes in `RUN_DIR/codes.npz`, keyed
   by the VQ-VAE's hash (`models.modelfile.model_hash`) and the search: another
   model, another search or another corpus invalidates the cache.
2. `train_prior` fits the prior in the loop every trainer shares
   (`speechvq.training.loop`), supplying only `PriorTask`: data order a pure
   function of (seed, step, rank), so a resumed run ends with the same
   weights; atomic checkpoints every N steps and on Ctrl-C/SIGTERM; bf16
   autocast where it pays; DDP under torchrun; a CSV log and a progress bar.
3. Each validation, and the end, writes `RUN_DIR/model.safetensors`: the
   VQ-VAE with the prior inside (`speechvq.load` brings it along as
   `model.prior`) and its held-out bits per code in the metadata.

Training data: the utterances of the train split, concatenated into one
stream in which each utterance starts with the start token, so a random crop
is all real targets, with no padding (the packing of language-model training).
Each position is conditioned on its own utterance's speaker. Validation, by
contrast, scores every held-out utterance alone from an empty history, which
is exactly what the entropy coder pays per file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from speechvq.data.corpus import SPLITS, PreparedCorpus
from speechvq.errors import SpeechVQError
from speechvq.models.prior import Prior, PriorConfig, bits_per_code
from speechvq.training import loop
from speechvq.training.config import config_from_yaml, merge
from speechvq.training.distributed import Distributed
from speechvq.training.loop import open_run

CACHE_FORMAT = "speechvq-codes-v1"


@dataclass(frozen=True)
class PriorTrainConfig:
    preset: str = "small"  # PriorConfig preset
    prior: dict[str, Any] = field(default_factory=dict)  # overrides of PriorConfig fields
    speaker_conditioned: bool = True
    speaker_dropout: float = 0.2  # share of crops trained as "speaker unknown"
    batch_size: int = 8
    crop_codes: int = 1024  # 4.1 s at 250 frames/s
    lr: float = 1e-3
    warmup_steps: int = 100
    grad_clip: float = 1.0
    max_steps: int = 1000
    log_every: int = 10
    valid_every: int = 250  # also exports model.safetensors
    valid_max_codes: int = 0  # 0: the whole validation split
    checkpoint_every: int = 100
    export_every: int = 0  # also write model.safetensors this often (it is after each validation)
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    # The codes it learns: 0, the encoder's; N, those `compress` sends, searched N steps
    # by synthesis with each utterance's own voice and pitch track (`sender_codes`),
    # which the encoder's codes' prior predicts less well (issue 17). About 3 s of one
    # CPU thread per second of audio at 30 steps; the extraction keeps its progress in
    # codes.npz.partial and goes on from it.
    search_steps: int = 0

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None, **overrides: Any) -> PriorTrainConfig:
        return config_from_yaml(cls, path, **overrides)

    def prior_config(self, codebook_size: int, speakers: int) -> PriorConfig:
        base = PriorConfig.preset(
            self.preset, codebook_size, speakers if self.speaker_conditioned else 0
        )
        return PriorConfig.from_dict(merge(base.to_dict(), self.prior))


@dataclass
class CodeSet:
    """One split's codes: utterance i is `codes[offsets[i]:offsets[i + 1]]`, int64."""

    codes: np.ndarray  # [N]
    offsets: np.ndarray  # [U + 1]
    speakers: np.ndarray  # [U] index in the VQ-VAE's speaker table, -1 if not in it
    ids: np.ndarray  # [U] utterance ids (str)

    def __len__(self) -> int:
        return len(self.ids)

    def utterance(self, i: int) -> np.ndarray:
        return self.codes[self.offsets[i] : self.offsets[i + 1]]


def vqvae_hash(model: Any) -> str:
    """`bitstream.model_hash` of the VQ-VAE alone (a prior or a packet code inside does not
    change its codes)."""
    from speechvq.models.modelfile import model_hash

    tensors = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("prior.") and k != "packet_code"
    }
    return model_hash(tensors, model.config.to_dict())


PARTIAL_EVERY = 20  # utterances between saves of a searched extraction's progress


def extract_codes(
    model: Any,
    corpus: PreparedCorpus,
    cache: Path,
    *,
    search_steps: int = 0,
    progress: bool = True,
) -> dict[str, CodeSet]:
    """The codes of every utterance of both splits, from `cache` when it fits, else encoded
    (with `search_steps`, as `compress` sends them: `PriorTrainConfig.search_steps`)."""
    if (corpus.sample_rate, corpus.hop_length) != (model.sample_rate, model.hop_length):
        raise SpeechVQError(
            f"{corpus.path}: prepared at {corpus.sample_rate} Hz, hop {corpus.hop_length};"
            f" the model wants {model.sample_rate} Hz, hop {model.hop_length}"
        )
    key = codes_key(model, search_steps)
    splits = {s: corpus.utterances(s) for s in SPLITS}
    cached = _read_cache(cache, key, {s: [u.id for u in us] for s, us in splits.items()})
    if cached is not None:
        return cached
    partial = cache.with_name(cache.name + ".partial")
    done = _read_partial(partial, key) if search_steps else {}
    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"searching codes ({search_steps} steps)" if search_steps else "extracting codes"
        bar = tqdm(total=len(corpus), initial=len(done), unit="utt", desc=desc, dynamic_ncols=True)
    fresh = 0
    try:
        for utts in splits.values():
            for u in utts:
                if u.id in done:
                    continue
                done[u.id] = _codes_of(model, corpus.audio(u), corpus.sample_rate, search_steps)
                fresh += 1
                if search_steps and fresh % PARTIAL_EVERY == 0:
                    _write_partial(partial, key, done)
                if bar is not None:
                    bar.update(1)
    finally:  # an interrupted search keeps what it found
        if search_steps and fresh % PARTIAL_EVERY:
            _write_partial(partial, key, done)
        if bar is not None:
            bar.close()
    spk = {s: i for i, s in enumerate(model.speakers)}
    out: dict[str, CodeSet] = {}
    for split, utts in splits.items():
        codes = [done[u.id] for u in utts]
        out[split] = CodeSet(
            codes=np.concatenate(codes) if codes else np.zeros(0, np.int64),
            offsets=np.concatenate([[0], np.cumsum([c.size for c in codes])]).astype(np.int64),
            speakers=np.array([spk.get(u.speaker, -1) for u in utts], dtype=np.int64),
            ids=np.array([u.id for u in utts], dtype=str),
        )
    _write_cache(cache, key, out)
    partial.unlink(missing_ok=True)
    return out


def codes_key(model: Any, search_steps: int = 0) -> str:
    """What a code cache is valid for: the VQ-VAE, and how its codes were chosen."""
    key = vqvae_hash(model)
    return f"{key}+search{search_steps}" if search_steps else key


def _codes_of(model: Any, wave: np.ndarray, sample_rate: int, search_steps: int) -> np.ndarray:
    """One utterance's codes `[F]`: the encoder's, or as `compress` sends them."""
    if not search_steps:
        return model.encode(wave, sample_rate)
    import warnings

    from speechvq.inference.code_search import default_search
    from speechvq.inference.compression import sender_codes

    search = default_search(model)  # compress's search, with the steps asked for
    if search is None:
        raise SpeechVQError(
            "search_steps needs a parallel decoder: compress does not search an "
            "autoregressive WaveNet's codes"
        )
    search = dataclasses.replace(search, steps=search_steps)
    with warnings.catch_warnings():  # a short utterance with no voice: a training voice
        warnings.simplefilter("ignore")
        sent = sender_codes(model, wave, sample_rate, search=search)
    return np.asarray(sent.codes, dtype=np.int64)


def _write_partial(path: Path, key: str, done: dict[str, np.ndarray]) -> None:
    from speechvq.files import atomic_output

    ids = list(done)
    lengths = [done[i].size for i in ids]
    arrays = {
        "format": np.array(CACHE_FORMAT),
        "model_hash": np.array(key),
        "ids": np.array(ids, dtype=str),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "codes": np.concatenate([done[i] for i in ids]).astype(np.uint16)
        if ids
        else np.zeros(0, np.uint16),
    }
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_partial(path: Path, key: str) -> dict[str, np.ndarray]:
    """The utterances a searched extraction had done, by id; empty if none or another's."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT or str(z["model_hash"]) != key:
                return {}
            ids, offsets, codes = z["ids"].tolist(), z["offsets"], z["codes"].astype(np.int64)
    except (OSError, KeyError, ValueError):
        return {}
    return {i: codes[offsets[n] : offsets[n + 1]] for n, i in enumerate(ids)}


def _write_cache(path: Path, key: str, sets: dict[str, CodeSet]) -> None:
    from speechvq.files import atomic_output

    arrays: dict[str, np.ndarray] = {"format": np.array(CACHE_FORMAT), "model_hash": np.array(key)}
    for split, s in sets.items():
        arrays.update({f"{split}.{k}": v for k, v in dataclasses.asdict(s).items()})
    arrays = {k: v.astype(np.uint16) if k.endswith(".codes") else v for k, v in arrays.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_cache(path: Path, key: str, ids: dict[str, list[str]]) -> dict[str, CodeSet] | None:
    """The cached codes, or None if absent, unreadable, of another model or of other utterances."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT or str(z["model_hash"]) != key:
                return None
            fields = ("codes", "offsets", "speakers", "ids")
            out = {split: CodeSet(*(z[f"{split}.{k}"] for k in fields)) for split in SPLITS}
    except (OSError, KeyError, ValueError):
        return None
    for split, s in out.items():
        if s.ids.tolist() != ids[split]:
            return None
        s.codes = s.codes.astype(np.int64)
    return out


class StreamSampler:
    """Random crops of the train split packed into one stream (see the module docstring)."""

    def __init__(self, codes: CodeSet, prior_cfg: PriorConfig, cfg: PriorTrainConfig):
        if codes.codes.size == 0:
            raise SpeechVQError("the corpus has no training utterances")
        self.target = codes.codes
        self.prev = np.concatenate([[0], codes.codes[:-1]])
        self.prev[codes.offsets[:-1]] = prior_cfg.codebook_size  # the start token
        unknown = prior_cfg.speakers  # the prior's "speaker unknown" row
        spk = np.where(codes.speakers < 0, unknown, codes.speakers)
        if prior_cfg.speakers == 0:
            spk = np.full_like(spk, unknown)
        self.speaker = np.repeat(spk, np.diff(codes.offsets))
        self.unknown = unknown
        self.crop = min(cfg.crop_codes, self.target.size)
        self.batch_size = cfg.batch_size
        self.dropout = cfg.speaker_dropout

    def batch(self, seed: int, step: int, rank: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([seed, step, rank])
        starts = rng.integers(0, self.target.size - self.crop + 1, size=self.batch_size)
        drop = rng.random(self.batch_size) < self.dropout
        idx = starts[:, None] + np.arange(self.crop)
        speaker = np.where(drop[:, None], self.unknown, self.speaker[idx])
        return {
            "prev": torch.from_numpy(self.prev[idx]),
            "target": torch.from_numpy(self.target[idx]),
            "speaker": torch.from_numpy(speaker),
        }


@torch.no_grad()
def validate(prior: Prior, codes: CodeSet, max_codes: int = 0) -> dict[str, float]:
    """Bits per code of whole held-out utterances, each from an empty history, in float32."""
    prior.eval()
    device = next(prior.parameters()).device
    total, n = 0.0, 0
    for i in range(len(codes)):
        if max_codes and n >= max_codes:
            break
        c = torch.from_numpy(codes.utterance(i))[None].to(device)
        s = int(codes.speakers[i])
        spk = torch.tensor([s if 0 <= s < prior.config.speakers else prior.config.speakers])
        total += float(prior.nll(c, spk.to(device))) * c.shape[1]
        n += c.shape[1]
    prior.train()
    bits = bits_per_code(total / n) if n else math.nan
    return {"valid_bits_per_code": bits, "valid_codes": n}


@dataclass
class PriorTrainResult:
    run_dir: Path
    steps: int
    model_path: Path  # the VQ-VAE with the prior inside
    valid_bits_per_code: float  # nan without a validation split
    seconds: float
    interrupted: bool
    out_of_time: bool  # stopped by `max_minutes`


def train_prior(
    corpus_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: PriorTrainConfig,
    *,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    stop_after: int | None = None,
    max_minutes: float | None = None,
) -> PriorTrainResult:
    """Train (or, with `resume`, continue) a prior over the codes of the model at `model_path`.

    As in `speechvq.training.vqvae.train`: a resumed run keeps its own config
    except `max_steps`; `stop_after` ends this call after that many steps (tests),
    `max_minutes` after that much wall-clock time.
    `init_from` (a model file or name) starts a new run from that model's prior
    instead of from scratch: to train a shipped prior on, whose run folder is
    gone. Its architecture must be the config's.
    """
    from speechvq.inference.loading import load

    dist = Distributed.setup()
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    run_dir = Path(run_dir)
    run_json = run_dir / "prior_run.json"
    corpus = PreparedCorpus(corpus_dir)
    vqvae = load(model_path, device=str(device))  # its encoder extracts the codes
    key = vqvae_hash(vqvae)
    state = open_run(run_dir, resume)
    if state is not None:
        if run_json.exists() and json.loads(run_json.read_text())["model_hash"] != key:
            raise SpeechVQError(f"{run_dir}: this run trains the prior of another model")
        cfg = PriorTrainConfig(**json.loads(state["train_config"]))
        prior_cfg = PriorConfig.from_dict(json.loads(state["model_config"]))
    else:
        K = vqvae.config.quantizer.codebook_size
        prior_cfg = cfg.prior_config(K, len(vqvae.speakers))
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)

    torch.manual_seed(cfg.seed)
    prior = Prior(prior_cfg)
    run = {"model_hash": key, "model": str(model_path)}
    if state is None and init_from is not None:  # a resumed run has its own weights
        run.update(_init_prior(prior, init_from))
    elif state is not None and run_json.exists():  # where the resumed run started
        run.update({k: v for k, v in json.loads(run_json.read_text()).items() if k in INIT_KEYS})
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        search = cfg.search_steps
        extract_codes(vqvae, corpus, run_dir / "codes.npz", search_steps=search, progress=progress)
        run_json.write_text(json.dumps(run, indent=2))
    if dist.world > 1:
        torch.distributed.barrier()
    codes = extract_codes(
        vqvae, corpus, run_dir / "codes.npz", search_steps=cfg.search_steps, progress=False
    )

    before = (int(run.get("init_steps", 0)), float(run.get("init_hours", 0.0)))
    task = PriorTask(prior.to(device).train(), vqvae, codes, cfg, run_dir, before)
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
    return PriorTrainResult(
        run_dir,
        r.steps,
        run_dir / "model.safetensors",
        task.bits,
        r.elapsed,
        r.interrupted,
        r.out_of_time,
    )


# prior_run.json's record of a run started from another model's prior (`init_from`).
INIT_KEYS = ("init_from", "init_steps", "init_hours")


def _init_prior(prior: Prior, model: str | os.PathLike) -> dict[str, Any]:
    """Copy the prior of `model` (a file or name) into `prior`; the same architecture only.
    Returns the run's record of it (`INIT_KEYS`): the source and its training so far."""
    from speechvq.inference.loading import load

    loaded = load(model)
    source = loaded.prior
    if source is None:
        raise SpeechVQError(f"{model}: has no prior to start from")
    if source.config.to_dict() != prior.config.to_dict():
        raise SpeechVQError(
            f"{model}: its prior is not the one this config trains "
            f"({source.config.to_dict()} against {prior.config.to_dict()})"
        )
    prior.load_state_dict(source.state_dict())
    meta = loaded.metadata
    return {
        "init_from": str(model),
        "init_steps": int(meta.get("prior_training_steps", 0)),
        "init_hours": float(meta.get("prior_training_hours", 0.0)),
    }


class PriorTask:
    """The prior's part of the loop (`speechvq.training.loop.Task`): code streams in,
    cross-entropy out; held-out bits per code go into the exported file."""

    throughput = "codes_per_s"

    def __init__(
        self,
        prior: Prior,
        vqvae: Any,
        codes: dict,
        cfg: PriorTrainConfig,
        run_dir,
        before: tuple[int, float] = (0, 0.0),
    ):
        self.module, self.vqvae, self.codes = prior, vqvae, codes
        self.cfg, self.run_dir = cfg, run_dir
        self.sampler = StreamSampler(codes["train"], prior.config, cfg)
        self.bits, self.valid_codes = math.nan, 0  # the last validation's
        self.before = before  # steps and hours of the prior it started from (`init_from`)

    def batch(self, step: int, rank: int) -> dict[str, torch.Tensor]:
        return self.sampler.batch(self.cfg.seed, step, rank)

    def step(self, net, batch, step: int, rank: int, autocast) -> loop.Step:
        with autocast():
            logits = net(batch["prev"], batch["speaker"])  # (B, T, K)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["target"].flatten())
        bits = bits_per_code(float(loss.detach()))
        return loop.Step(
            loss=loss,
            amount=float(batch["target"].numel()),
            postfix={"bits": f"{bits:.3f}"},
            figures=lambda: {"loss": float(loss.detach()), "bits_per_code": bits},
        )

    def validate(self, step: int, elapsed: float) -> tuple[dict[str, float], str | None]:
        metrics = validate(self.module, self.codes["valid"], self.cfg.valid_max_codes)
        self.bits, self.valid_codes = metrics["valid_bits_per_code"], metrics["valid_codes"]
        if not self.valid_codes:  # a corpus without a validation split has no figure
            return {}, None
        rate = self.bits * self.vqvae.frame_rate
        line = f"step {step}: valid {self.bits:.3f} bits/code = {rate:.0f} bit/s"
        return {**metrics, "valid_bitrate": rate}, line

    def export(self, step: int, elapsed: float) -> None:
        steps, hours = self.before
        total = (steps + step, hours * 3600 + elapsed)
        codes = f"searched {self.cfg.search_steps} steps" if self.cfg.search_steps else "encoder"
        _export(self.vqvae, self.module, self.run_dir, *total, self.bits, self.valid_codes, codes)

    def extra_state(self) -> dict:
        return {}  # the prior is all there is

    def load_extra_state(self, state: dict) -> None:
        pass


def _export(
    vqvae: Any,
    prior: Prior,
    run_dir: Path,
    step: int,
    elapsed: float,
    bits: float,
    n: int,
    codes: str = "encoder",
) -> None:
    """Write the VQ-VAE with a copy of the prior inside, keeping the VQ-VAE's own metadata;
    `step` and `elapsed` count the prior's training in all, its `init_from` start's included;
    `codes` says which codes it learnt (the encoder's, or searched)."""
    meta = inherited_metadata(vqvae, "prior_")
    meta["prior_codes"] = codes
    meta["prior_training_steps"] = str(step)
    meta["prior_training_hours"] = f"{elapsed / 3600:.2f}"
    if n:  # held-out figures, when the corpus has a validation split
        meta["prior_bits_per_code"] = f"{bits:.4f}"
        meta["prior_bitrate"] = f"{bits * vqvae.frame_rate:.1f}"
        meta["prior_valid_codes"] = str(n)
    vqvae.prior = copy.deepcopy(prior).to(next(vqvae.parameters()).device).eval()
    try:
        vqvae.save(run_dir / "model.safetensors", **meta)
    finally:
        vqvae.prior = None


def inherited_metadata(model: Any, replaced: str) -> dict[str, str]:
    """A loaded model's metadata to write again (its training figures), less the entries
    that the file format writes itself and those starting with `replaced`."""
    own = {"format", "format_version", "package_version", "config", "prior_config", "sha256"}
    return {k: v for k, v in model.metadata.items() if k not in own and not k.startswith(replaced)}
