"""Products with a few rows and a large weight: ``addmm`` against ``opencodec.prepacked``.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/prepacked_products.py \
        [--rows 1,2,4,6,8,16] [--weights 16] [--repeats 30]

``--weights`` random float32 weights [512, 2048] (4 MiB each, the official 24 kHz
architecture's LSTM gates; 16 of them cycle through 64 MiB, more than the cache holds, as a
model's weights do in a streaming step) are multiplied in turn by ``rows`` x 512 inputs, with
``torch.addmm`` and with :class:`opencodec.prepacked.PrepackedWeight`; the table gives the
median time per product (microseconds) over ``--repeats`` passes, the two alternating pass
by pass, and the largest relative difference between them. One row goes to ``addmm`` in
both (the prepacked path is for several rows).
"""

from __future__ import annotations

import argparse
import time

import torch

from opencodec.prepacked import PrepackedWeight, prepacking_available
from provenance import provenance_line


def median_us(times: list[float], count: int) -> float:
    return 1e6 * sorted(times)[len(times) // 2] / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,2,4,6,8,16")
    parser.add_argument("--weights", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(512, 2048, generator=gen) / 512 ** 0.5 for _ in range(args.weights)]
    if not prepacking_available(weights[0]):
        raise SystemExit("this PyTorch build has no oneDNN prepacked products")
    packed = [PrepackedWeight(w) for w in weights]
    bias = torch.randn(2048, generator=gen)
    print(provenance_line())
    print(f"{args.weights} weights [512, 2048] float32 ({4 * args.weights} MiB) in turn; "
          f"median of {args.repeats} passes, microseconds per product")
    print("| rows | addmm | prepacked | addmm / prepacked | max rel. difference |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            x = torch.randn(rows, 512, generator=gen)
            plain_t: list[float] = []
            packed_t: list[float] = []
            for _ in range(args.repeats + 3):  # the first 3 passes warm up
                start = time.perf_counter()
                for w in weights:
                    torch.addmm(bias, x, w)
                mid = time.perf_counter()
                for p in packed:
                    p.addmm(bias, x)
                plain_t.append(mid - start)
                packed_t.append(time.perf_counter() - mid)
            plain_t, packed_t = plain_t[3:], packed_t[3:]
            diff = max(float((p.addmm(bias, x) - torch.addmm(bias, x, w)).norm() / torch.addmm(bias, x, w).norm())
                       for w, p in zip(weights, packed))
            a, b = median_us(plain_t, len(weights)), median_us(packed_t, len(weights))
            print(f"| {rows} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
