"""Lower bound on the time of a codec that gives the official codes and audio bit for bit.

Usage: .venv/bin/python benchmarks/codec_floor.py [--seconds 10] [--repeats 5] [--threads 1]
       [--models encodec_24khz encodec_48khz]

Codes and audio bitwise equal to the official package's pin the floating-point kernels
that make them: a kernel that sums in another order (another convolution algorithm, a
channels-last layout, another LSTM implementation, a batch of segments through the
LSTM) rounds differently, which moves the audio by ~1e-7 and can flip a code wherever
two codebook entries are nearly tied. This script records, with a dispatch mode, every
call of those kernels that opencodec's bit-exact path makes on a real input
(convolutions, transposed convolutions, the LSTM, group norms and the codebook search's
products), then replays *only those calls*, back to back on the recorded inputs, and
times the replay. Everything else (padding, ELU, residual sums, copies, Python) is left
out, so the replay is faster than any bit-exact implementation that uses these kernels
can be, and ``official time / replay time`` bounds the speed ratio one can reach.

The recorded calls are already the cheapest bitwise-equal form opencodec found: the
encoder's downsampling stack in cache-sized time chunks, and the decoder's transposed
convolutions in oneDNN's channels-last kernels (bitwise the channels-first result). The
official package runs under ``torch.inference_mode()`` on the same random weights and
input, timed alternately with the replay and with opencodec's own path.
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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # provenance, also when loaded by a test
import official_ref  # the torchaudio stand-in, before encodec is imported
from provenance import provenance_line  # noqa: E402

# The kernels whose arithmetic fixes the result bits (aten overload packet names).
PINNED = ("conv1d", "conv2d", "convolution", "conv_transpose1d", "conv_transpose2d", "lstm",
          "group_norm", "native_group_norm", "matmul", "mm", "addmm")


class KernelRecorder(TorchDispatchMode):
    """Runs every op and keeps (op, cloned args, kwargs) of the pinned ones, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tp.Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in PINNED:
            def keep(a: tp.Any) -> tp.Any:
                return a.clone(memory_format=torch.preserve_format) if isinstance(a, torch.Tensor) else a
            self.calls.append((func, tree_map(keep, args), tree_map(keep, kwargs)))
        return func(*args, **kwargs)


def record(fn: tp.Callable[[], tp.Any]) -> list[tuple[tp.Any, tuple, dict]]:
    """The pinned kernel calls ``fn`` makes."""
    recorder = KernelRecorder()
    with recorder:
        fn()
    return recorder.calls


def replay(calls: tp.Sequence[tuple[tp.Any, tuple, dict]]) -> None:
    """Run the recorded calls back to back."""
    for func, args, kwargs in calls:
        func(*args, **kwargs)


def kernel_summary(calls: tp.Sequence[tuple[tp.Any, tuple, dict]], repeats: int = 0) -> str:
    """'name xcount' for the recorded calls, with (repeats > 0) the median seconds of
    replaying each kind of kernel alone."""
    by_kind: dict[str, list[tuple[tp.Any, tuple, dict]]] = {}
    for call in calls:
        by_kind.setdefault(call[0].overloadpacket.__name__, []).append(call)
    parts = []
    for name, kind_calls in by_kind.items():
        part = f"{name} x{len(kind_calls)}"
        if repeats > 0:
            part += f" {interleaved_medians([partial(replay, kind_calls)], repeats)[0]:.3f} s"
        parts.append(part)
    return ", ".join(parts)


def interleaved_medians(fns: tp.Sequence[tp.Callable[[], tp.Any]], repeats: int) -> list[float]:
    """Median wall time of each of ``fns``, run in rotating order ``repeats`` times after a warm-up."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for rep in range(repeats):
        order = list(range(len(fns)))
        order = order[rep % len(fns):] + order[:rep % len(fns)]
        for i in order:
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["encodec_24khz", "encodec_48khz"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    models = {}
    for name in args.models:
        ref, ours, x = official_ref.benchmark_pair(name, args.bandwidth, args.seconds)
        models[f"{name} (random)"] = ours
        with torch.inference_mode():
            ref_frames = ref.encode(x)
            our_frames = ours.encode(x)
            for (ref_codes, _), (our_codes, _) in zip(ref_frames, our_frames):
                if not torch.equal(ref_codes, our_codes):
                    raise AssertionError(f"{name}: codes differ from the official ones")
            if not torch.equal(ref.decode(ref_frames), ours.decode(our_frames)):
                raise AssertionError(f"{name}: audio is not bitwise the official audio")
            for direction, ref_fn, our_fn in (
                    ("encode", partial(ref.encode, x), partial(ours.encode, x)),
                    ("decode", partial(ref.decode, ref_frames), partial(ours.decode, our_frames))):
                calls = record(our_fn)
                t_ref, t_ours, t_floor = interleaved_medians([ref_fn, our_fn, partial(replay, calls)],
                                                             args.repeats)
                rows.append((name, direction, t_ref, t_ours, t_floor, kernel_summary(calls, args.repeats)))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(provenance_line(models))
    print(f"{args.seconds:g} s of audio, {args.bandwidth:g} kbps, {args.threads} thread(s), median wall time of "
          f"{args.repeats} interleaved runs, torch {torch.__version__}")
    print("| model | direction | official s | opencodec s | pinned kernels only s | opencodec ratio | "
          "largest possible ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, direction, t_ref, t_ours, t_floor, _ in rows:
        print(f"| {name} | {direction} | {t_ref:.3f} | {t_ours:.3f} | {t_floor:.3f} | {t_ref / t_ours:.2f}x | "
              f"{t_ref / t_floor:.2f}x |")
    print()
    for name, direction, *_, summary in rows:
        print(f"{name} {direction}, pinned kernels (replayed alone, per kind): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
