"""The speaker path: a voice vector from any recording, decoding and converting to it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import speechvq
from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.models.voice import Voice, adapt_voice

from .conftest import make_prepared_corpus, synth_speechlike, tiny_train_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return speechvq.SpeechVQ(ModelConfig.preset("tiny-sf-spk", speakers=["alice", "bob"]))


def test_the_vector_is_of_the_voice_not_the_length_or_level(model):
    enc = model.speaker_encoder.eval()
    wave = torch.from_numpy(synth_speechlike(1.5))[None]
    with torch.no_grad():
        v = enc(wave)[0]
        twice = enc(torch.cat([wave, wave], dim=1))[0]
        quiet = enc(0.25 * wave)[0]
    assert v.shape == (8,)
    assert torch.nn.functional.cosine_similarity(v, twice, dim=0) > 0.99  # pooled over time
    torch.testing.assert_close(v, quiet, atol=2e-3, rtol=1e-3)  # the level is normalised away


def test_training_needs_a_reference_and_uses_it(model):
    for head in (model.decoder.harmonic_head, model.decoder.noise_head):
        torch.nn.init.normal_(head.weight, std=0.5)  # a fresh decoder starts silent
    wave = torch.from_numpy(np.stack([synth_speechlike(0.5, seed=s) for s in (0, 1)]))
    f0 = torch.full((2, wave.shape[1] // model.hop_length), 140.0)
    with pytest.raises(ValueError, match="reference"):
        model(wave, torch.tensor([0, 1]), f0)
    torch.manual_seed(1)
    a = model(wave, torch.tensor([0, 1]), f0, reference=wave).recon_loss
    torch.manual_seed(1)
    b = model(wave, torch.tensor([0, 1]), f0, reference=wave.flip(0)).recon_loss
    assert a.item() != b.item()  # the decoder hears the reference's voice
    a.backward()
    assert model.speaker_encoder.out.weight.grad.abs().sum() > 0


def test_decode_in_a_measured_voice(model):
    recordings = [(synth_speechlike(1.2, seed=3), 16000), (synth_speechlike(1.0), 16000)]
    voice = model.voice(recordings, adapt_steps=0)
    assert isinstance(voice, Voice) and voice.vector.shape == (8,)
    assert voice.logf0_mean == pytest.approx(np.log(140), abs=0.15)  # the tone's pitch
    codes = model.encode(synth_speechlike(0.5), 16000)
    out = model.decode(codes, voice, seed=0)
    assert out.shape == (8000,) and np.isfinite(out).all()
    by_name = model.decode(codes, "bob", seed=0)  # a name still works: its stored vector
    assert by_name.shape == (8000,) and not np.array_equal(out, by_name)
    converted = model.convert(synth_speechlike(0.5), 16000, voice, seed=0, pitch=False)
    np.testing.assert_array_equal(converted, out)  # pitch=True: tests/test_pitch_track.py


def _resynthesis_loss(model, wave, vector):
    """The decoder's training loss on `wave` re-synthesised from its codes in `vector`'s voice
    (the same noise each call)."""
    codes = model.encode(wave, 16000)
    f0 = torch.from_numpy(model.input_f0(wave, 16000, codes.size).astype(np.float32))[None]
    target = torch.from_numpy(np.pad(wave, (0, codes.size * 64 - wave.size)))[None]
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        latents = model.quantizer.lookup(torch.from_numpy(codes)[None])
        return float(
            model.decoder.reconstruction_loss(target, latents, torch.tensor(vector)[None], f0)
        )


def test_adapting_a_voice_tunes_its_vector_to_resynthesise_the_references(model):
    with torch.no_grad():  # as if trained: a new decoder's heads start at zero, deaf to the voice
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.1)
    wave = synth_speechlike(1.5, seed=3)
    voice = model.voice([(wave, 16000)], adapt_steps=0)
    assert adapt_voice(model, voice, [(wave, 16000)], 0) is voice
    rng_before = torch.random.get_rng_state()
    adapted = adapt_voice(model, voice, [(wave, 16000)], 40, lr=0.05)
    torch.testing.assert_close(torch.random.get_rng_state(), rng_before)  # the caller's RNG kept
    assert all(p.grad is None for p in model.parameters())  # the model is not touched
    assert not np.allclose(adapted.vector, voice.vector)
    assert _resynthesis_loss(model, wave, adapted.vector) < _resynthesis_loss(
        model, wave, voice.vector
    )
    assert (adapted.logf0_mean, adapted.logf0_std, adapted.latents) == (
        voice.logf0_mean,
        voice.logf0_std,
        voice.latents,
    )
    again = adapt_voice(model, voice, [(wave, 16000)], 40, lr=0.05)
    np.testing.assert_array_equal(again.vector, adapted.vector)  # the same call, the same voice


@pytest.mark.parametrize(
    "wave, message",
    [
        (np.zeros(32000, np.float32), "silent"),
        (synth_speechlike(0.5), "under 1 s"),
        (0.1 * np.random.default_rng(0).standard_normal(32000).astype(np.float32), "voiced"),
    ],
)
def test_a_bad_reference_is_one_line(model, wave, message):
    with pytest.raises(SpeechVQError, match=message):
        model.voice([(wave, 16000)])


def test_a_model_without_speaker_encoder_says_so(tiny_model):
    with pytest.raises(SpeechVQError, match="no speaker encoder"):
        tiny_model.voice([(synth_speechlike(1.5), 16000)])
    assert "speaker_encoder" not in tiny_model.config.to_dict()  # old configs, old hashes


def test_train_exports_each_speakers_vector(tmp_path):
    from speechvq.training.vqvae import train

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    cfg = tiny_train_config(max_steps=3)
    result = train(corpus, tmp_path / "run", cfg, progress=False)
    model = speechvq.load(result.model_path)
    vectors = model.speaker_vectors
    assert vectors.shape == (2, 8) and (vectors.abs().sum(1) > 0).all()
    assert not torch.equal(vectors[0], vectors[1])


def test_cli_converts_to_a_reference_recording(tmp_path, model, wav_file):
    from typer.testing import CliRunner

    from speechvq.cli import app

    m_path = tmp_path / "m.safetensors"
    model.save(m_path)
    ref = tmp_path / "ref.wav"
    sf.write(ref, synth_speechlike(1.5, seed=4), 16000)
    out = tmp_path / "out.wav"
    args = ["convert", str(wav_file), str(out), "--target-wav", str(ref), "--adapt", "0"]
    result = CliRunner().invoke(app, [*args, "-m", str(m_path)])
    assert result.exit_code == 0, result.stderr
    assert sf.info(out).frames == 8000 and "ref.wav" in result.stdout
    codes = tmp_path / "c.npy"
    CliRunner().invoke(app, ["encode", str(wav_file), str(codes), "-m", str(m_path)])
    dec = tmp_path / "dec.wav"
    in_voice = ["--speaker-wav", str(ref), "--seed", "0", "--adapt", "0"]
    args = ["decode", str(codes), str(dec), *in_voice]
    result = CliRunner().invoke(app, [*args, "-m", str(m_path)])
    assert result.exit_code == 0 and sf.info(dec).frames == 8000, result.stderr
    svq, dec2 = tmp_path / "c.svq", tmp_path / "dec2.wav"
    args = ["compress", str(wav_file), str(svq), "-m", str(m_path), "--no-pitch"]  # as decode
    CliRunner().invoke(app, args)
    args = ["decompress", str(svq), str(dec2), *in_voice, "-m", str(m_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(sf.read(dec2)[0], sf.read(dec)[0], atol=2e-4)  # the same voice
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    args = ["convert", str(wav_file), str(tmp_path / "o2.wav"), "--target-wav", str(silent)]
    result = CliRunner().invoke(app, [*args, "-m", str(m_path)])
    assert result.exit_code == 2 and "silent" in result.stderr


def test_the_svq_file_carries_the_voice(tmp_path, model):
    from speechvq.inference.compression import compress, decompress, pack_voice, unpack_voice

    voice = model.voice([(synth_speechlike(1.5, seed=5), 16000)], adapt_steps=0)
    packed = pack_voice(voice)
    assert len(packed) <= 64  # 38 bytes as base64
    back = unpack_voice(packed)
    np.testing.assert_allclose(back.vector, voice.vector, atol=np.abs(voice.vector).max() / 250)
    assert back.logf0_mean == pytest.approx(voice.logf0_mean, rel=1e-3)
    wave = synth_speechlike(1.5, seed=5)
    header = compress(
        model, wave, 16000, tmp_path / "a.svq", entropy="adaptive", pitch=False, adapt_steps=0
    )
    assert header.voice is not None
    own = decompress(model, tmp_path / "a.svq", seed=0)
    codes = model.encode(wave, 16000)
    want = model.decode(codes, unpack_voice(header.voice), seed=0)[: len(wave)]
    np.testing.assert_array_equal(own, want)  # decoded in the stored voice, no name given
    named = decompress(model, tmp_path / "a.svq", speaker="alice", seed=0)
    assert not np.array_equal(own, named)
    with pytest.raises(SpeechVQError, match="corrupted voice"):
        unpack_voice("not base64!")


def test_cli_adapt_tunes_the_stored_and_the_reference_voice(tmp_path, model):
    from typer.testing import CliRunner

    from speechvq.cli import app
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import header_voice, pack_voice

    with torch.no_grad():  # as if trained, so the voice matters (see above)
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.1)
    m_path, wav = tmp_path / "m.safetensors", tmp_path / "in.wav"
    model.save(m_path)
    wave = synth_speechlike(1.5, seed=5)
    sf.write(wav, wave, 16000, subtype="FLOAT")
    runner = CliRunner()
    for steps in (0, 5):
        svq = tmp_path / f"a{steps}.svq"
        args = ["compress", str(wav), str(svq), "-m", str(m_path), "--adapt", str(steps)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.stderr
        f0 = [model.input_f0(wave, 16000, model.encode(wave, 16000).size)]
        want = pack_voice(header_voice(model, wave, 16000, f0, adapt_steps=steps))
        assert read_svq(svq).header.voice == want
    assert read_svq(tmp_path / "a0.svq").header.voice != read_svq(tmp_path / "a5.svq").header.voice
    ref, out = tmp_path / "ref.wav", tmp_path / "out.wav"
    sf.write(ref, synth_speechlike(1.5, seed=4), 16000)
    args = ["convert", str(wav), str(out), "--target-wav", str(ref), "--adapt", "3"]
    result = runner.invoke(app, [*args, "-m", str(m_path)])
    assert result.exit_code == 0 and sf.info(out).frames == wave.size, result.stderr
    result = runner.invoke(app, [*args[:-1], "-1", "-m", str(m_path), "-f"])
    assert result.exit_code == 2  # not a number of steps


def test_evaluate_converts_one_shot_to_recorded_voices(tmp_path, model):
    from speechvq.data.discovery import find_recordings
    from speechvq.evaluation.evaluate import EvaluationOptions, evaluate

    for spk, seed in (("carol", 1), ("dave", 2)):  # voices the model never heard
        for k in range(2):
            path = tmp_path / "targets" / spk / f"{spk}_{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, synth_speechlike(3.5, seed=seed * 10 + k), 16000)
    sf.write(tmp_path / "in.wav", synth_speechlike(1.2, seed=7), 16000)
    items = find_recordings(tmp_path / "in.wav")
    targets = find_recordings(tmp_path / "targets")
    options = EvaluationOptions(
        baselines=(),
        metrics=("mel",),
        progress=False,
        examples=0,
        adapt_steps=2,
        target_adapt_steps=2,
    )  # a few steps of tuning each voice, as compress and convert do by default
    report = evaluate(model, items, options, wav_targets=targets)
    assert sorted(c.target for c in report.conversions) == ["carol", "dave"]
    assert any("one-shot target carol: voice from 1 file(s)" in n for n in report.notes)
    assert "mel_distance" in report.system("speechvq").scores["in"]  # in its own voice


def test_reference_crops_come_from_another_utterance_and_may_be_longer(tmp_path):
    from speechvq.data.corpus import PreparedCorpus
    from speechvq.training.vqvae import CropSampler

    corpus = PreparedCorpus(make_prepared_corpus(tmp_path, utterances=3, heldout=0.0))
    utts = {u.id: u for u in corpus.utterances("train")}
    audio = {i: corpus.crop(u, 0, u.length).audio for i, u in utts.items()}
    crop = 8000
    for length in (0, 24000):  # 0: as long as the crop; 1.5 s: longer than every utterance
        sampler = CropSampler(corpus, crop, 4, corpus.speakers, True, length)
        batch = sampler.batch(seed=0, step=1, rank=0)
        refs = batch["reference"].numpy()
        assert refs.shape == (4, length or crop)
        for wave, ref, spk in zip(
            batch["wave"].numpy(), refs, batch["speaker"].tolist(), strict=True
        ):
            speaker = corpus.speakers[spk]
            heard = ref[: min(ref.size, 16000)]  # an utterance is 1 s: the rest is padding
            assert not ref[16000:].any()
            sources = [i for i, a in audio.items() if _holds(a, heard)]
            assert len(sources) == 1 and utts[sources[0]].speaker == speaker
            assert not _holds(audio[sources[0]], wave)  # another utterance than the crop's


def _holds(whole: np.ndarray, part: np.ndarray) -> bool:
    return any(
        np.array_equal(whole[s : s + part.size], part)
        for s in range(0, whole.size - part.size + 1, 64)
    )


def test_evaluate_by_name_decodes_known_speakers_by_their_stored_voice(tmp_path, model):
    from speechvq.data.discovery import find_recordings
    from speechvq.evaluation.evaluate import EvaluationOptions, _decode_speaker, evaluate

    for spk, seed in (("alice", 1), ("zed", 2)):  # one the model knows, one it does not
        path = tmp_path / "in" / spk / f"{spk}_0.wav"
        path.parent.mkdir(parents=True)
        sf.write(path, synth_speechlike(1.2, seed=seed), 16000)
    alice, zed = find_recordings(tmp_path / "in")
    wave = synth_speechlike(1.2, seed=1)
    assert _decode_speaker(model, alice, wave, 16000, adapt_steps=0, by_name=True) == "alice"
    assert isinstance(_decode_speaker(model, zed, wave, 16000, adapt_steps=0, by_name=True), Voice)
    assert isinstance(_decode_speaker(model, alice, wave, 16000, adapt_steps=0), Voice)

    options = EvaluationOptions(
        baselines=(), metrics=("mel",), progress=False, examples=0, adapt_steps=0, by_name=True
    )
    report = evaluate(model, [alice, zed], options)
    assert "1 of 2 files are decoded by their speaker's name" in report.notes
    assert set(report.system("speechvq").scores) == {alice.id, zed.id}
