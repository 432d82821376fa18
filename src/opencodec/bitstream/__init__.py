"""The official EnCodec ``.ecdc`` file format: header, code packing and body parsing.

Nothing here needs the neural network: a :class:`StreamLayout` (built from a model with
:meth:`StreamLayout.from_model`) carries the few numbers that fix the body's layout.

This package re-exports the public names of its modules: :mod:`.header` (constants,
:class:`EcdcHeader`, reading and writing the header), :mod:`.packing` (code bit-packing),
:mod:`.layout` (:class:`StreamLayout` and body sizes), :mod:`.coded_body` (decoding
entropy-coded bodies) and :mod:`.body` (reading and writing bodies and whole files). The
last two load on first use of one of their names: they need torch, the others do not (so
``opencodec info`` reads headers without it).

Byte layout of a file::

    offset  size  field
    0       4     magic  b"ECDC"
    4       1     version, 0
    5       4     N: length in bytes of the JSON that follows (big-endian uint32)
    9       N     UTF-8 JSON object, written as json.dumps({"m": ..., "al": ..., "nc": ..., "lm": ...})
                    m:  model name (str), al: audio length in samples (int >= 1),
                    nc: codebooks used (int >= 1), lm: entropy coded (bool)
                  opencodec adds, only for models other than the official ones (whose
                  headers stay byte-identical to the official package's):
                    mh:  the model's weights hash, 16 lowercase hex digits (a prefix of
                         opencodec.weights_hash.weights_sha256); a reader refuses a model
                         with another hash (see opencodec.releases)
                    lmh: with lm true, the entropy model's weights hash (as in version 1)
    9+N     ...   body: one record per segment, in time order

The segments are those of the model for ``al`` samples (a single segment of ``al``
samples for models that do not segment; 1 s segments every 0.99 s for the 48 kHz model).
A segment of ``L`` samples holds ``F = ceil(L / hop_length)`` frames of ``nc`` codes.
Without the entropy model (``lm`` false) a segment record is::

    [4 bytes big-endian float32 scale]   only for normalising models; finite and > 0
    ceil(nc * F * bits / 8) bytes         the codes, time-major (for t: for k), each code
                                          ``bits`` = log2(bins) wide, packed LSB-first:
                                          code i occupies bits [i*bits, (i+1)*bits) of the
                                          little-endian bit string, byte j holding bits
                                          [8j, 8j+8); the last byte is padded with zero bits.

Each segment starts a fresh packer, so every segment record begins on a byte boundary.
Example: codes ``[1, 2, 1023]`` at 10 bits pack to ``01 08 f0 3f``.

With the entropy model (``lm`` true) a segment record is::

    [4 bytes big-endian float32 scale]   only for normalising models
    the arithmetic-coded codes            a fresh coder and entropy-model state per segment;
                                          the codes time-major, each with the CDF that the
                                          model predicts from the previous frame (zeros at
                                          t = 0); the coder is flushed at the segment's end

The coded length is not stored: a reader only finds where a segment ends by decoding it,
so such a body can only be parsed with the entropy model (``lm`` argument of
:func:`read_body` / :func:`read_ecdc`; see :mod:`opencodec.entropy`).

Version 1: deterministic entropy coding (opencodec's own; the official reader rejects the
version byte). The official LM stream above depends on the float arithmetic of the
machine that runs the entropy model (thread count, CPU, BLAS), so a file may not decode
elsewhere. Version 1 codes with the integer-only model of :mod:`opencodec.entropy.fixed`,
whose CDFs are the same on every machine, and checks what it decodes::

    offset  size  field
    0       4     magic  b"ECDC"
    4       1     version, 1
    5       4     N: JSON length (big-endian uint32)
    9       N     UTF-8 JSON object, json.dumps({"m", "al", "nc", "lm", "lmn", "lmh", "fx",
                  "cb", "ci"}) in that order, "mh" after "lm" when present:
                    m, al, nc, mh as in version 0; lm: true (always);
                    lmn: name of the entropy model (str, e.g. "encodec_lm_24khz"; a reader
                         without an entropy model given loads the model of that name);
                    lmh: its weights hash, 16 lowercase hex digits (FixedLM.weights_hash: a
                         SHA-256 over the fixed-point scheme, the sizes and the integer
                         weights); a reader refuses an entropy model with another hash;
                    fx:  fixed-point scheme of the entropy model (int >= 1; 1 now);
                    cb:  check bits (int, 0..32) coded every ci frames;
                    ci:  check interval in frames (int >= 1)
    9+N     ...   body: one record per segment, segments as in version 0

    segment record:
    [4 bytes big-endian float32 scale]   only for normalising models; finite and > 0
    the arithmetic-coded stream           a fresh coder (24-bit total range, as version 0's)
                                          and a fresh integer entropy-model state; for each
                                          frame t = 0..F-1: its nc codes (codebook order),
                                          each with the integer CDF (total exactly 2**24,
                                          every bin >= 2) that the model predicts from frame
                                          t - 1 (zeros at t = 0); then, if t == F - 1, the
                                          32-bit CRC below, else if cb > 0 and (t + 1) % ci
                                          == 0, the low cb bits of it; the coder is flushed
                                          at the segment's end (last byte zero-padded)

The check value is a running CRC-32 (zlib's): seeded with the CRC-32 of the header's bytes
(fixed part + JSON, as :func:`header_bytes` writes the parsed header), the segment index
(uint32 little-endian) and the segment's 4 scale bytes (if any), then updated with each
frame's nc codes as uint32 little-endian values right after the frame. Check values are
coded as uniform symbols of at most 8 bits (most significant first), so a check of n bits
costs n bits. A reader recomputes the CRC from the codes it decodes and raises
``BitstreamError`` naming the segment and frame at the first mismatch. Because an
arithmetic decoder fed a damaged byte yields unrelated symbols from then on, every later
check fails with probability ``1 - 2**-n``; damage that changes the decoded codes (or the
header fields or a scale) goes unnoticed with probability at most ``2**-32`` (the final
CRC), ``2**-(8 + 32)`` when an 8-bit check lies between it and the segment's end.

Defaults (:data:`DEFAULT_CHECK_BITS` = 8, ``ci`` = the codec's frames per second, see
:func:`default_check_interval`): 8 bits per second plus 32 bits per segment; at 24 kHz
(75 Hz, one segment per file) 8 bit/s, i.e. 0.53/0.27/0.13/0.07 % of 1.5/3/6/12 kbps,
plus 32 bits per file; at 48 kHz (1 s segments every 0.99 s, 150 frames, so the per-second
check falls on the segment's last frame and only the CRC is coded) 32.3 bit/s, 1.1/0.54/
0.27/0.13 % of 3/6/12/24 kbps. A per-frame check would cost 75 bit/s per bit of width at
75 Hz (600 bit/s for 8 bits, 40% of 1.5 kbps) for little gain: detection only needs the
bits coded after the damage, and the final CRC-32 already bounds a miss by ``2**-32``.
"""

from __future__ import annotations

import typing as _tp

from .._lazy import lazy_names as _lazy_names

from .header import (DEFAULT_CHECK_BITS, DETERMINISTIC_VERSION, HEADER_STRUCT, MAGIC,
                     MAX_HEADER_JSON_BYTES, MAX_LM_NAME_CHARS, VERSION, VERSIONS,
                     DeterministicCoding, EcdcHeader, default_check_interval, header_bytes,
                     parse_header, read_header, write_header)
from .layout import (SCALE_STRUCT, LayoutLike, StreamLayout, as_layout, body_size,
                     min_lm_body_size)
from .packing import MAX_BITS, BitPacker, BitUnpacker, pack_codes, packed_size, unpack_codes

if _tp.TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports these on first use
    from .body import encode_ecdc, read_body, read_ecdc, write_body, write_ecdc
    from .coded_body import BodyProgress, SegmentDecoder

__all__ = [
    "MAGIC", "VERSION", "DETERMINISTIC_VERSION", "VERSIONS", "HEADER_STRUCT",
    "MAX_HEADER_JSON_BYTES", "MAX_BITS", "DEFAULT_CHECK_BITS", "default_check_interval",
    "DeterministicCoding", "EcdcHeader", "StreamLayout", "header_bytes", "write_header",
    "read_header", "parse_header",
    "packed_size", "pack_codes", "unpack_codes", "BitPacker", "BitUnpacker",
    "LayoutLike", "as_layout", "body_size", "min_lm_body_size", "write_body", "read_body",
    "encode_ecdc", "write_ecdc", "read_ecdc",
    "MAX_LM_NAME_CHARS", "SCALE_STRUCT", "BodyProgress", "SegmentDecoder",
]

# The body names load on first use (PEP 562): reading and sizing bodies decodes codes into
# tensors (torch), while the header and the layout, all that ``opencodec info`` needs, do not.
_LAZY: dict[str, str] = {
    "encode_ecdc": "body", "read_body": "body", "read_ecdc": "body", "write_body": "body",
    "write_ecdc": "body", "BodyProgress": "coded_body", "SegmentDecoder": "coded_body",
}
__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals(), __all__)
