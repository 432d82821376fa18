"""Streamed codes differ from ``model.encode``'s only at near-ties (README, Live streaming,
"Streamed codes"): the streaming encoder's latent is the offline one to ~1e-7, and wherever a
code differs, its two candidate codewords are equally near to within that rounding."""

from __future__ import annotations

from pathlib import Path

import torch

import official_ref
from opencodec.audio import convert_audio, read_audio
from opencodec.streaming import StreamingEncoder
from opencodec.streaming_layers import build_stream
from opencodec.threads import one_thread

SAMPLE = Path(__file__).resolve().parents[1] / "demo" / "sample_speech_fr.flac"


def test_streamed_codes_differ_only_at_near_ties() -> None:
    model = official_ref.ours_from(official_ref.make_official_model("encodec_24khz", seed=3),
                                   "encodec_24khz").eval()
    model.set_target_bandwidth(24.0)  # 32 codebooks: the late ones are near-tie prone
    wav, rate = read_audio(SAMPLE)
    x = convert_audio(wav, rate, 24000, 1)[None, :, : 24000 * 6]
    latents: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda mod, inp, out: latents.append(out.clone()))
    try:
        with torch.inference_mode():
            reference = model.encode(x)[0].codes[0]
    finally:
        hook.remove()
    offline = latents[0][0]  # [D, F], the latent model.encode quantised
    enc = StreamingEncoder(model, exact=True)
    streamed = torch.cat([enc.push(x[..., i:i + 320]) for i in range(0, x.shape[-1], 320)] + [enc.flush()], -1)[0]
    net = build_stream(model.encoder)  # the same layers, to read the streamed latent
    with torch.inference_mode(), one_thread():
        pieces = [net.push(x[..., i:i + 320]) for i in range(0, x.shape[-1], 320)] + [net.flush()]
    latent = torch.cat([p for p in pieces if p is not None], -1)[0]

    assert streamed.shape == reference.shape and latent.shape == offline.shape
    assert float((latent - offline).abs().max()) <= 1e-5 * float(offline.abs().max())
    differing = (streamed != reference).any(0).nonzero().flatten().tolist()
    assert len(differing) <= 0.01 * reference.shape[1]
    layers = model.quantizer.vq.layers
    for frame in differing:
        k = int((streamed[:, frame] != reference[:, frame]).nonzero()[0])  # the first codebook that differs
        residual = offline[:, frame] - sum(layers[j].codebook[reference[j, frame]] for j in range(k))
        book = layers[k].codebook
        first, second = book[reference[k, frame]], book[streamed[k, frame]]
        gap = abs(float(((first - residual) ** 2).sum() - ((second - residual) ** 2).sum()))
        # the quantiser computes |r|^2 - 2 r.e + |e|^2: its rounding is relative to these terms
        scale = float(residual.pow(2).sum() + max(first.pow(2).sum(), second.pow(2).sum()))
        assert gap <= 1e-5 * scale, (frame, k, gap, scale)
