"""The bottleneck LSTM, applied to convolutional layout [B, C, T] with a residual skip."""

from __future__ import annotations

import torch
from torch import nn


class StreamableLSTM(nn.Module):
    """Unidirectional LSTM over time with ``y = lstm(x) + x``: [B, C, T] -> [B, C, T].

    The LSTM is causal by nature; ``state`` lets a caller carry (h, c) across chunks.
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)
