"""Packetised stream container for live use (pipes, sockets): ``stream-encode``/``stream-decode``.

An ``.ecdc`` file needs its length up front; a live stream does not have one. Here the codes
travel in small packets, each with a sync word, a sequence number and a CRC-32, so that a
receiver can start anywhere, notice lost and damaged packets, and find its way back in::

    audio --StreamingEncoder--> code frames --PacketWriter--> bytes
    bytes --PacketParser--> packets --StreamReceiver--> frames / gaps --PacketAudioDecoder--> audio

``encode_stream`` and ``decode_stream`` run the whole chain between two binary streams (the
command line passes stdin and stdout). Only causal models that neither segment nor
renormalise can be streamed (``opencodec_24khz``, ``encodec_24khz``).

Byte layout (version 1)
-----------------------
All integers are big-endian (as in ``.ecdc``). Every packet is::

    offset  size  field
    0       4     sync word b"OCSP" (4f 43 53 50)
    4       1     type: 0x48 'H' stream header, 0x44 'D' data, 0x45 'E' end of stream
    5       4     seq: uint32, the data-packet sequence number (see below), modulo 2**32
    9       2     n: body length in bytes (uint16)
    11      n     body (per type, below)
    11+n    4     CRC-32 (zlib.crc32, uint32) of bytes [0, 11+n): sync, type, seq, n and body

Stream header body (``n = 12 + len(name)``); ``seq`` is that of the next data packet::

    11  1  version (1)
    12  4  sample rate of the model, Hz (uint32)
    16  1  channels (1..255)
    17  1  K: codebooks per frame (1..255)
    18  1  bits per code (1..32; log2 of the codebook size)
    19  2  hop length: samples per code frame (uint16)
    21  1  frames per data packet, fpp (1..255)
    22  1  name length L (1..255)
    23  L  model name, UTF-8 (what ``opencodec.load_model`` is given to decode); for models
           other than the official ones followed by "#" and the weights hash prefix
           (16 hex digits, as ``mh`` in ``.ecdc``): ``opencodec_24khz_v5#e701927ffb852e18``.
           A decoder refuses a model with another hash (:func:`split_model_label`)

Data body (``n = 1 + ceil(K * F * bits / 8)``)::

    11  1  F: code frames in this packet (1..fpp)
    12  .  the codes [K, F], packed exactly like an ``.ecdc`` segment: time-major
           (for t: for k), ``bits`` each, LSB-first, the last byte zero-padded
           (:func:`opencodec.bitstream.pack_codes`)

End-of-stream body (``n = 8``); ``seq`` is the number of data packets sent::

    11  8  total samples per channel of the stream at the model's rate (uint64)

Sequence numbers and frame positions: data packets are numbered 0, 1, 2, ... and every
data packet but the last of a stream carries exactly fpp frames, so data packet ``s``
starts at code frame ``s * fpp`` (time ``s * fpp * hop / rate``). A receiver that knows
the next expected number detects a loss as a jump and knows exactly how many frames are
missing; the end packet's length gives the frames of a lost final packet as well.
Header and end packets are not numbered themselves (they repeat the data numbering), so
losing one costs no audio. The writer sends a header before data packet 0 and before
every ``header_every``-th data packet (default 16, i.e. every ~0.85 s at the default 4
frames per packet and 75 frames/s): a receiver that joins mid-stream skips bytes until
the next header and starts decoding at the data packet that follows it.

A stream may be followed by another one (a new header after an end packet: e.g.
``cat a.ocs b.ocs``); a header whose numbering goes backwards, or whose fields change,
also starts a new stream.

Receiving (``PacketParser`` + ``StreamReceiver``)
-------------------------------------------------
* The parser scans for the sync word, checks the type, a plausible length (a data body
  can be at most ``1 + ceil(K * fpp * bits / 8)`` bytes once a header is known, so a
  damaged length field never makes it wait for more than one packet) and the CRC. A
  failure at any step drops one byte and scans on; the bytes between the last good packet
  and the next good one are reported once as a :class:`Damaged` region.
* The receiver waits for a header (everything before it is reported as skipped), then
  follows the numbering: a jump of ``d`` data packets means ``d * fpp`` frames are
  missing (:class:`MissingFrames`); an older number is a duplicate or out-of-order packet
  and is dropped; a jump of more than ``max_gap_seconds`` (default 30 s) is not concealed
  but starts a new stream (it is taken for a restart of the sender, not for a loss).
* ``PacketAudioDecoder`` conceals missing frames with digital silence of exactly their
  duration: the decoder state is flushed (so the audio before the gap is complete), the
  zeros follow, and decoding restarts fresh after the gap (the causal decoder's warm-up
  of a few frames applies again). The output therefore keeps the stream's timing: it has
  exactly as many samples as a loss-free reception would have.
* The output is trimmed to the length in the end packet. To be able to do that, the last
  ``hop - 1`` samples decoded are held back until more audio (or the end) arrives: one
  code frame of extra latency. A stream that ends without an end packet (truncated,
  interrupted) is written out in full (whole frames) and reported.

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

import struct
import typing as tp
import zlib
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch

from .audio import RESAMPLE_QUALITY, _to_file_samples, convert_channels
from .bitstream import pack_codes, packed_size, unpack_codes
from .compress import _check_bandwidth, _model_device, _model_dtype
from .errors import AudioIOError, BitstreamError, OpenCodecError
from .identity import HASH_CHARS, check_model_for_file, header_identity
from .model import EncodecConfig, EncodecModel
from .streaming import StreamingDecoder, StreamingEncoder

__all__ = [
    "SYNC", "VERSION", "TYPE_HEADER", "TYPE_DATA", "TYPE_END", "PACKET_OVERHEAD",
    "DEFAULT_FRAMES_PER_PACKET", "DEFAULT_HEADER_EVERY", "StreamInfo",
    "header_packet", "data_packet", "end_packet", "PacketWriter",
    "HeaderPacket", "DataPacket", "EndPacket", "Damaged", "PacketParser",
    "StreamStart", "CodeFrames", "MissingFrames", "StreamEnd", "Notice", "StreamReceiver",
    "PacketAudioDecoder", "check_streamable", "check_model_for_stream", "model_label",
    "split_model_label",
    "PcmFormat", "RAW_FORMATS", "PcmStreamReader", "AudioSink",
    "EncodeReport", "DecodeReport", "encode_stream", "decode_stream",
]

SYNC = b"OCSP"
"""The four bytes every packet starts with."""

VERSION = 1
"""Format version carried in every stream header."""

TYPE_HEADER, TYPE_DATA, TYPE_END = 0x48, 0x44, 0x45  # 'H', 'D', 'E'
_TYPE_NAMES = {TYPE_HEADER: "header", TYPE_DATA: "data", TYPE_END: "end"}

_PREFIX = struct.Struct(">4sBIH")  # sync, type, seq, body length: 11 bytes
_CRC = struct.Struct(">I")
_HEADER_FIXED = struct.Struct(">BIBBBHBB")  # version, rate, channels, K, bits, hop, fpp, name length
_END_BODY = struct.Struct(">Q")

SEQ_MODULO = 1 << 32
MAX_BODY = 0xFFFF
PACKET_OVERHEAD = _PREFIX.size + 1 + _CRC.size
"""Bytes a data packet adds to its packed codes (16)."""

DEFAULT_FRAMES_PER_PACKET = 4
DEFAULT_HEADER_EVERY = 16
DEFAULT_MAX_GAP_SECONDS = 30.0

_PUSH_SECONDS = 1.0  # the encoder network sees at most this much audio per push


# ------------------------------------------------------------------------------------------
# Stream parameters
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamInfo:
    """What a stream header says: the model and the layout of the data packets.

    ``sample_rate`` in Hz, ``hop_length`` in samples per code frame, ``num_codebooks`` (K)
    codes of ``bits`` bits per frame, ``frames_per_packet`` (fpp) frames per data packet.
    Invalid values raise ``BitstreamError`` naming the field.
    """

    model_name: str
    sample_rate: int
    channels: int
    num_codebooks: int
    bits: int
    hop_length: int
    frames_per_packet: int

    def __post_init__(self) -> None:
        name = self.model_name
        if not isinstance(name, str) or not name or len(name.encode("utf-8")) > 255:
            raise BitstreamError(f"stream header field 'model name': expected 1 to 255 bytes of "
                                 f"UTF-8, got {name!r}")
        for key, low, high in (("sample_rate", 1, 0xFFFFFFFF), ("channels", 1, 255),
                               ("num_codebooks", 1, 255), ("bits", 1, 32),
                               ("hop_length", 1, 0xFFFF), ("frames_per_packet", 1, 255)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise BitstreamError(f"stream header field {key!r}: expected an integer in "
                                     f"[{low}, {high}], got {value!r}")
        if self.max_data_body > MAX_BODY:
            raise BitstreamError(f"a data packet of {self.frames_per_packet} frames x "
                                 f"{self.num_codebooks} codebooks x {self.bits} bits needs "
                                 f"{self.max_data_body} bytes, more than the {MAX_BODY} a packet "
                                 f"holds; use fewer frames per packet")

    @classmethod
    def from_model(cls, model: EncodecModel, num_codebooks: int,
                   frames_per_packet: int = DEFAULT_FRAMES_PER_PACKET) -> "StreamInfo":
        """The parameters of a stream of ``model``'s codes with ``num_codebooks`` codebooks."""
        return cls(model_name=model_label(model), sample_rate=int(model.sample_rate),
                   channels=int(model.channels), num_codebooks=int(num_codebooks),
                   bits=int(model.bits_per_codebook), hop_length=int(model.hop_length),
                   frames_per_packet=int(frames_per_packet))

    @property
    def model(self) -> tuple[str, str | None]:
        """The model's name and weights hash (None when the header has none)."""
        return split_model_label(self.model_name)

    @property
    def max_data_body(self) -> int:
        """Largest data body in bytes: F byte + packed codes of fpp frames."""
        return 1 + packed_size(self.num_codebooks * self.frames_per_packet, self.bits)

    def data_body_size(self, frames: int) -> int:
        """Body bytes of a data packet with ``frames`` frames."""
        return 1 + packed_size(self.num_codebooks * frames, self.bits)

    def frames_for(self, samples: int) -> int:
        """Code frames for ``samples`` samples: ``ceil(samples / hop_length)``."""
        return -(-samples // self.hop_length)


def model_label(model: EncodecModel) -> str:
    """The stream header's model field for ``model``: its name, then ``#`` and its weights
    hash for every model but the official ones (see :mod:`opencodec.identity`)."""
    name, digest = header_identity(model)
    return name if digest is None else f"{name}#{digest}"


def split_model_label(label: str) -> tuple[str, str | None]:
    """``(name, weights hash or None)`` of a stream header's model field."""
    name, sep, digest = label.rpartition("#")
    if sep and len(digest) == HASH_CHARS and set(digest) <= set("0123456789abcdef"):
        return name, digest
    return label, None


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def _packet(ptype: int, seq: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise BitstreamError(f"packet body of {len(body)} bytes exceeds {MAX_BODY}")
    head = _PREFIX.pack(SYNC, ptype, seq % SEQ_MODULO, len(body)) + body
    return head + _CRC.pack(zlib.crc32(head))


def header_packet(info: StreamInfo, seq: int) -> bytes:
    """The bytes of a stream header packet; ``seq`` is the number of the next data packet."""
    name = info.model_name.encode("utf-8")
    body = _HEADER_FIXED.pack(VERSION, info.sample_rate, info.channels, info.num_codebooks,
                              info.bits, info.hop_length, info.frames_per_packet, len(name)) + name
    return _packet(TYPE_HEADER, seq, body)


def data_packet(info: StreamInfo, seq: int, codes: tp.Any) -> bytes:
    """The bytes of data packet ``seq`` holding ``codes`` [K, F] (ints in [0, 2**bits)),
    1 <= F <= fpp."""
    shape = tuple(codes.shape)
    if len(shape) != 2 or shape[0] != info.num_codebooks or not 1 <= shape[1] <= info.frames_per_packet:
        raise ValueError(f"data packet codes must have shape [{info.num_codebooks}, F] with "
                         f"1 <= F <= {info.frames_per_packet}, got {list(shape)}")
    return _packet(TYPE_DATA, seq, bytes([shape[1]]) + pack_codes(codes, info.bits))


def end_packet(seq: int, total_samples: int) -> bytes:
    """The bytes of an end-of-stream packet: ``seq`` data packets were sent, holding
    ``total_samples`` samples per channel."""
    if not 0 <= total_samples < 1 << 64:
        raise ValueError(f"total_samples must fit in 64 bits, got {total_samples}")
    return _packet(TYPE_END, seq, _END_BODY.pack(total_samples))


class PacketWriter:
    """Code frames -> packet bytes: groups frames by fpp, numbers the data packets and
    repeats the stream header before every ``header_every``-th data packet.

    ``push(codes [K, f])`` returns the bytes of the packets completed (b"" when fewer than
    fpp frames are waiting); ``finish(total_samples)`` sends the last, shorter packet and
    the end packet. Counters: ``packets``, ``data_packets``, ``frames``, ``bytes``.
    """

    def __init__(self, info: StreamInfo, header_every: int = DEFAULT_HEADER_EVERY):
        if isinstance(header_every, bool) or not isinstance(header_every, int) or header_every < 1:
            raise ValueError(f"header_every must be an integer >= 1, got {header_every!r}")
        self.info = info
        self.header_every = header_every
        self._pending: list[np.ndarray] = []
        self._count = 0
        self._header_sent = False
        self.data_packets = 0  # also the number of the next data packet
        self.packets = 0
        self.frames = 0
        self.bytes = 0

    def _emit(self, data: bytes) -> bytes:
        self.packets += 1
        self.bytes += len(data)
        return data

    def _header_if_due(self) -> bytes:
        if self._header_sent and self.data_packets % self.header_every:
            return b""
        self._header_sent = True
        return self._emit(header_packet(self.info, self.data_packets))

    def _data(self, codes: np.ndarray) -> bytes:
        out = self._header_if_due()
        out += self._emit(data_packet(self.info, self.data_packets, codes))
        self.data_packets += 1
        self.frames += codes.shape[1]
        return out

    def push(self, codes: torch.Tensor | np.ndarray) -> bytes:
        """Add code frames [K, f] (f >= 0); returns the packets now complete, as bytes."""
        arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if arr.ndim != 2 or arr.shape[0] != self.info.num_codebooks:
            raise ValueError(f"expected codes [{self.info.num_codebooks}, f], got {list(arr.shape)}")
        if arr.shape[1] == 0:
            return b""
        self._pending.append(arr)
        self._count += arr.shape[1]
        fpp = self.info.frames_per_packet
        if self._count < fpp:
            return b""
        block = np.concatenate(self._pending, axis=1)
        whole = block.shape[1] - block.shape[1] % fpp
        out = b"".join(self._data(block[:, i:i + fpp]) for i in range(0, whole, fpp))
        rest = block[:, whole:]
        self._pending, self._count = ([rest] if rest.shape[1] else []), rest.shape[1]
        return out

    def finish(self, total_samples: int) -> bytes:
        """Send the frames still waiting and the end packet; ``total_samples`` per channel
        must need exactly the frames pushed (``ceil(total / hop)``)."""
        out = b""
        if self._count:
            out += self._data(np.concatenate(self._pending, axis=1))
            self._pending, self._count = [], 0
        expected = self.info.frames_for(total_samples)
        if expected != self.frames:
            raise ValueError(f"{total_samples} samples make {expected} frames, but "
                             f"{self.frames} were pushed")
        if not self._header_sent:
            out += self._header_if_due()
        return out + self._emit(end_packet(self.data_packets, total_samples))


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderPacket:
    """A stream header at byte ``offset`` of the input; ``seq``: next data packet's number."""

    offset: int
    seq: int
    info: StreamInfo


@dataclass(frozen=True)
class DataPacket:
    """A data packet: ``num_frames`` frames, ``payload`` the packed codes (not yet checked
    against a header)."""

    offset: int
    seq: int
    num_frames: int
    payload: bytes


@dataclass(frozen=True)
class EndPacket:
    """An end-of-stream packet: ``seq`` data packets were sent, ``total_samples`` per channel."""

    offset: int
    seq: int
    total_samples: int


@dataclass(frozen=True)
class Damaged:
    """``size`` bytes at ``offset`` that are not a valid packet; ``reason`` says why the first
    of them was rejected; ``truncated``: the region runs to the end of the input."""

    offset: int
    size: int
    reason: str
    truncated: bool = False


Packet = tp.Union[HeaderPacket, DataPacket, EndPacket, Damaged]
_NEED_MORE = object()


def _parse_header_body(body: bytes, offset: int) -> StreamInfo:
    version = body[0]
    if version != VERSION:
        raise BitstreamError(f"stream header at byte {offset}: format version {version} is not "
                             f"supported (this reader knows version {VERSION})")
    _, rate, channels, k, bits, hop, fpp, name_len = _HEADER_FIXED.unpack_from(body)
    name = body[_HEADER_FIXED.size:]
    if len(name) != name_len:
        raise BitstreamError(f"stream header at byte {offset}: name length field says {name_len} "
                             f"bytes, the packet holds {len(name)}")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError(f"stream header at byte {offset}: model name is not UTF-8") from None
    return StreamInfo(model_name=text, sample_rate=rate, channels=channels, num_codebooks=k,
                      bits=bits, hop_length=hop, frames_per_packet=fpp)


class PacketParser:
    """Bytes in, packets out: finds sync words, checks lengths and CRCs, resynchronises.

    ``feed(data)`` returns the packets (and :class:`Damaged` regions) completed by
    ``data``; ``finish()`` handles the end of the input (a partial packet there is
    reported as a truncated :class:`Damaged` region). Offsets count bytes from the first
    byte fed. A packet whose CRC is right but whose header fields are invalid (e.g. an
    unknown format version) raises ``BitstreamError``: that is a wrong stream, not damage.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # input offset of _buf[0]
        self._max_data = MAX_BODY  # bound on a data body, from the last header
        self._bad_start: int | None = None
        self._bad_reason = ""

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; returns what is now complete."""
        self._buf += data
        return self._scan(final=False)

    def finish(self) -> list[Packet]:
        """End of input: returns the last packets and any damaged or truncated tail."""
        out = self._scan(final=True)
        if self._bad_start is not None:
            out.append(Damaged(self._bad_start, self._base - self._bad_start, self._bad_reason,
                               truncated=True))
            self._bad_start = None
        return out

    def _mark_bad(self, offset: int, reason: str) -> None:
        if self._bad_start is None:
            self._bad_start, self._bad_reason = offset, reason

    def _close_bad(self, end: int, out: list[Packet]) -> None:
        if self._bad_start is not None:
            out.append(Damaged(self._bad_start, end - self._bad_start, self._bad_reason))
            self._bad_start = None

    def _scan(self, final: bool) -> list[Packet]:
        buf, out, pos = self._buf, [], 0
        while pos < len(buf):
            idx = buf.find(SYNC, pos)
            if idx < 0:
                keep = 0 if final else min(len(SYNC) - 1, len(buf) - pos)  # a split sync word
                if len(buf) - keep > pos:
                    self._mark_bad(self._base + pos, "bytes without a sync word")
                pos = len(buf) - keep
                break
            if idx > pos:
                self._mark_bad(self._base + pos, "bytes without a sync word")
            pos = idx
            result = self._packet_at(pos)
            if result is _NEED_MORE:
                if not final:
                    break
                result = f"stream ends inside a packet ({len(buf) - pos} bytes of it)"
            if isinstance(result, str):
                self._mark_bad(self._base + pos, result)
                pos += 1
                continue
            packet, size = tp.cast(tuple[Packet, int], result)
            self._close_bad(self._base + pos, out)
            out.append(packet)
            pos += size
        if final and pos < len(buf):
            self._mark_bad(self._base + pos, "bytes without a sync word")
            pos = len(buf)
        del buf[:pos]
        self._base += pos
        return out

    def _packet_at(self, pos: int) -> tp.Any:
        """(packet, size), a reason string for a bad packet, or _NEED_MORE."""
        buf = self._buf
        if len(buf) - pos < _PREFIX.size:
            return _NEED_MORE
        _, ptype, seq, n = _PREFIX.unpack_from(buf, pos)
        kind = _TYPE_NAMES.get(ptype)
        if kind is None:
            return f"unknown packet type 0x{ptype:02x}"
        low, high = {TYPE_HEADER: (_HEADER_FIXED.size + 1, _HEADER_FIXED.size + 255),
                     TYPE_DATA: (2, self._max_data),
                     TYPE_END: (_END_BODY.size, _END_BODY.size)}[ptype]
        if not low <= n <= high:
            return f"implausible body length {n} for a {kind} packet (expected {low} to {high})"
        size = _PREFIX.size + n + _CRC.size
        if len(buf) - pos < size:
            return _NEED_MORE
        head = bytes(buf[pos:pos + _PREFIX.size + n])
        (crc,) = _CRC.unpack_from(buf, pos + _PREFIX.size + n)
        if zlib.crc32(head) != crc:
            return f"CRC mismatch in a {kind} packet (seq field {seq}, {size} bytes)"
        body = head[_PREFIX.size:]
        offset = self._base + pos
        packet: Packet
        if ptype == TYPE_HEADER:
            info = _parse_header_body(body, offset)
            self._max_data = info.max_data_body
            packet = HeaderPacket(offset, seq, info)
        elif ptype == TYPE_DATA:
            packet = DataPacket(offset, seq, body[0], body[1:])
        else:
            packet = EndPacket(offset, seq, _END_BODY.unpack(body)[0])
        return packet, size


# ------------------------------------------------------------------------------------------
# Following a stream: numbering, gaps, starts and ends
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamStart:
    """A stream begins (or is joined) at code frame ``first_frame`` of the sender's stream."""

    info: StreamInfo
    first_frame: int


@dataclass(frozen=True)
class CodeFrames:
    """Codes [K, F] (LongTensor) of frames ``first_frame .. first_frame + F - 1``."""

    first_frame: int
    codes: torch.Tensor


@dataclass(frozen=True)
class MissingFrames:
    """``count`` frames from ``first_frame`` on were lost (to be concealed)."""

    first_frame: int
    count: int


@dataclass(frozen=True)
class StreamEnd:
    """The stream is over; ``length``: samples per channel from its ``StreamStart`` frame on
    (None when unknown: no end packet, or one that does not fit the frames received)."""

    length: int | None


@dataclass(frozen=True)
class Notice:
    """Something the user should hear about (loss, damage, joining mid-stream, ...)."""

    message: str


Event = tp.Union[StreamStart, CodeFrames, MissingFrames, StreamEnd, Notice]


def _seq_distance(seq: int, expected: int) -> int:
    """``seq - expected`` modulo 2**32, read as a signed number in [-2**31, 2**31)."""
    d = (seq - expected) % SEQ_MODULO
    return d - SEQ_MODULO if d >= SEQ_MODULO // 2 else d


@dataclass
class ReceiverStats:
    """Counts kept by :class:`StreamReceiver`."""

    streams: int = 0
    packets: int = 0
    data_packets: int = 0
    lost_packets: int = 0
    missing_frames: int = 0
    damaged_regions: int = 0
    damaged_bytes: int = 0
    dropped_packets: int = 0
    skipped_bytes: int = 0  # before the first header of a stream (joining mid-stream)


class StreamReceiver:
    """Parsed packets -> :data:`Event`\\ s: starts, code frames, gaps, ends and notices.

    Model-free: the codes are unpacked with the header's K and bits. ``max_gap_seconds``:
    a jump in the numbering longer than this is treated as a new stream rather than
    concealed. See the module documentation for the rules.
    """

    def __init__(self, max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS):
        self.max_gap_seconds = float(max_gap_seconds)
        self.stats = ReceiverStats()
        self.info: StreamInfo | None = None
        self._expected = 0  # absolute number of the next data packet
        self._next_frame = 0  # absolute index of the next frame
        self._start_frame = 0
        self._pre_bytes = 0  # skipped while waiting for a header
        self._pre_packets = 0

    @property
    def active(self) -> bool:
        """True inside a stream (after its header, before its end)."""
        return self.info is not None

    def handle(self, packet: Packet) -> list[Event]:
        """Events for one parsed packet."""
        if isinstance(packet, Damaged):
            return self._damaged(packet)
        self.stats.packets += 1
        if isinstance(packet, HeaderPacket):
            return self._header(packet)
        if self.info is None:
            self._pre_packets += 1
            self._skip(_PREFIX.size + _CRC.size + (
                1 + len(packet.payload) if isinstance(packet, DataPacket) else _END_BODY.size))
            return []
        if isinstance(packet, DataPacket):
            return self._data(packet)
        return self._end(packet)

    def finish(self) -> list[Event]:
        """End of input: ends an open stream (as truncated)."""
        events: list[Event] = []
        if self.info is not None:
            events.append(Notice("the stream ended without an end packet (truncated or "
                                 "interrupted): the last frame is written in full, untrimmed"))
            events += self._stop(None)
        elif self._pre_bytes and self.stats.streams:
            events.append(Notice(f"no stream header after the last stream: {self._pre_bytes} "
                                 f"byte(s) ({self._pre_packets} packet(s)) skipped"))
        return events

    def _skip(self, size: int) -> None:
        """Count bytes skipped while waiting for a stream header."""
        self._pre_bytes += size
        self.stats.skipped_bytes += size

    # -- packets -------------------------------------------------------------------------
    def _damaged(self, packet: Damaged) -> list[Event]:
        if self.info is None:
            self._skip(packet.size)
            return []
        self.stats.damaged_regions += 1
        self.stats.damaged_bytes += packet.size
        if packet.truncated:
            return [Notice(f"stream truncated: the last {packet.size} byte(s) (from byte "
                           f"{packet.offset}) are not a complete packet ({packet.reason})")]
        return [Notice(f"corrupt data at bytes {packet.offset}-{packet.offset + packet.size - 1} "
                       f"({packet.size} bytes; {packet.reason}): dropped, resynchronised at byte "
                       f"{packet.offset + packet.size}")]

    def _header(self, packet: HeaderPacket) -> list[Event]:
        events: list[Event] = []
        if self.info is not None:
            if packet.info == self.info and _seq_distance(packet.seq, self._expected % SEQ_MODULO) >= 0:
                return []  # a repeated header; any loss shows at the next data or end packet
            reason = ("its parameters changed" if packet.info != self.info
                      else "its packet numbering went back")
            events.append(Notice(f"new stream header at byte {packet.offset} ({reason}): the "
                                 "previous stream ends here without an end packet"))
            events += self._stop(None)
        if self._pre_bytes:
            events.append(Notice(f"joined mid-stream: skipped {self._pre_bytes} byte(s) "
                                 f"({self._pre_packets} packet(s)) before the stream header at "
                                 f"byte {packet.offset}"))
        self._pre_bytes = self._pre_packets = 0
        self.info = packet.info
        self._expected = packet.seq
        self._start_frame = self._next_frame = packet.seq * packet.info.frames_per_packet
        self.stats.streams += 1
        return events + [StreamStart(packet.info, self._start_frame)]

    def _data(self, packet: DataPacket) -> list[Event]:
        info = self.info
        assert info is not None
        d = _seq_distance(packet.seq, self._expected % SEQ_MODULO)
        if d < 0:
            self.stats.dropped_packets += 1
            return [Notice(f"data packet {packet.seq} at byte {packet.offset} is a duplicate or "
                           f"out of order (expected {self._expected % SEQ_MODULO}): dropped")]
        frames = packet.num_frames
        if not 1 <= frames <= info.frames_per_packet or \
                len(packet.payload) + 1 != info.data_body_size(frames):
            self.stats.dropped_packets += 1
            return [Notice(f"data packet {packet.seq} at byte {packet.offset} does not fit the "
                           f"stream header ({frames} frame(s), {len(packet.payload)} code bytes; "
                           f"expected 1 to {info.frames_per_packet} frames of "
                           f"{info.num_codebooks} x {info.bits}-bit codes): dropped")]
        events: list[Event] = []
        seq = self._expected + d
        first = seq * info.frames_per_packet
        if first > self._next_frame:  # packets lost (or a short packet that was not the last)
            what = (f"data packet(s) {self._expected % SEQ_MODULO}-{(seq - 1) % SEQ_MODULO} lost"
                    if d > 0 else f"frames missing before data packet {packet.seq}")
            events += self._gap(first, d, what)
            if self.info is None:  # the gap was too long: a new stream starts here
                self.info = info
                self._expected = seq
                self._start_frame = self._next_frame = first
                self.stats.streams += 1
                events.append(StreamStart(info, first))
        codes = unpack_codes(packet.payload, info.num_codebooks, frames, info.bits)
        self._expected = seq + 1
        self._next_frame = first + frames
        self.stats.data_packets += 1
        return events + [CodeFrames(first, codes)]

    def _gap(self, first: int, lost_packets: int, what: str) -> list[Event]:
        """Frames ``_next_frame .. first - 1`` are missing: conceal them or, beyond
        ``max_gap_seconds``, end the stream (the caller restarts it)."""
        info = self.info
        assert info is not None
        count = first - self._next_frame
        if count <= 0:
            return []
        seconds = count * info.hop_length / info.sample_rate
        if seconds > self.max_gap_seconds:
            events: list[Event] = [Notice(f"{what}: a jump of {seconds:.1f} s, more than "
                                          f"{self.max_gap_seconds:g} s; not concealed, decoding "
                                          "restarts")]
            return events + self._stop(None)
        self.stats.lost_packets += lost_packets
        self.stats.missing_frames += count
        return [Notice(f"{what}: {count} frame(s) ({seconds:.3f} s) missing, replaced by silence"),
                MissingFrames(self._next_frame, count)]

    def _end(self, packet: EndPacket) -> list[Event]:
        info = self.info
        assert info is not None
        d = _seq_distance(packet.seq, self._expected % SEQ_MODULO)
        if d < 0:
            self.stats.dropped_packets += 1
            return [Notice(f"end packet at byte {packet.offset} is out of order (says "
                           f"{packet.seq} data packets, {self._expected % SEQ_MODULO} already "
                           "received): dropped")]
        total_frames = info.frames_for(packet.total_samples)
        events: list[Event] = []
        if total_frames > self._next_frame:
            lost = max(1, d)
            events += self._gap(total_frames, lost, f"the last {lost} data packet(s) lost")
            if self.info is None:
                return events
        length: int | None = packet.total_samples - self._start_frame * info.hop_length
        if total_frames < self._next_frame:
            events.append(Notice(f"end packet at byte {packet.offset} says {packet.total_samples} "
                                 f"samples, fewer than the {self._next_frame} frames received: "
                                 "output not trimmed"))
            length = None
        return events + self._stop(length)

    def _stop(self, length: int | None) -> list[Event]:
        self.info = None
        return [StreamEnd(length)]


# ------------------------------------------------------------------------------------------
# Decoding the codes to audio
# ------------------------------------------------------------------------------------------
def check_streamable(config: EncodecConfig) -> None:
    """Raise ``OpenCodecError`` unless a model of ``config`` (``model.config``) can be
    streamed (causal, no segments, no renormalisation), naming the reason."""
    reasons = []
    if not config.causal:
        reasons.append("it is not causal (its convolutions look into the future)")
    if config.segment is not None:
        reasons.append(f"it cuts the input into {config.segment:g} s segments")
    if config.normalize:
        reasons.append("it renormalises each segment by its loudness")
    if reasons:
        raise OpenCodecError(f"model {config.name!r} cannot be streamed: {'; '.join(reasons)}. "
                             "Streaming needs a causal model such as opencodec_24khz or "
                             "encodec_24khz; use 'opencodec compress' for files")


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
    if info.num_codebooks > model.n_q:
        raise BitstreamError(f"stream header says {info.num_codebooks} codebooks, but model "
                             f"{model.name!r} has at most {model.n_q}")
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
            out = self._add(decoder.flush()[0])
            silence = torch.zeros(self.channels or 1, event.count * self._hop)
            self.concealed_samples += silence.shape[-1]
            return out + self._add(silence)
        assert isinstance(event, StreamEnd)
        out = self._add(decoder.flush()[0])
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
        self._device = _model_device(model)
        self._decoder = StreamingDecoder(model, fast_lstm=self._fast_lstm)
        self._hop = info.hop_length
        self._held = torch.zeros(info.channels, 0)
        self._released = 0

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


# ------------------------------------------------------------------------------------------
# Pipe I/O: PCM/WAV in, WAV/raw out
# ------------------------------------------------------------------------------------------
def _read_some(fi: tp.BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, as soon as any are available (b"" at end of input)."""
    read1 = getattr(fi, "read1", None)
    return read1(size) if read1 is not None else fi.read(size)


def _read_exact(fi: tp.BinaryIO, size: int) -> bytes:
    """Exactly ``size`` bytes, or fewer at end of input."""
    parts, remaining = [], size
    while remaining > 0:
        chunk = _read_some(fi, min(remaining, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved PCM: ``sample_rate`` (Hz), ``channels`` and ``encoding``: 'u8', 's16',
    's24', 's32' (little-endian integers, full scale 2**(bits-1)) or 'f32', 'f64' (IEEE
    float, full scale 1.0)."""

    sample_rate: int
    channels: int
    encoding: str

    def __post_init__(self) -> None:
        if self.encoding not in _SAMPLE_BYTES:
            raise ValueError(f"unknown PCM encoding {self.encoding!r}")
        if self.sample_rate < 1 or self.channels < 1:
            raise AudioIOError(f"PCM format: sample rate and channels must be >= 1, got "
                               f"{self.sample_rate} Hz, {self.channels} channel(s)")

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return self.channels * _SAMPLE_BYTES[self.encoding]


_SAMPLE_BYTES = {"u8": 1, "s16": 2, "s24": 3, "s32": 4, "f32": 4, "f64": 8}
RAW_FORMATS = {"s16le": "s16", "f32le": "f32"}
"""``--format`` names of raw PCM -> :class:`PcmFormat` encodings."""

_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZE = 0xFFFFFFFF


def _decode_samples(raw: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole sample frames of ``raw`` -> float32 [n, C], scaled like libsndfile/soundfile."""
    enc = fmt.encoding
    if enc == "u8":
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif enc == "s16":
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif enc == "s24":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # top 24 bits of an int32
        x = (v >> 8).astype(np.float32) / float(1 << 23)
    elif enc == "s32":
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    elif enc == "f32":
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    else:
        x = np.frombuffer(raw, "<f8").astype(np.float32)
    return x.reshape(-1, fmt.channels)


class PcmStreamReader:
    """Reads PCM from a binary stream incrementally: a WAV stream (RIFF/RF64 header parsed
    first) or, with ``raw``, headerless samples.

    ``read(max_bytes)`` returns float32 samples [n, C] (n >= 1) as soon as some are
    available, or None at the end. WAV: PCM 8/16/24/32-bit, float 32/64-bit,
    WAVE_FORMAT_EXTENSIBLE of those. A data chunk size of 0 or 0xFFFFFFFF (what streaming
    writers put when the length is unknown) means "until the end of input"; otherwise the
    reader stops after that many bytes. ``name`` names the source in errors.
    """

    def __init__(self, fi: tp.BinaryIO, raw: PcmFormat | None = None, name: str = "stdin"):
        self._fi = fi
        self.name = name
        self._remaining: int | None = None  # data bytes left (None: until EOF)
        self._carry = b""
        self.frames_read = 0
        self.format = raw if raw is not None else self._parse_wav()

    def _fail(self, message: str) -> tp.NoReturn:
        raise AudioIOError(f"{self.name}: {message}")

    def _parse_wav(self) -> PcmFormat:
        start = _read_exact(self._fi, 12)
        if len(start) < 12 or start[:4] not in (b"RIFF", b"RF64") or start[8:12] != b"WAVE":
            hint = "" if start[:4] != b"RIFX" else " (big-endian RIFX is not supported)"
            self._fail(f"not a WAV stream{hint}: expected 'RIFF....WAVE', got {start[:12]!r}; for "
                       "headerless samples use --raw --rate R --channels C --format F")
        fmt: PcmFormat | None = None
        while True:
            chunk = _read_exact(self._fi, 8)
            if len(chunk) < 8:
                self._fail("WAV stream ends before its 'data' chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if fmt is None:
                    self._fail("WAV 'data' chunk comes before the 'fmt ' chunk")
                self._remaining = None if size in (0, _UNKNOWN_SIZE) else size
                return fmt
            if size > 1 << 20:
                self._fail(f"WAV chunk {cid!r} of {size} bytes before the audio data is too large")
            body = _read_exact(self._fi, size + (size & 1))
            if len(body) < size:
                self._fail(f"WAV stream ends inside its {cid!r} chunk")
            if cid == b"fmt ":
                fmt = self._parse_fmt(body[:size])

    def _parse_fmt(self, body: bytes) -> PcmFormat:
        if len(body) < 16:
            self._fail(f"WAV 'fmt ' chunk is {len(body)} bytes, expected at least 16")
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == _WAV_EXTENSIBLE and len(body) >= 26:
            tag = struct.unpack("<H", body[24:26])[0]  # first bytes of the sub-format GUID
        encodings = {(_WAV_PCM, 8): "u8", (_WAV_PCM, 16): "s16", (_WAV_PCM, 24): "s24",
                     (_WAV_PCM, 32): "s32", (_WAV_FLOAT, 32): "f32", (_WAV_FLOAT, 64): "f64"}
        encoding = encodings.get((tag, bits))
        if encoding is None:
            self._fail(f"unsupported WAV sample format (format tag 0x{tag:04x}, {bits} bits); "
                       "supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit")
        if channels < 1 or rate < 1:
            self._fail(f"WAV 'fmt ' chunk says {channels} channel(s) at {rate} Hz")
        fmt = PcmFormat(rate, channels, encoding)
        if align != fmt.frame_bytes:
            self._fail(f"WAV block align is {align}, expected {fmt.frame_bytes} for {channels} "
                       f"channel(s) of {bits} bits")
        return fmt

    def read(self, max_bytes: int = 1 << 15) -> np.ndarray | None:
        """The next samples [n, C] float32 (n >= 1), or None at the end of the input."""
        frame = self.format.frame_bytes
        while True:
            want = max(frame, max_bytes)
            if self._remaining is not None:
                want = min(want, self._remaining)
            data = _read_some(self._fi, want) if want > 0 else b""
            if not data:
                return None
            if self._remaining is not None:
                self._remaining -= len(data)
            data = self._carry + data
            whole = len(data) - len(data) % frame
            self._carry = data[whole:]
            if whole:
                x = _decode_samples(data[:whole], self.format)
                if not np.isfinite(x).all():
                    self._fail("the audio holds NaN or infinite samples")
                self.frames_read += x.shape[0]
                return x


class AudioSink:
    """Writes audio chunks [C, n] to a binary stream as they come: a WAV stream or raw.

    WAV (``raw`` False): a 44-byte header (16-bit PCM) or a 58-byte one (32-bit float:
    ``fmt `` of 18 bytes and a ``fact`` chunk) whose RIFF, ``fact`` and ``data`` sizes are
    0xFFFFFFFF, "unknown length", which libsndfile/soundfile (and most readers) take as
    "up to the end of the file". When the output is seekable (a regular file) the real
    sizes are written back by :meth:`close` (if they fit in 32 bits, i.e. up to 4 GiB).
    Raw: interleaved little-endian s16 (or f32 with ``float32``), no header.

    16-bit output is rounded to the nearest level and clipped to [-1, 1] like
    :func:`opencodec.audio.write_audio`; ``peak`` records the largest magnitude seen so
    the caller can warn once about clipping.
    """

    def __init__(self, fo: tp.BinaryIO, sample_rate: int, channels: int, *, float32: bool = False,
                 raw: bool = False):
        self._fo = fo
        self.sample_rate, self.channels = sample_rate, channels
        self.float32, self.raw = float32, raw
        self.frames = 0
        self.peak = 0.0
        self._start: int | None = None
        if not raw:
            self._start = _patch_position(fo)
            fo.write(self._wav_header(None))

    def _wav_header(self, frames: int | None) -> bytes:
        """The WAV header for ``frames`` sample frames; None (or a size beyond 32 bits):
        0xFFFFFFFF, "unknown", in the RIFF, ``fact`` and ``data`` size fields."""
        width = 4 if self.float32 else 2
        align = width * self.channels
        if self.float32:
            fmt = struct.pack("<4sIHHIIHHH", b"fmt ", 18, _WAV_FLOAT, self.channels, self.sample_rate,
                              self.sample_rate * align, align, 32, 0)
            fact = b"fact" + struct.pack("<II", 4, _UNKNOWN_SIZE if frames is None else frames)
        else:
            fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, _WAV_PCM, self.channels, self.sample_rate,
                              self.sample_rate * align, align, 16)
            fact = b""
        data_size = riff = _UNKNOWN_SIZE
        if frames is not None and 4 + len(fmt) + len(fact) + 8 + frames * align <= _UNKNOWN_SIZE:
            data_size = frames * align
            riff = 4 + len(fmt) + len(fact) + 8 + data_size
        elif fact:
            fact = b"fact" + struct.pack("<II", 4, _UNKNOWN_SIZE)
        return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + fmt + fact + b"data"
                + struct.pack("<I", data_size))

    def write(self, audio: torch.Tensor) -> None:
        """Append audio [C, n] (float, full scale 1.0)."""
        if audio.shape[-1] == 0:
            return
        x = audio.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise AudioIOError("the decoded audio holds NaN or infinite samples")
        data = x.numpy().T  # [n, C]
        if self.float32:
            out = np.ascontiguousarray(data, dtype="<f4")
        else:
            self.peak = max(self.peak, float(np.abs(data).max()))
            out = _to_file_samples(np.clip(data, -1.0, 1.0), 16).astype("<i2")
        self._fo.write(out.tobytes())
        self.frames += data.shape[0]

    def close(self) -> None:
        """Write back the real WAV sizes when the output is a seekable file."""
        if self.raw or self._start is None:
            return
        end = self._fo.tell()
        self._fo.seek(self._start)
        self._fo.write(self._wav_header(self.frames))
        self._fo.seek(end)


def _patch_position(fo: tp.BinaryIO) -> int | None:
    """Where the WAV header starts when it can be rewritten later (a seekable output not
    opened for appending, where every write lands at the end), else None."""
    try:
        if not fo.seekable():
            return None
        fileno = fo.fileno()
    except (OSError, ValueError, AttributeError):  # e.g. io.BytesIO has no file descriptor
        try:
            return fo.tell()
        except (OSError, ValueError):
            return None
    import fcntl
    import os

    if fcntl.fcntl(fileno, fcntl.F_GETFL) & os.O_APPEND:
        return None
    return fo.tell()


# ------------------------------------------------------------------------------------------
# The whole chain
# ------------------------------------------------------------------------------------------
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
    empty input (nothing is written then), ``InvalidAudioError`` for a bandwidth the model
    does not support.
    """
    check_streamable(model.config)
    previous = model.bandwidth
    if bandwidth is not None:
        model.set_target_bandwidth(_check_bandwidth(model, bandwidth))
    try:
        encoder = StreamingEncoder(model)
    finally:
        model.bandwidth = previous
    info = StreamInfo.from_model(model, encoder.num_codebooks, frames_per_packet)
    writer = PacketWriter(info, header_every)
    reader = PcmStreamReader(fin, raw, name)
    rate, channels = model.sample_rate, model.channels
    device, dtype = _model_device(model), _model_dtype(model)
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

    while (block := reader.read(read_bytes)) is not None:
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
