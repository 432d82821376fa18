import sys, time, statistics, torch
import torch.nn.functional as F
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from multistream_capacity import official_random
from opencodec.pretrained import load_model
from opencodec.step import EncoderStep, DecoderStep
import opencodec.step_fast as sf
torch.set_num_threads(1)
m = official_random() if sys.argv[1] == "official" else load_model(sys.argv[1])
m.set_target_bandwidth(6.0)
B, F_ = int(sys.argv[2]), int(sys.argv[3]); TH = int(sys.argv[4])
enc, dec = EncoderStep(m, exact=False), DecoderStep(m, exact=False)
hop = m.hop_length
orig = sf._elu
def hybrid(x, alpha, out=None):
    if x.numel() <= TH:
        return F.elu(x, alpha) if out is None else torch.ops.aten.elu.out(x, alpha, 1, 1, out=out)
    return orig(x, alpha, out)
with torch.inference_mode():
    codes, est = enc.start(0.1 * torch.randn(B, 1, enc.warmup_frames * hop)); _, dst = dec.start(codes)
    x = 0.1 * torch.randn(B, 1, F_ * hop); cf = codes[..., :1].repeat(1, 1, F_)
    T = {"orig": [], "hybrid": []}
    for it in range(200):
        for k, f in (("orig", orig), ("hybrid", hybrid)):
            sf._elu = f
            t0 = time.perf_counter(); enc(x, *est); dec(cf, *dst); T[k].append(time.perf_counter() - t0)
    print(f"B={B} F={F_} TH={TH}: " + "  ".join(f"{k} {1000*statistics.median(v):.3f} ms" for k, v in T.items()))
