"""Speaker-adversarial training of the encoder: latents that do not tell who speaks.

Conversion keeps the source's voice to the extent the codes carry it: the
decoder hears the source speaker in them as well as the target's vector.
Latent statistics matching (`models.matching`) moves each latent dimension's
mean and spread over an utterance to the target's, but whatever of the voice
lies in how the latents move from frame to frame stays. With
`TrainConfig.code_speaker > 0` the trainer keeps a `SpeakerCritic` beside
the model (the domain-adversarial recipe of Ganin & Lempitsky 2015, as in
speaker-invariant ASR training), and each step:

1. the critic, a small dilated convolution stack over the encoder's output
   `[B, D, F]` (about 120 ms of context a frame), takes one optimiser step
   at naming each frame's training speaker (cross-entropy), on the latents
   detached;
2. the model's loss gains `code_speaker` x the cross-entropy of the critic's
   posterior against the uniform distribution over the training speakers:
   the encoder is pushed towards latents the critic cannot tell apart. This
   "confusion" objective (Tzeng et al. 2015) is bounded, where reversing
   the critic's gradient asks the encoder for an ever larger error.

The critic sees the latents before quantisation: the codes are their nearest
codebook rows, and the straight-through gradient reaches the encoder there.
The critic and its optimiser live in the checkpoint, not in the model file.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

CHANNELS = 256
KERNEL = 5
DILATIONS = (1, 2, 4)  # receptive field 1 + 4 * 7 = 29 frames (116 ms at hop 64)


class SpeakerCritic:
    """A frame-level speaker classifier `[B, D, F] -> [B, S, F]` and its Adam optimiser."""

    def __init__(self, latent_dim: int, trained: torch.Tensor, lr: float, device: torch.device):
        layers: list[nn.Module] = []
        width = latent_dim
        for d in DILATIONS:
            pad = d * (KERNEL - 1) // 2
            layers += [nn.Conv1d(width, CHANNELS, KERNEL, dilation=d, padding=pad)]
            layers += [nn.LeakyReLU(0.2)]
            width = CHANNELS
        layers.append(nn.Conv1d(width, int(trained.numel()), 1))
        self.net = nn.Sequential(*layers).to(device).train()
        # Only speakers with training audio are classes (held-out speakers never
        # appear in a batch; their logits are masked out of both losses).
        self.mask = torch.where(trained.to(device), 0.0, -math.inf)
        self.classes = int(trained.sum())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.5, 0.9))

    def _log_probs(self, latents: torch.Tensor) -> torch.Tensor:
        logits = self.net(latents.float()) + self.mask[None, :, None]  # (B, S, F)
        return F.log_softmax(logits, dim=1)

    def critic_step(self, latents: torch.Tensor, speaker: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of the critic on `[B, D, F]` latents (detached); its loss and frame accuracy."""
        self.net.requires_grad_(True)
        logp = self._log_probs(latents.detach())
        target = speaker[:, None].expand(-1, logp.shape[2])  # (B, F)
        loss = F.nll_loss(logp, target)
        loss.backward()  # the critic's grads are None here: cleared after each step
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()  # one critic on every rank's batch
            for p in self.net.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        accuracy = (logp.argmax(1) == target).float().mean()
        return {"critic_loss": loss.detach(), "critic_accuracy": accuracy.detach()}

    def confusion_loss(self, latents: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the critic's posterior against uniform over the training speakers;
        its minimum, log(classes), is reached when no frame names its speaker. The gradient
        reaches the encoder only (the critic is frozen here)."""
        self.net.requires_grad_(False)
        logp = self._log_probs(latents)
        trained = torch.isfinite(self.mask)
        return -logp[:, trained].mean(1).mean() - math.log(self.classes)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
