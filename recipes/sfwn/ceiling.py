"""How much of the source-filter decoder's loss is the synthesiser's, and how much the
codes'? (issue 17, docs/wavenet-decoder.md "Where the STOI goes")

For each recording, the model's harmonic-plus-noise synthesiser is driven two ways
with the same F0 (the input's pitch track, as `compress` keeps it):
  * decoded: the controls the frame network predicts from the codes and the
    recording's own voice (the speaker encoder's vector tuned 60 steps, as
    `compress` does), i.e. what `decompress` gives;
  * fitted: free per-frame controls (harmonic envelope, noise filter) fitted to
    the recording itself by the decoder's own STFT loss (Adam, `--steps`): the
    best this synthesiser can do with this F0, whatever the codes carry.
Both are scored with STOI and PESQ against the recording. Needs a model with a
source-filter decoder and a pitch track (`small-spk`).

    python recipes/sfwn/ceiling.py runs/spk/eval/seen [-m small-spk] [--steps 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

import speechvq
from speechvq.audio.io import load_audio
from speechvq.data.discovery import find_recordings
from speechvq.evaluation import metrics as M
from speechvq.inference.compression import (
    header_voice,
    pack_voice,
    pitch_symbols,
    pitch_track_f0,
    unpack_voice,
)
from speechvq.models.decoders.source_filter import Controls, noise_generator, spectral_loss


def fitted_controls(decoder, wave: torch.Tensor, f0: torch.Tensor, steps: int) -> Controls:
    """Per-frame controls `[1, F, E]`, `[1, F, N]` fitted to `wave` `[1, F * hop]`."""
    sf = decoder.cfg.decoder.source_filter
    frames = f0.shape[1]
    harmonic = torch.full((1, frames, sf.envelope_bins), -3.0, requires_grad=True)
    noise = torch.full((1, frames, sf.noise_bins), -3.0, requires_grad=True)
    opt = torch.optim.Adam([harmonic, noise], lr=0.05)
    for step in range(steps):
        out = decoder.render(Controls(harmonic, noise, f0), noise_generator(step, wave.device))
        loss = spectral_loss(out, wave)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Controls(harmonic.detach(), noise.detach(), f0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("-m", "--model", default="small-spk")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--adapt", type=int, default=60)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = speechvq.load(args.model)
    sr, hop, dec = model.sample_rate, model.hop_length, model.decoder
    rows = []
    for item in tqdm(find_recordings(args.folder), desc="files", unit="file"):
        ref, _ = load_audio(item.path, sr)
        codes = model.encode(ref, sr)
        frames = codes.size
        track = model.input_f0(ref, sr, frames)
        f0 = torch.as_tensor(pitch_track_f0(model, pitch_symbols(model, track), frames))[None]
        voice = unpack_voice(pack_voice(header_voice(model, ref, sr, [track], args.adapt)))
        wave = torch.zeros(1, frames * hop)
        n = min(len(ref), frames * hop)
        wave[0, :n] = torch.from_numpy(ref[:n])
        with torch.inference_mode():
            vector, _, _ = model._voice_tensors(voice)
            latents = model.quantizer.lookup(torch.from_numpy(codes)[None])
            predicted = dec.controls(latents, vector, f0.float())
        fitted = fitted_controls(dec, wave, f0.float(), args.steps)
        row = {}
        for name, c in (("decoded", predicted), ("fitted", fitted)):
            with torch.inference_mode():
                out = dec.render(c, noise_generator(0, wave.device))[0].numpy()
            a = M.align(ref, out, sr)
            row[name] = (M.stoi(a.reference, a.test, sr), M.pesq_wb(a.reference, a.test, sr))
        scores = ", ".join(f"{k} STOI {s:.3f} PESQ {p:.2f}" for k, (s, p) in row.items())
        tqdm.write(f"{item.id}: {scores}")
        rows.append(row)
    print(f"\n{len(rows)} files, mean:\n\n| controls | STOI | PESQ |\n|---|---:|---:|")
    for name in ("decoded", "fitted"):
        s, p = np.nanmean([r[name] for r in rows], axis=0)
        print(f"| {name} | {s:.3f} | {p:.2f} |")


if __name__ == "__main__":
    main()
