"""The whole chain between two binary streams (what ``stream-encode`` and ``stream-decode``
run): :func:`encode_stream` and :func:`decode_stream`.

Latency (24 kHz models, hop 320 = 13.3 ms per frame): the encoder emits a frame as soon as
its last input sample arrives, a packet waits for fpp frames, and the decoder holds back
one frame: about (fpp + 1) x 13.3 ms in steady state, plus computation and transport
(fpp = 4: ~67 ms). At the start of a stream the causal networks' warm-up releases the
first 7 frames together (~93 ms of audio, see :mod:`opencodec.streaming`). Overhead:
16 bytes per data packet (sync 4, type 1, seq 4, length 2, F 1, CRC 4), i.e.
``16 * 8 * 75 / fpp`` bit/s at 75 frames/s (2.4 kbps at fpp = 4), plus
``27 + len(name)`` bytes per header.
"""

from __future__ import annotations

import typing as tp
import warnings
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch

from ..audio import RESAMPLE_QUALITY, convert_channels, loud_input_message
from ..compress import model_device, model_dtype
from ..errors import AudioIOError, BitstreamError
from ..model import EncodecModel
from ..streaming import StreamingEncoder
from .decoder import PacketAudioDecoder, check_streamable
from .defaults import DEFAULT_FRAMES_PER_PACKET, DEFAULT_HEADER_EVERY
from .format import StreamInfo
from .parser import Packet, PacketParser
from .pcm import PcmFormat, PcmStreamReader, _read_some
from .receiver import DEFAULT_MAX_GAP_SECONDS, Event, Notice, ReceiverStats, StreamReceiver, StreamStart
from .sink import AudioSink
from .writer import PacketWriter


_PUSH_SECONDS = 1.0  # the encoder network sees at most this much audio per push


@dataclass
class EncodeReport:
    """What :func:`encode_stream` did: ``samples`` per channel at the model's rate,
    ``frames``, ``packets`` (all types), ``bytes`` written, ``num_codebooks``."""

    samples: int = 0
    frames: int = 0
    packets: int = 0
    bytes: int = 0
    num_codebooks: int = 0
    sample_rate: int = 0


def encode_stream(model: EncodecModel, fin: tp.BinaryIO, fout: tp.BinaryIO, *,
                  bandwidth: float | None = None,
                  frames_per_packet: int = DEFAULT_FRAMES_PER_PACKET,
                  header_every: int = DEFAULT_HEADER_EVERY, raw: PcmFormat | None = None,
                  read_bytes: int = 1 << 15, name: str = "stdin") -> EncodeReport:
    """Encode PCM/WAV from ``fin`` into packets on ``fout``, as the input arrives.

    The input (a WAV stream, or headerless PCM described by ``raw``) is read as it comes
    (never all at once), converted to the model's channels (mean to mono, or repeated from
    mono) and sample rate (``soxr.ResampleStream``, the "HQ" recipe of
    :func:`opencodec.audio.resample`; sample-identical to the one-shot resampler in our
    checks), encoded with :class:`~opencodec.streaming.StreamingEncoder` (codes equal
    ``model.encode`` of the whole input) at ``bandwidth`` kbps (None: the model's current
    target) and written as packets, ``fout`` being flushed after each batch of packets.
    The end of the input ends the stream with an end packet.

    Raises ``OpenCodecError`` for a model that cannot stream, ``AudioIOError`` for bad or
    empty input (nothing is written then), ``UnsupportedBandwidthError`` for a bandwidth
    the model does not support.
    """
    check_streamable(model.config)
    previous = model.bandwidth
    if bandwidth is not None:
        model.set_target_bandwidth(bandwidth)
    try:
        # fast mode: the network runs once per packet (each packet still leaves as early)
        encoder = StreamingEncoder(model, frames_per_call=frames_per_packet)
    finally:
        model.bandwidth = previous
    info = StreamInfo.from_model(model, encoder.num_codebooks, frames_per_packet)
    writer = PacketWriter(info, header_every)
    reader = PcmStreamReader(fin, raw, name)
    rate, channels = model.sample_rate, model.channels
    device, dtype = model_device(model), model_dtype(model)
    resampler = None
    if reader.format.sample_rate != rate:
        resampler = soxr.ResampleStream(reader.format.sample_rate, rate, channels, dtype="float32",
                                        quality=RESAMPLE_QUALITY)
    report = EncodeReport(num_codebooks=info.num_codebooks, sample_rate=rate)

    def send(data: bytes) -> None:
        if data:
            fout.write(data)
            fout.flush()

    def encode(x: np.ndarray) -> None:  # x [n, C] float32 at the model's rate
        report.samples += x.shape[0]
        step = max(1, int(_PUSH_SECONDS * rate))
        for start in range(0, x.shape[0], step):
            piece = torch.from_numpy(np.ascontiguousarray(x[start:start + step].T))[None]
            send(writer.push(encoder.push(piece.to(device=device, dtype=dtype))[0]))

    loud = _LoudInput(name, reader.format)
    while (block := reader.read(read_bytes)) is not None:
        loud.check(block)
        x = convert_channels(torch.from_numpy(np.ascontiguousarray(block.T)), channels).numpy().T
        x = np.ascontiguousarray(x, dtype=np.float32)
        if resampler is not None:
            x = resampler.resample_chunk(x).reshape(-1, channels)
        encode(x)
    if resampler is not None:
        encode(resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True)
               .reshape(-1, channels))
    if report.samples == 0:
        raise AudioIOError(f"{name}: no audio samples to encode")
    send(writer.push(encoder.flush()[0]))
    send(writer.finish(report.samples))
    report.frames, report.packets, report.bytes = writer.frames, writer.packets, writer.bytes
    return report


class _LoudInput:
    """Warns once (``warnings.warn``, a ``warning:`` line on the command line) when float
    input goes beyond full scale, as ``compress`` does (:func:`opencodec.audio.loud_input_message`):
    the codec distorts it. Integer formats cannot exceed it. The peak named is the first
    block's that does: the stream is live, its end may never come."""

    def __init__(self, name: str, fmt: PcmFormat):
        self.name = name
        self.active = fmt.encoding in ("f32", "f64")

    def check(self, block: np.ndarray) -> None:
        """Look at the next samples [n, C] (before conversion)."""
        if not self.active or block.size == 0:
            return
        text = loud_input_message(self.name, float(np.abs(block).max()))
        if text is not None:
            self.active = False
            warnings.warn(text, stacklevel=3)


@dataclass
class DecodeReport:
    """What :func:`decode_stream` did: ``samples`` per channel written at ``sample_rate``,
    ``concealed_samples`` of them silence for lost frames, and the receiver's counts."""

    samples: int = 0
    concealed_samples: int = 0
    sample_rate: int = 0
    channels: int = 0
    bytes_read: int = 0
    stats: ReceiverStats = field(default_factory=ReceiverStats)


def decode_stream(fin: tp.BinaryIO, fout: tp.BinaryIO,
                  load: tp.Callable[[StreamInfo], EncodecModel], *, raw: bool = False,
                  float32: bool = False, warn: tp.Callable[[str], None] | None = None,
                  max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS,
                  read_bytes: int = 1 << 14, fast_lstm: bool = True) -> DecodeReport:
    """Decode packets from ``fin`` to audio on ``fout`` (WAV stream, or raw with ``raw``),
    as they arrive; ``fout`` is flushed after each read.

    ``load(info)`` gives the model of a stream (checked against its header). Losses,
    damage, joining mid-stream and truncation are reported through ``warn`` (one line
    each) and handled as the module documentation describes. Raises ``BitstreamError``
    when no stream header is found in the whole input (nothing is written then), when a
    header does not fit the model, or when a later stream changes the sample rate or the
    channels.
    """
    warn = warn or (lambda message: None)
    parser = PacketParser()
    receiver = StreamReceiver(max_gap_seconds)
    audio = PacketAudioDecoder(load, fast_lstm=fast_lstm)
    report = DecodeReport(stats=receiver.stats)
    sink: AudioSink | None = None

    def run(events: tp.Iterable[Event]) -> None:
        nonlocal sink
        for event in events:
            if isinstance(event, Notice):
                warn(event.message)
                continue
            for chunk in audio.handle(event):
                assert sink is not None
                sink.write(chunk)
            if sink is None and isinstance(event, StreamStart):  # after the model is checked
                sink = AudioSink(fout, event.info.sample_rate, event.info.channels,
                                 float32=float32, raw=raw)

    def receive(packets: list[Packet]) -> None:
        for packet in packets:
            run(receiver.handle(packet))

    while data := _read_some(fin, read_bytes):
        report.bytes_read += len(data)
        receive(parser.feed(data))
        if sink is not None:
            fout.flush()
    receive(parser.finish())
    run(receiver.finish())
    if sink is None:
        raise BitstreamError(f"no stream header found in {report.bytes_read} bytes of input (not "
                             f"an opencodec packet stream, or cut before its first header)")
    sink.close()
    fout.flush()
    report.samples, report.concealed_samples = sink.frames, audio.concealed_samples
    report.sample_rate, report.channels = sink.sample_rate, sink.channels
    if sink.peak > 1.0:
        warn(f"peak amplitude {sink.peak:.4f} exceeds full scale 1.0; clipped (--float keeps "
             "the peaks)")
    return report
