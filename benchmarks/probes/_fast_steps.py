"""Shared set-up of the step probes (compile_probe.py, jit_probe.py): the fast encoder and
decoder steps of a model, warmed up, with their states and one frame group of input, and a
timing loop that runs several callables alternately."""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from multistream_capacity import official_random  # noqa: E402

from opencodec.pretrained import load_model  # noqa: E402
from opencodec.step import DecoderStep, EncoderStep  # noqa: E402


def warm_steps(argv):
    """From ``MODEL B F`` (``official`` or a bundled name, streams, frames per call): the fast
    steps after their warm-up, 6 kbps, one thread. Returns (enc, dec, x [B, 1, F * hop],
    encoder state, decoder state, the warm-up's codes [B, K, 7])."""
    torch.set_num_threads(1)
    m = official_random() if argv[1] == "official" else load_model(argv[1])
    m.set_target_bandwidth(6.0)
    B, F = int(argv[2]), int(argv[3])
    enc, dec = EncoderStep(m, exact=False), DecoderStep(m, exact=False)
    with torch.inference_mode():
        codes, est = enc.start(0.1 * torch.randn(B, 1, enc.warmup_frames * m.hop_length))
        _, dst = dec.start(codes)
        x = 0.1 * torch.randn(B, 1, F * m.hop_length)
    return enc, dec, x, est, dst, codes


def time_alternately(fns, rounds=60, warm=5):
    """Median milliseconds of each callable in ``fns`` ({name: fn}), run in turn ``rounds`` times."""
    for f in fns.values():
        for _ in range(warm):
            f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return " ".join(f"{k} {1000 * statistics.median(v):.2f}" for k, v in times.items())
