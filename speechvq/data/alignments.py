"""Phone alignments: readers for the formats corpora ship, and one common phone set.

Every reader returns an `Alignment`, a tuple of `Segment(start_s, end_s, phone)`
in seconds with the labels as written in the file. `fold_alignment` then maps
the labels onto the 39-phone TIMIT set of Lee & Hon (1989), so that HTS/HTK
labels (VCTK), TIMIT `.phn` files and Montreal Forced Aligner TextGrids
(ARPAbet with stress digits) can be compared with one another.

Formats (chosen by file extension, see `read_alignment`):

- `.lab`: HTK/HTS label files, `start end label` per line with times in
  100 ns units (HTK book §6.2). HTS full-context labels
  (`x^x-pau+p=l@...`) are accepted: the phone is what lies between `-` and `+`.
- `.phn`: TIMIT, `start end phone` with times in samples at 16 kHz.
- `.TextGrid`: Praat, read with praatio. The phone tier is the one named
  `phones`, `phone`, `phonemes` or `phoneme` (any case); failing that, a tier
  whose name contains "phone"; failing that, the interval tier with the most
  intervals (phones are the finest tier in MFA/WebMAUS output).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from speechvq.data.discovery import find_files
from speechvq.errors import SpeechVQError

HTK_TIME_UNIT = 1e-7  # HTK label times are in units of 100 ns
TIMIT_SAMPLE_RATE = 16000
ALIGNMENT_EXTENSIONS = (".lab", ".phn", ".textgrid")

# TIMIT 61 -> 39 folding of Lee & Hon (1989), "Speaker-independent phone
# recognition using hidden Markov models", IEEE TASSP 37(11), table I, in the
# form of the third column of Kaldi's egs/timit/s5/conf/phones.60-48-39.map.
# Labels not listed (iy, b, s, ...) are already in the 39 set and map to
# themselves; ARPAbet (CMUdict, MFA) is a subset of TIMIT's set, so the same
# table folds it once the stress digits are stripped.
# `None` drops the segment: Lee & Hon delete the glottal stop `q`; `spn`
# (Kaldi/MFA "spoken noise", an out-of-vocabulary word) has no phone identity.
_FOLD: dict[str, str | None] = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n",
    "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "q": None,
    "spn": None,
}
# Silence, pauses, epenthetic silence and stop closures all fold to `sil`
# (Lee & Hon; Kaldi's 48-set `cl`/`vcl` too). `sp`/`sil` are HTK's pause
# models, `pau` is also HTS's pause, `#h` an alternative spelling of `h#`.
_SILENCE = ("", "sil", "sp", "pau", "h#", "#h", "epi", "cl", "vcl")
_CLOSURES = ("bcl", "dcl", "gcl", "pcl", "tcl", "kcl")
_FOLD.update({label: "sil" for label in _SILENCE + _CLOSURES})

# Broad classes of the 39 folded phones, in the column order of the plots
# (vowels, stops, fricatives, nasals, approximants, silence) so that a
# phone-like code shows as a block. Affricates ch/jh sit with the fricatives.
PHONE_CLASSES: dict[str, tuple[str, ...]] = {
    "vowels": (
        "iy",
        "ih",
        "eh",
        "ae",
        "ah",
        "uw",
        "uh",
        "aa",
        "ey",
        "ay",
        "oy",
        "aw",
        "ow",
        "er",
    ),  # fmt: skip
    "stops": ("b", "d", "g", "p", "t", "k", "dx"),
    "fricatives": ("ch", "jh", "dh", "th", "f", "v", "s", "z", "sh", "hh"),
    "nasals": ("m", "n", "ng"),
    "approximants": ("l", "r", "w", "y"),
    "silence": ("sil",),
}
PHONE_ORDER: tuple[str, ...] = tuple(p for group in PHONE_CLASSES.values() for p in group)
_CLASS_OF = {p: name for name, group in PHONE_CLASSES.items() for p in group}


@dataclass(frozen=True)
class Segment:
    """One labelled interval, in seconds."""

    start_s: float
    end_s: float
    phone: str


@dataclass(frozen=True)
class Alignment:
    """The phone segments of one utterance, in time order."""

    segments: tuple[Segment, ...]
    source: str = ""  # the file it came from, for messages

    @property
    def start_s(self) -> float:
        return self.segments[0].start_s if self.segments else 0.0

    @property
    def end_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    @property
    def phones(self) -> list[str]:
        return [s.phone for s in self.segments]

    def boundaries(self) -> list[float]:
        """Times where the phone changes (or a dropped segment starts or ends).

        Adjacent segments with the same phone (`pau pau` -> `sil sil`) make
        no boundary; the utterance's first start and last end are not boundaries.
        """
        times: list[float] = []
        for prev, seg in zip(self.segments, self.segments[1:], strict=False):
            if seg.start_s > prev.end_s:  # a gap, e.g. a dropped `q`
                times += [prev.end_s, seg.start_s]
            elif seg.phone != prev.phone:
                times.append(seg.start_s)
        return times


def phone_class(phone: str) -> str:
    """The broad class of a folded phone ("other" for labels outside the 39 set)."""
    return _CLASS_OF.get(phone, "other")


def fold_phone(label: str) -> str | None:
    """Map one label onto the 39-phone set; `None` means "drop this segment".

    Lower-cases, strips ARPAbet stress digits (`AH0` -> `ah`), then applies
    the Lee & Hon table. Labels outside every table (e.g. IPA from newer MFA
    models) pass through lower-cased, so nothing is silently merged.
    """
    phone = re.sub(r"[0-9]+$", "", label.strip().lower())
    return _FOLD.get(phone, phone)


def fold_alignment(alignment: Alignment) -> Alignment:
    """`fold_phone` on every segment, dropping those that fold to `None`."""
    segments = []
    for seg in alignment.segments:
        phone = fold_phone(seg.phone)
        if phone is not None:
            segments.append(Segment(seg.start_s, seg.end_s, phone))
    return Alignment(tuple(segments), alignment.source)


def read_alignment(path: str | os.PathLike) -> Alignment:
    """Read a `.lab` (HTK/HTS), `.phn` (TIMIT) or `.TextGrid` (Praat) file, unfolded."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".lab":
        return read_htk_lab(path)
    if suffix == ".phn":
        return read_timit_phn(path)
    if suffix == ".textgrid":
        return read_textgrid(path)
    raise SpeechVQError(
        f"{path}: unknown alignment format (expected {', '.join(ALIGNMENT_EXTENSIONS)})"
    )


def read_htk_lab(path: str | os.PathLike) -> Alignment:
    """HTK/HTS label file: `start end label [...]`, times in 100 ns units."""
    return _read_columns(Path(path), HTK_TIME_UNIT, full_context=True)


def read_timit_phn(path: str | os.PathLike, sample_rate: int = TIMIT_SAMPLE_RATE) -> Alignment:
    """TIMIT `.phn` file: `start end phone`, times in samples at `sample_rate`."""
    return _read_columns(Path(path), 1.0 / sample_rate, full_context=False)


def _read_columns(path: Path, unit_s: float, full_context: bool) -> Alignment:
    text = _read_text(path)
    segments = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "///" or fields[0].startswith("#!MLF!#"):
            raise SpeechVQError(
                f"{path}:{number}: multi-level labels and master label files are not supported"
            )
        try:
            start, end = float(fields[0]) * unit_s, float(fields[1]) * unit_s
        except (ValueError, IndexError):
            raise SpeechVQError(
                f"{path}:{number}: expected 'start end label' with numeric times, got {line!r}"
            ) from None
        label = fields[2] if len(fields) > 2 else ""
        if full_context and "-" in label and "+" in label:
            label = label.split("-", 1)[1].split("+", 1)[0]  # HTS: p1^p2-p3+p4=...
        segments.append(Segment(start, end, label))
    return _checked(segments, path)


def read_textgrid(path: str | os.PathLike, tier: str | None = None) -> Alignment:
    """Praat TextGrid via praatio; `tier` names the phone tier, else it is guessed.

    Empty intervals are kept (they become `sil` when folded).
    """
    try:
        from praatio import textgrid
    except ImportError:
        raise SpeechVQError(
            f"{path}: reading TextGrids needs praatio: pip install 'speechvq[analysis]'"
        ) from None

    path = Path(path)
    _read_text(path)  # uniform "no such file" message
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True, reportingMode="silence")
    except Exception as exc:  # praatio raises several types for malformed files
        raise SpeechVQError(f"{path}: not a readable TextGrid ({exc})") from None
    intervals = {
        name: grid.getTier(name)
        for name in grid.tierNames
        if type(grid.getTier(name)).__name__ == "IntervalTier"
    }
    if not intervals:
        raise SpeechVQError(f"{path}: has no interval tier")
    name = tier if tier is not None else _phone_tier(intervals)
    if name not in intervals:
        raise SpeechVQError(f"{path}: no interval tier named {name!r}")
    segments = [Segment(float(e.start), float(e.end), e.label) for e in intervals[name].entries]
    return _checked(segments, path)


def _phone_tier(tiers: dict) -> str:
    lower = {name.lower(): name for name in tiers}
    for wanted in ("phones", "phone", "phonemes", "phoneme"):
        if wanted in lower:
            return lower[wanted]
    for low, name in lower.items():
        if "phone" in low:
            return name
    return max(tiers, key=lambda name: len(tiers[name].entries))


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise SpeechVQError(f"{path}: no such file")
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "utf-16", "latin-1"):  # Praat writes UTF-16 too
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SpeechVQError(f"{path}: cannot decode text")  # unreachable: latin-1 decodes all


def _checked(segments: list[Segment], path: Path) -> Alignment:
    if not segments:
        raise SpeechVQError(f"{path}: contains no labelled segments")
    for prev, seg in zip([None, *segments], segments, strict=False):
        if seg.end_s < seg.start_s:
            raise SpeechVQError(f"{path}: segment {seg.phone!r} ends before it starts")
        # Allow a rounding overlap (VCTK writes 13099999 then 13100000).
        if prev is not None and seg.start_s < prev.end_s - 1e-3:
            raise SpeechVQError(f"{path}: segments overlap or are out of order at {seg.start_s}s")
    return Alignment(tuple(segments), str(path))


def find_alignments(directory: str | os.PathLike) -> dict[str, Path]:
    """Alignment files under `directory` (recursively, links followed), keyed by their
    path relative to it without the suffix (`dr1-fvmh0/sa1`, `p225_001`).

    Two files that differ only by suffix (`x.lab` beside `x.TextGrid`) are
    refused: point at the one folder you mean.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SpeechVQError(f"{directory}: not a directory of alignments")
    found: dict[str, Path] = {}
    for path in find_files(directory, ALIGNMENT_EXTENSIONS):
        key = path.relative_to(directory).with_suffix("").as_posix()
        if key in found:
            raise SpeechVQError(
                f"{directory}: two alignments for {key!r} "
                f"({found[key]} and {path}); point --alignments at one folder"
            )
        found[key] = path
    if not found:
        raise SpeechVQError(
            f"{directory}: no alignment files ({', '.join(ALIGNMENT_EXTENSIONS)}) found"
        )
    return found


def match_alignments(
    audio: Iterable[str | os.PathLike], table: dict[str, Path]
) -> tuple[dict[str, tuple[Path, Path]], list[Path]]:
    """Pair audio files with the alignments of `find_alignments`.

    A file matches the alignment whose relative path is the longest tail of
    the file's own path (TIMIT's `dr1-fvmh0/sa1.wav` finds `dr1-fvmh0/sa1.phn`
    although every speaker reads `sa1`); down to the bare file stem (VCTK's
    `wav48/p225/p225_001.wav` finds `lab/mono/p225_001.lab`), which counts
    only where it is unique. Returns `{id: (audio, alignment)}`, the id being
    the matched tail (`dr1-fvmh0/sa1`), and the audio files that match none.
    """
    tails: dict[tuple[str, ...], list[str]] = {}
    for key in table:
        parts = tuple(key.split("/"))
        for n in range(1, len(parts) + 1):
            tails.setdefault(parts[-n:], []).append(key)
    matched: dict[str, tuple[Path, Path]] = {}
    unmatched: list[Path] = []
    for path in dict.fromkeys(map(Path, audio)):  # each file once
        parts = path.with_suffix("").parts
        tail = next((parts[-n:] for n in range(len(parts), 0, -1) if parts[-n:] in tails), None)
        if tail is None:
            unmatched.append(path)
            continue
        keys = tails[tail]
        if len(keys) > 1:
            raise SpeechVQError(
                f"{path}: two alignments for {'/'.join(tail)!r} ({table[keys[0]]} and "
                f"{table[keys[1]]}); point --alignments at one folder"
            )
        uid = "/".join(tail)
        if uid in matched:
            raise SpeechVQError(
                f"two audio files match the alignment {table[keys[0]]}: "
                f"{matched[uid][0]} and {path}"
            )
        matched[uid] = (path, table[keys[0]])
    return matched, unmatched
