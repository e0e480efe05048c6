"""Speaker-adversarial training of the encoder: a critic names speakers, the encoder confuses it."""

from __future__ import annotations

import math

import torch

from speechvq.training.checkpoint import load_checkpoint
from speechvq.training.code_speaker import SpeakerCritic

from .conftest import make_prepared_corpus, tiny_train_config


def _latents(speaker: torch.Tensor, frames: int = 40) -> torch.Tensor:
    """`[B, 4, F]` latents whose first dimension's level tells the speaker apart."""
    z = torch.randn(speaker.numel(), 4, frames, generator=torch.Generator().manual_seed(0))
    z[:, 0] += 3.0 * speaker[:, None].float()
    return z


def test_the_critic_learns_to_name_the_speaker_and_the_confusion_loss_undoes_it():
    torch.manual_seed(0)
    trained = torch.tensor([True, True, False])  # the third is held out
    critic = SpeakerCritic(4, trained, lr=3e-3, device=torch.device("cpu"))
    speaker = torch.tensor([0, 1, 0, 1])
    z = _latents(speaker)
    first = critic.critic_step(z, speaker)
    assert math.isclose(float(first["critic_loss"]), math.log(2), rel_tol=0.3)
    for _ in range(60):
        figures = critic.critic_step(z, speaker)
    assert figures["critic_accuracy"] > 0.95 and figures["critic_loss"] < 0.2
    # The held-out speaker is never a class: its probability is 0.
    assert torch.isinf(critic._log_probs(z)[:, 2]).all()
    # Confusion: 0 when the posterior is uniform over the training speakers, and
    # large when the latents name their speaker; its gradient moves the latents,
    # not the critic, and one step against it lowers it.
    zz = z.clone().requires_grad_(True)
    loss = critic.confusion_loss(zz)
    assert loss > 1.0
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in critic.net.parameters())
    lowered = critic.confusion_loss((zz - 0.5 * zz.grad).detach())
    assert lowered < loss
    torch.nn.init.zeros_(critic.net[-1].weight)
    torch.nn.init.zeros_(critic.net[-1].bias)
    assert abs(float(critic.confusion_loss(z))) < 1e-6


def test_training_with_the_critic_logs_it_and_resumes_it(tmp_path):
    from speechvq.training.vqvae import train

    torch.set_num_threads(1)
    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    cfg = tiny_train_config(max_steps=6, code_speaker=0.1)
    whole = train(corpus, tmp_path / "a", cfg, progress=False)
    part = train(corpus, tmp_path / "b", cfg, progress=False, stop_after=3)
    train(corpus, tmp_path / "b", cfg, resume=True, progress=False)
    log = (tmp_path / "a" / "log.csv").read_text()
    assert "critic_accuracy" in log and "confusion_loss" in log
    a = load_checkpoint(whole.run_dir / "checkpoint.pt")
    b = load_checkpoint(part.run_dir / "checkpoint.pt")
    for name, tensor in a["task"]["critic"]["net"].items():
        assert torch.equal(tensor, b["task"]["critic"]["net"][name]), name
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
