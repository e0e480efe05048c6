"""Do the learned codes line up with phonemes? (VQ-VAE §4.3, unsupervised phone analysis)

The paper maps each of 128 codes (25 Hz) to its most frequent phone and gets
49.3% frame accuracy against 7.2% for always guessing the commonest phone.
`analyze_phonemes` does the same for any model and any aligned corpus, and
adds what later work reports (HuBERT, Hsu et al. 2021, §V-D: purities and
phone-normalised mutual information; phone-boundary detection F1 and R-value,
Räsänen et al. 2009), each beside the same numbers for an untrained model of
the same config, so that a figure can be read against chance.

The metric functions are pure NumPy (`[N]` int arrays in, numbers out) so
tests call them without a model; `analyze_phonemes` does the I/O, the
Markdown/JSON report and the plots (matplotlib, imported where used).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.alignments import (
    PHONE_ORDER,
    Alignment,
    find_alignments,
    fold_alignment,
    phone_class,
    read_alignment,
)
from speechvq.audio import AUDIO_EXTENSIONS, atomic_output, load_audio
from speechvq.errors import SpeechVQError

# VQ-VAE §4.3: 128 codes at 25 Hz, 41 phonemes; 49.3% vs 7.2% majority baseline.
PAPER = {"codes": 128, "rate_hz": 25.0, "phones": 41, "accuracy": 0.493, "baseline": 0.072}
_EPS_S = 1e-6  # float slack when comparing times (frame edges fall on 4 ms, labels on 5 ms)


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
class CodeUnits:
    """A code sequence as units with times: `[N]` codes, starts and ends in seconds."""

    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def change_times(self) -> np.ndarray:
        """Hypothesised boundaries: the times where the code changes, `[M]`."""
        changed = self.codes[1:] != self.codes[:-1]
        return self.ends[:-1][changed]


def pool_codes(
    codes: np.ndarray, frame_rate: float, pool: int = 1, merge_repeats: bool = False
) -> CodeUnits:
    """Turn per-frame codes `[T]` into units: windows of `pool` frames, then runs.

    A pooled unit takes the most frequent code of its window (the smaller id
    on a tie); with `merge_repeats`, a run of identical codes becomes one unit.
    """
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    if pool < 1:
        raise SpeechVQError(f"--pool must be at least 1, got {pool}")
    n = len(codes)
    edges = np.minimum(np.arange(0, n + pool, pool), n)
    edges = edges[: int(math.ceil(n / pool)) + 1]
    if pool > 1 and n:
        window = np.arange(n) // pool
        keys, counts = np.unique(window * (codes.max() + 1) + codes, return_counts=True)
        win, code = keys // (codes.max() + 1), keys % (codes.max() + 1)
        order = np.lexsort((code, -counts, win))
        first = np.ones(len(order), bool)
        first[1:] = win[order][1:] != win[order][:-1]
        codes = code[order][first]
    starts, ends = edges[:-1] / frame_rate, edges[1:] / frame_rate
    if merge_repeats and len(codes):
        run_start = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        run_end = np.r_[run_start[1:], len(codes)] - 1
        codes, starts, ends = codes[run_start], starts[run_start], ends[run_end]
    return CodeUnits(codes, starts.astype(np.float64), ends.astype(np.float64))


def label_intervals(
    starts: np.ndarray, ends: np.ndarray, alignment: Alignment, phones: Sequence[str]
) -> np.ndarray:
    """`[N]` index into `phones` of the phone each interval overlaps most; -1 where none.

    Overlaps with several segments of one phone add up. Pairs of interval and
    segment are enumerated sparsely, so long files cost O(N + segments).
    """
    index = {p: i for i, p in enumerate(phones)}
    segs = sorted(alignment.segments, key=lambda s: s.start_s)
    labels = np.full(len(starts), -1, dtype=np.int64)
    if not segs or not len(starts):
        return labels
    s_start = np.array([s.start_s for s in segs])
    s_end = np.array([s.end_s for s in segs])
    s_phone = np.array([index[s.phone] for s in segs])
    first = np.searchsorted(np.maximum.accumulate(s_end), starts, side="right")
    last = np.searchsorted(s_start, ends, side="left")
    count = np.maximum(last - first, 0)
    unit = np.repeat(np.arange(len(starts)), count)
    seg = first[unit] + np.arange(len(unit)) - np.repeat(np.cumsum(count) - count, count)
    overlap = np.minimum(ends[unit], s_end[seg]) - np.maximum(starts[unit], s_start[seg])
    keep = overlap > 0
    unit, phone, overlap = unit[keep], s_phone[seg[keep]], overlap[keep]
    keys, inverse = np.unique(unit * len(phones) + phone, return_inverse=True)
    total = np.bincount(inverse, weights=overlap)
    k_unit, k_phone = keys // len(phones), keys % len(phones)
    order = np.lexsort((k_phone, -total, k_unit))
    best = np.ones(len(order), bool)
    best[1:] = k_unit[order][1:] != k_unit[order][:-1]
    labels[k_unit[order][best]] = k_phone[order][best]
    return labels


# ---------------------------------------------------------------- metrics (pure)


@dataclass(frozen=True)
class MappingScore:
    accuracy: float  # many-to-one: each code -> its most frequent phone in the fit data
    baseline: float  # always the most frequent phone of the fit data
    mapping: dict[int, int]  # code -> phone index, codes seen in the fit data


def many_to_one(
    fit_codes: np.ndarray,
    fit_phones: np.ndarray,
    test_codes: np.ndarray | None = None,
    test_phones: np.ndarray | None = None,
) -> MappingScore:
    """Fit code -> most frequent phone on `fit_*` (`[N]` ints), score on `test_*`.

    Scored on the fit data itself when no test data is given. A test code
    never seen in the fit data gets the fit data's majority phone.
    """
    fit_codes, fit_phones = np.asarray(fit_codes), np.asarray(fit_phones)
    if test_codes is None or test_phones is None:
        test_codes, test_phones = fit_codes, fit_phones
    if not len(fit_codes) or not len(test_codes):
        return MappingScore(float("nan"), float("nan"), {})
    counts = cooccurrence(fit_codes, fit_phones)
    majority = int(counts.sum(0).argmax())
    table = np.where(counts.sum(1) > 0, counts.argmax(1), majority)
    seen = np.asarray(test_codes) < len(table)
    guess = np.where(seen, table[np.minimum(test_codes, len(table) - 1)], majority)
    used = np.flatnonzero(counts.sum(1))
    return MappingScore(
        accuracy=float(np.mean(guess == test_phones)),
        baseline=float(np.mean(np.asarray(test_phones) == majority)),
        mapping={int(c): int(table[c]) for c in used},
    )


def cooccurrence(
    codes: np.ndarray, phones: np.ndarray, n_codes: int = 0, n_phones: int = 0
) -> np.ndarray:
    """Counts `[n_codes, n_phones]` of (code, phone) pairs over `[N]` aligned units."""
    codes, phones = np.asarray(codes, np.int64), np.asarray(phones, np.int64)
    c = max(n_codes, int(codes.max(initial=-1)) + 1)
    p = max(n_phones, int(phones.max(initial=-1)) + 1)
    return np.bincount(codes * p + phones, minlength=c * p).reshape(c, p)


def purities(counts: np.ndarray) -> tuple[float, float]:
    """(phone purity, code purity) of a `[codes, phones]` count matrix (HuBERT §V-D).

    Phone purity: how pure each code is in phones, E_code[max_phone p(phone|code)]
    (equals the many-to-one accuracy fit and scored on the same data). Code
    purity: how concentrated each phone is in one code, E_phone[max_code p(code|phone)].
    """
    total = counts.sum()
    if total == 0:
        return float("nan"), float("nan")
    return float(counts.max(1).sum() / total), float(counts.max(0).sum() / total)


@dataclass(frozen=True)
class InformationScores:
    mutual_information_bits: float
    phone_entropy_bits: float
    code_entropy_bits: float
    nmi: float  # I / mean(H(phone), H(code)), the arithmetic normalisation (sklearn's default)
    pnmi: float  # I / H(phone): the share of phone uncertainty the codes remove (HuBERT)


def mutual_information(counts: np.ndarray) -> InformationScores:
    """Mutual information of a `[codes, phones]` count matrix, in bits.

    Written here in NumPy (a few lines) rather than taking scikit-learn as a
    dependency for `normalized_mutual_info_score`; the normalisation matches
    its default (arithmetic mean of the two entropies).
    """
    total = counts.sum()
    if total == 0:
        return InformationScores(*(float("nan"),) * 5)
    joint = counts / total
    p_code, p_phone = joint.sum(1), joint.sum(0)

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return max(float(-(p * np.log2(p)).sum()), 0.0)  # never -0.0

    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / np.outer(p_code, p_phone)[nz])).sum())
    h_code, h_phone = entropy(p_code), entropy(p_phone)
    mi = max(mi, 0.0)
    mean_h = (h_code + h_phone) / 2
    nmi = 1.0 if mean_h == 0 else (mi / mean_h if h_code > 0 and h_phone > 0 else 0.0)
    pnmi = 1.0 if h_phone == 0 else mi / h_phone
    return InformationScores(mi, h_phone, h_code, min(nmi, 1.0), min(pnmi, 1.0))


@dataclass(frozen=True)
class BoundaryScores:
    precision: float
    recall: float
    f1: float
    r_value: float  # Räsänen et al. 2009: also penalises over-segmentation
    hypotheses: int
    references: int
    hits: int


def match_boundaries(hyp: np.ndarray, ref: np.ndarray, tolerance_s: float) -> int:
    """Hits of a one-to-one matching of `hyp` to `ref` times within `tolerance_s`.

    Greedy in time order: with windows of equal width, taking the earliest
    hypothesis still in range for each reference gives a maximum matching.
    """
    hyp, ref = np.sort(hyp), np.sort(ref)
    i = j = hits = 0
    while i < len(hyp) and j < len(ref):
        if hyp[i] < ref[j] - tolerance_s - _EPS_S:
            i += 1
        elif hyp[i] > ref[j] + tolerance_s + _EPS_S:
            j += 1
        else:
            hits, i, j = hits + 1, i + 1, j + 1
    return hits


def boundary_scores(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], tolerance_s: float = 0.02
) -> BoundaryScores:
    """Precision/recall/F1/R-value over utterances given as (hyp, ref) boundary times."""
    n_hyp = n_ref = hits = 0
    for hyp, ref in pairs:
        n_hyp, n_ref = n_hyp + len(hyp), n_ref + len(ref)
        hits += match_boundaries(np.asarray(hyp), np.asarray(ref), tolerance_s)
    precision = hits / n_hyp if n_hyp else 0.0
    recall = hits / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    over = n_hyp / n_ref - 1 if n_ref else 0.0
    r1 = math.hypot(1 - recall, over)
    r2 = (-over + recall - 1) / math.sqrt(2)
    return BoundaryScores(precision, recall, f1, 1 - (abs(r1) + abs(r2)) / 2, n_hyp, n_ref, hits)


def split_utterances(ids: Sequence[str], fit_fraction: float, seed: int) -> set[str]:
    """The ids the mapping is fit on: a seeded shuffle of the sorted ids, cut at the fraction."""
    if not 0 < fit_fraction < 1:
        raise SpeechVQError(f"--fit-fraction must be between 0 and 1, got {fit_fraction}")
    ordered = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_fit = min(max(round(fit_fraction * len(ordered)), 1), max(len(ordered) - 1, 1))
    return {ordered[i] for i in perm[:n_fit]}


# ---------------------------------------------------------------- one model over a corpus


@dataclass(frozen=True)
class LabelledUtterance:
    """One utterance's code units with the phone of each (`[N]`, -1 = unlabelled)."""

    id: str
    units: CodeUnits
    phones: np.ndarray
    reference: np.ndarray  # true phone boundaries, seconds `[M]`
    span: tuple[float, float]  # the aligned stretch; boundaries outside it are not scored

    def hypotheses(self) -> np.ndarray:
        times = self.units.change_times()
        return times[(times > self.span[0] + _EPS_S) & (times < self.span[1] - _EPS_S)]


@dataclass(frozen=True)
class CodePhoneMetrics:
    accuracy: float  # many-to-one, fit on the fit utterances, scored on the others
    baseline: float  # majority phone of the fit utterances, scored on the others
    accuracy_fit_all: float  # fit and scored on all utterances (= phone purity)
    baseline_all: float
    phone_purity: float
    code_purity: float
    information: InformationScores
    boundaries: BoundaryScores
    codes_used: int
    units: int  # labelled units scored (all utterances)
    mean_unit_ms: float
    # The held-out pair again with silence units left out of fit and score:
    # VCTK files open and close with long silences that the paper's 7.2%
    # majority baseline cannot have included.
    accuracy_speech: float
    baseline_speech: float


def score_codes(
    utterances: Sequence[LabelledUtterance],
    fit_ids: set[str],
    tolerance_s: float = 0.02,
    silence: int | None = None,
) -> CodePhoneMetrics:
    """All metrics for one model's labelled units.

    `fit_ids` name the utterances the code -> phone mapping is fit on;
    `silence` is the phone index left out of the `*_speech` figures.
    """
    fit = _stack([u for u in utterances if u.id in fit_ids])
    test = _stack([u for u in utterances if u.id not in fit_ids])
    every = _stack(utterances)
    held_out = many_to_one(*fit, *test)
    speech = many_to_one(*_without(fit, silence), *_without(test, silence))
    on_all = many_to_one(*every)
    counts = cooccurrence(*every)
    phone_purity, code_purity = purities(counts)
    durations = np.concatenate([u.units.ends - u.units.starts for u in utterances])
    return CodePhoneMetrics(
        accuracy=held_out.accuracy,
        baseline=held_out.baseline,
        accuracy_fit_all=on_all.accuracy,
        baseline_all=on_all.baseline,
        phone_purity=phone_purity,
        code_purity=code_purity,
        information=mutual_information(counts),
        boundaries=boundary_scores(
            ((u.hypotheses(), u.reference) for u in utterances), tolerance_s
        ),
        codes_used=int(np.count_nonzero(counts.sum(1))),
        units=len(every[0]),
        mean_unit_ms=float(durations.mean() * 1000) if len(durations) else float("nan"),
        accuracy_speech=speech.accuracy,
        baseline_speech=speech.baseline,
    )


def _without(pair: tuple[np.ndarray, np.ndarray], phone: int | None) -> tuple[np.ndarray, ...]:
    codes, phones = pair
    return (codes, phones) if phone is None else (codes[phones != phone], phones[phones != phone])


def _stack(utterances: Sequence[LabelledUtterance]) -> tuple[np.ndarray, np.ndarray]:
    if not utterances:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.concatenate([u.units.codes for u in utterances])
    phones = np.concatenate([u.phones for u in utterances])
    return codes[phones >= 0], phones[phones >= 0]


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
        return _jsonable(d)

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


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if not math.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def find_audio(source: str | os.PathLike) -> list[Path]:
    """Audio files of a prepared corpus (`manifest.tsv`, its `path` column) or a folder.

    A folder without a manifest is searched recursively for audio files.
    The audio is read from the original files (the prepared arrays are
    trimmed, so label times would not apply to them).
    """
    source = Path(source)
    manifest = source / "manifest.tsv" if source.is_dir() else source
    if manifest.is_file() and manifest.suffix == ".tsv":
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and "path" not in rows[0]:
            raise SpeechVQError(f"{manifest}: has no 'path' column")
        paths = [Path(r["path"]) for r in rows]
        # `prepare` records paths as given: relative to where it ran, else to the manifest.
        paths = [p if p.is_absolute() or p.exists() else manifest.parent / p for p in paths]
        return sorted({p.resolve() for p in paths})  # a long file may give several rows
    if not source.is_dir():
        raise SpeechVQError(f"{source}: neither a folder of audio nor a manifest.tsv")
    found = sorted(
        Path(root) / name
        for root, _, names in os.walk(source, followlinks=True)
        for name in names
        if Path(name).suffix.lower() in AUDIO_EXTENSIONS
    )
    if not found:
        raise SpeechVQError(f"{source}: no audio files found")
    return found


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
    to alignments by file stem and encoded whole, so label times apply as is.
    `random_model` replaces the untrained model built from `model.config`.
    Writes `report.json`, `report.md` and PNG plots to `out_dir`.
    """
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists() and not options.force:
        raise SpeechVQError(f"{out_dir / 'report.json'}: already exists (use --force to overwrite)")
    table = find_alignments(alignments_dir)
    audio: dict[str, Path] = {}
    for path in map(Path, items):
        if path.stem in audio and audio[path.stem] != path:
            raise SpeechVQError(f"two audio files named {path.stem!r}: {audio[path.stem]}, {path}")
        audio[path.stem] = path
    ids = sorted(set(audio) & set(table))
    if not ids:
        raise SpeechVQError(
            f"no audio file matches an alignment by name (audio e.g. {next(iter(audio), '-')!r}, "
            f"alignments e.g. {next(iter(table))!r})"
        )
    alignments = {i: fold_alignment(read_alignment(table[i])) for i in ids}
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
    labelled: dict[str, list[LabelledUtterance]] = {name: [] for name in models}
    waves, late = {}, []
    from tqdm import tqdm

    for i in tqdm(ids, desc="encoding", unit="utt", disable=not progress):
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
        if i in plot_ids:
            waves[i] = wave
    if late:
        warnings.warn(
            f"{len(late)} alignment(s) end after their audio (e.g. {late[0]}): "
            "were the audio files trimmed after aligning?",
            stacklevel=2,
        )
    silence = phones.index("sil") if "sil" in phones else None
    metrics = {
        name: score_codes(u, fit_ids, options.tolerance_s, silence) for name, u in labelled.items()
    }
    codes_all, phones_all = _stack(labelled["trained"])
    mapping = many_to_one(codes_all, phones_all).mapping
    report = PhonemeReport(
        trained=metrics["trained"],
        random=metrics.get("random"),
        phones=phones,
        mapping={c: phones[p] for c, p in mapping.items()},
        utterances=len(ids),
        fit_utterances=len(fit_ids),
        test_utterances=len(ids) - len(fit_ids),
        unmatched_audio=tuple(sorted(set(audio) - set(table))),
        codebook_size=int(config.quantizer.codebook_size),
        frame_rate=float(config.frame_rate),
        unit_rate=None if options.merge_repeats else float(config.frame_rate / options.pool),
        options=options,
        short_phone_share=_short_share(alignments.values()),
    )
    files = []
    if options.plots:
        counts = cooccurrence(codes_all, phones_all, n_phones=len(phones))
        files.append(plot_cooccurrence(counts, phones, out_dir / "codes_by_phone.png"))
        by_id = {u.id: u for u in labelled["trained"]}
        for n, i in enumerate(plot_ids, start=1):
            path = out_dir / f"utterance_{n}_{i}.png"
            files.append(
                plot_utterance(
                    waves[i],
                    config.sample_rate,
                    alignments[i],
                    by_id[i].units,
                    mapping,
                    phones,
                    path,
                )
            )
    report = dataclasses.replace(report, files=tuple(str(f) for f in files))
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(report.to_markdown(), encoding="utf-8")
    with atomic_output(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _short_share(alignments: Iterable[Alignment], limit_s: float = 0.02) -> float:
    durations = [s.end_s - s.start_s for a in alignments for s in a.segments if s.phone != "sil"]
    return float(np.mean(np.array(durations) < limit_s)) if durations else 0.0


def _untrained(config: Any, seed: int) -> Any:
    import torch

    import speechvq

    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        return speechvq.SpeechVQ(config).eval()


# ---------------------------------------------------------------- plots

_CLASS_COLOURS = {
    "vowels": "tab:red",
    "stops": "tab:blue",
    "fricatives": "tab:green",
    "nasals": "tab:purple",
    "approximants": "tab:orange",
    "silence": "0.75",
    "other": "tab:brown",
}
_TEXT_COLOURS = {"silence": "0.35"}  # the light grey of silence spans is unreadable as text


def plot_cooccurrence(counts: np.ndarray, phones: Sequence[str], path: str | os.PathLike) -> Path:
    """P(phone | code) for the used codes `[codes, phones]`, grouped by mapped phone and class.

    Rows are ordered by each code's most frequent phone (in column order),
    columns by phone class, so phone-like codes form a block diagonal.
    """
    plt = _pyplot()

    used = np.flatnonzero(counts.sum(1))
    best = counts[used].argmax(1)
    order = used[np.lexsort((-counts[used].max(1), best))]
    probs = counts[order] / counts[order].sum(1, keepdims=True)
    mapped = counts[order].argmax(1)
    fig, ax = plt.subplots(figsize=(11, min(3 + 0.04 * len(order), 16)), layout="constrained")
    image = ax.imshow(probs, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(phones)), phones, rotation=90, fontsize=8)
    for tick, phone in zip(ax.get_xticklabels(), phones, strict=True):
        tick.set_color(_TEXT_COLOURS.get(phone_class(phone), _CLASS_COLOURS[phone_class(phone)]))
    classes = [phone_class(p) for p in phones]
    cuts = [k for k in range(1, len(phones)) if classes[k] != classes[k - 1]]
    for x in cuts:
        ax.axvline(x - 0.5, color="tab:cyan", lw=0.8)
    for a, b in zip([0, *cuts], [*cuts, len(phones)], strict=True):
        ax.text((a + b - 1) / 2, 1.005, classes[a], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)  # fmt: skip
    starts = [k for k in range(len(mapped)) if k == 0 or mapped[k] != mapped[k - 1]]
    for y in starts[1:]:
        ax.axhline(y - 0.5, color="tab:cyan", lw=0.3)
    ends = [*starts[1:], len(mapped)]
    ax.set_yticks([(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)])
    ax.set_yticklabels([phones[mapped[a]] for a in starts], fontsize=6)
    ax.set_xlabel("phone (vowels, stops, fricatives, nasals, approximants, silence)")
    ax.set_ylabel(f"{len(order)} codes used, grouped by their most frequent phone")
    ax.set_title("P(phone | code)", pad=16)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return _save(fig, path)


def plot_utterance(
    wave: np.ndarray,
    sample_rate: int,
    alignment: Alignment,
    units: CodeUnits,
    mapping: dict[int, int],
    phones: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """Spectrogram, reference phones, codes and the phones the codes map to, on one time axis.

    The view is cropped to the speech (first to last non-silence phone, with
    0.2 s either side) so that phone labels stay legible.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    from scipy.signal import spectrogram

    speech = [s for s in alignment.segments if s.phone != "sil"] or list(alignment.segments)
    view = (max(speech[0].start_s - 0.2, 0.0), speech[-1].end_s + 0.2)
    fig, axes = plt.subplots(
        4, 1, figsize=(15, 7), sharex=True, height_ratios=[3, 0.8, 2.5, 0.8], layout="constrained"
    )
    spec_ax, phone_ax, code_ax, map_ax = axes
    freqs, times, power = spectrogram(wave, fs=sample_rate, nperseg=400, noverlap=336)
    db = 10 * np.log10(power + 1e-12)
    spec_ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=db.max() - 80,
        vmax=db.max(),
        extent=(times[0], times[-1], freqs[0], freqs[-1]),
    )
    spec_ax.set_ylabel("Hz")
    spec_ax.set_title(f"{Path(alignment.source).stem}: reference phones against codes")
    _phone_track(phone_ax, _runs([(s.start_s, s.end_s, s.phone) for s in alignment.segments]), view)
    phone_ax.set_ylabel("phones", rotation=0, ha="right", va="center")
    colours = [
        _CLASS_COLOURS[phone_class(phones[mapping[c]]) if c in mapping else "other"]
        for c in units.codes
    ]
    code_ax.hlines(units.codes, units.starts, units.ends, colors=colours, lw=3)
    code_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    code_ax.set_ylabel("code (colour: class\nof its phone)")
    guessed = [phones[mapping[c]] if c in mapping else "?" for c in units.codes]
    _phone_track(map_ax, _runs(list(zip(units.starts, units.ends, guessed, strict=True))), view)
    map_ax.set_ylabel("code -> phone", rotation=0, ha="right", va="center")
    map_ax.set_xlabel("time (s)")
    for t in alignment.boundaries():
        for ax in (code_ax, map_ax):
            ax.axvline(t, color="0.6", lw=0.5, ls=":")
    map_ax.set_xlim(*view)
    return _save(fig, path)


def _runs(segments: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Merge touching segments with the same label (`sil sil` -> one `sil`)."""
    runs: list[tuple[float, float, str]] = []
    for start, end, label in segments:
        if runs and runs[-1][2] == label and abs(runs[-1][1] - start) < _EPS_S:
            runs[-1] = (runs[-1][0], end, label)
        else:
            runs.append((start, end, label))
    return runs


def _phone_track(
    ax: Any, segments: Sequence[tuple[float, float, str]], view: tuple[float, float]
) -> None:
    # A label needs about 0.5% of the view per character at fontsize 7 on a
    # 15-inch axis; narrower ones alternate high and low, the narrowest go unlabelled.
    per_char = 0.005 * (view[1] - view[0])
    for k, (start, end, phone) in enumerate(segments):
        ax.axvspan(start, end, color=_CLASS_COLOURS[phone_class(phone)], alpha=0.35, lw=0)
        ax.axvline(start, color="0.3", lw=0.5)
        a, b = max(start, view[0]), min(end, view[1])  # the visible part
        need = per_char * max(len(phone), 2)
        if b - a >= need / 2:
            y = 0.5 if b - a >= need else (0.22 if k % 2 else 0.78)
            ax.text((a + b) / 2, y, phone, ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_yticks([])
    ax.set_ylim(0, 1)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SpeechVQError(
            "plots need matplotlib: pip install 'speechvq[analysis]' (or use --no-plots)"
        ) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
