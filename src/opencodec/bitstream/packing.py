"""Code packing: ``bits``-wide codes to bytes and back, LSB-first (whole arrays with
:func:`pack_codes` / :func:`unpack_codes`, one value at a time with :class:`BitPacker` /
:class:`BitUnpacker`)."""

from __future__ import annotations

import operator
import sys
import typing as tp

import numpy as np

from ..errors import BitstreamError

if tp.TYPE_CHECKING:
    import torch

MAX_BITS = 32
"""Widest code field supported by the packers, in bits."""

_CHUNK_VALUES = 1 << 18  # values handled per numpy block (a multiple of 8: blocks end on bytes)


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
    loaded = sys.modules.get("torch")  # no torch loaded, no tensor: sizes and headers stay torch-free
    if loaded is not None and isinstance(codes, loaded.Tensor):
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == loaded.bool:
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
    import torch  # only here (codes as a tensor): the layout and the header need no torch

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
        """Append one integer value in ``[0, 2**bits)`` (a float is a ``ValueError``, as in
        :func:`pack_codes`: truncating 3.7 to 3 would write another code without a word)."""
        try:
            value = operator.index(value)  # ints, numpy ints, integer 0-dim tensors
        except TypeError:
            raise ValueError(f"codes must be integers, got {type(value).__name__} {value!r:.40}") from None
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

