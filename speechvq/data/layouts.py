"""Corpus discovery: which audio files a corpus folder holds, and whose voice each is.

Three layouts are known: VCTK (`wav48/<speaker>/<file>`), LibriSpeech (files
named `<speaker>-<chapter>-<n>`, in any folders) and a generic
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

LAYOUTS = ("vctk", "librispeech", "folder")
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
    """vctk if `path` is or holds `wav48/`; librispeech if its first audio file is named
    `<spk>-<chapter>-<n>`; otherwise folder."""
    if path.name == "wav48" or (path / "wav48").is_dir():
        return "vctk"
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
