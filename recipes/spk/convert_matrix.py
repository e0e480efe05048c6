"""One-shot conversion among the 25 held-out speechocean762 speakers, with and without
latent statistics matching (docs/speaker.md), 500 conversions a variant.

The held-out speakers (`heldout_speakers.txt`, never trained on) are shuffled
(seed 0) into 5 groups of 5 targets. A target's voice is measured on its first
files, `--reference-seconds` or more; the 4 files after those judge it (the
mean resemblyzer embedding). Each of the other 20 speakers' last file is
converted to each target of the group, and counts as identified when its
embedding is nearest the right one of the 5 targets. Also printed: mean
similarity to the target and to the source (the mean embedding of all the
source's files), how often the first is higher, and STOI against the input
(a rough check that the words survive: every variant changes the voice).

Variants (`--variants`, comma-separated): `none` (the codes of `encode`),
`latents` (`convert`'s matching of the encoder's output), `codes` (what a
decoder of codes alone does: `decode --speaker-wav`, `SpeechVQ.match_codes`)
and `running` (the same as a stream does it, each frame matched with the
statistics of the frames so far: `StreamDecoder`, `matching.RunningMatch`).
Each decodes with F0 predicted from the codes; with `+pitch` (`latents+pitch`,
0.9.0's `convert`) with the input's tracked F0 in the target's register instead.
`@S` sets `convert`'s `strength` (`none` and `latents` only; without it 1, the
target itself; `latents+pitch@1.5` is what `convert --target-wav` does since
0.10.0); `@Sv` moves the vector alone that far, `@A/B` the vector A and the
latent statistics B (experiments, docs/speaker.md). `~A/K` (after the rest,
`latents+pitch@1.5~0.5/4`) sets `convert`'s `blend` A and `neighbours` K
(`matching.knn_blend`; `latents` only). `--adapt-steps N` tunes each target's
vector on its references (`models.voice.adapt_voice`) before any variant.

    python recipes/spk/convert_matrix.py [-m small-spk] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import speechvq
from speechvq.audio.io import load_audio
from speechvq.codec.pitch_track import move_level
from speechvq.evaluation import metrics as M
from speechvq.models.matching import RunningMatch
from speechvq.models.voice import extrapolate

SR = 16000


_TRACKED: dict[int, np.ndarray] = {}  # id of an input wave -> its tracked F0
_SOURCES: dict = {}  # id of an input wave -> its own voice


def convert(model, variant: str, wave: np.ndarray, voice) -> np.ndarray:
    """`wave` converted to `voice` the way `variant` names (see the module's docstring)."""
    variant, _, knn = variant.partition("~")
    blend, _, neighbours = knn.partition("/")
    knn_args = {"blend": float(blend or 0), "neighbours": int(neighbours or 4)}
    variant, _, strength = variant.partition("@")
    library_strength = 1.0
    if strength.endswith("v") or "/" in strength:  # experiments: the vector alone, or apart
        if id(wave) not in _SOURCES:
            _SOURCES[id(wave)] = model.voice([(wave, SR)], adapt_steps=0)
        source = _SOURCES[id(wave)]
        vec, _, lat = strength.rstrip("v").partition("/")
        lat = lat or ("1" if strength.endswith("v") else vec)
        moved = extrapolate(source, voice, float(lat))
        voice = replace(moved, vector=extrapolate(source, voice, float(vec)).vector)
    elif strength:
        library_strength = float(strength)  # as `convert --strength` does it
    base, _, extra = variant.partition("+")
    if extra not in ("", "pitch"):
        raise SystemExit(f"unknown variant {variant!r}")
    f0 = None
    if extra == "pitch":  # as `convert` does it; each input is tracked once, not 25 times
        if id(wave) not in _TRACKED:
            _TRACKED[id(wave)] = model.input_f0(wave, SR, model.encode(wave, SR).size)
        f0 = move_level(_TRACKED[id(wave)], *model.voice_level(voice))
    if base in ("none", "latents"):
        match = base == "latents"
        return model.convert(
            wave,
            SR,
            voice,
            match=match,
            pitch=False,
            f0=f0,
            strength=library_strength,
            seed=0,
            **knn_args,
        )
    if library_strength != 1.0 or knn:
        raise SystemExit("@STRENGTH and ~BLEND go with none and latents (convert's own)")
    codes = model.encode(wave, SR)
    if base == "codes":
        codes = model.match_codes(codes, voice)
    elif base == "running":
        codes = model.quantize(RunningMatch(voice.codes).push(model.code_rows(codes)))
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return model.decode(codes, voice, seed=0, f0=f0)


def main() -> None:
    here = Path(__file__).parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="small-spk")
    ap.add_argument("--data", default="../shared/data", help="holds speechocean762/WAVE")
    ap.add_argument("--reference-seconds", type=float, default=3.0)
    ap.add_argument(
        "--adapt-steps",
        type=int,
        default=0,
        help="tune each target's vector on its references this many steps (`voice`'s "
        "adapt_steps; 0, the default here, as up to 0.10.1)",
    )
    ap.add_argument(
        "--variants", default="none,latents", help="none, latents, codes, running; each also +pitch"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = speechvq.load(args.model)

    held = (here / "heldout_speakers.txt").read_text().split()
    random.Random(0).shuffle(held)
    groups = [held[i : i + 5] for i in range(0, len(held), 5)]
    wave_dir = Path(args.data) / "speechocean762" / "WAVE"
    waves, embs = {}, {}
    for s in tqdm(held, desc="references", unit="speaker"):
        files = sorted((wave_dir / f"SPEAKER{s.split('_')[1]}").glob("*.flac"))
        waves[s] = [load_audio(f, SR)[0] for f in files]
        embs[s] = [M.speaker_embedding(w, SR) for w in waves[s]]
    voices, centroids = {}, {}
    for s in held:
        n, seconds = 0, 0.0
        while n < len(waves[s]) and (n == 0 or seconds < args.reference_seconds):
            seconds += len(waves[s][n]) / SR
            n += 1
        refs = [(w, SR) for w in waves[s][:n]]
        voices[s] = model.voice(refs, adapt_steps=args.adapt_steps)
        centroids[s] = np.mean(embs[s][n : n + 4], axis=0)

    adapted = f", vectors adapted {args.adapt_steps} steps" if args.adapt_steps else ""
    print(f"{args.model}, references of {args.reference_seconds:g} s or more{adapted}")
    print("| matching | identified | sim to target | sim to source | target higher | STOI |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in args.variants.split(","):
        t0 = time.time()
        ident, sim_t, sim_s, stoi = [], [], [], []
        pairs = [(g, s, t) for g in groups for s in held if s not in g for t in g]
        for g, s, t in tqdm(pairs, desc=variant, unit="conversion", leave=False):
            src = waves[s][-1]
            out = convert(model, variant, src, voices[t])
            e = M.speaker_embedding(out, SR)
            sims = [M.cosine(e, centroids[k]) for k in g]
            ident.append(g[int(np.argmax(sims))] == t)
            sim_t.append(M.cosine(e, centroids[t]))
            sim_s.append(M.cosine(e, np.mean(embs[s], axis=0)))
            n = min(len(src), len(out))
            stoi.append(M.stoi(src[:n], out[:n], SR))
        higher = np.mean(np.greater(sim_t, sim_s))
        print(
            f"| {variant} | {sum(ident)}/{len(ident)} "
            f"({np.mean(ident):.1%}) | {np.mean(sim_t):.3f} | {np.mean(sim_s):.3f} | "
            f"{higher:.0%} | {np.mean(stoi):.3f} |",
            flush=True,
        )
        print(f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
