import sys, torch, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from pathlib import Path
from multistream_capacity import official_random, run_streams, speech
torch.set_num_threads(1)
m = official_random(); m.set_target_bandwidth(6.0)
n = int(sys.argv[1]); ticks = int(sys.argv[2])
audio = speech(Path("demo/sample_speech_fr.flac"), m, seconds=(ticks + 20) * 320 / 24000 + 5)
with torch.inference_mode():
    times, _, _ = run_streams(m, audio, n, ticks, True, False)
print(f"p50 {1000*statistics.median(times):.2f} p99 {1000*sorted(times)[int(0.99*len(times))]:.2f}")
