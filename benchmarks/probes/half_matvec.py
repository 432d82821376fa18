"""One LSTM step's recurrent product (h [1, 512] times a 512 x 2048 weight, the official
LSTM's 4 MiB in float32) in float32, float16 and bfloat16: does storing the weight in half
precision make the memory-bound step faster on this CPU? Median of 5 runs of 1500 products."""
import time

import torch

torch.manual_seed(0)
weight, h = torch.randn(512, 2048), torch.randn(1, 512)
for _ in range(2):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w, x = weight.to(dtype), h.to(dtype)
        for _ in range(50):
            torch.mm(x, w)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(1500):
                torch.mm(x, w)
            times.append((time.perf_counter() - t0) / 1500)
        print(f"{str(dtype):15s} {1e6 * sorted(times)[2]:6.1f} us per product")
