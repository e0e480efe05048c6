"""Training: overfitting a clip, exact resume, and DDP with two gloo processes on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechvq.training.checkpoint import load_checkpoint
from speechvq.training.vqvae import TrainConfig, train

from .conftest import (
    assert_ranks_agree,
    free_port,
    join_gloo_group,
    keep_rank_weights,
    make_prepared_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two speakers, two 1 s utterances each, prepared with Dio F0."""
    return make_prepared_corpus(tmp_path_factory.mktemp("corpus"), utterances=2, heldout=0.0)


def tiny(**kw) -> TrainConfig:
    base = dict(
        preset="tiny",
        batch_size=2,
        crop_seconds=0.25,
        lr=3e-3,
        log_every=5,
        valid_every=0,
        checkpoint_every=1000,
        export_every=0,
        max_steps=100,
    )
    return TrainConfig(**{**base, **kw})


def losses(run_dir) -> list[float]:
    import csv

    with open(run_dir / "log.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "recon_loss"]


def test_overfits_a_clip(corpus, tmp_path):
    torch.set_num_threads(1)
    result = train(corpus, tmp_path / "run", tiny(max_steps=100), progress=False)
    curve = losses(tmp_path / "run")
    assert result.steps == 100 and result.model_path.exists()
    assert curve[-1] < 0.5 * curve[0], curve


def test_resume_gives_the_same_weights(corpus, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny(max_steps=12, pitch=True)
    whole = train(corpus, tmp_path / "a", cfg, progress=False)
    part = train(corpus, tmp_path / "b", cfg, progress=False, stop_after=5)
    assert part.interrupted and part.steps == 5
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 5
    rest = train(corpus, tmp_path / "b", cfg, resume=True, progress=False)
    assert rest.steps == whole.steps == 12
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_time_budget_stops_checkpointed_and_exported_and_resumes(corpus, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny(max_steps=4)
    part = train(corpus, tmp_path / "r", cfg, progress=False, max_minutes=1e-6)
    assert part.out_of_time and part.interrupted and part.steps == 1  # the step it ran over in
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 1
    assert part.model_path.exists()
    rest = train(corpus, tmp_path / "r", cfg, resume=True, progress=False, max_minutes=60)
    assert rest.steps == 4 and not rest.out_of_time and not rest.interrupted


def test_the_train_command_says_when_it_ran_out_of_time(corpus, tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    torch.set_num_threads(1)
    config = tmp_path / "tiny.yaml"
    config.write_text("preset: tiny\nbatch_size: 2\ncrop_seconds: 0.25\nvalid_every: 0\n")
    run = ["train", str(corpus), "--out", str(tmp_path / "r"), "--max-steps", "2"]
    cli = CliRunner()
    r = cli.invoke(app, [*run, "--config", str(config), "--max-minutes", "1e-6"])
    assert r.exit_code == 0, r.output
    assert "out of time (--max-minutes) at step 1" in r.output
    r = cli.invoke(app, [*run, "--resume"])
    assert r.exit_code == 0, r.output
    assert "finished at step 2" in r.output


def test_refuses_to_clobber_a_run(corpus, tmp_path):
    from speechvq.errors import SpeechVQError

    train(corpus, tmp_path / "r", tiny(max_steps=1), progress=False)
    with pytest.raises(SpeechVQError, match="--resume"):
        train(corpus, tmp_path / "r", tiny(max_steps=2), progress=False)


def _ddp_worker(rank: int, world: int, port: int, corpus, run_dir) -> None:
    join_gloo_group(rank, world, port)
    save = keep_rank_weights(lambda r: run_dir.parent / f"rank{r}.pt")
    train(corpus, run_dir, tiny(max_steps=4, log_every=1), progress=False)
    save()


@pytest.mark.slow
def test_ddp_two_processes_gloo(corpus, tmp_path):
    port = free_port()
    run_dir = tmp_path / "ddp"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, corpus, run_dir), nprocs=2)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == 4 and (run_dir / "model.safetensors").exists()
    assert np.isfinite(losses(run_dir)).all()
    # The ranks trained on other crops, yet hold the same weights (and codebook EMA).
    assert_ranks_agree([tmp_path / "rank0.pt", tmp_path / "rank1.pt"])
    ranks = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for name, tensor in state["model"].items():
        assert torch.equal(tensor, ranks[name]), name  # rank 0's checkpoint is that model


def test_train_takes_the_manifest_file(corpus, tmp_path):
    """`speechvq train prepared/manifest.tsv` names the prepared folder, as the folder does."""
    result = train(corpus / "manifest.tsv", tmp_path / "r", tiny(max_steps=1), progress=False)
    assert result.steps == 1 and result.model_path.is_file()


def test_init_from_a_model_file_continues_its_weights(corpus, tmp_path, monkeypatch):
    import speechvq
    import speechvq.training.vqvae as train_module
    from speechvq.errors import SpeechVQError

    torch.set_num_threads(1)
    from speechvq.models.prior import Prior, PriorConfig

    first = train(corpus, tmp_path / "a", tiny(max_steps=3), progress=False)
    base = speechvq.load(first.model_path)
    # a shipped model carries its prior: the VQ-VAE's training leaves it out
    base.prior = Prior(PriorConfig.preset("tiny", 16, len(base.speakers)))
    base.save(tmp_path / "with_prior.safetensors", **{
        k: base.metadata[k] for k in ("training_steps", "training_hours")
    })  # fmt: skip

    def no_kmeans(*args, **kwargs):
        raise AssertionError("the codebook must come from the model file, not a new k-means")

    monkeypatch.setattr(train_module, "init_codebook", no_kmeans)
    init = tmp_path / "with_prior.safetensors"
    cont = train(corpus, tmp_path / "b", tiny(max_steps=0), progress=False, init_from=init)
    model = speechvq.load(cont.model_path)
    assert model.metadata["training_steps"] == "3"
    assert model.metadata["initialized_from"] == str(init)
    assert model.prior is None
    for name, tensor in model.state_dict().items():  # zero steps: the weights are the file's
        assert torch.equal(base.state_dict()[name], tensor), name
    other = speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["x"]))
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(SpeechVQError, match="speakers"):
        train(
            corpus,
            tmp_path / "c",
            tiny(max_steps=1),
            progress=False,
            init_from=tmp_path / "other.safetensors",
        )


def test_validation_leaves_out_tails_shorter_than_an_stft_frame(tmp_path):
    """Validation reads 1 s utterances in 0.96 s crops (4 x crop_seconds): the 640-sample
    tails are shorter than the source-filter loss's 2048-sample frame (that crashed
    validation); they are left out."""
    from speechvq.training.vqvae import VALID_MIN_SAMPLES

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.5)  # 1 held out each
    cfg = tiny(preset="tiny-sf", crop_seconds=0.24, valid_every=1, checkpoint_every=0, max_steps=1)
    train(corpus, tmp_path / "run", cfg, progress=False)
    import csv

    with open(tmp_path / "run" / "log.csv") as f:
        seconds = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "valid_seconds"]
    assert seconds == [pytest.approx(2 * 15360 / 16000)] and 640 < VALID_MIN_SAMPLES


def test_init_matching_copies_the_voices_both_tables_know_by_name():
    from speechvq.config import ModelConfig
    from speechvq.models.model import SpeechVQ
    from speechvq.training.init import copy_speaker_rows

    torch.manual_seed(0)
    old = SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["alice", "bob"]))
    new = SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["carol", "bob", "alice"]))
    assert copy_speaker_rows(old, new) == 2
    a, b = old.decoder.speaker.weight, new.decoder.speaker.weight
    assert torch.equal(b[2], a[0]) and torch.equal(b[1], a[1])
    assert torch.allclose(b[0], a.mean(0))  # a new voice starts at the mean of the known


def test_a_deeper_decoder_grown_from_a_trained_one_starts_at_its_output():
    import dataclasses

    from speechvq.config import ModelConfig
    from speechvq.models.model import SpeechVQ
    from speechvq.training.init import copy_matching, zero_new_blocks

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny-sf", speakers=["a", "b"])
    sf = cfg.decoder.source_filter
    deeper = dataclasses.replace(
        cfg,
        decoder=dataclasses.replace(
            cfg.decoder, source_filter=dataclasses.replace(sf, layers=sf.layers + 2)
        ),
    )
    old, new = SpeechVQ(cfg).eval(), SpeechVQ(deeper).eval()
    fresh = copy_matching(old, new)
    assert zero_new_blocks(new, fresh) == 2
    untrained = SpeechVQ(deeper)  # all fresh, its input layer too: nothing was grown
    assert zero_new_blocks(untrained, list(untrained.state_dict())) == 0
    latents, f0 = torch.randn(1, 8, 30), torch.full((1, 30), 150.0)
    with torch.no_grad():
        a = old.decoder(latents, torch.tensor([1]), f0, torch.Generator().manual_seed(3))
        b = new.decoder(latents, torch.tensor([1]), f0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    block = new.decoder.net.blocks[-1]
    assert block[1].weight.abs().sum() > 0  # only the last layer is zero: gradients flow


def test_every_recipe_config_loads_and_builds_its_model():
    from speechvq.training.prior import PriorTrainConfig
    from speechvq.training.vqvae import TrainConfig

    configs = sorted((Path(__file__).parents[1] / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) > 10
    for path in configs:
        if path.name.startswith("prior-"):
            assert PriorTrainConfig.from_yaml(path).batch_size > 0
            continue
        cfg = TrainConfig.from_yaml(path)
        model = cfg.model_config(["a", "b"])  # an override that does not fit fails here
        assert model.speakers == ("a", "b"), path.name
        if path.name == "small-sfwn-spk-cpu.yaml":
            assert model.decoder.post_filter.channels == 32  # the override reached it


def test_recipe_scripts_parse():
    import subprocess

    scripts = sorted((Path(__file__).parents[1] / "recipes").rglob("*.sh"))
    assert len(scripts) > 5
    for script in scripts:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script}: {r.stderr}"
