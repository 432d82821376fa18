"""Pack a corpus for a GPU machine that has no network: Opus copies plus manifests.

The device tool carries at most 64 MiB with the working tree, so the training audio
travels as Ogg/Opus (libsndfile's encoder, about 32-36 kbps mono; the sources are
mostly Vorbis already) and is decoded back to WAV on the device by ``unpack``.

    python scripts/device/pack_corpus.py pack data/small_24k/manifests .gpu/corpus \
        --splits train train_noise valid
    python scripts/device/pack_corpus.py pack data/wide_24k/manifests .gpu/corpus --weight speech=2
    python scripts/device/pack_corpus.py unpack .gpu/corpus /tmp/corpus --workers 12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _encode_opus(src: Path, dst: Path, level: float, mono: bool) -> int:
    """Ogg/Opus copy of ``src`` written by libsndfile (so libsndfile reads it back).

    ``level`` is libsndfile's compression level: 0.9 gives about 32-36 kbps for mono.
    """
    import soundfile as sf

    audio, sr = sf.read(str(src), dtype="float32", always_2d=True)
    if sr not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(f"{src}: Opus needs 8/12/16/24/48 kHz, got {sr}")
    if mono:
        audio = audio.mean(axis=1, keepdims=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), audio, sr, format="OGG", subtype="OPUS", compression_level=level)
    return dst.stat().st_size


def _interleave_categories(rows: list[dict], weights: dict[str, float] | None = None, seed: int = 0) -> list[dict]:
    """Order rows so every prefix is balanced in hours across categories (files shuffled
    with a fixed seed within each): a size cap then keeps all categories in proportion.
    ``weights`` (category -> share, default 1) tilts the balance: with ``speech: 2`` every
    prefix holds about twice as many hours of speech as of each other category."""
    weights = weights or {}
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[dict]] = {}
    for row in rows:
        by_cat.setdefault(row.get("category", ""), []).append(row)
    queues = {c: [lst[i] for i in rng.permutation(len(lst))] for c, lst in sorted(by_cat.items())}
    hours = {c: 0.0 for c in queues}
    out = []
    while any(queues.values()):
        cat = min((c for c in queues if queues[c]), key=lambda c: hours[c] / weights.get(c, 1.0))
        row = queues[cat].pop()
        hours[cat] += float(row.get("duration", 0))
        out.append(row)
    return out


def pack(manifests: Path, out: Path, splits: list[str], level: float, max_mb: float, max_rows: int | None,
         mono: bool, weights: dict[str, float] | None = None, seed: int = 0) -> None:
    """Opus copies of every file of ``splits`` under ``out/audio`` and rewritten manifests.

    ``train`` is packed last, so when the corpus is larger than ``max_mb`` (the ``wide``
    preset's 7 h of training speech alone is about 95 MiB) it is the training split that is
    cut, in its category-balanced order, never the small validation and noise splits.
    ``seed`` picks which files a cut keeps: successive GPU runs given different seeds carry
    different parts of a corpus too large for one upload."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for split in sorted(splits, key=lambda name: name == "train"):
        rows = [json.loads(line) for line in (manifests / f"{split}.jsonl").read_text().splitlines() if line]
        rows = _interleave_categories(rows, weights, seed)[:max_rows]
        for old in (out / "audio" / split).glob("*.opus"):  # an earlier pack of this split: it would travel too
            old.unlink()
        kept = []
        for i, row in enumerate(rows):
            src = (manifests / row["path"]).resolve()
            rel = Path("audio") / split / f"{i:06d}.opus"
            size = _encode_opus(src, out / rel, level, mono)
            total += size
            if total > max_mb * 2**20:
                (out / rel).unlink()
                total -= size
                print(f"stopping at {max_mb} MiB in split {split} ({len(kept)} files)", file=sys.stderr)
                break
            kept.append(dict(row, path=str(Path("..") / rel), **({"channels": 1} if mono else {})))
        (out / "manifests").mkdir(exist_ok=True)
        with open(out / "manifests" / f"{split}.jsonl", "w") as f:
            for row in kept:
                f.write(json.dumps(row) + "\n")
        print(f"{split}: {len(kept)} files, {sum(r['duration'] for r in kept) / 3600:.2f} h; "
              f"total {total / 2**20:.1f} MiB", file=sys.stderr)


def _decode(args: tuple[str, str, int]) -> None:
    import soundfile as sf
    import soxr

    src, dst, rate = args
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    if sr != rate:
        audio = soxr.resample(audio, sr, rate)
    sf.write(dst, audio, rate, subtype="PCM_16")


def unpack(packed: Path, out: Path, workers: int, rate: int) -> None:
    """Decode every Opus file back to 16-bit WAV at ``rate`` and rewrite the manifests."""
    jobs = []
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for manifest in sorted((packed / "manifests").glob("*.jsonl")):
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line]
        with open(out / "manifests" / manifest.name, "w") as f:
            for row in rows:
                rel = Path(row["path"]).relative_to("..").with_suffix(".wav")
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                jobs.append((str(packed / "manifests" / row["path"]), str(out / rel), rate))
                f.write(json.dumps(dict(row, path=str(Path("..") / rel), sample_rate=rate)) + "\n")
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode, jobs, chunksize=16))
    print(f"decoded {len(jobs)} files into {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("manifests", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--splits", nargs="+", default=["train", "train_noise", "valid"])
    p.add_argument("--level", type=float, default=0.9, help="libsndfile Opus compression level")
    p.add_argument("--stereo", action="store_true", help="keep stereo (default: mono downmix)")
    p.add_argument("--max-mb", type=float, default=54.0)
    p.add_argument("--max-rows", type=int, default=None, help="at most this many files per split")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed: which files a size cap keeps")
    p.add_argument("--weight", nargs="*", default=[], metavar="CATEGORY=SHARE",
                   help="tilt the category balance, e.g. speech=2 (default 1 each)")
    u = sub.add_parser("unpack")
    u.add_argument("packed", type=Path)
    u.add_argument("out", type=Path)
    u.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    u.add_argument("--rate", type=int, default=24000)
    args = parser.parse_args()
    if args.cmd == "pack":
        weights = {}
        for item in args.weight:
            name, sep, share = item.partition("=")
            if not sep:
                parser.error(f"--weight {item!r}: expected CATEGORY=SHARE, e.g. speech=2")
            weights[name] = float(share)
        pack(args.manifests, args.out, args.splits, args.level, args.max_mb, args.max_rows, not args.stereo,
             weights, args.seed)
    else:
        unpack(args.packed, args.out, args.workers, args.rate)


if __name__ == "__main__":
    main()
