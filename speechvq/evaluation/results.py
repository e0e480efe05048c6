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
                "stoi_band_centres_hz": STOI_BAND_CENTRES_HZ,
                "skipped_metrics": self.skipped_metrics,
                "notes": self.notes,
            }
        )


def stats(v: np.ndarray) -> dict[str, float] | None:
    if not v.size:
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
