"""Packed corpora: a small, losslessly compressed subset of a prepared corpus to carry
to another machine (a GPU box whose uploads are capped), and back.

`pack_corpus` keeps every speaker of each split (their speaker tables, and so
`train --init-from` a model trained on the whole corpus, stay valid), takes
utterances speaker by speaker, round-robin, each cut to at most
`max_utterance_seconds` at a random hop-aligned start, until each split has its
minutes, and writes:

- `audio.flac`: the kept audio, int16, concatenated (about 1.1 MB a minute of
  speech at 16 kHz, half of `audio.npy`);
- `f0.npy`, `manifest.tsv`: as in a prepared folder, offsets into the packed
  arrays (`speechvq.data.corpus`);
- `pack.json`: format name and version, what was kept, and the source
  corpus's prepare.json (written last: its presence means the pack is complete).

`unpack_corpus` turns it back into a prepared folder that `PreparedCorpus`
reads, bit for bit the samples and F0 that were kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechvq.data.corpus import (
    PCM_SCALE,
    SPLITS,
    CorpusWriter,
    PreparedCorpus,
    Utterance,
    read_manifest,
)
from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

FORMAT = "speechvq-packed"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackConfig:
    minutes: float = 20.0  # training audio to keep (at least one cut per speaker)
    valid_minutes: float = 2.0  # held-out audio to keep (likewise)
    max_utterance_seconds: float = 4.0  # longer utterances are cut to this; 0: whole
    seed: int = 0


@dataclass(frozen=True)
class PackSummary:
    path: Path
    utterances: dict[str, int]  # per split
    seconds: dict[str, float]  # per split
    speakers: int
    megabytes: float  # the folder's size

    def line(self) -> str:
        splits = ", ".join(
            f"{s} {self.utterances[s]} utterances ({self.seconds[s] / 60:.1f} min)" for s in SPLITS
        )
        return f"{self.path}: {self.speakers} speakers, {splits}; {self.megabytes:.1f} MB"


@dataclass(frozen=True)
class _Cut:
    utt: Utterance
    start: int  # samples into the utterance, a multiple of the hop
    length: int  # samples, a multiple of the hop


def pack_corpus(
    prepared: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: PackConfig = PackConfig(),
    *,
    force: bool = False,
) -> PackSummary:
    """Write a packed subset of the prepared corpus `prepared` to `out_dir`."""
    import soundfile as sf

    corpus = PreparedCorpus(prepared)
    out = Path(out_dir)
    if (out / "pack.json").exists() and not force:
        raise SpeechVQError(f"{out}: already holds a packed corpus (use --force to replace it)")
    rng = np.random.default_rng(cfg.seed)
    cuts = []
    for split, minutes in (("train", cfg.minutes), ("valid", cfg.valid_minutes)):
        cuts += _choose(corpus, split, minutes * 60, cfg.max_utterance_seconds, rng)
    cuts.sort(key=lambda c: c.utt.offset)  # the source's order
    out.mkdir(parents=True, exist_ok=True)
    (out / "pack.json").unlink(missing_ok=True)  # the folder reads as unfinished
    stage = out / ".prepared"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with CorpusWriter(stage, corpus.sample_rate, corpus.hop_length) as writer:
            for c in cuts:
                crop = corpus.crop(c.utt, c.start, c.length)
                pcm = np.round(crop.audio * PCM_SCALE).astype(np.int16)  # exact: int16 / PCM_SCALE
                writer.add(c.utt.id, c.utt.speaker, c.utt.path, pcm, crop.f0)
            writer.finish({c.utt.id: c.utt.split for c in cuts})
        audio = np.load(stage / "audio.npy")
        with atomic_output(out / "audio.flac") as tmp:
            sf.write(tmp, audio, corpus.sample_rate, format="FLAC", subtype="PCM_16")
        for name in ("f0.npy", "manifest.tsv"):
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    kept = read_manifest(out / "manifest.tsv")
    summary = PackSummary(
        path=out,
        utterances={s: sum(u.split == s for u in kept) for s in SPLITS},
        seconds={s: round(sum(u.duration for u in kept if u.split == s), 1) for s in SPLITS},
        speakers=len({u.speaker for u in kept}),
        megabytes=0.0,
    )
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pack": asdict(cfg),
        "utterances": summary.utterances,
        "seconds": summary.seconds,
        "audio_samples": int(audio.shape[0]),
        "source": {"path": str(corpus.path), "prepare": corpus.info},
    }
    with atomic_output(out / "pack.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return dataclasses.replace(summary, megabytes=round(size / 1e6, 2))


def unpack_corpus(
    packed: str | os.PathLike, out_dir: str | os.PathLike, *, force: bool = False
) -> PreparedCorpus:
    """Turn the packed corpus `packed` into a prepared folder `out_dir`, and open it."""
    import soundfile as sf

    packed = Path(packed)
    meta = read_pack_info(packed)
    rows = read_manifest(packed / "manifest.tsv")
    audio, rate = sf.read(packed / "audio.flac", dtype="int16")
    f0 = np.load(packed / "f0.npy")
    prep = meta["source"]["prepare"]
    hop = int(prep["hop_length"])
    if rate != int(prep["sample_rate"]) or audio.shape != (int(meta["audio_samples"]),):
        raise SpeechVQError(f"{packed}: audio.flac does not match pack.json (pack it again)")
    with CorpusWriter(out_dir, rate, hop, force=force) as writer:
        for u in rows:
            frames = u.length // hop
            writer.add(
                u.id,
                u.speaker,
                u.path,
                audio[u.offset : u.offset + u.length],
                f0[u.f0_offset : u.f0_offset + frames],
            )
        counts = ("format", "version", "created", "audio_samples", "f0_frames")  # the writer's
        kept = {k: v for k, v in prep.items() if k not in counts}
        info = {**kept, "unpacked_from": {"path": str(packed), "pack": meta["pack"]}}
        writer.finish({u.id: u.split for u in rows}, info)
    return PreparedCorpus(out_dir)


def read_pack_info(packed: str | os.PathLike) -> dict:
    """A packed folder's pack.json; refuses other folders and unknown versions."""
    packed = Path(packed)
    path = packed / "pack.json"
    if not path.is_file():
        raise SpeechVQError(f"{packed}: not a packed corpus (no pack.json; `speechvq pack`)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise SpeechVQError(
            f"{packed}: packed-corpus format {meta.get('format')!r} version "
            f"{meta.get('version')!r}; this speechvq reads {FORMAT} version {FORMAT_VERSION}"
        )
    return meta


def _choose(
    corpus: PreparedCorpus, split: str, seconds: float, max_seconds: float, rng
) -> list[_Cut]:
    """Cuts of `split`: round r takes each speaker's r-th utterance (speakers and their
    utterances in a random order), the first round whole, later ones while under `seconds`."""
    hop = corpus.hop_length
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in corpus.utterances(split):
        by_speaker[u.speaker].append(u)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    for s in speakers:
        rng.shuffle(by_speaker[s])
    limit = int(max_seconds * corpus.sample_rate) // hop * hop if max_seconds > 0 else 0
    cuts: list[_Cut] = []
    total = 0
    for r in range(max((len(v) for v in by_speaker.values()), default=0)):
        for s in speakers:
            if r >= len(by_speaker[s]):
                continue
            if r > 0 and total >= seconds * corpus.sample_rate:
                return cuts
            u = by_speaker[s][r]
            length = min(u.length, limit) if limit else u.length
            start = int(rng.integers((u.length - length) // hop + 1)) * hop
            cuts.append(_Cut(u, start, length))
            total += length
    return cuts
