"""Bytes -> packets: :class:`PacketParser` finds sync words, checks lengths and CRCs and
resynchronises after damage; the packet types it returns."""

from __future__ import annotations

import typing as tp
import zlib
from dataclasses import dataclass

from .format import (_CRC, _END_BODY, _HEADER_FIXED, _PREFIX, _TYPE_NAMES, MAX_BODY, SYNC, TYPE_DATA,
                     TYPE_END, TYPE_HEADER, StreamInfo, parse_header_body)


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
            info = parse_header_body(body, offset)
            self._max_data = info.max_data_body
            packet = HeaderPacket(offset, seq, info)
        elif ptype == TYPE_DATA:
            packet = DataPacket(offset, seq, body[0], body[1:])
        else:
            packet = EndPacket(offset, seq, _END_BODY.unpack(body)[0])
        return packet, size
