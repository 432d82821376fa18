"""Residual vector quantiser: K codebooks, each quantising what the previous left over.

For a bandwidth of ``bw`` kbps the number of codebooks is
``n = max(1, floor(bw * 1000 / (log2(bins) * frame_rate)))``; e.g. at 75 Hz with
1024 bins each codebook costs 0.75 kbps, so 6 kbps uses 8 codebooks.
Codes are [B, K, T] (int64); decoding sums the K codebook vectors.
"""

from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass

import torch
from torch import nn

from .vq import VectorQuantization


@dataclass
class QuantizedResult:
    """Output of a training forward pass of the quantiser."""

    quantized: torch.Tensor  # [B, D, T], straight-through
    codes: torch.Tensor  # [B, K, T]
    bandwidth: float  # kbps actually used
    commitment_loss: torch.Tensor  # scalar, mean over layers


class ResidualVectorQuantization(nn.Module):
    """The stack of VQ layers (``layers.{i}``)."""

    def __init__(self, num_quantizers: int, **vq_kwargs: tp.Any):
        super().__init__()
        self.layers = nn.ModuleList([VectorQuantization(**vq_kwargs) for _ in range(num_quantizers)])


class ResidualVectorQuantizer(nn.Module):
    """RVQ over latents [B, D, T] with ``n_q`` codebooks of ``bins`` entries.

    ``detach_residual`` (training only) feeds each layer the residual computed from the
    *detached* quantised value, so every layer's commitment loss reaches the encoder
    (the reference leaves layers >= 2 without commitment gradient).
    """

    def __init__(self, dimension: int = 128, n_q: int = 32, bins: int = 1024, decay: float = 0.99,
                 kmeans_init: bool = True, kmeans_iters: int = 50, threshold_ema_dead_code: float = 2.0,
                 detach_residual: bool = True):
        super().__init__()
        self.dimension = dimension
        self.n_q = n_q
        self.bins = bins
        self.detach_residual = detach_residual
        self.vq = ResidualVectorQuantization(
            n_q, dim=dimension, codebook_size=bins, decay=decay, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code)

    def bandwidth_per_quantizer(self, frame_rate: float) -> float:
        """kbps one codebook costs at ``frame_rate`` frames per second."""
        return math.log2(self.bins) * frame_rate / 1000

    def num_quantizers_for_bandwidth(self, frame_rate: float, bandwidth: float | None = None) -> int:
        """Codebooks used for ``bandwidth`` kbps (all of them when None)."""
        if bandwidth is None or bandwidth <= 0:
            return self.n_q
        return min(self.n_q, int(max(1, math.floor(bandwidth / self.bandwidth_per_quantizer(frame_rate)))))

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Latent x [B, D, T] -> codes [B, n_q, T]."""
        residual = x
        codes = []
        for layer in self.vq.layers[: n_q or self.n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] (K <= n_q) -> latent [B, D, T] (sum of the K codebook vectors)."""
        if codes.shape[1] > self.n_q:
            raise ValueError(f"got {codes.shape[1]} codebooks, the quantiser has {self.n_q}")
        out = torch.tensor(0.0, device=codes.device)
        for k in range(codes.shape[1]):
            out = out + self.vq.layers[k].decode(codes[:, k])
        return out

    def forward(self, x: torch.Tensor, frame_rate: float, n_q: int | None = None,
                bypass: bool = False) -> QuantizedResult:
        """Training/eval pass on latents x [B, D, T] with ``n_q`` codebooks (all when None).

        ``bypass`` passes x through unquantised (codes -1, no commitment loss, codebooks
        untouched): a warm-up during which the encoder learns informative latents before
        the codebooks are initialised by k-means on them.
        """
        n_q = n_q or self.n_q
        # Nearest-neighbour search and EMA statistics stay in float32 under mixed precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward(x.float(), frame_rate, n_q, bypass)

    def _forward(self, x: torch.Tensor, frame_rate: float, n_q: int, bypass: bool) -> QuantizedResult:
        if bypass:
            codes = torch.full((x.shape[0], n_q, x.shape[-1]), -1, dtype=torch.long, device=x.device)
            return QuantizedResult(x, codes, n_q * self.bandwidth_per_quantizer(frame_rate),
                                   torch.zeros((), device=x.device))
        quantized_out = torch.zeros_like(x)
        residual = x
        codes, losses = [], []
        for layer in self.vq.layers[:n_q]:
            quantized, indices, commit = layer(residual)
            if self.training and self.detach_residual:
                # quantized is x + (q - x).detach(): its value is q, so subtract q itself.
                residual = residual - quantized.detach()
            else:
                residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(indices)
            losses.append(commit)
        bandwidth = n_q * self.bandwidth_per_quantizer(frame_rate)
        return QuantizedResult(quantized_out, torch.stack(codes, dim=1), bandwidth, torch.stack(losses).mean())
