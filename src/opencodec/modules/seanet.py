"""SEANet encoder and decoder (EnCodec's convolutional backbone).

Encoder: conv(C -> F, k7), then for each stride s in reversed(ratios) a residual
block, ELU and a strided conv (kernel 2s) that doubles the width; then the LSTM,
ELU and conv(-> dimension, k7). [B, C, T] -> [B, D, ceil(T / hop)], hop = prod(ratios).

Decoder mirrors it with transposed convs: [B, D, F] -> [B, C, F * hop].

The order of the layers inside ``self.model`` fixes the state-dict indices
(``encoder.model.0`` ... ``encoder.model.15`` for four ratios), which must match
the official checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import StreamableConv1d, StreamableConvTranspose1d
from .fast import decoder_forward_exact, encoder_forward_exact, fast_path_enabled
from .fast_cl import decoder_forward_fast, encoder_forward_fast
from .lstm import StreamableLSTM
from .seanet_blocks import SEANetConfig, SEANetResnetBlock

__all__ = ["SEANetConfig", "SEANetResnetBlock", "SEANetEncoder", "SEANetDecoder"]


class SEANetEncoder(nn.Module):
    """Waveform [B, channels, T] -> latent [B, dimension, ceil(T / hop_length)]."""

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        self.cfg = cfg
        self.hop_length = cfg.hop_length
        conv = dict(causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode)
        mult = 1
        layers: list[nn.Module] = [StreamableConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, **conv)]
        for ratio in reversed(cfg.ratios):
            width = mult * cfg.n_filters
            for j in range(cfg.n_residual_layers):
                layers.append(SEANetResnetBlock(width, cfg.residual_kernel_size, cfg.dilation_base ** j, cfg))
            layers += [nn.ELU(alpha=1.0),
                       StreamableConv1d(width, width * 2, ratio * 2, stride=ratio, **conv)]
            mult *= 2
        if cfg.lstm:
            layers.append(StreamableLSTM(mult * cfg.n_filters, num_layers=cfg.lstm))
        layers += [nn.ELU(alpha=1.0),
                   StreamableConv1d(mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)
        #: True: bitwise the plain computation; False: channels-last, ~1e-6 relative, faster.
        self.exact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path_enabled(self, x):  # inference: bitwise the same latent, less copying
            return encoder_forward_exact(self, x) if self.exact else encoder_forward_fast(self, x)
        return self.model(x)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, F] -> waveform [B, channels, F * hop_length].

    Without autograd (eval mode, CPU float32) ``forward`` runs a fast path: ``exact`` True
    (default, ``modules.fast``): bitwise the plain computation; False (``modules.fast_cl``):
    channels-last kernels, within 1e-5 relative L2 (~1e-6 measured), faster.
    ``batch_invariant`` (with ``exact`` False): make each item's output bitwise independent
    of the batch it is decoded in (a single item then costs a 2-item LSTM); segmenting models
    set it, so that decoding segments in batches gives exactly what decoding them one at a
    time gives.
    """

    def __init__(self, cfg: SEANetConfig):
        super().__init__()
        self.cfg = cfg
        self.hop_length = cfg.hop_length
        self.exact = True
        self.batch_invariant = False
        conv = dict(causal=cfg.causal, norm=cfg.norm, pad_mode=cfg.pad_mode)
        mult = 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [StreamableConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size, **conv)]
        if cfg.lstm:
            layers.append(StreamableLSTM(mult * cfg.n_filters, num_layers=cfg.lstm))
        for ratio in cfg.ratios:
            width = mult * cfg.n_filters
            layers += [nn.ELU(alpha=1.0),
                       StreamableConvTranspose1d(width, width // 2, ratio * 2, stride=ratio,
                                                 causal=cfg.causal, norm=cfg.norm)]
            for j in range(cfg.n_residual_layers):
                layers.append(SEANetResnetBlock(width // 2, cfg.residual_kernel_size, cfg.dilation_base ** j, cfg))
            mult //= 2
        layers += [nn.ELU(alpha=1.0),
                   StreamableConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size, **conv)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if fast_path_enabled(self, z):  # inference: bitwise the same (within 1e-5 relative with exact off)
            if self.exact:
                return decoder_forward_exact(self, z)
            return decoder_forward_fast(self, z, self.batch_invariant)
        return self.model(z)
