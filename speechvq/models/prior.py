"""The WaveNet prior over codes: p(code_t | code_<t, speaker) (VQ-VAE §4.3).

After the VQ-VAE is trained, the paper fits an autoregressive WaveNet over
its discrete latents; sampling it gives new code sequences ("clear words and
part-sentences" once decoded), and its probabilities make an entropy model for
`.svq` files that spends less than log2(K) bits per code.

The network is the causal stack of `wavenet.py` over code sequences
(time-major `[B, T, C]`, one step per code, `upsample=1`):

- input t: the embedding of code t-1; input 0 is a learned start token (row K
  of the embedding), so output t predicts code t from the codes before it;
- conditioning: a speaker embedding broadcast over time (WaveNet §2.5 global
  conditioning). The speaker indices are the VQ-VAE's speaker table; one
  extra row, the last, stands for "speaker unknown". Training replaces the
  speaker by it in a share of crops (`speaker_dropout`), so the prior also
  works when the speaker of a file is not known (classifier-free guidance
  trains its unconditional model the same way, Ho & Salimans 2022). An
  unconditional prior (`speakers = 0`) only has that row;
- output: K-way softmax logits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechvq.config import WaveNetConfig, build_dataclass
from speechvq.errors import SpeechVQError
from speechvq.models.wavenet import WaveNet, WaveNetState

# A bound on the steps of one incremental pass (a `PriorSource` does not know
# the sequence length in advance): ~100 days of codes at 250 frames/s.
_MAX_STEPS = 1 << 31


@dataclass(frozen=True)
class PriorConfig:
    """Everything needed to rebuild a `Prior`."""

    codebook_size: int = 512  # K, the VQ-VAE's
    speakers: int = 0  # size of the VQ-VAE's speaker table; 0: unconditional
    speaker_dim: int = 32
    wavenet: WaveNetConfig = field(
        default_factory=lambda: WaveNetConfig(
            layers=20,
            dilation_cycle=10,  # receptive field 2047 codes = 8.2 s at 250 frames/s
            residual_channels=128,
            gate_channels=128,
            skip_channels=128,
            end_channels=256,
        )
    )

    @property
    def receptive_field(self) -> int:
        return self.wavenet.receptive_field

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorConfig:
        """Rebuild from `to_dict` output; unknown keys are an error, missing ones default."""
        d = dict(d)
        wavenet = build_dataclass(WaveNetConfig, d.pop("wavenet", {}))
        return build_dataclass(cls, {**d, "wavenet": wavenet})

    @classmethod
    def preset(cls, name: str, codebook_size: int, speakers: int = 0) -> PriorConfig:
        """`tiny` (tests, seconds) or `small` (a 2-core CPU; 2.4M parameters at K = 512)."""
        if name not in PRIOR_PRESETS:
            raise SpeechVQError(
                f"unknown prior preset {name!r}; choose one of {', '.join(PRIOR_PRESETS)}"
            )
        return dataclasses.replace(
            PRIOR_PRESETS[name], codebook_size=codebook_size, speakers=speakers
        )


PRIOR_PRESETS: dict[str, PriorConfig] = {
    "tiny": PriorConfig(
        speaker_dim=4,
        wavenet=WaveNetConfig(
            layers=4,
            dilation_cycle=4,
            residual_channels=16,
            gate_channels=16,
            skip_channels=16,
            end_channels=32,
        ),
    ),
    "small": PriorConfig(),
}


class Prior(nn.Module):
    """Previous codes `[B, T]` (K = start token) and speaker rows `[B]` to logits `[B, T, K]`."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        K, R = config.codebook_size, config.wavenet.residual_channels
        self.embed = nn.Embedding(K + 1, R)  # row K: the start token
        self.speaker = nn.Embedding(config.speakers + 1, config.speaker_dim)  # last: unknown
        self.wavenet = WaveNet(config.wavenet, config.speaker_dim, K, upsample=1)

    @property
    def start_token(self) -> int:
        return self.config.codebook_size

    def shift(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, T]` to the inputs that predict them: the start token, then codes 0..T-2."""
        return F.pad(codes[:, :-1], (1, 0), value=self.start_token)

    def forward(self, prev: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits `[B, T, K]`; `prev[:, t]` is the code before t (or start).

        `speaker` holds the speaker rows `[B]` (one per sequence), or `[B, T]`
        (one per code: packed training crops span utterances).
        """
        B, T = prev.shape
        x = self.embed(prev)  # (B, T, R)
        cond = self.speaker(speaker)  # (B, S) or (B, T, S)
        if cond.dim() == 2:  # global conditioning, broadcast over time
            cond = cond[:, None].expand(B, T, -1)
        return self.wavenet(x, cond)

    def nll(self, codes: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats per code of whole sequences `[B, T]` from start."""
        logits = self(self.shift(codes), speaker)
        return F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())

    # Incremental generation: the same numbers as `forward`, one code at a time.

    def start(self, speaker: torch.Tensor) -> WaveNetState:
        """A fresh generation state for speaker rows `[B]`."""
        state = self.wavenet.start(self.speaker(speaker)[:, None])  # cond (B, 1, L*2G)
        # The conditioning is constant over time: a stride-0 view serves every step.
        state.cond = state.cond.expand(-1, _MAX_STEPS, -1)
        return state

    def step(self, previous: int | torch.Tensor | None, state: WaveNetState) -> torch.Tensor:
        """Logits `[B, K]` of the next code, given the previous one (None at the start)."""
        B = state.cond.shape[0]
        device = state.cond.device
        if previous is None:
            previous = self.start_token
        prev = torch.as_tensor(previous, device=device).reshape(-1).expand(B)
        return self.wavenet.step(self.embed(prev), state)


def bits_per_code(nats: float) -> float:
    """A cross-entropy in nats per code, in bits per code."""
    return nats / math.log(2)


def speaker_index(prior: Any, speaker: int | None) -> int:
    """The embedding row for a VQ-VAE speaker index, or the "unknown" row for None."""
    S = prior.config.speakers
    if speaker is None or S == 0:
        return S
    if not 0 <= int(speaker) < S:
        raise ValueError(f"speaker index {speaker} outside the prior's table of {S}")
    return int(speaker)


def sample_codes(
    prior: Any,
    frames: int,
    speaker: int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Draw `[frames]` int64 codes from the prior, one incremental step per code.

    `progress(done, frames)`, if given, is called every 50 codes and at the end.
    """
    import torch

    from speechvq.models.wavenet import sample_logits

    if frames < 1:
        raise SpeechVQError(f"cannot sample {frames} frames")
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**31))
    device = next(prior.parameters()).device
    out = np.empty(frames, dtype=np.int64)
    prior.eval()
    with torch.inference_mode():
        state = prior.start(torch.tensor([speaker_index(prior, speaker)], device=device))
        previous: int | None = None
        for t in range(frames):
            logits = prior.step(previous, state).float().cpu()  # (1, K)
            previous = int(sample_logits(logits, temperature, gen)[0])
            out[t] = previous
            if progress is not None and ((t + 1) % 50 == 0 or t + 1 == frames):
                progress(t + 1, frames)
    return out
