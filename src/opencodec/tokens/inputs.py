"""What to tokenise: the audio files named by folders, manifests, path lists and audio files.

- a folder: every audio file under it (recursive, any extension in ``AUDIO_EXTENSIONS``;
  hidden files and folders skipped), its id the path relative to the folder. Linked
  sub-folders are followed (as ``find -L`` does); a folder reached a second time (a link
  loop, or two links to one folder) is walked once only, with a warning;
- a JSON-lines manifest (``.jsonl``/``.ndjson``) or a CSV manifest (``.csv``/``.tsv``) with a
  ``path`` column and an optional ``id`` column (default, also for an empty CSV cell or a
  JSON ``null``: the path as written; an id of spaces only is refused in both); ids are strings (JSON integers are accepted as their
  decimal text); relative paths are relative to the manifest's folder;
- an audio file: that file, its id the file's name;
- any other file: a UTF-8 text file with one path per line (``#`` comments and blank lines
  skipped), ids as written, relative paths relative to the list's folder.

Ids must be unique and non-empty across all inputs; the list is sorted by id, so the order
does not depend on the order of the inputs or of the file system. A manifest or list none of
whose files exist is refused (usually paths relative to the wrong folder); one file listed
under several ids is tokenised once per id, with a warning. A file whose id would not be valid
UTF-8 text (a file name in another encoding, such as Latin-1), which a Parquet string cannot
hold, is listed with its ``error`` set and the bytes written ``\\xNN`` in its id: the job
reports it in ``errors.jsonl`` and skips it; such a file takes no part in the check of unique ids
(its escaped id may be another file's real name). So is a broken symbolic link, named as such
with its target ("broken symbolic link (points to X)") rather than "no such file".
"""

from __future__ import annotations

import csv
import json
import os
import typing as tp
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS, is_audio_file
from ..data._jsonl import numbered_manifest_rows
from ..errors import OpenCodecError

MANIFEST_JSONL = (".jsonl", ".ndjson")
MANIFEST_CSV = (".csv", ".tsv")


class InputError(OpenCodecError):
    """An input that names no usable list of files (missing, empty, malformed manifest)."""


@dataclass(frozen=True, order=True)
class InputItem:
    """One file to tokenise: its row ``id`` and its ``path``; ``origin`` (not compared)
    says where the id came from, for messages; ``error`` (not compared), when not empty, why
    the file is skipped without being read (``errors.jsonl`` gives it)."""

    id: str
    path: str
    origin: str = field(default="", compare=False, repr=False)
    error: str = field(default="", compare=False)


def utf8_text(text: str) -> str:
    """``text`` itself when it is valid Unicode, else with the bytes that are not UTF-8 written
    ``\\xNN`` (Python keeps such bytes of a file name as lone surrogates, which UTF-8 files,
    JSON readers and Parquet strings refuse): ``'bad\\udcffname'`` -> ``'bad\\\\xffname'``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (a JSON "\ud800" escape)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _skip_if_not_utf8(item: InputItem) -> InputItem:
    """``item``, or when its id is not valid UTF-8 text (a file name in another encoding),
    the item with that id escaped (``utf8_text``) and the ``error`` saying why it is skipped."""
    safe = utf8_text(item.id)
    if safe == item.id:
        return item
    return InputItem(safe, item.path, item.origin,
                     error=f"{utf8_text(item.path)}: the file name is not valid UTF-8 (its other bytes are "
                           "shown as \\xNN), and a row's id must be UTF-8 text: rename the file to tokenise it")


def broken_link(path: str | Path) -> str | None:
    """``"broken symbolic link (points to TARGET)"`` when ``path`` is a symbolic link whose
    target does not exist (a dangling link, or a loop of links), else None."""
    if not os.path.islink(path) or os.path.exists(path):
        return None
    try:
        target = os.readlink(path)
    except OSError:  # gone since: say what was there
        return "broken symbolic link"
    return f"broken symbolic link (points to {utf8_text(target)})"


def _skip_if_broken_link(item: InputItem) -> InputItem:
    """``item``, or when its path is a broken symbolic link, the item with the ``error``
    saying so (read, it would fail as "no such file", though a file of that name is there)."""
    broken = None if item.error else broken_link(item.path)
    if broken is None:
        return item
    return InputItem(item.id, item.path, item.origin,
                     error=f"cannot read audio file {utf8_text(item.path)}: {broken}")


def _unlistable(exc: OSError) -> None:
    """``os.walk``'s ``onerror``: a folder that cannot be listed (no read permission) is refused,
    where ``os.walk`` would leave its files out of the job without a word."""
    raise InputError(f"cannot list the folder {exc.filename} ({exc.strerror or exc}): its audio files would be "
                     "left out of the job; make it readable, or give the other folders as inputs")


def _walk_folder(root: Path) -> list[InputItem]:
    """Audio files under ``root``, following linked folders, each real folder once: a folder of
    the tree itself is always listed under its own path (a link to it is skipped, whatever the
    names' order), and a folder outside the tree under the first link that leads to it.
    ``InputError`` for a folder that cannot be listed."""
    items = []
    # without following links
    tree = {os.path.realpath(folder) for folder, _, _ in os.walk(root, onerror=_unlistable)}
    seen = {os.path.realpath(root)}
    origin = f"folder {root}"
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=_unlistable):
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if os.path.islink(path) and real in tree:
                warnings.warn(f"{path} is a link to {real}, a folder of this tree that is listed under "
                              "its own path: skipped", stacklevel=2)
                continue
            if real in seen:
                warnings.warn(f"{path} leads to folder {real}, which is already listed (a link loop, "
                              "or two links to one folder): skipped", stacklevel=2)
                continue
            seen.add(real)
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith(".") and is_audio_file(name):
                path = Path(folder) / name
                items.append(InputItem(path.relative_to(root).as_posix(), str(path), origin))
    return items


def _resolve(base: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(base / path)


def _not_text(source: Path, exc: UnicodeDecodeError) -> InputError:
    """The error for an input that is neither audio, a manifest, nor UTF-8 text."""
    return InputError(f"{source}: not an audio file, manifest or UTF-8 list of paths (byte {exc.start} "
                      f"is not UTF-8 text); audio files need one of the extensions "
                      f"{', '.join(sorted(AUDIO_EXTENSIONS))}")


def _manifest_id(value: tp.Any, path: str, where: str) -> str:
    """A manifest row's id: ``value`` when a non-empty string (an integer as its decimal
    text), the ``path`` when missing or null; anything else raises ``InputError``."""
    if value is None:
        return path
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f'{where}: "id" must be a string (or an integer), got {json.dumps(value)}')
    if utf8_text(value) != value:
        raise InputError(f'{where}: "id" {utf8_text(value)!r} is not valid Unicode text (a lone '
                         "surrogate \\u escape)")
    if not value.strip():
        raise InputError(f'{where}: empty "id" (leave it out, or null, to use the path as the id)')
    return value


def _jsonl_rows(manifest: Path) -> tp.Iterator[tuple[int, dict[str, tp.Any]]]:
    """(line number, row) of a JSON-lines manifest: JSON objects with a string ``path``."""
    try:
        yield from numbered_manifest_rows(manifest, InputError, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_text(manifest, exc) from exc


def _read_jsonl(manifest: Path) -> list[InputItem]:
    origin = f"the 'id' field of {manifest}"
    return [InputItem(_manifest_id(row.get("id"), row["path"], f"{manifest}:{number}"),
                      _resolve(manifest.parent, row["path"]),
                      origin if row.get("id") is not None else f"manifest {manifest}")
            for number, row in _jsonl_rows(manifest)]


def _read_csv(manifest: Path) -> list[InputItem]:
    origin = f"the 'id' column of {manifest}"
    try:
        # utf-8-sig: spreadsheet programs start UTF-8 CSV files with a byte order mark
        with open(manifest, encoding="utf-8-sig", newline="") as fi:
            # strict: a quote never closed (or text after a closing one) is an error, not a
            # path that runs on over the following lines
            reader = csv.DictReader(fi, delimiter="\t" if manifest.suffix.lower() == ".tsv" else ",",
                                    strict=True)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise InputError(f"{manifest}: a CSV manifest needs a 'path' column "
                                 f"(columns: {', '.join(reader.fieldnames or []) or 'none'})")
            items = []
            for row in reader:
                path = row["path"]
                if not path or not path.strip():  # empty, or missing from a short row
                    raise InputError(f'{manifest}:{reader.line_num}: a manifest row needs a "path" '
                                     "(this one's is empty or missing)")
                # an empty cell (or a short row) is CSV's null: the path; spaces only are an
                # empty id, refused as in a JSON-lines manifest
                cell = row.get("id") or None
                items.append(InputItem(_manifest_id(cell, path, f"{manifest}:{reader.line_num}"),
                                       _resolve(manifest.parent, path),
                                       origin if cell is not None else f"manifest {manifest}"))
            return items
    except UnicodeDecodeError as exc:
        raise _not_text(manifest, exc) from exc
    except csv.Error as exc:
        raise InputError(f"{manifest}: not a readable CSV file ({exc})") from exc


def _read_list(listing: Path) -> list[InputItem]:
    items = []
    try:
        with open(listing, encoding="utf-8-sig") as fi:
            for line in fi:
                path = line.strip()
                if path and not path.startswith("#"):
                    items.append(InputItem(path, _resolve(listing.parent, path), f"list {listing}"))
    except UnicodeDecodeError as exc:
        raise _not_text(listing, exc) from exc
    return items


def _check_some_exist(source: Path, found: list[InputItem]) -> None:
    """Refuse a manifest or list none of whose files exist: nearly always relative paths
    written for another folder (they are relative to the manifest's or list's own folder)."""
    if any(os.path.exists(item.path) for item in found):
        return
    raise InputError(f"{source}: none of its {len(found)} files exists (the first: {found[0].path}); "
                     f"relative paths in a manifest or list are relative to its own folder "
                     f"({source.parent or '.'}), not to the current folder")


def _read_input(source: Path) -> list[InputItem]:
    """The files one input names (folder, audio file, manifest or list)."""
    if source.is_dir():
        return _walk_folder(source)
    if not source.is_file():
        broken = broken_link(source)
        if broken:
            raise InputError(f"input {source} is a {broken}")
        if source.exists():  # a pipe has no folder its relative paths could be relative to
            raise InputError(f"input {source} is not a regular file or a folder (a pipe such as <(...) or "
                             "/dev/stdin, or a device): save the list of paths to a file and give that")
        raise InputError(f"input {source} does not exist")
    suffix = source.suffix.lower()
    if is_audio_file(source):
        return [InputItem(source.name, str(source), f"audio file {source}")]
    if suffix in MANIFEST_JSONL:
        found = _read_jsonl(source)
    elif suffix in MANIFEST_CSV:
        found = _read_csv(source)
    else:
        found = _read_list(source)
    if found:
        _check_some_exist(source, found)
    return found


def _check_unique(items: list[InputItem]) -> None:
    """Refuse two files with one id (``items`` sorted by id), saying where the ids came from.
    Items with an ``error`` take no part: they are skipped, only listed in ``errors.jsonl``
    (with their paths), and the escaped id of a name that is not UTF-8 (``b\\xe9.wav``) may be
    another file's real name."""
    items = [item for item in items if not item.error]
    for before, after in zip(items, items[1:]):
        if before.id == after.id and os.path.realpath(before.path) == os.path.realpath(after.path):
            where = " and ".join(dict.fromkeys(o for o in (before.origin, after.origin) if o))
            raise InputError(f"{before.path} is listed twice with the id {before.id!r}"
                             f"{' (from ' + where + ')' if where else ''}: "
                             "the same input given twice, overlapping inputs or a manifest repeating a row; "
                             "list each file once")
        if before.id == after.id:
            if before.origin.startswith("the 'id'") and after.origin.startswith("the 'id'"):
                advice = "fix the manifest's 'id' values"
            else:
                advice = "give a manifest with an 'id' column, or inputs whose paths differ"
            where = ", ".join(sorted({o for o in (before.origin, after.origin) if o}))
            raise InputError(f"two files have the id {before.id!r} ({before.path} and {after.path}"
                             f"{'; from ' + where if where else ''}); ids must be unique ({advice})")


def _warn_same_file(items: list[InputItem]) -> None:
    """Warn when one file is listed under several ids (overlapping folders, folder + manifest):
    it is tokenised once per id."""
    ids: dict[str, list[str]] = defaultdict(list)
    for item in items:
        ids[os.path.realpath(item.path)].append(item.id)
    repeated = {path: names for path, names in ids.items() if len(names) > 1}
    if repeated:
        path, names = min(repeated.items())
        warnings.warn(f"{len(repeated)} file(s) are listed under more than one id and get a row per id "
                      f"(e.g. {path} as {', '.join(repr(n) for n in names)}); check for overlapping inputs",
                      stacklevel=3)


def list_inputs(inputs: list[str | Path]) -> list[InputItem]:
    """The files named by ``inputs`` (folders, manifests, path lists, audio files), sorted by id.

    Raises ``InputError`` for a missing input, a malformed manifest, a file that is neither
    audio, manifest nor UTF-8 text, an input naming no file (or only missing files), a
    manifest row without a path, an empty or non-string id, or two files with the same id.
    Warns when one file has several ids. A file whose id is not valid UTF-8 (its name is in
    another encoding) comes with its ``error`` set (``_skip_if_not_utf8``); its escaped id may
    be another item's (it is skipped, so never a row: not a clash).
    """
    items: list[InputItem] = []
    for given in inputs:
        if os.fspath(given) == "":  # Path("") is the current folder: every file under it
            raise InputError("an input path is empty (''): it names no file; an unset shell variable?")
        found = _read_input(Path(given))
        if not found:
            raise InputError(f"input {given} names no audio file")
        items.extend(_skip_if_broken_link(_skip_if_not_utf8(item)) for item in found)
    items.sort()
    _check_unique(items)
    _warn_same_file(items)
    return items
