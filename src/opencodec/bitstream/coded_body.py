"""Decoding entropy-coded bodies segment by segment: the official float-LM stream (version 0)
and the deterministic integer-LM stream with its CRC checks (version 1)."""

from __future__ import annotations

import io
import struct
import typing as tp
import zlib

import torch

from ..errors import BitstreamError
from ..frames import EncodedFrame
from .header import EcdcHeader, header_bytes
from .layout import SCALE_STRUCT, StreamLayout, _scale_tensor, min_lm_body_size

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM
    from ..entropy.arithmetic import FrameProgress
    from ..entropy.fixed import FixedLM

BodyProgress = tp.Optional[tp.Callable[[int, int], None]]
"""``progress(frames done, total frames)`` while an entropy-coded body is coded or decoded."""


SegmentDecoder = tp.Callable[[tp.BinaryIO, int, bytes, int, "FrameProgress"], torch.Tensor]
"""``(fo, segment index, scale bytes, frames, progress) -> codes [K, F]``: decodes one coded
segment, calling ``progress(frames decoded)`` as it goes (when not None)."""


def _segment_progress(progress: BodyProgress, done: int, total: int) -> "FrameProgress":
    """A segment's frame callback feeding the body's ``progress(done + n, total)``."""
    if progress is None:
        return None
    return lambda n: progress(done + n, total)


def _read_coded_body(body: bytes, header: EcdcHeader, layout: StreamLayout, card: int,
                     decode_segment: SegmentDecoder, progress: BodyProgress = None
                     ) -> list[EncodedFrame]:
    """Decode an entropy-coded body (either version) segment by segment: the scale, then the
    coded codes, which ``decode_segment`` reads from the body's file object."""
    minimum = min_lm_body_size(header, layout, card)
    if len(body) < minimum:
        raise BitstreamError(f"ECDC body truncated: an entropy-coded body for "
                             f"{header.audio_length} samples x {header.num_codebooks} codebooks "
                             f"needs at least {minimum} bytes, got {len(body)}")
    fo = io.BytesIO(body)
    frames: list[EncodedFrame] = []
    segments = layout.segments(header.audio_length)
    total = layout.total_frames(header.audio_length)
    done = 0
    for index, (offset, length) in enumerate(segments):
        scale, raw = None, b""
        if layout.normalize:
            raw = fo.read(SCALE_STRUCT.size)
            if len(raw) < SCALE_STRUCT.size:
                raise BitstreamError(f"ECDC body truncated: segment {index} (sample {offset}) "
                                     f"ends inside its scale")
            (value,) = SCALE_STRUCT.unpack(raw)
            scale = _scale_tensor(value, index, offset)
        count = layout.num_frames(length)
        try:
            codes = decode_segment(fo, index, raw, count, _segment_progress(progress, done, total))
        except BitstreamError as exc:
            raise BitstreamError(f"ECDC segment {index} (sample {offset}): {exc}") from None
        frames.append(EncodedFrame(codes[None], scale))
        done += count
    extra = len(body) - fo.tell()
    if extra:
        other_lm = ("" if header.deterministic is not None else
                    "; the file is damaged, or it was decoded with another entropy model than the "
                    "one that wrote it (an official-format file of an official model records no "
                    "entropy-model hash to check)")
        raise BitstreamError(f"ECDC body has {extra} extra byte(s) after the last entropy-coded "
                             f"segment (the segments used {fo.tell()} of {len(body)} bytes){other_lm}")
    return frames


def _read_lm_body(body: bytes, header: EcdcHeader, layout: StreamLayout,
                  lm: "EntropyLM", progress: BodyProgress = None) -> list[EncodedFrame]:
    """Decode an official entropy-coded body (version 0)."""
    from ..entropy import decode_segment_with_lm

    nc = header.num_codebooks

    def decode_segment(fo: tp.BinaryIO, _index: int, _raw: bytes, frames: int,
                       frame_progress: "FrameProgress") -> torch.Tensor:
        return decode_segment_with_lm(lm, fo, nc, frames, progress=frame_progress)

    return _read_coded_body(body, header, layout, lm.card, decode_segment, progress)


def _segment_crc_seed(head: bytes, index: int, scale_raw: bytes) -> int:
    """Initial CRC-32 of a version 1 segment: header bytes, index (uint32 LE), scale bytes."""
    return zlib.crc32(scale_raw, zlib.crc32(struct.pack("<I", index), zlib.crc32(head)))


def _read_det_body(body: bytes, header: EcdcHeader, layout: StreamLayout,
                   flm: "FixedLM", progress: BodyProgress = None) -> list[EncodedFrame]:
    """Decode a version 1 body: integer entropy model, checks seeded per segment."""
    from ..entropy.deterministic import decode_segment_fixed

    det = header.deterministic
    assert det is not None
    head = header_bytes(header)
    nc = header.num_codebooks

    def decode_segment(fo: tp.BinaryIO, index: int, raw: bytes, frames: int,
                       frame_progress: "FrameProgress") -> torch.Tensor:
        return decode_segment_fixed(flm, fo, nc, frames, check_bits=det.check_bits,
                                    check_interval=det.check_interval,
                                    crc_seed=_segment_crc_seed(head, index, raw),
                                    progress=frame_progress)

    return _read_coded_body(body, header, layout, flm.card, decode_segment, progress)
