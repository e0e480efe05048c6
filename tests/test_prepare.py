"""`speechvq prepare` and `PreparedCorpus` on small corpora generated in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechvq.data.corpus import CorpusWriter, PreparedCorpus
from speechvq.data.layouts import Source, detect_layout, discover, parse_source
from speechvq.data.prepare import (
    PrepareConfig,
    prepare_corpus,
    prepare_files,
    split_utterances,
    trim_silence,
)
from speechvq.errors import SpeechVQError

HOP = 64
FAST = PrepareConfig(f0_method="dio", workers=1, heldout=0.0)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(freq: float, sr: int, seconds: float = 0.6, pad: float = 0.3, seed: int = 0) -> np.ndarray:
    """A tone with `pad` seconds of faint noise before and after: `[T]`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    body = 0.5 * np.sin(2 * np.pi * freq * t)
    quiet = int(pad * sr)
    wave = np.concatenate([np.zeros(quiet), body, np.zeros(quiet)])
    return wave + 1e-4 * rng.standard_normal(len(wave))


def write(path: Path, wave: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype=subtype)
    return path


def manifest(out: Path) -> list[dict]:
    lines = (out / "manifest.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


# -- discovery ---------------------------------------------------------------


def test_vctk_layout_from_root_or_wav48(tmp_path):
    for spk in ("p225", "p226"):
        for n in (1, 2):
            write(tmp_path / "wav48" / spk / f"{spk}_{n:03d}.wav", tone(200, 48000, 0.1), 48000)
    (tmp_path / "speaker-info.txt").write_text("ID AGE\n")
    for root in (tmp_path, tmp_path / "wav48"):
        source = parse_source(str(root))
        assert source.layout == "vctk"
        files, skipped = discover(source)
        assert [f.id for f in files] == ["p225_001", "p225_002", "p226_001", "p226_002"]
        assert {f.speaker for f in files} == {"p225", "p226"} and not skipped


def test_librispeech_layouts(tmp_path):
    nested = tmp_path / "nested"
    write(nested / "19" / "198" / "19-198-0000.flac", tone(150, 16000, 0.1), 16000)
    write(nested / "19" / "198" / "19-198-0001.flac", tone(150, 16000, 0.1), 16000)
    (nested / "19" / "198" / "19-198.trans.txt").write_text("19-198-0000 HELLO\n")
    flat = tmp_path / "flat"
    write(flat / "103-1240-0000.flac", tone(150, 16000, 0.1), 16000)
    write(flat / "1034-121119-0000.flac", tone(150, 16000, 0.1), 16000)
    write(flat / "notes.flac", tone(150, 16000, 0.1), 16000)
    by_speaker = tmp_path / "by_speaker"
    write(by_speaker / "1688" / "1688-142285-0000.flac", tone(150, 16000, 0.1), 16000)
    expected = {nested: {"19"}, flat: {"103", "1034"}, by_speaker: {"1688"}}
    for root, speakers in expected.items():
        assert detect_layout(root) == "librispeech"
        files, skipped = discover(Source(root, "librispeech"))
        assert {f.speaker for f in files} == speakers
        assert all(f.id == f.path.stem for f in files)
    assert [Path(s.path).name for s in discover(Source(flat, "librispeech"))[1]] == ["notes.flac"]


def test_kaldi_layout(tmp_path):
    """speechocean762's layout: `<root>/train/{wav.scp,utt2spk}`, audio paths from `<root>`."""
    root = tmp_path / "so762"
    for spk, utts in (("0001", ("000010011", "000010035")), ("0005", ("000050012",))):
        for utt in utts:
            write(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.flac", tone(200, 16000), 16000)
    data = root / "train"
    data.mkdir()
    (data / "wav.scp").write_text(
        "000010011 WAVE/SPEAKER0001/000010011.flac\n"
        "000010035 WAVE/SPEAKER0001/000010035.flac\n"
        "000050012 WAVE/SPEAKER0005/000050012.flac\n"
        "000050099 WAVE/SPEAKER0005/missing.flac\n"
        "000050100 sox a.sph -t wav - |\n"
        "000070001 WAVE/SPEAKER0001/000010011.flac\n"
    )
    (data / "utt2spk").write_text(
        "000010011 0001\n000010035 0001\n000050012 0005\n000050099 0005\n000050100 0005\n"
    )
    assert detect_layout(root) == detect_layout(data) == "kaldi"
    for source in (Source(root, "kaldi"), parse_source(f"{data}:kaldi")):
        files, skipped = discover(source)
        assert [(f.id, f.speaker) for f in files] == [
            ("so762_000010011", "so762_0001"),
            ("so762_000010035", "so762_0001"),
            ("so762_000050012", "so762_0005"),
        ]
        assert files[0].path.resolve() == (root / "WAVE/SPEAKER0001/000010011.flac").resolve()
        reasons = sorted(s.reason.split(" ")[0] for s in skipped)
        assert reasons == ["a", "audio", "no"]  # piped command, missing file, no speaker
    (data / "utt2spk").write_text("000010011\n")
    with pytest.raises(SpeechVQError, match="utt2spk:1: expected"):
        discover(Source(root, "kaldi"))


def test_folder_layout_ids_unique_across_speakers(tmp_path):
    for spk in ("SF1", "TM1"):
        write(tmp_path / spk / "100001.wav", tone(200, 16000, 0.1), 16000)
    write(tmp_path / "TM1" / "TM1_extra.ogg", tone(200, 16000, 0.1), 16000, "VORBIS")
    write(tmp_path / "stray.wav", tone(200, 16000, 0.1), 16000)
    source = parse_source(f"{tmp_path}:folder")
    files, skipped = discover(source)
    assert [(f.speaker, f.id) for f in files] == [
        ("SF1", "SF1_100001"),
        ("TM1", "TM1_100001"),
        ("TM1", "TM1_extra"),
    ]
    assert [Path(s.path).name for s in skipped] == ["stray.wav"]
    assert detect_layout(tmp_path) == "folder"


def test_parse_source_errors(tmp_path):
    with pytest.raises(SpeechVQError, match="no such folder"):
        parse_source(str(tmp_path / "missing"))
    with pytest.raises(SpeechVQError, match="unknown layout"):
        parse_source(str(tmp_path), default_layout="timit")


# -- processing ----------------------------------------------------------------


def test_trim_silence_keeps_speech_and_margin():
    sr = 16000
    wave = tone(200, sr, seconds=1.0, pad=0.5)
    span = trim_silence(wave, sr, margin_s=0.05)
    # 50 ms margin, plus up to one 25 ms analysis window that straddles the edge
    assert 0.42 <= span.start / sr <= 0.45 and 1.55 <= span.stop / sr <= 1.58
    assert trim_silence(np.zeros(sr, dtype=np.float32), sr) == slice(0, 0)


def test_trim_silence_with_noisy_room():
    # VCTK-like: room noise only 30 dB below the speech, which a fixed 40 dB depth keeps.
    sr = 16000
    rng = np.random.default_rng(1)
    wave = tone(200, sr, seconds=1.0, pad=0.5) + 0.01 * rng.standard_normal(2 * sr)
    span = trim_silence(wave, sr, margin_s=0.05)
    assert 0.42 <= span.start / sr <= 0.45 and 1.55 <= span.stop / sr <= 1.58


def test_no_trim_keeps_whole_files(tmp_path):
    write(tmp_path / "c" / "s" / "a.wav", tone(200, 16000, seconds=0.6, pad=0.3), 16000)
    config = PrepareConfig(f0_method="dio", workers=1, heldout=0.0, trim=False)
    summary = prepare_corpus([parse_source(str(tmp_path / "c"))], tmp_path / "o", config)
    assert summary.minutes["train"] * 60 == pytest.approx(1.2, abs=HOP / 16000)


def make_mixed_corpus(root: Path) -> Path:
    """Rates 22.05/44.1/16 kHz, 8/16/24-bit, a stereo file, and four bad files."""
    write(root / "a" / "a1.wav", tone(150, 22050, seed=1), 22050, "PCM_U8")
    write(root / "a" / "a2.wav", tone(150, 44100, seed=2), 44100, "PCM_24")
    write(root / "a" / "a3.flac", tone(150, 16000, seed=3), 16000, "PCM_16")
    stereo = np.stack([tone(300, 16000, seed=4), tone(300, 16000, seed=5)], axis=1)
    write(root / "b" / "b1.wav", stereo, 16000)
    write(root / "b" / "b2.wav", tone(300, 44100, 0.8, seed=6), 44100, "PCM_24")
    write(root / "b" / "empty.wav", np.zeros(0), 16000)
    write(root / "b" / "silent.wav", np.zeros(8000), 16000)
    write(root / "b" / "short.wav", tone(300, 16000, seconds=0.004, pad=0.0), 16000)
    (root / "b" / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    return root


def test_prepare_aligns_arrays_and_counts_skips(tmp_path):
    corpus = make_mixed_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    summary = prepare_corpus([parse_source(str(corpus))], out, FAST, progress=False)
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert set(reasons) == {"empty.wav", "silent.wav", "short.wav", "garbage.wav"}
    assert "too short" in reasons["short.wav"] and "not a readable" in reasons["garbage.wav"]
    assert summary.utterances == {"train": 5, "valid": 0}
    assert "skipped 4 file(s)" in summary.table()

    audio = np.load(out / "audio.npy", mmap_mode="r")
    f0 = np.load(out / "f0.npy", mmap_mode="r")
    rows = manifest(out)
    offset = f0_offset = 0
    for row in rows:
        length = int(row["length"])
        assert length % HOP == 0 and int(row["offset"]) == offset
        assert int(row["f0_offset"]) == f0_offset
        offset, f0_offset = offset + length, f0_offset + length // HOP
    assert (audio.shape[0], f0.shape[0]) == (offset, f0_offset) == (offset, offset // HOP)

    corpus_ = PreparedCorpus(out)
    assert corpus_.speakers == ["a", "b"] and corpus_.sample_rate == 16000
    for utt in corpus_.utterances("train"):
        wave, pitch = corpus_.audio(utt), corpus_.f0(utt)
        assert wave.dtype == np.float32 and len(wave) == HOP * len(pitch)
        # trimmed to the 0.6 s (b2: 0.8 s) tone plus 2 x 50 ms of margin and up to
        # one 25 ms analysis window on each side
        body = 0.8 if utt.id == "b_b2" else 0.6
        assert body + 0.09 < utt.duration < body + 0.16
        # each utterance's F0 slice is its own tone: 150 Hz for a*, 300 Hz for b*
        expected = 150 if utt.speaker == "a" else 300
        assert abs(np.median(pitch[pitch > 0]) - expected) < 0.05 * expected
        assert 0.3 < np.abs(wave).max() < 0.55  # levels kept, not normalised


def test_crop_is_hop_aligned(tmp_path):
    corpus = make_mixed_corpus(tmp_path / "corpus")
    prepare_corpus([parse_source(str(corpus))], tmp_path / "out", FAST, progress=False)
    c = PreparedCorpus(tmp_path / "out")
    utt = c.utterances()[0]
    crop = c.crop(utt, 2 * HOP, 10 * HOP)
    np.testing.assert_array_equal(crop.audio, c.audio(utt)[2 * HOP : 12 * HOP])
    np.testing.assert_array_equal(crop.f0, c.f0(utt)[2:12])
    with pytest.raises(ValueError):
        c.crop(utt, 1, HOP)
    with pytest.raises(ValueError):
        c.crop(utt, 0, utt.length + HOP)
    rand = c.random_crop(utt, 10**9, np.random.default_rng(0))
    assert len(rand.audio) == utt.length and len(rand.f0) == utt.length // HOP


def test_pool_of_workers_gives_same_output(tmp_path):
    corpus = make_mixed_corpus(tmp_path / "corpus")
    sources = [parse_source(str(corpus))]
    prepare_corpus(sources, tmp_path / "one", FAST, progress=False)
    pooled = PrepareConfig(f0_method="dio", workers=2, heldout=0.0)
    prepare_corpus(sources, tmp_path / "two", pooled, progress=False)
    for name in ("audio.npy", "f0.npy", "manifest.tsv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


# -- splits ----------------------------------------------------------------------


def test_split_by_utterance_is_per_speaker_and_deterministic():
    utts = [(f"{spk}_{n:04d}", spk) for spk in ("x", "y") for n in range(400)]
    split = split_utterances(utts, 0.1)
    for spk in ("x", "y"):
        share = np.mean([split[i] == "valid" for i, s in utts if s == spk])
        assert 0.06 < share < 0.14
    assert split_utterances(list(reversed(utts)), 0.1) == split
    # adding utterances never moves existing ones
    more = split_utterances([*utts, ("x_9999", "x")], 0.1)
    assert all(more[i] == split[i] for i in split)


def test_split_keeps_every_speaker_in_training():
    utts = [("solo_1", "solo"), ("duo_1", "duo"), ("duo_2", "duo")]
    split = split_utterances(utts, 0.99)
    assert split["solo_1"] == "train"
    assert sorted(split[i] for i in ("duo_1", "duo_2")) == ["train", "valid"]


def test_split_by_heldout_speakers(tmp_path):
    corpus = make_mixed_corpus(tmp_path / "corpus")
    config = PrepareConfig(f0_method="dio", workers=1, heldout=0.0, heldout_speakers=("b",))
    summary = prepare_corpus([parse_source(str(corpus))], tmp_path / "out", config, progress=False)
    assert summary.utterances == {"train": 3, "valid": 2}
    c = PreparedCorpus(tmp_path / "out")
    assert c.speakers_in("valid") == ["b"] and c.speakers_in("train") == ["a"]
    with pytest.raises(SpeechVQError, match="no such speaker"):
        bad = PrepareConfig(f0_method="dio", workers=1, heldout_speakers=("zz",))
        prepare_corpus([parse_source(str(corpus))], tmp_path / "bad", bad, progress=False)


# -- the format writer ----------------------------------------------------------


def test_corpus_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pcm = [rng.integers(-30000, 30000, n * HOP).astype(np.int16) for n in (3, 5)]
    with CorpusWriter(tmp_path / "c", 16000, HOP) as writer:
        for i, x in enumerate(pcm):
            writer.add(f"u{i}", "s", f"u{i}.wav", x, np.full(len(x) // HOP, 100.0 + i, np.float32))
        with pytest.raises(ValueError):  # not a whole number of frames
            writer.add("bad", "s", "bad.wav", np.zeros(HOP + 1, np.int16), np.zeros(1, np.float32))
        writer.finish({"u0": "train", "u1": "valid"})
    c = PreparedCorpus(tmp_path / "c")
    (u0,), (u1,) = c.utterances("train"), c.utterances("valid")
    np.testing.assert_array_equal(c.audio(u1), pcm[1] / np.float32(32768))
    assert (u1.offset, u1.f0_offset, u1.length) == (3 * HOP, 3, 5 * HOP)
    np.testing.assert_array_equal(c.f0(u1), np.full(5, 101.0, np.float32))
    assert c.audio(u0).max() < 1.0 and c.audio(u0).min() >= -1.0


def test_corpus_writer_left_without_finish_leaves_nothing(tmp_path):
    with CorpusWriter(tmp_path / "c", 16000, HOP) as writer:
        writer.add("u0", "s", "u0.wav", np.ones(2 * HOP, np.int16), np.zeros(2, np.float32))
    assert list((tmp_path / "c").iterdir()) == []


# -- refusals ----------------------------------------------------------------------


def test_refuses_to_overwrite_and_unknown_versions(tmp_path):
    corpus = make_mixed_corpus(tmp_path / "corpus")
    sources, out = [parse_source(str(corpus))], tmp_path / "out"
    prepare_corpus(sources, out, FAST, progress=False)
    with pytest.raises(SpeechVQError, match="--force"):
        prepare_corpus(sources, out, FAST, progress=False)
    prepare_corpus(sources, out, FAST, force=True, progress=False)

    meta = json.loads((out / "prepare.json").read_text())
    (out / "prepare.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(SpeechVQError, match=str(out)):
        PreparedCorpus(out)
    (out / "prepare.json").write_text(json.dumps(meta))
    (out / "f0.npy").unlink()
    with pytest.raises(SpeechVQError, match="f0.npy is missing"):
        PreparedCorpus(out)
    (out / "prepare.json").unlink()
    with pytest.raises(SpeechVQError, match="no prepare.json"):
        PreparedCorpus(out)


def test_config_refuses_bad_values():
    with pytest.raises(SpeechVQError, match="--heldout"):
        PrepareConfig(heldout=1.0)
    with pytest.raises(SpeechVQError, match="--f0-method"):
        PrepareConfig(f0_method="crepe")


def test_same_corpus_twice_skips_duplicate_ids(tmp_path):
    write(tmp_path / "c" / "s" / "a.wav", tone(200, 16000), 16000)
    sources = [parse_source(f"{tmp_path / 'c'}:folder"), parse_source(str(tmp_path / "c"))]
    summary = prepare_corpus(sources, tmp_path / "out", FAST, progress=False)
    assert summary.utterances["train"] == 1
    assert [s.reason.split(" (")[0] for s in summary.skipped] == ["duplicate id s_a"]


def test_failed_run_leaves_no_prepared_folder(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "a").mkdir(parents=True)
    (corpus / "a" / "bad.wav").write_bytes(b"garbage")
    with pytest.raises(SpeechVQError, match="no usable audio"):
        prepare_corpus([Source(corpus, "folder")], tmp_path / "out", FAST, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


# -- the real corpora -------------------------------------------------------------


@pytest.mark.shared
def test_shared_data_handful_of_each(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent")
    dirs = {
        "vctk": "vctk",
        "librispeech/test-other": "librispeech",
        "librispeech/train-clean-100": "librispeech",
        "vcc2016": "folder",
        "speechocean762": "kaldi",
    }
    sources, files = [], []
    for rel, layout in dirs.items():
        source = parse_source(str(SHARED / rel))
        assert source.layout == layout
        found, skipped = discover(source)
        assert found and not skipped
        sources.append(source)
        files += sorted(found, key=lambda f: f.path.stat().st_size)[:2]  # the 2 shortest
    config = PrepareConfig(workers=1, heldout=0.0)  # Harvest, as shipped models use
    summary = prepare_files(files, tmp_path / "out", config, sources=sources, progress=False)
    assert not summary.skipped and summary.utterances["train"] == 10
    c = PreparedCorpus(tmp_path / "out")
    assert c.speakers == sorted({f.speaker for f in files})
    for utt in c.utterances():
        pitch = c.f0(utt)
        assert len(c.audio(utt)) == HOP * len(pitch)
        # voiced speech at a voice's pitch, not locked on 50/60 Hz mains hum
        assert np.mean(pitch > 0) > 0.2 and np.median(pitch[pitch > 0]) > 75, utt.id
