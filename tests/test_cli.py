"""The real `speechvq` entry point, end to end on a 0.5 s synthetic wav."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "speechvq.cli", *map(str, args)], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def model_file(tmp_path, tiny_model):
    tiny_model.train()(torch.randn(2, 1280) * 0.1, torch.tensor([0, 1]))
    path = tmp_path / "tiny.safetensors"
    tiny_model.save(path)
    return path


def test_encode_decode_convert(tmp_path, wav_file, model_file):
    codes = tmp_path / "codes.npy"
    run("encode", wav_file, codes, "--model", model_file)
    arr = np.load(codes)
    assert arr.shape == (8000 // 64,) and np.issubdtype(arr.dtype, np.integer)
    out = tmp_path / "dec.wav"
    run("decode", codes, out, "--speaker", "p226", "--model", model_file, "--seed", "1")
    data, sr = sf.read(out)
    assert sr == 16000 and len(data) == 8000
    conv = tmp_path / "conv.wav"
    run("convert", wav_file, conv, "--target-speaker", "p225", "--model", model_file)
    assert sf.info(conv).frames == 8000
    assert run("speakers", "--model", model_file).stdout.split() == ["p225", "p226"]
    info = run("info", "--model", model_file).stdout
    assert "16000 Hz" in info and "K = 16" in info


def test_errors_are_one_line_with_status_2(tmp_path, wav_file, model_file):
    proc = run(
        "convert",
        wav_file,
        tmp_path / "o.wav",
        "--target-speaker",
        "nobody",
        "--model",
        model_file,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "p225, p226" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run(
        "encode", tmp_path / "missing.wav", tmp_path / "c.npy", "--model", model_file, check=False
    )
    assert proc.returncode == 2 and "missing.wav: no such file" in proc.stderr
    existing = tmp_path / "exists.npy"
    existing.write_bytes(b"keep me")
    proc = run("encode", wav_file, existing, "--model", model_file, check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert existing.read_bytes() == b"keep me"
    run("encode", wav_file, existing, "--model", model_file, "--force")
    assert np.load(existing).size == 125


def test_every_command_has_help():
    for cmd in ("encode", "decode", "convert", "speakers", "info"):
        assert "Usage" in run(cmd, "--help").stdout


def test_demo_converts_the_shipped_input(tmp_path, model_file, capsys, monkeypatch):
    """To named voices with the given model, and one-shot to the shipped reference recording
    with a speaker-encoder model (here a tiny one in place of the shipped small-spk)."""
    from speechvq import demo
    from speechvq.config import ModelConfig
    from speechvq.models.model import SpeechVQ

    spk_file = tmp_path / "spk.safetensors"
    SpeechVQ(ModelConfig.preset("tiny-sf-spk", speakers=["a"])).save(spk_file)
    monkeypatch.setattr(demo, "SPEAKER_MODEL", str(spk_file))
    torch.manual_seed(0)
    written = demo.run(out_dir=tmp_path / "out", model_name=str(model_file), seconds_limit=0.3)
    names = sorted(p.name for p in written)
    assert names == ["convert_p225.wav", "convert_p226.wav", "convert_to_reference.wav"]
    lines = capsys.readouterr().out.splitlines()
    assert sum("convert_" in line for line in lines) == 3
    assert any("examples/reference.wav, one-shot (" + str(spk_file) in line for line in lines)
    for path in written:
        assert sf.info(path).samplerate == 16000


def test_compress_decompress_with_the_shipped_model(tmp_path, wav_file):
    """Through the CLI, with the shipped model's prior, a speaker named on both sides."""
    from typer.testing import CliRunner

    from speechvq.cli import app

    cli = CliRunner()
    svq = tmp_path / "a.svq"
    result = cli.invoke(app, ["compress", str(wav_file), str(svq), "--speaker", "p225", "--report"])
    assert result.exit_code == 0, result.stderr
    assert "entropy model prior" in result.stdout
    out = tmp_path / "a.wav"
    result = cli.invoke(app, ["decompress", str(svq), str(out), "--speaker", "p226"])
    assert result.exit_code == 0, result.stderr
    assert sf.info(out).frames == 8000
    plain = tmp_path / "b.svq"
    result = cli.invoke(app, ["compress", str(wav_file), str(plain), "--entropy", "adaptive"])
    assert result.exit_code == 0, result.stderr
    result = cli.invoke(app, ["decompress", str(plain), str(tmp_path / "b.wav")])
    assert result.exit_code == 0 and sf.info(tmp_path / "b.wav").frames == 8000, result.stderr
    result = cli.invoke(
        app, ["compress", str(wav_file), str(tmp_path / "c.svq"), "--entropy", "zip"]
    )
    assert result.exit_code == 2 and "unknown entropy model 'zip'" in result.stderr


def test_a_closed_pipe_is_quiet(model_file):
    """`speechvq speakers | head -1`: when the reader goes away, no error line, status 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechvq.cli", "speakers", "--model", str(model_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the model has loaded: every write meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == b"", err
