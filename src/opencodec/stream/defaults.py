"""The packet stream's defaults and raw PCM format names, apart from the modules that use them
so that the command line shows them in its help without importing torch."""

from __future__ import annotations

__all__ = ["DEFAULT_FRAMES_PER_PACKET", "DEFAULT_HEADER_EVERY", "RAW_FORMATS"]

DEFAULT_FRAMES_PER_PACKET = 4
"""Code frames per data packet (53 ms at 75 frames/s)."""
DEFAULT_HEADER_EVERY = 16
"""Data packets between two repetitions of the stream header (where a late receiver starts)."""
RAW_FORMATS = {"s16le": "s16", "f32le": "f32"}
"""``--format`` names of raw PCM -> :class:`~opencodec.stream.pcm.PcmFormat` encodings."""
