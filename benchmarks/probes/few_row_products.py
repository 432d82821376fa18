"""The official LSTM step's stacked product ([x, h] [M, 1024] times the 1024 x 2048 gate
weight, 8 MiB in float32) for M streams, through each CPU kernel PyTorch offers: ``addmm``
(MKL), oneDNN's prepacked ``_linear_pointwise`` (what the fast step uses from 2 rows on) and
MKL's packed GEMM (``mkl::_mkl_linear``, what ``torch.compile`` freezing uses), and ``addmm``
over 512-column blocks of the weight (2 MiB each, a core's L2 here). Twelve weights
are cycled so that each product reads its weight from L3, as in a multistream tick. Prints the
median microseconds per product and the packed kernel's relative difference from ``addmm``.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/probes/few_row_products.py [K N]
"""
import sys
import time

import torch

torch.set_num_threads(1)
torch.manual_seed(0)
K, N = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (1024, 2048)
CYCLE = 12
weights = [torch.randn(N, K) for _ in range(CYCLE)]  # [out, in], nn.Linear's layout
onednn = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
bias = torch.randn(N)


def blocked(x: torch.Tensor, i: int, width: int = 512) -> torch.Tensor:
    w = weights[i]
    return torch.cat([torch.addmm(bias[n:n + width], x, w[n:n + width].t()) for n in range(0, N, width)], 1)


def bench(fn, rows: int, repeats: int = 15) -> float:
    x = torch.randn(rows, K)
    for i in range(CYCLE):
        fn(x, i)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(CYCLE):
            fn(x, i)
        times.append((time.perf_counter() - t0) / CYCLE)
    return 1e6 * sorted(times)[len(times) // 2]


print(f"K={K} N={N}: weight {K * N * 4 / 2**20:.1f} MiB; us per product (median)")
for rows in (1, 2, 4, 6, 8, 12, 16, 24):
    mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, rows) for w in weights]
    x = torch.randn(rows, K)
    ref = torch.addmm(bias, x, weights[0].t())
    diff = ((torch.ops.mkl._mkl_linear(x, mkl[0], weights[0], bias, rows) - ref).norm() / ref.norm()).item()
    print(f"M={rows:2d}  addmm {bench(lambda x, i: torch.addmm(bias, x, weights[i].t()), rows):5.0f}"
          f"  onednn prepacked {bench(lambda x, i: torch.ops.mkldnn._linear_pointwise(x, onednn[i], bias, 'none', [], ''), rows):5.0f}"
          f"  mkl packed {bench(lambda x, i: torch.ops.mkl._mkl_linear(x, mkl[i], weights[i], bias, rows), rows):5.0f}"
          f"  addmm in blocks {bench(blocked, rows):5.0f}  (mkl packed vs addmm {diff:.1e})")
