"""The codec trainer's periodic validation (part 6 of :mod:`opencodec.train.solver`): SI-SNR and
mel distance per bandwidth and first-codebook usage on fixed held-out clips, and the
spectrogram images TensorBoard shows."""

from __future__ import annotations

import math
import typing as tp

import numpy as np
import torch

from ..model import EncodecModel
from .losses import mel_distance, si_snr


@torch.no_grad()
def validate(model: EncodecModel, items: list[torch.Tensor], device: torch.device,
             bandwidths: tp.Sequence[float]) -> dict[str, float]:
    """Mean SI-SNR (dB) and mel distance per bandwidth, and first-codebook usage.

    Usage is the fraction of the first codebook's entries used over all items at the
    lowest bandwidth, and the perplexity ``exp(entropy)`` of their distribution
    (1 = collapsed to a single code).
    """
    model.eval()
    out: dict[str, float] = {}
    first_codes = []
    for i, bw in enumerate(bandwidths):
        model.set_target_bandwidth(bw)
        snrs, mels = [], []
        for x in items:
            x = x.to(device)
            frames = model.encode(x)
            if i == 0:
                first_codes += [f.codes[0, 0].cpu() for f in frames]
            y = model.decode(frames)[:, :, : x.shape[-1]]
            snrs.append(si_snr(y, x).mean().item())
            mels.append(float(mel_distance(y, x, model.sample_rate)))
        out[f"si_snr/{bw:g}kbps"] = float(np.mean(snrs))
        out[f"mel_distance/{bw:g}kbps"] = float(np.mean(mels))
    counts = torch.bincount(torch.cat(first_codes), minlength=model.bins).double()
    p = counts[counts > 0] / counts.sum()
    out["codebook0/used_fraction"] = float((counts > 0).double().mean())
    out["codebook0/perplexity"] = math.exp(-(p * p.log()).sum().item())
    return out


def _spectrogram_image(x: torch.Tensor) -> torch.Tensor:
    """Log-power spectrogram of x [T] as an image [1, F, N] in [0, 1] (low frequencies at the bottom)."""
    spec = torch.stft(x.float().cpu(), 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-5))
    db = (db - db.max() + 80).clamp_min(0) / 80
    return db.flip(0)[None]
