"""Packetised stream container for live use (pipes, sockets): ``stream-encode``/``stream-decode``.

An ``.ecdc`` file needs its length up front; a live stream does not have one. Here the codes
travel in small packets, each with a sync word, a sequence number and a CRC-32, so that a
receiver can start anywhere, notice lost and damaged packets, and find its way back in::

    audio --StreamingEncoder--> code frames --PacketWriter--> bytes
    bytes --PacketParser--> packets --StreamReceiver--> frames / gaps --PacketAudioDecoder--> audio

``encode_stream`` and ``decode_stream`` run the whole chain between two binary streams (the
command line passes stdin and stdout). Only causal models that neither segment nor
renormalise can be streamed (``opencodec_24khz``, ``encodec_24khz``).

One job per module:

* :mod:`.format`: the byte layout (documented there byte by byte), :class:`StreamInfo`,
  the packet builders and the stream header reader;
* :mod:`.writer`: code frames -> packet bytes (:class:`PacketWriter`);
* :mod:`.parser`: bytes -> packets, damage and resynchronisation (:class:`PacketParser`);
* :mod:`.receiver`: packets -> stream events, loss, joining, restarts (:class:`StreamReceiver`);
* :mod:`.decoder`: events -> audio with concealment and trimming (:class:`PacketAudioDecoder`);
* :mod:`.pcm` and :mod:`.sink`: PCM/WAV in and WAV/raw out on pipes;
* :mod:`.pipe`: the whole chain, :func:`encode_stream` and :func:`decode_stream`.

The model-level streaming itself (:class:`~opencodec.streaming.StreamingEncoder`,
:class:`~opencodec.streaming.StreamingDecoder`) is the layer below, in
:mod:`opencodec.streaming`: it knows nothing of packets and is also used for long files
(:mod:`opencodec.longform`).

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

import typing as _tp

from .._lazy import lazy_names as _lazy_names

if _tp.TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports these on first use
    from .decoder import PacketAudioDecoder, check_model_for_stream, check_streamable
    from .defaults import DEFAULT_FRAMES_PER_PACKET, DEFAULT_HEADER_EVERY, RAW_FORMATS
    from .format import (PACKET_OVERHEAD, SYNC, TYPE_DATA, TYPE_END, TYPE_HEADER, VERSION, StreamInfo,
                         data_packet, end_packet, header_packet, model_label, parse_header_body,
                         split_model_label)
    from .parser import Damaged, DataPacket, EndPacket, HeaderPacket, Packet, PacketParser
    from .pcm import PcmFormat, PcmStreamReader
    from .pipe import DecodeReport, EncodeReport, decode_stream, encode_stream
    from .receiver import (DEFAULT_MAX_GAP_SECONDS, CodeFrames, Event, MissingFrames, Notice,
                           ReceiverStats, StreamEnd, StreamReceiver, StreamStart)
    from .sink import AudioSink
    from .writer import PacketWriter

__all__ = [
    "SYNC", "VERSION", "TYPE_HEADER", "TYPE_DATA", "TYPE_END", "PACKET_OVERHEAD",
    "DEFAULT_FRAMES_PER_PACKET", "DEFAULT_HEADER_EVERY", "DEFAULT_MAX_GAP_SECONDS", "StreamInfo",
    "header_packet", "data_packet", "end_packet", "parse_header_body", "PacketWriter",
    "HeaderPacket", "DataPacket", "EndPacket", "Damaged", "Packet", "PacketParser",
    "StreamStart", "CodeFrames", "MissingFrames", "StreamEnd", "Notice", "Event", "ReceiverStats",
    "StreamReceiver", "PacketAudioDecoder", "check_streamable", "check_model_for_stream",
    "model_label", "split_model_label",
    "PcmFormat", "RAW_FORMATS", "PcmStreamReader", "AudioSink",
    "EncodeReport", "DecodeReport", "encode_stream", "decode_stream",
]

# The names load on first use (PEP 562): the command line reads the defaults (module
# ``defaults``) to build its help without importing the chain, and with it torch.
_LAZY: dict[str, str] = {
    "PacketAudioDecoder": "decoder", "check_model_for_stream": "decoder", "check_streamable": "decoder",
    "DEFAULT_FRAMES_PER_PACKET": "defaults", "DEFAULT_HEADER_EVERY": "defaults", "RAW_FORMATS": "defaults",
    "PACKET_OVERHEAD": "format", "SYNC": "format", "StreamInfo": "format", "TYPE_DATA": "format",
    "TYPE_END": "format", "TYPE_HEADER": "format", "VERSION": "format", "data_packet": "format",
    "end_packet": "format", "header_packet": "format", "model_label": "format",
    "parse_header_body": "format", "split_model_label": "format",
    "Damaged": "parser", "DataPacket": "parser", "EndPacket": "parser", "HeaderPacket": "parser",
    "Packet": "parser", "PacketParser": "parser",
    "PcmFormat": "pcm", "PcmStreamReader": "pcm",
    "DecodeReport": "pipe", "EncodeReport": "pipe", "decode_stream": "pipe", "encode_stream": "pipe",
    "CodeFrames": "receiver", "DEFAULT_MAX_GAP_SECONDS": "receiver", "Event": "receiver",
    "MissingFrames": "receiver", "Notice": "receiver", "ReceiverStats": "receiver", "StreamEnd": "receiver",
    "StreamReceiver": "receiver", "StreamStart": "receiver",
    "AudioSink": "sink",
    "PacketWriter": "writer",
}
__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals(), __all__)
