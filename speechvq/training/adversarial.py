"""Adversarial training of a parallel decoder: the discriminators, their optimiser, the losses.

With `TrainConfig.adversarial > 0` the VQ-VAE trainer keeps an `Adversary`
beside the model (issue 17). Each step, after the model's forward pass:

1. the discriminators take one step on the real crops against the decoder's
   reconstructions (detached): least-squares GAN, real -> 1, fake -> 0;
2. the model's loss gains `adversarial` x the least-squares generator loss
   (fake -> 1), summed over the discriminators, and `feature_matching` x the
   L1 distance between their feature maps of the real and the reconstructed
   crop: the mean over each map, summed over the maps (HiFi-GAN's recipe and
   scale; the feature maps of the real crop carry no gradient). Before 0.17.0
   the maps' distances were averaged, not summed, which made feature matching
   48 times weaker (8 discriminators x 6 maps) than HiFi-GAN's at the same weight.

The discriminators and their optimiser live in the checkpoint, not in the
model file: they are for training only.
"""

from __future__ import annotations

import torch

from speechvq.models.discriminators import DiscriminatorConfig, Discriminators


class Adversary:
    """The discriminators `[B, T] -> [(logits, features)]` and their Adam optimiser."""

    def __init__(self, cfg, device: torch.device):
        disc_cfg = DiscriminatorConfig(
            period_channels=cfg.disc_channels, resolution_channels=2 * cfg.disc_channels
        )
        # Their own seed, leaving the global generator as it was: adding them
        # changes nothing else in a run (the codebook's k-means start, say).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.disc = Discriminators(disc_cfg).to(device).train()
        self.net: torch.nn.Module = self.disc
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.8, 0.99))

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One optimiser step of the discriminators on `[B, T]` crops; returns their loss."""
        self.disc.requires_grad_(True)
        loss = real.new_zeros((), dtype=torch.float32)
        for (r, _), (f, _) in zip(self.net(real), self.net(fake.detach()), strict=True):
            loss = loss + (r.float() - 1).square().mean() + f.float().square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def generator_losses(
        self, real: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial, feature-matching) losses of the reconstruction `fake` `[B, T]`;
        the gradient reaches the decoder only (the discriminators are frozen here)."""
        self.disc.requires_grad_(False)
        with torch.no_grad():
            real_out = self.disc(real)
        adv = fake.new_zeros((), dtype=torch.float32)
        fm = fake.new_zeros((), dtype=torch.float32)
        for (_, real_feats), (f, fake_feats) in zip(real_out, self.disc(fake), strict=True):
            adv = adv + (f.float() - 1).square().mean()
            for a, b in zip(real_feats, fake_feats, strict=True):
                fm = fm + (a.float() - b.float()).abs().mean()
        return adv, fm

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.optimizer.load_state_dict(state["optimizer"])
