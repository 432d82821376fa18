"""Streamable 1-d convolutions: causal or centred padding, weight norm or time group norm.

A "streamable" convolution pads its input so that the output has exactly
``ceil(T / stride)`` frames and every output frame depends on complete input
windows. For a kernel ``k`` (effective kernel ``(k - 1) * dilation + 1``) and a
stride ``s`` the fixed padding is ``k_eff - s``: a causal layer puts all of it on
the left, a non-causal one splits it (the extra sample of an odd split goes to the
left). Extra right padding then completes the last window::

    n_frames = (T - k_eff + padding_total) / s + 1
    extra    = (ceil(n_frames) - 1) * s + (k_eff - padding_total) - T

A transposed convolution produces ``(T - 1) * s + k`` samples; the ``k - s``
samples of overlap are trimmed (causal: all on the right).

Weight norm is parametrised as in ``torch.nn.utils.weight_norm`` (legacy), with
parameters ``weight_g`` and ``weight_v`` so that official checkpoints load with
their own key names. Time group norm is ``GroupNorm(1, C_out)`` after the conv.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("none", "weight_norm", "time_group_norm")


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding (samples) that makes the last window of a strided conv complete."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "reflect") -> torch.Tensor:
    """Pad the last axis of ``x`` [..., T]; reflect padding also works when T <= pad.

    Reflection needs more samples than the pad width, so a short input is first
    zero-padded on the right, reflected, and the zeros cut off again.
    """
    left, right = paddings
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = 0
    if length <= max_pad:
        extra = max_pad - length + 1
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class _WeightNorm(nn.Module):
    """Weight norm over all axes but the first: ``weight = g * v / ||v||`` (legacy
    ``torch.nn.utils.weight_norm`` naming: parameters ``weight_g``, ``weight_v``)."""

    def _init_weight_norm(self, conv: nn.Module) -> None:
        weight = conv.weight.detach()
        self.weight_g = nn.Parameter(torch.norm_except_dim(weight, 2, 0))
        self.weight_v = nn.Parameter(weight.clone())
        self.bias = conv.bias
        self._folded: torch.Tensor | None = None
        self._folded_key: tuple | None = None

    def _source_key(self) -> tuple | None:
        """What the folded weight was computed from: each of ``weight_v`` and ``weight_g``'s
        storage, in-place version, dtype and device (None for inference tensors, which have
        no version counter: then nothing is folded)."""
        try:
            return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (self.weight_v, self.weight_g))
        except RuntimeError:
            return None

    @property
    def weight(self) -> torch.Tensor:
        """Effective weight: the folded copy when inference folding is on, refreshed when
        ``weight_v`` or ``weight_g`` changed since (``load_state_dict``, an optimiser step,
        ``.to()``/``.double()``; not a change through ``.data``, which torch does not track:
        call ``fold()`` again then); computed afresh when a gradient may flow to them."""
        if self._folded is not None and not (torch.is_grad_enabled() and
                                             (self.weight_v.requires_grad or self.weight_g.requires_grad)):
            key = self._source_key()
            if key is not None:
                if key != self._folded_key:
                    self.fold()
                return self._folded
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def fold(self, enabled: bool = True) -> None:
        """Cache the effective weight for inference (``weight`` refreshes it when the weights
        change; ``enabled`` False drops it)."""
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor, even under inference_mode:
            self._folded = torch._weight_norm(self.weight_v, self.weight_g, 0).detach() if enabled else None
        self._folded_key = self._source_key() if enabled else None


class WeightNormConv1d(_WeightNorm):
    """``nn.Conv1d`` with weight norm: ``weight_g`` [C_out, 1, 1], ``weight_v`` [C_out, C_in, k],
    ``bias`` [C_out]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = (kernel_size,), (stride,), (dilation,)
        self._init_weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation)


class WeightNormConvTranspose1d(_WeightNorm):
    """``nn.ConvTranspose1d`` with weight norm over all axes but the input channels:
    ``weight_g`` [C_in, 1, 1], ``weight_v`` [C_in, C_out, k], ``bias`` [C_out]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (kernel_size,), (stride,)
        self._init_weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride)


class NormConv1d(nn.Module):
    """A conv (``self.conv``) followed by its normalisation (``self.norm``): x [B, C_in, T]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, norm: str = "none"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"conv norm must be one of {NORMS}, got {norm!r}")
        self.conv: nn.Module
        if norm == "weight_norm":
            self.conv = WeightNormConv1d(in_channels, out_channels, kernel_size, stride, dilation)
        else:
            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.norm: nn.Module = nn.GroupNorm(1, out_channels) if norm == "time_group_norm" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(nn.Module):
    """A transposed conv (``self.convtr``) followed by its normalisation (``self.norm``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 norm: str = "none"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"conv norm must be one of {NORMS}, got {norm!r}")
        self.convtr: nn.Module
        if norm == "weight_norm":
            self.convtr = WeightNormConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        else:
            self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.norm: nn.Module = nn.GroupNorm(1, out_channels) if norm == "time_group_norm" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class StreamableConv1d(nn.Module):
    """Conv1d with causal or centred padding so that [B, C_in, T] -> [B, C_out, ceil(T / stride)]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, causal: bool = False, norm: str = "none", pad_mode: str = "reflect"):
        super().__init__()
        if causal and norm == "time_group_norm":
            raise ValueError("time_group_norm normalises over the whole signal and cannot be causal")
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation, norm)
        self.causal = causal
        self.pad_mode = pad_mode
        self.kernel_size = (kernel_size - 1) * dilation + 1  # effective kernel
        self.stride = stride
        self.padding_total = self.kernel_size - stride

    def pads(self, length: int) -> tuple[int, int]:
        """(left, right) padding in samples for an input of ``length`` samples: causal, all of
        ``padding_total`` on the left; else split, the odd sample on the left; plus on the
        right the ``extra`` that makes the last window whole (:func:`extra_padding_for_conv1d`)."""
        extra = extra_padding_for_conv1d(length, self.kernel_size, self.stride, self.padding_total)
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(pad1d(x, self.pads(x.shape[-1]), self.pad_mode))


class StreamableConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims its fixed padding: [B, C_in, F] -> [B, C_out, F * stride]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = False, norm: str = "none"):
        super().__init__()
        if causal and norm == "time_group_norm":
            raise ValueError("time_group_norm normalises over the whole signal and cannot be causal")
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride, norm)
        self.causal = causal
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding_total = kernel_size - stride

    def trim(self) -> tuple[int, int]:
        """(left, right) samples trimmed from the transposed convolution's output: causal, all
        of ``padding_total`` on the right; else split, the odd sample on the left."""
        if self.causal:
            return 0, self.padding_total
        right = self.padding_total // 2
        return self.padding_total - right, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        left, right = self.trim()
        return y[..., left: y.shape[-1] - right]


def streamable_conv(layer: StreamableConv1d) -> nn.Conv1d:
    """The plain convolution inside ``layer``, or a ValueError naming why it cannot be streamed
    (not causal, normalised over time, grouped, or a pad mode without a causal form)."""
    if not layer.causal:
        raise ValueError("streaming needs causal convolutions")
    if not isinstance(layer.conv.norm, nn.Identity):
        raise ValueError("streaming does not support normalisation over time (time_group_norm)")
    conv = layer.conv.conv
    if getattr(conv, "groups", 1) != 1:
        raise ValueError("unsupported convolution (groups)")
    if layer.pad_mode not in ("reflect", "constant", "replicate"):
        raise ValueError(f"pad mode {layer.pad_mode!r} cannot be streamed")
    return conv


def streamable_convtr(layer: StreamableConvTranspose1d) -> nn.ConvTranspose1d:
    """The plain transposed convolution inside ``layer``, or a ValueError naming why it cannot
    be streamed (not causal, or normalised over time)."""
    if not layer.causal:
        raise ValueError("streaming needs causal transposed convolutions")
    if not isinstance(layer.convtr.norm, nn.Identity):
        raise ValueError("streaming does not support normalisation over time (time_group_norm)")
    return layer.convtr.convtr
