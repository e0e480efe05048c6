"""Analysis-by-synthesis code search (`inference.code_search`), `compress --search`, and the
"speechvq+search" system of `evaluate`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechvq
from speechvq.codec.entropy import ideal_bits
from speechvq.errors import SpeechVQError
from speechvq.inference.code_search import SearchConfig, search_codes
from speechvq.inference.compression import PriorSource
from speechvq.models.prior import Prior, PriorConfig

from .conftest import synth_speechlike

SR = 16000


def trained_looking(preset: str = "tiny-sf") -> speechvq.SpeechVQ:
    """A tiny source-filter model whose codebook is k-means of its encoder's outputs (so
    speech gives varied codes) and whose heads are not zero (so the output depends on the
    codes, as a trained decoder's does; a new one starts silent)."""
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(speechvq.ModelConfig.preset(preset, speakers=["alice", "bob"]))
    wave = torch.from_numpy(np.concatenate([synth_speechlike(1.0, seed=s) for s in range(4)]))
    with torch.no_grad():
        model.quantizer.init_codebook(model.encoder(wave[None, None])[0].T)
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return trained_looking()


def f0_of(model, wave) -> np.ndarray:
    return model.input_f0(wave, SR, model.encode(wave, SR).size)


def test_no_steps_keep_the_encoders_codes(model):
    wave = synth_speechlike(0.5, seed=1)
    r = search_codes(model, wave, SR, "alice", None, SearchConfig(steps=0))
    np.testing.assert_array_equal(r.codes, model.encode(wave, SR))
    assert r.changed == 0.0


def test_the_search_lowers_the_decoders_loss_and_touches_nothing_else(model):
    wave = synth_speechlike(0.6, seed=2)
    f0 = f0_of(model, wave)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    config = SearchConfig(steps=25, lr=0.1)
    r = search_codes(model, wave, SR, "alice", f0, config)
    assert r.codes.shape == r.encoder_codes.shape == model.encode(wave, SR).shape
    assert r.changed > 0.1 and r.loss_after < r.loss_before
    assert r.codes.min() >= 0 and r.codes.max() < model.config.quantizer.codebook_size
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # the model is frozen
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(torch.random.get_rng_state(), rng)  # the caller's RNG kept
    again = search_codes(model, wave, SR, "alice", f0, config)
    np.testing.assert_array_equal(again.codes, r.codes)  # the same call, the same codes


def test_a_long_input_is_searched_window_by_window(model):
    wave = synth_speechlike(1.0, seed=3)
    f0 = f0_of(model, wave)
    r = search_codes(model, wave, SR, "bob", f0, SearchConfig(steps=8, lr=0.1, window_seconds=0.3))
    assert r.codes.shape == model.encode(wave, SR).shape
    assert r.loss_after <= r.loss_before  # a window the search did not help keeps its codes
    assert r.changed > 0


def test_without_a_pitch_track_the_search_uses_the_predicted_f0(model):
    wave = synth_speechlike(0.5, seed=4)
    r = search_codes(model, wave, SR, "alice", None, SearchConfig(steps=10, lr=0.1))
    assert r.loss_after <= r.loss_before and np.isfinite(r.loss_after)


def test_the_rate_term_trades_loss_for_fewer_bits():
    model = trained_looking()
    K = model.config.quantizer.codebook_size
    torch.manual_seed(1)
    model.prior = Prior(PriorConfig.preset("tiny", K, 2)).eval()
    with torch.no_grad():  # a prior with strong opinions: a few codes are far likelier
        model.prior.wavenet.head[-1].bias.copy_(torch.linspace(4.0, -4.0, K))
    wave = synth_speechlike(0.6, seed=5)
    f0 = f0_of(model, wave)
    plain = search_codes(model, wave, SR, "alice", f0, SearchConfig(steps=10, lr=0.1))
    cheap = search_codes(
        model, wave, SR, "alice", f0, SearchConfig(steps=10, lr=0.1, rate_weight=5.0)
    )

    def bits(codes):
        return ideal_bits(codes, PriorSource(model.prior, None))

    assert bits(cheap.codes) < bits(plain.codes)
    model.prior = None
    with pytest.raises(SpeechVQError, match="prior"):
        search_codes(model, wave, SR, "alice", f0, SearchConfig(steps=1, rate_weight=1.0))


def test_bad_settings_are_plain_errors():
    with pytest.raises(SpeechVQError, match="steps"):
        SearchConfig(steps=-1)
    with pytest.raises(SpeechVQError):
        SearchConfig(lr=0)
    with pytest.raises(SpeechVQError, match="unknown objective 'snr'"):
        SearchConfig(objective="snr")
    with pytest.raises(SpeechVQError, match="quiet_db"):
        SearchConfig(quiet_db=0)


def test_either_objective_is_lowered(model):
    """The default lowers the log-mel distance; "decoder" the decoder's own training loss,
    and with it each reports the loss it lowered."""
    from speechvq.models.decoders.source_filter import spectral_loss
    from speechvq.models.mel_loss import log_mel_loss

    wave = synth_speechlike(0.6, seed=9)
    f0 = f0_of(model, wave)
    target = torch.from_numpy(wave[: (wave.size // model.hop_length) * model.hop_length])[None]

    def measured(codes, loss):
        torch.manual_seed(0)
        with torch.no_grad():
            latents = model.quantizer.lookup(torch.from_numpy(codes)[None])
            out = model.decoder(
                latents, model._voice_tensors("alice")[0], torch.from_numpy(f0)[None]
            )
        return float(loss(out[:, : target.shape[1]], target))

    for objective, loss in (
        ("log-mel", lambda a, b: log_mel_loss(a, b, SR)),
        ("decoder", spectral_loss),
    ):
        r = search_codes(
            model, wave, SR, "alice", f0, SearchConfig(steps=20, lr=0.1, objective=objective)
        )
        assert r.loss_after < r.loss_before
        assert measured(r.codes, loss) < measured(r.encoder_codes, loss)


def test_compress_writes_the_searched_codes_and_decompress_decodes_them(tmp_path):
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import (
        compress,
        decompress,
        entropy_source,
        pitch_symbols,
        pitch_track_f0,
        unpack_codes,
        unpack_voice,
    )

    model = trained_looking("tiny-sf-spk")
    wave = synth_speechlike(1.5, seed=6)
    config = SearchConfig(steps=10, lr=0.1)
    plain = compress(model, wave, SR, tmp_path / "plain.svq")
    header = compress(model, wave, SR, tmp_path / "searched.svq", search=config)
    assert header.voice == plain.voice and header.pitch_bytes == plain.pitch_bytes
    codes = unpack_codes(read_svq(tmp_path / "searched.svq"), entropy_source(model))
    # the search ran in the voice and F0 the receiver decodes with
    voice = unpack_voice(header.voice)
    f0 = pitch_track_f0(model, pitch_symbols(model, f0_of(model, wave)), codes.size)
    expected = search_codes(model, wave, SR, voice, f0, config)
    np.testing.assert_array_equal(codes, expected.codes)
    assert expected.changed > 0
    out = decompress(model, tmp_path / "searched.svq", seed=0)
    decoded = model.decode(codes, voice, seed=0, f0=f0)[: header.num_samples]
    np.testing.assert_array_equal(out, decoded)


def test_evaluate_scores_the_searched_codes_as_their_own_system(tmp_path):
    import soundfile as sf

    from speechvq.data.discovery import Recording
    from speechvq.evaluation.evaluate import EvaluationOptions, evaluate
    from speechvq.evaluation.report import markdown
    from speechvq.evaluation.results import PITCH_SYSTEM, SEARCH_SYSTEM

    model = trained_looking()
    path = tmp_path / "a.wav"
    sf.write(path, synth_speechlike(1.0, seed=7), SR)
    items = [Recording("a", path, "alice")]
    options = EvaluationOptions(
        baselines=(),
        metrics=("mel",),
        progress=False,
        examples=0,
        search=SearchConfig(steps=5, lr=0.1),
    )
    report = evaluate(model, items, options)
    searched, pitch = report.system(SEARCH_SYSTEM), report.system(PITCH_SYSTEM)
    assert set(searched.scores) == {"a"} and np.isfinite(searched.scores["a"]["mel_distance"])
    assert searched.bitrate == pitch.bitrate  # the same nominal codes and pitch track
    assert (
        "speechvq+search is the same with codes searched by synthesis, as `compress` writes"
        in markdown(report)
    )
    without = evaluate(
        model, items, EvaluationOptions(baselines=(), metrics=("mel",), progress=False, examples=0)
    )
    assert SEARCH_SYSTEM not in [s.name for s in without.systems]
    assert "speechvq+search" not in markdown(without)


def test_compress_searches_by_default_with_a_parallel_decoder_only():
    from speechvq.config import COMPRESS_SEARCH_STEPS
    from speechvq.inference.code_search import default_search

    assert default_search(trained_looking()) == SearchConfig(steps=COMPRESS_SEARCH_STEPS)
    assert default_search(trained_looking(), 2.0).rate_weight == 2.0
    wavenet = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["alice"]))
    assert default_search(wavenet) is None


def test_cli_search_options(tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from speechvq.cli import app

    model = trained_looking("tiny-sf-spk")
    model.save(tmp_path / "m.safetensors")
    sf.write(tmp_path / "a.wav", synth_speechlike(1.5, seed=8), SR)
    cli = CliRunner()
    args = ["compress", str(tmp_path / "a.wav"), "-m", str(tmp_path / "m.safetensors")]
    for name, extra in (("default", []), ("fast", ["--search", "0"]), ("few", ["--search", "3"])):
        result = cli.invoke(app, [*args[:2], str(tmp_path / f"{name}.svq"), *args[2:], *extra])
        assert result.exit_code == 0, result.stderr
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import entropy_source, unpack_codes

    def codes(name):
        return unpack_codes(read_svq(tmp_path / f"{name}.svq"), entropy_source(model))

    np.testing.assert_array_equal(codes("fast"), model.encode(synth_speechlike(1.5, seed=8), SR))
    assert (codes("default") != codes("fast")).any()  # searched unless told not to
    bad = cli.invoke(
        app, [*args[:2], str(tmp_path / "x.svq"), *args[2:], "--search", "0", "--search-rate", "1"]
    )
    assert bad.exit_code == 2 and "--search-rate needs a search" in bad.stderr
    bad = cli.invoke(app, ["compress", "--stream", "-", "-", "--search", "3"])
    assert bad.exit_code == 2 and "--search needs a file" in bad.stderr


def test_quiet_frames_keep_the_encoders_codes(model):
    """Pauses (here 0.4 s at -50 dB) are not searched unless `quiet_db` is None."""
    from speechvq.inference.code_search import _quiet_frames

    hop = model.hop_length
    speech = synth_speechlike(0.4, seed=10)
    pause = 0.003 * np.random.default_rng(0).standard_normal(6400).astype(np.float32)
    wave = np.concatenate([speech, pause, synth_speechlike(0.4, seed=11)])
    quiet = _quiet_frames(wave[: wave.size // hop * hop], hop, 20.0)
    frames = np.arange(quiet.size)
    in_pause = (frames * hop >= speech.size + 4 * hop) & (
        frames * hop < speech.size + 6400 - 5 * hop
    )
    assert quiet[in_pause].all() and not quiet[frames * hop < speech.size - 5 * hop].any()
    assert not _quiet_frames(wave, hop, None).any()
    f0 = f0_of(model, wave)
    config = SearchConfig(steps=15, lr=0.1)
    r = search_codes(model, wave, SR, "alice", f0, config)
    np.testing.assert_array_equal(r.codes[quiet], r.encoder_codes[quiet])
    assert (r.codes[~quiet] != r.encoder_codes[~quiet]).any()
    everywhere = search_codes(
        model, wave, SR, "alice", f0, SearchConfig(steps=15, lr=0.1, quiet_db=None)
    )
    assert (everywhere.codes[quiet] != everywhere.encoder_codes[quiet]).any()
