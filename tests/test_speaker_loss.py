"""The speaker-identification loss: vectors scored against running-mean rows of the table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speechvq.errors import SpeechVQError
from speechvq.training.speaker_loss import MOMENTUM, SCALE, speaker_loss, update_table


def test_the_loss_is_cross_entropy_over_the_trained_rows_only():
    table = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # row 2: the vector's own direction
    vector = torch.tensor([[0.6, 0.8]])
    trained = torch.tensor([True, True, False])
    got = speaker_loss(vector, torch.tensor([0]), table, trained)
    logits = SCALE * torch.tensor([0.6, 0.8])  # cosines with rows 0 and 1; row 2 is out
    assert got.item() == pytest.approx(-F.log_softmax(logits, 0)[0].item(), rel=1e-5)
    everyone = speaker_loss(vector, torch.tensor([0]), table, torch.ones(3, dtype=torch.bool))
    assert everyone.item() > got.item() + 1  # the held-out row would have won


def test_own_row_scores_low_loss_and_anothers_high():
    table = torch.eye(4)
    trained = torch.ones(4, dtype=torch.bool)
    own = speaker_loss(table[[1, 2]], torch.tensor([1, 2]), table, trained)
    other = speaker_loss(table[[2, 1]], torch.tensor([1, 2]), table, trained)
    assert own.item() < 0.01 < SCALE - 1 < other.item()


def test_rows_move_towards_their_speakers_vectors_and_fresh_rows_take_them():
    table = torch.tensor([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    vectors = torch.tensor([[0.0, 1.0], [0.0, 3.0], [2.0, 2.0]])
    update_table(vectors, torch.tensor([0, 0, 1]), table)
    assert table[0].tolist() == pytest.approx([MOMENTUM, (1 - MOMENTUM) * 2.0])
    assert table[1].tolist() == [2.0, 2.0]  # was zero: takes the mean as it is
    assert table[2].tolist() == [5.0, 5.0]  # not in the batch


def test_minimising_it_pulls_two_speakers_vectors_apart():
    torch.manual_seed(0)
    base = torch.randn(8)
    vectors = (base + 0.1 * torch.randn(2, 3, 8)).requires_grad_()  # 2 speakers x 3 crops
    speaker = torch.tensor([0, 0, 0, 1, 1, 1])
    table = torch.zeros(2, 8)
    trained = torch.ones(2, dtype=torch.bool)

    def separation() -> float:
        a, b = vectors.detach().mean(1)
        return F.cosine_similarity(a, b, dim=0).item()

    before = separation()
    opt = torch.optim.SGD([vectors], lr=1.0)
    for _ in range(200):
        flat = vectors.reshape(6, 8)
        update_table(flat, speaker, table)
        loss = speaker_loss(flat, speaker, table, trained)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.99 and separation() < 0.7
    assert loss.item() < 0.01 * math.log(2)  # from 0.67, near chance


def test_training_with_it_logs_it_and_needs_a_speaker_encoder(tmp_path):
    from speechvq.training.vqvae import TrainConfig, train

    from .conftest import make_prepared_corpus, tiny_train_config

    corpus = make_prepared_corpus(tmp_path, utterances=2, heldout=0.0)
    cfg = tiny_train_config(checkpoint_every=0, max_steps=3, speaker_loss=0.5)
    train(corpus, tmp_path / "run", cfg, progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    figures = [float(r.split(",")[1]) for r in log if r.startswith("speaker_loss,")]
    assert len(figures) == 3 and all(0 < f < 2 * SCALE for f in figures)
    with pytest.raises(SpeechVQError, match="speaker encoder"):
        train(
            corpus,
            tmp_path / "run2",
            TrainConfig(preset="tiny-sf", speaker_loss=0.5),
            progress=False,
        )
