"""`speechvq evaluate`: reconstruction and conversion quality beside classic codecs.

`evaluate(model, items, options)` runs every file through the model (and each
baseline codec), aligns the output to its reference, scores it with
`speechvq.evaluation.metrics`, and returns a typed `EvaluationReport`;
`speechvq.evaluation.report.write_report` turns that into results.json,
results.md and PNG figures (see docs/evaluate.md). This module holds the
options and the run; the result dataclasses are in `results`, the files to
evaluate come from `speechvq.data.discovery.find_recordings`.
A metric whose optional package is missing is skipped with the reason, and so
is a codec whose binary is missing: neither stops the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechvq.audio.io import load_audio
from speechvq.codec.pitch_track import encode_track
from speechvq.config import COMPRESS_ADAPT_STEPS, REFERENCE_ADAPT_STEPS
from speechvq.data.discovery import Recording
from speechvq.errors import SpeechVQError
from speechvq.evaluation import metrics as M
from speechvq.evaluation.baselines import DEFAULT_BASELINES, Baseline, parse_baselines
from speechvq.evaluation.results import (
    MODEL_SYSTEM,
    PITCH_SYSTEM,
    REFERENCE_SYSTEM,
    SEARCH_SYSTEM,
    ConversionResult,
    EvaluationReport,
    Example,
    SystemResult,
)
from speechvq.inference.code_search import SearchConfig, search_codes
from speechvq.inference.compression import (
    header_voice,
    pack_voice,
    pitch_symbols,
    pitch_track_f0,
    unpack_voice,
)
from speechvq.models.voice import Voice

# What `--metrics` selects: group name -> the metrics it yields.
METRIC_GROUPS = {
    "stoi": ("stoi",),
    "pesq": ("pesq",),
    "mel": ("mel_distance",),
    "speaker": ("speaker_sim",),
    "dnsmos": ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"),
    "f0": ("f0_match", "voicing"),
}


# A one-shot conversion target's voice is measured on its first files, at least this long
# in all (the "3-10 s of reference"); the rest judge the conversions.
REFERENCE_SECONDS = 3.0


@dataclass(frozen=True)
class EvaluationOptions:
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    convert_to: tuple[str, ...] = ()  # target speakers for voice conversion
    metrics: tuple[str, ...] = tuple(METRIC_GROUPS)  # groups to compute (DNSMOS is the slow one)
    sample_rate: int = 16000  # scoring rate when no model is given (else the model's)
    seed: int = 0  # the decoder's sampling seed, for a repeatable report
    examples: int = 3  # files kept in memory for the spectrogram figures
    progress: bool = True
    # Steps of tuning each file's own voice vector on it, as `compress --adapt` does, and
    # each one-shot target's on its reference, as `convert --adapt` (`adapt_voice`).
    adapt_steps: int = COMPRESS_ADAPT_STEPS
    target_adapt_steps: int = REFERENCE_ADAPT_STEPS
    # Decode a file of a speaker the model knows by that name (the stored vector and F0
    # level, as `decompress --speaker NAME`) rather than in the voice measured from it.
    by_name: bool = False
    # Also score the codes searched by synthesis (`compress --search`) as its own system,
    # "speechvq+search"; None: not.
    search: SearchConfig | None = None

    def __post_init__(self) -> None:
        # Refuse bad names here, before a model loads or a file is decoded.
        unknown = set(self.metrics) - set(METRIC_GROUPS)
        if unknown:
            raise SpeechVQError(
                f"unknown metric {sorted(unknown)[0]!r}; choose from {', '.join(METRIC_GROUPS)}"
            )
        parse_baselines(self.baselines)


def evaluate(
    model: Any | None,
    items: list[Recording],
    options: EvaluationOptions,
    references: list[Recording] = (),
    wav_targets: list[Recording] = (),
) -> EvaluationReport:
    """Score `model` (a `SpeechVQ`, or None for baselines only) and the baselines on `items`.

    `references` are extra recordings of the conversion targets (e.g. their
    training utterances), used only for the target speakers' centroids: they
    are neither converted nor scored. `wav_targets` are recordings of voices
    to convert to one-shot (a model with a speaker encoder), grouped by their
    `speaker`: each target's first files, `REFERENCE_SECONDS` or more, are the
    reference its voice is measured on, and its other files (all of them if
    it has no other) make the centroid its conversions are judged against.
    """
    from tqdm import tqdm

    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SpeechVQError(f"two files share the id {dup!r}; ids must be unique")
    if (options.convert_to or wav_targets) and model is None:
        raise SpeechVQError("voice conversion (--convert-to) needs a model")
    run = _Run(model, options)
    extra = run.add_wav_targets(wav_targets)
    if model is not None:
        _check_targets(model, options.convert_to)
        _note_speakers(model, items, run.report, options.by_name)
    for item in tqdm(items, desc="evaluate", unit="file", disable=not options.progress):
        run.score(item)
    if run.entropy_bps:
        run.report.system(MODEL_SYSTEM).entropy_bitrate = float(np.mean(run.entropy_bps))
    track = float(np.mean(run.track_bps)) if run.track_bps else 0.0
    if run.track_bps:  # the track is always range-coded: its measured rate is added
        pitch = run.report.system(PITCH_SYSTEM)
        pitch.bitrate = float(model.config.nominal_bitrate) + track
        if run.entropy_bps:
            pitch.entropy_bitrate = float(np.mean(run.entropy_bps)) + track
    if options.search is not None and model is not None:
        searched = run.report.system(SEARCH_SYSTEM)
        searched.bitrate = float(model.config.nominal_bitrate) + track
        if run.search_bps:
            searched.entropy_bitrate = float(np.mean(run.search_bps)) + track
    run.report.conversions = run.conversion_results(references, extra)
    return run.report


class _Run:
    """One evaluation in progress: the systems, the scorer, what has been measured so far."""

    def __init__(self, model: Any | None, options: EvaluationOptions):
        self.model, self.options = model, options
        self.sr = sr = model.sample_rate if model is not None else options.sample_rate
        self.report = EvaluationReport(sample_rate=sr, items=[], systems=[])
        self.report.systems.append(SystemResult(REFERENCE_SYSTEM, None))
        if model is not None:
            bitrate = float(model.config.nominal_bitrate)
            self.report.systems.append(SystemResult(MODEL_SYSTEM, bitrate))
            if model.pitch is not None:
                self.report.systems.append(SystemResult(PITCH_SYSTEM, bitrate))
            if options.search is not None:
                self.report.systems.append(SystemResult(SEARCH_SYSTEM, bitrate))
        self.baselines: list[Baseline] = []  # those whose tools are installed
        for b in parse_baselines(options.baselines):
            reason = b.missing()
            self.report.systems.append(SystemResult(b.name, b.bitrate, skipped=reason))
            if reason is None:
                self.baselines.append(b)
        enabled = {m for g in options.metrics for m in METRIC_GROUPS[g]}
        self.scorer = _Scorer(sr, enabled, self.report.skipped_metrics)
        self.embeddings: dict[str, np.ndarray] = {}  # item id -> reference embedding
        self.converted: list[tuple[Recording, str, np.ndarray, float]] = []
        self.entropy_bps: list[float] = []
        self.search_bps: list[float] = []  # the searched codes' ideal bit/s under the prior
        self.track_bps: list[float] = []  # the range-coded pitch track's bit/s, per file
        # target label -> what `convert` takes: a speaker's name or a measured `Voice`
        self.targets: dict[str, Any] = {t: t for t in options.convert_to}

    def add_wav_targets(self, recordings: list[Recording]) -> dict[str, list[np.ndarray]]:
        """Measure the voice of each one-shot target; returns their centroid embeddings."""
        by_target: dict[str, list[Recording]] = {}
        for r in recordings:
            by_target.setdefault(r.speaker or r.id, []).append(r)
        centroids: dict[str, list[np.ndarray]] = {}
        for target, recs in by_target.items():
            waves = [load_audio(r.path, self.sr)[0] for r in recs]
            n, seconds = 0, 0.0
            while n < len(waves) and (n == 0 or seconds < REFERENCE_SECONDS):
                seconds += len(waves[n]) / self.sr
                n += 1
            try:
                self.targets[target] = self.model.voice(
                    [(w, self.sr) for w in waves[:n]], adapt_steps=self.options.target_adapt_steps
                )
            except SpeechVQError as exc:
                raise SpeechVQError(f"conversion target {target}: {exc}") from None
            judge = waves[n:] or waves
            embs = [
                self.scorer.call(("speaker_sim",), M.speaker_embedding, w, self.sr) for w in judge
            ]
            centroids[target] = [e for e in embs if e is not None]
            self.report.notes.append(
                f"one-shot target {target}: voice from {n} file(s), {seconds:.1f} s; judged "
                f"against {len(judge)} {'other ' if waves[n:] else ''}file(s)"
            )
        return centroids

    def score(self, item: Recording) -> None:
        """Reconstruct one file with every system, score it, and convert it to the targets."""
        sr, scorer, report, model = self.sr, self.scorer, self.report, self.model
        try:
            ref, _ = load_audio(item.path, sr)
        except SpeechVQError as exc:  # one unreadable file costs that file, not the run
            report.notes.append(f"skipped {item.id}: {exc}")
            return
        report.items.append(item)
        ref_f0 = scorer.call(("f0_match", "voicing"), M.reference_f0, ref, sr)
        self.embeddings[item.id] = scorer.call(("speaker_sim",), M.speaker_embedding, ref, sr)
        report.system(REFERENCE_SYSTEM).scores[item.id] = scorer.dnsmos_only(ref)
        example = {REFERENCE_SYSTEM: ref}
        for name, out in self._outputs(item, ref).items():
            aligned = M.align(ref, out, sr)
            system = report.system(name)
            system.scores[item.id], bands = scorer.score(aligned, ref_f0, self.embeddings[item.id])
            if bands is not None:
                system.stoi_bands[item.id] = bands
            example[name] = aligned.test
        if len(report.examples) < self.options.examples:
            report.examples.append(Example(item.id, example))
        for target, voice in self.targets.items():
            if target != item.speaker:  # converting to one's own voice is reconstruction
                wave = model.convert(ref, sr, voice, seed=self.options.seed)
                emb = scorer.call(("speaker_sim",), M.speaker_embedding, wave, sr)
                ovrl = scorer.dnsmos_only(wave).get("dnsmos_ovrl", math.nan)
                self.converted.append((item, target, emb, ovrl))

    def _outputs(self, item: Recording, ref: np.ndarray) -> dict[str, np.ndarray]:
        """Each system's reconstruction of `ref` (a failed baseline is a note)."""
        outputs: dict[str, np.ndarray] = {}
        model = self.model
        if model is not None:
            latents = None  # [D, F], kept for the search so that the encoder runs once
            if self.options.search is not None:
                latents = model.latents(ref, self.sr)
                codes = model.quantize(latents)
            else:
                codes = model.encode(ref, self.sr)
            # The input's F0, tracked once for the pitch track and the voice's level.
            track_f0 = model.input_f0(ref, self.sr, codes.size) if model.pitch is not None else None
            speaker = _decode_speaker(
                model, item, ref, self.sr, track_f0, self.options.adapt_steps, self.options.by_name
            )
            if isinstance(speaker, Voice):  # as `compress` stores it: 8-bit in the header
                speaker = unpack_voice(pack_voice(speaker))
            outputs[MODEL_SYSTEM] = model.decode(codes, speaker, seed=self.options.seed)
            f0 = None
            if track_f0 is not None:  # as `decompress` decodes a file with its pitch track
                symbols = pitch_symbols(model, track_f0)
                f0 = pitch_track_f0(model, symbols, codes.size)
                outputs[PITCH_SYSTEM] = model.decode(codes, speaker, seed=self.options.seed, f0=f0)
                self.track_bps.append(8 * len(encode_track(symbols)) / (len(ref) / self.sr))
            seconds = len(ref) / self.sr
            bits = _prior_bits(model, codes, item)
            if bits is not None:
                self.entropy_bps.append(bits / seconds)
            if self.options.search is not None:  # as `compress --search` writes
                found = search_codes(
                    model,
                    ref,
                    self.sr,
                    speaker,
                    f0,
                    self.options.search,
                    latents=latents,
                    prior_speaker=_prior_speaker(model, item),
                )
                outputs[SEARCH_SYSTEM] = model.decode(
                    found.codes, speaker, seed=self.options.seed, f0=f0
                )
                bits = _prior_bits(model, found.codes, item)
                if bits is not None:
                    self.search_bps.append(bits / seconds)
        for b in self.baselines:
            try:
                outputs[b.name] = b.roundtrip(ref, self.sr)
            except SpeechVQError as exc:
                self.report.notes.append(f"{item.id}: {exc}")
        return outputs

    def conversion_results(
        self, references: list[Recording], extra: dict[str, list[np.ndarray]]
    ) -> list[ConversionResult]:
        """The conversions, scored against centroids that `references` (and the one-shot
        targets' own recordings, `extra`) add to."""
        for ref_item in [r for r in references if r.speaker in self.options.convert_to]:
            wave, _ = load_audio(ref_item.path, self.sr)
            emb = self.scorer.call(("speaker_sim",), M.speaker_embedding, wave, self.sr)
            if emb is not None:
                extra.setdefault(ref_item.speaker, []).append(emb)
        return _conversion_results(
            self.converted, self.embeddings, tuple(self.targets), self.report, extra
        )


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

    def score(self, a: M.Alignment, ref_f0, ref_emb) -> tuple[dict[str, float], np.ndarray | None]:
        """The metrics of one aligned output, and its STOI per band `[15]` (None: no STOI)."""
        sr, ref, test = self.sr, a.reference, a.test
        out: dict[str, float] = {"lag_ms": 1000.0 * a.lag / sr}
        bands = self.call(("stoi",), M.stoi_bands, ref, test, sr)
        if bands is not None:
            out["stoi"] = bands.stoi
        for name, fn in (("pesq", M.pesq_wb), ("mel_distance", M.mel_distance)):
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
        return out, None if bands is None else bands.values


def _conversion_results(
    converted, embeddings, targets: tuple[str, ...], report, extra: dict[str, list[np.ndarray]]
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
    centroids = {s: np.mean(e, axis=0) for s, e in by_speaker.items() if e}
    for t in targets:
        if t not in centroids:
            report.notes.append(
                f"conversion to {t}: no reference utterance of {t} among the inputs; "
                "its centroid similarity and identification are skipped"
            )
    known = [t for t in targets if t in centroids]
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

    row = speaker_index(prior, _prior_speaker(model, item))
    device = next(prior.parameters()).device
    with torch.inference_mode():
        nats = prior.nll(
            torch.from_numpy(codes)[None].to(device), torch.tensor([row], device=device)
        )
    return float(nats) * len(codes) / math.log(2)


def _prior_speaker(model, item: Recording) -> int | None:
    """The speaker index the prior is conditioned on for `item`: its own if the model
    knows it, else None (the prior's "unknown speaker" row)."""
    return model.speaker_id(item.speaker) if item.speaker in model.speakers else None


def _decode_speaker(
    model,
    item: Recording,
    ref: np.ndarray,
    sr: int,
    f0: np.ndarray | None = None,
    adapt_steps: int = COMPRESS_ADAPT_STEPS,
    by_name: bool = False,
) -> Any:
    """The voice a codec user gets: with a speaker encoder, the recording's own (what
    `compress` keeps of it, tuned `adapt_steps` on it; `f0`, its `input_f0` if tracked
    already); else its speaker's name, or the model's first speaker. `by_name`: a
    speaker the model knows by its name even with a speaker encoder."""
    if by_name and item.speaker in model.speakers:
        return item.speaker
    if model.speaker_encoder is not None:
        try:  # as the header keeps it
            return header_voice(model, ref, sr, None if f0 is None else [f0], adapt_steps)
        except SpeechVQError:  # too short or too little voiced speech: a name after all
            pass
    if item.speaker in model.speakers:
        return item.speaker
    return model.speakers[0] if model.speakers else 0


def _note_speakers(
    model, items: list[Recording], report: EvaluationReport, by_name: bool = False
) -> None:
    known = sum(1 for i in items if i.speaker in model.speakers)
    if by_name and known:
        report.notes.append(f"{known} of {len(items)} files are decoded by their speaker's name")
    if model.speaker_encoder is not None:
        if not by_name:
            report.notes.append(
                "each file is decoded in its own voice, measured by the speaker encoder"
            )
        elif known < len(items):
            report.notes.append(
                "each file of a speaker not given by name is decoded in its own voice, "
                "measured by the speaker encoder"
            )
        return
    if known < len(items):
        first = model.speakers[0] if model.speakers else "speaker 0"
        report.notes.append(
            f"{len(items) - known} of {len(items)} files are of speakers the model does not "
            f"know: decoded as {first}"
        )


def _check_targets(model, targets: tuple[str, ...]) -> None:
    for t in targets:
        model.speaker_id(t)  # raises SpeechVQError naming the known speakers


def _speaker_key(item: Recording) -> str:
    return item.speaker if item.speaker is not None else f"<{item.id}>"
