import sys, time, statistics, threading, queue, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from multistream_capacity import official_random
from opencodec.step import EncoderStep
torch.set_num_threads(1)
m = official_random(); m.set_target_bandwidth(6.0)
enc = EncoderStep(m, exact=False)
hop = m.hop_length; W = enc.warmup_frames
CH = int(sys.argv[1])
torch.manual_seed(0)
x = 0.1 * torch.randn(1, 1, 750 * hop)
root = enc._net.root
split = next(i for i, op in enumerate(root.ops) if type(op).__name__ == "_LSTM")
opsA, opsB = root.ops[:split], root.ops[split:]
nA = sum(len(op.specs) for op in opsA)
def run_ops(ops, y, states, out):
    it = iter(states)
    for op in ops: y = op.run(y, it, out, False)
    return y
def serial():
    with torch.inference_mode():
        codes0, st = enc.start(x[..., :W*hop])
        sA, sB = st[:nA], st[nA:]
        outc = [codes0]
        for c in range(W, 750, CH):
            seg = x[..., c*hop:min(750, c+CH)*hop].transpose(1, 2).contiguous()
            o = []; y = run_ops(opsA, seg, sA, o); sA = o
            o = []; z = run_ops(opsB, y, sB, o); sB = o
            outc.append(enc._codes(z))
        return torch.cat(outc, -1)
def piped():
    q = queue.Queue(maxsize=4)
    with torch.inference_mode():
        codes0, st = enc.start(x[..., :W*hop])
    sA0, sB0 = st[:nA], st[nA:]
    def producer():
        torch.set_num_threads(1)
        with torch.inference_mode():
            sA = sA0
            for c in range(W, 750, CH):
                seg = x[..., c*hop:min(750, c+CH)*hop].transpose(1, 2).contiguous()
                o = []; y = run_ops(opsA, seg, sA, o); sA = o
                q.put(y)
            q.put(None)
    t = threading.Thread(target=producer); t.start()
    with torch.inference_mode():
        sB = sB0; outc = [codes0]
        while True:
            y = q.get()
            if y is None: break
            o = []; z = run_ops(opsB, y, sB, o); sB = o
            outc.append(enc._codes(z))
    t.join()
    return torch.cat(outc, -1)
with torch.inference_mode():
    ref = m.encode(x)[0].codes if hasattr(m.encode(x)[0], "codes") else None
a = serial(); b = piped()
print("serial==piped", bool((a == b).all()), "vs offline", None if ref is None else f"{100*float((a == ref[0]).all(0).float().mean()):.2f}% frames")
T = {"serial": [], "piped": []}
for it in range(5):
    for k, f in (("serial", serial), ("piped", piped)):
        t0 = time.perf_counter(); f(); T[k].append(time.perf_counter() - t0)
print(f"CH={CH}: " + "  ".join(f"{k} {statistics.median(v):.3f} s" for k, v in T.items()))
