"""The exact streaming layers: each SEANet layer as a state machine with ``push`` and ``flush``.

Used by :class:`~opencodec.streaming.StreamingEncoder` and
:class:`~opencodec.streaming.StreamingDecoder` in exact mode (:func:`build_stream` maps a
network to its streaming counterpart). Concatenating the outputs of every ``push`` and the
final ``flush`` equals the layer run offline on the whole input, bit for bit.

How exactness is obtained, layer by layer
-----------------------------------------
Every layer of the causal SEANet is mapped to a small state machine with
``push(x) -> y`` and ``flush() -> y``; a layer never sees the future beyond what
its offline computation needs.

* **Causal conv** (``StreamableConv1d``, effective kernel ``k``, stride ``s``,
  ``P = k - s``). Offline, the input x[0:L] is padded to
  ``x_pad = reflect_left(x, P) ++ x ++ reflect_right(x, e)`` with
  ``e = ceil(L/s)*s - L`` and output ``t`` is the dot product of the weights with
  ``x_pad[t*s : t*s + k]``. In ``x`` coordinates this window ends at ``(t+1)*s - 1``:
  output ``t`` is due as soon as input sample ``(t+1)*s - 1`` has arrived.
  The reflected left pad is ``x[P], x[P-1], ..., x[1]``, so nothing can be emitted
  until ``P + 1`` samples have arrived (the *warm-up*); ``max(P + 1, s)`` are
  awaited so that the offline code never takes its short-input path once started.
  State: the raw input during warm-up (< ``max(P+1, s)`` samples), then a buffer of
  the padded signal from the start of the next window (< ``k`` samples) plus at
  least ``s`` trailing input samples, so that ``flush`` can reflect the tail (the
  right pad needs the last ``e + 1 <= s`` samples). ``flush`` appends the right pad
  and emits the remaining windows; if the layer never left its warm-up (a signal
  shorter than the pad) it runs the offline layer on the whole (short) input.
* **Transposed conv** (``StreamableConvTranspose1d``, kernel ``k``, stride ``s``,
  causal: the ``k - s`` extra samples are trimmed on the right). Output sample
  ``n = sum_j W[n - j*s] x[j]`` over frames ``j*s <= n < j*s + k``; after frames
  ``0..F-1`` all samples ``n < F*s`` are final. State: the ``k - s`` partial sums
  (without bias) that overlap into the next frames. No warm-up, no look-ahead;
  ``flush`` drops the overlap (offline trims it).
* **LSTM** (``StreamableLSTM``): carries ``(h, c)`` of every layer, ``y = lstm(x) + x``;
  one call per chunk (see ``fast_lstm`` of :class:`~opencodec.streaming.StreamingEncoder` for
  the kernel choice).
* **Residual block**: ``shortcut(x) + block(x)``; the two branches may have
  different warm-ups, so each branch's outputs wait in a queue until the other
  branch has produced the same time steps (bounded by the warm-up difference).
* **Pointwise layers** (ELU, Identity, ...): stateless.
* **Quantiser**: residual VQ is per frame, applied to every new latent frame.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .modules.conv import StreamableConv1d, StreamableConvTranspose1d, extra_padding_for_conv1d, pad1d
from .modules.lstm import StreamableLSTM
from .modules.seanet import SEANetDecoder, SEANetEncoder, SEANetResnetBlock

__all__ = ["build_stream"]

Opt = tp.Optional[torch.Tensor]

_POINTWISE = (nn.ELU, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def _cat(a: Opt, b: Opt) -> Opt:
    """Concatenate along time; None means "no samples"."""
    if a is None or a.shape[-1] == 0:
        return b
    if b is None or b.shape[-1] == 0:
        return a
    return torch.cat([a, b], dim=-1)


class _Stream:
    """A streaming layer: ``push`` new input steps, ``flush`` at end of stream; None = nothing."""

    def push(self, x: torch.Tensor) -> Opt:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> Opt:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _StreamPointwise(_Stream):
    """Stateless element-wise layer (ELU, Identity, ...)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def push(self, x: torch.Tensor) -> Opt:
        return self.module(x)

    def flush(self) -> Opt:
        return None

    def reset(self) -> None:
        pass


class _StreamConv(_Stream):
    """Causal ``StreamableConv1d`` with a bounded buffer of past inputs (see module doc).

    ``raw``: input received during the warm-up; ``buf``: padded signal starting at the
    next window (index ``pos``) with >= ``s`` trailing samples kept for the end-of-signal
    reflection; ``length``: input samples received so far (needed for the right pad).
    """

    def __init__(self, layer: StreamableConv1d):
        if not layer.causal:
            raise ValueError("streaming needs causal convolutions")
        if not isinstance(layer.conv.norm, nn.Identity):
            raise ValueError("streaming does not support normalisation over time (time_group_norm)")
        conv = layer.conv.conv
        if getattr(conv, "groups", 1) != 1 or tuple(getattr(conv, "padding", (0,))) != (0,):
            raise ValueError("unsupported convolution (groups or built-in padding)")
        if layer.pad_mode not in ("reflect", "constant", "replicate"):
            raise ValueError(f"pad mode {layer.pad_mode!r} cannot be streamed")
        self.layer = layer
        self.weight = conv.weight.detach().clone()
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.dilation = int(conv.dilation[0])
        self.k = layer.kernel_size  # effective kernel
        self.s = layer.stride
        self.P = layer.padding_total
        self.mode = layer.pad_mode
        # Samples to wait for before the left pad can be built (exactly as offline).
        self.start_len = max(self.P + 1, self.s) if self.mode == "reflect" else 1
        self.keep = self.s  # trailing samples kept for the right-pad reflection
        self.reset()

    def reset(self) -> None:
        self.raw: Opt = None
        self.buf: Opt = None
        self.pos = 0
        self.length = 0

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.s, 0, self.dilation)

    def _emit(self) -> Opt:
        buf = self.buf
        assert buf is not None
        avail = buf.shape[-1] - self.pos
        if avail < self.k:
            return None
        n = (avail - self.k) // self.s + 1
        y = self._conv(buf[..., self.pos: self.pos + (n - 1) * self.s + self.k])
        self.pos += n * self.s
        cut = max(0, min(self.pos, buf.shape[-1] - self.keep))
        if cut:
            self.buf = buf[..., cut:]
            self.pos -= cut
        return y

    def push(self, x: torch.Tensor) -> Opt:
        self.length += x.shape[-1]
        if self.buf is None:  # ``x`` kept past this push is copied: the caller may reuse its buffer
            self.raw = x.clone() if self.raw is None else _cat(self.raw, x)
            assert self.raw is not None
            if self.raw.shape[-1] < self.start_len:
                return None
            self.buf = pad1d(self.raw, (self.P, 0), self.mode)
            self.raw, self.pos = None, 0
        else:
            self.buf = torch.cat([self.buf, x], dim=-1)
        return self._emit()

    def flush(self) -> Opt:
        try:
            if self.buf is None:
                # Never warmed up: the whole input is in ``raw``; compute it offline.
                return None if self.raw is None else self.layer(self.raw)
            extra = extra_padding_for_conv1d(self.length, self.k, self.s, self.P)
            if extra > 0:
                self.buf = pad1d(self.buf, (0, extra), self.mode)
            return self._emit()
        finally:
            self.reset()


class _StreamConvTr(_Stream):
    """Causal ``StreamableConvTranspose1d`` with overlap-add state of ``k - s`` samples."""

    def __init__(self, layer: StreamableConvTranspose1d):
        if not layer.causal:
            raise ValueError("streaming needs causal transposed convolutions")
        if not isinstance(layer.convtr.norm, nn.Identity):
            raise ValueError("streaming does not support normalisation over time (time_group_norm)")
        conv = layer.convtr.convtr
        if getattr(conv, "groups", 1) != 1 or tuple(getattr(conv, "padding", (0,))) != (0,) \
                or tuple(getattr(conv, "output_padding", (0,))) != (0,) \
                or tuple(getattr(conv, "dilation", (1,))) != (1,):
            raise ValueError("unsupported transposed convolution (groups, padding or dilation)")
        self.weight = conv.weight.detach().clone()
        self.bias = None if conv.bias is None else conv.bias.detach().clone().view(1, -1, 1)
        self.k = layer.kernel_size
        self.s = layer.stride
        self.reset()

    def reset(self) -> None:
        self.overlap: Opt = None  # partial sums [B, C_out, k - s] (no bias)

    def push(self, x: torch.Tensor) -> Opt:
        n = x.shape[-1]
        y = F.conv_transpose1d(x, self.weight, None, self.s)  # [B, C_out, (n-1)*s + k]
        if self.overlap is not None:
            m = self.overlap.shape[-1]
            y[..., :m] += self.overlap
        done = n * self.s
        self.overlap = y[..., done:]
        out = y[..., :done]
        return out + self.bias if self.bias is not None else out

    def flush(self) -> Opt:
        self.reset()  # causal: the overlap past the last frame is trimmed offline
        return None


class _StreamLSTM(_Stream):
    """``StreamableLSTM`` carrying the (h, c) state of every LSTM layer across chunks.

    ``native``: run PyTorch's native CPU LSTM kernel instead of oneDNN (mkldnn). For
    one time step per call the native kernel is ~4x faster, but it differs from the
    oneDNN kernel used by an offline ``inference_mode`` forward by ~1e-7, so it is only
    used where bit-exactness is not required (the decoder; the encoder on request).
    """

    def __init__(self, layer: StreamableLSTM, native: bool = False):
        self.native = native
        self.lstm = layer.lstm
        if self.lstm.bidirectional or self.lstm.batch_first:
            raise ValueError("streaming needs a unidirectional, time-first LSTM")
        self.skip = layer.skip
        self.reset()

    def reset(self) -> None:
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def push(self, x: torch.Tensor) -> Opt:
        xt = x.permute(2, 0, 1)  # [T, B, C]
        if self.native and xt.device.type == "cpu" and torch.backends.mkldnn.enabled:
            # Only the "enabled" switch (``mkldnn.flags`` would also reset TF32 settings).
            torch.backends.mkldnn.enabled = False
            try:
                y, self.state = self.lstm(xt, self.state)
            finally:
                torch.backends.mkldnn.enabled = True
        else:
            y, self.state = self.lstm(xt, self.state)
        if self.skip:
            y = y + xt
        return y.permute(1, 2, 0)

    def flush(self) -> Opt:
        self.reset()
        return None


class _StreamSequential(_Stream):
    """Layers in sequence: each layer's new outputs are pushed into the next one."""

    def __init__(self, layers: list[_Stream]):
        self.layers = layers

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def push(self, x: torch.Tensor) -> Opt:
        y: Opt = x
        for layer in self.layers:
            if y is None or y.shape[-1] == 0:
                return None
            y = layer.push(y)
        return y

    def flush(self) -> Opt:
        carry: Opt = None
        for layer in self.layers:
            out = layer.push(carry) if carry is not None and carry.shape[-1] > 0 else None
            carry = _cat(out, layer.flush())
        return carry


class _StreamResBlock(_Stream):
    """``shortcut(x) + block(x)`` with a queue per branch to align their time steps."""

    def __init__(self, block: SEANetResnetBlock):
        self.shortcut = build_stream(block.shortcut)
        self.block = build_stream(block.block)
        self.reset()

    def reset(self) -> None:
        self.shortcut.reset()
        self.block.reset()
        self.q_short: Opt = None
        self.q_block: Opt = None

    def _emit(self) -> Opt:
        if self.q_short is None or self.q_block is None:
            return None
        n = min(self.q_short.shape[-1], self.q_block.shape[-1])
        if n == 0:
            return None
        y = self.q_short[..., :n] + self.q_block[..., :n]
        self.q_short = self.q_short[..., n:] if self.q_short.shape[-1] > n else None
        self.q_block = self.q_block[..., n:] if self.q_block.shape[-1] > n else None
        return y

    def push(self, x: torch.Tensor) -> Opt:
        self.q_short = _cat(self.q_short, self.shortcut.push(x))
        self.q_block = _cat(self.q_block, self.block.push(x))
        return self._emit()

    def flush(self) -> Opt:
        self.q_short = _cat(self.q_short, self.shortcut.flush())
        self.q_block = _cat(self.q_block, self.block.flush())
        out = self._emit()
        if self.q_short is not None or self.q_block is not None:
            raise RuntimeError("residual branches produced different lengths")
        self.reset()
        return out


def build_stream(module: nn.Module, native_lstm: bool = False) -> _Stream:
    """Map a SEANet module to its streaming counterpart."""
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return build_stream(module.model, native_lstm)
    if isinstance(module, nn.Sequential):
        return _StreamSequential([build_stream(m, native_lstm) for m in module])
    if isinstance(module, StreamableConv1d):
        return _StreamConv(module)
    if isinstance(module, StreamableConvTranspose1d):
        return _StreamConvTr(module)
    if isinstance(module, StreamableLSTM):
        return _StreamLSTM(module, native_lstm)
    if isinstance(module, SEANetResnetBlock):
        return _StreamResBlock(module)
    if isinstance(module, _POINTWISE):
        return _StreamPointwise(module)
    raise ValueError(f"cannot stream layer {type(module).__name__}")
