"""Could a batched encoder pass prove its codes equal to encoding each item alone?

``encode_batch`` runs one padded batch through other kernels than ``model.encode`` of one
item, so the latent of item b differs from its single-item latent by a rounding difference
``delta`` (a few 1e-7 of the latent's size), and a code flips where the nearest-codebook
decision is closer than that. A frame's decisions cannot flip while ``||delta||`` stays below
its *margin*: over the residual quantiser's levels, ``min_j (d_j - d_best) / (2 ||c_best -
c_j||)`` (the squared distance difference ``d_j - d_best`` is linear in the input, with
gradient ``2 (c_best - c_j)``, so that is the distance to the nearest decision boundary).

This probe encodes real speech cut into items of random lengths, as one batch and item by
item, and prints per item: the latent difference (max over frames of ``||delta||``, over the
item's largest frame norm), the smallest margin (same scale), the share of frames whose
margin is below 1e-4, 1e-5 and 1e-6 of that scale, and the code frames that differ.

If margins were far above the latent differences, a batched pass could check its own codes
and re-encode alone only the few items with a near-tie. They are not (session 22,
docs/BENCHMARKS.md "Tokenising throughput"): up to 0.9% (bundled model) and 1.9% (official
architecture, fitted codebooks) of an item's frames have a margin under 1e-6 of the scale,
while the differences are about 6e-8 and 2.5e-7 on this CPU: with a threshold of 1e-6 of the
scale, every item of about 5 s or more holds a frame that cannot be proved.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/probes/batch_code_margins.py --model opencodec_24khz
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/probes/batch_code_margins.py --model official
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # official_ref (fitted codebooks)

ROOT = Path(__file__).resolve().parents[2]


def margins(model: torch.nn.Module, latent: torch.Tensor, n_q: int) -> torch.Tensor:
    """Per frame of ``latent`` [D, F], the smallest distance (float64) to a decision boundary
    of the first ``n_q`` quantiser levels (the residual of each level from its best code)."""
    x = latent.double().t()
    out = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
    for layer in model.quantizer.vq.layers[:n_q]:
        codebook = layer.codebook.double()
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ codebook.t() + (codebook * codebook).sum(1)[None]
        best = dist.argmin(1)
        gap = dist - dist.gather(1, best[:, None])
        radius = gap / (2 * torch.cdist(codebook, codebook)[best])
        radius[torch.arange(x.shape[0]), best] = float("inf")
        out = torch.minimum(out, radius.min(1).values)
        x = x - codebook[best]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="opencodec_24khz",
                        help="a model name, or 'official' (24 kHz architecture, random weights, codebooks fitted)")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--audio", default=str(ROOT / "demo" / "sample_speech_fr.flac"))
    args = parser.parse_args()

    from opencodec import load_model
    from opencodec.audio import convert_audio, read_audio
    from opencodec.batching import _layers_with_lengths, encode_batch, encode_each
    from opencodec.model import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    if args.model == "official":
        import official_ref
        model = official_ref.fitted_codebooks(EncodecModel(EncodecConfig.encodec_24khz()), 1).eval()
    else:
        model = load_model(args.model).eval()
    model.set_target_bandwidth(args.bandwidth)
    wav, rate = read_audio(args.audio)
    wav = convert_audio(wav, rate, model.sample_rate, model.channels)
    rng = np.random.default_rng(args.seed)
    total = wav.shape[-1]
    lens = [int(rng.integers(model.sample_rate // 2, total)) for _ in range(args.items)]
    starts = [int(rng.integers(0, total - n + 1)) for n in lens]
    batch = torch.zeros(args.items, model.channels, max(lens))
    for i, (s, n) in enumerate(zip(starts, lens)):
        batch[i, :, :n] = wav[:, s: s + n]
    n_q = model.num_codebooks()
    with torch.inference_mode():
        together, _ = _layers_with_lengths(model.encoder.model, batch, lens)
        batched, alone = encode_batch(model, batch, lens), encode_each(model, batch, lens)
        print(f"{args.model}, {args.bandwidth:g} kbps ({n_q} codebooks), {args.items} items of {args.audio}")
        print("| item | seconds | frames | latent difference | smallest margin | margin < 1e-4 | < 1e-5 | < 1e-6 "
              "| code frames that differ |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, n in enumerate(lens):
            single = model.encoder(batch[i: i + 1, :, :n])[0]
            frames = single.shape[-1]
            scale = single.norm(dim=0).max()
            difference = float((together[i, :, :frames] - single).norm(dim=0).max() / scale)
            rel = margins(model, single, n_q) / scale.double()
            differ = int((batched.codes[i, :, :frames] != alone.codes[i, :, :frames]).any(0).sum())
            print(f"| {i} | {n / model.sample_rate:.2f} | {frames} | {difference:.1e} | {float(rel.min()):.1e} "
                  f"| {float((rel < 1e-4).double().mean()):.2%} | {float((rel < 1e-5).double().mean()):.2%} "
                  f"| {float((rel < 1e-6).double().mean()):.2%} | {differ} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
