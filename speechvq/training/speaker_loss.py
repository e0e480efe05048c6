"""The speaker-identification loss on the speaker encoder's vectors (issue 16).

Reconstruction alone teaches the speaker encoder only what the decoder
finds useful on the training voices; on a voice it never heard, the
vectors of different people then lie close together and conversion to
them barely moves the voice. This loss makes the vectors tell speakers
apart, as a speaker-verification embedding is trained to (the x-vector
and GE2E recipes): each vector `[B, S]` is scored by cosine similarity
against every training speaker's running-mean vector (the model's own
`speaker_vectors` table, the rows that `--speaker NAME` decodes with),
and cross-entropy asks for its own speaker's row.

The rows are prototypes, not parameters: after each step a row moves a
little towards the new vectors of its speaker (an exponential moving
mean, no gradient), so the table the model ships stays what it says, the
mean vector of each speaker, and the loss needs no extra weights in the
model file or the optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE = 15.0  # logits are SCALE x cosine (a temperature for unit vectors, as in AM-softmax)
MOMENTUM = 0.95  # the running mean's memory, per step a speaker appears in


def speaker_loss(
    vectors: torch.Tensor, speaker: torch.Tensor, table: torch.Tensor, trained: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of `vectors` `[B, S]` against the rows of `table` `[N, S]`; `speaker` `[B]`.

    Only the rows where `trained` `[N]` (bool) is set compete: a speaker held
    out of training has a row measured on held-out audio, which must not
    steer training.
    """
    v = F.normalize(vectors.float(), dim=1)
    rows = F.normalize(table.float(), dim=1, eps=1e-6)
    logits = (SCALE * v @ rows.T).masked_fill(~trained, float("-inf"))
    return F.cross_entropy(logits, speaker)


@torch.no_grad()
def update_table(vectors: torch.Tensor, speaker: torch.Tensor, table: torch.Tensor) -> None:
    """Move each seen speaker's row of `table` `[N, S]` towards the mean of its `vectors`.

    A row that is still zero (a fresh model) takes the vector as it is.
    """
    v = vectors.detach().to(table.dtype)
    for s in speaker.unique():
        mean = v[speaker == s].mean(0)
        row = table[s]
        fresh = bool(row.abs().sum() == 0)
        table[s] = mean if fresh else MOMENTUM * row + (1 - MOMENTUM) * mean
