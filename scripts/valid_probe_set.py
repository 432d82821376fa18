"""A small held-out *validation* set in the evaluation harness's layout, for choosing
between training runs by ViSQOL without touching the evaluation sets.

    python scripts/valid_probe_set.py data/full_24k     # -> data/full_24k/probe/eval_*.jsonl
    opencodec eval --models MODEL --bandwidths 6 --baselines opus6 --set data/full_24k/probe \
        --metrics si_snr mel visqol --out OUT

From ``<preset>/manifests/valid.jsonl`` it takes, in a seeded shuffle, the first 12 speech,
8 music and 8 general items of at least 3 s, written as ``eval_clean_speech``,
``eval_music`` and ``eval_general``. The validation music items are whole tracks (minutes
long, too slow for ViSQOL), so each is cut to the 8 s starting at its middle, written to
``<preset>/probe_audio/music_<i>.flac``. (The validation split has no noisy speech.)
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import soundfile as sf

from opencodec.data.corpus import read_jsonl, write_jsonl

CATEGORIES = (("speech", "clean_speech", 12), ("music", "music", 8), ("general", "general", 8))
MIN_SECONDS = 3.0
MUSIC_SECONDS = 8


def build(preset_dir: Path, seed: int = 0) -> list[Path]:
    """Write ``preset_dir/probe/eval_<category>.jsonl`` (and the music cuts); returns the manifests."""
    manifests = preset_dir / "manifests"
    rows = read_jsonl(manifests / "valid.jsonl")
    rng = random.Random(seed)
    out_dir, audio_dir = preset_dir / "probe", preset_dir / "probe_audio"
    written = []
    for category, name, count in CATEGORIES:
        chosen = [r for r in rows if r["category"] == category and r["duration"] >= MIN_SECONDS]
        rng.shuffle(chosen)
        chosen = chosen[:count]
        if category == "music":
            audio_dir.mkdir(exist_ok=True)
            for i, row in enumerate(chosen):
                source = manifests / row["path"]
                info = sf.info(str(source))
                frames = MUSIC_SECONDS * info.samplerate
                wav, sr = sf.read(str(source), start=info.frames // 2, frames=frames, always_2d=True)
                sf.write(str(audio_dir / f"music_{i}.flac"), wav, sr)
                chosen[i] = {**row, "path": f"../probe_audio/music_{i}.flac", "duration": len(wav) / sr}
        path = out_dir / f"eval_{name}.jsonl"
        write_jsonl(path, chosen)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset_dir", type=Path, help="e.g. data/full_24k (with manifests/valid.jsonl)")
    args = parser.parse_args()
    for path in build(args.preset_dir):
        print(path)


if __name__ == "__main__":
    main()
