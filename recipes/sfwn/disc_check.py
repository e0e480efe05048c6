"""Can the discriminators tell a model's decoded speech from the recording, and how soon?
(issue 17, docs/wavenet-decoder.md)

Adversarial training only helps once the discriminators separate real crops from
decoded ones; before that they push the decoder at random. This trains the
discriminators of `training.adversarial` alone, on training crops against the
model's teacher-forced reconstructions of them (the model frozen, in eval mode),
and prints, every `--every` steps, their loss and how far apart they score real
and decoded crops: per discriminator, the mean score of real minus decoded
crops (0 at the start; 1 when they tell them apart perfectly), and the share of
crops each scores on the right side of 0.5.

    python recipes/sfwn/disc_check.py runs/spk/prepared [-m small-spk] [--channels 16]
        [--steps 1000] [--batch 8]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

import speechvq
from speechvq.data.corpus import PreparedCorpus
from speechvq.training.adversarial import Adversary
from speechvq.training.vqvae import CropSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared")
    ap.add_argument("-m", "--model", default="small-spk")
    ap.add_argument("--channels", type=int, default=16, help="discriminator width")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop-seconds", type=float, default=1.0)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = speechvq.load(args.model).eval()
    corpus = PreparedCorpus(args.prepared)
    hop = corpus.hop_length
    crop = int(args.crop_seconds * corpus.sample_rate) // hop * hop
    refs = model.speaker_encoder is not None
    ref_len = 3 * corpus.sample_rate // hop * hop  # as training's reference_seconds: 3
    sampler = CropSampler(corpus, crop, args.batch, list(model.speakers), refs, ref_len)
    cfg = SimpleNamespace(disc_channels=args.channels, disc_lr=args.lr, seed=args.seed)
    adversary = Adversary(cfg, torch.device("cpu"))
    n = sum(p.numel() for p in adversary.disc.parameters())
    print(f"{args.model}: discriminators of {args.channels} channels, {n / 1e6:.1f}M parameters")
    losses, gaps, right = [], [], []
    t0 = time.time()
    for step in range(1, args.steps + 1):
        batch = sampler.batch(args.seed, step, 0)
        with torch.no_grad():
            fake = model(
                batch["wave"], batch["speaker"], batch["f0"], reference=batch.get("reference")
            ).output
        real = batch["wave"]
        losses.append(adversary.discriminator_step(real, fake).item())
        with torch.no_grad():
            r_out, f_out = adversary.disc(real), adversary.disc(fake)
        r = np.array([o.float().mean().item() for o, _ in r_out])
        f = np.array([o.float().mean().item() for o, _ in f_out])
        gaps.append(r - f)
        right.append(
            np.mean(
                [
                    ((ro.float().flatten(1).mean(1) > 0.5).float().mean().item()
                     + (fo.float().flatten(1).mean(1) < 0.5).float().mean().item()) / 2
                    for (ro, _), (fo, _) in zip(r_out, f_out, strict=True)
                ]
            )
        )  # fmt: skip
        if step % args.every == 0:
            k = args.every
            gap = np.mean(gaps[-k:], axis=0)
            print(
                f"step {step:5d}  {(time.time() - t0) / step:.2f} s/step  "
                f"loss {np.mean(losses[-k:]):.3f}  right {np.mean(right[-k:]):.2f}  "
                f"real - decoded per discriminator: {' '.join(f'{g:+.2f}' for g in gap)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
