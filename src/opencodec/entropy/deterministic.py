"""Arithmetic coding of one segment with the integer entropy model and integrity checks.

This is the body of a segment in the deterministic ``.ecdc`` format (version 1; the byte
layout is documented in :mod:`opencodec.bitstream`). The CDFs come from
:class:`~opencodec.entropy.fixed.FixedLM` (identical on every machine), the coder is the
one of :mod:`opencodec.entropy.arithmetic` with ``total_range_bits = 24`` (the CDFs end at
exactly ``2**24``).

Checks. A running CRC-32 (:func:`zlib.crc32`) starts from ``crc_seed`` and takes in each
frame's codes, as ``K`` little-endian uint32 values, right after the frame is coded. After
every ``check_interval``-th frame except the segment's last one, the low ``check_bits``
bits of the CRC are coded into the stream (0 bits: none); after the last frame the whole
32-bit CRC is. Check values are coded as uniform symbols of at most 8 bits, most
significant first, each costing exactly its width. A decoder recomputes the CRC from the
codes it decodes and compares: a mismatch is a :class:`~opencodec.errors.BitstreamError`
naming the frame.

After a damaged byte an arithmetic decoder produces unrelated symbols from then on, so
every later check fails independently with probability ``1 - 2**-n`` (``n`` its width):
damage is missed only if all the checks after it pass, with probability
``2**-(sum of their widths)``, at most ``2**-32`` thanks to the final CRC.
"""

from __future__ import annotations

import numbers
import typing as tp
import zlib

import numpy as np
import torch

from ..errors import BitstreamError
from .arithmetic import (ArithmeticDecoder, ArithmeticEncoder, DecodedColumns, FrameProgress,
                         check_counts, check_integer_codes, report_progress)
from .fixed import CDF_BITS, FixedLM, one_thread

__all__ = ["CRC_BITS", "MAX_CHECK_BITS", "check_after", "encode_segment_fixed",
           "decode_segment_fixed", "frame_crc"]

CRC_BITS = 32
"""Width of the check coded at the end of every segment."""

MAX_CHECK_BITS = 32
"""Largest ``check_bits`` (the CRC has 32)."""

_CHUNK = 8  # check bits are coded in uniform symbols of at most this many bits
_UNIFORM: dict[int, list[int]] = {}


def _uniform_cdf(bits: int) -> list[int]:
    """CDF of a uniform symbol of ``bits`` bits on the coder's ``2**CDF_BITS`` scale."""
    if bits not in _UNIFORM:
        step = 1 << (CDF_BITS - bits)
        _UNIFORM[bits] = [(i + 1) * step for i in range(1 << bits)]
    return _UNIFORM[bits]


def _chunks(bits: int) -> list[int]:
    """Widths of the uniform symbols of a ``bits``-bit check, most significant first."""
    return [min(_CHUNK, bits - start) for start in range(0, bits, _CHUNK)][::-1] if bits else []


def _encode_value(enc: ArithmeticEncoder, value: int, bits: int) -> None:
    shift = bits
    for width in _chunks(bits):
        shift -= width
        part = (value >> shift) & ((1 << width) - 1)
        step = 1 << (CDF_BITS - width)
        enc.encode(part * step, (part + 1) * step)


def _decode_value(dec: ArithmeticDecoder, bits: int) -> int:
    value = 0
    for width in _chunks(bits):
        value = (value << width) | dec.pull(_uniform_cdf(width))
    return value


def check_after(frame: int, num_frames: int, check_bits: int, check_interval: int) -> int:
    """Bits of check coded after ``frame`` (0-based) of a ``num_frames``-frame segment:
    ``CRC_BITS`` after the last frame, ``check_bits`` after every ``check_interval``-th
    frame before it, else 0."""
    if frame == num_frames - 1:
        return CRC_BITS
    if check_bits and (frame + 1) % check_interval == 0:
        return check_bits
    return 0


def frame_crc(codes: tp.Sequence[int], crc: int) -> int:
    """The running CRC-32 updated with one frame's codes (``K`` values, uint32 LE each)."""
    return zlib.crc32(np.asarray(codes, dtype="<u4").tobytes(), crc)


def _check_args(flm: FixedLM, num_codebooks: int, check_bits: int, check_interval: int) -> tuple[int, int]:
    """``(check_bits, check_interval)`` as Python ints (a numpy int would overflow the CRC
    masks), else ``TypeError``/``ValueError`` naming the argument."""
    if not isinstance(flm, FixedLM):
        raise TypeError(f"expected a FixedLM, got {type(flm).__name__}")
    if not 1 <= num_codebooks <= flm.n_q:
        raise ValueError(f"{num_codebooks} codebooks, the entropy model supports 1..{flm.n_q}")
    for name, value in (("check_bits", check_bits), ("check_interval", check_interval)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            # a float interval would place checks elsewhere ((t + 1) % 2.5), float bits fail in <<
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if not 0 <= check_bits <= MAX_CHECK_BITS:
        raise ValueError(f"check_bits must be in [0, {MAX_CHECK_BITS}], got {check_bits}")
    if check_interval < 1:
        raise ValueError(f"check_interval must be >= 1, got {check_interval}")
    return int(check_bits), int(check_interval)


def encode_segment_fixed(flm: FixedLM, codes: torch.Tensor, *, check_bits: int, check_interval: int,
                         crc_seed: int = 0, block: int = 32, progress: FrameProgress = None) -> bytes:
    """Arithmetic-code one segment's codes with the integer entropy model and its checks.

    Args:
        flm: the integer entropy model; its state starts fresh here.
        codes: integer ``[K, F]`` (``K <= flm.n_q``), values in ``[0, flm.card)`` (else
            ``ValueError``: float codes are refused, not truncated).
        check_bits: width of the check after every ``check_interval``-th frame (0..32).
        check_interval: frames between checks (>= 1).
        crc_seed: initial CRC-32 value (the ``.ecdc`` writer derives it from the header,
            the segment index and its scale).
        block: frames per forward pass of the model (any value gives the same bytes).
        progress: called with the number of frames coded so far, now and then and at the end.
    Returns:
        The coded bytes (coder flushed, last byte zero-padded).
    """
    check_integer_codes(codes)
    K, num_frames = codes.shape
    check_bits, check_interval = _check_args(flm, K, check_bits, check_interval)
    codes = codes.detach().to("cpu", torch.long)
    if num_frames and (int(codes.min()) < 0 or int(codes.max()) >= flm.card):
        raise ValueError(f"codes must be in [0, {flm.card})")
    with one_thread():
        return _encode_segment(flm, codes, check_bits, check_interval, crc_seed, block, progress)


def _encode_segment(flm: FixedLM, codes: torch.Tensor, check_bits: int, check_interval: int,
                    crc_seed: int, block: int, progress: FrameProgress) -> bytes:
    """The body of :func:`encode_segment_fixed` (arguments checked)."""
    K, num_frames = codes.shape
    enc = ArithmeticEncoder(CDF_BITS)
    crc = crc_seed & 0xFFFFFFFF
    for start, cdfs in flm.iter_cdfs(codes, block=block):       # cdfs [T, K, card]
        chunk = codes[:, start:start + cdfs.shape[0]].t()[:, :, None]
        his = cdfs.gather(2, chunk).squeeze(2).tolist()
        los = cdfs.gather(2, (chunk - 1).clamp(min=0)).squeeze(2).tolist()
        frames = chunk.squeeze(2).tolist()                        # [T][K], this block only
        for i, (lo_row, hi_row) in enumerate(zip(los, his)):
            t = start + i
            frame = frames[i]
            for k in range(K):
                enc.encode(lo_row[k] if frame[k] else 0, hi_row[k])
            crc = frame_crc(frame, crc)
            bits = check_after(t, num_frames, check_bits, check_interval)
            if bits:
                _encode_value(enc, crc & ((1 << bits) - 1), bits)
        report_progress(progress, start + len(his), num_frames)
    enc.flush()
    return enc.getvalue()


@tp.overload
def decode_segment_fixed(flm: FixedLM, data: bytes | bytearray | memoryview | tp.BinaryIO,
                         num_codebooks: int, num_frames: int, *, check_bits: int, check_interval: int,
                         crc_seed: int = 0, return_consumed: tp.Literal[False] = ...,
                         progress: FrameProgress = None) -> torch.Tensor: ...
@tp.overload
def decode_segment_fixed(flm: FixedLM, data: bytes | bytearray | memoryview | tp.BinaryIO,
                         num_codebooks: int, num_frames: int, *, check_bits: int, check_interval: int,
                         crc_seed: int = 0, return_consumed: tp.Literal[True],
                         progress: FrameProgress = None) -> tuple[torch.Tensor, int]: ...
def decode_segment_fixed(flm: FixedLM, data: bytes | bytearray | memoryview | tp.BinaryIO,
                         num_codebooks: int, num_frames: int, *, check_bits: int, check_interval: int,
                         crc_seed: int = 0, return_consumed: bool = False,
                         progress: FrameProgress = None) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Decode one segment written by :func:`encode_segment_fixed` and verify its checks.

    Args:
        flm: the integer entropy model used to encode (same weights hash).
        data: the bytes starting at the segment, or a binary file positioned there (read
            one byte at a time and left right after the segment).
        num_codebooks: ``K``.
        num_frames: ``F``.
        check_bits, check_interval, crc_seed: as given to the encoder.
        return_consumed: also return the number of bytes the segment used.
        progress: called with the number of frames decoded so far, every
            :data:`~opencodec.entropy.arithmetic.PROGRESS_FRAMES` frames and at the end.
    Returns:
        long ``[K, F]`` codes, or ``(codes, bytes_consumed)``.
    Raises:
        BitstreamError: truncated or corrupt data, or a failed check; the message names the
            frame (0-based, within the segment).
    """
    num_codebooks, num_frames = check_counts(num_codebooks, num_frames)
    check_bits, check_interval = _check_args(flm, num_codebooks, check_bits, check_interval)
    with one_thread():
        out, consumed = _decode_segment(flm, data, num_codebooks, num_frames, check_bits,
                                        check_interval, crc_seed, progress)
    if return_consumed:
        return out, consumed
    return out


def _decode_segment(flm: FixedLM, data: bytes | bytearray | memoryview | tp.BinaryIO,
                    num_codebooks: int, num_frames: int, check_bits: int, check_interval: int,
                    crc_seed: int, progress: FrameProgress) -> tuple[torch.Tensor, int]:
    """The body of :func:`decode_segment_fixed` (arguments checked): codes and bytes used."""
    dec = ArithmeticDecoder(data, CDF_BITS)
    K = num_codebooks
    columns = DecodedColumns(K)
    inp = torch.zeros(K, dtype=torch.long)
    state = None
    crc = crc_seed & 0xFFFFFFFF
    last_check = -1
    for t in range(num_frames):
        cdf, state = flm.step(inp, state)
        rows = cdf.numpy()          # searched row by row with numpy (no lists of 1024 ints)
        try:
            syms = [dec.pull(rows[k]) for k in range(K)]
        except BitstreamError as exc:
            raise BitstreamError(f"frame {t}: {exc}") from None
        columns.append(syms)
        crc = frame_crc(syms, crc)
        bits = check_after(t, num_frames, check_bits, check_interval)
        if bits:
            try:
                coded = _decode_value(dec, bits)
            except BitstreamError as exc:
                raise BitstreamError(f"frame {t} (check): {exc}") from None
            if coded != crc & ((1 << bits) - 1):
                what = "CRC-32 at the end of the segment" if bits == CRC_BITS and t == num_frames - 1 \
                    else f"{bits}-bit check"
                raise BitstreamError(
                    f"frame {t}: the {what} does not match the codes of frames {last_check + 1}..{t} "
                    f"(corrupt data, or coded with another entropy model or format)")
            last_check = t
        inp = torch.tensor(syms, dtype=torch.long) + 1
        report_progress(progress, t + 1, num_frames)
    return columns.codes(), dec.bytes_read
