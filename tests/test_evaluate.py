"""`speechvq evaluate`: file discovery, baselines, the whole run with a tiny model."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from speechvq.audio.f0 import extract_f0
from speechvq.audio.io import load_audio
from speechvq.data.discovery import Recording, find_recordings
from speechvq.errors import SpeechVQError
from speechvq.evaluation import metrics as M
from speechvq.evaluation.baselines import parse_baseline, parse_baselines
from speechvq.evaluation.evaluate import EvaluationOptions, evaluate
from speechvq.evaluation.report import check_report_dir, write_report
from tests.conftest import synth_speechlike
from tests.test_metrics import harmonic

SR = 16000
FAST = ("pesq", "mel", "f0")  # no neural scorer; STOI wants more than 0.3 s


def write(path, wave, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, subtype="PCM_16")
    return path


def test_find_recordings_speakers_from_folders_and_names(tmp_path):
    write(tmp_path / "p225" / "p225_001.wav", synth_speechlike(0.2))
    write(tmp_path / "p226" / "x.flac", synth_speechlike(0.2))
    write(tmp_path / "p227_003.wav", synth_speechlike(0.2))
    write(tmp_path / "hello.wav", synth_speechlike(0.2))
    (tmp_path / "notes.txt").write_text("not audio")
    items = find_recordings(tmp_path)
    assert [(i.id, i.speaker) for i in items] == [
        ("hello", None),
        ("p225/p225_001", "p225"),
        ("p226/x", "p226"),
        ("p227_003", "p227"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeechVQError, match="no audio files"):
        find_recordings(tmp_path / "empty")
    with pytest.raises(SpeechVQError, match="no such file"):
        find_recordings(tmp_path / "missing")


def test_find_recordings_reads_a_prepared_corpus_valid_split(tmp_path):
    from speechvq.data.layouts import parse_source
    from speechvq.data.prepare import PrepareConfig, prepare_corpus

    for spk in ("a", "b"):
        for k in range(4):
            write(tmp_path / "src" / spk / f"{spk}_{k}.wav", synth_speechlike(0.4, seed=k))
    config = PrepareConfig(f0_method="dio", workers=1, heldout=0.5)
    prepare_corpus([parse_source(str(tmp_path / "src"))], tmp_path / "prep", config, progress=False)
    items = find_recordings(tmp_path / "prep", split="valid")
    assert items and all(i.path.is_file() and i.speaker in ("a", "b") for i in items)
    assert find_recordings(tmp_path / "prep" / "manifest.tsv", split="valid") == items
    assert len(find_recordings(tmp_path / "prep", split="train")) == 8 - len(items)


def test_parse_baselines():
    assert [b.name for b in parse_baselines("codec2-2400, opus-6k,codec2-2400")] == [
        "codec2-2400",
        "opus-6k",
    ]
    assert parse_baseline("codec2-700c").bitrate == 700.0
    assert parse_baseline("opus-12k").bitrate == 12000.0
    assert parse_baselines("none") == ()
    for bad in ("mp3-128k", "codec2-9999", "opus-2k"):
        with pytest.raises(SpeechVQError):
            parse_baseline(bad)


@pytest.mark.parametrize("name", ["codec2-2400", "codec2-3200", "opus-6k"])
def test_baseline_round_trip(name):
    baseline = parse_baseline(name)
    if baseline.missing():
        pytest.skip(baseline.missing())
    wave = synth_speechlike(1.0, seed=4)
    out = baseline.roundtrip(wave, SR)
    assert out.dtype == np.float32 and abs(len(out) - len(wave)) < 0.05 * SR
    aligned = M.align(wave, out, SR)
    assert abs(aligned.lag) <= M.MAX_LAG_S * SR
    # level, rate and sample format survive: same loudness, same pitch
    rms = [np.sqrt(np.mean(np.square(x))) for x in (aligned.reference, aligned.test)]
    assert 0.5 < rms[1] / rms[0] < 2.0
    # plain Harvest: this checks the codec, not the judge (see the next test)
    ref_f0, out_f0 = (
        extract_f0(x, SR, 64, method="harvest") for x in (aligned.reference, aligned.test)
    )
    both = (ref_f0 > 0) & (out_f0 > 0)
    assert both.mean() > 0.5 and abs(np.median(out_f0[both] / ref_f0[both]) - 1) < 0.02


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "codec2-2400",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the hum-notched judge tracks codec2 2400's output of this tone at 1.7x "
                "its pitch (plain Harvest: 1.0x); docs/evaluate.md",
            ),
        ),
        "codec2-3200",
        "opus-6k",
    ],
)
def test_the_f0_judge_scores_a_baseline_that_keeps_the_pitch(name):
    baseline = parse_baseline(name)
    if baseline.missing():
        pytest.skip(baseline.missing())
    wave = synth_speechlike(1.0, seed=4)
    aligned = M.align(wave, baseline.roundtrip(wave, SR), SR)
    assert M.f0_scores(aligned.reference, aligned.test, SR).f0_match > 0.7


def test_missing_codec_is_skipped_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no codec binaries anywhere
    assert "apt-get install codec2" in parse_baseline("codec2-2400").missing()
    item = Recording("a", write(tmp_path / "a.wav", synth_speechlike(0.5)), None)
    report = evaluate(None, [item], EvaluationOptions(metrics=("mel",), progress=False, examples=0))
    assert all(s.skipped for s in report.systems if s.name != "reference")
    md = write_report(report, tmp_path / "out")[1].read_text()
    assert "system opus-6k: opusenc and opusdec not found" in md


def test_missing_metric_package_is_skipped(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "pystoi", None)  # `import pystoi` now raises ImportError
    item = Recording("a", write(tmp_path / "a.wav", synth_speechlike(0.5)), "p225")
    options = EvaluationOptions(baselines=(), metrics=("stoi", "mel"), progress=False, examples=0)
    report = evaluate(tiny_model, [item], options)
    assert "pystoi" in report.skipped_metrics["stoi"]
    scores = report.system("speechvq").scores["a"]
    assert "stoi" not in scores and scores["mel_distance"] > 0


def test_bad_inputs_are_plain_errors(tmp_path, tiny_model):
    good = write(tmp_path / "a.wav", synth_speechlike(0.3))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    items = [Recording("a", good, "p225"), Recording("bad", tmp_path / "bad.wav", None)]
    options = EvaluationOptions(baselines=(), metrics=("mel",), progress=False)
    report = evaluate(None, items, options)  # an unreadable file is skipped with a note
    assert [i.id for i in report.items] == ["a"] and "skipped bad" in report.notes[0]
    with pytest.raises(SpeechVQError, match="unknown speaker"):
        evaluate(tiny_model, items, EvaluationOptions(convert_to=("nobody",), progress=False))
    with pytest.raises(SpeechVQError, match="share the id"):
        evaluate(None, [items[0], items[0]], options)
    with pytest.raises(SpeechVQError, match="unknown metric"):
        evaluate(None, items, EvaluationOptions(metrics=("bleu",)))
    write_report(report, tmp_path / "out")
    with pytest.raises(SpeechVQError, match="--force"):
        check_report_dir(tmp_path / "out")


def _two_files(tmp_path):
    root = tmp_path / "audio"
    # 0.3 s each: the tiny WaveNet decodes sample by sample, 4 times per run
    write(root / "p225" / "p225_001.wav", synth_speechlike(0.3, seed=5))
    write(root / "p226" / "p226_001.wav", harmonic(220.0, 0.3))
    return find_recordings(root)


def test_whole_run_writes_all_outputs(tmp_path, tiny_model):
    pytest.importorskip("matplotlib")
    items = _two_files(tmp_path)
    options = EvaluationOptions(
        baselines=("codec2-2400", "opus-6k"),
        convert_to=("p225", "p226"),
        metrics=FAST,
        progress=False,
    )
    report = evaluate(tiny_model, items, options)
    paths = write_report(report, tmp_path / "report")
    names = sorted(p.name for p in paths)
    assert names == [
        "quality_vs_bitrate.png",
        "results.json",
        "results.md",
        "spectrogram_1_p225_p225_001.png",
        "spectrogram_2_p226_p226_001.png",
    ]
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    model = next(s for s in data["systems"] if s["name"] == "speechvq")
    assert model["bitrate"] == tiny_model.config.nominal_bitrate
    assert set(model["per_file"]) == {"p225/p225_001", "p226/p226_001"}
    voicing = [scores["voicing"] for scores in model["per_file"].values()]
    assert model["summary"]["voicing"]["mean"] == pytest.approx(np.mean(voicing))
    # each file is converted to the other speaker only
    conv = data["conversion"]["per_file"]
    assert sorted((c["source"], c["target"]) for c in conv) == [("p225", "p226"), ("p226", "p225")]
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| speechvq | 1.00 |" in md and "## Voice conversion" in md
    for png in paths[2:]:
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_whole_run_with_neural_metrics(tmp_path, tiny_model):
    for module in ("pystoi", "pesq", "resemblyzer", "speechmos", "matplotlib"):
        pytest.importorskip(module)
    items = _two_files(tmp_path)
    options = EvaluationOptions(baselines=(), convert_to=("p226",), progress=False)
    # Conversion returns the target's own recording: its similarity to the
    # target's centroid (made of that recording alone) must then be 1.
    target_wave = load_audio(items[1].path, 16000)[0]
    tiny_model.convert = lambda wave, sr, target, seed=None: target_wave
    report = evaluate(tiny_model, items, options)
    assert not report.skipped_metrics
    summary = report.system("speechvq").summary()
    # 0.3 s files: too short for STOI; untrained output: no F0 match (NaN), voicing yes
    assert {"speaker_sim", "dnsmos_ovrl", "pesq", "voicing"} <= set(summary)
    direct = [M.dnsmos(load_audio(i.path, 16000)[0], 16000).ovrl for i in items]
    assert report.system("reference").summary()["dnsmos_ovrl"]["mean"] == pytest.approx(
        np.mean(direct)
    )
    (row,) = report.conversion_summary()  # only the p225 file is converted
    assert row["target"] == "p226" and row["n"] == 1 and row["accuracy"] == 1.0
    assert row["sim_target"]["mean"] > 0.99 > row["sim_source"]["mean"]
    assert any("trivial" in note for note in report.notes)
    write_report(report, tmp_path / "report")


def test_a_perfect_codec_scores_perfectly(tmp_path, tiny_model):
    """A system that gives back its input: no lag, no mel distance, F0 and voicing agree."""
    items = _two_files(tmp_path)
    last = {}

    def encode(wave, sr):
        last["wave"] = wave
        return np.zeros(len(wave) // 64, np.int64)

    tiny_model.encode = encode
    tiny_model.decode = lambda codes, speaker, seed=None: last["wave"]
    options = EvaluationOptions(baselines=(), metrics=("mel", "f0"), progress=False, examples=0)
    report = evaluate(tiny_model, items, options)
    for scores in report.system("speechvq").scores.values():
        assert scores["lag_ms"] == 0.0 and scores["mel_distance"] < 1e-3, scores
        assert scores["voicing"] == 1.0 and scores["f0_match"] == 1.0, scores


def test_cli_evaluate_if_wired(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from speechvq.cli import app

    if "evaluate" not in {c.name or c.callback.__name__ for c in app.registered_commands}:
        pytest.skip("the evaluate command is not wired into speechvq.cli yet")
    if shutil.which("c2enc") is None:
        pytest.skip("codec2 is not installed")
    items = _two_files(tmp_path)
    tiny_model.save(tmp_path / "tiny.safetensors")
    args = ["evaluate", str(tmp_path / "audio"), "--model", str(tmp_path / "tiny.safetensors")]
    args += ["--baselines", "codec2-3200", "--metrics", "mel,f0", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "results.md").is_file() and len(items) == 2
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_entropy_bitrate_under_the_prior(tmp_path, tiny_model):
    import torch

    from speechvq.codec.entropy import ideal_bits
    from speechvq.evaluation.evaluate import _prior_bits
    from speechvq.inference.compression import PriorSource
    from speechvq.models.prior import Prior, PriorConfig

    K = tiny_model.config.quantizer.codebook_size
    torch.manual_seed(1)
    tiny_model.prior = Prior(PriorConfig.preset("tiny", K, speakers=2))
    items = _two_files(tmp_path)
    options = EvaluationOptions(baselines=(), metrics=("mel",), progress=False, examples=0)
    report = evaluate(tiny_model, items, options)
    rate = report.system("speechvq").entropy_bitrate
    # an untrained prior is near uniform: about log2(K) bits per code
    assert 0.8 < rate / tiny_model.config.nominal_bitrate < 1.3
    # the teacher-forced pass gives the range coder's step-by-step code length
    codes = tiny_model.encode(synth_speechlike(0.3, seed=5), SR)
    fast = _prior_bits(tiny_model, codes, items[0])
    slow = ideal_bits(codes, PriorSource.for_model(tiny_model, "p225"))
    assert fast == pytest.approx(slow, rel=1e-4)


def test_references_give_centroids_for_targets_absent_from_the_inputs(
    tmp_path, tiny_model, monkeypatch
):
    # A fake speaker encoder keeps this fast; the centroid logic is what is tested.
    monkeypatch.setattr(M, "speaker_embedding", lambda w, sr: np.array([w.std(), 1.0]))
    items = _two_files(tmp_path)[:1]  # p225 only
    options = EvaluationOptions(
        baselines=(), convert_to=("p226",), metrics=("speaker",), progress=False
    )
    without = evaluate(tiny_model, items, options)
    assert any("no reference utterance of p226" in n for n in without.notes)
    refs = find_recordings(tmp_path / "audio" / "p226")
    refs = [type(r)(r.id, r.path, "p226") for r in refs]
    with_refs = evaluate(tiny_model, items, options, refs)
    assert not any("no reference utterance" in n for n in with_refs.notes)
    (row,) = with_refs.conversion_summary()
    assert row["target"] == "p226" and np.isfinite(row["sim_target"]["mean"])


def test_the_pitch_track_system_is_scored_beside_the_codes(tmp_path):
    import torch

    import speechvq
    from speechvq.codec.pitch_track import encode_track
    from speechvq.evaluation.results import PITCH_SYSTEM
    from speechvq.inference.compression import pitch_symbols

    torch.manual_seed(0)
    model = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny-sf", speakers=["p225", "p226"]))
    items = _two_files(tmp_path)
    options = EvaluationOptions(baselines=(), metrics=("f0",), progress=False, examples=0)
    report = evaluate(model, items, options)
    pitch, plain = report.system(PITCH_SYSTEM), report.system("speechvq")
    assert set(pitch.scores) == set(plain.scores) == {i.id for i in items}
    # its rate: the codes' nominal rate plus the measured bytes of each file's track
    rates = []
    for item in items:
        wave, _ = load_audio(item.path, SR)
        symbols = pitch_symbols(model, model.input_f0(wave, SR, model.encode(wave, SR).size))
        rates.append(8 * len(encode_track(symbols)) / (wave.size / SR))
    assert pitch.bitrate == pytest.approx(model.config.nominal_bitrate + np.mean(rates))
    assert plain.bitrate == model.config.nominal_bitrate and pitch.entropy_bitrate is None


def test_stoi_by_band_is_reported_per_system(tmp_path, tiny_model):
    """Each system's STOI per 1/3-octave band reaches results.json, results.md's table and
    stoi_bands.png; their mean is the STOI column."""
    pytest.importorskip("pystoi")
    pytest.importorskip("matplotlib")
    wave = np.concatenate([synth_speechlike(1.2, seed=3), np.zeros(SR // 5, np.float32)])
    items = [Recording("a", write(tmp_path / "a.wav", wave), "p225")]
    tiny_model.encode = lambda w, sr: np.zeros(len(w) // 64, np.int64)
    tiny_model.decode = lambda codes, speaker, seed=None: load_audio(items[0].path, SR)[0]
    options = EvaluationOptions(baselines=(), metrics=("stoi",), progress=False, examples=0)
    report = evaluate(tiny_model, items, options)
    system = report.system("speechvq")
    assert system.band_summary() == pytest.approx(np.ones(15), abs=1e-6)
    assert system.summary()["stoi"]["mean"] == pytest.approx(system.band_summary().mean())
    paths = write_report(report, tmp_path / "out")
    assert "stoi_bands.png" in [p.name for p in paths]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["stoi_band_centres_hz"]) == 15
    model = next(s for s in data["systems"] if s["name"] == "speechvq")
    assert model["stoi_bands"]["mean"] == pytest.approx([1.0] * 15, abs=1e-6)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| speechvq | 1.000 | 1.000 | 1.000 | 1.000 |" in md


def test_paired_differences_against_the_baselines():
    """The headline system minus each baseline, file by file: the mean, a Student-t 95%
    interval computed by hand, the files where it is better (mel distance: lower), files
    only one system scored and NaNs left out; results.md and results.json carry it."""
    from speechvq.evaluation.report import markdown
    from speechvq.evaluation.results import (
        PITCH_SYSTEM,
        SEARCH_SYSTEM,
        EvaluationReport,
        SystemResult,
        paired_difference,
    )

    mine = [0.80, 0.85, 0.90, 0.70]
    theirs = [0.78, 0.86, 0.85, 0.60]

    def scores(stoi, mel):
        return {
            f"f{i}": {"stoi": s, "mel_distance": m}
            for i, (s, m) in enumerate(zip(stoi, mel, strict=True))
        }

    search = SystemResult(SEARCH_SYSTEM, 2400.0, scores=scores(mine, [5.0, 6.0, 5.5, np.nan]))
    search.scores["only-here"] = {"stoi": 0.0}
    codec2 = SystemResult("codec2-2400", 2400.0, scores=scores(theirs, [14.0, 5.0, 15.0, 13.0]))
    d = paired_difference(search, codec2, "stoi")
    diff = np.subtract(mine, theirs)
    half = 3.182446305284263 * diff.std(ddof=1) / 2  # t(0.975, 3 dof) s / sqrt(4)
    assert (d.n, d.better) == (4, 3)
    assert d.mean == pytest.approx(diff.mean()) and d.half_width == pytest.approx(half)
    assert d.significant == (abs(diff.mean()) > half)
    mel = paired_difference(search, codec2, "mel_distance")
    assert (mel.n, mel.better) == (3, 2) and mel.mean == pytest.approx(-17.5 / 3)
    one = paired_difference(
        SystemResult("a", None, scores={"x": {"stoi": 1.0}}),
        SystemResult("b", None, scores={"x": {"stoi": 0.5}}),
        "stoi",
    )
    assert one.n == 1 and np.isnan(one.half_width) and not one.significant

    pitch = SystemResult(PITCH_SYSTEM, 2400.0, scores=scores(theirs, [1.0] * 4))
    reference = SystemResult("reference", None, scores=scores([1.0] * 4, [0.0] * 4))
    report = EvaluationReport(SR, [], [reference, pitch, search, codec2])
    assert report.headline() is search and report.baselines() == [codec2]
    assert {(c.system, c.baseline) for c in report.comparisons()} == {
        (SEARCH_SYSTEM, "codec2-2400")
    }
    md = markdown(report)
    assert f"{SEARCH_SYSTEM} minus each baseline" in md
    assert f"| codec2-2400 | {d.mean:+.3f} ± {half:.3f} (3/4) | " in md
    data = report.to_dict()["comparisons"]
    assert data[0]["metric"] == "stoi" and data[0]["n"] == 4
    # without a baseline there is nothing to compare
    assert "minus each baseline" not in markdown(EvaluationReport(SR, [], [reference, search]))
