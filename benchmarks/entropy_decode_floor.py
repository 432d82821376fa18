"""Lower bound on the time to decode one frame of official-format entropy-coded codes.

Usage: .venv/bin/python benchmarks/entropy_decode_floor.py [--codebooks 8] [--frames 300] [--threads 1]

Decoding official ``.ecdc`` files with the entropy model must, for every frame and in
order (frame t+1's probabilities need frame t's codes), give bitwise the official float32
probabilities, so it must run the official kernels: per layer the query, output and two
feed-forward products of one row, the new key/value row and the attention over the
window, and the output heads of every codebook with their softmax. This script times
*only those kernels*, frame after frame on random data (layer norms, GELU, the CDFs, the
coder and Python all cost extra), next to the official package decoding the same number
of frames. ``official s/frame / kernels s/frame``
is more than any implementation producing the official probabilities with these kernels
can reach on this machine; the products read all the weights every frame
(about 9.6 MB for the layers plus 0.8 MB per codebook), more than a core's caches hold.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import official_ref  # noqa: E402  (torchaudio stand-in before importing encodec)
from provenance import provenance_line  # noqa: E402
from encodec.model import LMModel  # noqa: E402
from encodec.quantization.ac import ArithmeticDecoder, build_stable_quantized_cdf  # noqa: E402


def kernels_per_frame(lm: LMModel, K: int, frames: int) -> float:
    """Seconds per frame for the kernels a bit-exact decoder cannot avoid: the one-row
    products, the attention over the frame's window (``min(t + 2, 263)`` keys, one query,
    8 heads) and the softmax of the heads' outputs in the official layout."""
    F = torch.nn.functional
    layers = lm.transformer.layers
    dim = layers[0].linear1.in_features
    heads = layers[0].self_attn.num_heads
    window = lm.transformer.past_context + 1
    heads_w = torch.cat([lin.weight for lin in lm.linears[:K]]).detach()
    heads_b = torch.cat([lin.bias for lin in lm.linears[:K]]).detach()
    x = torch.randn(1, 1, dim)
    pad = torch.randn(9, dim)   # the fewest rows MKL rounds like whole-window products (here)
    q = torch.randn(1, heads, 1, dim // heads)
    kv = torch.randn(1, heads, window, dim // heads)
    masks = [torch.zeros(1, 1, 1, n) for n in range(window + 1)]
    with torch.inference_mode():
        def frame(t: int) -> None:
            size = min(t + 2, window)
            for layer in layers:
                attn = layer.self_attn
                w_q, w_kv = attn.in_proj_weight.split([dim, 2 * dim])
                b_q, b_kv = attn.in_proj_bias.split([dim, 2 * dim])
                F.linear(x, w_q, b_q)
                torch.addmm(b_kv, pad, w_kv.t())
                F.scaled_dot_product_attention(q, kv[:, :, :size], kv[:, :, :size], masks[size])
                F.linear(x, attn.out_proj.weight, attn.out_proj.bias)
                h = F.linear(x, layer.linear1.weight, layer.linear1.bias)
                F.linear(h, layer.linear2.weight, layer.linear2.bias)
            logits = torch.addmm(heads_b, x.view(1, dim), heads_w.t())
            torch.softmax(logits.view(1, 1, K, -1).transpose(1, 2).permute(0, 3, 1, 2), dim=1)

        for t in range(20):
            frame(t)
        t0 = time.perf_counter()
        for t in range(frames):
            frame(t)
        return (time.perf_counter() - t0) / frames


def official_per_frame(lm: LMModel, K: int, frames: int) -> float:
    """Seconds per frame for the official decoder (codes coded by the official writer)."""
    codes = torch.randint(0, 1024, (K, frames))
    data = official_ref.official_lm_segment_bytes(lm, codes)
    dec = ArithmeticDecoder(io.BytesIO(data))
    states, offset = None, 0
    input_ = torch.zeros(1, K, 1, dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in range(frames):
            probas, states, offset = lm(input_, states, offset)
            got = [dec.pull(build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False))
                   for k in range(K)]
            input_ = 1 + torch.tensor(got).view(1, K, 1)
    return (time.perf_counter() - t0) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--codebooks", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--frames", type=int, default=300, help="frames (300 = 4 s at 75 Hz)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = LMModel(32, 1024, num_layers=5, dim=200, past_context=262).eval()
    print(provenance_line({"paper-size entropy model (random, seed 0)": lm}))
    print(f"paper-size entropy model, {args.frames} frames, {torch.get_num_threads()} thread(s)")
    print(f"{'codebooks':>9} {'official ms/frame':>18} {'kernels ms/frame':>17} {'max speed-up':>13}")
    for K in args.codebooks:
        official = official_per_frame(lm, K, args.frames)
        floor = kernels_per_frame(lm, K, args.frames)
        print(f"{K:9d} {official * 1e3:18.2f} {floor * 1e3:17.2f} {official / floor:12.1f}x")


if __name__ == "__main__":
    main()
