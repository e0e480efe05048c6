"""One-shot conversion moves the input's latents to the reference's statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import speechvq
from speechvq.codec.pitch_track import move_level
from speechvq.config import ModelConfig
from speechvq.models.matching import (
    MIN_FRAMES,
    LatentStats,
    RunningMatch,
    knn_blend,
    match_latents,
)
from speechvq.models.voice import Voice, extrapolate

from .conftest import synth_speechlike


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf-spk", speakers=["alice", "bob"]))
    for head in (m.decoder.harmonic_head, m.decoder.noise_head):
        torch.nn.init.normal_(head.weight, std=0.5)  # a fresh decoder starts silent
    return m


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(MIN_FRAMES, 600))
def test_matched_latents_have_the_targets_mean_and_spread(seed, frames):
    rng = np.random.default_rng(seed)
    z = rng.normal(rng.normal(size=(4, 1)), rng.uniform(0.1, 3, (4, 1)), (4, frames))
    mean, std = rng.normal(size=4), rng.uniform(0.1, 3, 4)
    target = LatentStats(mean.astype(np.float32), std.astype(np.float32))
    out = match_latents(z.astype(np.float32), target)
    got = LatentStats.of(out)
    np.testing.assert_allclose(got.mean, target.mean, atol=1e-4)
    np.testing.assert_allclose(got.std, target.std, rtol=1e-3)
    # the course within the utterance stays: each dimension is an affine map of itself
    for d in range(4):
        assert np.corrcoef(z[d], out[d])[0, 1] > 0.9999


def test_short_input_is_left_as_it_is():
    z = np.random.default_rng(0).normal(size=(4, MIN_FRAMES - 1)).astype(np.float32)
    target = LatentStats(np.full(4, 5.0, np.float32), np.ones(4, np.float32))
    np.testing.assert_array_equal(match_latents(z, target), z)


def test_quantised_latents_are_the_codes(model):
    wave = synth_speechlike(2.3, seed=5)
    z = model.latents(wave, 16000)
    assert z.shape == (model.config.encoder.latent_dim, len(model.encode(wave, 16000)))
    np.testing.assert_array_equal(model.quantize(z, chunk_frames=100), model.encode(wave, 16000))
    # chunked encoding (with context) gives the same latents as one pass
    np.testing.assert_allclose(model.latents(wave, 16000, chunk_seconds=0.5), z, atol=1e-5)


def test_conversion_to_a_recorded_voice_matches_its_statistics(model):
    ref = synth_speechlike(1.5, seed=3)
    voice = model.voice([(ref, 16000)], adapt_steps=0)
    assert voice.latents is not None
    np.testing.assert_allclose(voice.latents.mean, model.latents(ref, 16000).mean(1), atol=1e-5)
    wave = 0.5 * synth_speechlike(2.0, seed=7)
    matched = model.convert(wave, 16000, voice, seed=0, pitch=False, strength=1.0)
    codes = model.quantize(match_latents(model.latents(wave, 16000), voice.latents))
    np.testing.assert_array_equal(matched, model.decode(codes, voice, seed=0))
    plain = model.convert(wave, 16000, voice, seed=0, match=False, pitch=False, strength=1.0)
    np.testing.assert_array_equal(plain, model.decode(model.encode(wave, 16000), voice, seed=0))
    assert not np.array_equal(codes, model.encode(wave, 16000))  # matching moved codes
    # a name has no recorded statistics: its conversion is the plain one
    by_name = model.convert(wave, 16000, "bob", seed=0, pitch=False)
    np.testing.assert_array_equal(by_name, model.decode(model.encode(wave, 16000), "bob", seed=0))


def test_extrapolation_moves_every_part_of_a_voice_along_one_line():
    rng = np.random.default_rng(0)

    def voice(level):
        stats = LatentStats(rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4))
        return Voice(rng.normal(size=8).astype(np.float32), level, 0.2, stats, stats)

    source, target = voice(4.5), voice(5.3)
    assert extrapolate(source, target, 1.0) is target
    far = extrapolate(source, target, 2.0)
    np.testing.assert_allclose(far.vector, 2 * target.vector - source.vector, rtol=1e-5)
    np.testing.assert_allclose(far.latents.mean, 2 * target.latents.mean - source.latents.mean)
    np.testing.assert_allclose(far.latents.std, target.latents.std**2 / source.latents.std)
    assert (far.logf0_mean, far.logf0_std) == (target.logf0_mean, target.logf0_std)
    alone = extrapolate(source, target, 2.0, latents=False)
    assert alone.latents is target.latents
    np.testing.assert_allclose(alone.vector, far.vector)


def test_conversion_strength_aims_past_the_target_away_from_the_input(model):
    ref = synth_speechlike(1.5, seed=3)
    voice = model.voice([(ref, 16000)], adapt_steps=0)
    wave = 0.5 * synth_speechlike(2.0, seed=7)
    out = model.convert(wave, 16000, voice, seed=0, strength=1.5)
    z = model.latents(wave, 16000)
    f0 = model.input_f0(wave, 16000, z.shape[1])
    far = extrapolate(model.voice([(wave, 16000)], f0=[f0], adapt_steps=0), voice, 1.5)
    codes = model.quantize(match_latents(z, far.latents))
    f0 = move_level(f0, *model.voice_level(far))
    np.testing.assert_array_equal(out, model.decode(codes, far, seed=0, f0=f0))
    assert not np.array_equal(out, model.convert(wave, 16000, voice, seed=0, strength=1.0))
    # an input too short to measure a voice on converts to the target itself
    short = wave[:12000]
    np.testing.assert_array_equal(
        model.convert(short, 16000, voice, seed=0, strength=1.5),
        model.convert(short, 16000, voice, seed=0, strength=1.0),
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 40))
def test_knn_blend_moves_each_frame_towards_its_nearest_reference_frames(seed, k, chunk):
    rng = np.random.default_rng(seed)
    ref = (rng.normal(size=(6, 30)) * rng.uniform(0.1, 10, (6, 1))).astype(np.float32)
    z = (ref[:, rng.integers(0, 30, 50)] + 0.01 * rng.normal(size=(6, 50))).astype(np.float32)
    # a frame next to a reference frame replaced outright is that frame
    exact = knn_blend(ref, ref, k=1, amount=1.0, chunk=chunk)
    np.testing.assert_allclose(exact, ref, rtol=1e-6)
    full = knn_blend(z, ref, k=k, amount=1.0, chunk=chunk)
    half = knn_blend(z, ref, k=k, amount=0.5, chunk=chunk)
    np.testing.assert_allclose(half, (z + full) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(knn_blend(z, ref, k=k, amount=0.0), z)
    # the same answer however the frames are chunked, and in any units per dimension
    np.testing.assert_allclose(full, knn_blend(z, ref, k=k, amount=1.0), rtol=1e-5, atol=1e-5)
    units = rng.uniform(0.1, 10, (6, 1)).astype(np.float32)
    scaled = knn_blend(z * units, ref * units, k=k, amount=1.0, chunk=chunk)
    np.testing.assert_allclose(scaled, full * units, rtol=1e-4, atol=1e-4)


def test_conversion_blend_moves_matched_frames_towards_the_references_frames(model):
    ref = synth_speechlike(1.5, seed=3)
    voice = model.voice([(ref, 16000)], adapt_steps=0)
    np.testing.assert_allclose(voice.frames, model.latents(ref, 16000), atol=1e-6)
    wave = 0.5 * synth_speechlike(2.0, seed=7)
    out = model.convert(wave, 16000, voice, seed=0, pitch=False, strength=1.0, blend=0.5)
    z = match_latents(model.latents(wave, 16000), voice.latents)
    codes = model.quantize(knn_blend(z, voice.frames, k=4, amount=0.5))
    np.testing.assert_array_equal(out, model.decode(codes, voice, seed=0))
    assert not np.array_equal(codes, model.quantize(z))  # the blend moved codes
    plain = model.convert(wave, 16000, voice, seed=0, pitch=False, strength=1.0, blend=0.0)
    np.testing.assert_array_equal(plain, model.decode(model.quantize(z), voice, seed=0))


def test_cli_convert_matches_unless_told_not_to(tmp_path, model):
    import soundfile as sf
    from typer.testing import CliRunner

    from speechvq.cli import app

    m_path, ref, src = tmp_path / "m.safetensors", tmp_path / "ref.wav", tmp_path / "in.wav"
    model.save(m_path)
    sf.write(ref, synth_speechlike(1.5, seed=3), 16000)
    sf.write(src, 0.5 * synth_speechlike(2.0, seed=7), 16000)
    outs = {}
    for flag in ("--match", "--no-match", "--strength=1", "--blend=0.5"):
        out = tmp_path / f"{flag}.wav"
        args = [
            "convert",
            str(src),
            str(out),
            "--target-wav",
            str(ref),
            "--seed",
            "0",
            "--adapt",
            "0",
        ]
        result = CliRunner().invoke(app, [*args, flag, "-m", str(m_path)])
        assert result.exit_code == 0, result.stderr
        outs[flag] = sf.read(out, dtype="float32")[0]
    loaded = speechvq.load(m_path)
    voice = loaded.voice([(sf.read(ref, dtype="float32")[0], 16000)], adapt_steps=0)
    wave = sf.read(src, dtype="float32")[0]
    matched = loaded.convert(wave, 16000, voice, seed=0)
    plain = loaded.convert(wave, 16000, voice, seed=0, match=False)
    peak = np.abs(plain).max()
    assert peak > 10 / 32768  # loud enough, in 16-bit steps, for the comparisons to mean something
    lsb = 1.01 / 32768  # the files are 16-bit
    np.testing.assert_allclose(outs["--match"], matched, atol=lsb)
    np.testing.assert_allclose(outs["--no-match"], plain, atol=lsb)
    at_target = loaded.convert(wave, 16000, voice, seed=0, strength=1.0)
    np.testing.assert_allclose(outs["--strength=1"], at_target, atol=lsb)
    blended = loaded.convert(wave, 16000, voice, seed=0, blend=0.5)
    np.testing.assert_allclose(outs["--blend=0.5"], blended, atol=lsb)
    assert np.abs(matched - plain).max() > 0.1 * peak


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 120), min_size=1, max_size=8))
def test_running_matching_is_the_same_however_the_frames_are_cut(seed, cuts):
    rng = np.random.default_rng(seed)
    z = rng.normal(rng.normal(size=(3, 1)), rng.uniform(0.2, 2, (3, 1)), (3, 400))
    z = z.astype(np.float32)
    target = LatentStats(rng.normal(size=3).astype(np.float32), np.full(3, 0.5, np.float32))
    whole = RunningMatch(target).push(z)
    stream, pieces, t = RunningMatch(target), [], 0
    for n in cuts:
        pieces.append(stream.push(z[:, t : t + n]))
        t += n
    pieces.append(stream.push(z[:, t:]))
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)
    # the first second passes unchanged; from then on each frame is moved with the
    # statistics so far, so the last frame is moved as `match_latents` moves it
    np.testing.assert_array_equal(whole[:, : MIN_FRAMES - 1], z[:, : MIN_FRAMES - 1])
    assert not np.allclose(whole[:, MIN_FRAMES:], z[:, MIN_FRAMES:])
    np.testing.assert_allclose(whole[:, -1], match_latents(z, target)[:, -1], atol=1e-4)


def test_codes_alone_move_to_the_statistics_of_the_references_codes(model):
    ref = synth_speechlike(1.5, seed=3)
    voice = model.voice([(ref, 16000)], adapt_steps=0)
    rows = model.code_rows(model.encode(ref, 16000))
    np.testing.assert_allclose(voice.codes.mean, rows.mean(1), atol=1e-5)
    codes = model.encode(0.5 * synth_speechlike(2.0, seed=7), 16000)
    moved = model.match_codes(codes, voice)
    np.testing.assert_array_equal(
        moved, model.quantize(match_latents(model.code_rows(codes), voice.codes))
    )
    assert not np.array_equal(moved, codes)
    # towards the target's statistics: the moved rows' mean is nearer the reference's
    before = np.abs(model.code_rows(codes).mean(1) - voice.codes.mean).mean()
    after = np.abs(model.code_rows(moved).mean(1) - voice.codes.mean).mean()
    assert after < before
    # a voice without statistics (a name's, a header's) leaves the codes as they are
    header_voice = model.voice([(ref, 16000)], latents=False, adapt_steps=0)
    assert header_voice.codes is None
    np.testing.assert_array_equal(model.match_codes(codes, header_voice), codes)
    np.testing.assert_array_equal(model.match_codes(codes[:100], voice), codes[:100])


def test_cli_decode_and_decompress_in_a_recorded_voice_match_unless_told_not_to(tmp_path, model):
    import soundfile as sf
    from typer.testing import CliRunner

    from speechvq.cli import app
    from speechvq.codec.codes import save_codes

    m_path, ref = tmp_path / "m.safetensors", tmp_path / "ref.wav"
    model.save(m_path)
    sf.write(ref, synth_speechlike(1.5, seed=3), 16000)
    sf.write(tmp_path / "in.wav", 0.5 * synth_speechlike(2.0, seed=7), 16000)
    loaded = speechvq.load(m_path)
    wave = sf.read(tmp_path / "in.wav", dtype="float32")[0]
    codes = loaded.encode(wave, 16000)
    save_codes(tmp_path / "codes.npy", codes)
    m = ["-m", str(m_path), "--speaker-wav", str(ref), "--seed", "0", "--adapt", "0"]
    r = CliRunner().invoke(
        app,  # no pitch track: decode and decompress then both predict F0 from the codes
        [
            "compress",
            str(tmp_path / "in.wav"),
            str(tmp_path / "in.svq"),
            "-m",
            str(m_path),
            "--no-pitch",
            "--adapt",
            "0",
            "--search",
            "0",  # the encoder's codes, those of codes.npy
        ],
    )
    assert r.exit_code == 0, r.output
    voice = loaded.voice([(sf.read(ref, dtype="float32")[0], 16000)], adapt_steps=0)
    want = {
        "--match": loaded.decode(loaded.match_codes(codes, voice), voice, seed=0),
        "--no-match": loaded.decode(codes, voice, seed=0),
    }
    assert np.abs(want["--match"] - want["--no-match"]).max() > 0.1 * np.abs(want["--match"]).max()
    lsb = 1.01 / 32768  # the files are 16-bit
    for flag, expected in want.items():
        for command, source in (("decode", "codes.npy"), ("decompress", "in.svq")):
            out = tmp_path / f"{command}{flag}.wav"
            r = CliRunner().invoke(app, [command, str(tmp_path / source), str(out), *m, flag])
            assert r.exit_code == 0, r.output
            got = sf.read(out, dtype="float32")[0]
            np.testing.assert_allclose(got, expected[: got.size], atol=lsb)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_swapped_latents_take_their_partners_statistics_and_keep_their_course(seed):
    from speechvq.models.matching import swap_statistics

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 4, 50, generator=g) * torch.rand(3, 4, 1, generator=g) * 3
    z = z + torch.randn(3, 4, 1, generator=g)
    partner = torch.tensor([1, 1, 0])
    out = swap_statistics(z, partner)
    assert torch.equal(out[1], z[1])  # its own partner: untouched
    for i, j in ((0, 1), (2, 0)):
        # rtol too: float32 sums are ~1e-4 off on means of a few units
        torch.testing.assert_close(out[i].mean(1), z[j].mean(1), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[i].std(1), z[j].std(1), atol=1e-4, rtol=1e-3)
        for d in range(4):  # each dimension an increasing affine map of itself
            r = torch.corrcoef(torch.stack([out[i, d], z[i, d]]))[0, 1]
            assert r > 0.9999


def test_swap_partners_pair_crops_of_other_speakers_only(tmp_path):
    from speechvq.training.vqvae import swap_partners, train

    from .conftest import make_prepared_corpus, tiny_train_config

    assert swap_partners(torch.tensor([0, 1]), tiny_train_config(), 0, 0) is None
    cfg = tiny_train_config(latent_swap=1.0)
    speakers = torch.tensor([0, 0, 1, 2, 2, 2])
    for step in range(20):
        p = swap_partners(speakers, cfg, step, 0)
        assert torch.equal(p, swap_partners(speakers, cfg, step, 0))  # drawn from the step
        assert (speakers[p] != speakers).all()
    assert torch.equal(swap_partners(torch.tensor([3, 3]), cfg, 0, 0), torch.tensor([0, 1]))
    half = tiny_train_config(latent_swap=0.5)
    moved = [
        (swap_partners(speakers, half, s, 0) != torch.arange(6)).float().mean() for s in range(50)
    ]
    assert 0.35 < float(np.mean(moved)) < 0.65
    # and a run trains with it
    torch.set_num_threads(1)
    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    result = train(
        corpus, tmp_path / "run", tiny_train_config(max_steps=3, latent_swap=0.5), progress=False
    )
    assert result.steps == 3 and np.isfinite(result.last_loss)
