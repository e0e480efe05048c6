"""Data preparation: corpora in their own layouts -> one folder ready for training.

`prepare_corpus` finds the utterances of one or more corpus folders (VCTK,
LibriSpeech or a generic `<speaker>/<file>` folder; see `speechvq.data.layouts`),
resamples each to the model rate, trims leading and trailing silence,
computes F0 per hop-sized frame and streams everything into the folder that
`speechvq.data.corpus.PreparedCorpus` reads (format in docs/data.md). Levels are
kept as recorded: no normalisation.

Outputs are written under temporary names and renamed; `prepare.json` is
written last and removed first when a folder is prepared again, so a folder
with a `prepare.json` is always complete.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from speechvq.audio.io import load_audio
from speechvq.data.corpus import PCM_SCALE, SPLITS, CorpusWriter
from speechvq.data.layouts import SkippedFile, Source, SourceFile, discover
from speechvq.errors import SpeechVQError


@dataclass(frozen=True)
class PrepareConfig:
    """How to prepare: model rate, hop, held-out split, F0 tracker, silence trimming."""

    sample_rate: int = 16000
    hop_length: int = 64
    heldout: float = 0.05  # share of each speaker's utterances in "valid"
    heldout_speakers: tuple[str, ...] = ()  # speakers held out whole
    f0_method: str = "harvest"  # WORLD Harvest: fewer voicing errors than Dio
    harvest_highpass_hz: float = 80.0  # on Harvest's input only; 0 disables (see f0._highpass)
    workers: int = 2
    trim: bool = True
    trim_top_db: float = 40.0  # silence threshold: at most this far below the loudest frame
    trim_margin_s: float = 0.05  # kept on each side of the speech

    def __post_init__(self) -> None:
        # Refused before hours of processing, not after.
        if not 0.0 <= self.heldout < 1.0:
            raise SpeechVQError(f"--heldout must be in [0, 1), not {self.heldout}")
        if self.f0_method not in ("harvest", "dio"):
            raise SpeechVQError(f"--f0-method must be harvest or dio, not {self.f0_method!r}")
        if self.sample_rate < 8000:
            raise SpeechVQError(f"--sample-rate {self.sample_rate} is below 8000 Hz")


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_corpus` wrote; `table()` is what the CLI prints."""

    out_dir: Path
    utterances: Mapping[str, int]  # per split
    speakers: Mapping[str, int]  # distinct speakers per split
    minutes: Mapping[str, float]  # per split, after trimming
    source_minutes: float  # the kept files before trimming
    skipped: tuple[SkippedFile, ...] = field(default_factory=tuple)
    elapsed_s: float = 0.0

    def table(self) -> str:
        lines = [f"{'split':<8}{'utterances':>12}{'speakers':>10}{'minutes':>10}"]
        for split in SPLITS:
            lines.append(
                f"{split:<8}{self.utterances[split]:>12}{self.speakers[split]:>10}"
                f"{self.minutes[split]:>10.1f}"
            )
        trimmed = self.source_minutes - sum(self.minutes.values())
        lines.append(
            f"skipped {len(self.skipped)} file(s); trimmed {trimmed:.1f} min of silence; "
            f"took {self.elapsed_s:.0f} s; wrote {self.out_dir}"
        )
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more (see prepare.json)")
        return "\n".join(lines)


# -- per-file processing (runs in worker processes) -------------------------


def trim_silence(
    wave: np.ndarray, sample_rate: int, *, top_db: float = 40.0, margin_s: float = 0.05
) -> slice:
    """The span of `wave` `[T]` from the first to the last frame of sound, widened by a margin.

    Frames are 25 ms every 10 ms. A frame counts as sound when its energy is
    above a threshold `top_db` below the loudest frame (as librosa.effects.trim),
    raised to 12 dB above the noise floor (the 10th percentile of frame
    energies) but never above -20 dB: VCTK's room noise sits only 25-40 dB
    below the speech peak, so a fixed depth alone would trim nothing there.
    An all-zero wave gives an empty slice. Written here (not librosa) to avoid
    a large dependency for twenty lines of NumPy.
    """
    win, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    if len(wave) < win:
        return slice(0, len(wave))
    cs = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    starts = np.arange(1 + (len(wave) - win) // hop) * hop
    energy = (cs[starts + win] - cs[starts]) / win
    if energy.max() <= 0:
        return slice(0, 0)
    db = 10 * np.log10(np.maximum(energy, 1e-20) / energy.max())
    threshold = min(max(np.percentile(db, 10) + 12.0, -top_db), -20.0)
    active = np.flatnonzero(db > threshold)
    margin = int(margin_s * sample_rate)
    first, last = int(starts[active[0]]), int(starts[active[-1]])
    return slice(max(0, first - margin), min(len(wave), last + win + margin))


@dataclass(frozen=True)
class _Processed:
    pcm: np.ndarray | None  # int16 [T], T a multiple of the hop
    f0: np.ndarray | None  # float32 [T // hop]
    source_samples: int = 0  # before trimming, at the model rate
    reason: str = ""  # why the file was skipped


def _process(path: Path, config: PrepareConfig) -> _Processed:
    from speechvq.audio.f0 import extract_f0

    try:
        wave, sr = load_audio(path, config.sample_rate)
    except Exception as exc:  # SpeechVQError names the problem; anything else still skips
        return _Processed(None, None, reason=str(exc).removeprefix(f"{path}: "))
    kept = wave
    if config.trim:
        kept = wave[
            trim_silence(wave, sr, top_db=config.trim_top_db, margin_s=config.trim_margin_s)
        ]
    if not kept.any():
        return _Processed(None, None, reason="silent")
    hop = config.hop_length
    kept = kept[: len(kept) // hop * hop]  # whole frames only: audio and F0 align exactly
    if len(kept) < 2 * hop:
        return _Processed(None, None, reason=f"too short ({len(kept)} samples after trimming)")
    try:
        f0 = extract_f0(
            kept, sr, hop, method=config.f0_method, harvest_highpass_hz=config.harvest_highpass_hz
        )
    except Exception as exc:  # a tracker failure costs one file, not the run
        return _Processed(None, None, reason=f"F0 extraction failed ({exc})")
    pcm = np.clip(np.round(kept * PCM_SCALE), -32768, 32767).astype(np.int16)
    return _Processed(pcm, f0.astype(np.float32), source_samples=len(wave))


def _run(files: Sequence[SourceFile], config: PrepareConfig) -> Iterator[_Processed]:
    """`_process` over `files`, in order, on a pool of `config.workers` processes.

    At most two files per worker are in flight (not `pool.map`, which queues
    them all): finished results cannot pile up behind a slow file, and Ctrl-C
    waits for a few files at most.
    """
    if config.workers <= 1:
        yield from (_process(f.path, config) for f in files)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork on Linux: spawn would re-run the caller's script in every worker, which
    # breaks a library call from a script without an `if __name__ == "__main__"` guard.
    method = "fork" if sys.platform == "linux" else None
    pool = ProcessPoolExecutor(config.workers, mp_context=multiprocessing.get_context(method))
    paths = iter([f.path for f in files])
    try:
        pending = deque(pool.submit(_process, p, config) for p in islice(paths, 2 * config.workers))
        while pending:
            result = pending.popleft().result()
            for p in islice(paths, 1):
                pending.append(pool.submit(_process, p, config))
            yield result
    finally:  # on Ctrl-C or an error, drop the queued files instead of finishing them
        pool.shutdown(wait=True, cancel_futures=True)


# -- split ------------------------------------------------------------------


def split_utterances(
    utterances: Sequence[tuple[str, str]], heldout: float, heldout_speakers: Sequence[str] = ()
) -> dict[str, str]:
    """(id, speaker) pairs -> {id: "train" | "valid"}.

    Speakers in `heldout_speakers` go to "valid" whole. Of the others, an
    utterance is "valid" when a hash of its id (SHA-256, so the same on every
    run and machine, unlike Python's `hash`) falls below `heldout`: about that
    share of each speaker, and adding files never moves existing ones. A
    speaker left with no training utterance gets back its highest-hashed one,
    so a single-utterance speaker always stays in training.
    """
    if not 0.0 <= heldout < 1.0:
        raise SpeechVQError(f"--heldout must be in [0, 1), not {heldout}")
    held = set(heldout_speakers)
    split = {}
    by_speaker: dict[str, list[str]] = {}
    for utt_id, speaker in utterances:
        by_speaker.setdefault(speaker, []).append(utt_id)
    for speaker, ids in by_speaker.items():
        if speaker in held:
            split.update(dict.fromkeys(ids, "valid"))
            continue
        score = {i: _unit_hash(i) for i in ids}
        split.update({i: "valid" if score[i] < heldout else "train" for i in ids})
        if all(split[i] == "valid" for i in ids):
            split[max(ids, key=score.__getitem__)] = "train"
    return split


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


# -- the whole run ----------------------------------------------------------


def prepare_corpus(
    sources: Sequence[Source],
    out_dir: str | os.PathLike,
    config: PrepareConfig = PrepareConfig(),
    *,
    force: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Discover the files of `sources` and prepare them into `out_dir` (see `prepare_files`)."""
    files, skipped, seen = [], [], {}
    for source in sources:
        found, bad = discover(source)
        if not found:
            raise SpeechVQError(f"{source.path}: no audio files found ({source.layout} layout)")
        skipped += bad
        for f in found:
            if f.id in seen:
                skipped.append(SkippedFile(str(f.path), f"duplicate id {f.id} ({seen[f.id]})"))
            else:
                seen[f.id] = f.path
                files.append(f)
    return prepare_files(
        files, out_dir, config, sources=sources, skipped=skipped, force=force, progress=progress
    )


def prepare_files(
    files: Sequence[SourceFile],
    out_dir: str | os.PathLike,
    config: PrepareConfig = PrepareConfig(),
    *,
    sources: Sequence[Source] = (),
    skipped: Sequence[SkippedFile] = (),
    force: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Process `files` (ids unique) into a prepared folder (`speechvq.data.corpus.CorpusWriter`).

    Unreadable, empty, silent or too-short files are skipped and listed in the
    summary. An existing prepared folder is replaced only with `force`.
    """
    from tqdm import tqdm

    started = time.monotonic()
    if len({f.id for f in files}) != len(files):
        raise ValueError("file ids must be unique")
    unknown = set(config.heldout_speakers) - {f.speaker for f in files}
    if unknown:
        raise SpeechVQError(f"--heldout-speakers: no such speaker(s): {', '.join(sorted(unknown))}")
    skipped, source_samples = list(skipped), 0
    sr = config.sample_rate
    with (
        CorpusWriter(out_dir, sr, config.hop_length, force=force) as writer,
        closing(_run(files, config)) as results,
        tqdm(total=len(files), unit="file", desc="prepare", disable=not progress) as bar,
    ):
        for f, result in zip(files, results, strict=True):
            bar.update()
            if result.pcm is None:
                skipped.append(SkippedFile(str(f.path), result.reason))
                continue
            writer.add(f.id, f.speaker, str(f.path), result.pcm, result.f0)
            source_samples += result.source_samples
        utts = writer.utterances
        if not utts:
            raise SpeechVQError(f"{out_dir}: no usable audio ({len(skipped)} file(s) skipped)")
        split = split_utterances(
            [(u.id, u.speaker) for u in utts], config.heldout, config.heldout_speakers
        )
        if "train" not in split.values():
            raise SpeechVQError("every speaker is held out: no training utterances left")

        def per_split(value) -> dict:
            return {s: value([u for u in utts if split[u.id] == s]) for s in SPLITS}

        summary = PrepareSummary(
            out_dir=Path(out_dir),
            utterances=per_split(len),
            speakers=per_split(lambda us: len({u.speaker for u in us})),
            minutes=per_split(lambda us: round(sum(u.length for u in us) / sr / 60, 3)),
            source_minutes=round(source_samples / sr / 60, 3),
            skipped=tuple(skipped),
            elapsed_s=round(time.monotonic() - started, 1),
        )
        info = {
            "f0_method": config.f0_method,
            "config": asdict(config),
            "sources": [{"path": str(s.path), "layout": s.layout} for s in sources],
            "utterances": summary.utterances,
            "minutes": summary.minutes,
            "source_minutes": summary.source_minutes,
            "speakers": dict(sorted(Counter(u.speaker for u in utts).items())),
            "speakers_per_split": summary.speakers,
            "skipped": [asdict(s) for s in skipped],
            "elapsed_s": summary.elapsed_s,
        }
        writer.finish(split, info)
    return summary
