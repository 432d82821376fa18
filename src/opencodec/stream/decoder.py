"""Receiver events -> audio: :class:`PacketAudioDecoder` (concealment, trimming) and the
checks that a model can stream and decode a given stream."""

from __future__ import annotations

import typing as tp

import torch

from ..compress import model_device
from ..errors import BitstreamError
from ..identity import check_model_for_file
from ..model import EncodecModel
from ..streamability import check_streamable  # also re-exported from here
from ..streaming import StreamingDecoder
from .format import StreamInfo
from .receiver import CodeFrames, Event, MissingFrames, Notice, StreamEnd, StreamStart


def check_model_for_stream(model: EncodecModel, info: StreamInfo) -> None:
    """Raise ``BitstreamError`` unless ``model`` can decode a stream with header ``info``
    (same name or a release of a legacy name, same weights hash when the header has one, see
    :func:`opencodec.identity.check_model_for_file`; sample rate, channels, hop and bits,
    enough codebooks; streamable)."""
    name, digest = info.model
    check_model_for_file(model, name, digest, info.num_codebooks, "the stream")
    for field_name, stream_value, model_value in (
            ("sample rate", info.sample_rate, model.sample_rate),
            ("channels", info.channels, model.channels),
            ("hop length", info.hop_length, model.hop_length),
            ("bits per code", info.bits, model.bits_per_codebook)):
        if stream_value != model_value:
            raise BitstreamError(f"stream header field {field_name!r} is {stream_value}, but model "
                                 f"{model.name!r} has {model_value}")
    # more codebooks than the model has: refused by check_model_for_file above (the same
    # condition, ``check_num_codebooks``), before any field here is compared
    check_streamable(model.config)


class PacketAudioDecoder:
    """Receiver events -> audio chunks [C, n] (float32, CPU), concealment and trimming.

    ``load(info)`` returns the model for a stream (it is checked with
    :func:`check_model_for_stream`). Missing frames become silence of their exact
    duration; the last ``hop - 1`` samples are held back until more audio or the stream's
    end arrives, so the output can be trimmed to the length in the end packet.
    ``fast_lstm`` is passed to :class:`~opencodec.streaming.StreamingDecoder` (True: ~1e-7
    from the offline decoder, faster). The first stream fixes ``sample_rate`` and
    ``channels``; a later stream with other values raises ``BitstreamError``.
    """

    def __init__(self, load: tp.Callable[[StreamInfo], EncodecModel], fast_lstm: bool = True):
        self._load = load
        self._fast_lstm = fast_lstm
        self.sample_rate: int | None = None
        self.channels: int | None = None
        self._decoder: StreamingDecoder | None = None
        self._device = torch.device("cpu")
        self._hop = 1
        self._held = torch.zeros(0, 0)
        self._released = 0  # samples of the current stream given out
        self.samples = 0  # all samples given out
        self.concealed_samples = 0

    def handle(self, event: Event) -> list[torch.Tensor]:
        """Audio released by ``event`` (possibly none)."""
        if isinstance(event, StreamStart):
            self._start(event.info)
            return []
        if isinstance(event, Notice):
            return []
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError(f"{type(event).__name__} outside a stream")  # pragma: no cover
        if isinstance(event, CodeFrames):
            return self._add(decoder.push(event.codes[None].to(self._device))[0])
        if isinstance(event, MissingFrames):
            out = self._flush(decoder)
            silence = torch.zeros(self.channels or 1, event.count * self._hop)
            self.concealed_samples += silence.shape[-1]
            return out + self._add(silence)
        assert isinstance(event, StreamEnd)
        out = self._flush(decoder)
        rest = self._held
        if event.length is not None:
            rest = rest[:, :max(0, event.length - self._released)]
        self._decoder = None
        self._held = torch.zeros(0, 0)
        return out + self._give(rest)

    def _start(self, info: StreamInfo) -> None:
        fixed = (self.sample_rate, self.channels)
        if self.sample_rate is not None and (info.sample_rate, info.channels) != fixed:
            raise BitstreamError(f"a new stream at {info.sample_rate} Hz, {info.channels} channel(s) "
                                 f"cannot continue the output at {self.sample_rate} Hz, "
                                 f"{self.channels} channel(s)")
        model = self._load(info)
        check_model_for_stream(model, info)
        self.sample_rate, self.channels = info.sample_rate, info.channels
        self._device = model_device(model)
        self._decoder = StreamingDecoder(model, fast_lstm=self._fast_lstm)
        self._hop = info.hop_length
        self._held = torch.zeros(info.channels, 0)
        self._released = 0

    def _flush(self, decoder: StreamingDecoder) -> list[torch.Tensor]:
        """The rest of the audio of the frames pushed since the last flush (none when no
        frame was pushed: a loss right after the header, or two losses in a row)."""
        if decoder.frames_in == 0:
            return []
        return self._add(decoder.flush()[0])

    def _add(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """Append decoded audio [C, n]; release all but the last hop - 1 samples."""
        if audio.shape[-1] == 0:
            return []
        held = torch.cat([self._held, audio.detach().to("cpu", torch.float32)], dim=-1)
        n = max(0, held.shape[-1] - (self._hop - 1))
        self._held = held[:, n:]
        return self._give(held[:, :n])

    def _give(self, audio: torch.Tensor) -> list[torch.Tensor]:
        if audio.shape[-1] == 0:
            return []
        self._released += audio.shape[-1]
        self.samples += audio.shape[-1]
        return [audio]
