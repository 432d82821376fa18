"""What the weights hash costs per file since it also sums the weights' bit patterns.

``weights_sha256(model)`` is called for every file written or read. It keeps its digest on the
model with a stamp of every tensor; the stamp now includes each tensor's bit-pattern sum
(``opencodec.weights_hash.weights_stamp``), so that a change made through ``.data`` or a numpy
view is seen. This prints, per model, the median time of:

* a cached ``weights_sha256`` call (what each file pays: the stamp, sums included);
* the stamp without the sums (what a cached call cost before);
* a full ``state_dict_sha256`` (what every call would cost without a cache);
* ``compress`` of 1 s of audio, for scale.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/probes/weights_stamp_cost.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import typing as tp

import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.compress import compress
from opencodec.pretrained import load_model
from opencodec.weights_hash import state_dict_sha256, weights_sha256


def _median_ms(call: tp.Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _versions_only(model: torch.nn.Module) -> tuple:
    """The stamp as it was before the sums: process id, and each tensor's name, address and
    version counter."""
    return (os.getpid(), *((k, t.data_ptr(), t._version) for k, t in model.state_dict().items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {"bundled (opencodec_24khz)": load_model("opencodec_24khz"),
              "official architecture, random weights": EncodecModel(EncodecConfig.encodec_24khz()).eval()}
    wav = 0.1 * torch.randn(1, 24000, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}; {torch.get_num_threads()} thread(s); median of {args.repeats}")
    print("| model | state-dict elements | cached weights_sha256 (ms) | stamp without sums (ms) | full sha256 (ms) "
          "| compress 1 s (ms) |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        weights_sha256(model)
        count = sum(t.numel() for t in model.state_dict().values())
        cached = _median_ms(lambda: weights_sha256(model), args.repeats)
        versions = _median_ms(lambda: _versions_only(model), args.repeats)
        full = _median_ms(lambda: state_dict_sha256(model.state_dict()), max(3, args.repeats // 5))
        coded = _median_ms(lambda: compress(model, wav, 6.0), max(3, args.repeats // 5))
        print(f"| {name} | {count / 1e6:.1f} M | {cached:.2f} | {versions:.2f} | {full:.1f} | {coded:.0f} |")


if __name__ == "__main__":
    main()
