import sys, time, torch, warnings
warnings.filterwarnings("ignore")
from _fast_steps import time_alternately, warm_steps
enc, dec, x, est, dst, codes = warm_steps(sys.argv)
F = int(sys.argv[3])
cf = codes[..., :1].repeat(1, 1, F).contiguous()
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
    print(time_alternately({"eager enc": lambda: enc(x, *est), "comp enc": lambda: cenc(x, *est),
                            "eager dec": lambda: dec(cf, *dst), "comp dec": lambda: cdec(cf, *dst)}))
