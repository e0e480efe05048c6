"""The WaveNet prior: causality, incremental = teacher-forced, sampling, training, coding."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import speechvq
from speechvq.codec.entropy import decode_codes, encode_codes, ideal_bits
from speechvq.inference.compression import PriorSource
from speechvq.inference.sampling import sample_speech
from speechvq.models.prior import Prior, PriorConfig, sample_codes
from speechvq.training.prior import PriorTrainConfig, extract_codes, train_prior

from .conftest import (
    assert_ranks_agree,
    free_port,
    join_gloo_group,
    keep_rank_weights,
    make_prepared_corpus,
    synth_speechlike,
)

K = 16  # the tiny VQ-VAE's codebook


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_prior(speakers: int = 2, seed: int = 0) -> Prior:
    torch.manual_seed(seed)
    return Prior(PriorConfig.preset("tiny", K, speakers)).eval()


def vqvae(speakers=("alice", "bob")) -> speechvq.SpeechVQ:
    """A tiny untrained VQ-VAE whose codebook is k-means of its encoder outputs on speech-like
    audio, so that encoding gives varied codes (a random codebook maps everything to one code)."""
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=list(speakers)))
    wave = torch.from_numpy(np.concatenate([synth_speechlike(1.0, seed=s) for s in range(4)]))
    with torch.no_grad():
        z = model.encoder(wave[None, None])  # (1, D, F)
        model.quantizer.init_codebook(z[0].T)
    return model.eval()


def toy_codes(n: int, seed: int = 0) -> np.ndarray:
    """Speech-like codes: runs of repeated codes from a small, recurring vocabulary."""
    rng = np.random.default_rng(seed)
    runs = rng.choice([1, 3, 5, 7], size=n) if n else []
    return np.repeat(rng.integers(0, K, size=n), runs)[:n].astype(np.int64)


# The network ------------------------------------------------------------------


def test_config_json_round_trip():
    cfg = PriorConfig.preset("small", 512, speakers=4)
    assert PriorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.receptive_field == 2047  # 8.2 s of codes at 250 frames/s
    with pytest.raises(speechvq.SpeechVQError, match="unknown PriorConfig fields"):
        PriorConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_causal_with_shift():
    # logits[t] predicts code t from codes < t: changing code t changes no logit
    # at positions 0..t, and changes position t + 1 (which reads it as its input).
    prior = tiny_prior()
    codes = torch.from_numpy(toy_codes(40))[None]
    spk = torch.tensor([1])
    t = 17
    changed = codes.clone()
    changed[0, t] = (codes[0, t] + 5) % K
    with torch.no_grad():
        a = prior(prior.shift(codes), spk)
        b = prior(prior.shift(changed), spk)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1], b[:, t + 1])
    # ... and beyond the receptive field, nothing changes again.
    rf = prior.config.receptive_field
    assert torch.equal(a[:, t + 1 + rf :], b[:, t + 1 + rf :]) and t + 1 + rf < 40


def test_incremental_equals_teacher_forced():
    prior = tiny_prior()
    codes = torch.from_numpy(np.stack([toy_codes(30, 1), toy_codes(30, 2)]))
    spk = torch.tensor([0, 2])  # a speaker, and the "unknown" row
    with torch.no_grad():
        full = prior(prior.shift(codes), spk)
        state = prior.start(spk)
        steps = [prior.step(None if t == 0 else codes[:, t - 1], state) for t in range(30)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_speaker_conditioning_matters_and_unknown_row():
    prior = tiny_prior(speakers=2)
    torch.nn.init.normal_(prior.speaker.weight, std=3.0)
    codes = torch.from_numpy(toy_codes(20))[None]
    with torch.no_grad():
        logits = [prior(prior.shift(codes), torch.tensor([s])) for s in range(3)]
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[0], logits[2])
    assert PriorSource(prior, None).speaker == 2 == PriorSource(tiny_prior(0), 1).speaker + 2


def test_training_lowers_loss_on_a_toy_sequence():
    torch.manual_seed(0)
    prior = Prior(PriorConfig.preset("tiny", K)).train()
    codes = torch.arange(64)[None] % 4 * 3  # period 4 over codes 0, 3, 6, 9
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    spk = torch.tensor([0])
    losses = []
    for _ in range(60):
        loss = prior.nll(codes, spk)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.5 and losses[-1] < 0.1 * losses[0], losses[::10]


# Sampling ---------------------------------------------------------------------


def test_sample_codes_seeded_and_in_range():
    prior = tiny_prior()
    a = sample_codes(prior, 50, speaker=1, seed=3)
    assert a.shape == (50,) and a.dtype == np.int64 and 0 <= a.min() and a.max() < K
    np.testing.assert_array_equal(a, sample_codes(prior, 50, speaker=1, seed=3))
    greedy = sample_codes(prior, 20, temperature=0)
    np.testing.assert_array_equal(greedy, sample_codes(prior, 20, temperature=0, seed=9))


@pytest.mark.parametrize("seconds", [0.1, 0.0123, 1 / 16000])
def test_sample_speech_length(seconds):
    model = vqvae()
    model.prior = tiny_prior()
    wave = sample_speech(model, seconds, "bob", temperature=1.0, seed=0)
    assert wave.dtype == np.float32 and wave.shape == (round(seconds * 16000),)
    assert np.isfinite(wave).all()


def test_sample_speech_needs_a_prior():
    with pytest.raises(speechvq.SpeechVQError, match="no prior"):
        sample_speech(vqvae(), 0.1)


# The model file -----------------------------------------------------------------


def test_prior_survives_save_and_load(tmp_path):
    model = vqvae()
    model.save(tmp_path / "plain.safetensors")
    assert speechvq.load(tmp_path / "plain.safetensors").prior is None
    model.prior = tiny_prior(seed=5)
    model.save(tmp_path / "m.safetensors")
    loaded = speechvq.load(tmp_path / "m.safetensors")
    assert loaded.prior is not None and loaded.prior.config == model.prior.config
    codes = torch.from_numpy(toy_codes(30))[None]
    with torch.no_grad():
        a = model.prior(model.prior.shift(codes), torch.tensor([1]))
        b = loaded.prior(loaded.prior.shift(codes), torch.tensor([1]))
    assert torch.equal(a, b)


# Entropy coding -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "speechlike"])
def test_prior_source_round_trip(kind):
    pytest.importorskip("constriction")
    prior = tiny_prior()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, 300) if kind == "random" else toy_codes(300)
    for speaker in (0, None):
        source = PriorSource(prior, speaker)
        payload = encode_codes(codes, source)
        np.testing.assert_array_equal(decode_codes(payload, codes.size, source), codes)
        # The range coder spends within a few words of the model's ideal cost.
        assert 8 * len(payload) <= ideal_bits(codes, source) + 64


def test_prior_source_ignores_the_thread_count():
    prior = tiny_prior()
    codes = toy_codes(100)
    source = PriorSource(prior, 1)
    payload = encode_codes(codes, source)
    torch.set_num_threads(2)
    np.testing.assert_array_equal(decode_codes(payload, codes.size, source), codes)
    assert torch.get_num_threads() == 2  # restored after each step


def test_compress_uses_the_prior(tmp_path):
    pytest.importorskip("constriction")
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import compress, decompress, unpack_codes

    model = vqvae()
    model.prior = tiny_prior()
    wave = synth_speechlike(0.25, seed=7)
    codes = model.encode(wave, 16000)
    assert len(set(codes.tolist())) > 3  # real-ish codes, not one repeated code
    for speaker in ("bob", None):
        path = tmp_path / f"{speaker}.svq"
        header = compress(model, wave, 16000, path, speaker=speaker)
        assert header.entropy_model == "prior" and header.num_frames == codes.size
        source = PriorSource.for_model(model, speaker)
        np.testing.assert_array_equal(unpack_codes(read_svq(path), source), codes)
    # Another voice at decode time: the prior is still conditioned as when written.
    assert decompress(model, tmp_path / "bob.svq", speaker="alice", seed=0).shape == (4000,)


# Training ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two speakers, three 1 s utterances each, one of each held out; and a tiny VQ-VAE."""
    root = tmp_path_factory.mktemp("prior_corpus")
    make_prepared_corpus(root, utterances=3, heldout=0.3)
    vqvae().save(root / "vq.safetensors")
    return root


def tiny_cfg(**kw) -> PriorTrainConfig:
    base = dict(preset="tiny", batch_size=4, crop_codes=100, lr=3e-3, warmup_steps=2)
    base.update(max_steps=40, log_every=5, valid_every=20, checkpoint_every=1000)
    return PriorTrainConfig(**{**base, **kw})


def _log(run_dir, key: str) -> list[float]:
    with open(run_dir / "log.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["key"] == key]


def test_train_prior_end_to_end(corpus, tmp_path):
    run = tmp_path / "run"
    result = train_prior(corpus / "prepared", corpus / "vq.safetensors", run, tiny_cfg())
    assert result.steps == 40 and not result.interrupted
    bits = _log(run, "bits_per_code")
    assert bits[-1] < bits[0]
    assert len(_log(run, "valid_bits_per_code")) == 2  # steps 20 and 40
    model = speechvq.load(result.model_path)
    assert isinstance(model.prior, Prior) and model.prior.config.speakers == 2
    meta = model.metadata
    assert float(meta["prior_bits_per_code"]) == pytest.approx(result.valid_bits_per_code, abs=1e-4)
    assert float(meta["prior_bitrate"]) == pytest.approx(result.valid_bits_per_code * 250, abs=0.1)
    assert meta["prior_training_steps"] == "40" and int(meta["prior_valid_codes"]) == 500
    assert meta["prior_codes"] == "encoder"
    from speechvq.inference.summary import describe_model

    assert ("prior trained on", "codes: encoder") in describe_model(model)
    assert result.valid_bits_per_code < np.log2(K)
    # The exported file's prior is the trained one: its model file codes and decodes.
    pytest.importorskip("constriction")
    from speechvq.inference.compression import compress, decompress

    compress(model, synth_speechlike(0.3, seed=3), 16000, tmp_path / "x.svq", speaker="alice")
    assert decompress(model, tmp_path / "x.svq", seed=0).shape == (4800,)


def test_code_cache_is_reused_and_keyed_by_model(corpus, tmp_path):
    from speechvq.data.corpus import PreparedCorpus

    prepared = PreparedCorpus(corpus / "prepared")
    model = speechvq.load(corpus / "vq.safetensors")
    cache = tmp_path / "codes.npz"
    first = extract_codes(model, prepared, cache, progress=False)
    assert [len(first[s]) for s in ("train", "valid")] == [4, 2]
    assert first["train"].codes.size == 4 * 250
    stamp = cache.stat().st_mtime_ns
    again = extract_codes(model, prepared, cache, progress=False)
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again["train"].codes, first["train"].codes)
    np.testing.assert_array_equal(again["valid"].speakers, first["valid"].speakers)
    model.prior = tiny_prior()  # a prior inside does not change the codes: cache still valid
    extract_codes(model, prepared, cache, progress=False)
    assert cache.stat().st_mtime_ns == stamp
    with torch.no_grad():
        model.quantizer.codebook.mul_(1.01)  # another model: re-extracted
    extract_codes(model, prepared, cache, progress=False)
    assert cache.stat().st_mtime_ns != stamp


def test_the_codes_compress_sends_are_searched_cached_and_resumed(corpus, tmp_path, monkeypatch):
    from speechvq.data.corpus import PreparedCorpus
    from speechvq.errors import SpeechVQError
    from speechvq.inference.code_search import SearchConfig
    from speechvq.inference.compression import sender_codes
    from speechvq.training import prior as prior_training

    prepared = PreparedCorpus(corpus / "prepared")
    with pytest.raises(SpeechVQError, match="parallel decoder"):  # the tiny WaveNet's codes
        extract_codes(vqvae(), prepared, tmp_path / "w.npz", search_steps=2, progress=False)
    from .test_code_search import trained_looking

    model = trained_looking()  # a source-filter model whose output depends on its codes
    cache = tmp_path / "codes.npz"
    plain = extract_codes(model, prepared, cache, progress=False)
    codes_of = prior_training._codes_of
    calls, stop_at = [], [3]

    class Stop(Exception):  # stands for Ctrl-C (pytest takes a KeyboardInterrupt as its own)
        pass

    def counted(*args):
        calls.append(args)
        if len(calls) == stop_at[0]:
            raise Stop  # interrupted during the third utterance
        return codes_of(*args)

    monkeypatch.setattr(prior_training, "_codes_of", counted)
    with pytest.raises(Stop):
        extract_codes(model, prepared, cache, search_steps=10, progress=False)
    partial = tmp_path / "codes.npz.partial"
    key = prior_training.codes_key(model, 10)
    assert len(prior_training._read_partial(partial, key)) == 2
    assert prior_training._read_partial(partial, prior_training.codes_key(model, 9)) == {}
    calls.clear()
    stop_at[0] = 0
    searched = extract_codes(model, prepared, cache, search_steps=10, progress=False)
    assert len(calls) == 6 - 2 and not partial.exists()  # the 2 done are not redone
    first = prepared.utterances("train")[0]
    want = sender_codes(model, prepared.audio(first), 16000, search=SearchConfig(steps=10)).codes
    np.testing.assert_array_equal(searched["train"].utterance(0), want)
    assert not np.array_equal(searched["train"].codes, plain["train"].codes)
    stamp = cache.stat().st_mtime_ns  # cached, keyed by the search
    extract_codes(model, prepared, cache, search_steps=10, progress=False)
    assert cache.stat().st_mtime_ns == stamp
    again = extract_codes(model, prepared, cache, progress=False)
    np.testing.assert_array_equal(again["train"].codes, plain["train"].codes)


def test_resume_gives_the_same_weights(corpus, tmp_path):
    from speechvq.training.checkpoint import load_checkpoint

    args = (corpus / "prepared", corpus / "vq.safetensors")
    cfg = tiny_cfg(max_steps=12, valid_every=0)
    train_prior(*args, tmp_path / "a", cfg, progress=False)
    part = train_prior(*args, tmp_path / "b", cfg, progress=False, stop_after=5)
    assert part.interrupted and part.steps == 5
    with pytest.raises(speechvq.SpeechVQError, match="--resume"):
        train_prior(*args, tmp_path / "b", cfg, progress=False)
    rest = train_prior(*args, tmp_path / "b", cfg, resume=True, progress=False)
    assert rest.steps == 12
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    other = vqvae(speakers=("carol",))
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(speechvq.SpeechVQError, match="another model"):
        train_prior(args[0], tmp_path / "other.safetensors", tmp_path / "b", cfg, resume=True)


def test_init_from_starts_at_a_trained_prior(corpus, tmp_path):
    """`init_from` starts where another model's prior ended (its held-out bits at step 0),
    not from scratch; a model without a prior, or with another architecture, is refused."""
    args = (corpus / "prepared", corpus / "vq.safetensors")
    first = train_prior(*args, tmp_path / "a", tiny_cfg(), progress=False)
    trained = speechvq.load(first.model_path).prior
    cfg = tiny_cfg(max_steps=1, valid_every=1, lr=1e-12, warmup_steps=0)
    fresh = train_prior(*args, tmp_path / "b", cfg, progress=False)
    warm = train_prior(*args, tmp_path / "c", cfg, init_from=first.model_path, progress=False)
    assert warm.valid_bits_per_code == pytest.approx(first.valid_bits_per_code, abs=1e-3)
    # its model file counts the steps it started from, and so does a resumed run
    assert speechvq.load(warm.model_path).metadata["prior_training_steps"] == "41"
    resumed = train_prior(*args, tmp_path / "c", cfg, resume=True, max_steps=2, progress=False)
    assert speechvq.load(resumed.model_path).metadata["prior_training_steps"] == "42"
    assert fresh.valid_bits_per_code > first.valid_bits_per_code + 0.1
    again = speechvq.load(warm.model_path).prior
    for (name, a), b in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(speechvq.SpeechVQError, match="no prior"):
        train_prior(*args, tmp_path / "d", cfg, init_from=args[1], progress=False)
    wide = tiny_cfg(prior={"speaker_dim": 8}, max_steps=1)
    with pytest.raises(speechvq.SpeechVQError, match="not the one this config trains"):
        train_prior(*args, tmp_path / "e", wide, init_from=first.model_path, progress=False)


def _ddp_worker(rank: int, world: int, port: int, args, run_dir) -> None:
    join_gloo_group(rank, world, port)
    save = keep_rank_weights(lambda r: run_dir.parent / f"rank{r}.pt")
    train_prior(*args, run_dir, tiny_cfg(max_steps=4, valid_every=0), progress=False)
    save()


@pytest.mark.slow
def test_ddp_two_processes_gloo(corpus, tmp_path):
    from speechvq.training.checkpoint import load_checkpoint

    port = free_port()
    args = (corpus / "prepared", corpus / "vq.safetensors")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, args, tmp_path / "ddp"), nprocs=2)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"] == 4
    assert speechvq.load(tmp_path / "ddp" / "model.safetensors").prior is not None
    assert_ranks_agree([tmp_path / "rank0.pt", tmp_path / "rank1.pt"])
