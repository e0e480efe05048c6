"""File discovery: one function for every command, following symbolic links."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from speechvq.data.discovery import find_files, find_recordings
from speechvq.errors import SpeechVQError

from .conftest import synth_speechlike


def _linked_corpus(tmp_path):
    """`corpus/<speaker>` are links to folders elsewhere, as a corpus assembled by hand."""
    for spk in ("p225", "p226"):
        real = tmp_path / "store" / spk
        real.mkdir(parents=True)
        sf.write(real / f"{spk}_001.wav", synth_speechlike(0.2), 16000)
        (real / ".hidden.wav").write_bytes(b"")
    (tmp_path / "corpus").mkdir()
    for spk in ("p226", "p225"):
        (tmp_path / "corpus" / spk).symlink_to(tmp_path / "store" / spk, target_is_directory=True)
    return tmp_path / "corpus"


def test_links_are_followed_and_hidden_files_skipped(tmp_path):
    corpus = _linked_corpus(tmp_path)
    found = list(find_files(corpus, (".wav",)))
    assert found == [corpus / "p225" / "p225_001.wav", corpus / "p226" / "p226_001.wav"]
    recs = find_recordings(corpus)
    assert [(r.id, r.speaker) for r in recs] == [
        ("p225/p225_001", "p225"),
        ("p226/p226_001", "p226"),
    ]


def test_evaluate_and_analyze_phonemes_see_the_same_files(tmp_path):
    """Both commands list audio with `find_recordings` (the CLI passes its paths on)."""
    from typer.testing import CliRunner

    from speechvq.cli import app

    corpus = _linked_corpus(tmp_path)
    sf.write(tmp_path / "store" / "p226" / "p226_002.wav", synth_speechlike(0.2), 16000)
    labels = tmp_path / "labels"
    labels.mkdir()
    for utt in ("p225_001", "p226_001"):
        (labels / f"{utt}.lab").write_text("0 1000000 pau\n1000000 2000000 aa\n")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    import speechvq

    tiny = tmp_path / "tiny.safetensors"
    speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["p225", "p226"])).save(tiny)
    args = ["analyze-phonemes", str(corpus), "-a", str(labels), "-o", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "-m", str(tiny), "--no-plots"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["utterances"] == 2 and report["unmatched_audio"] == ["p226_002"]


def test_a_single_file_and_errors(tmp_path):
    path = tmp_path / "p227_003.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    (rec,) = find_recordings(path)
    assert (rec.id, rec.speaker, rec.path) == ("p227_003", "p227", path)
    with pytest.raises(SpeechVQError, match="no such file"):
        find_recordings(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeechVQError, match="no audio files"):
        find_recordings(tmp_path / "empty")
