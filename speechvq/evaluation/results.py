"""What `speechvq evaluate` measured: typed results, per system and per conversion.

`EvaluationReport.to_dict` is results.json; `speechvq.evaluation.report`
writes it with results.md and the figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechvq.data.discovery import Recording
from speechvq.evaluation.metrics import STOI_BAND_CENTRES_HZ
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


MODEL_SYSTEM = "speechvq"
# The encoder's codes with the input's pitch track (`codec.pitch_track`), as `compress --search 0`
# writes.
PITCH_SYSTEM = "speechvq+pitch"
# Codes searched by synthesis (`inference.code_search`), as `compress` writes by default:
# with the pitch track when the model has the pitch path.
SEARCH_SYSTEM = "speechvq+search"


REFERENCE_SYSTEM = "reference"
SPEECHVQ_SYSTEMS = (MODEL_SYSTEM, PITCH_SYSTEM, SEARCH_SYSTEM)

# Metrics where a lower value is the better one; the rest are better higher.
LOWER_IS_BETTER = frozenset({"mel_distance"})
# Metrics compared file by file against the baselines (`EvaluationReport.comparisons`).
COMPARED = ("stoi", "pesq", "mel_distance", "speaker_sim", "dnsmos_ovrl", "f0_match", "voicing")


@dataclass
class SystemResult:
    """One system (reference, speechvq or a baseline): per-file scores and their summary."""

    name: str
    bitrate: float | None  # nominal bit/s
    entropy_bitrate: float | None = None  # mean bit/s of ideal coding under the model's prior
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # item id -> metric -> value
    skipped: str | None = None  # why the system did not run
    # item id -> STOI per 1/3-octave band `[15]` (`metrics.stoi_bands`; their mean is "stoi")
    stoi_bands: dict[str, np.ndarray] = field(default_factory=dict)

    def band_summary(self) -> np.ndarray | None:
        """The mean over files of the STOI of each band `[15]` (NaN files left out)."""
        rows = [b for b in self.stoi_bands.values() if np.all(np.isfinite(b))]
        return np.mean(rows, axis=0) if rows else None

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
class PairedDifference:
    """One metric of `system` minus `baseline`, file by file, over the files both scored.

    The files are the same recordings, so the per-file difference cancels what
    makes one file harder than another; its spread, not the systems' own,
    says whether a lead is more than the luck of the files.
    """

    system: str
    baseline: str
    metric: str
    mean: float  # mean over files of system - baseline
    half_width: float  # of its 95% confidence interval (Student's t); NaN under 2 files
    better: int  # files where `system` is the better one (higher, or lower in LOWER_IS_BETTER)
    n: int

    @property
    def significant(self) -> bool:
        """The 95% interval leaves out zero."""
        return bool(np.isfinite(self.half_width) and abs(self.mean) > self.half_width)


def paired_difference(
    system: SystemResult, baseline: SystemResult, metric: str
) -> PairedDifference:
    """`metric` of `system` minus `baseline` over the files both scored (finite values)."""
    from scipy.stats import t as student_t

    ids = [i for i in system.scores if i in baseline.scores]
    pairs = np.array(
        [
            (system.scores[i].get(metric, np.nan), baseline.scores[i].get(metric, np.nan))
            for i in ids
        ],
        dtype=np.float64,
    ).reshape(-1, 2)
    pairs = pairs[np.all(np.isfinite(pairs), axis=1)]
    d = pairs[:, 0] - pairs[:, 1]
    n = int(d.size)
    half = float("nan")
    if n >= 2:
        half = float(student_t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n))
    better = int(np.sum(d < 0 if metric in LOWER_IS_BETTER else d > 0))
    mean = float(d.mean()) if n else float("nan")
    return PairedDifference(system.name, baseline.name, metric, mean, half, better, n)


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

    def headline(self) -> SystemResult | None:
        """The speechvq system users get from `compress`: searched codes, else the pitch
        track's, else the plain codes (the first of them that ran)."""
        ran = {s.name: s for s in self.systems if not s.skipped}
        return next((ran[n] for n in reversed(SPEECHVQ_SYSTEMS) if n in ran), None)

    def baselines(self) -> list[SystemResult]:
        """The other codecs that ran (codec2, Opus): neither the reference nor speechvq."""
        mine = {REFERENCE_SYSTEM, *SPEECHVQ_SYSTEMS}
        return [s for s in self.systems if s.name not in mine and not s.skipped]

    def comparisons(self) -> list[PairedDifference]:
        """The headline system against each baseline, per metric (`COMPARED`) both scored."""
        head = self.headline()
        if head is None:
            return []
        out = []
        for base in self.baselines():
            for m in COMPARED:
                d = paired_difference(head, base, m)
                if d.n:
                    out.append(d)
        return out

    def conversion_summary(self) -> list[dict[str, Any]]:
        """Per target: mean and std of both similarities, identification accuracy."""
        rows = []
        for target in dict.fromkeys(c.target for c in self.conversions):
            cs = [c for c in self.conversions if c.target == target]
            row: dict[str, Any] = {"target": target, "n": len(cs)}
            for key in ("sim_target", "sim_source", "dnsmos_ovrl"):
                v = np.array([getattr(c, key) for c in cs], dtype=np.float64)
                v = v[np.isfinite(v)]
                row[key] = stats(v)
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
                        "stoi_bands": {
                            "mean": s.band_summary(),
                            "per_file": s.stoi_bands,
                        },
                    }
                    for s in self.systems
                ],
                "conversion": {
                    "summary": self.conversion_summary(),
                    "per_file": [dataclasses.asdict(c) for c in self.conversions],
                },
                "comparisons": [dataclasses.asdict(d) for d in self.comparisons()],
                "stoi_band_centres_hz": STOI_BAND_CENTRES_HZ,
                "skipped_metrics": self.skipped_metrics,
                "notes": self.notes,
            }
        )


def stats(v: np.ndarray) -> dict[str, float] | None:
    if not v.size:
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
