"""opencodec vs the official encodec package: same weights, same input, same process.

Prints, per model (24 kHz, 48 kHz), thread count (1, 2) and direction (encode, decode),
the median wall time over repeats, the real-time factor (compute time / audio duration;
below 1 is faster than real time) of each implementation and the speed ratio
(official time / opencodec time; above 1 means opencodec is faster). Codes are checked
to be identical and decoded audio equal to 1e-4 relative L2 error before timing.

    python benchmarks/speed_vs_official.py [--seconds 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import official_ref  # noqa: E402  (installs the torchaudio stand-in, imports encodec)

from opencodec import EncodecConfig, EncodecModel  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    args = parser.parse_args()
    rows = []
    for name, config in (("encodec_24khz", EncodecConfig.encodec_24khz()),
                         ("encodec_48khz", EncodecConfig.encodec_48khz())):
        ref = official_ref.make_official_model(name)
        ours = EncodecModel(config)
        ours.load_state_dict(ref.state_dict())
        ref.set_target_bandwidth(args.bandwidth)
        ours.set_target_bandwidth(args.bandwidth)
        x = torch.randn(1, config.channels, int(args.seconds * config.sample_rate), generator=torch.Generator().manual_seed(0)) * 0.1
        with torch.inference_mode():
            ref_frames, our_frames = ref.encode(x), ours.encode(x)
            assert all(torch.equal(a[0], b[0]) for a, b in zip(ref_frames, our_frames)), "codes differ"
            y_ref, y_ours = ref.decode(ref_frames), ours.decode(our_frames)
            assert ((y_ref - y_ours).norm() / y_ref.norm()).item() < 1e-4, "audio differs"
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                for direction in ("encode", "decode"):
                    if direction == "encode":
                        t_ref = _median_time(lambda: ref.encode(x), args.repeats)
                        t_ours = _median_time(lambda: ours.encode(x), args.repeats)
                    else:
                        t_ref = _median_time(lambda: ref.decode(ref_frames), args.repeats)
                        t_ours = _median_time(lambda: ours.decode(our_frames), args.repeats)
                    rows.append((name, threads, direction, t_ref, t_ours))
    print(f"{args.seconds:g} s of audio, {args.bandwidth:g} kbps, median of {args.repeats}, CPU: "
          f"{torch.get_num_threads()} threads max, torch {torch.__version__}")
    print(f"| model | threads | direction | official s | official RTF | opencodec s | opencodec RTF | speed ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, threads, direction, t_ref, t_ours in rows:
        print(f"| {name} | {threads} | {direction} | {t_ref:.3f} | {t_ref / args.seconds:.3f} | {t_ours:.3f} | "
              f"{t_ours / args.seconds:.3f} | {t_ref / t_ours:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
