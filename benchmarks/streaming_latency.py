"""Latency and speed of the stateful streaming encoder/decoder (``opencodec.streaming``).

Uses the 24 kHz architecture with random weights (no download, no official package):

    .venv/bin/python benchmarks/streaming_latency.py [--seconds 10] [--bandwidth 6] [--threads 1]

Prints a table with
* algorithmic latency, measured by pushing one sample (one code frame) at a time:
  the frame buffering (a code frame needs its 320 samples), the extra delay between a
  frame's last sample arriving and its codes / audio being emitted, and the warm-up at
  the start of a stream;
* compute time per 320-sample frame (median and p99) for encode and decode pushes, on
  ``--threads`` CPU threads;
* the real-time factor (compute time / audio duration) of a full-duplex stream
  (encode push -> decode push per 320-sample chunk), and offline encode+decode for reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from provenance import provenance_line


def build_model(bandwidth: float, seed: int = 0) -> EncodecModel:
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig.encodec_24khz())
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            cb = layer._codebook
            cb.embed.copy_(torch.randn(cb.embed.shape) * 0.5)
            cb.inited.fill_(1.0)
    model.set_target_bandwidth(bandwidth)
    model.fold_weight_norm()
    return model


def measure_latency(model: EncodecModel, frames: int = 12) -> dict[str, list[int]]:
    """Push one sample at a time (encoder) and one frame at a time (decoder).

    Returns, per code frame t, the number of input samples received when it was emitted
    (``enc``), and per decoder push the number of samples emitted (``dec``).
    """
    hop = model.hop_length
    x = 0.1 * torch.randn(1, model.channels, frames * hop)
    enc = StreamingEncoder(model)
    emitted_at: list[int] = []
    codes = []
    for n in range(x.shape[-1]):
        c = enc.push(x[..., n:n + 1])
        emitted_at += [n + 1] * c.shape[-1]
        codes.append(c)
    codes.append(enc.flush())
    allc = torch.cat(codes, -1)
    dec = StreamingDecoder(model)
    dec_out = [dec.push(allc[..., f:f + 1]).shape[-1] for f in range(allc.shape[-1])]
    return {"enc": emitted_at, "dec": dec_out}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def timed_duplex(model: EncodecModel, x: torch.Tensor, fast_lstm: bool
                 ) -> tuple[list[float], list[float], float]:
    """Stream x through encoder -> decoder in hop-sized chunks; per-push times and total (s)."""
    hop, n = model.hop_length, x.shape[-1]
    enc, dec = StreamingEncoder(model, fast_lstm=fast_lstm), StreamingDecoder(model)
    t_enc, t_dec = [], []
    with torch.inference_mode():
        for _ in range(2):  # warm the allocator / kernels
            dec.push(enc.push(x[..., :hop]))
        enc.reset()
        dec.reset()
        start = time.perf_counter()
        for pos in range(0, n, hop):
            t0 = time.perf_counter()
            c = enc.push(x[..., pos:pos + hop])
            t1 = time.perf_counter()
            dec.push(c)
            t2 = time.perf_counter()
            t_enc.append(t1 - t0)
            t_dec.append(t2 - t1)
        dec.push(enc.flush())
        dec.flush()
        total = time.perf_counter() - start
    return t_enc, t_dec, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the timed stream")
    parser.add_argument("--bandwidth", type=float, default=6.0, help="kbps (24 kHz model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.bandwidth)
    sr, hop = model.sample_rate, model.hop_length
    ms = 1000.0 / sr

    lat = measure_latency(model)
    enc_at, dec_out = lat["enc"], lat["dec"]
    first = enc_at[0]
    n_first = sum(1 for a in enc_at if a == first)
    steady = [a - (t + 1) * hop for t, a in enumerate(enc_at) if t >= n_first]
    dec_first = next(i for i, n in enumerate(dec_out) if n) + 1
    dec_steady = sorted(set(dec_out[dec_first:]))

    # Timed full-duplex streams, 320-sample chunks: exact encoder, then fast-LSTM encoder.
    n = int(args.seconds * sr) // hop * hop
    x = (0.3 * torch.randn(1, model.channels, n)).clamp(-1, 1)
    t_enc, t_dec, total = timed_duplex(model, x, fast_lstm=False)
    t_enc_fast, _, total_fast = timed_duplex(model, x, fast_lstm=True)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.decode(model.encode(x))
        offline = time.perf_counter() - t0
    # Per-frame compute in steady state (skip the warm-up pushes, which emit no frame
    # or several at once).
    skip = n_first
    enc_ms = [1000 * t for t in t_enc[skip:]]
    enc_fast_ms = [1000 * t for t in t_enc_fast[skip:]]
    dec_ms = [1000 * t for t in t_dec[skip:]]
    frame_ms = hop * ms
    seconds = n / sr

    rows = [
        ("model", f"encodec_24khz architecture, random weights, {args.bandwidth:g} kbps "
                  f"({model.num_codebooks()} codebooks), {args.threads} CPU thread(s)"),
        ("frame (buffering)", f"{hop} samples = {frame_ms:.2f} ms"),
        ("encoder: frame's last sample -> its codes (steady state)",
         f"{max(steady)} samples = {max(steady) * ms:.2f} ms (beyond the frame buffering)"),
        ("encoder warm-up (stream start)",
         f"first {n_first} code frames emitted together after {first} samples = {first * ms:.2f} ms "
         f"(frame 0 waits {first - hop} samples = {(first - hop) * ms:.2f} ms extra)"),
        ("decoder: code frame -> its audio (steady state)",
         f"0 frames; {'/'.join(map(str, dec_steady))} samples per pushed frame"),
        ("decoder warm-up (stream start)",
         f"first audio after {dec_first} code frames: {dec_out[dec_first - 1]} samples at once "
         f"({(dec_first - 1) * frame_ms:.2f} ms of codes waited for)"),
        ("duplex encode->decode warm-up",
         f"first audio when input sample {first} arrives ({first * ms:.2f} ms); after that each "
         f"{hop}-sample frame is output when its last sample arrives"),
        ("encode compute / frame (median, p99)",
         f"{statistics.median(enc_ms):.2f} ms, {percentile(enc_ms, 99):.2f} ms (bit-exact default)"),
        ("encode compute / frame, fast_lstm=True (median, p99)",
         f"{statistics.median(enc_fast_ms):.2f} ms, {percentile(enc_fast_ms, 99):.2f} ms"),
        ("decode compute / frame (median, p99)",
         f"{statistics.median(dec_ms):.2f} ms, {percentile(dec_ms, 99):.2f} ms"),
        ("duplex real-time factor (compute / audio)",
         f"{total / seconds:.3f} ({seconds:.1f} s of audio in {total:.2f} s, {hop}-sample chunks)"),
        ("duplex real-time factor, fast_lstm encoder", f"{total_fast / seconds:.3f}"),
        ("offline encode+decode real-time factor", f"{offline / seconds:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(provenance_line({"encodec_24khz (random, seed 0)": model}))
    print(f"| {'quantity'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
