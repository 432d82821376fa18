"""Multi-scale STFT (MS-STFT) discriminator of EnCodec (spec section 8).

Layout, checked against the official ``encodec/msstftd.py``
----------------------------------------------------------
For each scale (window ``n_fft`` in [2048, 1024, 512, 256, 128], hop ``n_fft // 4``):

1. Complex STFT of every audio channel: periodic Hann window of ``n_fft`` samples,
   ``center=False`` (no padding), divided by ``sqrt(sum(window^2))`` (torchaudio's
   ``normalized=True``). ``x`` [B, C, T] -> ``[B, C, F, N]`` with ``F = n_fft//2 + 1``
   bins and ``N = (T - n_fft) // hop + 1`` frames (inputs shorter than ``n_fft`` are
   zero-padded on the right to one frame).
2. Real and imaginary parts stacked as channels, reals first:
   ``[re_0 .. re_{C-1}, im_0 .. im_{C-1}]`` -> ``[B, 2C, F, N]``, then transposed to
   ``[B, 2C, N, F]``: **the image's height is time and its width is frequency**.
3. Conv2d(2C -> filters, (3, 9)), padding (1, 4).
4. Three Conv2d(filters -> filters, (3, 9), stride (1, 2), dilation (d, 1)) with
   ``d`` = 1, 2, 4, padding (d, 4): dilation acts on time, the stride halves the
   frequency axis each time (F -> ceil(F / 2)); time length is kept.
5. Conv2d(filters -> filters, (3, 3)), padding (1, 1).
6. Every conv above is followed by LeakyReLU(0.2) and its output is a feature map.
7. Final Conv2d(filters -> 1, (3, 3)), padding (1, 1), no activation: the logits
   ``[B, 1, N, F']`` with ``F' = ceil(ceil(ceil(F / 2) / 2) / 2)``.

All convolutions use weight norm (``torch.nn.utils.parametrizations.weight_norm``).
Difference from the official code: there the first conv (step 3) is built without
a norm (its ``NormConv2d`` defaults to ``norm='none'``); the paper and our spec say
weight norm everywhere, which is what we do (``weight_norm_first=False`` restores
the official arrangement). Parameter names are our own, not the official keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["STFTDiscriminator", "MultiScaleSTFTDiscriminator"]

FeatureMaps = list[torch.Tensor]


def _conv(in_ch: int, out_ch: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
          dilation: tuple[int, int] = (1, 1), norm: bool = True) -> nn.Module:
    """Conv2d with 'same' padding ``((k - 1) * d) // 2`` per axis, optionally weight-normed."""
    padding = tuple(((k - 1) * d) // 2 for k, d in zip(kernel, dilation))
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, dilation=dilation, padding=padding)
    return weight_norm(conv) if norm else conv


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator (see the module docstring for the layout).

    ``forward(x [B, C, T]) -> (logits [B, 1, N, F'], features: 5 maps [B, filters, N, F_l])``
    where ``N`` is the number of STFT frames (time) and ``F_l`` the frequency width
    after layer ``l``.
    """

    def __init__(self, n_fft: int, hop_length: int | None = None, in_channels: int = 1,
                 filters: int = 32, kernel_size: tuple[int, int] = (3, 9),
                 dilations: Sequence[int] = (1, 2, 4), stride: tuple[int, int] = (1, 2),
                 negative_slope: float = 0.2, weight_norm_first: bool = True) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length if hop_length is not None else n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        k_t = kernel_size[0]
        convs = [_conv(2 * in_channels, filters, kernel_size, norm=weight_norm_first)]
        convs += [_conv(filters, filters, kernel_size, stride=stride, dilation=(d, 1)) for d in dilations]
        convs.append(_conv(filters, filters, (k_t, k_t)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = _conv(filters, 1, (k_t, k_t))
        self.activation = nn.LeakyReLU(negative_slope)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, T] -> stacked real/imag normalised STFT ``[B, 2C, N, F]`` (time, freq)."""
        batch, channels, length = x.shape
        if length < self.n_fft:
            x = nn.functional.pad(x, (0, self.n_fft - length))
        window = self.window.to(x.dtype)
        spec = torch.stft(x.reshape(batch * channels, -1), self.n_fft, hop_length=self.hop_length,
                          win_length=self.n_fft, window=window, center=False, return_complex=True)
        spec = spec / window.pow(2).sum().sqrt()
        spec = spec.reshape(batch, channels, *spec.shape[-2:])
        return torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        """``x`` [B, C, T] -> (logits [B, 1, N, F'], list of feature maps)."""
        z = self.spectrogram(x)
        features: FeatureMaps = []
        for conv in self.convs:
            z = self.activation(conv(z))
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """MS-STFT discriminator: one :class:`STFTDiscriminator` per window size.

    ``forward(x [B, C, T]) -> (logits, features)``: ``logits[k]`` is ``[B, 1, N_k, F'_k]``
    (time frames, then frequency), ``features[k]`` the 5 feature maps of scale ``k``,
    in the order of ``n_ffts``. Hops default to ``n_fft // 4``.
    """

    def __init__(self, filters: int = 32, n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
                 hop_lengths: Sequence[int] | None = None, in_channels: int = 1,
                 negative_slope: float = 0.2, weight_norm_first: bool = True) -> None:
        super().__init__()
        hops = list(hop_lengths) if hop_lengths is not None else [n // 4 for n in n_ffts]
        if len(hops) != len(n_ffts):
            raise ValueError("one hop length per n_fft")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, h, in_channels, filters, negative_slope=negative_slope,
                              weight_norm_first=weight_norm_first)
            for n, h in zip(n_ffts, hops))

    @property
    def num_discriminators(self) -> int:
        """Number of scales."""
        return len(self.discriminators)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[FeatureMaps]]:
        """``x`` [B, C, T] waveform -> (list of logits, list of feature-map lists)."""
        logits, features = [], []
        for disc in self.discriminators:
            logit, fmap = disc(x)
            logits.append(logit)
            features.append(fmap)
        return logits, features
