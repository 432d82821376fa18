"""What one decode-mode message of ``opencodec serve`` costs in parsed packets (tracemalloc).

A message of one-frame packets at the bundled model's 1.5 kbps, cut to ``max_message_bytes``
(1 MiB, the default): parsed whole (``PacketParser().feed(message)``, what the server did
before it parsed in slices: ~50,000 packet objects, ~10 MiB), and parsed as the server parses
it now (``opencodec.serve.decode_input.parsed``: ``PARSE_SLICE`` bytes at a time, each packet
taken before the next slice is parsed). Prints the packets, the memory left held (parsed
whole: all of them) and the peak, in MiB, beyond the message itself.

Run from the repository root:
``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/probes/serve_message_memory.py``
"""

from __future__ import annotations

import tracemalloc

import torch

from opencodec.pretrained import load_model
from opencodec.serve.decode_input import PARSE_SLICE, parsed
from opencodec.stream import PacketParser, PacketWriter
from opencodec.stream.format import StreamInfo


def main() -> None:
    model = load_model()
    k = model.num_codebooks(1.5)
    writer = PacketWriter(StreamInfo.from_model(model, k, 1))  # one frame per packet
    message = bytes(writer.push(torch.zeros(k, 200_000, dtype=torch.long))[: 1 << 20])
    mib = 1 << 20

    tracemalloc.start()
    packets = PacketParser().feed(message)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"parsed whole: {len(message)} bytes -> {len(packets)} packets, "
          f"{held / mib:.1f} MiB held (peak {peak / mib:.1f} MiB)")
    del packets

    tracemalloc.start()
    count = 0
    for _packet in parsed(PacketParser(), message):  # taken one by one, as the server does
        count += 1
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"parsed in {PARSE_SLICE}-byte slices (the server): {count} packets, "
          f"{held / mib:.2f} MiB held (peak {peak / mib:.2f} MiB)")


if __name__ == "__main__":
    main()
