"""Do exact-mode streamed codes equal ``model.encode`` of the whole signal? Measured on real audio.

    PYTHONPATH=src python benchmarks/probes/stream_vs_offline.py \
        --set data/small_24k/manifests --seconds 60 --chunks 320 24000

(the ``small`` corpus: ``python -m opencodec.data.corpus build --preset small --out data/``).

For each evaluation category (clean speech, music, general audio) the first items of its
manifest are joined into one signal of ``--seconds`` seconds at 24 kHz mono. Each model (the
bundled one, and the official 24 kHz architecture with seeded random weights) encodes it with
``model.encode`` and with an exact ``StreamingEncoder`` fed ``--chunks`` samples per push (320:
one frame per push, as live streaming does; 24000: the 1 s blocks the long-file path used
before it took ``ChunkedExactEncoder``), and with the long-file path's
:class:`~opencodec.longform.exact_encoder.ChunkedExactEncoder` fed 1 s blocks (its codes are
offline's own computation, chunk for chunk). The table gives the code frames whose codes differ,
and the codes that differ.

Why they can differ at all: the streamed encoder runs the same layers on the pieces it has, but
PyTorch picks its CPU kernels by input size (a convolution over a short piece sums in another
order than over the whole signal; so do the LSTM's products for one frame), so the latent
differs by about 1e-7 and a code whose two nearest codewords are that close flips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import official_ref  # noqa: E402  (the official architecture with seeded random weights)
from provenance import provenance_line  # noqa: E402

from opencodec.audio import convert_audio, read_audio  # noqa: E402
from opencodec.longform.exact_encoder import ChunkedExactEncoder  # noqa: E402
from opencodec.model import EncodecModel  # noqa: E402
from opencodec.pretrained import load_model  # noqa: E402
from opencodec.streaming import StreamingEncoder  # noqa: E402

CATEGORIES = ("eval_clean_speech", "eval_music", "eval_general")


def joined_signal(manifest: Path, seconds: float, rate: int = 24000) -> torch.Tensor:
    """The manifest's items in order, mono at ``rate``, joined and cut to ``seconds``: [1, T]."""
    pieces, total = [], 0
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        wav, sr = read_audio(manifest.parent / row["path"])
        pieces.append(convert_audio(wav, sr, rate, 1))
        total += pieces[-1].shape[-1]
        if total >= seconds * rate:
            break
    return torch.cat(pieces, -1)[..., : int(seconds * rate)]


def streamed_codes(model: EncodecModel, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Codes [K, F] of an exact ``StreamingEncoder`` fed ``chunk`` samples per push."""
    enc = StreamingEncoder(model, exact=True)
    parts = [enc.push(x[None, :, i:i + chunk]) for i in range(0, x.shape[-1], chunk)]
    return torch.cat(parts + [enc.flush()], -1)[0]


def chunked_exact_codes(model: EncodecModel, x: torch.Tensor, block: int) -> torch.Tensor:
    """Codes [K, F] of the long-file encoder fed ``block`` samples per push."""
    enc = ChunkedExactEncoder(model)
    parts = [enc.push(x[:, i:i + block]) for i in range(0, x.shape[-1], block)]
    codes = torch.cat(parts + [enc.finish()], -1)
    if enc.fallback_reason is not None:
        raise SystemExit(f"the long-file encoder fell back to streaming: {enc.fallback_reason}")
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, required=True, help="folder of the eval_*.jsonl manifests")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunks", type=int, nargs="+", default=[320, 24000])
    args = parser.parse_args()
    models = {"bundled": load_model(),
              "official 24 kHz (random)": official_ref.ours_from(
                  official_ref.make_official_model("encodec_24khz", seed=3), "encodec_24khz").eval()}
    for model in models.values():
        model.set_target_bandwidth(max(model.target_bandwidths))
    print(provenance_line(models=models))
    print()
    print("| category | model | encoder, samples per push | frames differing | codes differing |")
    print("|---|---|---|---|---|")
    for category in CATEGORIES:
        x = joined_signal(args.set / f"{category}.jsonl", args.seconds)
        for name, model in models.items():
            with torch.inference_mode():
                reference = model.encode(x[None])[0].codes[0]
            runs = [(f"StreamingEncoder, {chunk}", lambda chunk=chunk: streamed_codes(model, x, chunk))
                    for chunk in args.chunks]
            runs.append(("ChunkedExactEncoder, 24000", lambda: chunked_exact_codes(model, x, 24000)))
            for label, run in runs:
                differ = run() != reference
                print(f"| {category.removeprefix('eval_')} ({x.shape[-1] / 24000:.0f} s) | {name} | {label} | "
                      f"{int(differ.any(0).sum())} of {differ.shape[1]} | {int(differ.sum())} of {differ.numel()} |",
                      flush=True)


if __name__ == "__main__":
    main()
