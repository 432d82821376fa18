"""What to tokenise: the audio files named by folders, manifests and path lists.

- a folder: every audio file under it (recursive, any extension in ``AUDIO_EXTENSIONS``;
  hidden files and folders skipped), its id the path relative to the folder;
- a JSON-lines manifest (``.jsonl``/``.ndjson``) or a CSV manifest (``.csv``/``.tsv``) with a
  ``path`` column and an optional ``id`` column (default: the path as written); relative paths
  are relative to the manifest's folder;
- any other file: a text file with one path per line (``#`` comments and blank lines skipped),
  ids as written.

Ids must be unique across all inputs; the list is sorted by id, so the order does not depend
on the order of the inputs or of the file system.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ..audio import is_audio_file
from ..data._jsonl import manifest_rows
from ..errors import OpenCodecError

MANIFEST_JSONL = (".jsonl", ".ndjson")
MANIFEST_CSV = (".csv", ".tsv")


class InputError(OpenCodecError):
    """An input that names no usable list of files (missing, empty, malformed manifest)."""


@dataclass(frozen=True, order=True)
class InputItem:
    """One file to tokenise: its row ``id`` and its ``path``."""

    id: str
    path: str


def _walk_folder(root: Path) -> list[InputItem]:
    items = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and is_audio_file(name):
                path = Path(folder) / name
                items.append(InputItem(path.relative_to(root).as_posix(), str(path)))
    return items


def _resolve(base: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(base / path)


def _read_jsonl(manifest: Path) -> list[InputItem]:
    return [InputItem(str(row.get("id", row["path"])), _resolve(manifest.parent, row["path"]))
            for row in manifest_rows(manifest, InputError)]


def _read_csv(manifest: Path) -> list[InputItem]:
    with open(manifest, encoding="utf-8", newline="") as fi:
        reader = csv.DictReader(fi, delimiter="\t" if manifest.suffix.lower() == ".tsv" else ",")
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise InputError(f"{manifest}: a CSV manifest needs a 'path' column "
                             f"(columns: {', '.join(reader.fieldnames or []) or 'none'})")
        return [InputItem(row.get("id") or row["path"], _resolve(manifest.parent, row["path"]))
                for row in reader if row["path"]]


def _read_list(listing: Path) -> list[InputItem]:
    items = []
    with open(listing, encoding="utf-8") as fi:
        for line in fi:
            path = line.strip()
            if path and not path.startswith("#"):
                items.append(InputItem(path, _resolve(listing.parent, path)))
    return items


def list_inputs(inputs: list[str | Path]) -> list[InputItem]:
    """The files named by ``inputs`` (folders, manifests, path lists), sorted by id.

    Raises ``InputError`` for a missing input, a malformed manifest, an input naming no
    file, or two files with the same id.
    """
    items: list[InputItem] = []
    for given in inputs:
        source = Path(given)
        if source.is_dir():
            found = _walk_folder(source)
        elif source.is_file():
            suffix = source.suffix.lower()
            if is_audio_file(source):
                found = [InputItem(source.name, str(source))]
            elif suffix in MANIFEST_JSONL:
                found = _read_jsonl(source)
            elif suffix in MANIFEST_CSV:
                found = _read_csv(source)
            else:
                found = _read_list(source)
        else:
            raise InputError(f"input {source} does not exist")
        if not found:
            raise InputError(f"input {source} names no audio file")
        items.extend(found)
    items.sort()
    for before, after in zip(items, items[1:]):
        if before.id == after.id:
            raise InputError(f"two files have the id {before.id!r} ({before.path} and {after.path}); "
                             "ids must be unique (give a manifest with an 'id' column)")
    return items
