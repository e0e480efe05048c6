"""Corpus discovery: which audio files a corpus folder holds, and whose voice each is.

Four layouts are known: VCTK (`wav48/<speaker>/<file>`), LibriSpeech (files
named `<speaker>-<chapter>-<n>`, in any folders), a Kaldi data folder
(`wav.scp` and `utt2spk`; speechocean762 ships as one) and a generic
`<speaker>/<file>` folder. `parse_source` reads a `DIR[:LAYOUT]` argument,
`detect_layout` guesses the layout, and `discover` lists a folder's files as
`SourceFile`s (path, speaker, corpus-wide id) in a stable order, with the
files it had to pass over as `SkippedFile`s. Nothing is read or decoded
here; `speechvq.data.prepare` processes what this finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from speechvq.audio.io import AUDIO_EXTENSIONS
from speechvq.data.discovery import find_files
from speechvq.errors import SpeechVQError

LAYOUTS = ("vctk", "librispeech", "kaldi", "folder")
# LibriSpeech names every file <speaker>-<chapter>-<utterance>.
_LIBRISPEECH_NAME = re.compile(r"^([^-]+)-([^-]+)-(\d+)$")


@dataclass(frozen=True)
class Source:
    """A corpus folder and its layout."""

    path: Path
    layout: str


@dataclass(frozen=True)
class SourceFile:
    """One audio file found in a corpus, with its speaker and a corpus-wide unique id."""

    path: Path
    speaker: str
    id: str


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def parse_source(text: str, default_layout: str = "auto") -> Source:
    """`DIR` or `DIR:LAYOUT` -> a `Source`; layout "auto" is resolved by `detect_layout`."""
    head, sep, tail = text.rpartition(":")
    path, layout = (head, tail) if sep and tail in (*LAYOUTS, "auto") else (text, default_layout)
    path = Path(path)
    if not path.is_dir():
        raise SpeechVQError(f"{path}: no such folder")
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise SpeechVQError(f"{text}: unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    return Source(path, layout)


def detect_layout(path: Path) -> str:
    """vctk if `path` is or holds `wav48/`; kaldi if it is or holds Kaldi data folders;
    librispeech if its first audio file is named `<spk>-<chapter>-<n>`; otherwise folder."""
    if path.name == "wav48" or (path / "wav48").is_dir():
        return "vctk"
    if _kaldi_folders(path):
        return "kaldi"
    first = next(iter(find_files(path, AUDIO_EXTENSIONS)), None)
    if first is not None and _LIBRISPEECH_NAME.match(first.stem):
        return "librispeech"
    return "folder"


def discover(source: Source) -> tuple[list[SourceFile], list[SkippedFile]]:
    """The audio files of one corpus folder, in a stable (sorted) order."""
    root, found, skipped = source.path, [], []
    if source.layout == "vctk":
        root = root / "wav48" if (root / "wav48").is_dir() else root
        for spk in sorted(d for d in root.iterdir() if d.is_dir() and d.name[0] != "."):
            for f in find_files(spk, AUDIO_EXTENSIONS):
                found.append(SourceFile(f, spk.name, f.stem))
    elif source.layout == "librispeech":
        for f in find_files(root, AUDIO_EXTENSIONS):
            m = _LIBRISPEECH_NAME.match(f.stem)
            if m:
                found.append(SourceFile(f, m.group(1), f.stem))
            else:
                skipped.append(SkippedFile(str(f), "name is not <speaker>-<chapter>-<n>"))
    elif source.layout == "kaldi":
        folders = _kaldi_folders(root)
        if not folders:
            raise SpeechVQError(f"{root}: no Kaldi data folder (wav.scp and utt2spk) here")
        # Kaldi speaker and utterance ids are corpus-local (speechocean762's are bare
        # numbers, some equal to LibriSpeech speakers'): prefix them with the corpus name.
        corpus = root.name if folders != [root] else root.resolve().parent.name
        for folder in folders:
            _discover_kaldi(folder, f"{corpus}_", found, skipped)
    elif source.layout == "folder":
        for f in find_files(root, AUDIO_EXTENSIONS):
            parts = f.relative_to(root).with_suffix("").parts
            if len(parts) < 2:
                skipped.append(SkippedFile(str(f), "not inside a <speaker>/ folder"))
                continue
            spk, name = parts[0], "_".join(parts[1:])
            uid = name if name.startswith((f"{spk}_", f"{spk}-")) else f"{spk}_{name}"
            found.append(SourceFile(f, spk, uid))
    else:
        raise SpeechVQError(f"{root}: unknown layout {source.layout!r}")
    return found, skipped


def _kaldi_folders(path: Path) -> list[Path]:
    """`path` if it is a Kaldi data folder, else its subfolders that are (sorted)."""

    def is_data(d: Path) -> bool:
        return (d / "wav.scp").is_file() and (d / "utt2spk").is_file()

    if is_data(path):
        return [path]
    return sorted(d for d in path.iterdir() if d.is_dir() and is_data(d))


def _discover_kaldi(
    folder: Path, prefix: str, found: list[SourceFile], skipped: list[SkippedFile]
) -> None:
    """The utterances of one Kaldi data folder: `wav.scp` gives `<utt> <path>`, `utt2spk`
    `<utt> <speaker>`; both ids get `prefix`. A relative path is tried against the
    folder and the folders above it (Kaldi recipes write them relative to where they
    run). Piped commands (`<utt> sox ... |`) and segment files are not read."""
    speakers = dict(_kaldi_table(folder / "utt2spk"))
    for utt, entry in _kaldi_table(folder / "wav.scp"):
        where = f"{folder / 'wav.scp'}: {utt}"
        if entry.endswith("|") or " " in entry:
            skipped.append(SkippedFile(where, "a piped command, not a file (not supported)"))
            continue
        if utt not in speakers:
            skipped.append(SkippedFile(where, "no speaker in utt2spk"))
            continue
        path = Path(entry)
        candidates = [path] if path.is_absolute() else [d / path for d in (folder, *folder.parents)]
        audio = next((c for c in candidates if c.is_file()), None)
        if audio is None:
            skipped.append(SkippedFile(where, f"audio file {entry} not found"))
            continue
        found.append(SourceFile(audio, prefix + speakers[utt], prefix + utt))


def _kaldi_table(path: Path) -> list[tuple[str, str]]:
    """The `<key> <value...>` lines of a Kaldi table file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpeechVQError(f"{path}: unreadable ({exc})") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        if not value.strip():
            raise SpeechVQError(f"{path}:{n}: expected '<key> <value>', got {line!r}")
        rows.append((key, value.strip()))
    return rows
