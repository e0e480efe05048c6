"""Finding recordings: the one way every command lists the audio it is pointed at.

`find_files` walks a folder (following symbolic links, skipping hidden
entries, in sorted order); `find_recordings` turns what a user passes to
`evaluate` or `analyze-phonemes` (a folder of audio, one file, a prepared
corpus folder or its `manifest.tsv`) into `Recording`s with an id and,
where it can be told, a speaker. Corpus layouts for `prepare` build on
`find_files` too (`speechvq.data.layouts`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from speechvq.audio.io import AUDIO_EXTENSIONS
from speechvq.data.corpus import prepared_folder, read_manifest
from speechvq.errors import SpeechVQError


@dataclass(frozen=True)
class Recording:
    """One audio file; `id` is unique in its list, `speaker` None when it cannot be told."""

    id: str
    path: Path
    speaker: str | None


def find_files(root: str | os.PathLike, extensions: tuple[str, ...]) -> Iterator[Path]:
    """Files under `root` whose suffix is one of `extensions` (lower case), lazily, in a
    stable order (each folder's files sorted, then its sorted subfolders).

    Symbolic links to folders are followed (a corpus assembled from links is
    common); entries whose name starts with "." are skipped.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(extensions):
                yield Path(dirpath) / name


def find_recordings(source: str | os.PathLike, *, split: str | None = None) -> list[Recording]:
    """The recordings `source` names: a prepared corpus (its `split`, None = all), a folder, a file.

    A prepared corpus gives its original files (the `path` column, relative
    to where `prepare` ran or to the manifest), one recording per file, with
    the manifest's ids and speakers. In a folder the id is the path relative
    to it without the suffix (`p225/p225_001`), and the speaker is the file's
    parent folder name, or for a file directly in the folder the name up to
    its first `_` or `-`, if it has one.
    """
    root = prepared_folder(source)
    if (root / "manifest.tsv").is_file():
        return _from_manifest(root / "manifest.tsv", split)
    if root.is_dir():
        files = sorted(find_files(root, AUDIO_EXTENSIONS))
        if not files:
            raise SpeechVQError(f"{root}: no audio files found ({', '.join(AUDIO_EXTENSIONS)})")
        return [_folder_recording(p, root) for p in files]
    if root.is_file():
        return [_folder_recording(root, root.parent)]
    raise SpeechVQError(f"{root}: no such file or folder")


def _from_manifest(manifest: Path, split: str | None) -> list[Recording]:
    rows = [u for u in read_manifest(manifest) if split is None or u.split == split]
    if not rows:
        raise SpeechVQError(f"{manifest.parent}: no utterances in the {split!r} split")
    found: dict[Path, Recording] = {}  # a long file split by `prepare` gives several rows
    for u in rows:
        path = _source_path(u.path, manifest.parent)
        found.setdefault(path, Recording(u.id, path, u.speaker))
    return list(found.values())


def _source_path(path: str, corpus: Path) -> Path:
    p = Path(path)
    for candidate in (p, corpus / p):
        if candidate.is_file():
            return candidate.resolve()
    raise SpeechVQError(f"{corpus}: source file {path} is missing (the originals are read)")


def _folder_recording(path: Path, root: Path) -> Recording:
    rel = path.relative_to(root)
    if len(rel.parts) > 1:
        speaker: str | None = path.parent.name
    else:
        head = path.stem.replace("-", "_").split("_")[0]
        speaker = head if head != path.stem else None
    return Recording(rel.with_suffix("").as_posix(), path, speaker)
