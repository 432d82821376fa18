import torch, time, sys, collections
from opencodec.pretrained import load_model
from opencodec.step import EncoderStep, DecoderStep
import opencodec.step_fast as sf
torch.set_num_threads(1)
model = load_model(sys.argv[1]); model.set_target_bandwidth(6.0)
B, F = int(sys.argv[2]), int(sys.argv[3])
enc_seg = eval(sys.argv[4]); dec_seg = eval(sys.argv[5]); M = int(sys.argv[6])

class Blocked(sf._Op):
    def __init__(self, ops, m):
        self.ops, self.m = ops, m
        self.specs = [s for op in ops for s in op.specs]
        self.n = len(self.specs)
    def run(self, x, states, out, tail):
        if states is None or tail or x.shape[0] < 2:
            for op in self.ops: x = op.run(x, states, out, tail)
            return x
        st = [next(states) for _ in range(self.n)]
        b = x.shape[0]; m = min(self.m, b); bounds = [b * i // m for i in range(m + 1)]
        ys, outs = [], []
        for i in range(m):
            a, e = bounds[i], bounds[i+1]
            it = iter([s[a:e] for s in st]); o = []
            y = x[a:e]
            for op in self.ops: y = op.run(y, it, o, tail)
            ys.append(y); outs.append(o)
        out += [torch.cat(parts) for parts in zip(*outs)]
        return torch.cat(ys)

def install(step, seg, m):
    root = step._net.root
    ops = root.ops
    a, e = seg
    if e > a:
        root.ops = ops[:a] + [Blocked(ops[a:e], m)] + ops[e:]
enc0 = EncoderStep(model, exact=False); dec0 = DecoderStep(model, exact=False)
enc1 = EncoderStep(model, exact=False); dec1 = DecoderStep(model, exact=False)
install(enc1, enc_seg, M); install(dec1, dec_seg, M)
hop = model.hop_length
def med(ts): ts = sorted(ts); return ts[len(ts)//2]*1e3
with torch.inference_mode():
    torch.manual_seed(0)
    codes, est = enc0.start(torch.randn(B, 1, hop*enc0.warmup_frames)*0.1)
    a, dst = dec0.start(codes)
    x = torch.randn(B, 1, hop*F)*0.1; cf = torch.randint(0, 1024, (B, codes.shape[1], F))
    r0 = enc0(x, *est); r1 = enc1(x, *est)
    assert all((u - v).abs().max() < 1e-4 for u, v in zip(r0[1:], r1[1:])) and (r0[0] == r1[0]).float().mean() > 0.99
    d0 = dec0(cf, *dst); d1 = dec1(cf, *dst)
    print('dec diff', max(float((u - v).abs().max()) for u, v in zip(d0, d1)))
    T = collections.defaultdict(list)
    for it in range(40):
        for name, f in (('enc0', lambda: enc0(x, *est)), ('enc1', lambda: enc1(x, *est)), ('dec0', lambda: dec0(cf, *dst)), ('dec1', lambda: dec1(cf, *dst))):
            t0 = time.perf_counter(); f(); T[name].append(time.perf_counter() - t0)
    print(f"B={B} F={F} M={M} enc {med(T['enc0']):.2f} -> {med(T['enc1']):.2f}   dec {med(T['dec0']):.2f} -> {med(T['dec1']):.2f}")
