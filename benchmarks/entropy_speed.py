"""Official vs opencodec LM entropy coding: time to encode/decode the same codes, same bytes.

Usage: .venv/bin/python benchmarks/entropy_speed.py [--frames 75] [--codebooks 32] [--threads 1]

Both sides run with the same random-weight LM (official ``LMModel`` and our ``EntropyLM`` with
its weights) and the same thread count; the script checks the bytes are identical. A last line
times the deterministic format's integer model (``opencodec.entropy.fixed``) on the same codes.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import official_ref  # noqa: E402  (torchaudio stand-in before importing encodec)
from provenance import provenance_line  # noqa: E402
from encodec.model import LMModel  # noqa: E402
from encodec.quantization.ac import ArithmeticDecoder, build_stable_quantized_cdf  # noqa: E402

from opencodec.entropy import decode_segment_with_lm, encode_segment_with_lm, load_lm  # noqa: E402
from opencodec.entropy import decode_segment_fixed, encode_segment_fixed, fixed_lm_for  # noqa: E402


def official_decode(lm: LMModel, data: bytes, K: int, T: int) -> torch.Tensor:
    """The official reader's per-segment LM decoding (decompress_from_file)."""
    dec = ArithmeticDecoder(io.BytesIO(data))
    out = torch.zeros(K, T, dtype=torch.long)
    states, offset = None, 0
    input_ = torch.zeros(1, K, 1, dtype=torch.long)
    for t in range(T):
        with torch.no_grad():
            probas, states, offset = lm(input_, states, offset)
        for k in range(K):
            out[k, t] = dec.pull(build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False))
        input_ = 1 + out[None, :, t:t + 1]
    return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=75, help="frames (75 = 1 s at 24 kHz)")
    ap.add_argument("--codebooks", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frame-rate", type=float, default=75.0,
                    help="frames per second, for the real-time factors (75: the 24 kHz model)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the median is shown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = LMModel(32, 1024, num_layers=5, dim=200, past_context=262).eval()
    lm = load_lm(ref.state_dict(), 32, frame_rate=75)
    # Codes that the LM finds plausible are not needed for timing; random codes cost more bits.
    codes = torch.randint(0, 1024, (args.codebooks, args.frames))

    # Warm-up (first-call allocations, opencodec's one-time check of the BLAS rows), untimed.
    warm = codes[:, :20]
    official_decode(ref, official_ref.official_lm_segment_bytes(ref, warm), args.codebooks,
                    warm.shape[1])
    decode_segment_with_lm(lm, encode_segment_with_lm(lm, warm), args.codebooks, warm.shape[1])

    times: dict[str, list[float]] = {"oe": [], "ue": [], "od": [], "ud": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ref_bytes = official_ref.official_lm_segment_bytes(ref, codes)
        t1 = time.perf_counter()
        ours_bytes = encode_segment_with_lm(lm, codes)
        t2 = time.perf_counter()
        ref_codes = official_decode(ref, ref_bytes, args.codebooks, args.frames)
        t3 = time.perf_counter()
        ours_codes = decode_segment_with_lm(lm, ours_bytes, args.codebooks, args.frames)
        t4 = time.perf_counter()
        assert ours_bytes == ref_bytes, "bytes differ"
        assert torch.equal(ref_codes, codes) and torch.equal(ours_codes, codes)
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)

    seconds = args.frames / args.frame_rate
    print(provenance_line({"paper-size entropy model (random, seed 0)": ref}))
    print(f"{args.codebooks} codebooks x {args.frames} frames ({seconds:.1f} s of audio), "
          f"{torch.get_num_threads()} thread(s), {len(ours_bytes)} bytes (identical), "
          f"median of {args.repeats}")
    print(f"{'':8s} {'official s':>11s} {'official RTF':>13s} {'opencodec s':>12s} "
          f"{'opencodec RTF':>14s} {'ratio':>7s}")
    for label, a, b in (("encode", _median(times["oe"]), _median(times["ue"])),
                        ("decode", _median(times["od"]), _median(times["ud"]))):
        print(f"{label:8s} {a:11.3f} {a / seconds:13.3f} {b:12.3f} {b / seconds:14.3f} "
              f"{a / b:7.2f}x")
    ours_encode, ours_decode = _median(times["ue"]), _median(times["ud"])

    # The deterministic format's integer model (opencodec.entropy.fixed) on the same codes,
    # with the default checks of a 24 kHz file (8 bits every 75 frames + the final CRC-32).
    t5 = time.perf_counter()
    flm = fixed_lm_for(lm)
    t6 = time.perf_counter()
    det_bytes = encode_segment_fixed(flm, codes, check_bits=8, check_interval=75)
    t7 = time.perf_counter()
    det_codes = decode_segment_fixed(flm, det_bytes, args.codebooks, args.frames, check_bits=8,
                                     check_interval=75)
    t8 = time.perf_counter()
    assert torch.equal(det_codes, codes)
    print(f"deterministic (integer model, {len(det_bytes)} bytes incl. checks; conversion "
          f"{t6 - t5:.3f} s, one run): encode {t7 - t6:.3f} s "
          f"({ours_encode / (t7 - t6):.2f}x opencodec official-format), "
          f"decode {t8 - t7:.3f} s ({ours_decode / (t8 - t7):.2f}x)")


if __name__ == "__main__":
    main()
