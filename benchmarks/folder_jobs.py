"""Folder throughput of ``opencodec compress`` / ``decompress`` with ``--jobs N``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/folder_jobs.py [--files 24] [--jobs 1 2] [--repeats 3]

Cuts ``--files`` pieces of 2-12 s (seeded) from the demo's real speech (``demo/sample_speech_fr.flac``,
looped) into a temporary folder, then times the whole command line, start-up and model loading
included, as a user runs it (``python -m opencodec compress SET OUT -j N -q``, then
``decompress`` of that output), best of ``--repeats`` runs in alternating order. Every N's
``.ecdc`` files are checked to be byte-identical to one process's, and its decoded WAVs are
compared sample by sample (workers decode on one thread, the single process on the caller's
count, so the last bit can differ). Prints a Markdown table: wall seconds, seconds of audio
per second and the ratio against ``--jobs 1``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import provenance_line  # noqa: E402


def make_set(out: Path, files: int, seed: int) -> float:
    """Write the pieces (24 kHz mono FLAC); returns their total seconds."""
    source, rate = sf.read(ROOT / "demo" / "sample_speech_fr.flac", dtype="float32", always_2d=True)
    pool = source.mean(axis=1)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in range(files):
        seconds = float(rng.uniform(2.0, 12.0))
        start = int(rng.integers(0, pool.size))
        piece = np.take(pool, np.arange(start, start + int(seconds * rate)), mode="wrap")
        sf.write(out / f"piece{i:03d}.flac", piece, rate)
        total += piece.size / rate
    return total


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "opencodec", *args, "-q", "-f"], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return time.perf_counter() - start


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files == other and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def _wav_difference(a: Path, b: Path) -> str:
    """"same bytes", or the largest difference between the two trees' 16-bit samples."""
    if _same_tree(a, b):
        return "same bytes"
    worst = 0
    for path in sorted(a.rglob("*.wav")):
        x, y = (sf.read(p, dtype="int16")[0].astype(np.int32) for p in (path, b / path.relative_to(a)))
        worst = max(worst, int(np.abs(x - y).max()) if x.shape == y.shape else 1 << 16)
    return f"samples within {worst} LSB" if worst < 1 << 16 else "NO (lengths differ)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="model name or weights file (default: the bundled model)")
    args = parser.parse_args()
    if 1 not in args.jobs:
        args.jobs = [1, *args.jobs]
    model = ["-m", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds = make_set(work / "set", args.files, args.seed)
        best = {(cmd, n): float("inf") for cmd in ("compress", "decompress") for n in args.jobs}
        for _ in range(args.repeats):
            for n in args.jobs:
                best["compress", n] = min(best["compress", n], _run(
                    ["compress", str(work / "set"), str(work / f"ecdc{n}"), "-j", str(n), *model]))
                best["decompress", n] = min(best["decompress", n], _run(
                    ["decompress", str(work / f"ecdc{n}"), str(work / f"wav{n}"), "-j", str(n), *model]))
        same = {("compress", n): "yes" if _same_tree(work / "ecdc1", work / f"ecdc{n}") else "NO"
                for n in args.jobs}
        same.update({("decompress", n): _wav_difference(work / "wav1", work / f"wav{n}") for n in args.jobs})
    print(f"{args.files} files, {seconds:.1f} s of speech (2-12 s each); cores: {os.cpu_count()}\n")
    print("| command | --jobs | wall (s) | audio s / s | x --jobs 1 | outputs against --jobs 1 |")
    print("|---|---|---|---|---|---|")
    for (cmd, n), wall in best.items():
        print(f"| {cmd} | {n} | {wall:.2f} | {seconds / wall:.1f} | {best[cmd, 1] / wall:.2f} | {same[cmd, n]} |")
    print(f"\n*{provenance_line()} (the parent; each worker process runs one thread)*")


if __name__ == "__main__":
    main()
