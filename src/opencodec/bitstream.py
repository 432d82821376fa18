"""The official EnCodec ``.ecdc`` file format: header, code packing and body parsing.

Nothing here needs the neural network: a :class:`StreamLayout` (built from a model with
:meth:`StreamLayout.from_model`) carries the few numbers that fix the body's layout.

Byte layout of a file::

    offset  size  field
    0       4     magic  b"ECDC"
    4       1     version, 0
    5       4     N: length in bytes of the JSON that follows (big-endian uint32)
    9       N     UTF-8 JSON object, written as json.dumps({"m": ..., "al": ..., "nc": ..., "lm": ...})
                    m:  model name (str), al: audio length in samples (int >= 1),
                    nc: codebooks used (int >= 1), lm: entropy coded (bool)
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
"""

from __future__ import annotations

import io
import json
import math
import struct
import typing as tp
from dataclasses import dataclass

import numpy as np
import torch

from .errors import BitstreamError
from .model import EncodedFrame

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM
    from .model import EncodecModel

__all__ = [
    "MAGIC", "VERSION", "HEADER_STRUCT", "MAX_HEADER_JSON_BYTES", "MAX_BITS",
    "EcdcHeader", "StreamLayout", "write_header", "read_header", "parse_header",
    "packed_size", "pack_codes", "unpack_codes", "BitPacker", "BitUnpacker",
    "LayoutLike", "as_layout", "body_size", "min_lm_body_size", "write_body", "read_body",
    "encode_ecdc", "write_ecdc", "read_ecdc",
]

MAGIC = b"ECDC"
"""The four bytes every ``.ecdc`` file starts with."""

VERSION = 0
"""The only format version there is."""

HEADER_STRUCT = struct.Struct("!4sBI")
"""Fixed part of the header: magic, version byte, big-endian uint32 JSON length (9 bytes)."""

MAX_HEADER_JSON_BYTES = 1 << 16
"""Largest JSON header accepted (a real one is under 100 bytes); guards against huge reads."""

MAX_BITS = 32
"""Widest code field supported by the packers, in bits."""

SCALE_STRUCT = struct.Struct("!f")

_CHUNK_VALUES = 1 << 18  # values handled per numpy block (a multiple of 8: blocks end on bytes)


# ------------------------------------------------------------------------------------------
# Header
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EcdcHeader:
    """The JSON header of an ``.ecdc`` file.

    ``model_name`` (JSON ``m``), ``audio_length`` in samples per channel (``al``),
    ``num_codebooks`` per frame (``nc``) and ``use_lm``: whether the body is entropy coded
    (``lm``).
    """

    model_name: str
    audio_length: int
    num_codebooks: int
    use_lm: bool

    def __post_init__(self) -> None:
        _check_header_fields(self.to_dict())

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON object, keys in the official order ``m, al, nc, lm``."""
        return {"m": self.model_name, "al": self.audio_length, "nc": self.num_codebooks,
                "lm": self.use_lm}

    def to_json(self) -> bytes:
        """UTF-8 JSON exactly as the official writer produces it (default separators)."""
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, meta: tp.Any) -> "EcdcHeader":
        """Validate a decoded JSON value and build the header; unknown keys are ignored."""
        _check_header_fields(meta)
        return cls(model_name=meta["m"], audio_length=meta["al"], num_codebooks=meta["nc"],
                   use_lm=meta["lm"])

    @classmethod
    def from_json(cls, data: bytes | str) -> "EcdcHeader":
        """Parse the JSON part of a header (bytes must be UTF-8)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BitstreamError(f"ECDC header: JSON is not valid UTF-8 ({exc})") from None
        else:
            text = data
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BitstreamError(f"ECDC header: invalid JSON ({_short(exc)})") from None
        return cls.from_dict(meta)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(value: tp.Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__} {text}"


def _check_header_fields(meta: tp.Any) -> None:
    """Raise ``BitstreamError`` unless ``meta`` is a valid header object."""
    if not isinstance(meta, dict):
        raise BitstreamError(f"ECDC header: expected a JSON object, got {_describe(meta)}")
    missing = [key for key in ("m", "al", "nc", "lm") if key not in meta]
    if missing:
        raise BitstreamError(f"ECDC header: missing key(s) {', '.join(map(repr, missing))} "
                             f"(expected 'm', 'al', 'nc', 'lm'; got {sorted(map(str, meta))})")
    name = meta["m"]
    if not isinstance(name, str) or not name:
        raise BitstreamError(f"ECDC header field 'm' (model name): expected a non-empty string, "
                             f"got {_describe(name)}")
    for key, what in (("al", "audio length"), ("nc", "number of codebooks")):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer >= 1, "
                                 f"got {_describe(value)}")
        if value < 1:
            raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer >= 1, "
                                 f"got {value}")
    if not isinstance(meta["lm"], bool):
        raise BitstreamError(f"ECDC header field 'lm' (entropy coded): expected true or false, "
                             f"got {_describe(meta['lm'])}")


def write_header(fo: tp.BinaryIO, header: EcdcHeader) -> int:
    """Write the header (fixed part + JSON) to ``fo``; returns the bytes written."""
    meta = header.to_json()
    if len(meta) > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON is {len(meta)} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed (model name too long?)")
    data = HEADER_STRUCT.pack(MAGIC, VERSION, len(meta)) + meta
    fo.write(data)
    return len(data)


def _read_up_to(fo: tp.BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes or fewer at end of stream (chunked, never allocating more)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = fo.read(min(remaining, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def read_header(fo: tp.BinaryIO) -> EcdcHeader:
    """Read and validate a header from ``fo``, leaving it positioned at the body.

    Raises ``BitstreamError`` for a wrong magic or version, a truncated header, a JSON
    length beyond :data:`MAX_HEADER_JSON_BYTES` or beyond the data available, invalid
    UTF-8/JSON, and missing or mistyped fields.
    """
    fixed = _read_up_to(fo, HEADER_STRUCT.size)
    if len(fixed) < HEADER_STRUCT.size:
        start = fixed[:len(MAGIC)]
        if start != MAGIC[:len(start)]:
            raise BitstreamError(f"not an ECDC file: magic expected {MAGIC!r}, got {start!r}")
        raise BitstreamError(f"ECDC header truncated: expected {HEADER_STRUCT.size} bytes "
                             f"(magic, version, JSON length), got {len(fixed)}")
    magic, version, meta_size = HEADER_STRUCT.unpack(fixed)
    if magic != MAGIC:
        raise BitstreamError(f"not an ECDC file: magic expected {MAGIC!r}, got {magic!r}")
    if version != VERSION:
        raise BitstreamError(f"unsupported ECDC version: expected {VERSION}, got {version}")
    meta = _read_up_to(fo, min(meta_size, MAX_HEADER_JSON_BYTES))
    if len(meta) < min(meta_size, MAX_HEADER_JSON_BYTES):
        raise BitstreamError(f"ECDC header truncated: JSON length field says {meta_size} bytes, "
                             f"only {len(meta)} available")
    if meta_size > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON length field says {meta_size} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed")
    return EcdcHeader.from_json(meta)


def parse_header(data: bytes) -> tuple[EcdcHeader, int]:
    """Parse the header at the start of ``data``; returns it and the body's offset in bytes."""
    fo = io.BytesIO(data)
    header = read_header(fo)
    return header, fo.tell()


# ------------------------------------------------------------------------------------------
# Code packing
# ------------------------------------------------------------------------------------------
def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits per code must be an integer in [1, {MAX_BITS}], got {bits!r}")


def _word(bits: int) -> tuple[int, np.dtype]:
    """Smallest little-endian unsigned word (bytes, dtype) holding ``bits`` bits."""
    for nbytes, dtype in ((1, "<u1"), (2, "<u2"), (4, "<u4")):
        if bits <= 8 * nbytes:
            return nbytes, np.dtype(dtype)
    raise ValueError(f"bits per code must be at most {MAX_BITS}, got {bits}")


def packed_size(num_values: int, bits: int) -> int:
    """Bytes taken by ``num_values`` codes of ``bits`` bits, last byte zero-padded."""
    return (num_values * bits + 7) // 8


def _as_int_array(codes: tp.Any) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        return codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
    return arr


def pack_codes(codes: tp.Any, bits: int) -> bytes:
    """Pack codes [K, F] (tensor or array of ints in ``[0, 2**bits)``) to bytes.

    Values are written time-major (for t: for k), ``bits`` each, LSB-first, and the last
    partial byte is padded with zero bits: ``packed_size(K * F, bits)`` bytes.
    Raises ``BitstreamError`` for a value out of range.
    """
    _check_bits(bits)
    arr = _as_int_array(codes)
    if arr.ndim != 2:
        raise ValueError(f"codes must have shape [K, F], got {tuple(arr.shape)}")
    flat = np.ascontiguousarray(arr.T).reshape(-1)
    if flat.size == 0:
        return b""
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= (1 << bits):
        bad = low if low < 0 else high
        raise BitstreamError(f"code value {bad} out of range for {bits}-bit codes "
                             f"(expected 0 <= code < {1 << bits})")
    nbytes, dtype = _word(bits)
    out = bytearray()
    for start in range(0, flat.size, _CHUNK_VALUES):
        block = flat[start:start + _CHUNK_VALUES].astype(dtype)
        # [n, nbytes] little-endian bytes -> [n, 8 * nbytes] bits, LSB first -> keep the low `bits`
        bit_matrix = np.unpackbits(block.view(np.uint8).reshape(-1, nbytes), axis=1, bitorder="little")
        out += np.packbits(bit_matrix[:, :bits].reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack_codes(data: bytes, num_codebooks: int, num_frames: int, bits: int) -> torch.Tensor:
    """Unpack exactly ``packed_size(num_codebooks * num_frames, bits)`` bytes into codes.

    Inverse of :func:`pack_codes`: returns a LongTensor [num_codebooks, num_frames] with
    values in ``[0, 2**bits)``. Padding bits of the last byte are ignored. Raises
    ``BitstreamError`` when ``data`` has a different size.
    """
    _check_bits(bits)
    if num_codebooks < 0 or num_frames < 0:
        raise ValueError(f"negative shape [{num_codebooks}, {num_frames}]")
    count = num_codebooks * num_frames
    expected = packed_size(count, bits)
    if len(data) != expected:
        raise BitstreamError(f"packed codes: expected {expected} bytes for {num_codebooks} x "
                             f"{num_frames} {bits}-bit codes, got {len(data)}")
    # Pad so that every value can read the `span` bytes starting at its first byte.
    span = (bits + 7 + 7) // 8  # a value straddles at most this many bytes
    raw = np.frombuffer(bytes(data) + bytes(span), dtype=np.uint8)
    mask = np.uint64((1 << bits) - 1)
    values = np.empty(count, dtype=np.int64)
    for start in range(0, count, _CHUNK_VALUES):
        bit_pos = np.arange(start, min(start + _CHUNK_VALUES, count), dtype=np.uint64) * np.uint64(bits)
        first = (bit_pos >> np.uint64(3)).astype(np.intp)
        word = np.zeros(first.shape, dtype=np.uint64)
        for j in range(span):
            word |= raw[first + j].astype(np.uint64) << np.uint64(8 * j)
        values[start:start + first.size] = ((word >> (bit_pos & np.uint64(7))) & mask).astype(np.int64)
    return torch.from_numpy(values.reshape(num_frames, num_codebooks).T.copy())


class BitPacker:
    """Streaming packer: push ``bits``-wide values one at a time, LSB-first, into ``fo``.

    Writes as many whole bytes as are complete after each push; :meth:`flush` writes the
    last partial byte zero-padded. Produces the same bytes as :func:`pack_codes`.
    """

    def __init__(self, bits: int, fo: tp.BinaryIO):
        _check_bits(bits)
        self.bits = int(bits)
        self.fo = fo
        self._value = 0
        self._nbits = 0

    def push(self, value: int) -> None:
        """Append one value in ``[0, 2**bits)``."""
        if not 0 <= value < (1 << self.bits):
            raise BitstreamError(f"code value {value} out of range for {self.bits}-bit codes")
        self._value |= int(value) << self._nbits
        self._nbits += self.bits
        whole = self._nbits // 8
        if whole:
            self.fo.write((self._value & ((1 << (8 * whole)) - 1)).to_bytes(whole, "little"))
            self._value >>= 8 * whole
            self._nbits -= 8 * whole

    def flush(self) -> None:
        """Write the pending bits as one zero-padded byte (if any) and reset."""
        if self._nbits:
            self.fo.write(bytes([self._value]))
        self._value = 0
        self._nbits = 0


class BitUnpacker:
    """Streaming inverse of :class:`BitPacker`: pull ``bits``-wide values from ``fo``."""

    def __init__(self, bits: int, fo: tp.BinaryIO):
        _check_bits(bits)
        self.bits = int(bits)
        self.fo = fo
        self._value = 0
        self._nbits = 0

    def pull(self) -> int:
        """Next value; raises ``BitstreamError`` when the stream ends first."""
        while self._nbits < self.bits:
            byte = self.fo.read(1)
            if not byte:
                raise BitstreamError("packed codes: stream ended in the middle of a value")
            self._value |= byte[0] << self._nbits
            self._nbits += 8
        out = self._value & ((1 << self.bits) - 1)
        self._value >>= self.bits
        self._nbits -= self.bits
        return out


# ------------------------------------------------------------------------------------------
# Body
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamLayout:
    """What the body's layout depends on, taken from the model that reads or wrote it.

    ``model_name`` (checked against the header's ``m``; None skips the check),
    ``n_q`` (most codebooks), ``bits`` per code, ``hop_length`` (samples per frame),
    ``normalize`` (a float32 scale per segment), ``segment_length`` and ``segment_stride``
    in samples (both None when the whole signal is one segment).
    """

    model_name: str | None
    n_q: int
    bits: int
    hop_length: int
    normalize: bool
    segment_length: int | None = None
    segment_stride: int | None = None

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.n_q < 1 or self.hop_length < 1:
            raise ValueError(f"n_q and hop_length must be >= 1, got {self.n_q}, {self.hop_length}")
        if (self.segment_length is None) != (self.segment_stride is None):
            raise ValueError("segment_length and segment_stride must both be set or both be None")
        if self.segment_length is not None and (self.segment_length < 1 or self.segment_stride < 1):
            raise ValueError("segment_length and segment_stride must be >= 1")

    @classmethod
    def from_model(cls, model: "EncodecModel") -> "StreamLayout":
        """The layout of ``model``'s files."""
        return cls(model_name=model.name, n_q=model.n_q, bits=model.bits_per_codebook,
                   hop_length=model.hop_length, normalize=bool(model.normalize),
                   segment_length=model.segment_length, segment_stride=model.segment_stride)

    @property
    def scale_bytes(self) -> int:
        """Bytes of the per-segment scale: 4 for normalising models, else 0."""
        return SCALE_STRUCT.size if self.normalize else 0

    def num_frames(self, length: int) -> int:
        """Frames in a segment of ``length`` samples: ``ceil(length / hop_length)``."""
        return -(-length // self.hop_length)

    def num_segments(self, audio_length: int) -> int:
        """Segments for ``audio_length`` samples."""
        if self.segment_stride is None:
            return 1
        return -(-audio_length // self.segment_stride)

    def segments(self, audio_length: int) -> list[tuple[int, int]]:
        """(offset, length) in samples of each segment, as the model cuts them."""
        if self.segment_length is None or self.segment_stride is None:
            return [(0, audio_length)]
        return [(off, min(self.segment_length, audio_length - off))
                for off in range(0, audio_length, self.segment_stride)]

    def segment_size(self, length: int, num_codebooks: int) -> int:
        """Bytes of one segment record of ``length`` samples (scale + packed codes)."""
        return self.scale_bytes + packed_size(num_codebooks * self.num_frames(length), self.bits)


LayoutLike = tp.Union[StreamLayout, "EncodecModel"]


def as_layout(layout: LayoutLike) -> StreamLayout:
    """``layout`` itself, or the layout of a model."""
    return layout if isinstance(layout, StreamLayout) else StreamLayout.from_model(layout)


def body_size(header: EcdcHeader, layout: StreamLayout) -> int:
    """Exact body size in bytes (without the LM) for ``header``; closed form, so a huge
    ``audio_length`` costs nothing to check."""
    al, nc = header.audio_length, header.num_codebooks
    seg, stride = layout.segment_length, layout.segment_stride
    if seg is None or stride is None:
        return layout.segment_size(al, nc)
    n = layout.num_segments(al)
    n_full = min(n, (al - seg) // stride + 1) if al >= seg else 0
    total = n_full * layout.segment_size(seg, nc)
    for i in range(n_full, n):  # partial segments at the end: at most about seg / stride
        total += layout.segment_size(al - i * stride, nc)
    return total


def min_lm_body_size(header: EcdcHeader, layout: StreamLayout, card: int) -> int:
    """A lower bound on the bytes of an entropy-coded body for ``header``.

    Each code costs at least ``-log2(p_max)`` bits, where ``p_max = (2**24 - 2 card + 2) / 2**24``
    is the largest probability a quantised CDF can give a bin (every other bin keeps 2
    counts), plus each segment's scale. Half of that bound is returned, as a safety margin:
    it only serves to reject, before any decoding, headers whose audio length is absurd for
    the body (which would otherwise make the decoder run for a very long time).
    """
    al, nc = header.audio_length, header.num_codebooks
    n_seg = layout.num_segments(al)
    if layout.segment_length is None or layout.segment_stride is None:
        frames = layout.num_frames(al)
    else:  # closed form as in body_size: full segments, then the few partial ones
        seg, stride = layout.segment_length, layout.segment_stride
        n_full = min(n_seg, (al - seg) // stride + 1) if al >= seg else 0
        frames = n_full * layout.num_frames(seg)
        frames += sum(layout.num_frames(al - i * stride) for i in range(n_full, n_seg))
    total = 1 << 24
    bits_per_code = -math.log2((total - 2 * card + 2) / total) if 2 * card <= total else 0.0
    return n_seg * layout.scale_bytes + int(frames * nc * bits_per_code / 16)


def _check_compatible(header: EcdcHeader, layout: StreamLayout, lm: "EntropyLM | None" = None) -> None:
    if layout.model_name is not None and header.model_name != layout.model_name:
        raise BitstreamError(f"ECDC file was written by model {header.model_name!r}, "
                             f"but is being read with model {layout.model_name!r}")
    if header.num_codebooks > layout.n_q:
        raise BitstreamError(f"ECDC header field 'nc' (number of codebooks): model "
                             f"{layout.model_name!r} has at most {layout.n_q}, got "
                             f"{header.num_codebooks}")
    if header.use_lm:
        if lm is None:
            raise BitstreamError("ECDC file uses the entropy model (header 'lm': true): its body "
                                 "can only be read with that entropy model (pass lm=...)")
        _check_lm(header, layout, lm)


def _check_lm(header: EcdcHeader, layout: StreamLayout, lm: "EntropyLM") -> None:
    """The entropy model must cover the file's codebooks and the codec's bins."""
    if lm.card != 1 << layout.bits:
        raise BitstreamError(f"the entropy model predicts {lm.card} bins per codebook, but model "
                             f"{layout.model_name!r} has {1 << layout.bits}")
    if header.num_codebooks > lm.n_q:
        raise BitstreamError(f"ECDC file uses {header.num_codebooks} codebooks, but the entropy "
                             f"model covers only {lm.n_q}")


def read_body(body: bytes, header: EcdcHeader, layout: LayoutLike,
              lm: "EntropyLM | None" = None) -> list[EncodedFrame]:
    """Parse the body (everything after the header) into one ``EncodedFrame`` per segment.

    Each frame has codes LongTensor [1, nc, ceil(L / hop)] for a segment of L samples and
    a float32 scale [1, 1] (normalising models) or None. Raises ``BitstreamError`` when the
    header does not fit the layout, the body is truncated or has extra bytes, or a scale
    is not finite and positive. ``layout`` may be the model itself.

    An entropy-coded body (header ``lm`` true) needs ``lm``, the entropy model it was written
    with (``BitstreamError`` without it, or when it does not cover the file's codebooks and
    the codec's bins); it is decoded segment by segment, which runs the model once per
    frame. ``lm`` is not used for other files.
    """
    layout = as_layout(layout)
    _check_compatible(header, layout, lm)
    if header.use_lm:
        assert lm is not None
        return _read_lm_body(body, header, layout, lm)
    expected = body_size(header, layout)
    if len(body) < expected:
        raise BitstreamError(f"ECDC body truncated: expected {expected} bytes for "
                             f"{header.audio_length} samples x {header.num_codebooks} codebooks, "
                             f"got {len(body)} ({expected - len(body)} missing)")
    if len(body) > expected:
        raise BitstreamError(f"ECDC body has {len(body) - expected} extra byte(s) after the last "
                             f"segment (expected {expected} bytes, got {len(body)})")
    view = memoryview(body)
    frames: list[EncodedFrame] = []
    pos = 0
    nc = header.num_codebooks
    for index, (offset, length) in enumerate(layout.segments(header.audio_length)):
        scale = None
        if layout.normalize:
            (value,) = SCALE_STRUCT.unpack_from(view, pos)
            scale = _scale_tensor(value, index, offset)
            pos += SCALE_STRUCT.size
        num_frames = layout.num_frames(length)
        size = packed_size(nc * num_frames, layout.bits)
        codes = unpack_codes(bytes(view[pos:pos + size]), nc, num_frames, layout.bits)
        pos += size
        frames.append(EncodedFrame(codes[None], scale))
    return frames


def _scale_tensor(value: float, index: int, offset: int) -> torch.Tensor:
    if not math.isfinite(value) or value <= 0:
        raise BitstreamError(f"ECDC segment {index} (sample {offset}): scale must be "
                             f"finite and > 0, got {value!r}")
    return torch.tensor([[value]], dtype=torch.float32)


def _read_lm_body(body: bytes, header: EcdcHeader, layout: StreamLayout,
                  lm: "EntropyLM") -> list[EncodedFrame]:
    """Decode an entropy-coded body segment by segment (scale, then the coded codes)."""
    from .entropy import decode_segment_with_lm

    minimum = min_lm_body_size(header, layout, lm.card)
    if len(body) < minimum:
        raise BitstreamError(f"ECDC body truncated: an entropy-coded body for "
                             f"{header.audio_length} samples x {header.num_codebooks} codebooks "
                             f"needs at least {minimum} bytes, got {len(body)}")
    fo = io.BytesIO(body)
    frames: list[EncodedFrame] = []
    nc = header.num_codebooks
    for index, (offset, length) in enumerate(layout.segments(header.audio_length)):
        scale = None
        if layout.normalize:
            raw = fo.read(SCALE_STRUCT.size)
            if len(raw) < SCALE_STRUCT.size:
                raise BitstreamError(f"ECDC body truncated: segment {index} (sample {offset}) "
                                     f"ends inside its scale")
            (value,) = SCALE_STRUCT.unpack(raw)
            scale = _scale_tensor(value, index, offset)
        try:
            codes = decode_segment_with_lm(lm, fo, nc, layout.num_frames(length))
        except BitstreamError as exc:
            raise BitstreamError(f"ECDC segment {index} (sample {offset}): {exc}") from None
        frames.append(EncodedFrame(codes[None], scale))
    extra = len(body) - fo.tell()
    if extra:
        raise BitstreamError(f"ECDC body has {extra} extra byte(s) after the last entropy-coded "
                             f"segment (the segments used {fo.tell()} of {len(body)} bytes)")
    return frames


def write_body(fo: tp.BinaryIO, header: EcdcHeader, frames: tp.Sequence[EncodedFrame],
               layout: LayoutLike, lm: "EntropyLM | None" = None) -> int:
    """Write the segments' codes (batch of one: codes [1, nc, F], scale [1, 1] or None).

    Checks that the frames match ``header`` and ``layout`` (segment count, shapes, scale
    presence); returns the bytes written. A header with ``use_lm`` needs ``lm``, the
    entropy model that codes each segment (as the official ``use_lm=True`` writer does).
    """
    layout = as_layout(layout)
    if header.use_lm:
        if lm is None:
            raise BitstreamError("writing an entropy-coded ('lm': true) body needs the entropy model")
        _check_lm(header, layout, lm)
        from .entropy import encode_segment_with_lm
    segments = layout.segments(header.audio_length)
    if len(frames) != len(segments):
        raise ValueError(f"expected {len(segments)} segment(s) for {header.audio_length} samples, "
                         f"got {len(frames)}")
    written = 0
    for index, ((codes, scale), (_, length)) in enumerate(zip(frames, segments)):
        expected_shape = (1, header.num_codebooks, layout.num_frames(length))
        if tuple(codes.shape) != expected_shape:
            raise ValueError(f"segment {index}: expected codes of shape {expected_shape}, "
                             f"got {tuple(codes.shape)}")
        if layout.normalize:
            if scale is None or scale.numel() != 1:
                raise ValueError(f"segment {index}: normalising model needs one scale per segment")
            fo.write(SCALE_STRUCT.pack(float(scale.reshape(-1)[0])))
            written += SCALE_STRUCT.size
        elif scale is not None:
            raise ValueError(f"segment {index}: model does not normalise but a scale was given")
        if header.use_lm:
            packed = encode_segment_with_lm(lm, codes[0])
        else:
            packed = pack_codes(codes[0], layout.bits)
        fo.write(packed)
        written += len(packed)
    return written


def write_ecdc(fo: tp.BinaryIO, header: EcdcHeader, frames: tp.Sequence[EncodedFrame],
               layout: LayoutLike, lm: "EntropyLM | None" = None) -> int:
    """Write a whole ``.ecdc`` file (header + body) to ``fo``; returns the bytes written.
    ``lm``: the entropy model, needed when ``header.use_lm`` (see :func:`write_body`)."""
    layout = as_layout(layout)
    if header.use_lm and lm is None:
        raise BitstreamError("writing an entropy-coded ('lm': true) file needs the entropy model")
    _check_compatible(header, layout, lm)
    return write_header(fo, header) + write_body(fo, header, frames, layout, lm)


def encode_ecdc(header: EcdcHeader, frames: tp.Sequence[EncodedFrame], layout: LayoutLike,
                lm: "EntropyLM | None" = None) -> bytes:
    """A whole ``.ecdc`` file as bytes (see :func:`write_ecdc`)."""
    fo = io.BytesIO()
    write_ecdc(fo, header, frames, layout, lm)
    return fo.getvalue()


def read_ecdc(data: bytes, layout: LayoutLike, lm: "EntropyLM | None" = None
              ) -> tuple[EcdcHeader, list[EncodedFrame]]:
    """Parse a whole ``.ecdc`` file without running the codec (``layout`` may be the
    model itself: only its sizes are used).

    Returns the header and one ``EncodedFrame`` per segment (see :func:`read_body`).
    Entropy-coded files need ``lm``, the entropy model (which then runs once per frame).
    Every malformed input raises ``BitstreamError``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    header, offset = parse_header(data)
    return header, read_body(data[offset:], header, layout, lm)
