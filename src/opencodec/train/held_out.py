"""Held-out audio that is training audio too: validation (or a report) on files the model trains
on is silently optimistic, so the trainers warn at start-up when ``data.valid`` (or
``report.manifests``) lists a file that ``data.train`` lists as well: the same file (after
resolving relative paths and symbolic links) or a byte-identical copy under another name.

Cheap for a corpus of ~10k files: one ``stat`` per file; only files whose sizes collide with a
held-out file's are read, first three 4 KiB samples of each, then whole where those agree."""

from __future__ import annotations

import hashlib
import os
import sys
import typing as tp

from ..official_files import file_sha256

SAMPLE_BYTES = 4096


def _paths(manifests: tp.Any) -> list[str]:
    """The resolved audio paths of ``manifests`` (a path, or a list of paths or row dicts)."""
    from ..data.dataset import load_manifests

    listed = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests or [])
    rows = load_manifests(listed) if listed else []
    return [os.path.realpath(row["path"]) for row in rows if isinstance(row.get("path"), str)]


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:  # a missing file: the trainer skips or reports it elsewhere
        return None


def _digest(path: str, size: int, whole: bool) -> str | None:
    """SHA-256 of the file's start, middle and end (``whole``: of all of it); None if unreadable."""
    try:
        if whole:
            return file_sha256(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for offset in (0, max(size // 2 - SAMPLE_BYTES // 2, 0), max(size - SAMPLE_BYTES, 0)):
                f.seek(offset)
                h.update(f.read(SAMPLE_BYTES))
        return h.hexdigest()
    except OSError:
        return None


def shared_files(train: tp.Sequence[str], held_out: tp.Sequence[str]) -> list[tuple[str, str]]:
    """``(held-out file, the training file it is)`` for each path of ``held_out`` that is one of
    ``train``'s (both resolved paths): the same path, or the same bytes (compared only where the
    sizes are equal), in ``held_out``'s order."""
    same_path = set(train)
    by_size: dict[int, list[str]] = {}
    wanted = {s for s in map(_size, (p for p in held_out if p not in same_path)) if s is not None}
    for path in dict.fromkeys(train):
        size = _size(path) if wanted else None
        if size in wanted:
            by_size.setdefault(size, []).append(path)
    samples: dict[int, dict[str | None, list[str]]] = {}  # per size: the training files by sample digest
    whole: dict[str, str | None] = {}

    def full(path: str, size: int) -> str | None:
        if path not in whole:
            whole[path] = _digest(path, size, True)
        return whole[path]

    out = []
    for path in held_out:
        if path in same_path:
            out.append((path, path))
            continue
        size = _size(path)
        if size is None or size not in by_size:
            continue
        if size not in samples:
            samples[size] = {}
            for other in by_size[size]:
                samples[size].setdefault(_digest(other, size, False), []).append(other)
        sample = _digest(path, size, False)
        candidates = samples[size].get(sample, []) if sample is not None else []
        match = next((other for other in candidates if full(path, size) is not None
                      and full(path, size) == full(other, size)), None)
        if match is not None:
            out.append((path, match))
    return out


def warn_shared_audio(train: tp.Any, held_out: tp.Sequence[tuple[str, tp.Any]], train_field: str = "data.train") -> None:
    """Print one warning line on stderr per ``(field, manifests)`` of ``held_out`` that lists
    audio ``train`` (manifests) lists too: how many files of how many, and the first."""
    fields = [(field, _paths(manifests)) for field, manifests in held_out if manifests]
    if not any(paths for _, paths in fields):
        return
    train_paths = _paths(train)
    for field, paths in fields:
        shared = shared_files(train_paths, paths)
        if shared:
            first, other = shared[0]
            how = "" if first == other else f" (the same bytes as {other})"
            print(f"warning: {len(shared)} of the {len(paths)} files of {field} are in {train_field} too, e.g. "
                  f"{first}{how}: its metrics on training audio are optimistic", file=sys.stderr)
