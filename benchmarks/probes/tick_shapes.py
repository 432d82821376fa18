"""Where the official architecture's multistream tick goes, by kernel and input shape: the
torch profiler over a fast-mode run of N streams (its warm-up ticks, then 100 ticks; after an
unprofiled run), printing for the 35 costliest (kernel, shapes) pairs and the 15 costliest
kernels their calls, self time per call and share of the profiled self time. The profiler's
own overhead inflates small kernels; read the large ones' shares.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/probes/tick_shapes.py 6
"""
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from multistream_capacity import official_random, run_streams, speech  # noqa: E402

torch.set_num_threads(1)
model = official_random()
model.set_target_bandwidth(6.0)
streams = int(sys.argv[1]) if len(sys.argv) > 1 else 6
audio = speech(Path("demo/sample_speech_fr.flac"), model, seconds=(120 + 20) * 320 / 24000 + 5)
with torch.inference_mode():
    run_streams(model, audio, streams, 20, True, False)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        times, _, _ = run_streams(model, audio, streams, 100, True, False)
by_shape = prof.key_averages(group_by_input_shape=True)
total = sum(k.self_cpu_time_total for k in by_shape)
print(f"{streams} streams, {len(times)} timed ticks; profiled self time {total / 1e3:.0f} ms")
for k in sorted(by_shape, key=lambda k: -k.self_cpu_time_total)[:35]:
    print(f"{k.key:32s} {str(k.input_shapes)[:72]:72s} {k.count:5d} calls {k.self_cpu_time_total / k.count:7.1f} us"
          f" {100 * k.self_cpu_time_total / total:5.1f}%")
by_kernel = prof.key_averages()
print(f"kernel calls {sum(k.count for k in by_kernel)}")
for k in sorted(by_kernel, key=lambda k: -k.self_cpu_time_total)[:15]:
    print(f"{k.key:32s} {k.count:6d} calls {k.self_cpu_time_total / k.count:7.1f} us {100 * k.self_cpu_time_total / total:5.1f}%")
