"""Inference-only approximate fast paths for the SEANet encoder and decoder, channels-last.

Used by ``SEANetDecoder.forward`` when ``SEANetDecoder.exact = False``
(``EncodecModel.exact_decode = False``) and ``SEANetEncoder.forward`` when
``SEANetEncoder.exact = False`` (``EncodecModel.exact = False``), under the same conditions
as the bit-exact paths of :mod:`opencodec.modules.fast` (no autograd, eval mode, CPU float32),
whose weight cache and padding helpers they share.

The decoder is within 1e-5 relative L2 of the module's output (measured 3e-7 for the
24 kHz model's decode, 1.3e-6 for the 48 kHz one), the encoder within ~1e-6. Activations are
kept channels-last ([B, C, 1, T] with time-major memory): convolutions use the
channels-last kernels (another summation order, ~1e-7 relative), or for 1-2 output
channels one matrix product over the taps; kernel-1 convolutions are matrix products
with the bias fused (``addmm``; a residual block's two kernel-1 convs accumulate into
one output); the ELU before a padded convolution writes straight into the padded
buffer; ``GroupNorm(1, C)`` takes its statistics from the channels-first kernel (the
channels-last one is ~1e-6 off). The layers up to the LSTM run batched, the rest item by
item (cache-friendly); ``EncodecModel.decode`` then batches the 48 kHz model's segments.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .conv import StreamableConv1d, StreamableConvTranspose1d, pad1d
from .fast import (_cached, _cl_weight, _convtr_trim, _from_nwc, _nwc, _pads, _reflect_edges_, _to_cl,
                   decoder_forward_exact, encoder_forward_exact, weight_bias)
from .lstm import StreamableLSTM
from .seanet_blocks import SEANetResnetBlock

__all__ = ["decoder_forward_fast", "encoder_forward_fast"]


def _gemm_weight(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [C_in, C_out], bias) of a kernel-1 conv, for ``x [N, C_in] @ weight``."""
    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = weight_bias(conv)
        return weight[:, :, 0].t().contiguous(), bias
    return _cached(conv, "gemm", build)


def _group_norm_1_cl(norm: nn.GroupNorm, y: torch.Tensor) -> torch.Tensor:
    """``GroupNorm(1, C)`` of channels-last y [B, C, 1, T]. One group normalises all of an
    item's values, so the statistics come from the channels-first kernel run on the flat
    memory (PyTorch's channels-last kernel is ~1e-6 off in float32); the per-channel
    affine map is then one fused multiply-add over the time-major memory."""
    batch, channels = y.shape[0], y.shape[1]
    rows = _nwc(y.contiguous(memory_format=torch.channels_last))  # [B, T, C]
    _, mean, rstd = torch.native_group_norm(rows.reshape(batch, 1, -1), None, None, batch, 1,
                                            rows[0].numel(), 1, norm.eps)
    scale = rstd.view(batch, 1) * (norm.weight if norm.affine else torch.ones_like(rstd).expand(batch, channels))
    shift = -mean.view(batch, 1) * scale
    if norm.affine and norm.bias is not None:
        shift = shift + norm.bias
    return _from_nwc(torch.addcmul(shift[:, None], rows, scale[:, None]))


def _norm_cl(norm: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.Identity):
        return y
    if isinstance(norm, nn.GroupNorm) and norm.num_groups == 1:
        return _group_norm_1_cl(norm, y)
    return _to_cl(norm(y.squeeze(2).contiguous()))


def _is_pointwise(layer: StreamableConv1d) -> bool:
    """A kernel-1, stride-1 conv: no padding, a matrix product per time step."""
    return layer.kernel_size == 1 and layer.stride == 1


def _pointwise_cl(layer: StreamableConv1d, x: torch.Tensor) -> torch.Tensor:
    """Kernel-1 conv of channels-last x [B, C_in, 1, T] as ``addmm`` (bias fused)."""
    weight, bias = _gemm_weight(layer.conv.conv)
    rows = _nwc(x).reshape(-1, x.shape[1])
    y = torch.mm(rows, weight) if bias is None else torch.addmm(bias, rows, weight)
    return _norm_cl(layer.conv.norm, _from_nwc(y.view(x.shape[0], x.shape[-1], -1)))


def _narrow_weight(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [C_in, k * C_out] with column j * C_out + o = W[o, :, j], bias)."""
    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = weight_bias(conv)
        return weight.permute(1, 2, 0).reshape(weight.shape[1], -1).contiguous(), bias
    return _cached(conv, "narrow", build)


def _narrow_conv_cl(conv: nn.Module, buf: torch.Tensor, length: int) -> torch.Tensor:
    """Stride-1 conv with few outputs (k * C_out <= 32, e.g. the last conv to 1-2 audio
    channels) of the padded channels-last buf: one matrix product for all taps, then the k
    shifted tap columns summed. oneDNN is several times slower for so few outputs."""
    weight, bias = _narrow_weight(conv)
    out_channels, taps, dilation = conv.out_channels, conv.kernel_size[0], conv.dilation[0]
    batch, steps = buf.shape[0], buf.shape[-1]
    g = torch.mm(_nwc(buf).reshape(-1, buf.shape[1]), weight).view(batch, steps, taps, out_channels)
    y = g[:, :length, 0].clone()
    for j in range(1, taps):
        y += g[:, j * dilation: j * dilation + length, j]
    if bias is not None:
        y += bias
    return _from_nwc(y)


def _conv_cl(layer: StreamableConv1d, x: torch.Tensor, elu_alpha: float | None, owned: bool) -> torch.Tensor:
    """``layer(elu(x))`` (or ``layer(x)`` when ``elu_alpha`` is None) on channels-last x;
    ``owned``: x may be overwritten."""
    if _is_pointwise(layer):
        if elu_alpha is not None:
            x = F.elu(x, elu_alpha, inplace=owned)
        return _pointwise_cl(layer, x)
    conv = layer.conv.conv
    length = x.shape[-1]
    left, right = _pads(layer, length)
    if layer.pad_mode == "reflect" and length > max(left, right):
        buf = torch.empty(x.shape[0], x.shape[1], 1, left + length + right,
                          memory_format=torch.channels_last)
        inner = buf[..., left: left + length]
        if elu_alpha is None:
            inner.copy_(x)
        else:
            torch.ops.aten.elu.out(x, elu_alpha, 1.0, 1.0, out=inner)
        _reflect_edges_(buf, left, length, right)
    else:
        if elu_alpha is not None:
            x = F.elu(x, elu_alpha)
        buf = _to_cl(pad1d(x.squeeze(2), (left, right), layer.pad_mode))
    if layer.stride == 1 and conv.out_channels * layer.conv.conv.kernel_size[0] <= 32:
        y = _narrow_conv_cl(conv, buf, buf.shape[-1] - layer.kernel_size + 1)
    else:
        weight, bias = _cl_weight(conv)
        y = F.conv2d(buf, weight, bias, (1, conv.stride[0]), 0, (1, conv.dilation[0]))
    return _norm_cl(layer.conv.norm, y)


def _convtr_cl(layer: StreamableConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    convtr = layer.convtr.convtr
    weight, bias = _cl_weight(convtr)
    # The norm (time_group_norm) sees the untrimmed output, as in the module.
    y = _norm_cl(layer.convtr.norm, F.conv_transpose2d(x, weight, bias, (1, convtr.stride[0])))
    left, right = _convtr_trim(layer)
    y = y[..., left: y.shape[-1] - right]
    if y.shape[0] > 1:  # a time slice of a batch is no longer channels-last contiguous
        y = y.contiguous(memory_format=torch.channels_last)
    return y


def _lstm_cl(layer: StreamableLSTM, x: torch.Tensor) -> torch.Tensor:
    seq = _nwc(x).transpose(0, 1)  # [T, B, C]
    y, _ = layer.lstm(seq)
    if layer.skip:
        y += seq
    return _from_nwc(y.transpose(0, 1).contiguous())


def _resblock_cl(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block.shortcut(x) + block.block(x)`` on channels-last x. When both branches end
    in an unnormalised kernel-1 conv (EnCodec's blocks), the second product accumulates
    into the first (``addmm_``) with the two biases summed up front."""
    assert isinstance(block, SEANetResnetBlock)
    short, body = block.shortcut, list(block.block)
    last = body[-1] if body else None
    if (isinstance(short, StreamableConv1d) and _is_pointwise(short) and isinstance(short.conv.norm, nn.Identity)
            and isinstance(last, StreamableConv1d) and _is_pointwise(last)
            and isinstance(last.conv.norm, nn.Identity)):
        w_short, b_short = _gemm_weight(short.conv.conv)
        w_last, b_last = _gemm_weight(last.conv.conv)
        rows = _nwc(x).reshape(-1, x.shape[1])
        if b_short is None and b_last is None:
            acc = torch.mm(rows, w_short)
        else:
            bias = b_short if b_last is None else (b_last if b_short is None else b_short + b_last)
            acc = torch.addmm(bias, rows, w_short)
        h, _ = _run_cl(body[:-1], x, False)
        acc.addmm_(_nwc(h).reshape(-1, h.shape[1]), w_last)
        return _from_nwc(acc.view(x.shape[0], x.shape[-1], -1))
    short_y, short_owned = _run_cl([short], x, False)
    branch_y, branch_owned = _run_cl(body, x, False)
    if short_owned:
        return short_y.add_(branch_y)
    if branch_owned:
        return branch_y.add_(short_y)
    return short_y + branch_y


def _run_cl(layers: tp.Sequence[nn.Module], x: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
    """Apply ``layers`` to channels-last x; an ELU directly before a conv is fused into it.
    ``owned``: x may be overwritten. Returns the output and whether it is owned."""
    pending: float | None = None  # alpha of an ELU not applied yet

    def flush(x: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
        nonlocal pending
        if pending is not None:
            x, owned, pending = F.elu(x, pending, inplace=owned), True, None
        return x, owned

    for layer in layers:
        if isinstance(layer, nn.ELU):
            x, owned = flush(x, owned)
            pending = float(layer.alpha)
        elif isinstance(layer, StreamableConv1d):
            x, owned, pending = _conv_cl(layer, x, pending, owned), True, None
        else:
            x, owned = flush(x, owned)
            if isinstance(layer, StreamableConvTranspose1d):
                x, owned = _convtr_cl(layer, x), True
            elif isinstance(layer, SEANetResnetBlock):
                x, owned = _resblock_cl(layer, x), True
            elif isinstance(layer, nn.Sequential):
                x, owned = _run_cl(layer, x, owned)
            elif isinstance(layer, StreamableLSTM):
                x, owned = _lstm_cl(layer, x), True
            elif isinstance(layer, nn.Identity):
                pass
            else:  # unknown layer: run it channels-first
                x, owned = _to_cl(layer(x.squeeze(2))), True
    return flush(x, owned)


def encoder_forward_fast(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SEANet encoder x [B, C, T] -> latent [B, D, F], equal to ``encoder(x)`` up to float
    rounding (~1e-6 relative), computed channels-last as ``decoder_forward_fast`` (fused
    ELU + padding, kernel-1 convs and residual shortcuts as matrix products). An empty
    batch (B = 0) takes the exact path, which gives the [0, D, F] latent."""
    if x.shape[0] == 0:
        return encoder_forward_exact(encoder, x)
    return _run_cl(list(encoder.model), _to_cl(x), False)[0].squeeze(2).contiguous()


def decoder_forward_fast(decoder: nn.Module, z: torch.Tensor, batch_invariant: bool = False) -> torch.Tensor:
    """SEANet decoder z [B, D, F] -> audio [B, C, F * hop], within 1e-5 relative L2 of
    ``decoder(z)`` (~1e-6 measured), computed channels-last.

    The layers up to the LSTM run on the whole batch (the LSTM's cost per step barely grows
    with B); the upsampling stack after it runs item by item, so that one item's
    activations stay in cache. ``batch_invariant``: PyTorch's oneDNN LSTM rounds a batch of
    one differently from a batch of two or more (which all agree with each other), so a
    single item is decoded in a batch of two (a copy of itself), which makes every item's
    audio bitwise independent of what it is batched with (at the cost of a 2-item LSTM).
    An empty batch (B = 0) takes the exact path, which gives [0, C, F * hop] audio."""
    if z.shape[0] == 0:
        return decoder_forward_exact(decoder, z)
    layers = list(decoder.model)
    lstm_at = [i for i, layer in enumerate(layers) if isinstance(layer, StreamableLSTM)]
    split = lstm_at[-1] + 1 if lstm_at else 0
    batch = z.shape[0]
    if batch_invariant and batch == 1 and split:
        z = torch.cat([z, z])
    x, owned = _run_cl(layers[:split], _to_cl(z), True)
    if batch == 1:
        x = x if x.shape[0] == 1 else x[:1]  # the first item of a channels-last batch is contiguous
        return _run_cl(layers[split:], x, owned)[0].squeeze(2).contiguous()
    items = [_run_cl(layers[split:], x[b: b + 1].contiguous(memory_format=torch.channels_last), True)[0]
             for b in range(batch)]
    return torch.cat([y.squeeze(2) for y in items])
