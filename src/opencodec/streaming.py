"""Stateful chunk-by-chunk streaming for causal EnCodec models (e.g. ``encodec_24khz``).

    enc, dec = StreamingEncoder(model), StreamingDecoder(model)
    for chunk in chunks:                    # chunk [B, C, n], any n >= 0
        codes = enc.push(chunk)             # [B, K, f], f >= 0 new code frames
        audio = dec.push(codes)             # [B, C, m], m >= 0 new samples
        ...
    codes = enc.flush()                     # the last frames (end-of-signal padding)
    audio = dec.flush()

Concatenating every ``push`` output and the ``flush`` output gives exactly
``model.encode(whole)[0].codes`` for the encoder, and ``model.decode(...)`` of the
whole codes (trim to the input length) for the decoder, whatever the chunking.
``flush`` ends the stream and resets the object, so it can start a new stream.
Codes are bit-identical to ``model.encode`` run under ``torch.inference_mode()`` or
``torch.no_grad()`` (same kernels on the same values); the decoder uses a faster LSTM
kernel by default and matches ``model.decode`` to ~1e-7 (``fast_lstm`` switches).
``exact=False`` (or ``model.exact = False``) selects fast mode (:mod:`opencodec.streaming_fast`):
the same emission times, results equal up to float rounding.

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
  one call per chunk (see ``fast_lstm`` for the kernel choice).
* **Residual block**: ``shortcut(x) + block(x)``; the two branches may have
  different warm-ups, so each branch's outputs wait in a queue until the other
  branch has produced the same time steps (bounded by the warm-up difference).
* **Pointwise layers** (ELU, Identity, ...): stateless.
* **Quantiser**: residual VQ is per frame, applied to every new latent frame.

Latency (24 kHz model, hop 320): in steady state a code frame is emitted as soon as
the last sample of its 320-sample frame arrives, and the decoder emits its 320 samples
as soon as the code frame arrives. The warm-up is dominated by the kernel-7 convs at
the frame rate (the encoder's last conv and the decoder's first conv), whose reflected
left pad needs latent frames 1..6: the first 7 code frames come out together when
input sample 2239 arrives, and the decoder's first 7 x 320 samples come out together
once code frame 6 arrives (see ``benchmarks/streaming_latency.py``).

Memory is bounded by the kernel sizes and the chunk size, not by the stream length.
Weights (weight norm folded) are cached when the stream object is built: rebuild it
after changing the model's weights. All work runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .model import EncodecModel
from .modules.conv import StreamableConv1d, StreamableConvTranspose1d, extra_padding_for_conv1d, pad1d
from .modules.lstm import StreamableLSTM
from .modules.seanet import SEANetDecoder, SEANetEncoder, SEANetResnetBlock
from .streaming_fast import FastStreamDecoder, FastStreamEncoder

__all__ = ["StreamingEncoder", "StreamingDecoder", "algorithmic_delays"]

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
        if self.buf is None:
            self.raw = _cat(self.raw, x)
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
        self.shortcut = _build(block.shortcut)
        self.block = _build(block.block)
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


def _build(module: nn.Module, native_lstm: bool = False) -> _Stream:
    """Map a SEANet module to its streaming counterpart."""
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return _build(module.model, native_lstm)
    if isinstance(module, nn.Sequential):
        return _StreamSequential([_build(m, native_lstm) for m in module])
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


def _check_model(model: EncodecModel) -> None:
    cfg = model.config
    if not cfg.causal:
        raise ValueError(f"model {model.name!r} is not causal: streaming needs a causal model "
                         "(e.g. encodec_24khz); non-causal convolutions look into the future")
    if model.segment_length is not None or model.normalize:
        raise ValueError(f"model {model.name!r} segments or renormalises its input; "
                         "streaming needs a single-segment, unnormalised causal model")


class _Streaming:
    """What the streaming encoder and decoder share: the exact or fast network, the stream's
    batch size (fixed by its first push) and the empty output of a push that completes nothing."""

    def __init__(self, model: EncodecModel, net: nn.Module, fast_class: tp.Callable[[], tp.Any],
                 native_lstm: bool, exact: bool | None):
        _check_model(model)
        self.model = model
        self.exact = bool(getattr(model, "exact", True) if exact is None else exact)
        self.channels = model.channels
        self._fast: tp.Any = None
        with torch.inference_mode():
            if self.exact:
                self._net = _build(net, native_lstm=native_lstm)
            else:
                self._fast = fast_class()
        self.reset()

    def reset(self) -> None:
        """Drop all state and start a new stream."""
        if self._fast is not None:
            self._fast.reset()
        else:
            self._net.reset()
        self._proto: torch.Tensor | None = None
        self._reset_counts()

    def _reset_counts(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _empty(self) -> torch.Tensor:
        """[B, rows, 0] of the output's dtype (B: the stream's batch size, 0 before any push)."""
        batch = 0 if self._proto is None else self._proto.shape[0]
        device = None if self._proto is None else self._proto.device
        rows, dtype = self._empty_layout()
        return torch.empty(batch, rows, 0, dtype=dtype, device=device)

    def _empty_layout(self) -> tuple[int, torch.dtype]:  # pragma: no cover - interface
        raise NotImplementedError

    def _accept(self, x: torch.Tensor) -> None:
        """The first push fixes the batch size; later pushes must keep it."""
        if self._proto is None:
            self._proto = x
        elif x.shape[0] != self._proto.shape[0]:
            raise ValueError(f"batch size changed within a stream: {self._proto.shape[0]} -> {x.shape[0]}")


class StreamingEncoder(_Streaming):
    """Audio chunks [B, C, n] -> code frames [B, K, f], exactly equal to ``model.encode``.

    K is ``model.num_codebooks()`` when the encoder is built (set the bandwidth first).
    Batch size, channels, dtype and device are fixed by the first push of a stream.

    ``fast_lstm=True`` runs the bottleneck LSTM with PyTorch's native CPU kernel, ~3 ms
    less per frame on one thread for the 24 kHz model, but its outputs differ from the
    offline (oneDNN) LSTM by ~1e-7, so a code can in rare near-ties differ from
    ``model.encode``. The default (False) is bit-exact with ``model.encode`` run under
    ``torch.inference_mode()`` / ``torch.no_grad()`` (with autograd enabled PyTorch
    itself picks the native kernel).

    ``exact`` None (default): ``model.exact`` (True unless switched off).
    ``exact=False``: fast mode (:mod:`opencodec.streaming_fast`): whole frames through the
    fast time-major step, same emission times; codes equal exact mode's on >= 99.9% of
    frames of real audio (measured in tests/test_streaming_fast.py). ``fast_lstm`` is then unused.
    ``frames_per_call`` (fast mode): hold whole frames back until the total emitted reaches a
    multiple of it, so a consumer that sends ``frames_per_call`` frames per packet gets each
    packet as early as before while the network runs once per packet (its fixed cost per
    call, mostly reading the weights, is paid once); ``flush`` emits what is held back.
    """

    def __init__(self, model: EncodecModel, fast_lstm: bool = False, exact: bool | None = None,
                 frames_per_call: int = 1):
        self.num_codebooks = model.num_codebooks()
        super().__init__(model, model.encoder, lambda: FastStreamEncoder(model, align=frames_per_call),
                         fast_lstm, exact)

    def _reset_counts(self) -> None:
        self.samples_in = 0
        self.frames_out = 0

    def _empty_layout(self) -> tuple[int, torch.dtype]:
        return self.num_codebooks, torch.long

    def _codes(self, emb: Opt) -> torch.Tensor:
        if emb is None or emb.shape[-1] == 0:
            return self._empty()
        codes = self.model.quantizer.encode(emb, self.num_codebooks)
        self.frames_out += codes.shape[-1]
        return codes

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Feed ``chunk`` [B, C, n] (n >= 0); returns the code frames now complete, [B, K, f]."""
        if chunk.dim() != 3 or chunk.shape[1] != self.channels:
            raise ValueError(f"expected audio [B, {self.channels}, n], got {tuple(chunk.shape)}")
        self._accept(chunk)
        if chunk.shape[-1] == 0:
            return self._empty()
        self.samples_in += chunk.shape[-1]
        with torch.inference_mode():
            if self._fast is not None:
                return self._counted(self._fast.push(chunk))
            return self._codes(self._net.push(chunk))

    def _counted(self, codes: Opt) -> torch.Tensor:
        if codes is None or codes.shape[-1] == 0:
            return self._empty()
        self.frames_out += codes.shape[-1]
        return codes

    def flush(self) -> torch.Tensor:
        """End the stream: returns the last code frames (end-of-signal padding) and resets.

        In total ``ceil(samples / hop_length)`` frames come out of a stream.
        """
        with torch.inference_mode():
            if self._fast is not None:
                codes = self._counted(self._fast.flush())
            else:
                codes = self._codes(self._net.flush())
        self.reset()
        return codes


class StreamingDecoder(_Streaming):
    """Code frames [B, K, f] -> audio [B, C, m], equal to ``model.decode`` of the whole codes.

    ``flush`` ends the stream; the concatenated output has ``frames * hop_length``
    samples, to be trimmed to the signal length as with ``model.decode``.
    The LSTM uses PyTorch's native CPU kernel (``fast_lstm``, default True): ~4x
    faster for one step than oneDNN, equal to the offline decoder to ~1e-7.
    ``exact`` None (default): ``model.exact``. ``exact=False``: fast mode
    (:mod:`opencodec.streaming_fast`), audio within 1e-4 relative
    of exact mode on real audio (measured in tests/test_streaming_fast.py).
    """

    def __init__(self, model: EncodecModel, fast_lstm: bool = True, exact: bool | None = None):
        super().__init__(model, model.decoder, lambda: FastStreamDecoder(model), fast_lstm, exact)

    def _reset_counts(self) -> None:
        self.frames_in = 0
        self.samples_out = 0

    def _empty_layout(self) -> tuple[int, torch.dtype]:
        return self.channels, torch.get_default_dtype()

    def _audio(self, y: Opt) -> torch.Tensor:
        if y is None or y.shape[-1] == 0:
            return self._empty()
        self.samples_out += y.shape[-1]
        return y

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Feed code frames [B, K, f] (f >= 0); returns the audio now complete, [B, C, m]."""
        if codes.dim() != 3:
            raise ValueError(f"expected codes [B, K, f], got {tuple(codes.shape)}")
        self._accept(codes)
        if codes.shape[-1] == 0:
            return self._empty()
        self.frames_in += codes.shape[-1]
        with torch.inference_mode():
            if self._fast is not None:
                return self._audio(self._fast.push(codes))
            emb = self.model.quantizer.decode(codes)
            return self._audio(self._net.push(emb))

    def flush(self) -> torch.Tensor:
        """End the stream: returns the remaining audio and resets."""
        with torch.inference_mode():
            out = self._audio(self._fast.flush() if self._fast is not None else self._net.flush())
        self.reset()
        return out


def algorithmic_delays(model: EncodecModel) -> dict[str, int]:
    """Warm-up of the streaming encoder/decoder, measured by feeding one step at a time.

    Returns ``encoder_first_input`` (input samples received when the first code frame
    comes out), ``encoder_first_frames`` (how many come out then),
    ``decoder_first_input`` (code frames received when the first audio comes out) and
    ``decoder_first_samples``.
    """
    hop = model.hop_length
    enc = StreamingEncoder(model)
    x = torch.zeros(1, model.channels, 1)
    result: dict[str, int] = {}
    for n in range(1, 64 * hop):
        codes = enc.push(x)
        if codes.shape[-1]:
            result["encoder_first_input"] = n
            result["encoder_first_frames"] = codes.shape[-1]
            break
    enc.reset()
    dec = StreamingDecoder(model)
    c = torch.zeros(1, 1, 1, dtype=torch.long)
    for f in range(1, 64):
        audio = dec.push(c)
        if audio.shape[-1]:
            result["decoder_first_input"] = f
            result["decoder_first_samples"] = audio.shape[-1]
            break
    return result
