"""Peak memory of streaming compression/decompression of long files (``opencodec.longform``).

Generates 16-bit WAV files of the given durations (tones + noise, written block by block,
at the model's rate and channel count), then for each runs ``compress_file_streaming`` and
``decompress_file_streaming``, each in its own subprocess (one thread), and reports the
subprocess's peak RSS and wall time. Peak RSS that does not grow with the duration shows
that memory is bounded::

    python benchmarks/long_file_memory.py --minutes 10 60 [--workdir /tmp/lf] [--bandwidth 6]
    python benchmarks/long_file_memory.py --arch encodec_48khz --minutes 2 10
    python benchmarks/long_file_memory.py --lm deterministic --minutes 2 10

``--lm`` entropy-codes the files with the codec's entropy model (the bundled one for the
default model), in the deterministic or the official format: the audio still streams, the
codes (2 bytes each) are kept in memory and coded at the end.

``--arch encodec_48khz`` uses the 48 kHz stereo segmenting architecture with random weights
(seed 0; memory and speed do not depend on the weights' values); the default is the bundled
default model.

Peak RSS is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at exit (the same
value ``RUSAGE_CHILDREN`` gives the parent for a single child, but per run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from provenance import provenance_line

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from opencodec.longform import compress_file_streaming, decompress_file_streaming
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model
from opencodec.weights_hash import weights_sha256
mode, src, dst, bw, arch, lm_format = (sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]),
                                       sys.argv[5], sys.argv[6])
if arch == "default":
    model = load_model(None)
else:
    torch.manual_seed(0)
    model = EncodecModel(getattr(EncodecConfig, arch)()).eval()
lm = None
if lm_format != "none":
    from opencodec.pretrained import load_lm_model
    lm = load_lm_model(None, codec=model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "compress":
    coding = {} if lm is None else {"lm": lm, "deterministic": lm_format == "deterministic"}
    compress_file_streaming(model, src, dst, bw, **coding)
else:
    decompress_file_streaming(src, dst, model, lm=lm)
wall = time.perf_counter() - t0
print(json.dumps({"model": f"{model.name} (weights {weights_sha256(model)[:12]})",
                  "wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_load_mib": base / 1024}))
"""


def make_wav(path: Path, seconds: float, rate: int = 24000, channels: int = 1) -> None:
    rng = np.random.default_rng(0)
    total = int(seconds * rate)
    block = rate * 60
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as fo:
        for start in range(0, total, block):
            t = np.arange(start, min(start + block, total)) / rate
            x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1330 * t * (1 + 0.1 * np.sin(t)))
            x = x[:, None] + 0.05 * rng.standard_normal((t.shape[0], channels))
            fo.write(x.astype(np.float32))


def run_child(mode: str, src: Path, dst: Path, bandwidth: float, arch: str, lm: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst), str(bandwidth), arch,
                          lm], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--arch", choices=["default", "encodec_24khz", "encodec_48khz"], default="default",
                        help="the bundled default model, or an official architecture with random weights")
    parser.add_argument("--lm", choices=["none", "deterministic", "official"], default="none",
                        help="entropy-code with the codec's entropy model (default model only), "
                             "in this format")
    args = parser.parse_args()
    rate, channels = (48000, 2) if args.arch == "encodec_48khz" else (24000, 1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="opencodec_long_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        src = work / f"long_{minutes:g}min.wav"
        t0 = time.perf_counter()
        make_wav(src, minutes * 60, rate, channels)
        gen = time.perf_counter() - t0
        ecdc, wav = src.with_suffix(".ecdc"), work / f"long_{minutes:g}min_out.wav"
        enc = run_child("compress", src, ecdc, args.bandwidth, args.arch, args.lm)
        dec = run_child("decompress", ecdc, wav, args.bandwidth, args.arch, args.lm)
        row = {"arch": args.arch, "lm": args.lm, "minutes": minutes, "input_mib": src.stat().st_size / 2**20, "ecdc_bytes": ecdc.stat().st_size,
               "gen_s": gen, "compress": enc, "decompress": dec,
               "output_frames": sf.info(str(wav)).frames}
        rows.append(row)
        print(json.dumps(row), flush=True)
        for path in (src, ecdc, wav):
            path.unlink()
    print(provenance_line() + f"; child processes at 1 thread; model: {rows[0]['compress']['model'] if rows else '-'}"
          + (f", entropy model ({args.lm} format)" if args.lm != "none" else ""))
    print(f"{'minutes':>8} {'enc peak MiB':>13} {'enc s':>8} {'enc RTF':>8} {'dec peak MiB':>13} {'dec s':>8} {'dec RTF':>8}")
    for r in rows:
        sec = r["minutes"] * 60
        print(f"{r['minutes']:8g} {r['compress']['peak_rss_mib']:13.1f} {r['compress']['wall_s']:8.1f} "
              f"{r['compress']['wall_s'] / sec:8.3f} {r['decompress']['peak_rss_mib']:13.1f} "
              f"{r['decompress']['wall_s']:8.1f} {r['decompress']['wall_s'] / sec:8.3f}")


if __name__ == "__main__":
    main()
