"""Manifest rows of a corpus build: one row per file, the preset folder's name, and merging
a partial (``--categories``) build into the manifests already there."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence


def entry(path: str, manifest_dir: Path, category: str, source: str, **extra: object) -> dict:
    """The manifest row of the audio file ``path`` (its header read with ``soundfile``):
    ``path`` relative to ``manifest_dir``, ``duration``, ``sample_rate``, ``channels``,
    ``category``, ``source`` and ``extra``."""
    import soundfile as sf
    info = sf.info(path)
    return {"path": os.path.relpath(path, manifest_dir), "duration": round(float(info.duration), 4),
            "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "category": category, "source": source, **extra}


def preset_dir_name(preset: str, sample_rate: int) -> str:
    """The folder of a built preset: ``<preset>_<kHz>k`` when the rate is a whole number of
    kHz (``small_24k``), else ``<preset>_<Hz>`` (``small_22050``), so that two rates never
    share a folder."""
    if sample_rate % 1000 == 0:
        return f"{preset}_{sample_rate // 1000}k"
    return f"{preset}_{sample_rate}"


def merge_rows(old: Iterable[dict], new: Sequence[dict], rebuilt: set[str],
               order: Sequence[str]) -> list[dict]:
    """One manifest after a build of some sources only: the ``old`` rows of the sources not
    ``rebuilt``, plus the ``new`` rows. When both kinds are present, rows are ordered by
    their source's place in ``order`` (the preset's sources; stable within a source), which
    is the order a build of every source writes."""
    kept = [r for r in old if r.get("source") not in rebuilt]
    if not kept or not new:
        return kept + list(new)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(kept + list(new), key=lambda r: rank.get(r.get("source", ""), len(rank)))
