"""Small random-weight causal models for the stream tests, with codebooks drawn from the
model's own latents so that the codes follow the audio.

(With codebook entries N(0, 0.5^2), as ``official_ref.random_codebooks`` gives, the latents
of such a small random encoder are all nearest to the same entry: every frame gets the same
codes whatever the input, and a stream test could not tell one signal from another.)
"""

from __future__ import annotations

import torch

from opencodec import EncodecConfig, EncodecModel


def tiny_stream_model(name: str, seed: int, **config: object) -> EncodecModel:
    """A causal 24 kHz model (hop 320, 4 codebooks of 64 entries, 0.9/1.8 kbps unless
    ``config`` says otherwise) whose codebook entries are residuals of its own latents of
    noise and tones, layer by layer as residual vector quantisation sees them."""
    torch.manual_seed(seed)
    cfg = dict(name=name, n_filters=8, dimension=32, n_q=4, bins=64, lstm=1,
               target_bandwidths=[0.9, 1.8])
    cfg.update(config)
    model = EncodecModel(EncodecConfig(**cfg))  # type: ignore[arg-type]
    return codebooks_from_latents(model, seed)


def codebooks_from_latents(model: EncodecModel, seed: int) -> EncodecModel:
    """Set every codebook of ``model`` to residuals of its own latents of noise and tones
    (layer by layer, as residual vector quantisation sees them); returns it in eval mode."""
    gen = torch.Generator().manual_seed(seed + 1000)
    n = 24000 * 2
    t = torch.arange(n) / 24000
    x = torch.cat([0.3 * torch.randn(1, 1, n, generator=gen),
                   0.4 * torch.sin(2 * torch.pi * (100 + 900 * t) * t)[None, None]], dim=-1)
    with torch.inference_mode():
        residual = model.encoder(x.expand(-1, model.channels, -1))[0].T.clone()  # [frames, D]
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            cb = layer._codebook
            bins, frames = cb.embed.shape[0], residual.shape[0]
            if bins <= frames:
                cb.embed.copy_(residual[torch.randperm(frames, generator=gen)[:bins]])
            else:  # more entries than latents (the 24 kHz model's 1024): jittered repeats
                pick = torch.randint(frames, (bins,), generator=gen)
                noise = torch.randn(bins, residual.shape[1], generator=gen)
                cb.embed.copy_(residual[pick] + 0.1 * residual.std() * noise)
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
            nearest = torch.cdist(residual, cb.embed).argmin(dim=1)
            residual = residual - cb.embed[nearest]
    model.eval()
    return model


def tiny_random_model() -> EncodecModel:
    """The long-file tests' small causal 24 kHz mono model (hop 320, 4 codebooks of 1024,
    1.5/3 kbps) with :func:`official_ref.random_codebooks` codebooks (seed 0)."""
    from official_ref import random_codebooks

    torch.manual_seed(0)
    cfg = EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=1, n_q=4, target_bandwidths=[1.5, 3.0])
    return random_codebooks(EncodecModel(cfg), 0).eval()
