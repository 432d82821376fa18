"""What an entropy-coded ``.ecdc`` file's bytes are spent on, computed from its header.

:func:`plain_size` is the size the same audio has without the entropy model,
:func:`header_extra` the bytes its header has over the plain header's, and
:func:`body_overhead` the bytes of its body that code no code (the arithmetic coder's end, the
deterministic format's checks). ``opencodec compress`` reports them per file (through
:class:`opencodec.codec_files.FileResult`), so that what the entropy model saves on the codes
is told apart from what short files pay whatever it saves.
"""

from __future__ import annotations

import dataclasses

from .bitstream import EcdcHeader, StreamLayout, body_size, header_bytes
from .model import EncodecModel


def plain_size(header: EcdcHeader, model: EncodecModel) -> int:
    """Bytes of the ``.ecdc`` file that ``compress`` writes without an entropy model for the
    audio that ``header`` (an entropy-coded file's) describes: its header without the entropy
    model's fields, and the packed body (``log2(bins)`` bits a code), computed, not encoded."""
    plain = dataclasses.replace(header, use_lm=False, deterministic=None, lm_hash=None)
    return len(header_bytes(plain)) + body_size(plain, StreamLayout.from_model(model))


def header_extra(header: EcdcHeader) -> int:
    """Bytes an entropy-coded file's header has over the plain header of the same audio
    (the entropy model's name and hash, the format's fields): what short inputs pay whatever
    the entropy model saves."""
    plain = dataclasses.replace(header, use_lm=False, deterministic=None, lm_hash=None)
    return len(header_bytes(header)) - len(header_bytes(plain))


def body_overhead(header: EcdcHeader, layout: StreamLayout) -> int:
    """Bytes of an entropy-coded body (of ``header``) that code no code, whatever the entropy
    model predicts: per segment with frames, the arithmetic coder's end (it flushes about
    ``TOTAL_RANGE_BITS`` = 24 pending bits) and, in the deterministic format, the checks
    (a CRC-32 after the last frame, ``check_bits`` after every ``check_interval``-th frame
    before it; :func:`opencodec.entropy.deterministic.check_after`). Bits, summed, rounded up."""
    from .entropy.arithmetic import TOTAL_RANGE_BITS
    from .entropy.deterministic import CRC_BITS

    det, bits = header.deterministic, 0
    for _, length in layout.segments(header.audio_length):
        frames = layout.num_frames(length)
        if frames <= 0:
            continue
        bits += TOTAL_RANGE_BITS
        if det is not None:
            bits += CRC_BITS + det.check_bits * ((frames - 1) // det.check_interval)
    return -(-bits // 8)
