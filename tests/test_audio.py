import numpy as np
import pytest
import soundfile as sf

from speechvq.audio.io import load_audio, save_audio
from speechvq.audio.mulaw import deemphasis, mulaw_decode, mulaw_encode, preemphasis
from speechvq.errors import SpeechVQError

from .conftest import synth_speechlike


@pytest.mark.parametrize(
    "ext,subtype",
    [
        ("wav", "PCM_U8"),
        ("wav", "PCM_16"),
        ("wav", "PCM_24"),
        ("wav", "PCM_32"),
        ("wav", "FLOAT"),
        ("flac", "PCM_16"),
        ("flac", "PCM_24"),
        ("ogg", "VORBIS"),
    ],
)
def test_reads_formats_and_resamples(tmp_path, ext, subtype):
    wave = synth_speechlike(0.3, 22050)
    path = tmp_path / f"x.{ext}"
    sf.write(path, wave, 22050, subtype=subtype)
    out, sr = load_audio(path, 16000)
    assert sr == 16000 and out.dtype == np.float32
    assert abs(len(out) - int(0.3 * 16000)) <= 1
    ref = load_audio(path)[0]
    assert np.corrcoef(ref[:2000], wave[:2000])[0, 1] > 0.95


def test_stereo_is_downmixed(tmp_path):
    left = synth_speechlike(0.2)
    sf.write(tmp_path / "s.wav", np.stack([left, -left * 0 + left], 1), 16000)
    out, _ = load_audio(tmp_path / "s.wav")
    assert out.ndim == 1
    np.testing.assert_allclose(out, left, atol=1e-4)


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(SpeechVQError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(SpeechVQError, match="directory"):
        load_audio(tmp_path)
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(SpeechVQError, match="not a readable audio file"):
        load_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(SpeechVQError, match="no audio samples"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], np.float32), 16000, "FLOAT")
    with pytest.raises(SpeechVQError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_mulaw_round_trip_and_range():
    x = np.linspace(-1, 1, 10001).astype(np.float32)
    q = mulaw_encode(x)
    assert q.min() == 0 and q.max() == 255
    assert np.all(np.diff(q) >= 0)
    # mu-law steps are finest near zero: error there is tiny.
    err = np.abs(mulaw_decode(q) - x)
    assert err[np.abs(x) < 0.01].max() < 1e-3 and err.max() < 0.035


def test_preemphasis_inverts():
    x = synth_speechlike(0.1)
    np.testing.assert_allclose(deemphasis(preemphasis(x, 0.86), 0.86), x, atol=1e-5)


def test_save_audio_is_atomic_and_respects_force(tmp_path):
    path = tmp_path / "o.wav"
    save_audio(path, synth_speechlike(0.1), 16000)
    with pytest.raises(SpeechVQError, match="already exists"):
        save_audio(path, synth_speechlike(0.1), 16000, force=False)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]  # no temp files left


def test_outputs_get_plain_file_permissions(tmp_path, tiny_model):
    import os

    umask = os.umask(0o022)
    try:
        save_audio(tmp_path / "a.wav", synth_speechlike(0.1), 16000)
        tiny_model.save(tmp_path / "m.safetensors")  # safetensors recreates its file
        for name in ("a.wav", "m.safetensors"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(umask)
