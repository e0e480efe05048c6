"""The `sf-wavenet` decoder: a parallel WaveNet after the source-filter synthesiser (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import speechvq
from speechvq.config import ModelConfig
from speechvq.models.decoders.base import SynthesisOptions
from speechvq.training.init import copy_matching


def _models(bands: int = 1):
    torch.manual_seed(0)
    sf = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a", "b"])).eval()
    cfg = ModelConfig.preset("tiny-sfwn", speakers=["a", "b"]).to_dict()
    cfg["decoder"]["post_filter"]["bands"] = bands
    wn = speechvq.SpeechVQ(ModelConfig.from_dict(cfg)).eval()
    return sf, wn


def _inputs(frames: int = 40):
    torch.manual_seed(1)
    latents = torch.randn(1, 8, frames)
    f0 = torch.where(torch.arange(frames) % 10 < 7, 140.0, 0.0)[None]
    return latents, torch.tensor([1]), f0


@pytest.mark.parametrize("bands", [1, 4])
def test_it_starts_as_the_source_filter_decoder_it_was_initialised_from(bands):
    sf, wn = _models(bands)
    fresh = copy_matching(sf, wn)
    assert fresh and all(name.startswith("decoder.post.") for name in fresh)
    latents, spk, f0 = _inputs()
    a = sf.decoder(latents, spk, f0, torch.Generator().manual_seed(5))
    b = wn.decoder(latents, spk, f0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)  # the correction's last layer starts at zero


@pytest.mark.parametrize("bands", [1, 4])
def test_its_correction_trains_and_moves_the_output(bands):
    _, wn = _models(bands)
    wn.train()
    latents, spk, f0 = _inputs()
    wave = torch.sin(torch.arange(40 * 64) * 0.05)[None] * 0.3
    opt = torch.optim.Adam(wn.decoder.post.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = wn.decoder.reconstruction_loss(wave, latents, spk, f0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert wn.decoder.post.out[-1].weight.abs().sum() > 0


def test_its_head_passes_a_gradient_even_when_every_unit_is_off():
    # 0.17.0's head (ReLUs, a biased last layer) died in an adversarial CPU run: no
    # hidden unit fired, nothing but the last bias learned, a tone at the bands' edges.
    _, wn = _models(4)
    head = wn.decoder.post.out
    assert head[-1].bias is None  # no constant of its own in any band
    with torch.no_grad():
        head[1].bias.fill_(-100.0)  # every hidden pre-activation below zero
        head[-1].weight.normal_(0, 0.01)
    wn.train()
    latents, spk, f0 = _inputs()
    wave = torch.sin(torch.arange(40 * 64) * 0.05)[None] * 0.3
    wn.decoder.reconstruction_loss(wave, latents, spk, f0).backward()
    assert head[1].weight.grad.abs().sum() > 0 and head[1].bias.grad.abs().sum() > 0


@pytest.mark.parametrize("bands", [1, 4, 8])
def test_chunked_synthesis_equals_one_pass(bands):
    _, wn = _models(bands)
    with torch.no_grad():
        for p in wn.decoder.post.parameters():
            p.add_(0.1 * torch.randn_like(p))  # a correction that is not zero
        latents, spk, f0 = _inputs(60)
        c = wn.decoder.controls(latents, spk, f0)
        harmonic, noise = wn.decoder.render_parts(c, torch.Generator().manual_seed(2))
        whole = wn.decoder.filter_chunked(harmonic, noise, c.features, chunk=10**9)
        assert not torch.allclose(whole, harmonic + noise)
        for chunk in (64, 1000, 1777):
            part = wn.decoder.filter_chunked(harmonic, noise, c.features, chunk=chunk)
            assert torch.allclose(part, whole, atol=1e-5), chunk
        one = wn.decoder.synthesize(latents, spk, f0, SynthesisOptions(seed=2))
        assert np.allclose(one, whole[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("bands", [4, 8])
def test_the_filter_bank_splits_and_joins_speech_almost_exactly(bands):
    from speechvq.models.pqmf import PQMF

    from .conftest import synth_speechlike

    torch.manual_seed(0)
    x = torch.tensor(synth_speechlike(1.0))[None, None]
    x = x + 0.05 * torch.randn_like(x)  # noise fills every band
    bank = PQMF(bands)
    sub = bank.analysis(x)
    assert sub.shape == (1, bands, 16000 // bands)
    y = bank.synthesis(sub)
    assert y.shape == x.shape
    edge = 2 * bank.taps  # the zero padding at the ends
    err = (y - x)[..., edge:-edge].square().mean()
    snr = 10 * torch.log10(x[..., edge:-edge].square().mean() / err)
    assert snr > {4: 60, 8: 50}[bands], snr
    # each band holds its own stretch of the spectrum: a tone amid band 1 lands there
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 1.5 * (8000 / bands) * t)[None, None]
    energy = bank.analysis(tone)[..., edge:-edge].square().mean(-1)[0]
    assert energy.argmax() == 1
    assert energy.max() > 100 * energy.sort().values[-2]


def test_sub_bands_must_divide_the_hop():
    from speechvq.config import PostFilterConfig
    from speechvq.models.decoders.sf_wavenet import PostFilter

    with pytest.raises(ValueError, match="divide the hop"):
        PostFilter(PostFilterConfig(bands=8), 16, hop=20)
    with pytest.raises(ValueError, match="bands must be one of"):
        PostFilter(PostFilterConfig(bands=3), 16, hop=24)


def test_the_model_file_round_trips_and_other_kinds_keep_their_config():
    sf, wn = _models()
    assert "post_filter" in wn.config.to_dict()["decoder"]
    assert "post_filter" not in sf.config.to_dict()["decoder"]  # old model hashes stay
    assert ModelConfig.from_dict(wn.config.to_dict()) == wn.config
    assert "parallel WaveNet (3 layers" in wn.decoder.describe()


def test_it_trains_end_to_end_from_a_source_filter_model(tmp_path):
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    base = dict(batch_size=2, crop_seconds=0.25, log_every=1, valid_every=0, export_every=0)
    first = train(
        corpus, tmp_path / "sf", TrainConfig(preset="tiny-sf", max_steps=2, **base), progress=False
    )
    cfg = TrainConfig(preset="tiny-sfwn", max_steps=3, init_parts="matching", **base)
    r = train(corpus, tmp_path / "wn", cfg, init_from=first.model_path, progress=False)
    model = speechvq.load(r.model_path)
    assert model.config.decoder.kind == "sf-wavenet" and np.isfinite(r.last_loss)
    rows = [line.split(",") for line in (r.run_dir / "log.csv").read_text().splitlines()]
    active = [float(v) for k, v, *_ in rows if k == "post_active"]
    level = [float(v) for k, v, *_ in rows if k == "correction_db"]
    assert len(active) == len(level) == 3 and all(0 < a < 1 for a in active)
    assert level[0] == -np.inf and np.isfinite(level[-1])  # zero, then trained away from it
    wave = model.decode(np.arange(20) % 16, "alice")
    assert wave.shape == (20 * 64,) and np.isfinite(wave).all()


def test_adversarial_training_steps_the_discriminators_and_resumes_exactly(tmp_path):
    from speechvq.training.checkpoint import load_checkpoint
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    base = dict(
        preset="tiny-sfwn",
        batch_size=2,
        crop_seconds=0.25,
        log_every=1,
        valid_every=0,
        export_every=0,
        checkpoint_every=2,
        adversarial=1.0,
        disc_channels=4,
    )
    whole = train(corpus, tmp_path / "a", TrainConfig(max_steps=4, **base), progress=False)
    log = (tmp_path / "a" / "log.csv").read_text()
    for key in ("disc_loss", "adv_loss", "fm_loss"):
        assert log.count(f"\n{key},") == 4, key
    part = TrainConfig(max_steps=4, **base)
    train(corpus, tmp_path / "b", part, stop_after=2, progress=False)
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["task"]["adversary"]["disc"], "the discriminators are in the checkpoint"
    resumed = train(corpus, tmp_path / "b", part, resume=True, progress=False)
    a = load_checkpoint(whole.run_dir / "checkpoint.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["task"]["adversary"]["disc"]:
        assert torch.equal(a["task"]["adversary"]["disc"][k], b["task"]["adversary"]["disc"][k]), k


def test_discriminators_warm_up_alone_before_they_reach_the_decoder(tmp_path):
    from speechvq.training.checkpoint import load_checkpoint
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    base = dict(
        preset="tiny-sfwn",
        batch_size=2,
        crop_seconds=0.25,
        log_every=1,
        valid_every=0,
        export_every=0,
        max_steps=5,
        disc_channels=4,
    )
    cfg = TrainConfig(adversarial=1.0, adversarial_start=1, disc_warmup=2, **base)
    train(corpus, tmp_path / "w", cfg, progress=False)
    log = (tmp_path / "w" / "log.csv").read_text()
    assert log.count("\ndisc_loss,") == 4 and log.count("\nadv_loss,") == 2
    # warming up all the way, the decoder learns as without discriminators
    plain = train(corpus, tmp_path / "p", TrainConfig(**base), progress=False)
    cfg = TrainConfig(adversarial=1.0, disc_warmup=10, **base)
    warm = train(corpus, tmp_path / "a", cfg, progress=False)
    a = load_checkpoint(plain.run_dir / "checkpoint.pt")["model"]
    b = load_checkpoint(warm.run_dir / "checkpoint.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_feature_matching_sums_the_maps_as_hifigan_does():
    from speechvq.training.adversarial import Adversary
    from speechvq.training.vqvae import TrainConfig

    adversary = Adversary(TrainConfig(adversarial=1.0, disc_channels=4), torch.device("cpu"))
    torch.manual_seed(3)
    real, fake = torch.randn(2, 4000) * 0.1, torch.randn(2, 4000) * 0.1
    adv, fm = adversary.generator_losses(real, fake)
    with torch.no_grad():
        pairs = zip(adversary.disc(real), adversary.disc(fake), strict=True)
        maps = [(a, b) for (_, fa), (_, fb) in pairs for a, b in zip(fa, fb, strict=True)]
        expected = sum((a - b).abs().mean() for a, b in maps)
    assert len(maps) == 48  # 8 discriminators x 6 maps
    assert torch.allclose(fm, expected)  # summed, not averaged over the 48 maps
    assert adversary.generator_losses(real, real)[1] == 0


def test_the_subband_loss_sees_a_tone_at_the_bands_edge():
    _, wn = _models(bands=4)
    post = wn.decoder.post
    t = torch.arange(16000) / 16000
    speech = (torch.sin(2 * torch.pi * 150 * t) * 0.3)[None]
    tone = (torch.sin(2 * torch.pi * 4000 * t) * 0.01)[None]  # the edge of bands 2 and 3
    pred = (speech + tone).requires_grad_()
    assert post.subband_loss(speech, speech) == 0
    loss = post.subband_loss(pred, speech)
    loss.backward()
    assert loss > 0 and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sub-bands"):
        _models(bands=1)[1].decoder.post.subband_loss(speech, speech)


def test_training_takes_the_subband_loss_with_sub_bands_only(tmp_path):
    from speechvq.errors import SpeechVQError
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=1, heldout=0.0)
    with pytest.raises(SpeechVQError, match="sub-bands"):
        train(
            corpus, tmp_path / "r", TrainConfig(preset="tiny-sf", subband_loss=1.0), progress=False
        )
    bands = {"decoder": {"post_filter": {"bands": 4}}}
    small = dict(batch_size=2, crop_seconds=0.25, log_every=1, valid_every=0, export_every=0)
    cfg = TrainConfig(preset="tiny-sfwn", model=bands, subband_loss=1.0, max_steps=2, **small)
    run = train(corpus, tmp_path / "ok", cfg, progress=False)
    assert (run.run_dir / "log.csv").read_text().count("subband_loss,") == 2


def test_adversarial_training_needs_a_parallel_decoder(tmp_path):
    import pytest

    from speechvq.errors import SpeechVQError
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=1, heldout=0.0)
    with pytest.raises(SpeechVQError, match="parallel decoder"):
        train(corpus, tmp_path / "r", TrainConfig(preset="tiny", adversarial=1.0), progress=False)


def test_a_frozen_encoder_keeps_the_codes_while_the_decoder_trains(tmp_path):
    import pytest
    from safetensors.torch import load_file

    from speechvq.errors import SpeechVQError
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    base = dict(batch_size=2, crop_seconds=0.25, log_every=1, valid_every=0, export_every=0)
    first = train(
        corpus, tmp_path / "sf", TrainConfig(preset="tiny-sf", max_steps=2, **base), progress=False
    )
    frozen = ["encoder", "quantizer", "pitch"]
    cfg = TrainConfig(
        preset="tiny-sfwn", max_steps=3, lr=1e-2, init_parts="matching", frozen=frozen, **base
    )
    r = train(corpus, tmp_path / "wn", cfg, init_from=first.model_path, progress=False)
    before, after = load_file(first.model_path), load_file(r.model_path)
    kept = [k for k in before if k.split(".")[0] in frozen]
    assert any(k.startswith("quantizer.codebook") for k in kept)  # the EMA codebook too
    for k in kept:
        assert torch.equal(before[k], after[k]), k
    moved = [k for k in before if k.startswith("decoder.") and not torch.equal(before[k], after[k])]
    assert moved, "the decoder trained"

    with pytest.raises(SpeechVQError, match="no part 'encodr'"):
        train(
            corpus,
            tmp_path / "typo",
            TrainConfig(preset="tiny-sf", max_steps=1, frozen=["encodr"], **base),
            progress=False,
        )


def test_a_run_that_keeps_the_codes_keeps_the_prior_over_them(tmp_path):
    import dataclasses

    from safetensors.torch import load_file

    from speechvq.models.prior import Prior, PriorConfig
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    base = dict(batch_size=2, crop_seconds=0.25, log_every=1, valid_every=0, export_every=0)
    first = train(
        corpus, tmp_path / "sf", TrainConfig(preset="tiny-sf", max_steps=1, **base), progress=False
    )
    model = speechvq.load(first.model_path)
    K = model.config.quantizer.codebook_size
    model.prior = Prior(PriorConfig.preset("tiny", K, speakers=len(model.speakers)))
    model.set_packet_code(torch.full((K + 1, K), 9, dtype=torch.uint8))
    with_prior = tmp_path / "with-prior.safetensors"
    model.save(with_prior, prior_bitrate="1000.0")

    def run(name, frozen):
        cfg = TrainConfig(preset="tiny-sf", max_steps=1, init_parts="matching", **base)
        cfg = dataclasses.replace(cfg, frozen=frozen)
        return train(corpus, tmp_path / name, cfg, init_from=with_prior, progress=False)

    kept = run("kept", ["encoder", "quantizer"]).model_path
    before, after = load_file(with_prior), load_file(kept)
    priors = [k for k in before if k.startswith("prior.")]
    assert priors and all(torch.equal(before[k], after[k]) for k in priors)
    assert torch.equal(before["packet_code"], after["packet_code"])
    assert speechvq.load(kept).metadata["prior_bitrate"] == "1000.0"

    # The codes change when the codebook trains: the prior is left out.
    new_codes = load_file(run("new-codes", ["encoder"]).model_path)
    assert not any(k.startswith("prior.") for k in new_codes) and "packet_code" not in new_codes


def test_a_file_of_the_old_head_is_refused_naming_its_writer(tmp_path):
    from safetensors.torch import save_file

    from speechvq.errors import SpeechVQError
    from speechvq.models.modelfile import CHECKSUM_KEY, checksum, read_metadata

    _, wn = _models(4)
    wn.save(tmp_path / "new.safetensors")
    meta = read_metadata(tmp_path / "new.safetensors")
    tensors = {k: v.detach().contiguous() for k, v in wn.state_dict().items()}
    tensors["decoder.post.out.3.bias"] = torch.zeros(4)  # the head before 0.18.0
    meta = {k: v for k, v in meta.items() if k != CHECKSUM_KEY} | {"package_version": "0.17.0"}
    meta[CHECKSUM_KEY] = checksum(tensors, meta)
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(SpeechVQError, match=r"out\.3\.bias .*written by speechvq 0\.17\.0"):
        speechvq.load(tmp_path / "old.safetensors")
    assert speechvq.load(tmp_path / "new.safetensors").config == wn.config
