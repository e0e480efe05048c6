"""Reliability and safety (issue 10): every command does its job or fails with one line.

A matrix of bad inputs goes through every command in-process (typer's runner:
the same `app`, fast) and a representative part of it through the real entry
point (`python -m speechvq.cli`, a subprocess). Each failure must exit with
status 2, print one line naming the file, and leave neither an output nor a
temporary file. Then: odd but valid audio, chunked encoding, bounded memory,
damaged model files, no unpickling anywhere, and training killed mid-write.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechvq
from speechvq.audio.io import load_audio, save_audio
from speechvq.codec.codes import load_codes
from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output, remove_stale_temporaries

from .conftest import synth_speechlike

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TEMP_FILE = re.compile(r"^\..+\..+\.tmp")  # what atomic_output leaves if killed


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; tiny models gain nothing from threads
    yield
    torch.set_num_threads(before)


def _tiny(seed: int = 0) -> speechvq.SpeechVQ:
    torch.manual_seed(seed)
    return speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["p225", "p226"]))


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


# Files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs of every kind, by name (see the matrix below)."""
    from safetensors.torch import save_file

    from speechvq.inference.compression import compress

    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    p = {name: d / name for name in ("missing.wav", "missing.npy", "missing.svq", "missing")}
    p["missing.safetensors"] = d / "missing.safetensors"
    p["dir"] = d / "dir"
    p["dir"].mkdir()
    torch.set_num_threads(1)
    model, other = _tiny(0), _tiny(1)
    p["model"] = d / "model.safetensors"
    model.save(p["model"])
    p["other_model"] = d / "other.safetensors"
    other.save(p["other_model"])
    good = p["model"].read_bytes()

    def put(name: str, data: bytes) -> None:
        p[name] = d / name
        p[name].write_bytes(data)

    # Audio.
    p["ok.wav"] = d / "ok.wav"
    sf.write(p["ok.wav"], synth_speechlike(0.3), 16000)
    p["audio_dir"] = d / "audio"
    (d / "audio").mkdir()
    sf.write(d / "audio" / "a.wav", synth_speechlike(0.3), 16000)
    put("junk.wav", rng.bytes(2000))
    put("riff.wav", b"RIFF\x24\x08\x00\x00WAVEfmt " + rng.bytes(300))
    put("junk.flac", rng.bytes(2000))
    put("zero.wav", b"")
    p["empty.wav"] = d / "empty.wav"
    sf.write(p["empty.wav"], np.zeros(0, np.float32), 16000)
    p["nan.wav"] = d / "nan.wav"
    sf.write(p["nan.wav"], np.array([0.1, np.nan, np.inf] * 100, np.float32), 16000, "FLOAT")
    # Codes.
    np.save(d / "ok.npy", np.arange(20) % 16)
    p["ok.npy"] = d / "ok.npy"
    for name, arr in {
        "object.npy": np.array([{"a": 1}, None], dtype=object),
        "float.npy": np.ones(10),
        "bool.npy": np.ones(10, bool),
        "2d.npy": np.ones((2, 3), np.int64),
        "scalar.npy": np.int64(3),
        "empty.npy": np.zeros(0, np.int64),
        "range.npy": np.array([0, 15, 16]),
        "negative.npy": np.array([0, -1]),
    }.items():
        np.save(d / name, arr, allow_pickle=True)
        p[name] = d / name
    put("text.npy", b"0 1 2 3\n")
    put("truncated.npy", (d / "ok.npy").read_bytes()[:-40])
    # Compressed files.
    p["ok.svq"] = d / "ok.svq"
    compress(model, synth_speechlike(0.2), 16000, p["ok.svq"])
    compress(other, synth_speechlike(0.2), 16000, d / "other.svq")
    p["other.svq"] = d / "other.svq"
    svq = p["ok.svq"].read_bytes()
    put("junk.svq", rng.bytes(300))
    put("truncated.svq", svq[:-3])
    put("flipped.svq", _flip(svq, len(svq) - 2))
    put("version.svq", svq[:8] + (99).to_bytes(2, "little") + svq[10:])
    # Model files.
    put("garbage.safetensors", rng.bytes(5000))
    put("zero.safetensors", b"")
    put("truncated.safetensors", good[: len(good) // 2])
    header_len = int.from_bytes(good[:8], "little")
    put("header_flip.safetensors", _flip(good, 8 + header_len // 3))
    p["nometa.safetensors"] = d / "nometa.safetensors"
    save_file({"w": torch.zeros(2)}, str(p["nometa.safetensors"]))
    p["version.safetensors"] = d / "version.safetensors"
    model.save(p["version.safetensors"], format_version="99")
    # Training configs.
    put("binary.yaml", rng.bytes(200))
    put("list.yaml", b"- 1\n- 2\n")
    put("unknown.yaml", b"preset: tiny\nbatchsize: 3\n")
    put("wrongtype.yaml", b"preset: tiny\nbatch_size: six\n")
    return p


# Which file each case blames; every message must name it.
AUDIO_BAD = ["missing.wav", "dir", "junk.wav", "riff.wav", "junk.flac", "zero.wav", "empty.wav"]
AUDIO_BAD += ["nan.wav"]
CODES_BAD = ["missing.npy", "dir", "object.npy", "float.npy", "bool.npy", "2d.npy", "scalar.npy"]
CODES_BAD += ["empty.npy", "range.npy", "negative.npy", "text.npy", "truncated.npy", "ok.wav"]
SVQ_BAD = ["missing.svq", "dir", "junk.svq", "zero.wav", "truncated.svq", "flipped.svq"]
SVQ_BAD += ["version.svq", "other.svq", "ok.wav"]
MODEL_BAD = ["missing.safetensors", "dir", "garbage.safetensors", "zero.safetensors"]
MODEL_BAD += ["truncated.safetensors", "header_flip.safetensors", "nometa.safetensors"]
MODEL_BAD += ["version.safetensors", "ok.wav"]
CONFIG_BAD = ["missing", "dir", "binary.yaml", "list.yaml", "unknown.yaml", "wrongtype.yaml"]


def _model_commands(model: str) -> dict[str, list[str]]:
    """Each command that loads a model, with otherwise valid arguments."""
    m = ["--model", model]
    return {
        "encode": ["encode", "{ok.wav}", "{out}/o.npy", *m],
        "decode": ["decode", "{ok.npy}", "{out}/o.wav", "-s", "p225", *m],
        "convert": ["convert", "{ok.wav}", "{out}/o.wav", "-s", "p225", *m],
        "speakers": ["speakers", *m],
        "info": ["info", *m],
        "compress": ["compress", "{ok.wav}", "{out}/o.svq", *m],
        "decompress": ["decompress", "{ok.svq}", "{out}/o.wav", *m],
        "sample": ["sample", "{out}/o.wav", *m],
        "evaluate": ["evaluate", "{ok.wav}", "-o", "{out}/r", "--baselines", "none", *m],
        "analyze-phonemes": ["analyze-phonemes", "{audio_dir}", "-a", "{dir}", "-o", "{out}/r", *m],
        "train-prior": ["train-prior", "{corpus}", "-o", "{out}/r", *m],
    }


def _cases() -> list[tuple[str, list[str], str | None]]:
    """(id, arguments, the name the message must contain) for every bad-input case."""
    m = ["--model", "{model}"]
    cases = []
    for bad in AUDIO_BAD:
        cases += [
            (f"encode-{bad}", ["encode", f"{{{bad}}}", "{out}/o.npy", *m], bad),
            (f"convert-{bad}", ["convert", f"{{{bad}}}", "{out}/o.wav", "-s", "p226", *m], bad),
            (f"compress-{bad}", ["compress", f"{{{bad}}}", "{out}/o.svq", *m], bad),
        ]
    for bad in CODES_BAD:
        cases.append(
            (f"decode-{bad}", ["decode", f"{{{bad}}}", "{out}/o.wav", "-s", "p225", *m], bad)
        )
    for bad in SVQ_BAD:
        cases.append((f"decompress-{bad}", ["decompress", f"{{{bad}}}", "{out}/o.wav", *m], bad))
    for bad in MODEL_BAD:  # every model-loading command on two bad models, one on all
        for name, args in _model_commands(f"{{{bad}}}").items():
            if name == "encode" or bad in ("missing.safetensors", "garbage.safetensors"):
                cases.append((f"{name}-model-{bad}", args, bad))
    for bad in ["missing", "ok.wav", "dir"]:  # not a folder, not a prepared corpus
        cases += [
            (f"prepare-{bad}", ["prepare", f"{{{bad}}}", "{out}/p"], bad),
            (f"train-{bad}", ["train", f"{{{bad}}}", "-o", "{out}/r"], bad),
            (f"train-prior-{bad}", ["train-prior", f"{{{bad}}}", "-o", "{out}/r", *m], bad),
        ]
    for bad in ["missing", "dir"]:  # one audio file is a valid input, as for evaluate
        cases += [
            (f"analyze-phonemes-{bad}", ["analyze-phonemes", f"{{{bad}}}", "-a", "{dir}"]
             + ["-o", "{out}/r", *m], bad),
        ]  # fmt: skip
    for bad in ["missing", "dir"]:
        cases.append((f"evaluate-{bad}", ["evaluate", f"{{{bad}}}", "-o", "{out}/r", *m], bad))
    for bad in CONFIG_BAD:
        cases.append(
            (f"train-config-{bad}", ["train", "{corpus}", "-o", "{out}/r", "-c", f"{{{bad}}}"], bad)
        )
    for cmd in ("decode", "convert", "compress"):  # an unknown speaker lists the known ones
        args = _model_commands("{model}")[cmd] + ["-s", "nobody"]
        cases.append((f"{cmd}-unknown-speaker", args, "p225, p226"))
    cases.append(("sample-no-prior", _model_commands("{model}")["sample"], "no prior"))
    return cases


CASES = {case[0]: case for case in _cases()}
# Through the real entry point: one of each kind of input and each command family.
SUBPROCESS_CASES = [
    "encode-junk.wav",
    "convert-empty.wav",
    "decode-object.npy",
    "decompress-other.svq",
    "info-model-garbage.safetensors",
    "train-config-binary.yaml",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two speakers, two 1 s utterances each, prepared with Dio F0 (as in test_train)."""
    from speechvq.data.layouts import Source
    from speechvq.data.prepare import PrepareConfig, prepare_corpus

    root = tmp_path_factory.mktemp("corpus")
    for spk, seed in (("alice", 0), ("bob", 1)):
        (root / "src" / spk).mkdir(parents=True)
        for i in range(2):
            wave = synth_speechlike(1.0, seed=seed * 10 + i)
            sf.write(root / "src" / spk / f"{spk}_{i}.wav", wave, 16000)
    out = root / "prepared"
    config = PrepareConfig(f0_method="dio", workers=1, heldout=0.0, trim=False)
    prepare_corpus([Source(root / "src", "folder")], out, config, progress=False)
    return out


def _args(template: list[str], files: dict[str, Path], out: Path, corpus: Path) -> list[str]:
    names = {**{k: str(v) for k, v in files.items()}, "out": str(out), "corpus": str(corpus)}
    return [re.sub(r"\{([^{}]+)\}", lambda m: names[m.group(1)], a) for a in template]


def _check_failure(code: int, stderr: str, culprit: str | None, out: Path) -> None:
    assert code == 2, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechvq: error: "), stderr
    assert "Traceback" not in stderr
    if culprit:
        assert culprit in lines[0], lines[0]
    assert not any(out.rglob("*")), sorted(out.rglob("*"))  # no output, no temp file


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_with_one_line(case, files, corpus, tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    _, template, culprit = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, _args(template, files, out, corpus))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    _check_failure(result.exit_code, result.stderr, culprit, out)


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "speechvq.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kwargs)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_through_the_entry_point(case, files, corpus, tmp_path):
    _, template, culprit = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli(*_args(template, files, out, corpus))
    _check_failure(proc.returncode, proc.stderr, culprit, out)


OUTPUT_COMMANDS = ["encode", "decode", "convert", "compress", "decompress", "sample"]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS + ["evaluate", "analyze-phonemes"])
def test_existing_output_is_kept_without_force(command, files, corpus, tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    out = tmp_path / "out"
    out.mkdir()
    args = _args(_model_commands("{model}")[command], files, out, corpus)
    target = Path(next(a for a in args if a.startswith(str(out))))
    if command in ("evaluate", "analyze-phonemes"):  # a report folder: its report is kept
        target.mkdir()
        target = target / ("results.json" if command == "evaluate" else "report.json")
    target.write_bytes(b"keep me")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.stderr, result.stderr
    assert target.read_bytes() == b"keep me"
    assert sorted(out.rglob("*")) == sorted(p for p in [target, target.parent] if p != out)


def test_existing_run_and_corpus_are_kept(files, corpus, tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    before = sorted(p.name for p in corpus.iterdir())
    result = CliRunner().invoke(app, ["prepare", str(corpus.parent / "src"), str(corpus)])
    assert result.exit_code == 2 and "--force" in result.stderr, result.stderr
    assert sorted(p.name for p in corpus.iterdir()) == before
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"keep me")
    result = CliRunner().invoke(app, ["train", str(corpus), "-o", str(run)])
    assert result.exit_code == 2 and "--resume" in result.stderr, result.stderr
    assert (run / "checkpoint.pt").read_bytes() == b"keep me"


def test_a_bug_is_one_line_with_status_1_and_debug_shows_it(files, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import speechvq.audio.io
    from speechvq.cli import app

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug\nsecond line")

    monkeypatch.setattr(speechvq.audio.io, "load_audio", broken)
    args = ["encode", str(files["ok.wav"]), str(tmp_path / "o.npy"), "-m", str(files["model"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "speechvq: internal error: ZeroDivisionError: a bug (rerun with --debug for the traceback)"
    )
    result = CliRunner().invoke(app, ["--debug", *args])
    assert isinstance(result.exception, ZeroDivisionError)
    assert not any(tmp_path.iterdir())


def test_warnings_are_one_line(monkeypatch, tmp_path):
    import warnings

    from speechvq import cli

    old = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(sys, "argv", ["speechvq", "--help"])
    try:
        with pytest.raises(SystemExit):
            cli.main()
        text = warnings.formatwarning("x.wav: output clipped (peak 1.30)", UserWarning, "f.py", 1)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert text == "speechvq: warning: x.wav: output clipped (peak 1.30)\n"


# A driver for the CLI whose writer receives SIGTERM in the middle of writing
# its output: after part of the temporary file is on disk, before the rename.
_SIGTERM_DRIVER = """
import os, signal, sys
import numpy as np, soundfile
from speechvq import cli

out_dir = os.path.dirname(sys.argv[3])

def signal_now():
    print("during the write:", sorted(os.listdir(out_dir)), file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode

real_save, real_write = np.save, soundfile.write

def save(f, arr, *args, **kwargs):
    f.write(b"\\x93NUMPY")
    f.flush()
    signal_now()
    real_save(f, arr, *args, **kwargs)

def write(*args, **kwargs):
    real_write(*args, **kwargs)
    signal_now()

np.save, soundfile.write = save, write
sys.argv = ["speechvq", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["encode", "decode"])
def test_sigterm_inside_a_write_leaves_nothing(command, files, tmp_path):
    """SIGTERM while the output is being written: no output, no temporary file, status 143."""
    out = tmp_path / "out"
    out.mkdir()
    if command == "encode":
        args = ["encode", files["ok.wav"], out / "o.npy"]
    else:
        args = ["decode", files["ok.npy"], out / "o.wav", "--speaker", "p225"]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_DRIVER, *map(str, args), "-m", str(files["model"])],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    during = re.search(r"during the write: \[(.*)\]", proc.stderr)
    assert during and ".tmp" in during.group(1), proc.stderr  # the signal landed mid-write
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "speechvq: interrupted"
    assert list(out.iterdir()) == []


# Audio -----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_any_rate_gives_the_expected_frames(rate, tmp_path):
    model = _tiny()
    n = int(0.37 * rate) + 7
    path = tmp_path / "x.wav"
    sf.write(path, synth_speechlike(n / rate + 0.01, rate)[:n], rate)
    expected = np.ceil(n * 16000 / rate / 64)
    wave, sr = load_audio(path, 16000)  # the CLI's path: streamed resampling
    assert sr == 16000 and abs(len(model.encode(wave, sr)) - expected) <= 1
    raw, sr = load_audio(path)  # resampled inside `encode`
    assert sr == rate and abs(len(model.encode(raw, sr)) - expected) <= 1


@pytest.mark.parametrize(
    "subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
)  # 8/16/24/32-bit integers and floats
def test_sample_formats(subtype, tmp_path):
    wave = synth_speechlike(0.2)
    sf.write(tmp_path / "x.wav", wave, 16000, subtype=subtype)
    out, _ = load_audio(tmp_path / "x.wav")
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.abs(out - wave).max() < (0.02 if subtype == "PCM_U8" else 1e-4)


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_multichannel_is_downmixed_block_by_block(channels, tmp_path):
    rng = np.random.default_rng(channels)
    data = (0.2 * rng.standard_normal((150_000, channels))).astype(np.float32)  # > 2 blocks
    sf.write(tmp_path / "m.wav", data, 16000, subtype="FLOAT")
    out, _ = load_audio(tmp_path / "m.wav")
    np.testing.assert_allclose(out, data.mean(axis=1), atol=1e-6)


def test_streamed_resampling_equals_whole_resampling(tmp_path):
    import soxr

    data = (0.2 * np.random.default_rng(0).standard_normal((200_003, 2))).astype(np.float32)
    sf.write(tmp_path / "s.wav", data, 44100, subtype="FLOAT")
    out, sr = load_audio(tmp_path / "s.wav", 16000)
    ref = soxr.resample(data.mean(axis=1), 44100, 16000, quality="HQ")
    assert sr == 16000 and out.flags.owndata
    np.testing.assert_array_equal(out, ref)


def test_shorter_than_a_frame_gives_one_code(tmp_path):
    model = _tiny()
    for n, rate in ((10, 16000), (1, 16000), (1, 96000), (63, 16000), (65, 16000)):
        sf.write(tmp_path / "s.wav", np.full(n, 0.1, np.float32), rate)
        wave, sr = load_audio(tmp_path / "s.wav", 16000)
        assert len(wave) >= 1
        assert len(model.encode(wave, sr)) == max(1, -(-round(n * 16000 / rate) // 64))


def test_nan_and_inf_are_refused_even_late_in_the_file(tmp_path):
    data = np.zeros(200_000, np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        data[150_000] = bad  # in the third block read
        sf.write(tmp_path / "n.wav", data, 16000, subtype="FLOAT")
        with pytest.raises(SpeechVQError, match="n.wav: contains NaN or Inf"):
            load_audio(tmp_path / "n.wav", 16000)


def test_full_scale_input_encodes_and_clipped_output_warns(tmp_path):
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(8000) / 16000)).astype(np.float32)
    sf.write(tmp_path / "full.wav", square, 16000)  # PCM_16: +1.0 is clipped to 32767
    wave, sr = load_audio(tmp_path / "full.wav")
    assert np.abs(wave).max() <= 1.0
    assert len(_tiny().encode(wave, sr)) == 8000 // 64
    with pytest.warns(UserWarning, match="output clipped"):
        save_audio(tmp_path / "loud.wav", 1.5 * square, 16000)
    assert np.abs(sf.read(tmp_path / "loud.wav")[0]).max() <= 1.0


# Chunked encoding --------------------------------------------------------------


def _with_live_residual_blocks(model: speechvq.SpeechVQ) -> speechvq.SpeechVQ:
    # At init the residual branches are zero (He init, see encoder.py), which would
    # hide their context; random weights make every frame of the receptive field count.
    for block in model.encoder.blocks:
        torch.nn.init.normal_(block.proj.weight, std=0.3)
    return model


def test_encoder_context_covers_the_receptive_field():
    small = speechvq.SpeechVQ(speechvq.ModelConfig.preset("small", speakers=["a"]))
    assert small.encoder_context == 15  # 1 + 3 + 9 (residual) + 1 (strided stack) + 1 margin
    assert _tiny().encoder_context == 3
    model = _with_live_residual_blocks(small).eval()
    wave = torch.from_numpy(synth_speechlike(1.0))[None, None]
    with torch.no_grad():
        whole = model.encoder(wave)[0]
        needed = model.encoder_context - 1  # without the margin it is still exact
        for ctx, exact in ((needed, True), (needed - 1, False)):
            lo, start, stop, hi = 100 - ctx, 100, 150, 150 + ctx
            part = model.encoder(wave[..., lo * 64 : hi * 64])[0, :, start - lo : stop - lo]
            close = torch.allclose(part, whole[:, start:stop], atol=1e-4, rtol=1e-5)
            assert close == exact, ctx


@pytest.mark.parametrize("chunk_seconds", [0.05, 0.1, 0.33])
def test_chunked_encoding_equals_whole(chunk_seconds):
    model = _with_live_residual_blocks(_tiny())
    wave = synth_speechlike(2.0) + 0.05 * np.random.default_rng(0).standard_normal(32000)
    wave = wave[:31_001].astype(np.float32)  # ends inside a frame: the last chunk is padded
    whole = model.encode(wave, 16000, chunk_seconds=1e9)
    assert whole.size == -(-31_001 // 64) and len(np.unique(whole)) > 4
    np.testing.assert_array_equal(model.encode(wave, 16000, chunk_seconds=chunk_seconds), whole)


def test_chunk_overlap_is_what_makes_chunks_agree(monkeypatch):
    model = _with_live_residual_blocks(_tiny())
    wave = synth_speechlike(2.0) + 0.05 * np.random.default_rng(0).standard_normal(32000)
    whole = model.encode(wave, 16000, chunk_seconds=1e9)
    monkeypatch.setattr(type(model), "encoder_context", 0)
    assert (model.encode(wave, 16000, chunk_seconds=0.05) != whole).any()


@pytest.mark.slow
def test_encoding_memory_is_bounded(tmp_path):
    """Peak RSS of reading and encoding 5 minutes of 48 kHz stereo, in a subprocess.

    Holding the file as float32 would take 115 MB; streamed reading and chunked
    encoding need the 16 kHz mono wave (19 MB) and the codes (0.6 MB) beyond
    what importing torch and the model costs.
    """
    path = tmp_path / "long.wav"
    seconds = 300
    with sf.SoundFile(path, "w", 48000, 2, "PCM_16") as f:
        block = np.tile(synth_speechlike(1.0, 48000)[:, None], (10, 2))
        for _ in range(seconds // 10):
            f.write(block)
    code = f"""
import resource, numpy as np, torch, soxr, soundfile, speechvq
from speechvq.audio.io import load_audio
torch.set_num_threads(1)
model = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["a"]))
model.encode(np.zeros(16000, np.float32), 16000, chunk_seconds=1.0)  # warm up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wave, sr = load_audio({str(path)!r}, 16000)
codes = model.encode(wave, sr, chunk_seconds=1.0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(codes.size, base, peak)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True
    )
    frames, base, peak = map(int, proc.stdout.split())
    assert frames == seconds * 250
    whole_file_mb = seconds * 48000 * 2 * 4 / 2**20
    grown_mb = (peak - base) / 1024  # ru_maxrss is in KiB on Linux
    print(f"peak RSS {peak / 1024:.0f} MB, {grown_mb:.0f} MB above the model's")
    assert grown_mb < 0.5 * whole_file_mb, (grown_mb, whole_file_mb)


# Codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,message",
    [
        ("object.npy", "pickled Python objects"),
        ("float.npy", "must be integers"),
        ("bool.npy", "must be integers"),
        ("2d.npy", "1-D"),
        ("scalar.npy", "1-D"),
        ("empty.npy", "empty"),
        ("range.npy", r"\[0, 16\)"),
        ("negative.npy", r"\[0, 16\)"),
        ("text.npy", "not a .npy file"),
        ("truncated.npy", "truncated"),
        ("dir", "is a directory"),
        ("missing.npy", "no such codes file"),
    ],
)
def test_bad_codes_files(name, message, files):
    with pytest.raises(SpeechVQError, match=message):
        load_codes(files[name], 16)


def test_codes_header_claiming_terabytes_is_refused_before_reading(tmp_path):
    from numpy.lib import format as npy

    with open(tmp_path / "big.npy", "wb") as f:
        npy.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)})
        f.write(b"\0" * 64)
    with pytest.raises(SpeechVQError, match="truncated"):
        load_codes(tmp_path / "big.npy", 16)


@pytest.mark.parametrize("dtype", ["<i2", ">i4", "u1", "<u8", "i8"])
def test_any_integer_codes_load_as_int64(dtype, tmp_path):
    np.save(tmp_path / "c.npy", np.arange(16).astype(dtype))
    out = load_codes(tmp_path / "c.npy", 16)
    assert out.dtype == np.int64 and out.tolist() == list(range(16))


# Model files -----------------------------------------------------------------------


def test_truncated_model_file_is_refused_at_every_length(files, tmp_path):
    good = files["model"].read_bytes()
    header_len = int.from_bytes(good[:8], "little")
    lengths = [0, 4, 8, 9, 8 + header_len // 2, 8 + header_len, len(good) // 2, len(good) - 1]
    for n in lengths:
        path = tmp_path / f"cut{n}.safetensors"
        path.write_bytes(good[:n])
        with pytest.raises(SpeechVQError, match=f"cut{n}.safetensors"):
            speechvq.load(path)


def _has_checksum(path: Path) -> bool:
    from speechvq.models.modelfile import read_metadata

    return any("sha256" in key or "checksum" in key for key in read_metadata(path))


@pytest.mark.parametrize("region", ["header", "tensors"])
def test_flipped_bytes_in_a_model_file_are_refused(region, files, tmp_path):
    """Every flipped byte (a sample of them) is refused, never loaded as another model.

    A flip inside a JSON string (a speaker name, the package version) or in the
    tensor data leaves a well-formed file; only a checksum over the metadata and
    weights can catch it.
    """
    assert _has_checksum(files["model"])
    good = files["model"].read_bytes()
    header_len = int.from_bytes(good[:8], "little")
    if region == "header":
        positions = range(8, 8 + header_len, max(1, header_len // 60))
    else:
        positions = range(8 + header_len, len(good), max(1, (len(good) - header_len) // 40))
    for i in positions:
        path = tmp_path / "flipped.safetensors"
        path.write_bytes(_flip(good, i))
        with pytest.raises(SpeechVQError, match="flipped.safetensors"):
            speechvq.load(path)


def test_another_models_svq_is_refused(files):
    from speechvq.inference.compression import decompress

    with pytest.raises(SpeechVQError, match="other.svq: made by model"):
        decompress(speechvq.load(files["model"]), files["other.svq"])


# No unpickling anywhere ---------------------------------------------------------


UNSAFE_TEXT = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(")


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can run code from a file: pickle, torch.load without weights_only,
    np.load with allow_pickle, yaml.load/unsafe_load, eval/exec."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
        last = func.rsplit(".", 1)[-1]
        if (
            re.search(r"(^|\.)(c?pickle|dill|joblib|marshal|shelve)\.", func)
            or (func.endswith("torch.load") and kw.get("weights_only") != "True")
            or (last == "load" and kw.get("allow_pickle", "False") != "False")
            or func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec")
        ):
            found.append(f"{getattr(node, 'lineno', '?')}: {ast.unparse(node)[:80]}")
    return found


def test_no_loading_path_unpickles_a_users_file():
    sources = [p for d in ("speechvq", "benchmarks", "recipes") for p in (REPO / d).rglob("*.py")]
    assert len(sources) > 20
    bad = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        hits = _unsafe_loads(ast.parse(text))
        hits += [m.group(0) for m in UNSAFE_TEXT.finditer(text)]
        if hits:
            bad[str(path.relative_to(REPO))] = hits
    assert not bad, bad
    # The checker itself finds what it must.
    probe = "torch.load(p)\nnp.load(p, allow_pickle=True)\npickle.load(f)\nyaml.load(s)\n"
    assert len(_unsafe_loads(ast.parse(probe))) == 4
    ok = "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(s)\n"
    assert _unsafe_loads(ast.parse(ok)) == []


# Atomic outputs ------------------------------------------------------------------


def test_atomic_output_cleans_up_and_stale_temporaries_are_found(tmp_path):
    target = tmp_path / "a[1].npy"  # glob characters in the name
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".a[1].npy.abc123.tmp.npy"
    stale.write_bytes(b"left by SIGKILL")
    (tmp_path / ".other.npy.abc123.tmp.npy").write_bytes(b"not ours")
    assert remove_stale_temporaries(target) == [stale] and not stale.exists()
    assert len(list(tmp_path.iterdir())) == 1


# Training killed -----------------------------------------------------------------


def _start_training(corpus: Path, run: Path, config: Path, *extra: str) -> subprocess.Popen:
    cmd = ["train", corpus, "-o", run, "-c", config, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "speechvq.cli", *map(str, cmd)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()}")
        if time.time() > end:
            proc.kill()
            raise AssertionError("timed out waiting for training")
        time.sleep(0.0005)


def _temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if TEMP_FILE.match(p.name))


@pytest.mark.slow
def test_training_survives_sigterm_and_sigkill(corpus, tmp_path):
    from speechvq.training.checkpoint import load_checkpoint

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "preset: tiny\nbatch_size: 2\ncrop_seconds: 0.25\nlog_every: 1\nvalid_every: 0\n"
        "checkpoint_every: 1\nexport_every: 0\nmax_steps: 100000\n"
    )
    run = tmp_path / "run"
    ckpt = run / "checkpoint.pt"
    # SIGTERM: the step in progress ends, a checkpoint is written, the model exported.
    proc = _start_training(corpus, run, config)
    _wait_for(ckpt.exists, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    step = int(re.search(r"interrupted at step (\d+)", out).group(1))
    assert load_checkpoint(ckpt)["step"] == step and (run / "model.safetensors").exists()
    assert _temporaries(run) == []
    # SIGKILL while a checkpoint is being written (its temporary file exists), then at
    # a random moment: the previous checkpoint stays whole and loads.
    rng = np.random.default_rng(0)
    caught_mid_write = 0
    for attempt in range(3):
        proc = _start_training(corpus, run, config, "--resume")
        before = ckpt.stat().st_mtime_ns
        _wait_for(lambda t=before: ckpt.stat().st_mtime_ns != t, proc)  # running: a step done
        if attempt % 2 == 0:
            _wait_for(lambda: bool(_temporaries(run)), proc)
        else:
            time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.communicate()
        caught_mid_write += bool(_temporaries(run))
        state = load_checkpoint(ckpt)
        assert state["step"] >= step
        step = state["step"]
    assert caught_mid_write >= 1  # the test did kill inside a write
    # --resume continues from the last checkpoint and sweeps the killed writes' leftovers.
    proc = _start_training(corpus, run, config, "--resume", "--max-steps", str(step + 2))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"finished at step {step + 2}" in out
    assert load_checkpoint(ckpt)["step"] == step + 2
    assert _temporaries(run) == []
