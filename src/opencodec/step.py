"""Streaming with EXPLICIT state: the causal codec as ``step(frame, state) -> (out, state)``.

    enc = EncoderStep(model)                          # an nn.Module; the state is a list of tensors
    codes, state = enc.start(audio[..., :W * hop])    # the first W = enc.warmup_frames frames
    codes, state = enc(audio[..., t*hop:(t+1)*hop], *state)   # then one frame (or n) at a time
    ...                                               # -> (codes [B, K, n], *new_state)
    dec = DecoderStep(model)
    audio, state = dec.start(codes[..., :W]); audio, *state = dec(codes_t, *state)

Run the steps under ``torch.inference_mode()`` (or ``torch.no_grad()``). Every piece of state is
a tensor with the batch first (``state_specs()`` names them and
gives their shape per row): a convolution's last input samples, an LSTM layer's ``h`` and
``c``, a transposed convolution's overlap. Streams are batched by stacking their states
along dimension 0 and separated by slicing it (:mod:`opencodec.multistream`); the same
``forward`` is what ONNX exports (:mod:`opencodec.export.onnx`). Every call checks its input
before the network runs: the encoder's audio as :class:`~opencodec.streaming.StreamingEncoder`
checks it (``InvalidAudioError``: the model's dtype, [B, C, n], finite samples; a NaN would
spoil the state for good), the decoder's codes as the streaming decoder does, and each state
tensor's shape, [B, *spec] with the input's B (``ValueError`` naming the tensor).

Why a separate ``start``: with reflect padding (the EnCodec models) the first output of a
convolution reflects the samples after its first input, ``x[P], ..., x[1]``; the last
kernel-7 convolution of the encoder (and the first of the decoder) runs at the frame rate,
so the first code frame needs latent frames 0..6: nothing can come out before
``warmup_frames`` (7 for the 24 kHz models) frames are in, and then all of them at once.
``start`` pads every layer's input on the left exactly as the offline forward does and
returns the state after those frames; every later call concatenates the state instead.
No constant initial state reproduces this (the padding depends on the signal), so the
state's initial value is ``start``'s output. Models with constant or replicate padding
need one frame (``warmup_frames`` = 1).

Exactness: ``start`` then ``forward`` frame by frame compute, layer by layer, the same
operations on the same values as :class:`~opencodec.streaming.StreamingEncoder` /
:class:`~opencodec.streaming.StreamingDecoder` pushed one frame at a time (the LSTM kernel
chosen by ``native_lstm`` as there), so at batch 1 codes and audio equal the streaming
encoder's and decoder's bit for bit (and ``model.encode``'s codes but for rare near-ties: see
:mod:`opencodec.streaming`); what changes across batch sizes is measured in
tests/test_multistream.py and the README. ``exact=False`` builds the fast path instead
(:mod:`opencodec.step_fast`: the same state, time-major, fewer kernels per frame; equal up to
float rounding, measured in tests/test_streaming_fast.py). ``finish`` ends an encoder stream whose length is
not a whole number of frames with the offline right padding (reflected samples), as
``model.encode`` pads.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .errors import InvalidAudioError
from .input_checks import check_audio_tensor, check_codes, check_finite, parameter_dtype_device
from .model import EncodecModel
from .streamability import streaming_problems
from .modules.conv import (StreamableConv1d, StreamableConvTranspose1d, pad1d, streamable_conv,
                           streamable_convtr)
from .modules.lstm import StreamableLSTM
from .modules.seanet import SEANetDecoder, SEANetEncoder
from .modules.seanet_blocks import SEANetResnetBlock
from .step_fast import FastNet, FastRVQ

__all__ = ["DecoderStep", "EncoderStep", "StateSpec", "check_streamable_model"]

_POINTWISE = (nn.ELU, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)

States = list[torch.Tensor]


class StateSpec(tp.NamedTuple):
    """One state tensor: its ``name`` and its ``shape`` per batch row (the tensor is [B, *shape])."""

    name: str
    shape: tuple[int, ...]


class _Op:
    """A layer with explicit state; ``run`` consumes its state tensors from ``states``."""

    specs: list[StateSpec] = []

    def run(self, x: torch.Tensor, states: tp.Iterator[torch.Tensor] | None, out: States,
            tail: bool) -> torch.Tensor:
        """``states`` None: the first call (initial padding); ``tail``: the end of the signal."""
        raise NotImplementedError


class _Pointwise(_Op):
    def __init__(self, module: nn.Module):
        self.module, self.specs = module, []

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        return self.module(x)


class _Conv(_Op):
    """Causal conv: state = the last ``keep`` samples of its (padded) input, [B, C_in, keep]."""

    def __init__(self, layer: StreamableConv1d, name: str):
        conv = streamable_conv(layer)
        self.weight = conv.weight.detach().clone()
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.dilation = int(conv.dilation[0])
        self.k, self.s, self.P, self.mode = layer.kernel_size, layer.stride, layer.padding_total, layer.pad_mode
        # The end-of-signal reflection needs up to s - 1 samples before the tail.
        self.keep = max(self.P, self.s - 1)
        self.specs = [StateSpec(name, (int(self.weight.shape[1]), self.keep))] if self.keep else []

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        if states is None:
            buf = pad1d(x, (self.P, 0), self.mode)
        elif self.keep:
            buf = torch.cat([next(states), x], dim=-1)
        else:
            buf = x
        if self.keep:
            out.append(buf[..., buf.shape[-1] - self.keep:])
        if tail:
            extra = (-x.shape[-1]) % self.s
            if extra:
                buf = pad1d(buf, (0, extra), self.mode)
        if self.keep > self.P:
            buf = buf[..., self.keep - self.P:] if states is not None else buf
        if buf.shape[-1] < self.k:
            return buf.new_zeros(buf.shape[0], self.weight.shape[0], 0)
        return F.conv1d(buf, self.weight, self.bias, self.s, 0, self.dilation)


class _ConvTr(_Op):
    """Causal transposed conv: state = the ``k - s`` partial sums (no bias) overlapping the next frame."""

    def __init__(self, layer: StreamableConvTranspose1d, name: str):
        conv = streamable_convtr(layer)
        self.weight = conv.weight.detach().clone()
        self.bias = None if conv.bias is None else conv.bias.detach().clone().view(1, -1, 1)
        self.k, self.s = layer.kernel_size, layer.stride
        self.m = self.k - self.s
        self.specs = [StateSpec(name, (int(self.weight.shape[1]), self.m))] if self.m else []

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        y = F.conv_transpose1d(x, self.weight, None, self.s)  # [B, C_out, (n - 1) * s + k]
        done = x.shape[-1] * self.s
        if self.m:
            if states is not None:
                y = torch.cat([y[..., :self.m] + next(states), y[..., self.m:]], dim=-1)
            out.append(y[..., done:])
        y = y[..., :done]
        return y + self.bias if self.bias is not None else y


class _LSTM(_Op):
    """LSTM with skip; state ``h`` and ``c`` as [B, layers, H] (batch first, unlike nn.LSTM)."""

    def __init__(self, layer: StreamableLSTM, name: str, native: bool):
        self.lstm, self.skip, self.native = layer.lstm, layer.skip, native
        if self.lstm.bidirectional or self.lstm.batch_first:
            raise ValueError("streaming needs a unidirectional, time-first LSTM")
        shape = (self.lstm.num_layers, self.lstm.hidden_size)
        self.specs = [StateSpec(f"{name}.h", shape), StateSpec(f"{name}.c", shape)]

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        xt = x.permute(2, 0, 1)  # [T, B, C]
        if states is None:
            zeros = x.new_zeros(self.lstm.num_layers, x.shape[0], self.lstm.hidden_size)
            hc = (zeros, zeros)
        else:
            hc = (next(states).transpose(0, 1).contiguous(), next(states).transpose(0, 1).contiguous())
        if self.native and xt.device.type == "cpu" and torch.backends.mkldnn.enabled \
                and not torch.jit.is_tracing():
            torch.backends.mkldnn.enabled = False  # PyTorch's native kernel (see streaming.py)
            try:
                y, (h, c) = self.lstm(xt, hc)
            finally:
                torch.backends.mkldnn.enabled = True
        else:
            y, (h, c) = self.lstm(xt, hc)
        out += [h.transpose(0, 1), c.transpose(0, 1)]
        if self.skip:
            y = y + xt
        return y.permute(1, 2, 0)


class _Seq(_Op):
    def __init__(self, ops: list[_Op]):
        self.ops = ops
        self.specs = [spec for op in ops for spec in op.specs]

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        for op in self.ops:
            x = op.run(x, states, out, tail)
        return x


class _Res(_Op):
    """``shortcut(x) + block(x)``: both branches emit the same steps once warmed up."""

    def __init__(self, short: _Op, block: _Op):
        self.short, self.block = short, block
        self.specs = short.specs + block.specs

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        a = self.short.run(x, states, out, tail)
        b = self.block.run(x, states, out, tail)
        return a + b


def _build(module: nn.Module, name: str, native_lstm: bool) -> _Op:
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return _build(module.model, name, native_lstm)
    if isinstance(module, nn.Sequential):
        return _Seq([_build(m, f"{name}.{i}", native_lstm) for i, m in enumerate(module)])
    if isinstance(module, StreamableConv1d):
        return _Conv(module, name)
    if isinstance(module, StreamableConvTranspose1d):
        return _ConvTr(module, name)
    if isinstance(module, StreamableLSTM):
        return _LSTM(module, name, native_lstm)
    if isinstance(module, SEANetResnetBlock):
        return _Res(_build(module.shortcut, f"{name}.shortcut", native_lstm),
                    _build(module.block, f"{name}.block", native_lstm))
    if isinstance(module, _POINTWISE):
        return _Pointwise(module)
    raise ValueError(f"cannot stream layer {type(module).__name__}")


def _warmup(op: _Op, rate: float) -> tuple[int, float]:
    """(frames needed before ``op``'s first output is final, its output rate), ``rate`` =
    input steps per frame: a reflect-padded conv needs P + 1 input steps in its first call."""
    if isinstance(op, _Seq):
        need = 1
        for sub in op.ops:
            n, rate = _warmup(sub, rate)
            need = max(need, n)
        return need, rate
    if isinstance(op, _Res):
        a, rate_a = _warmup(op.short, rate)
        b, _ = _warmup(op.block, rate)
        return max(a, b), rate_a
    if isinstance(op, _Conv):
        need = -(-(op.P + 1) // rate) if op.mode == "reflect" and op.P else 1
        return int(need), rate / op.s
    if isinstance(op, _ConvTr):
        return 1, rate * op.s
    return 1, rate


def _walk(op: _Op) -> tp.Iterator[_Op]:
    yield op
    children = op.ops if isinstance(op, _Seq) else [op.short, op.block] if isinstance(op, _Res) else []
    for child in children:
        yield from _walk(child)


def check_streamable_model(model: EncodecModel) -> None:
    """Raise ValueError unless ``model`` can be streamed (causal, one segment, no renormalising,
    no circular padding; the rule is :func:`opencodec.streamability.streaming_problems`)."""
    problems = streaming_problems(model.config)
    if "not_causal" in problems:
        raise ValueError(f"model {model.name!r} is not causal: streaming needs a causal model "
                         "(e.g. encodec_24khz); non-causal convolutions look into the future")
    if "circular_padding" in problems:
        raise ValueError(f"model {model.name!r} pads circularly (with the end of the signal): streaming "
                         "needs reflect, replicate or constant padding")
    if problems:
        raise ValueError(f"model {model.name!r} segments or renormalises its input; "
                         "streaming needs a single-segment, unnormalised causal model")


class _StepBase(nn.Module):
    """Common part of the encoder and decoder steps (weights copied, weight norm folded)."""

    def __init__(self, model: EncodecModel, net: nn.Module, prefix: str, native_lstm: bool, in_rate: int,
                 exact: bool = True):
        super().__init__()
        check_streamable_model(model)
        self.exact = bool(exact)
        self._net: _Op | FastNet
        if self.exact:
            with torch.no_grad():
                self._net = _build(net, prefix, native_lstm)
            self._specs = list(self._net.specs)
            self.warmup_frames = _warmup(self._net, in_rate)[0]
        else:
            self._net = FastNet(net, prefix)
            self._specs = [StateSpec(name, shape) for name, shape in self._net.specs]
            self.warmup_frames = self._net.warmup(in_rate)
        self.hop_length = model.hop_length
        self.sample_rate = model.sample_rate
        self.channels = model.channels
        self._dtype = parameter_dtype_device(model)[0]
        # Registered so that ``to()``, tracing and ONNX export see the LSTM weights.
        self._lstms = nn.ModuleList(op.lstm for op in _walk(self._net) if isinstance(op, _LSTM))

    def state_specs(self) -> list[StateSpec]:
        """Name and per-row shape of every state tensor, in the order ``forward`` takes them."""
        return list(self._specs)

    def _check_state(self, batch: int, states: tp.Sequence[torch.Tensor]) -> None:
        """``ValueError`` naming the first state tensor that is not a tensor [batch, *shape] of
        its spec (a state of another stream, batch size or mode: exact and fast states are
        laid out differently). Shapes only, and not while tracing (no graph operation)."""
        if len(states) != len(self._specs):
            raise ValueError(f"expected {len(self._specs)} state tensors, got {len(states)}")
        if torch.jit.is_tracing():
            return
        for i, (spec, state) in enumerate(zip(self._specs, states)):
            want = (batch, *spec.shape)
            if not isinstance(state, torch.Tensor) or tuple(state.shape) != want:
                got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
                raise ValueError(f"state tensor {i} ({spec.name}): expected shape {want} (batch {batch}, "
                                 f"as the input's), got {got}; pass the state the previous step returned")

    def _run(self, x: torch.Tensor, states: tp.Sequence[torch.Tensor] | None, tail: bool = False
             ) -> tuple[torch.Tensor, States]:
        if states is not None:
            self._check_state(x.shape[0], states)
        out: States = []
        y = self._net.run(x, None if states is None else iter(states), out, tail)
        return y, out


class EncoderStep(_StepBase):
    """Audio frames [B, C, n * hop] + state -> codes [B, K, n] + new state (K fixed when built).

    ``native_lstm`` False (default): oneDNN LSTM as ``model.encode`` (at batch 1 bitwise the streaming encoder).
    ``exact`` False: the fast time-major path (:mod:`opencodec.step_fast`; ``native_lstm`` is
    then unused): same state semantics, time-major state tensors, float rounding differences.
    """

    def __init__(self, model: EncodecModel, native_lstm: bool = False, exact: bool = True):
        super().__init__(model, model.encoder, "encoder", native_lstm, model.hop_length, exact)
        self.quantizer = model.quantizer
        self.num_codebooks = model.num_codebooks()
        self._rvq: FastRVQ | None = None
        if isinstance(self._net, FastNet):  # fast: time-major latent straight into cached tables
            self._net.time_major_out = True
            self._rvq = FastRVQ(model.quantizer, self.num_codebooks)

    def _codes(self, emb: torch.Tensor) -> torch.Tensor:
        if self._rvq is not None:
            return self._rvq.encode(emb)
        return self.quantizer.encode(emb, self.num_codebooks)

    def _check(self, x: torch.Tensor, frames: int | None) -> None:
        """``InvalidAudioError`` (a ``ValueError``) unless ``x`` is a tensor [B, C, n] of the
        model's dtype with finite samples (a NaN would poison the stream's state for good),
        n = ``frames`` * hop when given. Values are not checked while tracing (ONNX export)."""
        layout = f"[B, {self.channels}, n]"
        check_audio_tensor(x, layout, self._dtype)
        if x.dim() != 3 or x.shape[1] != self.channels:
            raise InvalidAudioError(f"expected audio {layout}, got {tuple(x.shape)}")
        if frames is not None and x.shape[-1] != frames * self.hop_length:
            raise InvalidAudioError(f"expected {frames} frame(s) of {self.hop_length} samples, got {x.shape[-1]}")
        if not torch.jit.is_tracing():
            check_finite(x, allow_meta=True)

    def start(self, x: torch.Tensor) -> tuple[torch.Tensor, States]:
        """The first ``warmup_frames`` frames x [B, C, W * hop] -> (codes [B, K, W], state)."""
        self._check(x, self.warmup_frames)
        emb, state = self._run(x, None)
        return self._codes(emb), state

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Whole frames x [B, C, n * hop], n >= 1, after ``start`` -> (codes [B, K, n], *new_state)."""
        self._check(x, None)
        if x.shape[-1] < self.hop_length or x.shape[-1] % self.hop_length:
            raise ValueError(f"expected whole frames of {self.hop_length} samples (at least one), "
                             f"got {x.shape[-1]} samples")
        emb, new = self._run(x, state)
        return (self._codes(emb), *new)

    def finish(self, tail: torch.Tensor, state: tp.Sequence[torch.Tensor]) -> torch.Tensor:
        """The end of a stream: tail [B, C, r], 0 < r < hop, after ``start`` -> codes [B, K, 1]
        of the last, partial frame, padded as the offline encoder pads the end of a signal."""
        self._check(tail, None)
        if not 0 < tail.shape[-1] < self.hop_length:
            raise ValueError(f"a tail has 1 to {self.hop_length - 1} samples, got {tail.shape[-1]}")
        emb, _ = self._run(tail, state, tail=True)
        return self._codes(emb)


class DecoderStep(_StepBase):
    """Codes [B, K, n] + state -> audio [B, C, n * hop] + new state.

    ``native_lstm`` True (default, as :class:`~opencodec.streaming.StreamingDecoder`):
    PyTorch's native LSTM kernel, ~1e-7 from the offline (oneDNN) decoder.
    ``exact`` False: the fast time-major path (:mod:`opencodec.step_fast`).
    """

    def __init__(self, model: EncodecModel, native_lstm: bool = True, exact: bool = True):
        super().__init__(model, model.decoder, "decoder", native_lstm, 1, exact)
        self.quantizer = model.quantizer
        self._rvq: FastRVQ | None = None
        if isinstance(self._net, FastNet):  # fast: codes -> time-major latent in one gather
            self._net.time_major_in = True
            self._rvq = FastRVQ(model.quantizer)

    def _latent(self, codes: torch.Tensor) -> torch.Tensor:
        return self._rvq.decode(codes) if self._rvq is not None else self.quantizer.decode(codes)

    def _check(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` [B, K, n] as int64, in ``[0, bins)`` (fast: or -1, no codebook), else
        ``InvalidCodesError`` (``ValueError`` for another shape): an out-of-range code would
        otherwise decode silently as another codebook's entry in fast mode. Not checked
        while tracing (ONNX export): a check is no graph operation."""
        if isinstance(codes, torch.Tensor) and codes.dim() != 3:
            raise ValueError(f"expected codes [B, K, n], got {tuple(codes.shape)}")
        if isinstance(codes, torch.Tensor) and codes.shape[-1] == 0:
            raise ValueError(f"expected at least one code frame [B, K, n >= 1], got {tuple(codes.shape)}")
        if torch.jit.is_tracing():
            return codes
        return check_codes(codes, "[B, K, n]", self.quantizer.bins, self.quantizer.n_q,
                           padding=not self.exact)

    def start(self, codes: torch.Tensor) -> tuple[torch.Tensor, States]:
        """The first ``warmup_frames`` code frames [B, K, W] -> (audio [B, C, W * hop], state).
        Fewer frames (at least one) give the offline decoding of a stream that short (its state
        is then unusable)."""
        return self._run(self._latent(self._check(codes)), None)

    def forward(self, codes: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Code frames [B, K, n], n >= 1, after ``start`` -> (audio [B, C, n * hop], *new_state)."""
        y, new = self._run(self._latent(self._check(codes)), state)
        return (y, *new)
