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

import io
import json
import math
import struct
import typing as tp
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import BitstreamError
from .model import EncodedFrame

if tp.TYPE_CHECKING:
    from .entropy.arithmetic import FrameProgress
    from .entropy import EntropyLM
    from .entropy.fixed import FixedLM
    from .model import EncodecModel

    AnyLM = tp.Union[EntropyLM, FixedLM]

__all__ = [
    "MAGIC", "VERSION", "DETERMINISTIC_VERSION", "VERSIONS", "HEADER_STRUCT",
    "MAX_HEADER_JSON_BYTES", "MAX_BITS", "DEFAULT_CHECK_BITS", "default_check_interval",
    "DeterministicCoding", "EcdcHeader", "StreamLayout", "header_bytes", "write_header",
    "read_header", "parse_header",
    "packed_size", "pack_codes", "unpack_codes", "BitPacker", "BitUnpacker",
    "LayoutLike", "as_layout", "body_size", "min_lm_body_size", "write_body", "read_body",
    "encode_ecdc", "write_ecdc", "read_ecdc",
]

MAGIC = b"ECDC"
"""The four bytes every ``.ecdc`` file starts with."""

VERSION = 0
"""The official format's version byte (the only one the official package reads)."""

DETERMINISTIC_VERSION = 1
"""Version byte of the deterministic entropy-coded format (opencodec only)."""

VERSIONS = (VERSION, DETERMINISTIC_VERSION)
"""Version bytes this reader accepts."""

HEADER_STRUCT = struct.Struct("!4sBI")
"""Fixed part of the header: magic, version byte, big-endian uint32 JSON length (9 bytes)."""

MAX_HEADER_JSON_BYTES = 1 << 16
"""Largest JSON header accepted (a real one is under 100 bytes); guards against huge reads."""

MAX_BITS = 32
"""Widest code field supported by the packers, in bits."""

DEFAULT_CHECK_BITS = 8
"""Default width of the periodic checks of the deterministic format (see the module doc)."""

MAX_LM_NAME_CHARS = 200
"""Longest entropy-model name a version 1 header may carry."""

SCALE_STRUCT = struct.Struct("!f")

_CHUNK_VALUES = 1 << 18  # values handled per numpy block (a multiple of 8: blocks end on bytes)
_HASH_CHARS = frozenset("0123456789abcdef")


def default_check_interval(frame_rate: float) -> int:
    """Frames between the periodic checks by default: about one second of frames."""
    return max(1, int(round(frame_rate)))


# ------------------------------------------------------------------------------------------
# Header
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeterministicCoding:
    """What a version 1 (deterministic) header adds: the entropy model's name (JSON
    ``lmn``) and weights hash (``lmh``, 16 lowercase hex digits), its fixed-point scheme
    (``fx``), and the checks: ``check_bits`` (``cb``, 0..32) every ``check_interval`` frames
    (``ci``, >= 1), besides the CRC-32 that ends every segment."""

    lm_name: str
    lm_hash: str
    scheme: int
    check_bits: int = DEFAULT_CHECK_BITS
    check_interval: int = 75

    def __post_init__(self) -> None:
        _check_deterministic_fields(self.to_dict())

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON keys this adds to the header, in order ``lmn, lmh, fx, cb, ci``."""
        return {"lmn": self.lm_name, "lmh": self.lm_hash, "fx": self.scheme,
                "cb": self.check_bits, "ci": self.check_interval}


@dataclass(frozen=True)
class EcdcHeader:
    """The JSON header of an ``.ecdc`` file.

    ``model_name`` (JSON ``m``), ``audio_length`` in samples per channel (``al``),
    ``num_codebooks`` per frame (``nc``) and ``use_lm``: whether the body is entropy coded
    (``lm``). ``deterministic`` (None for the official version 0 format) makes it a
    version 1 header, entropy coded with the integer model (``use_lm`` must be true).
    ``model_hash`` (``mh``, 16 hex digits): the model's weights hash, written for every model
    but the official ones; ``lm_hash`` (``lmh``): the entropy model's, for a version 0
    entropy-coded file (version 1 carries it in ``deterministic``). See
    :mod:`opencodec.identity`.
    """

    model_name: str
    audio_length: int
    num_codebooks: int
    use_lm: bool
    deterministic: DeterministicCoding | None = None
    model_hash: str | None = None
    lm_hash: str | None = None

    def __post_init__(self) -> None:
        if self.deterministic is not None and not isinstance(self.deterministic, DeterministicCoding):
            raise TypeError("deterministic must be a DeterministicCoding or None")
        if self.lm_hash is not None and (self.deterministic is not None or not self.use_lm):
            raise BitstreamError("ECDC header: lm_hash is for version 0 entropy-coded files "
                                 "(a deterministic header carries its own)")
        _check_header_fields(self.to_dict(), self.version)

    @property
    def entropy_model_hash(self) -> str | None:
        """The entropy model's weights hash the file records (``lmh``), or None."""
        return self.deterministic.lm_hash if self.deterministic is not None else self.lm_hash

    @property
    def version(self) -> int:
        """The version byte: 1 with ``deterministic``, else 0."""
        return VERSION if self.deterministic is None else DETERMINISTIC_VERSION

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON object, keys in the official order ``m, al, nc, lm`` (then version 1's)."""
        meta: dict[str, tp.Any] = {"m": self.model_name, "al": self.audio_length,
                                   "nc": self.num_codebooks, "lm": self.use_lm}
        if self.model_hash is not None:
            meta["mh"] = self.model_hash
        if self.lm_hash is not None:
            meta["lmh"] = self.lm_hash
        if self.deterministic is not None:
            meta.update(self.deterministic.to_dict())
        return meta

    def to_json(self) -> bytes:
        """UTF-8 JSON exactly as the official writer produces it (default separators)."""
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, meta: tp.Any, version: int = VERSION) -> "EcdcHeader":
        """Validate a decoded JSON value of a ``version`` header and build the header;
        unknown keys are ignored."""
        _check_header_fields(meta, version)
        det = None
        if version == DETERMINISTIC_VERSION:
            det = DeterministicCoding(lm_name=meta["lmn"], lm_hash=meta["lmh"], scheme=meta["fx"],
                                      check_bits=meta["cb"], check_interval=meta["ci"])
        return cls(model_name=meta["m"], audio_length=meta["al"], num_codebooks=meta["nc"],
                   use_lm=meta["lm"], deterministic=det, model_hash=meta.get("mh"),
                   lm_hash=meta.get("lmh") if det is None else None)

    @classmethod
    def from_json(cls, data: bytes | str, version: int = VERSION) -> "EcdcHeader":
        """Parse the JSON part of a ``version`` header (bytes must be UTF-8)."""
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
        return cls.from_dict(meta, version)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(value: tp.Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__} {text}"


def _check_int(meta: dict[str, tp.Any], key: str, what: str, low: int, high: int | None = None) -> None:
    value = meta[key]
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer {bounds}, "
                             f"got {_describe(value)}")
    if value < low or (high is not None and value > high):
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer {bounds}, "
                             f"got {value}")


def _check_header_fields(meta: tp.Any, version: int = VERSION) -> None:
    """Raise ``BitstreamError`` unless ``meta`` is a valid header object of ``version``."""
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
    _check_int(meta, "al", "audio length", 1)
    _check_int(meta, "nc", "number of codebooks", 1)
    if not isinstance(meta["lm"], bool):
        raise BitstreamError(f"ECDC header field 'lm' (entropy coded): expected true or false, "
                             f"got {_describe(meta['lm'])}")
    if "mh" in meta:
        _check_hash(meta, "mh", "model weights hash")
    if version == DETERMINISTIC_VERSION:
        if meta["lm"] is not True:
            raise BitstreamError("ECDC version 1 (deterministic entropy coding) header: field 'lm' "
                                 "must be true, got false")
        _check_deterministic_fields(meta)
    elif "lmh" in meta:
        if meta["lm"] is not True:
            raise BitstreamError("ECDC header field 'lmh' (entropy model weights hash) in a file "
                                 "that is not entropy coded ('lm': false)")
        _check_hash(meta, "lmh", "entropy model weights hash")


def _check_hash(meta: dict[str, tp.Any], key: str, what: str) -> None:
    digest = meta[key]
    if not isinstance(digest, str) or len(digest) != 16 or not set(digest) <= _HASH_CHARS:
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected 16 "
                             f"lowercase hex digits, got {_describe(digest)}")


def _check_deterministic_fields(meta: dict[str, tp.Any]) -> None:
    """Raise ``BitstreamError`` unless ``meta`` has valid version 1 fields."""
    keys = ("lmn", "lmh", "fx", "cb", "ci")
    missing = [key for key in keys if key not in meta]
    if missing:
        raise BitstreamError(f"ECDC version 1 (deterministic entropy coding) header: missing key(s) "
                             f"{', '.join(map(repr, missing))} (expected {', '.join(map(repr, keys))})")
    name = meta["lmn"]
    if not isinstance(name, str) or not name or len(name) > MAX_LM_NAME_CHARS:
        raise BitstreamError(f"ECDC header field 'lmn' (entropy model name): expected a non-empty "
                             f"string of at most {MAX_LM_NAME_CHARS} characters, got {_describe(name)}")
    _check_hash(meta, "lmh", "entropy model weights hash")
    _check_int(meta, "fx", "fixed-point scheme", 1)
    _check_int(meta, "cb", "check bits", 0, 32)
    _check_int(meta, "ci", "check interval in frames", 1, (1 << 31) - 1)


def header_bytes(header: EcdcHeader) -> bytes:
    """The header's bytes as :func:`write_header` writes them (fixed part + JSON)."""
    meta = header.to_json()
    if len(meta) > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON is {len(meta)} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed (model name too long?)")
    return HEADER_STRUCT.pack(MAGIC, header.version, len(meta)) + meta


def write_header(fo: tp.BinaryIO, header: EcdcHeader) -> int:
    """Write the header (fixed part + JSON) to ``fo``; returns the bytes written."""
    data = header_bytes(header)
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

    Raises ``BitstreamError`` for a wrong magic or version (0 and 1 are read), a truncated
    header, a JSON length beyond :data:`MAX_HEADER_JSON_BYTES` or beyond the data
    available, invalid UTF-8/JSON, and missing or mistyped fields.
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
    if version not in VERSIONS:
        raise BitstreamError(f"unsupported ECDC version: expected {VERSION} (official format) or "
                             f"{DETERMINISTIC_VERSION} (deterministic entropy coding), got {version}")
    meta = _read_up_to(fo, min(meta_size, MAX_HEADER_JSON_BYTES))
    if len(meta) < min(meta_size, MAX_HEADER_JSON_BYTES):
        raise BitstreamError(f"ECDC header truncated: JSON length field says {meta_size} bytes, "
                             f"only {len(meta)} available")
    if meta_size > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON length field says {meta_size} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed")
    return EcdcHeader.from_json(meta, version)


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

    def total_frames(self, audio_length: int) -> int:
        """Code frames of all segments of ``audio_length`` samples together."""
        return sum(self.num_frames(n) for _, n in self.segments(audio_length))

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


def _check_compatible(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM | None" = None
                      ) -> "AnyLM | None":
    """Check that the header fits the layout and the entropy model; returns the model to code
    the body with (the integer :class:`~opencodec.entropy.fixed.FixedLM` for version 1)."""
    if layout.model_name is not None and header.model_name != layout.model_name:
        raise BitstreamError(f"ECDC file was written by model {header.model_name!r}, "
                             f"but is being read with model {layout.model_name!r}")
    if header.num_codebooks > layout.n_q:
        raise BitstreamError(f"ECDC header field 'nc' (number of codebooks): model "
                             f"{layout.model_name!r} has at most {layout.n_q}, got "
                             f"{header.num_codebooks}")
    if header.deterministic is not None:
        return _fixed_lm(header, layout, lm)
    if header.use_lm:
        if lm is None:
            raise BitstreamError("ECDC file uses the entropy model (header 'lm': true): its body "
                                 "can only be read with that entropy model (pass lm=...)")
        from .entropy import EntropyLM

        if not isinstance(lm, EntropyLM):
            raise BitstreamError("the official entropy-coded format (version 0) needs the float "
                                 f"EntropyLM, got {type(lm).__name__}")
        _check_lm(header, layout, lm)
    return lm


def _fixed_lm(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM | None") -> "FixedLM":
    """The integer entropy model for a version 1 file: ``lm`` converted (cached) and checked
    against the header's scheme and weights hash, the codec's bins and the codebooks."""
    from .entropy.fixed import SCHEME, fixed_lm_for

    det = header.deterministic
    assert det is not None
    if lm is None:
        raise BitstreamError(f"ECDC file is entropy coded with entropy model {det.lm_name!r} "
                             f"(weights hash {det.lm_hash}): its body can only be read with that "
                             f"entropy model (pass lm=...)")
    if det.scheme != SCHEME:
        raise BitstreamError(f"ECDC header field 'fx': the file uses fixed-point scheme {det.scheme}, "
                             f"this reader implements scheme {SCHEME}")
    flm = fixed_lm_for(lm)
    _check_lm(header, layout, flm)
    if flm.weights_hash != det.lm_hash:
        given = f" ({flm.name!r})" if flm.name else ""
        raise BitstreamError(f"wrong entropy model: the file was coded with {det.lm_name!r} (weights "
                             f"hash {det.lm_hash}), the entropy model given{given} has weights hash "
                             f"{flm.weights_hash}; decode with the entropy model the file was "
                             f"written with")
    return flm


def _check_lm(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM") -> None:
    """The entropy model must cover the file's codebooks and the codec's bins."""
    if lm.card != 1 << layout.bits:
        raise BitstreamError(f"the entropy model predicts {lm.card} bins per codebook, but model "
                             f"{layout.model_name!r} has {1 << layout.bits}")
    if header.num_codebooks > lm.n_q:
        raise BitstreamError(f"ECDC file uses {header.num_codebooks} codebooks, but the entropy "
                             f"model covers only {lm.n_q}")


BodyProgress = tp.Optional[tp.Callable[[int, int], None]]
"""``progress(frames done, total frames)`` while an entropy-coded body is coded or decoded."""


def read_body(body: bytes, header: EcdcHeader, layout: LayoutLike,
              lm: "AnyLM | None" = None, progress: BodyProgress = None) -> list[EncodedFrame]:
    """Parse the body (everything after the header) into one ``EncodedFrame`` per segment.

    Each frame has codes LongTensor [1, nc, ceil(L / hop)] for a segment of L samples and
    a float32 scale [1, 1] (normalising models) or None. Raises ``BitstreamError`` when the
    header does not fit the layout, the body is truncated or has extra bytes, or a scale
    is not finite and positive. ``layout`` may be the model itself.

    An entropy-coded body (header ``lm`` true) needs ``lm``, the entropy model it was written
    with (``BitstreamError`` without it, or when it does not cover the file's codebooks and
    the codec's bins); it is decoded segment by segment, which runs the model once per
    frame. ``lm`` is not used for other files. A version 1 (deterministic) body needs the
    entropy model whose weights hash the header names (an ``EntropyLM``, converted, or its
    ``FixedLM``; else ``BitstreamError``), and every check it carries must pass
    (``BitstreamError`` naming the segment and frame otherwise). ``progress(done, total)``
    follows the frames of an entropy-coded body as they are decoded.
    """
    layout = as_layout(layout)
    coder_lm = _check_compatible(header, layout, lm)
    if header.deterministic is not None:
        return _read_det_body(body, header, layout, tp.cast("FixedLM", coder_lm), progress)
    if header.use_lm:
        assert coder_lm is not None
        return _read_lm_body(body, header, layout, tp.cast("EntropyLM", coder_lm), progress)
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
        raise BitstreamError(f"ECDC body has {extra} extra byte(s) after the last entropy-coded "
                             f"segment (the segments used {fo.tell()} of {len(body)} bytes)")
    return frames


def _read_lm_body(body: bytes, header: EcdcHeader, layout: StreamLayout,
                  lm: "EntropyLM", progress: BodyProgress = None) -> list[EncodedFrame]:
    """Decode an official entropy-coded body (version 0)."""
    from .entropy import decode_segment_with_lm

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
    from .entropy.deterministic import decode_segment_fixed

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


def write_body(fo: tp.BinaryIO, header: EcdcHeader, frames: tp.Sequence[EncodedFrame],
               layout: LayoutLike, lm: "AnyLM | None" = None, progress: BodyProgress = None) -> int:
    """Write the segments' codes (batch of one: codes [1, nc, F], scale [1, 1] or None).

    Checks that the frames match ``header`` and ``layout`` (segment count, shapes, scale
    presence); returns the bytes written. A header with ``use_lm`` needs ``lm``, the
    entropy model that codes each segment: for version 0 the float
    :class:`~opencodec.entropy.EntropyLM` (as the official ``use_lm=True`` writer does), for
    version 1 (``header.deterministic``) an ``EntropyLM`` or its
    :class:`~opencodec.entropy.fixed.FixedLM`, whose weights hash must be the header's.
    ``progress(done, total)`` follows the frames as they are entropy coded.
    """
    layout = as_layout(layout)
    det = header.deterministic
    if header.use_lm:
        if lm is None:
            raise BitstreamError("writing an entropy-coded ('lm': true) body needs the entropy model")
        if det is not None:
            from .entropy.deterministic import encode_segment_fixed
            flm = _fixed_lm(header, layout, lm)
            head = header_bytes(header)
        else:
            _check_lm(header, layout, lm)
            from .entropy import encode_segment_with_lm
    segments = layout.segments(header.audio_length)
    if len(frames) != len(segments):
        raise ValueError(f"expected {len(segments)} segment(s) for {header.audio_length} samples, "
                         f"got {len(frames)}")
    written = 0
    total = layout.total_frames(header.audio_length)
    done = 0
    for index, ((codes, scale), (_, length)) in enumerate(zip(frames, segments)):
        expected_shape = (1, header.num_codebooks, layout.num_frames(length))
        if tuple(codes.shape) != expected_shape:
            raise ValueError(f"segment {index}: expected codes of shape {expected_shape}, "
                             f"got {tuple(codes.shape)}")
        if layout.normalize:
            if scale is None or scale.numel() != 1:
                raise ValueError(f"segment {index}: normalising model needs one scale per segment")
            raw = SCALE_STRUCT.pack(float(scale.reshape(-1)[0]))
            fo.write(raw)
            written += SCALE_STRUCT.size
        elif scale is not None:
            raise ValueError(f"segment {index}: model does not normalise but a scale was given")
        else:
            raw = b""
        frame_progress = _segment_progress(progress, done, total)
        if det is not None:
            packed = encode_segment_fixed(flm, codes[0], check_bits=det.check_bits,
                                          check_interval=det.check_interval,
                                          crc_seed=_segment_crc_seed(head, index, raw),
                                          progress=frame_progress)
        elif header.use_lm:
            packed = encode_segment_with_lm(lm, codes[0], progress=frame_progress)
        else:
            packed = pack_codes(codes[0], layout.bits)
        fo.write(packed)
        written += len(packed)
        done += codes.shape[-1]
    return written


def write_ecdc(fo: tp.BinaryIO, header: EcdcHeader, frames: tp.Sequence[EncodedFrame],
               layout: LayoutLike, lm: "AnyLM | None" = None, progress: BodyProgress = None) -> int:
    """Write a whole ``.ecdc`` file (header + body) to ``fo``; returns the bytes written.
    ``lm``: the entropy model, needed when ``header.use_lm``; ``progress``: see
    :func:`write_body`."""
    layout = as_layout(layout)
    if header.use_lm and lm is None:
        raise BitstreamError("writing an entropy-coded ('lm': true) file needs the entropy model")
    _check_compatible(header, layout, lm)
    return write_header(fo, header) + write_body(fo, header, frames, layout, lm, progress)


def encode_ecdc(header: EcdcHeader, frames: tp.Sequence[EncodedFrame], layout: LayoutLike,
                lm: "AnyLM | None" = None) -> bytes:
    """A whole ``.ecdc`` file as bytes (see :func:`write_ecdc`)."""
    fo = io.BytesIO()
    write_ecdc(fo, header, frames, layout, lm)
    return fo.getvalue()


def read_ecdc(data: bytes, layout: LayoutLike, lm: "AnyLM | None" = None
              ) -> tuple[EcdcHeader, list[EncodedFrame]]:
    """Parse a whole ``.ecdc`` file without running the codec (``layout`` may be the
    model itself: only its sizes are used).

    Returns the header and one ``EncodedFrame`` per segment (see :func:`read_body`).
    Entropy-coded files need ``lm``, the entropy model (which then runs once per frame;
    for version 1 files an ``EntropyLM`` or ``FixedLM`` with the header's weights hash).
    Every malformed input raises ``BitstreamError``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    header, offset = parse_header(data)
    return header, read_body(data[offset:], header, layout, lm)
