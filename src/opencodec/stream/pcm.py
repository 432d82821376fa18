"""PCM in: :class:`PcmStreamReader` reads a WAV stream or headerless PCM incrementally."""

from __future__ import annotations

import struct
import typing as tp
import warnings
from dataclasses import dataclass

import numpy as np

from ..argtypes import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from ..errors import AudioIOError


def _read_some(fi: tp.BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, as soon as any are available (b"" at end of input)."""
    read1 = getattr(fi, "read1", None)
    return read1(size) if read1 is not None else fi.read(size)


def _read_exact(fi: tp.BinaryIO, size: int) -> bytes:
    """Exactly ``size`` bytes, or fewer at end of input."""
    parts, remaining = [], size
    while remaining > 0:
        chunk = _read_some(fi, min(remaining, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved PCM: ``sample_rate`` (Hz), ``channels`` and ``encoding``: 'u8', 's16',
    's24', 's32' (little-endian integers, full scale 2**(bits-1)) or 'f32', 'f64' (IEEE
    float, full scale 1.0)."""

    sample_rate: int
    channels: int
    encoding: str

    def __post_init__(self) -> None:
        if self.encoding not in _SAMPLE_BYTES:
            raise ValueError(f"unknown PCM encoding {self.encoding!r}")
        if self.sample_rate < 1 or self.channels < 1:
            raise AudioIOError(f"PCM format: sample rate and channels must be >= 1, got "
                               f"{self.sample_rate} Hz, {self.channels} channel(s)")

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return self.channels * _SAMPLE_BYTES[self.encoding]


_SAMPLE_BYTES = {"u8": 1, "s16": 2, "s24": 3, "s32": 4, "f32": 4, "f64": 8}

_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZE = 0xFFFFFFFF


def _decode_samples(raw: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole sample frames of ``raw`` -> float32 [n, C], scaled like libsndfile/soundfile."""
    enc = fmt.encoding
    if enc == "u8":
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif enc == "s16":
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif enc == "s24":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # top 24 bits of an int32
        x = (v >> 8).astype(np.float32) / float(1 << 23)
    elif enc == "s32":
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    elif enc == "f32":
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    else:
        x = np.frombuffer(raw, "<f8").astype(np.float32)
    return x.reshape(-1, fmt.channels)


class PcmStreamReader:
    """Reads PCM from a binary stream incrementally: a WAV stream (RIFF/RF64 header parsed
    first) or, with ``raw``, headerless samples.

    ``read(max_bytes)`` returns float32 samples [n, C] (n >= 1) as soon as some are
    available, or None at the end. WAV: PCM 8/16/24/32-bit, float 32/64-bit,
    WAVE_FORMAT_EXTENSIBLE of those. A data chunk size of 0 or 0xFFFFFFFF (what streaming
    writers put when the length is unknown) means "until the end of input" (in RF64,
    0xFFFFFFFF defers to the ds64 chunk's size unless that is 0); otherwise the reader stops
    after that many bytes. ``name`` names the source in errors. Input that ends
    inside a sample frame (not whole samples of every channel) is dropped with a warning
    (``warnings.warn``; the command line prints it as a ``warning:`` line): it usually means a
    wrong ``--format`` or ``--channels``.
    """

    def __init__(self, fi: tp.BinaryIO, raw: PcmFormat | None = None, name: str = "stdin"):
        self._fi = fi
        self.name = name
        self._remaining: int | None = None  # data bytes left (None: until EOF)
        self._carry = b""
        self.frames_read = 0
        self.format = raw if raw is not None else self._parse_wav()

    def _fail(self, message: str) -> tp.NoReturn:
        raise AudioIOError(f"{self.name}: {message}")

    def _parse_wav(self) -> PcmFormat:
        start = _read_exact(self._fi, 12)
        if len(start) < 12 or start[:4] not in (b"RIFF", b"RF64") or start[8:12] != b"WAVE":
            hint = "" if start[:4] != b"RIFX" else " (big-endian RIFX is not supported)"
            self._fail(f"not a WAV stream{hint}: expected 'RIFF....WAVE', got {start[:12]!r}; for "
                       "headerless samples use --raw --rate R --channels C --format F")
        fmt: PcmFormat | None = None
        ds64_data: int | None = None  # RF64: the data size of its ds64 chunk (0: unknown)
        while True:
            chunk = _read_exact(self._fi, 8)
            if len(chunk) < 8:
                self._fail("WAV stream ends before its 'data' chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if fmt is None:
                    self._fail("WAV 'data' chunk comes before the 'fmt ' chunk")
                if size == _UNKNOWN_SIZE and start[:4] == b"RF64" and ds64_data:
                    size = ds64_data  # the real size (chunks may follow the audio)
                self._remaining = None if size in (0, _UNKNOWN_SIZE) else size
                return fmt
            if size > 1 << 20:
                self._fail(f"WAV chunk {cid!r} of {size} bytes before the audio data is too large")
            body = _read_exact(self._fi, size + (size & 1))
            if len(body) < size:
                self._fail(f"WAV stream ends inside its {cid!r} chunk")
            if cid == b"ds64" and size >= 16:
                ds64_data = struct.unpack("<Q", body[8:16])[0]
            if cid == b"fmt ":
                if fmt is not None:  # libsndfile refuses such a file too; which one would hold?
                    self._fail("WAV stream has a second 'fmt ' chunk before its 'data' chunk")
                fmt = self._parse_fmt(body[:size])

    def _parse_fmt(self, body: bytes) -> PcmFormat:
        if len(body) < 16:
            self._fail(f"WAV 'fmt ' chunk is {len(body)} bytes, expected at least 16")
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == _WAV_EXTENSIBLE and len(body) >= 26:
            tag = struct.unpack("<H", body[24:26])[0]  # first bytes of the sub-format GUID
        encodings = {(_WAV_PCM, 8): "u8", (_WAV_PCM, 16): "s16", (_WAV_PCM, 24): "s24",
                     (_WAV_PCM, 32): "s32", (_WAV_FLOAT, 32): "f32", (_WAV_FLOAT, 64): "f64"}
        encoding = encodings.get((tag, bits))
        if encoding is None:
            self._fail(f"unsupported WAV sample format (format tag 0x{tag:04x}, {bits} bits); "
                       "supported: PCM 8/16/24/32-bit, IEEE float 32/64-bit")
        if channels < 1 or rate < 1:
            self._fail(f"WAV 'fmt ' chunk says {channels} channel(s) at {rate} Hz")
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:  # the range --rate takes for raw input
            self._fail(f"WAV header sample rate {rate} Hz is not supported: must be between "
                       f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}, got {rate}")
        fmt = PcmFormat(rate, channels, encoding)
        if align != fmt.frame_bytes:
            self._fail(f"WAV block align is {align}, expected {fmt.frame_bytes} for {channels} "
                       f"channel(s) of {bits} bits")
        return fmt

    def _warn_partial_frame(self) -> None:
        """At the end of the input: warn (once) about bytes left that do not make a whole
        sample frame, and drop them."""
        if self._carry:
            fmt = self.format
            warnings.warn(f"{self.name}: the input ended inside a sample frame ({len(self._carry)} "
                          f"byte(s) dropped; a frame is {fmt.frame_bytes} bytes: {fmt.channels} "
                          f"channel(s) of {fmt.encoding}); check the format and channel count",
                          stacklevel=3)
            self._carry = b""

    def read(self, max_bytes: int = 1 << 15) -> np.ndarray | None:
        """The next samples [n, C] float32 (n >= 1), or None at the end of the input."""
        frame = self.format.frame_bytes
        while True:
            want = max(frame, max_bytes)
            if self._remaining is not None:
                want = min(want, self._remaining)
            data = _read_some(self._fi, want) if want > 0 else b""
            if not data:
                self._warn_partial_frame()
                return None
            if self._remaining is not None:
                self._remaining -= len(data)
            data = self._carry + data
            whole = len(data) - len(data) % frame
            self._carry = data[whole:]
            if whole:
                x = _decode_samples(data[:whole], self.format)
                if not np.isfinite(x).all():
                    self._fail("the audio holds NaN or infinite samples")
                self.frames_read += x.shape[0]
                return x
