"""Per-frame compute of streaming, exact mode against fast mode, in one process, on real speech.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream_frame_cost.py [--seconds 6] [--bandwidth 6]
        [--clock process|wall] [--frames-per-call 1]

For the official 24 kHz architecture (random weights, seed 0: no download) and the bundled
model, streams demo/sample_speech_fr.flac through ``StreamingEncoder`` then ``StreamingDecoder``
with ``exact=True`` and ``exact=False``, ``--frames-per-call`` frames per push (one frame =
320 samples = 13.3 ms), and prints per push the encode and decode time (p50 / p99, in ms per
frame) after the 7-frame warm-up, the share of code frames fast mode gives equal to exact mode
and the relative L2 difference of its audio; then the memory floor of one frame per call (the time to
read every weight of the encoder and decoder once). ``--clock process`` (default) times with
``time.process_time`` (the CPU time of this process: less disturbed by other work on a shared
machine, the right measure for "compute per frame" on one thread); ``wall`` with
``time.perf_counter``. The modes alternate stream by stream (``--repeats`` each) so drifts in
the machine's load hit both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.audio import convert_audio, read_audio
from opencodec.pretrained import load_model
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from provenance import provenance_line

REPO = Path(__file__).resolve().parent.parent


def official_architecture(bandwidth: float) -> EncodecModel:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.encodec_24khz())
    model.set_target_bandwidth(bandwidth)
    model.fold_weight_norm()
    return model


def bundled(bandwidth: float) -> EncodecModel:
    model = load_model("opencodec_24khz")
    model.set_target_bandwidth(bandwidth)
    return model


def run_stream(model: EncodecModel, x: torch.Tensor, exact: bool, per_call: int, clock: str
               ) -> tuple[list[float], list[float], torch.Tensor, torch.Tensor]:
    """Per-push encode and decode times (s per frame) after the warm-up, and the codes and audio."""
    tick = time.process_time if clock == "process" else time.perf_counter
    hop = model.hop_length
    enc, dec = StreamingEncoder(model, exact=exact), StreamingDecoder(model, exact=exact)
    enc_t: list[float] = []
    dec_t: list[float] = []
    codes, audio = [], []
    step = per_call * hop
    for i in range(0, x.shape[-1] - step + 1, step):
        t0 = tick()
        c = enc.push(x[..., i:i + step])
        t1 = tick()
        a = dec.push(c)
        t2 = tick()
        if i >= 8 * hop:  # past the warm-up (the first 7 frames come out together)
            enc_t.append((t1 - t0) / per_call)
            dec_t.append((t2 - t1) / per_call)
        codes.append(c)
        audio.append(a)
    codes.append(enc.flush())
    return enc_t, dec_t, torch.cat(codes, -1), torch.cat(audio, -1)


def weight_read_floor(model: EncodecModel, repeats: int = 30) -> tuple[float, float]:
    """(megabytes, ms): reading every encoder and decoder weight once (``sum`` of each tensor,
    a streaming read), the median of ``repeats``; the memory floor of one frame per call,
    which has to read every weight once per frame."""
    weights = [w.detach().clone() for w in list(model.encoder.parameters()) + list(model.decoder.parameters())]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for w in weights:
            w.sum()
        times.append(time.perf_counter() - start)
    return sum(w.numel() * w.element_size() for w in weights) / 1e6, p(times, 0.5)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--clock", choices=("process", "wall"), default="process")
    parser.add_argument("--frames-per-call", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="streams per mode and model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wav, sr = read_audio(REPO / "demo" / "sample_speech_fr.flac")
    x = convert_audio(wav, sr, 24000, 1)[None, :, :int(args.seconds * 24000)]
    models = {"encodec_24khz architecture (random, seed 0)": official_architecture(args.bandwidth),
              "opencodec_24khz (bundled)": bundled(args.bandwidth)}
    print(provenance_line(models))
    print(f"demo/sample_speech_fr.flac, {x.shape[-1] / 24000:.1f} s, {args.bandwidth:g} kbps, "
          f"{args.frames_per_call} frame(s) per push, {args.clock} time, {torch.get_num_threads()} thread(s); "
          f"ms per 13.3 ms frame")
    print("| model | mode | encode p50 | encode p99 | decode p50 | decode p99 | enc+dec p50 | frames equal | audio rel. L2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for name, model in models.items():
            times: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
            outs: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
            for _ in range(args.repeats):
                for exact in (True, False):
                    e, d, codes, audio = run_stream(model, x, exact, args.frames_per_call, args.clock)
                    times[exact][0].extend(e)
                    times[exact][1].extend(d)
                    outs[exact] = (codes, audio)
            (c1, a1), (c2, a2) = outs[True], outs[False]
            n = min(a1.shape[-1], a2.shape[-1])
            equal = float((c1 == c2).all(dim=1).float().mean())
            rel = float((a2[..., :n] - a1[..., :n]).norm() / a1[..., :n].norm())
            for exact in (True, False):
                e, d = times[exact]
                both = p([a + b for a, b in zip(e, d)], 0.5)
                extra = "" if exact else f" {100 * equal:.2f}% | {rel:.1e} |"
                print(f"| {name} | {'exact' if exact else 'fast'} | {p(e, .5):.2f} | {p(e, .99):.2f} | "
                      f"{p(d, .5):.2f} | {p(d, .99):.2f} | {both:.2f} |" + (extra or " | |"))
    print()
    print("Memory floor of one frame per call (every weight is read once per frame): reading the "
          "encoder's and decoder's weights once, median of 30")
    print("| model | weights MB | read once, ms | GB/s |")
    print("|---|---|---|---|")
    with torch.inference_mode():
        for name, model in models.items():
            mb, ms = weight_read_floor(model)
            print(f"| {name} | {mb:.1f} | {ms:.2f} | {mb / ms:.1f} |")


if __name__ == "__main__":
    main()
