"""Fast mode of :class:`~opencodec.streaming.StreamingEncoder` / ``StreamingDecoder`` (``exact=False``).

Chunks of any size are gathered into whole frames and run through the fast explicit-state
steps (:class:`~opencodec.step.EncoderStep` / ``DecoderStep`` with ``exact=False``, see
:mod:`opencodec.step_fast`): the first ``warmup_frames`` frames through ``start``, then every
push's whole frames in ONE call (a caller that pushes several frames at once pays the
per-call overhead once). Outputs come out at the same times as in exact mode: a code frame as
soon as its last sample arrives (after the 7-frame warm-up of the 24 kHz models), audio as
soon as its code frame arrives.

Differences from exact mode are float rounding only; measured on real speech in
tests/test_streaming_fast.py (codes and audio) and stated in the README.
"""

from __future__ import annotations

import torch

from .model import EncodecModel
from .step import DecoderStep, EncoderStep

__all__ = ["FastStreamEncoder", "FastStreamDecoder"]


def _cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None or a.shape[-1] == 0 else torch.cat([a, b], dim=-1)


def _cat_codes(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    """Codes [B, K_a, f] then [B, K_b, g] -> [B, max(K), f + g], the missing codebooks' rows
    -1 (no codebook, which the fast quantiser decodes as nothing): a stream may change its
    number of codebooks during the warm-up too."""
    if a is None or a.shape[-1] == 0:
        return b
    k = max(a.shape[1], b.shape[1])
    parts = [x if x.shape[1] == k else torch.cat([x, x.new_full((x.shape[0], k - x.shape[1], x.shape[2]), -1)], 1)
             for x in (a, b)]
    return torch.cat(parts, dim=-1)


class FastStreamEncoder:
    """Audio chunks [B, C, n] -> code frames [B, K, f] (fast mode); ``flush`` ends the stream."""

    def __init__(self, model: EncodecModel, align: int = 1):
        self.model = model
        self.num_codebooks = model.num_codebooks()  # fixed when built, as the step's quantiser
        self.step = EncoderStep(model, exact=False)
        self.hop = model.hop_length
        self.warmup = self.step.warmup_frames
        # Frames go through the network only when the total out becomes a multiple of
        # ``align``: a packet writer of ``align`` frames per packet gets whole packets, as
        # early as before, and the network runs once per packet instead of once per frame.
        self.align = max(1, int(align))
        self.reset()

    def reset(self) -> None:
        self.pending: torch.Tensor | None = None  # samples not yet in a whole frame (or the warm-up)
        self.state: list[torch.Tensor] | None = None
        self.frames_out = 0

    def push(self, chunk: torch.Tensor) -> torch.Tensor | None:
        """New whole frames' codes [B, K, f], or None."""
        buf = _cat(self.pending, chunk)
        out: list[torch.Tensor] = []
        if self.state is None:
            first = self.warmup * self.hop
            if buf.shape[-1] < first:
                self.pending = buf.clone()  # a copy: ``chunk`` may be a buffer the caller reuses
                return None
            codes, self.state = self.step.start(buf[..., :first])
            out.append(codes)
            self.frames_out += self.warmup
            buf = buf[..., first:]
        frames = buf.shape[-1] // self.hop
        frames = (self.frames_out + frames) // self.align * self.align - self.frames_out
        whole = max(0, frames) * self.hop
        if whole:
            self.frames_out += frames
            codes, *self.state = self.step(buf[..., :whole], *self.state)
            out.append(codes)
        self.pending = buf[..., whole:].clone()  # a copy: ``chunk`` may be a buffer the caller reuses
        if not out:
            return None
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)

    def flush(self) -> torch.Tensor | None:
        """The last codes (a partial frame padded as offline; a stream shorter than the warm-up
        is encoded offline, as exact mode does), then reset."""
        try:
            rest = self.pending
            if rest is None or rest.shape[-1] == 0:
                return None
            if self.state is None:  # a streamable model: one segment, no normalisation
                return self.model.quantizer.encode(self.model.encoder(rest), self.num_codebooks)
            out = []
            whole = rest.shape[-1] // self.hop * self.hop
            if whole:  # frames held back for alignment
                codes, *self.state = self.step(rest[..., :whole], *self.state)
                out.append(codes)
            if rest.shape[-1] > whole:
                out.append(self.step.finish(rest[..., whole:], self.state))
            return out[0] if len(out) == 1 else torch.cat(out, dim=-1)
        finally:
            self.reset()


class FastStreamDecoder:
    """Code frames [B, K, f] -> audio [B, C, f * hop] (fast mode); ``flush`` ends the stream."""

    def __init__(self, model: EncodecModel):
        self.step = DecoderStep(model, exact=False)
        self.warmup = self.step.warmup_frames
        self.reset()

    def reset(self) -> None:
        self.pending: torch.Tensor | None = None  # code frames received during the warm-up
        self.state: list[torch.Tensor] | None = None

    def push(self, codes: torch.Tensor) -> torch.Tensor | None:
        """The audio of the new frames [B, C, m], or None during the warm-up. ``codes``
        [B, K, f] are not checked here (``StreamingDecoder.push`` checks them)."""
        if self.state is not None:
            audio, *self.state = self.step(codes, *self.state)
            return audio
        buf = _cat_codes(self.pending, codes)
        if buf.shape[-1] < self.warmup:
            self.pending = buf.clone()  # a copy: ``codes`` may be a buffer the caller reuses
            return None
        self.pending = None
        audio, self.state = self.step.start(buf[..., :self.warmup])
        if buf.shape[-1] > self.warmup:
            more, *self.state = self.step(buf[..., self.warmup:], *self.state)
            audio = torch.cat([audio, more], dim=-1)
        return audio

    def flush(self) -> torch.Tensor | None:
        """The audio of a stream shorter than the warm-up (decoded as offline), then reset."""
        try:
            if self.state is None and self.pending is not None and self.pending.shape[-1]:
                return self.step.start(self.pending)[0]
            return None
        finally:
            self.reset()
