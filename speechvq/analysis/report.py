"""`speechvq analyze-phonemes`: one model's codes against the phones of an aligned corpus.

`analyze_phonemes` encodes every aligned utterance (matched to its alignment
by path: `speechvq.data.alignments.match_alignments`), labels the code units with
phones and scores them with the metrics of `speechvq.analysis.phonemes`, beside the
same numbers for an untrained model of the same config so that a figure can
be read against chance (VQ-VAE §4.3 reports 49.3% against a 7.2% majority
baseline). It writes the typed `PhonemeReport` as report.json and report.md,
with the figures of `speechvq.analysis.plots`. The audio comes from
`speechvq.data.discovery.find_recordings`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.analysis.phonemes import (
    CodePhoneMetrics,
    LabelledUtterance,
    cooccurrence,
    label_intervals,
    many_to_one,
    pool_codes,
    score_codes,
    split_utterances,
    stack_units,
)
from speechvq.analysis.plots import plot_cooccurrence, plot_utterance
from speechvq.audio.io import load_audio
from speechvq.data.alignments import (
    PHONE_ORDER,
    Alignment,
    find_alignments,
    fold_alignment,
    match_alignments,
    read_alignment,
)
from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output, jsonable

# VQ-VAE §4.3: 128 codes at 25 Hz, 41 phonemes; 49.3% vs 7.2% majority baseline.
PAPER = {"codes": 128, "rate_hz": 25.0, "phones": 41, "accuracy": 0.493, "baseline": 0.072}


@dataclass(frozen=True)
class PhonemeOptions:
    pool: int = 1  # frames per pooled code (mode of the window); 10 gives the paper's 25 Hz
    merge_repeats: bool = False  # merge runs of one code into a unit (scores count units)
    fit_fraction: float = 0.5  # share of utterances the code->phone mapping is fit on
    seed: int = 0  # the fit/score split and the untrained model's weights
    tolerance_s: float = 0.02  # phone-boundary hit window
    random_baseline: bool = True  # also score an untrained model of the same config
    plots: bool = True
    force: bool = False  # overwrite an existing report


@dataclass(frozen=True)
class PhonemeReport:
    trained: CodePhoneMetrics
    random: CodePhoneMetrics | None  # an untrained model of the same config
    phones: tuple[str, ...]
    mapping: dict[int, str]  # trained model's code -> phone, fit on all utterances
    utterances: int
    fit_utterances: int
    test_utterances: int
    unmatched_audio: tuple[str, ...]  # audio stems with no alignment (skipped)
    codebook_size: int
    frame_rate: float
    unit_rate: float | None  # None with merge_repeats (units vary in length)
    options: PhonemeOptions
    # Share of non-silence phone segments under 20 ms: a sign of poor automatic
    # alignments (HMM aligners squeeze phones they cannot place to their minimum).
    short_phone_share: float
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mapping"] = {str(k): v for k, v in self.mapping.items()}
        d["paper"] = PAPER
        return jsonable(d)

    def summary(self) -> str:
        t, r = self.trained, self.random
        rnd = f" (untrained {_pct(r.accuracy)})" if r else ""
        return (
            f"{self.utterances} utterances, {t.units} units, {len(self.phones)} phones, "
            f"{t.codes_used} codes used: accuracy {_pct(t.accuracy)}{rnd}, "
            f"majority baseline {_pct(t.baseline)}, NMI {t.information.nmi:.3f}, "
            f"boundary F1 {t.boundaries.f1:.3f}"
        )

    def to_markdown(self) -> str:
        o, rate = self.options, self.unit_rate
        unit = f"{rate:g} Hz frames" if rate else "merged runs of one code"
        rows = [
            ("codes, unit", lambda m: f"{self.codebook_size} codes, {unit}", "128 codes, 25 Hz"),
            (
                "accuracy, code -> phone fit on other utterances",
                lambda m: _pct(m.accuracy),
                "49.3%",
            ),
            ("majority-phone baseline", lambda m: _pct(m.baseline), "7.2%"),
            ("accuracy, silence left out", lambda m: _pct(m.accuracy_speech), ""),
            ("majority baseline, silence left out", lambda m: _pct(m.baseline_speech), ""),
            ("accuracy, fit on all (= phone purity)", lambda m: _pct(m.accuracy_fit_all), ""),
            ("code purity", lambda m: _pct(m.code_purity), ""),
            ("NMI", lambda m: f"{m.information.nmi:.3f}", ""),
            ("PNMI = I(code; phone) / H(phone)", lambda m: f"{m.information.pnmi:.3f}", ""),
            ("codes used", lambda m: str(m.codes_used), ""),
            ("mean unit length", lambda m: f"{m.mean_unit_ms:.1f} ms", "40 ms"),
            ("boundary precision", lambda m: _pct(m.boundaries.precision), ""),
            ("boundary recall", lambda m: _pct(m.boundaries.recall), ""),
            ("boundary F1", lambda m: f"{m.boundaries.f1:.3f}", ""),
            ("boundary R-value", lambda m: f"{m.boundaries.r_value:.3f}", ""),
        ]
        models = [self.trained] + ([self.random] if self.random else [])
        head = "| | this model | " + ("untrained model | " if self.random else "")
        lines = [
            "# Codes against phones",
            "",
            f"{self.utterances} aligned utterances ({self.fit_utterances} to fit the "
            f"code -> phone mapping, {self.test_utterances} to score it; seed {o.seed}), "
            f"{self.trained.units} labelled units, {len(self.phones)} phones after "
            f"folding to the TIMIT 39 set. Pooling {o.pool} frame(s) of {self.frame_rate:g} Hz"
            f"{', repeats merged (scores count units)' if o.merge_repeats else ''}; "
            f"boundary tolerance {o.tolerance_s * 1000:g} ms.",
            "",
            head + "paper (VQ-VAE §4.3) |",
            "|---" * (len(models) + 2) + "|",
        ]
        for name, cell, paper in rows:
            lines.append(f"| {name} | " + " | ".join(cell(m) for m in models) + f" | {paper} |")
        if self.unmatched_audio:
            few = ", ".join(self.unmatched_audio[:5])
            lines += ["", f"{len(self.unmatched_audio)} audio file(s) had no alignment: {few}"]
        lines += [
            "",
            "The paper's 7.2% majority baseline implies little silence in its audio; "
            "compare it with the silence-left-out rows here.",
        ]
        if self.short_phone_share > 0.2:
            lines += [
                "",
                f"**{100 * self.short_phone_share:.0f}% of the phone segments (silence aside) "
                "last under 20 ms**: the alignments look poor, which caps every figure above.",
            ]
        lines += ["", "Phones: " + " ".join(self.phones), ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in self.files if f.endswith(".png")]
        return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def analyze_phonemes(
    model: Any,
    items: Sequence[str | os.PathLike],
    alignments_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PhonemeOptions = PhonemeOptions(),
    random_model: Any = None,
    progress: bool = False,
) -> PhonemeReport:
    """Score how `model`'s codes line up with the phones of aligned audio `items`.

    The model is used only through `model.encode(wave, sr) -> [frames]` and
    `model.config` (sample rate, frame rate, codebook size). Audio is matched
    to alignments by path (`match_alignments`) and encoded whole, so label times apply
    as is.
    `random_model` replaces the untrained model built from `model.config`.
    Writes `report.json`, `report.md` and PNG plots to `out_dir`.
    """
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists() and not options.force:
        raise SpeechVQError(f"{out_dir / 'report.json'}: already exists (use --force to overwrite)")
    audio, alignments, unmatched = _aligned_audio(items, alignments_dir)
    ids = sorted(audio)
    found = {p for a in alignments.values() for p in a.phones}
    phones = tuple(p for p in PHONE_ORDER if p in found) + tuple(sorted(found - set(PHONE_ORDER)))
    fit_ids = split_utterances(ids, options.fit_fraction, options.seed)
    plot_ids = ([i for i in ids if i not in fit_ids] + sorted(fit_ids))[:3]
    config = model.config
    models = {"trained": model}
    if options.random_baseline:
        models["random"] = (
            _untrained(config, options.seed) if random_model is None else random_model
        )
    labelled, waves = _label_all(models, audio, alignments, phones, options, plot_ids, progress)
    silence = phones.index("sil") if "sil" in phones else None
    metrics = {
        name: score_codes(u, fit_ids, options.tolerance_s, silence) for name, u in labelled.items()
    }
    codes_all, phones_all = stack_units(labelled["trained"])
    mapping = many_to_one(codes_all, phones_all).mapping
    files = []
    if options.plots:
        counts = cooccurrence(codes_all, phones_all, n_phones=len(phones))
        files.append(plot_cooccurrence(counts, phones, out_dir / "codes_by_phone.png"))
        by_id = {u.id: u for u in labelled["trained"]}
        for n, i in enumerate(plot_ids, start=1):
            path = out_dir / f"utterance_{n}_{i.replace('/', '_')}.png"  # ids may hold folders
            units = by_id[i].units
            sr = config.sample_rate
            files.append(plot_utterance(waves[i], sr, alignments[i], units, mapping, phones, path))
    report = PhonemeReport(
        trained=metrics["trained"],
        random=metrics.get("random"),
        phones=phones,
        mapping={c: phones[p] for c, p in mapping.items()},
        utterances=len(ids),
        fit_utterances=len(fit_ids),
        test_utterances=len(ids) - len(fit_ids),
        unmatched_audio=tuple(sorted(p.stem for p in unmatched)),
        codebook_size=int(config.quantizer.codebook_size),
        frame_rate=float(config.frame_rate),
        unit_rate=None if options.merge_repeats else float(config.frame_rate / options.pool),
        options=options,
        short_phone_share=_short_share(alignments.values()),
        files=tuple(str(f) for f in files),
    )
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(report.to_markdown(), encoding="utf-8")
    with atomic_output(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _aligned_audio(items, alignments_dir) -> tuple[dict, dict, list[Path]]:
    """`{id: audio path}`, `{id: folded Alignment}` and the audio with no alignment."""
    table = find_alignments(alignments_dir)
    matched, unmatched = match_alignments(items, table)
    if not matched:
        raise SpeechVQError(
            "no audio file matches an alignment by name (audio e.g. "
            f"{str(unmatched[0]) if unmatched else '-'!r}, alignments e.g. {next(iter(table))!r})"
        )
    audio = {i: a for i, (a, _) in matched.items()}
    alignments = {i: fold_alignment(read_alignment(lab)) for i, (_, lab) in matched.items()}
    return audio, alignments, unmatched


def _label_all(models, audio, alignments, phones, options, keep_waves, progress):
    """Each model's code units of every utterance, labelled with phones; and the
    waveforms of `keep_waves` (for the plots)."""
    from tqdm import tqdm

    config = models["trained"].config
    labelled: dict[str, list[LabelledUtterance]] = {name: [] for name in models}
    waves, late = {}, []
    for i in tqdm(sorted(audio), desc="encoding", unit="utt", disable=not progress):
        wave, sr = load_audio(audio[i], config.sample_rate)
        ali = alignments[i]
        if ali.end_s > len(wave) / sr + 0.1:
            late.append(i)
        reference = np.array(ali.boundaries())
        for name, m in models.items():
            codes = np.asarray(m.encode(wave, sr)).reshape(-1)
            units = pool_codes(codes, config.frame_rate, options.pool, options.merge_repeats)
            labels = label_intervals(units.starts, units.ends, ali, phones)
            utt = LabelledUtterance(i, units, labels, reference, (ali.start_s, ali.end_s))
            labelled[name].append(utt)
        if i in keep_waves:
            waves[i] = wave
    if late:
        warnings.warn(
            f"{len(late)} alignment(s) end after their audio (e.g. {late[0]}): "
            "were the audio files trimmed after aligning?",
            stacklevel=3,
        )
    return labelled, waves


def _short_share(alignments: Iterable[Alignment], limit_s: float = 0.02) -> float:
    durations = [s.end_s - s.start_s for a in alignments for s in a.segments if s.phone != "sil"]
    return float(np.mean(np.array(durations) < limit_s)) if durations else 0.0


def _untrained(config: Any, seed: int) -> Any:
    import torch

    from speechvq.models.model import SpeechVQ

    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        return SpeechVQ(config).eval()
