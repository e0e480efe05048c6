"""`speechvq evaluate`: reconstruction and conversion quality beside classic codecs.

`evaluate(model, items, options)` runs every file through the model (and each
baseline codec), aligns the output to its reference, scores it with
`speechvq.evaluation.metrics`, and returns a typed `EvaluationReport`;
`speechvq.evaluation_report.write_report` turns that into results.json,
results.md and PNG figures (see docs/evaluate.md). This module holds the
items (`speechvq.discovery.find_recordings`), the options, the run and the result dataclasses.
A metric whose optional package is missing is skipped with the reason, and so
is a codec whose binary is missing: neither stops the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechvq.audio.io import load_audio
from speechvq.data.discovery import Recording
from speechvq.errors import SpeechVQError
from speechvq.evaluation import metrics as M
from speechvq.evaluation.baselines import DEFAULT_BASELINES, Baseline, parse_baselines
from speechvq.files import jsonable

# Column order of the per-file metrics; "dnsmos_*" are non-intrusive (no reference).
METRICS = (
    "stoi",
    "pesq",
    "mel_distance",
    "speaker_sim",
    "dnsmos_ovrl",
    "dnsmos_sig",
    "dnsmos_bak",
    "f0_match",
    "voicing",
)
# What `--metrics` selects: group name -> the metrics it yields.
METRIC_GROUPS = {
    "stoi": ("stoi",),
    "pesq": ("pesq",),
    "mel": ("mel_distance",),
    "speaker": ("speaker_sim",),
    "dnsmos": ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"),
    "f0": ("f0_match", "voicing"),
}
MODEL_SYSTEM = "speechvq"
REFERENCE_SYSTEM = "reference"


@dataclass(frozen=True)
class EvaluationOptions:
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    convert_to: tuple[str, ...] = ()  # target speakers for voice conversion
    metrics: tuple[str, ...] = tuple(METRIC_GROUPS)  # groups to compute (DNSMOS is the slow one)
    sample_rate: int = 16000  # scoring rate when no model is given (else the model's)
    seed: int = 0  # the decoder's sampling seed, for a repeatable report
    examples: int = 3  # files kept in memory for the spectrogram figures
    progress: bool = True

    def __post_init__(self) -> None:
        # Refuse bad names here, before a model loads or a file is decoded.
        unknown = set(self.metrics) - set(METRIC_GROUPS)
        if unknown:
            raise SpeechVQError(
                f"unknown metric {sorted(unknown)[0]!r}; choose from {', '.join(METRIC_GROUPS)}"
            )
        parse_baselines(self.baselines)


@dataclass
class SystemResult:
    """One system (reference, speechvq or a baseline): per-file scores and their summary."""

    name: str
    bitrate: float | None  # nominal bit/s
    entropy_bitrate: float | None = None  # mean bit/s of ideal coding under the model's prior
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # item id -> metric -> value
    skipped: str | None = None  # why the system did not run

    def summary(self) -> dict[str, dict[str, float]]:
        """metric -> {mean, std, n} over the files where it is defined."""
        out = {}
        for m in (*METRICS, "lag_ms"):
            vals = np.array([s[m] for s in self.scores.values() if m in s], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                out[m] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
        return out


@dataclass(frozen=True)
class ConversionResult:
    """One converted utterance; similarities are cosines of resemblyzer embeddings."""

    item_id: str
    source: str
    target: str
    sim_target: float  # to the target speaker's centroid (NaN: no centroid)
    sim_source: float  # to the source speaker's centroid
    identified: bool | None  # nearest centroid among the targets' is the target's
    dnsmos_ovrl: float


@dataclass(frozen=True)
class Example:
    """Waveforms of one file for the figures, all aligned to the reference `[T]`."""

    item_id: str
    waves: dict[str, np.ndarray]


@dataclass
class EvaluationReport:
    """Everything `evaluate` measured; `to_dict` is results.json, `markdown` results.md."""

    sample_rate: int
    items: list[Recording]
    systems: list[SystemResult]
    conversions: list[ConversionResult] = field(default_factory=list)
    skipped_metrics: dict[str, str] = field(default_factory=dict)  # metric -> reason
    notes: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)  # not written to JSON

    def system(self, name: str) -> SystemResult:
        return next(s for s in self.systems if s.name == name)

    def conversion_summary(self) -> list[dict[str, Any]]:
        """Per target: mean and std of both similarities, identification accuracy."""
        rows = []
        for target in dict.fromkeys(c.target for c in self.conversions):
            cs = [c for c in self.conversions if c.target == target]
            row: dict[str, Any] = {"target": target, "n": len(cs)}
            for key in ("sim_target", "sim_source", "dnsmos_ovrl"):
                v = np.array([getattr(c, key) for c in cs], dtype=np.float64)
                v = v[np.isfinite(v)]
                row[key] = _stats(v)
            ids = [c.identified for c in cs if c.identified is not None]
            row["accuracy"] = float(np.mean(ids)) if ids else None
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "sample_rate": self.sample_rate,
                "files": [
                    {"id": i.id, "path": str(i.path), "speaker": i.speaker} for i in self.items
                ],
                "systems": [
                    {
                        "name": s.name,
                        "bitrate": s.bitrate,
                        "entropy_bitrate": s.entropy_bitrate,
                        "skipped": s.skipped,
                        "summary": s.summary(),
                        "per_file": s.scores,
                    }
                    for s in self.systems
                ],
                "conversion": {
                    "summary": self.conversion_summary(),
                    "per_file": [dataclasses.asdict(c) for c in self.conversions],
                },
                "skipped_metrics": self.skipped_metrics,
                "notes": self.notes,
            }
        )


def evaluate(
    model: Any | None,
    items: list[Recording],
    options: EvaluationOptions,
    references: list[Recording] = (),
) -> EvaluationReport:
    """Score `model` (a `SpeechVQ`, or None for baselines only) and the baselines on `items`.

    `references` are extra recordings of the conversion targets (e.g. their
    training utterances), used only for the target speakers' centroids: they
    are neither converted nor scored.
    """
    from tqdm import tqdm

    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SpeechVQError(f"two files share the id {dup!r}; ids must be unique")
    if options.convert_to and model is None:
        raise SpeechVQError("voice conversion (--convert-to) needs a model")
    sr = model.sample_rate if model is not None else options.sample_rate
    baselines = parse_baselines(options.baselines)
    report = EvaluationReport(sample_rate=sr, items=[], systems=[])
    report.systems.append(SystemResult(REFERENCE_SYSTEM, None))
    if model is not None:
        report.systems.append(SystemResult(MODEL_SYSTEM, float(model.config.nominal_bitrate)))
        _check_targets(model, options.convert_to)
        _note_speakers(model, items, report)
    runnable: list[Baseline] = []
    for b in baselines:
        reason = b.missing()
        report.systems.append(SystemResult(b.name, b.bitrate, skipped=reason))
        if reason is None:
            runnable.append(b)
    enabled = {m for g in options.metrics for m in METRIC_GROUPS[g]}
    scorer = _Scorer(sr, enabled, report.skipped_metrics)
    embeddings: dict[str, np.ndarray] = {}  # item id -> reference embedding
    converted: list[tuple[Recording, str, np.ndarray, float]] = []
    entropy_bps: list[float] = []
    for item in tqdm(items, desc="evaluate", unit="file", disable=not options.progress):
        try:
            ref, _ = load_audio(item.path, sr)
        except SpeechVQError as exc:  # one unreadable file costs that file, not the run
            report.notes.append(f"skipped {item.id}: {exc}")
            continue
        report.items.append(item)
        ref_f0 = scorer.call(("f0_match", "voicing"), M.reference_f0, ref, sr)
        embeddings[item.id] = scorer.call(("speaker_sim",), M.speaker_embedding, ref, sr)
        report.system(REFERENCE_SYSTEM).scores[item.id] = scorer.dnsmos_only(ref)
        outputs: dict[str, np.ndarray] = {}
        if model is not None:
            codes = model.encode(ref, sr)
            outputs[MODEL_SYSTEM] = model.decode(
                codes, _decode_speaker(model, item), seed=options.seed
            )
            bits = _prior_bits(model, codes, item)
            if bits is not None:
                entropy_bps.append(bits / (len(ref) / sr))
        for b in runnable:
            try:
                outputs[b.name] = b.roundtrip(ref, sr)
            except SpeechVQError as exc:
                report.notes.append(f"{item.id}: {exc}")
        example = {REFERENCE_SYSTEM: ref}
        for name, out in outputs.items():
            aligned = M.align(ref, out, sr)
            scores = scorer.score(aligned, ref_f0, embeddings[item.id])
            report.system(name).scores[item.id] = scores
            example[name] = aligned.test
        if len(report.examples) < options.examples:
            report.examples.append(Example(item.id, example))
        for target in options.convert_to:
            if target != item.speaker:  # converting to one's own voice is reconstruction
                wave = model.convert(ref, sr, target, seed=options.seed)
                emb = scorer.call(("speaker_sim",), M.speaker_embedding, wave, sr)
                ovrl = scorer.dnsmos_only(wave).get("dnsmos_ovrl", math.nan)
                converted.append((item, target, emb, ovrl))
    if entropy_bps:
        report.system(MODEL_SYSTEM).entropy_bitrate = float(np.mean(entropy_bps))
    extra: dict[str, list[np.ndarray]] = {}
    for ref_item in [r for r in references if r.speaker in options.convert_to]:
        wave, _ = load_audio(ref_item.path, sr)
        emb = scorer.call(("speaker_sim",), M.speaker_embedding, wave, sr)
        if emb is not None:
            extra.setdefault(ref_item.speaker, []).append(emb)
    report.conversions = _conversion_results(converted, embeddings, options, report, extra)
    return report


class _Scorer:
    """Calls metric functions; an ImportError marks those metrics skipped for the run."""

    def __init__(self, sample_rate: int, enabled: set[str], skipped: dict[str, str]):
        self.sr = sample_rate
        self.enabled = enabled
        self.skipped = skipped

    def call(self, names: tuple[str, ...], fn, *args):
        if any(n in self.skipped or n not in self.enabled for n in names):
            return None
        try:
            return fn(*args)
        except ImportError as exc:
            reason = f"{exc.name or exc} is not installed (pip install 'speechvq[eval]')"
            self.skipped.update(dict.fromkeys(names, reason))
            return None

    def dnsmos_only(self, wave: np.ndarray) -> dict[str, float]:
        d = self.call(("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"), M.dnsmos, wave, self.sr)
        return (
            {} if d is None else {"dnsmos_ovrl": d.ovrl, "dnsmos_sig": d.sig, "dnsmos_bak": d.bak}
        )

    def score(self, a: M.Alignment, ref_f0, ref_emb) -> dict[str, float]:
        sr, ref, test = self.sr, a.reference, a.test
        out: dict[str, float] = {"lag_ms": 1000.0 * a.lag / sr}
        for name, fn in (("stoi", M.stoi), ("pesq", M.pesq_wb), ("mel_distance", M.mel_distance)):
            value = self.call((name,), fn, ref, test, sr)
            if value is not None:
                out[name] = value
        emb = self.call(("speaker_sim",), M.speaker_embedding, test, sr)
        if emb is not None and ref_emb is not None:
            out["speaker_sim"] = M.cosine(ref_emb, emb)
        out.update(self.dnsmos_only(test))
        if ref_f0 is not None:
            # The reference's F0 frames stay valid when only its end was cropped (lag >= 0).
            hop = max(1, round(M.F0_HOP_S * sr))
            cached = ref_f0[: len(ref) // hop] if a.lag >= 0 else None
            f0 = self.call(("f0_match", "voicing"), M.f0_scores, ref, test, sr, cached)
            if f0 is not None:
                out.update(f0_match=f0.f0_match, voicing=f0.voicing)
        return out


def _conversion_results(
    converted, embeddings, options, report, extra: dict[str, list[np.ndarray]]
) -> list[ConversionResult]:
    """Centroids (mean reference embedding per speaker, inputs and `extra` references),
    then similarities and identification."""
    if not converted:
        return []
    by_speaker: dict[str, list[np.ndarray]] = {}
    for item in report.items:
        emb = embeddings.get(item.id)
        if emb is not None and np.isfinite(emb).all():
            by_speaker.setdefault(_speaker_key(item), []).append(emb)
    for speaker, embs in extra.items():
        by_speaker.setdefault(speaker, []).extend(e for e in embs if np.isfinite(e).all())
    centroids = {s: np.mean(e, axis=0) for s, e in by_speaker.items()}
    for t in options.convert_to:
        if t not in centroids:
            report.notes.append(
                f"conversion to {t}: no reference utterance of {t} among the inputs; "
                "its centroid similarity and identification are skipped"
            )
    known = [t for t in options.convert_to if t in centroids]
    results = []
    for item, target, emb, ovrl in converted:
        ok = emb is not None and np.isfinite(emb).all()
        src = centroids.get(_speaker_key(item))
        sim_t = M.cosine(emb, centroids[target]) if ok and target in centroids else math.nan
        sim_s = M.cosine(emb, src) if ok and src is not None else math.nan
        identified = None
        if ok and target in centroids:
            sims = [M.cosine(emb, centroids[k]) for k in known]
            identified = known[int(np.argmax(sims))] == target
        results.append(
            ConversionResult(item.id, item.speaker or "?", target, sim_t, sim_s, identified, ovrl)
        )
    if len(known) < 2 and converted:
        report.notes.append("identification accuracy is trivial with fewer than 2 target centroids")
    return results


def _prior_bits(model, codes: np.ndarray, item: Recording) -> float | None:
    """Ideal code length in bits of `codes` under the model's prior; None without a prior.

    One teacher-forced pass (`Prior.nll`) rather than the range coder's
    step-by-step path: the same probabilities up to float rounding, far faster,
    and a range coder lands within a few bytes of it (see speechvq.codec.entropy).
    A speaker the model does not know uses the prior's "unknown speaker" row.
    """
    prior = model.prior
    if prior is None:
        return None
    import torch

    from speechvq.models.prior import speaker_index

    known = item.speaker in model.speakers
    row = speaker_index(prior, model.speaker_id(item.speaker) if known else None)
    device = next(prior.parameters()).device
    with torch.inference_mode():
        nats = prior.nll(
            torch.from_numpy(codes)[None].to(device), torch.tensor([row], device=device)
        )
    return float(nats) * len(codes) / math.log(2)


def _decode_speaker(model, item: Recording) -> str | int:
    if item.speaker in model.speakers:
        return item.speaker
    return model.speakers[0] if model.speakers else 0


def _note_speakers(model, items: list[Recording], report: EvaluationReport) -> None:
    unknown = sum(1 for i in items if i.speaker not in model.speakers)
    if unknown:
        first = model.speakers[0] if model.speakers else "speaker 0"
        report.notes.append(
            f"{unknown} of {len(items)} files are of speakers the model does not know: "
            f"decoded as {first}"
        )


def _check_targets(model, targets: tuple[str, ...]) -> None:
    for t in targets:
        model.speaker_id(t)  # raises SpeechVQError naming the known speakers


def _speaker_key(item: Recording) -> str:
    return item.speaker if item.speaker is not None else f"<{item.id}>"


def _stats(v: np.ndarray) -> dict[str, float] | None:
    if not v.size:
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
