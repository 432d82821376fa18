"""Data-dependent initialisation of a codec's convolutions (weight-norm style).

Why: with PyTorch's default initialisation every convolution of SEANet scales the standard
deviation of its input by about 0.6, so after the ~15 convolutions of the encoder the
latent of a fresh model is almost constant (temporal std ~1e-3 of the bias offsets) and
the decoder's output is tiny. Gradient descent needs a few hundred steps only to undo this,
and in that time the quantiser's k-means sees near-identical vectors and the first
codebook collapses to one code. On a GPU that is a small fraction of a run; on a CPU it is
the whole budget of a short run.

What: the initialisation of Salimans & Kingma (2016, "Weight Normalization", section 2.2):
run a batch of real audio through the model and, one convolution at a time in forward
order, rescale the convolution so that its output has zero mean and unit variance per
channel on that batch. With weight norm ``w = g * v / ||v||`` this only changes ``g`` and
the bias: for an output channel with mean ``m`` and standard deviation ``s``,
``g <- g / s`` and ``b <- (b - m) / s``. A transposed convolution's ``g`` is per input
channel, so it gets one common factor ``1 / s`` (``s`` over all outputs) and the per-channel
bias shift. The decoder's last convolution is scaled to the standard deviation of the input
audio instead of 1 (so that a fresh model's output already has the right loudness), with a
zero mean. In ``time_group_norm`` models each convolution is followed by a GroupNorm whose
output scale does not depend on the convolution's: there the GroupNorm's affine weight
and bias are rescaled instead (per channel, exactly as above).

The quantiser is bypassed (the decoder sees the encoder's output), so this can run before
the codebooks are initialised by k-means on the first training batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import EncodecModel
from ..modules.conv import NormConv1d, NormConvTranspose1d

__all__ = ["data_dependent_init"]


def _conv_layers(model: EncodecModel) -> list[nn.Module]:
    """The encoder's then the decoder's convolutions (``NormConv1d``/``NormConvTranspose1d``)
    in forward order."""
    return [m for part in (model.encoder, model.decoder) for m in part.modules()
            if isinstance(m, (NormConv1d, NormConvTranspose1d))]


def _inner(layer: nn.Module) -> nn.Module:
    return layer.conv if isinstance(layer, NormConv1d) else layer.convtr


@torch.no_grad()
def _rescale(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``layer``'s output ``(y - shift) * scale`` (``scale``/``shift`` [C_out])."""
    if isinstance(layer.norm, nn.GroupNorm):  # y = w * normalised + b: rescale w and b
        layer.norm.weight.mul_(scale)
        layer.norm.bias.copy_((layer.norm.bias - shift) * scale)
        return
    conv = _inner(layer)
    weight = conv.weight_g if hasattr(conv, "weight_g") else conv.weight
    if isinstance(layer, NormConvTranspose1d):  # g is per input channel: one common factor
        factor = scale.mean()
        weight.mul_(factor)
        conv.bias.copy_((conv.bias - shift) * factor)
    else:
        weight.mul_(scale.view(-1, 1, 1))
        conv.bias.copy_((conv.bias - shift) * scale)


@torch.no_grad()
def data_dependent_init(model: EncodecModel, wav: torch.Tensor, eps: float = 1e-5) -> None:
    """Rescale every convolution of ``model`` in place so that, on ``wav``, each outputs zero
    mean and unit variance per channel (the last decoder layer: the audio's std).

    Args:
        model: a freshly built codec (weights are changed in place).
        wav: a batch of real audio ``[B, C, T]`` at the model's sample rate (a few seconds in
            all is enough), on the model's device.
        eps: floor for the measured standard deviation.
    """
    layers = _conv_layers(model)
    target_last = float(wav.std().clamp_min(eps))
    was_training = model.training
    model.eval()  # no quantiser statistics, no dropout
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        captured["y"] = output

    try:
        for i, layer in enumerate(layers):
            handle = layer.register_forward_hook(hook)
            try:
                _forward_bypassing_quantizer(model, wav)
            finally:
                handle.remove()
            y = captured.pop("y")
            y = y.transpose(0, 1).reshape(y.shape[1], -1)  # [C_out, B*T]
            mean, std = y.mean(dim=1), y.std(dim=1).clamp_min(eps)
            if i == len(layers) - 1:  # the audio: zero mean, the input's loudness
                std = y.std().clamp_min(eps).expand_as(mean) / target_last
            _rescale(layer, 1.0 / std, mean)
            inner = _inner(layer)
            if getattr(inner, "_folded", None) is not None:
                inner.fold()
    finally:
        model.train(was_training)


def _forward_bypassing_quantizer(model: EncodecModel, wav: torch.Tensor) -> torch.Tensor:
    """Decoder(encoder(wav)) without quantisation: [B, C, T] -> [B, C, T'].

    Runs the layer stacks themselves (not any fused inference path), so that the hooks on
    the individual convolutions see their outputs."""
    return model.decoder.model(model.encoder.model(wav))
