"""Reading a prepared corpus: the folder that `speechvq prepare` writes.

A prepared folder holds four files (see docs/data.md):

- `audio.npy`: every utterance at the model rate, concatenated, int16 `[N]`;
- `f0.npy`: F0 in Hz per hop-sized frame, concatenated the same way, float32 `[N // hop]`;
- `manifest.tsv`: one row per utterance with its offsets into both arrays;
- `prepare.json`: format name and version, rates, sources, counts (written last,
  so its presence means the arrays and manifest are complete).

`CorpusWriter` writes the format (`speechvq.data.prepare` decides what goes in);
`PreparedCorpus` reads it. Both arrays are memory-mapped when read, so a
corpus of any size opens instantly and a training crop reads only the pages
it touches. The maps are opened lazily and reopened in a new process, so a
`PreparedCorpus` can be handed to DataLoader workers (fork or spawn).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechvq.errors import SpeechVQError
from speechvq.files import atomic_output

FORMAT = "speechvq-prepared"
FORMAT_VERSION = 1
SPLITS = ("train", "valid")
MANIFEST_COLUMNS = ("id", "speaker", "split", "duration", "path", "offset", "length", "f0_offset")
PCM_SCALE = 32768.0  # int16 <-> float as libsndfile does: float in [-1, 1)


@dataclass(frozen=True)
class Utterance:
    """One row of `manifest.tsv`. Offsets index `audio.npy` (samples) and `f0.npy` (frames)."""

    id: str
    speaker: str
    split: str  # "train" or "valid" ("" while a CorpusWriter is still adding)
    duration: float  # seconds, after trimming
    offset: int  # first sample in audio.npy
    length: int  # samples, a multiple of the hop length
    f0_offset: int  # first frame in f0.npy; the utterance has length // hop frames
    path: str  # the source file, as given to prepare


@dataclass(frozen=True)
class Crop:
    """A hop-aligned piece of an utterance: `audio` float32 `[T]`, `f0` float32 `[T // hop]`."""

    audio: np.ndarray
    f0: np.ndarray


def prepared_folder(path: str | os.PathLike) -> Path:
    """The prepared folder `path` names: the folder itself, or its manifest.tsv or prepare.json."""
    path = Path(path)
    if path.is_file() and path.name in ("manifest.tsv", "prepare.json"):
        return path.parent
    return path


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """The rows of a `manifest.tsv` (no arrays needed), in file order."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise SpeechVQError(f"{path}: unexpected columns {reader.fieldnames}")
            return [
                Utterance(
                    id=row["id"],
                    speaker=row["speaker"],
                    split=row["split"],
                    duration=float(row["duration"]),
                    offset=int(row["offset"]),
                    length=int(row["length"]),
                    f0_offset=int(row["f0_offset"]),
                    path=row["path"],
                )
                for row in reader
            ]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SpeechVQError(f"{path}: unreadable manifest ({exc})") from None


class PreparedCorpus:
    """A prepared folder, opened read-only. Refuses unknown format versions and missing files."""

    def __init__(self, path: str | os.PathLike):
        self.path = prepared_folder(path)
        meta_path = self.path / "prepare.json"
        if not self.path.is_dir():
            raise SpeechVQError(f"{self.path}: no such folder")
        if not meta_path.is_file() and (self.path / "pack.json").is_file():
            raise SpeechVQError(
                f"{self.path}: a packed corpus; unpack it first (`speechvq unpack`)"
            )
        if not meta_path.is_file():
            raise SpeechVQError(
                f"{self.path}: not a prepared corpus, or an unfinished one "
                "(no prepare.json; run `speechvq prepare`)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpeechVQError(f"{meta_path}: unreadable ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SpeechVQError(f"{self.path}: prepare.json is not a {FORMAT} file")
        if meta.get("version") != FORMAT_VERSION:
            raise SpeechVQError(
                f"{self.path}: prepared-corpus format version {meta.get('version')!r}; "
                f"this speechvq reads version {FORMAT_VERSION} (prepare it again)"
            )
        for name in ("manifest.tsv", "audio.npy", "f0.npy"):
            if not (self.path / name).is_file():
                raise SpeechVQError(f"{self.path}: {name} is missing (prepare it again)")
        self.info: dict = meta
        self.sample_rate: int = int(meta["sample_rate"])
        self.hop_length: int = int(meta["hop_length"])
        self._utterances = read_manifest(self.path / "manifest.tsv")
        self._check_arrays()
        self._audio: np.ndarray | None = None
        self._f0: np.ndarray | None = None
        self._pid: int | None = None

    # -- metadata ---------------------------------------------------------

    @property
    def speakers(self) -> list[str]:
        """All speakers of both splits, sorted."""
        return sorted({u.speaker for u in self._utterances})

    def speakers_in(self, split: str) -> list[str]:
        """Speakers with at least one utterance in `split`, sorted."""
        return sorted({u.speaker for u in self.utterances(split)})

    def utterances(self, split: str | None = None) -> list[Utterance]:
        """Utterances of one split ("train" or "valid"), or of both when `split` is None."""
        if split is None:
            return list(self._utterances)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return [u for u in self._utterances if u.split == split]

    def __len__(self) -> int:
        return len(self._utterances)

    def __repr__(self) -> str:
        return f"PreparedCorpus({str(self.path)!r}, utterances={len(self)})"

    # -- samples ----------------------------------------------------------

    def audio(self, utt: Utterance) -> np.ndarray:
        """The whole utterance as float32 `[T]` in [-1, 1)."""
        audio, _ = self._arrays()
        return audio[utt.offset : utt.offset + utt.length].astype(np.float32) / PCM_SCALE

    def f0(self, utt: Utterance) -> np.ndarray:
        """F0 in Hz per frame, 0 where unvoiced: float32 `[T // hop]`."""
        _, f0 = self._arrays()
        frames = utt.length // self.hop_length
        return np.array(f0[utt.f0_offset : utt.f0_offset + frames], dtype=np.float32)

    def crop(self, utt: Utterance, start: int, length: int) -> Crop:
        """Samples [start, start + length) of `utt` and their F0; both multiples of the hop."""
        hop = self.hop_length
        if start % hop or length % hop:
            raise ValueError(f"start {start} and length {length} must be multiples of {hop}")
        if start < 0 or length <= 0 or start + length > utt.length:
            raise ValueError(f"crop [{start}, {start + length}) outside {utt.id} ({utt.length})")
        audio, f0 = self._arrays()
        a = audio[utt.offset + start : utt.offset + start + length].astype(np.float32) / PCM_SCALE
        first = utt.f0_offset + start // hop
        return Crop(audio=a, f0=np.array(f0[first : first + length // hop], dtype=np.float32))

    def random_crop(self, utt: Utterance, length: int, rng: np.random.Generator) -> Crop:
        """A crop of `length` samples (fewer if `utt` is shorter) at a random hop-aligned start."""
        hop = self.hop_length
        length = min(length - length % hop, utt.length)
        starts = (utt.length - length) // hop + 1
        return self.crop(utt, int(rng.integers(starts)) * hop, length)

    # -- internals --------------------------------------------------------

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        # Open on first use and again in each new process: a DataLoader worker
        # then maps the files itself instead of relying on an inherited map.
        if self._audio is None or self._f0 is None or self._pid != os.getpid():
            self._audio = np.load(self.path / "audio.npy", mmap_mode="r")
            self._f0 = np.load(self.path / "f0.npy", mmap_mode="r")
            self._pid = os.getpid()
        return self._audio, self._f0

    def __getstate__(self) -> dict:
        # Pickled for spawn-started workers: send the metadata, not the maps.
        state = self.__dict__.copy()
        state.update(_audio=None, _f0=None, _pid=None)
        return state

    def _check_arrays(self) -> None:
        # Cheap (headers only) and catches a folder whose files do not belong together.
        try:
            audio = np.load(self.path / "audio.npy", mmap_mode="r")
            f0 = np.load(self.path / "f0.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SpeechVQError(f"{self.path}: unreadable array ({exc})") from None
        hop = self.hop_length
        ok = (
            audio.dtype == np.int16
            and f0.dtype == np.float32
            and audio.shape == (int(self.info["audio_samples"]),)
            and f0.shape == (int(self.info["f0_frames"]),)
            and all(
                u.length % hop == 0
                and u.offset + u.length <= audio.shape[0]
                and u.f0_offset + u.length // hop <= f0.shape[0]
                and u.split in SPLITS
                for u in self._utterances
            )
        )
        del audio, f0
        if not ok:
            raise SpeechVQError(
                f"{self.path}: audio.npy, f0.npy and manifest.tsv do not match (prepare it again)"
            )


class CorpusWriter:
    """Writes a prepared folder: `add` utterances one by one, then `finish`.

    A context manager. The arrays are streamed to temporary files (no corpus
    needs to fit in memory) and renamed by `finish`, which then writes
    `manifest.tsv` and, last, `prepare.json`. An existing `prepare.json` is
    removed on entry, so leaving by an exception (or without `finish`) drops
    the temporaries and leaves a folder that `PreparedCorpus` refuses.
    """

    def __init__(
        self, out_dir: str | os.PathLike, sample_rate: int, hop_length: int, *, force: bool = False
    ):
        self.out_dir = Path(out_dir)
        self.sample_rate, self.hop_length = sample_rate, hop_length
        if (self.out_dir / "prepare.json").exists() and not force:
            raise SpeechVQError(
                f"{self.out_dir}: already holds a prepared corpus (use --force to replace it)"
            )
        self.utterances: list[Utterance] = []
        self._stack = ExitStack()
        self._finished = False

    def __enter__(self) -> CorpusWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "prepare.json").unlink(missing_ok=True)  # the folder reads as unfinished
        with ExitStack() as stack:
            audio_tmp = stack.enter_context(atomic_output(self.out_dir / "audio.npy"))
            f0_tmp = stack.enter_context(atomic_output(self.out_dir / "f0.npy"))
            self._audio = stack.enter_context(_NpyWriter(audio_tmp, np.int16))
            self._f0 = stack.enter_context(_NpyWriter(f0_tmp, np.float32))
            self._stack = stack.pop_all()
        return self

    def add(self, id: str, speaker: str, path: str, pcm: np.ndarray, f0: np.ndarray) -> Utterance:
        """Append one utterance: int16 `pcm` `[T]` (T a multiple of the hop), `f0` `[T // hop]`."""
        hop = self.hop_length
        if pcm.dtype != np.int16 or pcm.ndim != 1 or len(pcm) % hop or len(f0) != len(pcm) // hop:
            raise ValueError(f"{id}: need int16 [T] with T % {hop} == 0 and F0 [T // {hop}]")
        utt = Utterance(
            id=id,
            speaker=speaker,
            split="",
            duration=round(len(pcm) / self.sample_rate, 4),
            offset=self._audio.count,
            length=len(pcm),
            f0_offset=self._f0.count,
            path=path,
        )
        self._audio.append(pcm)
        self._f0.append(f0)
        self.utterances.append(utt)
        return utt

    def finish(self, splits: Mapping[str, str], info: Mapping | None = None) -> Path:
        """Close the arrays, then write the manifest (split of each id from `splits`) and
        prepare.json (format fields plus `info`). Returns the folder."""
        rows = [dataclasses.replace(u, split=splits[u.id]) for u in self.utterances]
        if any(u.split not in SPLITS for u in rows):
            raise ValueError(f"splits must be one of {SPLITS}")
        self._stack.close()  # writes the .npy headers and renames both arrays into place
        with (
            atomic_output(self.out_dir / "manifest.tsv") as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as fh,
        ):
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            for u in rows:
                writer.writerow([getattr(u, c) for c in MANIFEST_COLUMNS])
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "audio_samples": self._audio.count,
            "f0_frames": self._f0.count,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(info or {}),
        }
        with atomic_output(self.out_dir / "prepare.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        self._finished = True
        return self.out_dir

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._finished:  # an error, or no finish(): drop the temporary arrays
            error = exc or RuntimeError("CorpusWriter left without finish()")
            self._stack.__exit__(type(error), error, error.__traceback__)


class _NpyWriter:
    """Streams a 1-D array into an .npy file.

    NumPy pads a 1-D header to a fixed size whatever the length (room for the
    shape to grow, see numpy.lib.format), so a placeholder header is written
    first and the real one over it at the end.
    """

    def __init__(self, path: Path, dtype: type):
        self.dtype, self.count = np.dtype(dtype), 0
        self.file = open(path, "wb")
        self.header_size = len(self._header(0))
        self.file.write(self._header(0))

    def _header(self, n: int) -> bytes:
        buf = io.BytesIO()
        descr = np.lib.format.dtype_to_descr(self.dtype)
        np.lib.format.write_array_header_1_0(
            buf, {"descr": descr, "fortran_order": False, "shape": (n,)}
        )
        return buf.getvalue()

    def append(self, array: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.count += len(array)

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:  # the real header only on success; on failure the file is dropped anyway
            if exc_type is None:
                header = self._header(self.count)
                if len(header) != self.header_size:  # NumPy's padding prevents this; be sure
                    raise RuntimeError("npy header grew; cannot finish the array in place")
                self.file.seek(0)
                self.file.write(header)
        finally:
            self.file.close()
