"""The input files of a source in an extracted package: listing, capping to a number of
hours (whole groups, seeded) and the train/valid split of groups."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Optional

from ..official_files import file_sha256
from .sources import Source


@dataclasses.dataclass
class SourceFile:
    """One input audio file of a source (before conversion)."""

    source: str
    rel: str            # path relative to the package extraction root
    group: str
    src_path: str       # absolute input path
    out_path: str       # absolute output FLAC path
    est_duration: float  # seconds, estimated from the header (-1 if unreadable)


def list_source_files(src: Source, root: Path, audio_dir: Path) -> list[SourceFile]:
    """All files of ``src`` under the extracted package ``root``, sorted by path.

    Each file's output is ``audio_dir/<source>/<rel without extension>.flac``, except when
    several inputs differ only by extension (``mace.ogg``, ``mace.wav``): then every one of
    them keeps its extension (``mace.ogg.flac``, ``mace.wav.flac``), so two inputs never
    share an output (see :func:`output_names`)."""
    found: list[tuple[str, str, Path]] = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            g = src.select(rel)
            if g is not None:
                found.append((rel, g, p))
    found.sort()
    names = output_names([rel for rel, _, _ in found])
    return [SourceFile(src.name, rel, g, str(p), str(audio_dir / src.name / names[rel]),
                       _estimate_duration(p)) for rel, g, p in found]


def output_names(rels: Iterable[str]) -> dict[str, str]:
    """Input path -> output FLAC path (both relative): the input without its extension plus
    ``.flac``; inputs whose names would collide keep their extension (``a.wav.flac``).
    Raises ``ValueError`` if names still collide (never two inputs in one output)."""
    rels = list(rels)
    plain: dict[str, list[str]] = defaultdict(list)
    for rel in rels:
        plain[rel.rsplit(".", 1)[0] + ".flac"].append(rel)
    names = {rel: (name if len(group) == 1 else rel + ".flac")
             for name, group in plain.items() for rel in group}
    owners: dict[str, list[str]] = defaultdict(list)
    for rel, name in names.items():
        owners[name].append(rel)
    clash = sorted(group for group in owners.values() if len(group) > 1)
    if clash:
        raise ValueError(f"inputs {clash[0]} would share one output file")
    return names


def drop_duplicates(files: list[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split ``files`` (sorted by path) into (kept, dropped): of byte-identical inputs only
    the first by path is kept, so one recording can never be in both ``train`` and
    ``valid`` (ktuberling's four Serbian folders hold the same 15 files). Only files whose
    size another file shares are hashed."""
    size = {f.src_path: os.path.getsize(f.src_path) for f in files}
    shared = {n for n, count in Counter(size.values()).items() if count > 1}
    seen: set[str] = set()
    dropped: set[str] = set()
    for f in files:
        if size[f.src_path] not in shared:
            continue
        digest = file_sha256(f.src_path)
        if digest in seen:
            dropped.add(f.src_path)
        seen.add(digest)
    return ([f for f in files if f.src_path not in dropped],
            [f for f in files if f.src_path in dropped])


def _estimate_duration(path: Path) -> float:
    if path.suffix.lower() == ".mid":
        return -1.0  # unknown before rendering (caps do not apply to MIDI sources)
    if path.suffix.lower() == ".g722":
        return path.stat().st_size / 8000.0  # 64 kbit/s
    try:
        import soundfile as sf
        return float(sf.info(str(path)).duration)
    except Exception:
        return -1.0


def _seeded_order(keys: Iterable[str], seed: int) -> list[str]:
    return sorted(keys, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())


def cap_files(files: list[SourceFile], max_hours: Optional[float], seed: int) -> list[SourceFile]:
    """Keep whole groups (in a seeded order) until ``max_hours`` is reached; inside the
    last group, files are taken in order until the cap (so single-group sources are capped
    too). ``None`` keeps everything."""
    if max_hours is None:
        return files
    by_group: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        by_group[f.group].append(f)
    left = max_hours * 3600
    kept: list[SourceFile] = []
    for g in _seeded_order(by_group, seed):
        for f in by_group[g]:
            if left <= 0:
                break
            kept.append(f)
            left -= max(f.est_duration, 0)
        if left <= 0:
            break
    return sorted(kept, key=lambda s: s.rel)


def split_groups(group_hours: dict[str, float], valid_fraction: float, seed: int) -> set[str]:
    """Choose the validation groups (whole groups) holding out about ``valid_fraction`` of
    the hours: groups are taken in a seeded order, skipping those that would push the
    held-out hours over 1.5x the target, until the target is reached; if no group is small
    enough, the smallest group is held out. At least one group stays in train; with a
    single group nothing is held out. Returns the set of validation group keys."""
    groups = _seeded_order(group_hours, seed)
    if len(groups) < 2 or valid_fraction <= 0:
        return set()
    target = valid_fraction * sum(group_hours.values())
    chosen: set[str] = set()
    acc = 0.0
    for g in groups:
        if acc >= target or len(chosen) == len(groups) - 1:
            break
        if acc + group_hours[g] <= 1.5 * target:
            chosen.add(g)
            acc += group_hours[g]
    if not chosen:
        chosen.add(min(groups, key=lambda g: (group_hours[g], g)))
    return chosen
