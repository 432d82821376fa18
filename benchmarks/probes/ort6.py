import sys, time, json, statistics, torch, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from pathlib import Path
from multistream_capacity import official_random
from opencodec.export.onnx import export_onnx
import onnxruntime as ort
torch.set_num_threads(1)
out = Path(__import__("tempfile").gettempdir()) / "opencodec_probe_onnx_official"
m = official_random(); m.set_target_bandwidth(6.0)
if not (out / "meta.json").exists():
    export_onnx(m, out, force=True)
meta = json.loads((out / "meta.json").read_text())
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = {n: ort.InferenceSession(str(out / n), so, providers=["CPUExecutionProvider"]) for n in ("encoder_step.onnx", "decoder_step.onnx", "encoder_start.onnx", "decoder_start.onnx")}
W = meta["warmup_frames"]
for B in [int(b) for b in sys.argv[1].split(",")]:
    x = (0.1 * np.random.default_rng(0).standard_normal((B, 1, (W + 200) * 320))).astype(np.float32)
    es = sess["encoder_start.onnx"].run(None, {"audio": x[..., :W*320]})
    codes, est = es[0], es[1:]
    ds = sess["decoder_start.onnx"].run(None, {"codes": codes})
    dst = ds[1:]
    en = [i.name for i in sess["encoder_step.onnx"].get_inputs()]
    dn = [i.name for i in sess["decoder_step.onnx"].get_inputs()]
    ts = []
    for t in range(150):
        t0 = time.perf_counter()
        r = sess["encoder_step.onnx"].run(None, dict(zip(en, [x[..., (W+t)*320:(W+t+1)*320]] + list(est))))
        c, est = r[0], r[1:]
        r = sess["decoder_step.onnx"].run(None, dict(zip(dn, [c] + list(dst))))
        dst = r[1:]
        ts.append(time.perf_counter() - t0)
    ts = ts[20:]
    print(f"ORT B={B} tick p50 {1000*statistics.median(ts):.2f} p99 {1000*sorted(ts)[int(0.99*len(ts))]:.2f}", flush=True)
