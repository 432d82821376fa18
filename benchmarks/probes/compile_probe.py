import sys, time, statistics, torch, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from multistream_capacity import official_random
from opencodec.pretrained import load_model
from opencodec.step import EncoderStep, DecoderStep
torch.set_num_threads(1)
m = official_random() if sys.argv[1] == "official" else load_model(sys.argv[1])
m.set_target_bandwidth(6.0)
B, F = int(sys.argv[2]), int(sys.argv[3])
enc, dec = EncoderStep(m, exact=False), DecoderStep(m, exact=False)
hop = m.hop_length
with torch.inference_mode():
    x0 = 0.1 * torch.randn(B, 1, enc.warmup_frames * hop)
    codes, est = enc.start(x0); _, dst = dec.start(codes)
    x = 0.1 * torch.randn(B, 1, F * hop); cf = codes[..., :1].repeat(1,1,F).contiguous()
import torch._inductor.config as ic
ic.cpp_wrapper = True
ic.freezing = True
cenc = torch.compile(enc, dynamic=False, fullgraph=False)
cdec = torch.compile(dec, dynamic=False, fullgraph=False)
t0 = time.time()
with torch.no_grad():
    a = enc(x, *est); b = cenc(x, *est); cdec(cf, *dst)
print(f"compile {time.time()-t0:.1f} s; codes equal", bool((a[0] == b[0]).all()), "state diff", max(float((u - v).abs().max()) for u, v in zip(a[1:], b[1:])))
with torch.no_grad():
    T = {k: [] for k in ("eager enc", "comp enc", "eager dec", "comp dec")}
    fns = {"eager enc": lambda: enc(x, *est), "comp enc": lambda: cenc(x, *est), "eager dec": lambda: dec(cf, *dst), "comp dec": lambda: cdec(cf, *dst)}
    for f in fns.values():
        for _ in range(5): f()
    for it in range(60):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); T[k].append(time.perf_counter() - t0)
    print(" ".join(f"{k} {1000*statistics.median(v):.2f}" for k, v in T.items()))
