"""The validation probe: a small set in the evaluation harness's layout for choosing between
training runs by ViSQOL, without touching the evaluation sets.

``build_probe(preset_dir)`` writes ``preset_dir/probe/eval_{clean_speech,music,general}.jsonl``:

* speech: the items given in ``speech`` (the corpus builder passes 5-10 s items cut from its
  ``probe`` sources: speakers that neither training nor any evaluation set has, from
  packages no evaluation set uses); without them, as before issue 19, the first 12 speech
  files of at least 3 s of ``manifests/valid.jsonl`` in a seeded shuffle (held-out groups
  of training sources, which share speakers with training);
* music and general: the first 8 files of at least 3 s of each in ``valid.jsonl`` (seeded
  shuffle). Validation music files are whole tracks (minutes long, too slow for ViSQOL), so
  each is cut to the 8 s starting at its middle, written to
  ``preset_dir/probe_audio/music_<i>.flac`` (atomically, and only when its audio changed: a
  second build rewrites no audio).

A probe whose speech rows are cut items (they carry an ``item_id``) was built from the
corpus's probe sources (:func:`has_source_probe`); ``scripts/valid_probe_set.py`` refuses to
replace it with the older probe unless told to.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional

import numpy as np

from ._jsonl import read_jsonl, write_jsonl

CATEGORIES = (("speech", "clean_speech", 12), ("music", "music", 8), ("general", "general", 8))
MIN_SECONDS = 3.0
MUSIC_SECONDS = 8


def build_probe(preset_dir: Path, speech: Optional[list[dict]] = None, seed: int = 0) -> Path:
    """Write the probe manifests under ``preset_dir/probe`` (see the module docstring).

    Args:
        preset_dir: a built preset (``manifests/valid.jsonl`` inside).
        speech: speech rows whose ``path`` is relative to ``preset_dir/probe`` (or absolute);
            ``None`` draws the speech from ``valid.jsonl``.
        seed: seed of the shuffles.
    Returns the probe folder."""
    import soundfile as sf
    manifests = preset_dir / "manifests"
    rows = read_jsonl(manifests / "valid.jsonl") if (manifests / "valid.jsonl").exists() else []
    rng = random.Random(seed)
    out_dir, audio_dir = preset_dir / "probe", preset_dir / "probe_audio"
    for category, name, count in CATEGORIES:
        if category == "speech" and speech is not None:
            write_jsonl(out_dir / f"eval_{name}.jsonl", speech)
            continue
        chosen = [r for r in rows if r["category"] == category and r["duration"] >= MIN_SECONDS]
        rng.shuffle(chosen)
        chosen = chosen[:count]
        if category == "music":
            audio_dir.mkdir(parents=True, exist_ok=True)
            for i, row in enumerate(chosen):
                source = manifests / row["path"]
                info = sf.info(str(source))
                frames = MUSIC_SECONDS * info.samplerate
                wav, sr = sf.read(str(source), start=info.frames // 2, frames=frames, dtype="int16",
                                  always_2d=True)
                write_if_changed(audio_dir / f"music_{i}.flac", wav, sr)
                chosen[i] = {**row, "path": f"../probe_audio/music_{i}.flac", "duration": len(wav) / sr}
        # other rows keep their paths: probe/ and manifests/ are siblings
        write_jsonl(out_dir / f"eval_{name}.jsonl", chosen)
    return out_dir


def write_if_changed(path: Path, pcm: np.ndarray, sample_rate: int) -> bool:
    """Write 16-bit ``pcm`` [T, C] as a FLAC at ``path`` unless the file there already holds
    exactly that audio; the write goes to a temporary name renamed into place (atomic).
    Returns whether it wrote."""
    import soundfile as sf
    if path.is_file():
        try:
            old, old_sr = sf.read(str(path), dtype="int16", always_2d=True)
            if old_sr == sample_rate and old.shape == pcm.shape and np.array_equal(old, pcm):
                return False
        except (RuntimeError, OSError, ValueError):  # unreadable: write it again
            pass
    tmp = str(path) + ".tmp.flac"
    sf.write(tmp, pcm, sample_rate, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)
    return True


def has_source_probe(preset_dir: Path) -> bool:
    """Whether ``preset_dir/probe`` holds speech cut from probe sources by the corpus build
    (rows with an ``item_id``), rather than files of ``valid.jsonl``."""
    speech = preset_dir / "probe" / "eval_clean_speech.jsonl"
    return speech.is_file() and any("item_id" in r for r in read_jsonl(speech))
