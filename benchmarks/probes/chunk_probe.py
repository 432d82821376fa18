import torch, time, sys
from opencodec.pretrained import load_model
from opencodec.step import EncoderStep, DecoderStep
torch.set_num_threads(1)
torch.manual_seed(0)
name = sys.argv[1] if len(sys.argv) > 1 else "opencodec_24khz"
model = load_model(name) if name != "official" else None
if model is None:
    from opencodec.model import EncodecModel
    model = EncodecModel.encodec_model_24khz(pretrained=False) if hasattr(EncodecModel,'encodec_model_24khz') else None
model.set_target_bandwidth(6.0)
enc = EncoderStep(model, exact=False); dec = DecoderStep(model, exact=False)
hop = model.hop_length
def t(f, n=30):
    for _ in range(3): f()
    ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    ts.sort(); return ts[len(ts)//2]*1e3
with torch.inference_mode():
  for B in (16, 8):
    for F in (1, 4):
        x0 = torch.randn(B, 1, hop*enc.warmup_frames)*0.1
        codes, est = enc.start(x0)
        c0 = codes
        a, dst = dec.start(codes)
        x = torch.randn(B, 1, hop*F)*0.1
        cf = torch.randint(0, 1024, (B, codes.shape[1], F))
        def full_e(): enc(x, *est)
        def full_d(): dec(cf, *dst)
        def chunk_e(m):
            cb = B // m
            def f():
                for i in range(m):
                    enc(x[i*cb:(i+1)*cb], *[s[i*cb:(i+1)*cb] for s in est])
            return f
        def chunk_d(m):
            cb = B // m
            def f():
                for i in range(m):
                    dec(cf[i*cb:(i+1)*cb], *[s[i*cb:(i+1)*cb] for s in dst])
            return f
        r = [f"B={B} F={F}: enc full {t(full_e):.2f}"]
        for m in (2, 4): r.append(f"x{m} {t(chunk_e(m)):.2f}")
        r.append(f"| dec full {t(full_d):.2f}")
        for m in (2, 4): r.append(f"x{m} {t(chunk_d(m)):.2f}")
        print(" ".join(r), flush=True)
