"""Codes against phones: labelling, metrics and the report, on generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechvq.analysis.phonemes import (
    LabelledUtterance,
    boundary_scores,
    cooccurrence,
    label_intervals,
    many_to_one,
    match_boundaries,
    mutual_information,
    pool_codes,
    purities,
    score_codes,
    split_utterances,
)
from speechvq.analysis.report import PhonemeOptions, analyze_phonemes
from speechvq.config import ModelConfig
from speechvq.data.alignments import Alignment, Segment
from speechvq.data.discovery import find_recordings
from speechvq.errors import SpeechVQError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHONES = ("aa", "s", "m", "sil")


def _alignment(*segments: tuple[float, float, str]) -> Alignment:
    return Alignment(tuple(Segment(a, b, p) for a, b, p in segments))


def test_pool_codes_frames_windows_and_runs():
    units = pool_codes(np.array([3, 3, 5]), frame_rate=250.0)
    assert units.codes.tolist() == [3, 3, 5]
    assert units.starts == pytest.approx([0, 0.004, 0.008])
    assert units.ends == pytest.approx([0.004, 0.008, 0.012])
    # Windows of 3: the mode, the smaller code on a tie; the last window is partial.
    units = pool_codes(np.array([7, 2, 7, 4, 2, 9, 1]), frame_rate=100.0, pool=3)
    assert units.codes.tolist() == [7, 2, 1]
    assert units.starts == pytest.approx([0, 0.03, 0.06])
    assert units.ends == pytest.approx([0.03, 0.06, 0.07])
    merged = pool_codes(np.array([1, 1, 1, 2, 2, 1]), frame_rate=10.0, merge_repeats=True)
    assert merged.codes.tolist() == [1, 2, 1]
    assert merged.starts == pytest.approx([0, 0.3, 0.5])
    assert merged.ends == pytest.approx([0.3, 0.5, 0.6])
    assert merged.change_times() == pytest.approx([0.3, 0.5])
    both = pool_codes(
        np.array([1, 1, 2, 1, 2, 2, 2, 2]), frame_rate=10.0, pool=2, merge_repeats=True
    )
    assert both.codes.tolist() == [1, 2]  # windows -> 1, 1, 2, 2 -> runs
    assert both.ends == pytest.approx([0.4, 0.8])
    with pytest.raises(SpeechVQError):
        pool_codes(np.array([1]), 10.0, pool=0)


def test_label_intervals_picks_the_largest_overlap():
    ali = _alignment((0.0, 0.13, "sil"), (0.13, 0.2, "aa"), (0.2, 0.21, "s"), (0.21, 0.3, "m"))
    starts = np.array([0.0, 0.1, 0.15, 0.2, 0.3])
    ends = starts + 0.1
    labels = label_intervals(starts, ends, ali, PHONES)
    # [0.1, 0.2): sil 0.03 < aa 0.07; [0.2, 0.3): m beats the 10 ms s; [0.3, 0.4): nothing.
    assert [PHONES[i] if i >= 0 else None for i in labels] == ["sil", "aa", "aa", "m", None]
    # Two segments of one phone add up against a longer single one.
    ali = _alignment((0, 0.03, "s"), (0.03, 0.07, "aa"), (0.07, 0.1, "s"))
    assert label_intervals(np.array([0.0]), np.array([0.1]), ali, PHONES).tolist() == [1]
    # Units shorter than segments, and a gap in the alignment.
    ali = _alignment((0, 0.01, "aa"), (0.02, 0.03, "m"))
    starts = np.arange(0, 0.03, 0.004)
    labels = label_intervals(starts, starts + 0.004, ali, PHONES)
    assert labels.tolist() == [0, 0, 0, -1, -1, 2, 2, 2]


def _copying_utterances(n: int, seed: int = 0) -> list[LabelledUtterance]:
    """Utterances whose codes are a relabelling of their phones (code = 10 + phone)."""
    rng = np.random.default_rng(seed)
    utts = []
    for k in range(n):
        lengths = rng.integers(10, 40, size=20)  # segment lengths in frames of 4 ms
        phones = rng.integers(0, len(PHONES), size=20)
        keep = np.r_[True, phones[1:] != phones[:-1]]
        lengths, phones = lengths[keep], phones[keep]
        edges = np.r_[0, np.cumsum(lengths)] * 0.004
        ali = _alignment(
            *[(a, b, PHONES[p]) for a, b, p in zip(edges, edges[1:], phones, strict=False)]
        )
        frames = np.repeat(phones, lengths)
        units = pool_codes(frames + 10, frame_rate=250.0)
        labels = label_intervals(units.starts, units.ends, ali, PHONES)
        ref = np.array(ali.boundaries())
        utts.append(LabelledUtterance(f"u{k}", units, labels, ref, (ali.start_s, ali.end_s)))
    return utts


def test_codes_that_copy_the_phones_score_perfectly():
    utts = _copying_utterances(6)
    fit = split_utterances([u.id for u in utts], 0.5, seed=0)
    m = score_codes(utts, fit, tolerance_s=0.02)
    assert m.accuracy == 1.0 and m.accuracy_fit_all == 1.0
    assert m.phone_purity == 1.0 and m.code_purity == 1.0
    assert m.information.nmi == pytest.approx(1.0) and m.information.pnmi == pytest.approx(1.0)
    assert m.boundaries.f1 == pytest.approx(1.0) and m.boundaries.r_value == pytest.approx(1.0)
    assert m.codes_used == len(PHONES)
    assert 0.2 < m.baseline < 0.5


def test_shuffled_codes_score_about_the_baseline():
    rng = np.random.default_rng(1)
    phones = rng.choice(4, size=40000, p=[0.4, 0.3, 0.2, 0.1])
    codes = rng.integers(0, 32, size=40000)
    score = many_to_one(codes[:20000], phones[:20000], codes[20000:], phones[20000:])
    assert score.accuracy == pytest.approx(score.baseline, abs=0.02)
    assert score.baseline == pytest.approx(0.4, abs=0.02)
    info = mutual_information(cooccurrence(codes, phones))
    assert info.nmi < 0.01


def test_many_to_one_maps_unseen_codes_to_the_majority_phone():
    score = many_to_one(
        np.array([0, 0, 1, 2]), np.array([5, 5, 3, 5]), np.array([1, 9]), np.array([3, 5])
    )
    assert score.mapping == {0: 5, 1: 3, 2: 5}
    assert score.accuracy == 1.0  # code 9 was never fit: guessed 5
    assert score.baseline == 0.5


def test_purities_and_information_by_hand():
    counts = np.array([[4, 0], [1, 1], [0, 2]])  # codes x phones
    phone_purity, code_purity = purities(counts)
    assert phone_purity == pytest.approx((4 + 1 + 2) / 8)
    assert code_purity == pytest.approx((4 + 2) / 8)
    independent = mutual_information(np.array([[2, 2], [3, 3]]))
    assert independent.mutual_information_bits == pytest.approx(0.0, abs=1e-12)
    assert independent.nmi == pytest.approx(0.0, abs=1e-12)
    identity = mutual_information(np.diag([1, 1, 1, 1]))
    assert identity.mutual_information_bits == pytest.approx(2.0)
    assert identity.nmi == pytest.approx(1.0)
    # One phone in two codes: H(phone) = 1 bit, I = 1 bit, H(code) = 1.5 bits.
    split = mutual_information(np.array([[2, 0], [1, 0], [0, 1]]) * 1)
    assert split.pnmi == pytest.approx(split.mutual_information_bits / split.phone_entropy_bits)


def test_boundary_matching_is_one_to_one():
    assert match_boundaries(np.array([0.10, 0.11]), np.array([0.1]), 0.02) == 1
    assert match_boundaries(np.array([0.10]), np.array([0.09, 0.11]), 0.02) == 1
    assert match_boundaries(np.array([0.08, 0.12]), np.array([0.10, 0.11]), 0.02) == 2
    assert match_boundaries(np.array([0.121]), np.array([0.1]), 0.02) == 0
    s = boundary_scores([(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.5]))], 0.02)
    assert (s.hits, s.precision, s.recall) == (1, 0.25, 0.5)
    assert s.f1 == pytest.approx(1 / 3)
    assert s.r_value < 0.5
    none = boundary_scores([(np.array([]), np.array([0.1]))])
    assert none.f1 == 0.0 and none.recall == 0.0


def test_split_is_deterministic_and_leaves_both_sides():
    ids = [f"u{k}" for k in range(10)]
    assert split_utterances(ids, 0.5, 3) == split_utterances(list(reversed(ids)), 0.5, 3)
    assert len(split_utterances(ids, 0.5, 3)) == 5
    assert split_utterances(ids, 0.5, 3) != split_utterances(ids, 0.5, 4)
    assert len(split_utterances(ids[:2], 0.99, 0)) == 1
    with pytest.raises(SpeechVQError):
        split_utterances(ids, 1.0, 0)


# ---------------------------------------------------------------- end to end

SEGMENTS = [
    (0.0, 0.3, "pau"),
    (0.3, 0.8, "aa"),
    (0.8, 1.2, "s"),
    (1.2, 1.7, "m"),
    (1.7, 2.0, "pau"),
]


def _write_utterance(folder: Path, name: str, seed: int) -> None:
    """A 2 s wav of silence / tone / noise / low tone / silence, with its HTK label file."""
    import soundfile as sf

    sr = 16000
    rng = np.random.default_rng(seed)
    t = np.arange(sr * 2) / sr
    wave = 0.001 * rng.standard_normal(t.size)
    for start, end, phone in SEGMENTS:
        part = (t >= start) & (t < end)
        if phone == "aa":
            wave[part] += 0.5 * np.sin(2 * np.pi * (700 + 50 * seed) * t[part])
        elif phone == "s":
            wave[part] += 0.2 * rng.standard_normal(part.sum())
        elif phone == "m":
            wave[part] += 0.3 * np.sin(2 * np.pi * 150 * t[part])
    (folder / "wav").mkdir(exist_ok=True)
    (folder / "lab").mkdir(exist_ok=True)
    sf.write(folder / "wav" / f"{name}.wav", wave.astype(np.float32), sr)
    lines = [f"{round(a * 1e7)} {round(b * 1e7)} {p}" for a, b, p in SEGMENTS]
    (folder / "lab" / f"{name}.lab").write_text("\n".join(lines) + "\n")


class EnergyModel:
    """A stand-in with the model's API: codes are log-energy bins per hop."""

    def __init__(self, bins: int = 8):
        self.config = ModelConfig.preset("tiny")
        self.bins = bins

    def encode(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        hop = self.config.hop_length
        frames = -(-len(wave) // hop)
        padded = np.zeros(frames * hop, np.float32)
        padded[: len(wave)] = wave
        energy = np.log10(np.mean(padded.reshape(frames, hop) ** 2, axis=1) + 1e-8)
        return np.clip(((energy + 8) * self.bins / 8).astype(np.int64), 0, self.bins - 1)


def test_analyze_phonemes_end_to_end(tmp_path):
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")
    for k in range(4):
        _write_utterance(tmp_path, f"utt_{k}", seed=k)
    (tmp_path / "wav" / "no_labels.wav").write_bytes((tmp_path / "wav" / "utt_0.wav").read_bytes())
    items = _paths(tmp_path / "wav")
    out = tmp_path / "report"
    options = PhonemeOptions(pool=2)
    report = analyze_phonemes(EnergyModel(), items, tmp_path / "lab", out, options, EnergyModel(2))
    assert report.utterances == 4 and report.fit_utterances == 2
    assert report.unmatched_audio == ("no_labels",)
    assert report.phones == ("aa", "s", "m", "sil")
    assert report.unit_rate == pytest.approx(125.0)
    assert report.short_phone_share == 0.0
    t, r = report.trained, report.random
    assert t.units == 4 * 250  # 2 s at 125 Hz
    assert t.accuracy > t.baseline  # energy separates silence from the rest
    assert r is not None and r.codes_used <= 2
    saved = json.loads((out / "report.json").read_text())
    assert saved["trained"]["accuracy"] == pytest.approx(t.accuracy)
    assert saved["paper"]["accuracy"] == 0.493
    markdown = (out / "report.md").read_text()
    assert "49.3%" in markdown and "untrained model" in markdown
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 4 and "codes_by_phone.png" in pngs
    assert all((out / p).stat().st_size > 10_000 for p in pngs)
    with pytest.raises(SpeechVQError, match="already exists"):
        analyze_phonemes(EnergyModel(), items, tmp_path / "lab", out, options)
    merged = PhonemeOptions(merge_repeats=True, random_baseline=False, plots=False, force=True)
    again = analyze_phonemes(EnergyModel(), items, tmp_path / "lab", out, merged)
    assert again.random is None and again.unit_rate is None
    assert again.trained.units < t.units
    with pytest.raises(SpeechVQError, match="no audio file matches"):
        analyze_phonemes(EnergyModel(), [tmp_path / "x.wav"], tmp_path / "lab", tmp_path / "o")


def test_timit_layout_end_to_end(tmp_path):
    """Every speaker reads sa1: matched by speaker folder, plotted under a flat name."""
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")
    for k, spk in enumerate(("dr1-fvmh0", "dr1-mcpm0", "dr2-faem0")):
        src = tmp_path / "src" / spk
        src.mkdir(parents=True)
        _write_utterance(src, "sa1", seed=k)
        for kind, ext in (("audio", "wav"), ("labels", "lab")):
            (tmp_path / kind / spk).mkdir(parents=True)
            (src / ext / f"sa1.{ext}").rename(tmp_path / kind / spk / f"sa1.{ext}")
    audio = sorted((tmp_path / "audio").glob("*/sa1.wav"))
    out = tmp_path / "report"
    report = analyze_phonemes(EnergyModel(), audio, tmp_path / "labels", out, PhonemeOptions())
    assert report.utterances == 3 and report.unmatched_audio == ()
    pngs = sorted(p.name for p in out.glob("utterance_*.png"))
    assert {name.split("_", 2)[2] for name in pngs} == {
        "dr1-fvmh0_sa1.png",
        "dr1-mcpm0_sa1.png",
        "dr2-faem0_sa1.png",
    }


def test_find_recordings_from_a_manifest(tmp_path):
    _write_utterance(tmp_path, "a", 0)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.tsv").write_text(
        "id\tspeaker\tsplit\tduration\tpath\toffset\tlength\tf0_offset\n"
        f"a\tspk\ttrain\t2.0\t{tmp_path / 'wav' / 'a.wav'}\t0\t32000\t0\n"
        "b\tspk\tvalid\t2.0\t../wav/a.wav\t32000\t32000\t500\n"
    )
    assert [r.path for r in find_recordings(prepared)] == [(tmp_path / "wav" / "a.wav").resolve()]
    with pytest.raises(SpeechVQError, match="no audio files"):
        find_recordings(tmp_path / "lab")


def test_with_a_tiny_untrained_speechvq(tmp_path):
    pytest.importorskip("torch")
    import speechvq

    _write_utterance(tmp_path, "p225_001", 0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["p225"]))
    options = PhonemeOptions(pool=10, plots=False)
    report = analyze_phonemes(
        model, _paths(tmp_path / "wav"), tmp_path / "lab", tmp_path / "r", options
    )
    assert report.unit_rate == pytest.approx(25.0)
    assert report.trained.units == 50 and report.random is not None
    assert report.codebook_size == 16


def test_vctk_with_a_tiny_untrained_model(tmp_path):
    wavs, labs = SHARED / "vctk" / "wav48", SHARED / "vctk" / "lab" / "mono"
    if not labs.is_dir() or not wavs.is_dir():
        pytest.skip("../shared/data is absent")
    pytest.importorskip("torch")
    import speechvq

    items = sorted(wavs.glob("p22[56]/*_00[12].wav"))  # 4 files keep it quick
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny", speakers=["p225", "p226"]))
    report = analyze_phonemes(model, items, labs, tmp_path, PhonemeOptions(plots=False))
    assert report.utterances == 4
    t = report.trained
    assert 0 <= t.baseline <= t.accuracy_fit_all <= 1
    assert 0.1 < t.baseline_all < 0.5  # silence is the commonest phone
    assert 0 <= t.information.nmi <= 1 and t.boundaries.references > 50


def _paths(folder):
    return [r.path for r in find_recordings(folder)]
