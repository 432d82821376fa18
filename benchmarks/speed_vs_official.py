"""opencodec vs the official encodec package: same weights, same input, same process.

Prints, per model (24 kHz, 48 kHz), thread count (1, 2) and direction (encode, decode),
the median wall time over repeats, the real-time factor (compute time / audio duration;
below 1 is faster than real time) of each implementation and the speed ratio
(official time / opencodec time; above 1 means opencodec is faster).

Encoding is timed twice: bit-exact (the default) and in fast mode (``model.exact = False``;
the table gives the share of code frames equal to the official ones); decoding too: with the default bit-exact decoder
and with the faster approximate one (``model.exact_decode = False``, which is fast mode's
decoder; the official side is the same).

Honesty rules: both models carry the same random weights (official architecture, random
codebooks) and get the same input; the two implementations are timed alternately within
each repetition (the order flips every repetition) after one warm-up call each, so load
from other processes hits both alike; and every timed call's output is checked, at every
thread count: codes identical to the official ones (``torch.equal``), decoded audio
bitwise identical (default decoder) or within 1e-5 relative L2 error
(``exact_decode=False``). Both run under ``torch.inference_mode()``.

    python benchmarks/speed_vs_official.py [--seconds 10] [--repeats 7] [--threads 1 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import typing as tp
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import official_ref  # installs the torchaudio stand-in, imports encodec
from provenance import provenance_line

AUDIO_TOLERANCE = 1e-5


def _check_codes(ref_frames: tp.Sequence, our_frames: tp.Sequence, where: str) -> None:
    if len(ref_frames) != len(our_frames):
        raise AssertionError(f"{where}: {len(our_frames)} segments, official has {len(ref_frames)}")
    for i, (ref, ours) in enumerate(zip(ref_frames, our_frames)):
        if not torch.equal(ref[0], ours[0]):
            raise AssertionError(f"{where}: codes of segment {i} differ from the official ones")
        if (ref[1] is None) != (ours[1] is None) or (ref[1] is not None and not torch.equal(ref[1], ours[1])):
            raise AssertionError(f"{where}: scale of segment {i} differs from the official one")


_FAST_AGREEMENT: list[float] = []  # per timed fast encode: fraction of code frames equal


def _check_codes_fast(ref_frames: tp.Sequence, our_frames: tp.Sequence, where: str) -> None:
    """Fast mode's encoder: the same code shapes; the share of code frames equal to the
    official ones is recorded for the table (fast mode's bound, >= 99.9% of frames, is for
    real audio; this benchmark's input is random noise through random weights, where near-ties
    are more frequent)."""
    ref = torch.cat([f[0] for f in ref_frames], dim=-1)
    ours = torch.cat([f[0] for f in our_frames], dim=-1)
    if ref.shape != ours.shape:
        raise SystemExit(f"{where}: code shapes differ: {tuple(ref.shape)} vs {tuple(ours.shape)}")
    _FAST_AGREEMENT.append(float((ref == ours).all(dim=1).float().mean()))


def _check_audio(ref: torch.Tensor, ours: torch.Tensor, where: str) -> None:
    """Within AUDIO_TOLERANCE (relative L2) of the official audio."""
    if ref.shape != ours.shape:
        raise AssertionError(f"{where}: audio shape {tuple(ours.shape)}, official {tuple(ref.shape)}")
    err = ((ours - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    if not err < AUDIO_TOLERANCE:
        raise AssertionError(f"{where}: audio differs from the official by {err:.2e} (relative L2)")


def _check_audio_exact(ref: torch.Tensor, ours: torch.Tensor, where: str) -> None:
    """Bitwise the official audio (the default, ``exact_decode``)."""
    _check_audio(ref, ours, where)
    if not torch.equal(ref, ours):
        raise AssertionError(f"{where}: audio is not bitwise the official audio")


def _check_pair(check: tp.Callable[[tp.Any, tp.Any, str], None], where: str, ref: tp.Any, ours: tp.Any) -> None:
    check(ref, ours, where)


def _interleaved(ref_fn: tp.Callable[[], tp.Any], our_fn: tp.Callable[[], tp.Any], repeats: int,
                 check: tp.Callable[[tp.Any, tp.Any], None],
                 clock: tp.Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Median times (``clock``) of ``ref_fn`` and ``our_fn``, run alternately; ``check``
    sees every pair of outputs."""
    check(ref_fn(), our_fn())  # warm-up (and caches) for both
    ref_times, our_times = [], []
    for rep in range(repeats):
        order = [("ref", ref_fn), ("ours", our_fn)]
        if rep % 2:
            order.reverse()
        outputs = {}
        for who, fn in order:
            start = clock()
            outputs[who] = fn()
            (ref_times if who == "ref" else our_times).append(clock() - start)
        check(outputs["ref"], outputs["ours"])
    return statistics.median(ref_times), statistics.median(our_times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=["encodec_24khz", "encodec_48khz"])
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time (default) or this process's CPU time (meaningful with one "
                             "thread on a loaded machine: time spent descheduled is not counted)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    rows = []
    models = {}
    for name in args.models:
        ref, ours, x = official_ref.benchmark_pair(name, args.bandwidth, args.seconds)
        models[f"{name} (random)"] = ours
        for threads in args.threads:
            torch.set_num_threads(threads)
            where = f"{name}, {threads} thread(s)"
            with torch.inference_mode():
                ref_frames = ref.encode(x)
                our_frames = ours.encode(x)
                _check_codes(ref_frames, our_frames, where)
                t_ref, t_ours = _interleaved(partial(ref.encode, x), partial(ours.encode, x), args.repeats,
                                             partial(_check_pair, _check_codes, f"{where}, encode"), clock)
                rows.append((name, threads, "encode", t_ref, t_ours))
                ours.exact = False  # fast mode's encoder (the decoder is the exact_decode=False row)
                try:
                    t_ref, t_ours = _interleaved(partial(ref.encode, x), partial(ours.encode, x), args.repeats,
                                                 partial(_check_pair, _check_codes_fast, f"{where}, fast encode"),
                                                 clock)
                finally:
                    ours.exact = True
                agreement, _FAST_AGREEMENT[:] = min(_FAST_AGREEMENT), []
                rows.append((name, threads, f"encode, exact=False (fast mode; {100 * agreement:.2f}% of code "
                             "frames equal)", t_ref, t_ours))
                t_ref, t_ours = _interleaved(partial(ref.decode, ref_frames), partial(ours.decode, our_frames),
                                             args.repeats,
                                             partial(_check_pair, _check_audio_exact, f"{where}, decode"), clock)
                rows.append((name, threads, "decode", t_ref, t_ours))
                ours.exact_decode = False
                try:
                    t_ref, t_ours = _interleaved(partial(ref.decode, ref_frames), partial(ours.decode, our_frames),
                                                 args.repeats,
                                                 partial(_check_pair, _check_audio, f"{where}, fast decode"), clock)
                finally:
                    ours.exact_decode = True
                rows.append((name, threads, "decode, exact_decode=False", t_ref, t_ours))
            print(f"done: {where}", file=sys.stderr, flush=True)
    print(f"{args.seconds:g} s of audio, {args.bandwidth:g} kbps, median {args.clock} time of {args.repeats} "
          f"interleaved runs, torch {torch.__version__}; in every run codes identical, audio bitwise "
          f"identical (decode) or within {AUDIO_TOLERANCE:g} (exact_decode=False)")
    print(provenance_line(models))
    print("| model | threads | direction | official s | official RTF | opencodec s | opencodec RTF | speed ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, threads, direction, t_ref, t_ours in rows:
        print(f"| {name} | {threads} | {direction} | {t_ref:.3f} | {t_ref / args.seconds:.3f} | {t_ours:.3f} | "
              f"{t_ours / args.seconds:.3f} | {t_ref / t_ours:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
