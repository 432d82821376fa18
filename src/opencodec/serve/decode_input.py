"""Decode mode's input for ``opencodec serve``: a message's packets, parsed a slice at a time,
and the bound on bytes that hold no packet."""

from __future__ import annotations

import typing as tp

from ..stream.format import _CRC, _HEADER_FIXED, _PREFIX
from ..stream.parser import HeaderPacket, PacketParser
from .protocol import ProtocolError

PARSE_SLICE = 16 << 10  # bytes of a message parsed at a time (see parsed)


def parsed(parser: PacketParser, data: bytes) -> tp.Iterator[tp.Any]:
    """The packets of ``data`` (a message), parsed ``PARSE_SLICE`` bytes at a time as they are
    taken: a message of small packets is never held as all of its packet objects (a 1 MiB one
    of one-frame packets made ~50,000 of them, ~10 MiB: benchmarks/probes/serve_message_memory.py)."""
    return SyncWatch().parsed(parser, data)


# the largest header packet: prefix, fixed fields, a 255-byte model name, CRC
_MAX_HEADER_PACKET = _PREFIX.size + _HEADER_FIXED.size + 255 + _CRC.size


class SyncWatch:
    """Decode mode: the bytes fed to a parser since the start of the last packet it returned.
    Good data leaves at most that packet and part of the next one there, so more than twice
    the largest packet (a header's, or the stream's largest data packet) is not a packet
    stream: ``ProtocolError`` (1007) at once, rather than waiting for the end or the idle
    timeout to reveal it."""

    def __init__(self) -> None:
        self.fed = 0
        self.last = 0  # input offset of the last packet (or damaged region) returned
        self.largest = _MAX_HEADER_PACKET

    def parsed(self, parser: PacketParser, data: bytes) -> tp.Iterator[tp.Any]:
        """As :func:`parsed`, checking after each slice."""
        view = memoryview(data)
        for start in range(0, len(view), PARSE_SLICE):
            piece = view[start:start + PARSE_SLICE]
            self.fed += len(piece)
            for packet in parser.feed(piece):
                self.last = packet.offset
                if isinstance(packet, HeaderPacket):
                    data_packet = _PREFIX.size + packet.info.max_data_body + _CRC.size
                    self.largest = max(_MAX_HEADER_PACKET, data_packet)
                yield packet
            if self.fed - self.last > 2 * self.largest:
                raise ProtocolError(f"damaged packet data: {self.fed - self.last} bytes without a whole "
                                    f"packet (the largest is {self.largest} bytes): not a packet stream")
