"""The vector quantiser: nearest-neighbour lookup in a K x D codebook.

VQ-VAE §3.1-3.2: codes are the nearest codebook rows; the decoder's gradient
reaches the encoder through the straight-through estimator; the loss adds a
codebook term ||sg[z] - e||^2 and a commitment term beta * ||z - sg[e]||^2.
With `ema=True` the codebook is instead an exponential moving average of the
encoder outputs assigned to each code (appendix A.1), and the codebook term
is dropped. Two guards against collapse, neither in the paper: k-means
initialisation from the first batches, and restarting codes whose usage decays
below a threshold from random encoder outputs of the current batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechvq.config import QuantizerConfig


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, D, T], straight-through in training
    codes: torch.Tensor  # [B, T] int64
    loss: torch.Tensor  # commitment (+ codebook when not EMA), scalar
    perplexity: torch.Tensor  # exp(entropy of the batch's code histogram), scalar
    usage: torch.Tensor  # fraction of the K codes used in this batch, scalar


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    # EMA statistics are summed over DDP ranks so every replica keeps the same codebook.
    if _distributed():
        torch.distributed.all_reduce(t)
    return t


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None):
    """Plain Lloyd k-means of `[N, D]` vectors; returns `[k, D]` centroids.

    With fewer vectors than k, centroids are drawn with replacement (dead-code
    restarts then spread them out during training).
    """
    n = x.shape[0]
    idx = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,))
    centroids = x[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        K, D = cfg.codebook_size, cfg.dim
        init = torch.randn(K, D) / D**0.5
        if cfg.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(K))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # Usage is tracked in both modes for dead-code restarts.
        self.register_buffer("usage_count", torch.ones(K))
        # Set by the trainer's `frozen` option: training mode, but no EMA updates
        # or restarts, so the codes stay those of the model it started from.
        self.frozen = False
        self.register_buffer("initialized", torch.tensor(not cfg.kmeans_init))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """`[B, T]` codes to `[B, D, T]` codebook rows."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def nearest(self, flat: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """`[N, D]` vectors to their nearest codes `[N]` (squared Euclidean).

        `norms` `[K]` are the codebook rows' squared norms (`code_norms()`), if
        the caller keeps them: a stream asks for a few frames at a time, where
        recomputing them cost more than the search.
        """
        cb = self.codebook.float()
        if norms is None:
            norms = self.code_norms()
        # |z - c|^2 less |z|^2, which is the same for every code.
        return (norms - 2 * F.linear(flat, cb)).argmin(dim=1)

    def code_norms(self) -> torch.Tensor:
        """The squared norms `[K]` of the codebook rows."""
        return self.codebook.float().pow(2).sum(1)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """`[B, D, T]` latents to their codes `[B, T]`: `forward(z).codes` without the rest."""
        B, D, T = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.nearest(z.float().transpose(1, 2).reshape(-1, D)).view(B, T)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        B, D, T = z.shape
        # Distances and EMA statistics in float32 even under bf16 autocast.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            flat = z.transpose(1, 2).reshape(-1, D)  # (B*T, D)
            learning = self.training and not self.frozen
            if learning and not bool(self.initialized):
                self.init_codebook(flat.detach())  # fallback; the trainer uses more batches
            codes = self.nearest(flat)
            onehot_counts = torch.bincount(codes, minlength=self.cfg.codebook_size).float()
            if learning:
                self._update(flat.detach(), codes, onehot_counts)
            q = self.lookup(codes.view(B, T))  # (B, D, T)
            loss = self.cfg.beta * F.mse_loss(z, q.detach())
            if not self.cfg.ema:
                loss = loss + F.mse_loss(q, z.detach())
            probs = onehot_counts / onehot_counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            usage = (onehot_counts > 0).float().mean()
            # Straight-through estimator (VQ-VAE §3.1): forward q, backward identity to z.
            quantized = z + (q - z).detach() if self.training else q
        return QuantizerOutput(quantized, codes.view(B, T), loss, perplexity, usage)

    @torch.no_grad()
    def init_codebook(self, vectors: torch.Tensor) -> None:
        """Fit the codebook to `[N, D]` encoder outputs by k-means (the trainer gathers
        them over its first batches); the usage statistics restart from there."""
        K = self.cfg.codebook_size
        centroids = kmeans(vectors.float(), K, self.cfg.kmeans_iters)
        if _distributed():
            torch.distributed.broadcast(centroids, 0)
        self.codebook.data.copy_(centroids)
        if self.cfg.ema:
            self.ema_sum.copy_(centroids)
            self.ema_count.fill_(1.0)
        self.usage_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        cfg = self.cfg
        counts = _all_reduce(counts.clone())
        self.usage_count.mul_(cfg.usage_decay).add_(counts, alpha=1 - cfg.usage_decay)
        if cfg.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
            sums = _all_reduce(sums)
            self.ema_count.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
            self.ema_sum.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
            # Laplace smoothing of the counts (Sonnet's VQ-VAE-EMA) avoids division by 0.
            n = self.ema_count.sum()
            smoothed = (self.ema_count + cfg.epsilon) / (n + cfg.codebook_size * cfg.epsilon) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        dead = self.usage_count < self.cfg.dead_code_threshold * self.usage_count.mean()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(flat.shape[0], (n_dead,), device=flat.device)
        fresh = flat[pick] + 1e-3 * torch.randn_like(flat[pick])
        if _distributed():
            torch.distributed.broadcast(fresh, 0)
        self.codebook.data[dead] = fresh
        self.usage_count[dead] = self.usage_count.mean()
        if self.cfg.ema:
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
