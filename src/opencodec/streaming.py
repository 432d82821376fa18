"""Stateful chunk-by-chunk streaming for causal EnCodec models (e.g. ``encodec_24khz``).

    enc, dec = StreamingEncoder(model), StreamingDecoder(model)
    for chunk in chunks:                    # chunk [B, C, n], any n >= 0
        codes = enc.push(chunk)             # [B, K, f], f >= 0 new code frames
        audio = dec.push(codes)             # [B, C, m], m >= 0 new samples
        ...
    codes = enc.flush()                     # the last frames (end-of-signal padding)
    audio = dec.flush()

Concatenating every ``push`` output and the ``flush`` output gives the codes of
``model.encode(whole)[0].codes`` for the encoder, and ``model.decode(...)`` of the whole codes
(trim to the input length, to ~1e-7) for the decoder, whatever the chunking. ``flush`` ends the
stream and resets the object, so it can start a new stream.

The encoder runs the same layers on the same values as ``model.encode``, but on the pieces a
push brings, and PyTorch picks its CPU kernels by input size: a convolution over a short piece
(conv1d takes oneDNN only above 20480 elements), the ELU's last ``numel % 32`` elements, the
LSTM over one frame and the quantiser's distances for a few frames are summed in another order
than over the whole signal. The latent then differs by ~1e-7, and a code whose two nearest
codewords are that close flips: on real audio 0-14 frames in 4500 (0-0.3%), depending on the
model and the push size (``benchmarks/probes/stream_vs_offline.py``, docs/BENCHMARKS.md). For
whole files in bounded memory, :class:`opencodec.longform.exact_encoder.ChunkedExactEncoder`
computes what ``model.encode`` computes, chunk for chunk, and gives its codes bit for bit (at
the cost of seconds of latency). The decoder uses a faster LSTM kernel by default and matches
``model.decode`` to ~1e-7 (``fast_lstm`` switches).
``exact=False`` (or ``model.exact = False``) selects fast mode (:mod:`opencodec.streaming_fast`):
the same emission times, results equal up to float rounding.

The layers' state machines, and how each stays exact, are in :mod:`opencodec.streaming_layers`.

Latency (24 kHz model, hop 320): in steady state a code frame is emitted as soon as
the last sample of its 320-sample frame arrives, and the decoder emits its 320 samples
as soon as the code frame arrives. The warm-up is dominated by the kernel-7 convs at
the frame rate (the encoder's last conv and the decoder's first conv), whose reflected
left pad needs latent frames 1..6: the first 7 code frames come out together when
input sample 2239 arrives, and the decoder's first 7 x 320 samples come out together
once code frame 6 arrives (see ``benchmarks/streaming_latency.py``).

Input is checked before it touches the stream: a chunk that is not a float32 tensor (the
model's dtype) on the model's device of shape [B, C, n] with finite samples raises
``InvalidAudioError``, codes that are not integers in ``[0, bins)`` with 1 to ``n_q``
codebooks raise ``InvalidCodesError`` (both ``ValueError``), and a rejected push leaves the
stream (its state and counters) exactly as it was. What a stream keeps past a push (samples of
a partial frame or of the warm-up) is a copy: a caller may reuse one buffer for every push.

Memory is bounded by the kernel sizes and the chunk size, not by the stream length.
Weights (weight norm folded) are cached when the stream object is built: rebuild it
after changing the model's weights. All work runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import numbers
import typing as tp

import torch
from torch import nn

from .errors import InvalidAudioError, InvalidCodesError
from .input_checks import check_audio_tensor, check_codes, check_finite, check_model, parameter_dtype_device
from .model import EncodecModel
from .step import check_streamable_model
from .streaming_fast import FastStreamDecoder, FastStreamEncoder
from .streaming_layers import build_stream
from .threads import one_thread

__all__ = ["StreamingEncoder", "StreamingDecoder", "algorithmic_delays"]

Opt = tp.Optional[torch.Tensor]


class _Streaming:
    """What the streaming encoder and decoder share: the exact or fast network, the stream's
    batch size (fixed by its first push), the dtype and device inputs must have (the model's)
    and the empty output of a push that completes nothing."""

    def __init__(self, model: EncodecModel, net: nn.Module, fast_class: tp.Callable[[], tp.Any],
                 native_lstm: bool, exact: bool | None):
        check_streamable_model(model)
        self.model = model
        self.exact = bool(getattr(model, "exact", True) if exact is None else exact)
        self.channels = model.channels
        self._dtype, self._device = parameter_dtype_device(model)
        self._fast: tp.Any = None
        with torch.inference_mode():
            if self.exact:
                self._net = build_stream(net, native_lstm=native_lstm)
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
        """[B, rows, 0] of the output's dtype (B: the stream's batch size; 0 before any push,
        so ``flush`` of a stream that was never pushed returns [0, rows, 0])."""
        batch = 0 if self._proto is None else self._proto.shape[0]
        device = None if self._proto is None else self._proto.device
        rows, dtype = self._empty_layout()
        return torch.empty(batch, rows, 0, dtype=dtype, device=device)

    def _empty_layout(self) -> tuple[int, torch.dtype]:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_batch(self, x: torch.Tensor) -> None:
        """``ValueError`` when ``x``'s batch size is not the stream's (fixed by its first push)."""
        if self._proto is not None and x.shape[0] != self._proto.shape[0]:
            raise ValueError(f"batch size changed within a stream: {self._proto.shape[0]} -> {x.shape[0]}")

    def _accept(self, x: torch.Tensor) -> None:
        """The first push fixes the batch size (``x`` was checked)."""
        if self._proto is None:
            self._proto = x


class StreamingEncoder(_Streaming):
    """Audio chunks [B, C, n] -> code frames [B, K, f]: ``model.encode``'s codes, but for rare
    near-ties (see the module notes).

    K is ``model.num_codebooks()`` when the encoder is built (set the bandwidth first).
    The batch size is fixed by the first push of a stream; every push must have the model's
    channels, dtype (float32) and device, and finite samples (``InvalidAudioError`` otherwise).

    ``fast_lstm=True`` runs the bottleneck LSTM with PyTorch's native CPU kernel, ~3 ms
    less per frame on one thread for the 24 kHz model, but its outputs differ from the
    offline (oneDNN) LSTM by ~1e-7, so more codes can differ from ``model.encode`` at
    near-ties. The default (False) runs the offline kernel (with autograd enabled PyTorch
    itself picks the native kernel).

    ``exact`` None (default): ``model.exact`` (True unless switched off).
    ``exact=False``: fast mode (:mod:`opencodec.streaming_fast`): whole frames through the
    fast time-major step, same emission times; codes equal exact mode's on >= 99.9% of
    frames of real audio (measured in tests/test_streaming_fast.py). ``fast_lstm`` is then unused.
    ``frames_per_call`` (a positive int; fast mode): hold whole frames back until the total emitted reaches a
    multiple of it, so a consumer that sends ``frames_per_call`` frames per packet gets each
    packet as early as before while the network runs once per packet (its fixed cost per
    call, mostly reading the weights, is paid once); ``flush`` emits what is held back.
    """

    def __init__(self, model: EncodecModel, fast_lstm: bool = False, exact: bool | None = None,
                 frames_per_call: int = 1):
        check_model(model, "StreamingEncoder")
        if isinstance(frames_per_call, bool) or not isinstance(frames_per_call, numbers.Integral):
            raise TypeError(f"frames_per_call must be a positive int (code frames), got "
                            f"{type(frames_per_call).__name__} {frames_per_call!r:.40}")
        frames_per_call = int(frames_per_call)  # (a numpy integer too)
        if frames_per_call < 1:
            raise ValueError(f"frames_per_call must be a positive int (code frames), got {frames_per_call}")
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

    def _check_chunk(self, chunk: torch.Tensor) -> None:
        """``InvalidAudioError`` (``ValueError`` for a changed batch size) unless ``chunk`` is
        a tensor [B, C, n] of the model's dtype on its device, of the stream's batch size,
        with finite samples. Changes nothing."""
        layout = f"[B, {self.channels}, n]"
        check_audio_tensor(chunk, layout, self._dtype, self._device)
        if chunk.dim() != 3 or chunk.shape[1] != self.channels:
            raise InvalidAudioError(f"expected audio {layout}, got {tuple(chunk.shape)}")
        self._check_batch(chunk)
        check_finite(chunk)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Feed ``chunk`` [B, C, n] (n >= 0), float32 (the model's dtype) with finite samples;
        returns the code frames now complete, [B, K, f]. A chunk that cannot be encoded raises
        ``InvalidAudioError`` and leaves the stream as it was."""
        self._check_chunk(chunk)
        self._accept(chunk)
        if chunk.shape[-1] == 0:
            return self._empty()
        self.samples_in += chunk.shape[-1]
        with torch.inference_mode(), one_thread(chunk):  # codes independent of the thread count
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

        In total ``ceil(samples / hop_length)`` frames come out of a stream. A stream that was
        never pushed returns [0, K, 0]: no batch size is known yet.
        """
        with torch.inference_mode(), one_thread(self._proto):
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
        check_model(model, "StreamingDecoder")
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

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` as int64, or ``InvalidCodesError`` (``ValueError`` for a changed batch
        size) unless they are an integer tensor [B, K, f] on the model's device with
        1 <= K <= ``n_q`` and every code in ``[0, bins)``. Changes nothing."""
        if isinstance(codes, torch.Tensor) and codes.dim() != 3:
            raise InvalidCodesError(f"expected codes [B, K, f], got {tuple(codes.shape)}")
        checked = check_codes(codes, "[B, K, f]", self.model.bins, len(self.model.quantizer.vq.layers),
                              self._device)
        self._check_batch(checked)
        return checked

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Feed code frames [B, K, f] (f >= 0; integers in ``[0, bins)``, K up to ``n_q``, any
        K from push to push); returns the audio now complete, [B, C, m]. Codes that cannot be
        decoded raise ``InvalidCodesError`` and leave the stream as it was."""
        codes = self._check_codes(codes)
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
        """End the stream: returns the remaining audio and resets. A stream that was never
        pushed returns [0, C, 0]: no batch size is known yet."""
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
