"""Per-frame latency of one stream: onnxruntime's exported step graphs against PyTorch.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/onnx_step_latency.py \
        [--frames 300] [--threads 1] [--audio demo/sample_speech_fr.flac]

For each model (the official 24 kHz architecture with random weights; the bundled
``opencodec_24khz``; both at 6 kbps) the model is exported with ``opencodec.export.onnx`` to a
temporary folder, and one stream of real speech is encoded and decoded frame by frame (one
320-sample frame = 13.33 ms of audio) by:

* ``StreamingEncoder.push`` / ``StreamingDecoder.push`` (opencodec's streaming, PyTorch);
* ``EncoderStep`` / ``DecoderStep`` (the explicit-state step that is exported, PyTorch);
* ``encoder_step.onnx`` / ``decoder_step.onnx`` under onnxruntime (CPU, ``--threads`` threads).

The table gives p50 and p99 of the time per frame (after the 7-frame warm-up) and how many
of the frames' codes agree with the PyTorch streaming encoder. ``--dry-run``: a tiny random
model, 20 frames.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from multistream_capacity import official_random, speech, tiny_random
from opencodec import EncodecModel
from opencodec.export.onnx import export_onnx
from opencodec.pretrained import load_model
from opencodec.step import DecoderStep, EncoderStep
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from provenance import provenance_line

REPO = Path(__file__).resolve().parent.parent


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(model: EncodecModel, x: torch.Tensor, threads: int) -> list[tuple[str, list[float], list[float], float]]:
    """Rows (runtime, encoder times, decoder times, fraction of code frames equal to streaming)."""
    import onnxruntime as ort

    hop, frames = model.hop_length, x.shape[-1] // model.hop_length
    rows = []
    with torch.inference_mode():
        enc, dec = StreamingEncoder(model), StreamingDecoder(model)
        te, td, ref = [], [], []
        for t in range(frames):
            start = time.perf_counter()
            c = enc.push(x[..., t * hop:(t + 1) * hop])
            mid = time.perf_counter()
            dec.push(c)
            end = time.perf_counter()
            ref.append(c)
            if t >= 7:
                te.append(mid - start)
                td.append(end - mid)
        ref_codes = torch.cat(ref, -1)
        rows.append(("PyTorch StreamingEncoder/Decoder", te, td, 1.0))
        estep, dstep = EncoderStep(model), DecoderStep(model)
        w = estep.warmup_frames
        c, es = estep.start(x[..., :w * hop])
        _, ds = dstep.start(c)
        te, td, got = [], [], [c]
        for t in range(w, frames):
            start = time.perf_counter()
            c, *es = estep(x[..., t * hop:(t + 1) * hop], *es)
            mid = time.perf_counter()
            _, *ds = dstep(c, *ds)
            te.append(mid - start)
            td.append(time.perf_counter() - mid)
            got.append(c)
        same = (torch.cat(got, -1) == ref_codes).all(1).float().mean().item()
        rows.append(("PyTorch EncoderStep/DecoderStep", te, td, same))
    with tempfile.TemporaryDirectory() as tmp:
        meta = export_onnx(model, tmp)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sess = {n: ort.InferenceSession(str(Path(tmp) / n), options, providers=["CPUExecutionProvider"])
                for n in ("encoder_start.onnx", "encoder_step.onnx", "decoder_start.onnx", "decoder_step.onnx")}
        en = [s["name"] for s in meta["state"]["encoder"]]
        dn = [s["name"] for s in meta["state"]["decoder"]]
        xn = x.numpy()
        c, *es = sess["encoder_start.onnx"].run(None, {"audio": xn[..., :w * hop]})
        _, *ds = sess["decoder_start.onnx"].run(None, {"codes": c})
        te, td, got = [], [], [c]
        for t in range(w, frames):
            start = time.perf_counter()
            c, *es = sess["encoder_step.onnx"].run(None, {"audio": xn[..., t * hop:(t + 1) * hop], **dict(zip(en, es))})
            mid = time.perf_counter()
            _, *ds = sess["decoder_step.onnx"].run(None, {"codes": c, **dict(zip(dn, ds))})
            te.append(mid - start)
            td.append(time.perf_counter() - mid)
            got.append(c)
        same = (torch.from_numpy(np.concatenate(got, -1)) == ref_codes).all(1).float().mean().item()
        rows.append((f"onnxruntime {ort.__version__} step graphs", te, td, same))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--audio", default=str(REPO / "demo" / "sample_speech_fr.flac"))
    parser.add_argument("--dry-run", action="store_true", help="tiny random model, 20 frames")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dry_run:
        models, frames, bandwidth = {"tiny random (dry run)": tiny_random()}, 20, 1.5
    else:
        models = {"encodec_24khz architecture (random weights)": official_random(),
                  "opencodec_24khz (bundled)": load_model("opencodec_24khz")}
        frames, bandwidth = args.frames, 6.0
    print(provenance_line(models))
    print(f"one stream, {frames} frames of speech ({bandwidth} kbps), ms per 320-sample frame (13.33 ms of audio)")
    print("| model | runtime | encode p50 | encode p99 | decode p50 | decode p99 | codes as streaming |")
    print("|---|---|---|---|---|---|---|")
    for name, model in models.items():
        model.set_target_bandwidth(bandwidth)
        x = speech(Path(args.audio), model, frames * model.hop_length / model.sample_rate)[None]
        for runtime, te, td, same in measure(model, x, args.threads):
            print(f"| {name} | {runtime} | {1000 * statistics.median(te):.2f} | {1000 * pct(te, 0.99):.2f} | "
                  f"{1000 * statistics.median(td):.2f} | {1000 * pct(td, 0.99):.2f} | {100 * same:.1f}% |")


if __name__ == "__main__":
    main()
