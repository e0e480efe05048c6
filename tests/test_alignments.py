"""Alignment readers and phone folding, on tiny files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechvq.data.alignments import (
    PHONE_ORDER,
    Alignment,
    Segment,
    find_alignments,
    fold_alignment,
    fold_phone,
    match_alignments,
    phone_class,
    read_alignment,
    read_htk_lab,
    read_textgrid,
    read_timit_phn,
)
from speechvq.errors import SpeechVQError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_htk_mono_lab(tmp_path):
    path = tmp_path / "p225_001.lab"
    # VCTK style, with its rounding (13099999) and right-aligned columns.
    path.write_text("         0     850000 pau\n   850000   13099999 p\n  13099999   15800000 eh\n")
    ali = read_htk_lab(path)
    assert ali.phones == ["pau", "p", "eh"]
    assert ali.segments[1].start_s == pytest.approx(0.085)
    assert ali.end_s == pytest.approx(1.58)
    assert ali.source == str(path)


def test_hts_full_context_lab(tmp_path):
    path = tmp_path / "a.lab"
    path.write_text(
        "0 500000 x^x-pau+p=l@x_x/A:0_0_0/B:x-x-x\n"
        "500000 1200000 x^pau-p+l=iy@1_2/A:0_0_0/B:1-0-2\n"
        "1200000 2000000 pau^p-l+iy=z@2_1/A:0_0_0\n"
    )
    assert read_alignment(path).phones == ["pau", "p", "l"]


def test_timit_phn(tmp_path):
    path = tmp_path / "SA1.PHN"
    path.write_text("0 3050 h#\n3050 4559 sh\n4559 5723 ix\n5723 6400 q\n6400 8000 dcl\n")
    ali = read_alignment(path)
    assert ali.phones == ["h#", "sh", "ix", "q", "dcl"]
    assert ali.segments[1].start_s == pytest.approx(3050 / 16000)
    assert read_timit_phn(path, sample_rate=8000).end_s == pytest.approx(1.0)
    folded = fold_alignment(ali)
    assert folded.phones == ["sil", "sh", "ih", "sil"]  # q dropped, closure -> sil
    # The dropped q leaves a gap: both its edges are boundaries.
    assert folded.boundaries() == pytest.approx([3050 / 16000, 4559 / 16000, 5723 / 16000, 0.4])


def _textgrid(tiers: dict[str, list[tuple[float, float, str]]], xmax: float = 1.0) -> str:
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {xmax}",
        "tiers? <exists>",
        f"size = {len(tiers)}",
        "item []:",
    ]
    for n, (name, intervals) in enumerate(tiers.items(), start=1):
        lines += [
            f"    item [{n}]:",
            '        class = "IntervalTier"',
            f'        name = "{name}"',
            "        xmin = 0",
            f"        xmax = {xmax}",
            f"        intervals: size = {len(intervals)}",
        ]
        for k, (a, b, label) in enumerate(intervals, start=1):
            lines += [
                f"        intervals [{k}]:",
                f"            xmin = {a}",
                f"            xmax = {b}",
                f'            text = "{label}"',
            ]
    return "\n".join(lines) + "\n"


def test_textgrid_picks_the_phones_tier(tmp_path):
    pytest.importorskip("praatio", reason="TextGrids need praatio (the analysis extra)")
    path = tmp_path / "utt.TextGrid"
    path.write_text(
        _textgrid(
            {
                "words": [(0, 0.2, ""), (0.2, 1.0, "hi")],
                "phones": [(0, 0.2, ""), (0.2, 0.5, "HH"), (0.5, 1.0, "AY1")],
            }
        )
    )
    ali = read_alignment(path)
    assert ali.phones == ["", "HH", "AY1"]
    assert fold_alignment(ali).phones == ["sil", "hh", "ay"]
    assert read_textgrid(path, tier="words").phones == ["", "hi"]
    with pytest.raises(SpeechVQError, match="no interval tier named"):
        read_textgrid(path, tier="syllables")


def test_textgrid_without_a_phone_tier_name_takes_the_finest(tmp_path):
    pytest.importorskip("praatio", reason="TextGrids need praatio (the analysis extra)")
    path = tmp_path / "utt.TextGrid"
    path.write_text(
        _textgrid(
            {
                "ORT": [(0, 1.0, "hi")],
                "MAU": [(0, 0.2, "<p:>"), (0.2, 0.5, "h"), (0.5, 1.0, "aI")],
            }
        )
    )
    assert read_alignment(path).phones == ["<p:>", "h", "aI"]


def test_fold_phone():
    assert fold_phone("AH0") == "ah"
    assert fold_phone("ER1") == "er"
    assert fold_phone("ax") == "ah"  # VCTK/HTS schwa
    assert fold_phone("ax-h") == "ah"
    assert fold_phone("ao") == "aa"
    assert fold_phone("zh") == "sh"
    assert fold_phone("ux") == "uw"
    assert fold_phone("nx") == "n"
    for silence in ("pau", "sil", "sp", "h#", "#h", "epi", "pcl", "bcl", "", "  "):
        assert fold_phone(silence) == "sil"
    assert fold_phone("q") is None
    assert fold_phone("spn") is None
    assert fold_phone("aI") == "ai"  # outside the tables: lower-cased, kept
    assert len(PHONE_ORDER) == len(set(PHONE_ORDER)) == 39
    assert all(fold_phone(p) == p for p in PHONE_ORDER)
    assert phone_class("iy") == "vowels" and phone_class("ai") == "other"


def test_boundaries_merge_repeated_phones():
    ali = Alignment(
        (
            Segment(0, 0.1, "sil"),
            Segment(0.1, 0.2, "sil"),
            Segment(0.2, 0.3, "a"),
            Segment(0.3, 0.5, "b"),
        )
    )
    assert ali.boundaries() == pytest.approx([0.2, 0.3])


def test_find_alignments(tmp_path):
    (tmp_path / "p225").mkdir()
    (tmp_path / "p225" / "p225_001.lab").write_text("0 100 pau\n")
    (tmp_path / "x.PHN").write_text("0 100 h#\n")
    (tmp_path / "notes.txt").write_text("ignored")
    found = find_alignments(tmp_path)
    assert found == {"p225/p225_001": tmp_path / "p225" / "p225_001.lab", "x": tmp_path / "x.PHN"}
    (tmp_path / "p225" / "p225_001.TextGrid").write_text("")
    with pytest.raises(SpeechVQError, match="two alignments"):
        find_alignments(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpeechVQError, match="no alignment files"):
        find_alignments(empty)
    with pytest.raises(SpeechVQError, match="not a directory"):
        find_alignments(tmp_path / "missing")


def test_timit_layout_matches_by_relative_path(tmp_path):
    """Every TIMIT speaker reads sa1: the speaker folder tells the alignments apart."""
    for spk in ("dr1-fvmh0", "dr1-mcpm0"):
        (tmp_path / "timit" / spk).mkdir(parents=True)
        for utt in ("sa1", "sx53"):
            (tmp_path / "timit" / spk / f"{utt}.phn").write_text("0 1600 h#\n")
    audio = [tmp_path / "timit" / spk / "sa1.wav" for spk in ("dr1-fvmh0", "dr1-mcpm0")]
    audio.append(tmp_path / "elsewhere" / "unlabelled.wav")
    matched, unmatched = match_alignments(audio, find_alignments(tmp_path / "timit"))
    assert matched == {
        "dr1-fvmh0/sa1": (audio[0], tmp_path / "timit" / "dr1-fvmh0" / "sa1.phn"),
        "dr1-mcpm0/sa1": (audio[1], tmp_path / "timit" / "dr1-mcpm0" / "sa1.phn"),
    }
    assert unmatched == [audio[2]]
    # Audio in another tree than the labels still matches on the speaker folder and name.
    other = [tmp_path / "wav" / "dr1-mcpm0" / "sx53.flac"]
    assert list(match_alignments(other, find_alignments(tmp_path / "timit"))[0]) == [
        "dr1-mcpm0/sx53"
    ]


def test_stem_fallback_only_where_unique(tmp_path):
    labels = tmp_path / "lab" / "mono"
    labels.mkdir(parents=True)
    (labels / "p225_001.lab").write_text("0 100 pau\n")
    wav = tmp_path / "wav48" / "p225" / "p225_001.wav"
    matched, _ = match_alignments([wav], find_alignments(labels))
    assert matched == {"p225_001": (wav, labels / "p225_001.lab")}
    twin = tmp_path / "copy" / "p225_001.wav"
    with pytest.raises(SpeechVQError, match="two audio files match"):
        match_alignments([wav, twin], find_alignments(labels))
    (tmp_path / "lab" / "full").mkdir()
    (tmp_path / "lab" / "full" / "p225_001.lab").write_text("0 100 pau\n")
    with pytest.raises(SpeechVQError, match="two alignments for 'p225_001'"):
        match_alignments([wav], find_alignments(tmp_path / "lab"))


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.lab"
    bad.write_text("0 100 a\nzero 200 b\n")
    with pytest.raises(SpeechVQError, match=r"bad.lab:2: expected"):
        read_alignment(bad)
    overlap = tmp_path / "overlap.lab"
    overlap.write_text("0 5000000 a\n1000000 6000000 b\n")
    with pytest.raises(SpeechVQError, match="overlap"):
        read_alignment(overlap)
    with pytest.raises(SpeechVQError, match="no such file"):
        read_alignment(tmp_path / "missing.lab")
    with pytest.raises(SpeechVQError, match="unknown alignment format"):
        read_alignment(tmp_path / "x.ctm")
    empty = tmp_path / "empty.lab"
    empty.write_text("\n")
    with pytest.raises(SpeechVQError, match="no labelled segments"):
        read_alignment(empty)


def test_vctk_labels_fold_into_the_39_set():
    labels = SHARED / "vctk" / "lab" / "mono"
    if not labels.is_dir():
        pytest.skip("../shared/data is absent")
    table = find_alignments(labels)
    assert len(table) >= 10
    phones = set()
    for path in table.values():
        ali = fold_alignment(read_alignment(path))
        assert ali.start_s == 0.0 and ali.end_s > 1.0
        phones |= set(ali.phones)
    assert phones <= set(PHONE_ORDER)
    assert "sil" in phones and "ah" in phones
