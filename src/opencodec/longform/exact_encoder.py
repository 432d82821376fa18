"""Codes of a long signal pushed block by block, bitwise ``model.encode`` of the whole, in
bounded memory (causal, non-segmenting models on the CPU).

:class:`~opencodec.streaming.StreamingEncoder` runs every layer on the pieces a push brings,
and PyTorch's CPU kernels do not always sum a small piece in the order they sum the whole
signal: conv1d takes oneDNN only for inputs of more than 20480 elements (batch 1), the native
im2col + GEMM path otherwise; the ELU evaluates a tensor's last ``numel % 32`` elements with a
scalar formula. The latent then differs by ~1e-7 and a code at a near-tie can flip.
:class:`ChunkedExactEncoder` instead runs, on one thread, the calls that the offline encoder
(:func:`opencodec.modules.fast.encoder_forward_exact`, under ``model.encode``) runs, or calls
that are checked to give the same bits:

1. **Downsampling stack** (the layers before the LSTM). On one thread, offline runs a long
   input's stack in the chunks of ``chunked_bounds(frames, ENCODER_CHUNK_FRAMES)``, each with
   ``context`` frames either side. These are computed here on the same sample windows, so
   every call is the same call on the same values. Chunk ``[f0, f1)`` is the same chunk (same
   bounds, window not clipped by the end) for every signal of at least
   ``(f1 + max(context, chunk // 2)) * hop`` samples, so it is computed once that many have
   arrived: the codes never depend on an announced length (an MP3's frame count may be off),
   and the last chunks are laid out at :meth:`finish` from the true length.
2. **LSTM**: oneDNN's LSTM, one call per stack chunk carrying ``(h, c)``; bitwise the
   whole-sequence call for chunks of 4 to 300 steps on the bundled and the official 24 kHz
   models (a chunk ending in a 1-step call differed). Chunks have at least ``chunk // 2``
   steps. Then ``+ x`` (the skip) and the ELU, per chunk: the ELU's
   vector blocks fall on the same elements when ``chunk * channels % 32 == 0`` (checked).
3. **Last conv** (kernel k, stride 1, causal: reflect-padded by k - 1 frames on the left) on
   windows of at least ``window`` output frames, gathered from the held latent (the reflected
   frames are the same values offline's padded buffer holds). ``window`` is chosen so that
   PyTorch selects the same convolution backend for the window as for the whole sequence
   (``torch._C._select_conv_backend``); oneDNN's output is then cut-invariant.
4. **Quantiser** on each window's output: rows are independent, and MKL's distance GEMM
   gave bitwise the same rows for 8 rows and more (windows have >= ``window`` rows).

Steps 2-4 rest on kernel properties checked in tests/test_longform_exact.py, not on a proof.
Where offline does something else, this class does too, or says it cannot:

* fewer than ``3 * chunk * hop`` samples (offline: one pass, not chunked): the samples are
  buffered (at most ~8 s at 24 kHz) and :meth:`finish` runs ``model.encode`` on them;
* offline does not chunk this model (:func:`~opencodec.modules.fast.encoder_chunk_plan` is None: chunking was found
  not bitwise exact, decided once per model as offline decides it), or the input is not CPU
  float32, fast paths are off, or the layers after the LSTM are not [ELU, stride-1 reflect
  conv], or no window size gives the whole's backend: the stream falls back to
  :class:`StreamingEncoder` (exact streaming, which may differ from ``model.encode`` at rare
  near-ties), and ``fallback_reason`` says why. CPU encoding always runs on one thread here
  and in ``model.encode``, so the thread count never forces the fallback.

Memory: the audio of about two chunks (the first ~9.4 s at the start, to decide as offline
decides), one chunk's activations, the LSTM state and ``window + k`` latent frames.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..input_checks import check_finite
from ..model import EncodecModel
from ..modules import fast
from ..modules.conv import StreamableConv1d
from ..modules.fast import chunked_bounds, encoder_chunk_plan, run_exact, weight_bias
from ..modules.lstm import StreamableLSTM
from ..streaming import StreamingEncoder
from ..threads import one_thread

__all__ = ["ChunkedExactEncoder"]

_MAX_WINDOW = 4096  # latent frames: the largest last-conv window tried for a backend match


def _conv_backend(conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor | None, width: int) -> tp.Any:
    """The backend PyTorch selects for ``conv`` on a [1, C_in, width] input (the numel rule of
    aten's ``use_mkldnn`` where ``_select_conv_backend`` is missing)."""
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None:
        return conv.in_channels * width > 20480
    x = torch.empty(1, conv.in_channels, width)
    return select(x, weight, bias, list(conv.stride), [0], list(conv.dilation), False, [0], 1, None)


class ChunkedExactEncoder:
    """Audio blocks [C, n] (float32, numpy or tensor, pushed in order) -> code frames [K, f]
    (int64, CPU) whose concatenation over every :meth:`push` and :meth:`finish` is bitwise
    ``model.encode(whole[None])[0].codes[0]`` run under ``torch.inference_mode()`` (see the
    module notes for how, and for the fallback). K is ``model.num_codebooks()`` at construction.

    Needs no total length: whatever the true length turns out to be, the codes are those of
    the samples pushed. ``fallback_reason`` is None while the stream is exact by construction.
    """

    def __init__(self, model: EncodecModel) -> None:
        if model.segment_length is not None or model.normalize or not model.config.causal:
            raise ValueError(f"model {model.name!r}: only causal, non-segmenting models without "
                             "renormalisation are encoded as one stream")
        self.model = model
        self.num_codebooks = model.num_codebooks()
        self.layers = list(model.encoder.model)
        self.hop = int(model.hop_length)
        self.chunk = int(fast.ENCODER_CHUNK_FRAMES)  # read once: the layout must not change mid-stream
        self.fallback_reason: str | None = None
        self._pieces: list[torch.Tensor] = []  # held audio [C, n], from absolute sample _start
        self._start = 0
        self.samples_in = 0
        self.frames_out = 0
        self._mode = "pending"  # -> "chunked" (exact) or "stream" (fallback), decided on the probe
        self._stream: StreamingEncoder | None = None
        self._plan: fast.ChunkPlan | None = None
        self._done = 0  # stack frames computed
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None  # LSTM (h, c)
        self._lat = torch.empty(0)  # ELU'd LSTM output [1, D, m] from latent frame _lat_start
        self._lat_start = 0
        self._emitted = 0  # output (code) frames computed by the last conv
        self.window = 0  # last-conv outputs per window (set by the decision)
        param = next(model.parameters())
        self._device, self._dtype = param.device, param.dtype

    # -- input ---------------------------------------------------------------------------------
    def _probe_length(self) -> int:
        """Samples offline's one-time exactness check reads (``_chunking_is_exact``)."""
        return (3 * self.chunk + self.chunk // 2) * self.hop + self.hop // 2

    def _held(self, first: int, stop: int) -> torch.Tensor:
        """Held samples [first, stop) (absolute indices) as [1, C, n]."""
        if len(self._pieces) > 1:
            self._pieces = [torch.cat(self._pieces, dim=-1)]
        return self._pieces[0][None, :, first - self._start: stop - self._start]

    def _drop_before(self, first: int) -> None:
        if first > self._start:
            held = self._held(self._start, self.samples_in)[0]
            self._pieces, self._start = [held[:, first - self._start:].clone()], first

    def push(self, block: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Feed the next samples ``block`` [C, n]; returns the code frames now final, [K, f]."""
        x = torch.as_tensor(block).clone(memory_format=torch.contiguous_format)  # held: not the caller's
        if x.dim() != 2 or x.shape[0] != self.model.channels or x.dtype != torch.float32:
            raise ValueError(f"expected float32 audio [{self.model.channels}, n], got "
                             f"{x.dtype} {tuple(x.shape)}")
        check_finite(x)
        if self._mode == "stream":
            assert self._stream is not None
            self.samples_in += x.shape[-1]
            return self._count(self._stream.push(self._for_model(x[None]))[0].cpu())
        self._pieces.append(x)
        self.samples_in += x.shape[-1]
        with torch.inference_mode(), one_thread():
            if self._mode == "pending" and self.samples_in >= self._probe_length():
                return self._decide(final=False)
            return self._advance(final=False) if self._mode == "chunked" else self._empty()

    def finish(self) -> torch.Tensor:
        """End of the signal: returns the last code frames. The object cannot be reused."""
        with torch.inference_mode(), one_thread():
            if self._mode == "pending":
                if self.samples_in < 3 * self.chunk * self.hop:  # offline: one pass, not chunked
                    if not self.samples_in:
                        return self._empty()
                    whole = self._for_model(self._held(0, self.samples_in))
                    return self._count(self.model.encode(whole)[0].codes[0].cpu())
                codes = self._decide(final=True)
                return codes if self._mode == "chunked" else torch.cat([codes, self._finish_stream()], -1)
            if self._mode == "stream":
                return self._finish_stream()
            return self._advance(final=True)

    def _for_model(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 audio on the model's device and in its dtype (``compress`` converts the
        same way), for the paths that call the model or the streaming encoder."""
        return x.to(device=self._device, dtype=self._dtype)

    def _finish_stream(self) -> torch.Tensor:
        assert self._stream is not None
        return self._count(self._stream.flush()[0].cpu())

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.num_codebooks, 0, dtype=torch.long)

    def _count(self, codes: torch.Tensor) -> torch.Tensor:
        self.frames_out += codes.shape[-1]
        return codes

    # -- the decision, as offline makes it -------------------------------------------------------
    def _decide(self, final: bool) -> torch.Tensor:
        """Choose exact chunking or the streaming fallback, once ``probe_length`` samples (or
        the whole, shorter signal) are held; returns the codes now final."""
        probe = self._held(0, min(self.samples_in, self._probe_length()))
        reason = self._unsupported(probe)
        if reason is None:
            self._mode = "chunked"
            return self._advance(final)
        self._mode, self.fallback_reason = "stream", reason
        self._stream = StreamingEncoder(self.model)
        codes = self._stream.push(self._for_model(self._held(0, self.samples_in)))[0].cpu()
        self._pieces = []
        return self._count(codes)

    def _unsupported(self, probe: torch.Tensor) -> str | None:
        """Why offline's computation cannot be reproduced in chunks, or None (sets the plan,
        the last conv and its window size)."""
        encoder = self.model.encoder
        if (self._device.type != "cpu" or self._dtype != torch.float32
                or not fast.fast_path_enabled(encoder, probe)):
            return "offline runs the plain modules (fast paths off, training mode, not CPU float32)"
        self._plan = encoder_chunk_plan(encoder, probe)
        if self._plan is None:
            return "offline runs this model's downsampling stack in one pass (no exact chunk plan)"
        tail = self.layers[self._plan.stop:]
        if (len(tail) != 3 or not isinstance(tail[0], StreamableLSTM) or not isinstance(tail[1], nn.ELU)
                or not isinstance(tail[2], StreamableConv1d)):
            return "the layers after the downsampling stack are not [LSTM, ELU, conv]"
        lstm, conv = tail[0].lstm, tail[2]
        channels = int(lstm.input_size)
        if (lstm.batch_first or lstm.bidirectional or conv.stride != 1 or not conv.causal
                or conv.pad_mode != "reflect" or not isinstance(conv.conv.norm, nn.Identity)):
            return "unsupported LSTM or last conv (needs time-first LSTM, causal stride-1 reflect conv)"
        if self.chunk * channels % 32 or self._plan.hop != self.hop:
            return f"chunk boundaries ({self.chunk} frames x {channels} channels) split ELU vector blocks"
        # The whole sequence is at least the probe long (ceil: offline's frame count) and may be
        # far longer; PyTorch's backend choice grows with the width (a numel threshold), so one
        # backend holds for every whole only when the probe's width and a huge one agree.
        whole = _conv_backend(conv.conv.conv, *weight_bias(conv.conv.conv),
                              -(-probe.shape[-1] // self.hop) + conv.padding_total)
        if whole != _conv_backend(conv.conv.conv, *weight_bias(conv.conv.conv), 1 << 20):
            return f"the last conv's backend depends on the file's length ({whole} at the probe's)"
        self.window = max(self.chunk, 8)
        while _conv_backend(conv.conv.conv, *weight_bias(conv.conv.conv),
                            self.window + conv.padding_total) != whole:
            self.window *= 2
            if self.window > _MAX_WINDOW:
                return f"no last-conv window up to {_MAX_WINDOW} frames takes the whole's backend {whole}"
        return None

    # -- the exact pipeline -----------------------------------------------------------------------
    def _advance(self, final: bool) -> torch.Tensor:
        """Compute every stack chunk that is now fixed (all of them when ``final``) and the
        code frames they complete."""
        plan, chunk, hop = self._plan, self.chunk, self.hop
        assert plan is not None
        frames = -(-self.samples_in // hop)
        if final:
            bounds = [b for b in chunked_bounds(frames, chunk) if b[0] >= self._done]
            assert not bounds or bounds[0][0] == self._done, (bounds, self._done)
        else:
            ready = (self.samples_in // hop) - max(plan.context, chunk // 2)  # see module note 1
            bounds = [(f0, f0 + chunk) for f0 in range(self._done, ready - chunk + 1, chunk)]
        codes = [self._empty()]
        for f0, f1 in bounds:
            a, b = max(0, f0 - plan.context), min(frames, f1 + plan.context)
            window = self._held(a * hop, min(self.samples_in, b * hop))
            y, _ = run_exact(self.layers[: plan.stop], window, False)
            self._lstm(y[..., f0 - a: f1 - a])
            self._done = f1
            self._drop_before(max(0, f1 - plan.context) * hop)
            codes.append(self._tail(False))
        if final:
            codes.append(self._tail(True))
        return self._count(torch.cat(codes, dim=-1))

    def _lstm(self, z: torch.Tensor) -> None:
        """LSTM + skip + ELU of the stack output z [1, D, n] (the next n latent frames),
        appended to the held latent: ``StreamableLSTM.forward`` with the state carried."""
        assert self._plan is not None
        layer, elu = self.layers[self._plan.stop], self.layers[self._plan.stop + 1]
        xt = z.permute(2, 0, 1)  # [n, 1, D], as StreamableLSTM.forward
        y, self._state = layer.lstm(xt, self._state)
        if layer.skip:
            y = y + xt
        y = F.elu(y.permute(1, 2, 0), elu.alpha, inplace=True)  # in place, as offline
        self._lat = y.contiguous() if not self._lat.numel() else torch.cat([self._lat, y], dim=-1)

    def _tail(self, final: bool) -> torch.Tensor:
        """Last conv + quantiser for the output frames the held latent completes (causal,
        stride 1: output t needs latent frames t - (k - 1) .. t), when at least ``window`` are
        pending or at the end; each conv runs on >= ``window`` outputs (re-computing earlier
        frames if needed), its left pad the reflection of latent frames 1 .. k - 1."""
        assert self._plan is not None
        conv: StreamableConv1d = self.layers[self._plan.stop + 2]
        pad = conv.padding_total
        end = self._lat_start + self._lat.shape[-1]  # latent (= output) frames known
        if end - self._emitted < (1 if final else self.window):
            return self._empty()
        s = max(0, min(self._emitted, end - self.window))  # first output computed
        idx = torch.arange(s - pad, end).abs_()  # latent frames; reflect: frame -j is frame j
        window = self._lat.index_select(-1, idx - self._lat_start)
        weight, bias = weight_bias(conv.conv.conv)
        emb = F.conv1d(window, weight, bias, 1, 0, conv.conv.conv.dilation)
        codes = self.model.quantizer.encode(emb, self.num_codebooks)[0, :, self._emitted - s:]
        self._emitted = end
        keep = max(0, end - self.window - pad)
        if keep > self._lat_start:
            self._lat, self._lat_start = self._lat[..., keep - self._lat_start:].clone(), keep
        return codes
