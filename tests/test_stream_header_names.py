"""Packet-stream (``.ocs``) model names are printable, as ``.ecdc`` header names are: readers
print them, and a line break or terminal escape must not fake lines there."""

from __future__ import annotations

import struct
import zlib

import pytest

from opencodec.errors import BitstreamError
from opencodec.stream import SYNC, HeaderPacket, PacketParser, StreamInfo


def header_with_name(name: bytes) -> bytes:
    """A CRC-valid stream header packet (layout of ``stream/format.py``) carrying ``name``."""
    body = struct.pack(">BIBBBHBB", 1, 24000, 1, 2, 10, 320, 4, len(name)) + name
    packet = SYNC + b"H" + struct.pack(">IH", 0, len(body)) + body
    return packet + struct.pack(">I", zlib.crc32(packet))


def test_a_printable_name_is_read_back() -> None:
    (packet,) = PacketParser().feed(header_with_name("opencodec_24khz_v5#0123abcd é".encode()))
    assert isinstance(packet, HeaderPacket)
    assert packet.info.model_name == "opencodec_24khz_v5#0123abcd é"


@pytest.mark.parametrize("name", ["v5\nweights: e7 (shipped)", "v5\x1b[2J", "tab\tname", "nul\x00"])
def test_a_name_with_control_characters_is_refused(name: str) -> None:
    with pytest.raises(BitstreamError, match="printable characters only") as info:
        PacketParser().feed(header_with_name(name.encode()))
    assert f"U+{ord(next(c for c in name if not c.isprintable())):04X}" in str(info.value)
    with pytest.raises(BitstreamError, match="printable characters only"):
        StreamInfo(model_name=name, sample_rate=24000, channels=1, num_codebooks=2, bits=10,
                   hop_length=320, frames_per_packet=4)
