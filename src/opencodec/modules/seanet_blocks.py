"""The SEANet configuration and residual block, the pieces shared by the SEANet encoder and
decoder (:mod:`.seanet`) and their inference fast paths (:mod:`.fast`).

They live here, below both, so that :mod:`.fast` can recognise a residual block without
importing :mod:`.seanet` (which imports :mod:`.fast`): no import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .conv import StreamableConv1d


@dataclass
class SEANetConfig:
    """Sizes of the SEANet encoder/decoder. Defaults are EnCodec's."""

    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    norm: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    causal: bool = False
    pad_mode: str = "reflect"
    true_skip: bool = False
    compress: int = 2
    lstm: int = 2

    @property
    def hop_length(self) -> int:
        """Samples per latent frame: the product of the ratios."""
        return int(math.prod(self.ratios))


class SEANetResnetBlock(nn.Module):
    """``shortcut(x) + block(x)`` with block = ELU, conv(k, d -> d/compress), ELU, conv(1, -> d)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, cfg: SEANetConfig):
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.Sequential(
            nn.ELU(alpha=1.0),
            StreamableConv1d(dim, hidden, kernel_size, dilation=dilation, causal=cfg.causal,
                             norm=cfg.norm, pad_mode=cfg.pad_mode),
            nn.ELU(alpha=1.0),
            StreamableConv1d(hidden, dim, 1, causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode),
        )
        self.shortcut: nn.Module
        if cfg.true_skip:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = StreamableConv1d(dim, dim, 1, causal=cfg.causal, norm=cfg.norm,
                                             pad_mode=cfg.pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)
