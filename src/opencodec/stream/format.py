"""The packet stream's byte layout: :class:`StreamInfo` (what a stream header says), the
packet builders (:func:`header_packet`, :func:`data_packet`, :func:`end_packet`) and the
stream header reader (:func:`parse_header_body`).

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
"""

from __future__ import annotations

import struct
import typing as tp
import zlib
from dataclasses import dataclass

from ..bitstream import pack_codes, packed_size
from ..bitstream.header import unprintable
from ..errors import BitstreamError
from ..identity import HASH_CHARS, header_identity
from ..model import EncodecModel
from .defaults import DEFAULT_FRAMES_PER_PACKET


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
        bad = unprintable(name)  # readers print it: no line break, tab or terminal escape
        if bad:
            raise BitstreamError(f"stream header field 'model name': expected printable characters "
                                 f"only, got {bad} in {name!r}")
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


def parse_header_body(body: bytes, offset: int) -> StreamInfo:
    """The :class:`StreamInfo` of a stream header body (the packet at byte ``offset``);
    ``BitstreamError`` for an unknown version or invalid fields."""
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
