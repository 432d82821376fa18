import sys, torch, warnings
warnings.filterwarnings("ignore")
from _fast_steps import time_alternately, warm_steps
enc, dec, x, est, dst, codes = warm_steps(sys.argv)
F = int(sys.argv[3])
cf = codes[..., :F].contiguous() if codes.shape[-1] >= F else codes[..., :1].repeat(1, 1, F)
with torch.no_grad():
    tenc = torch.jit.freeze(torch.jit.trace(enc, (x, *est), check_trace=False).eval())
    tdec = torch.jit.freeze(torch.jit.trace(dec, (cf, *dst), check_trace=False).eval())
with torch.inference_mode():
    a = enc(x, *est); b = tenc(x, *est)
    print("codes equal", bool((a[0] == b[0]).all()), "state diff", max(float((u - v).abs().max()) for u, v in zip(a[1:], b[1:])))
    print(time_alternately({"eager enc": lambda: enc(x, *est), "jit enc": lambda: tenc(x, *est),
                            "eager dec": lambda: dec(cf, *dst), "jit dec": lambda: tdec(cf, *dst)}))
