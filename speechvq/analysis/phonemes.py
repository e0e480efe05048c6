"""Do the learned codes line up with phonemes? The units and the metrics (VQ-VAE §4.3)

The paper maps each of 128 codes (25 Hz) to its most frequent phone and gets
49.3% frame accuracy against 7.2% for always guessing the commonest phone.
This module holds the pieces that take arrays and return numbers: code units
with times (`pool_codes`), the phone each unit overlaps most
(`label_intervals`), and the scores: the many-to-one accuracy, purities and
phone-normalised mutual information (HuBERT, Hsu et al. 2021, §V-D), and
phone-boundary F1 and R-value (Räsänen et al. 2009), gathered per model by
`score_codes`.

They are pure NumPy (`[N]` int arrays in, numbers out) so tests call them
without a model. The run over a corpus and its report are in
`speechvq.analysis.report`, the figures in `speechvq.analysis.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from speechvq.data.alignments import Alignment
from speechvq.errors import SpeechVQError

EPS_S = 1e-6  # float slack when comparing times (frame edges fall on 4 ms, labels on 5 ms)


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
        if hyp[i] < ref[j] - tolerance_s - EPS_S:
            i += 1
        elif hyp[i] > ref[j] + tolerance_s + EPS_S:
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
        return times[(times > self.span[0] + EPS_S) & (times < self.span[1] - EPS_S)]


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
    fit = stack_units([u for u in utterances if u.id in fit_ids])
    test = stack_units([u for u in utterances if u.id not in fit_ids])
    every = stack_units(utterances)
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


def stack_units(utterances: Sequence[LabelledUtterance]) -> tuple[np.ndarray, np.ndarray]:
    if not utterances:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.concatenate([u.units.codes for u in utterances])
    phones = np.concatenate([u.phones for u in utterances])
    return codes[phones >= 0], phones[phones >= 0]
