"""Audio out: :class:`AudioSink` writes a WAV stream (sizes fixed afterwards when the output
is seekable) or raw PCM as the audio comes."""

from __future__ import annotations

import struct
import typing as tp

import numpy as np
import torch

from ..audio import to_file_samples
from ..errors import AudioIOError
from .pcm import _UNKNOWN_SIZE, _WAV_FLOAT, _WAV_PCM


class AudioSink:
    """Writes audio chunks [C, n] to a binary stream as they come: a WAV stream or raw.

    WAV (``raw`` False): a 44-byte header (16-bit PCM) or a 58-byte one (32-bit float:
    ``fmt `` of 18 bytes and a ``fact`` chunk) whose RIFF, ``fact`` and ``data`` sizes are
    0xFFFFFFFF, "unknown length", which libsndfile/soundfile (and most readers) take as
    "up to the end of the file". When the output is seekable (a regular file) the real
    sizes are written back by :meth:`close` (if they fit in 32 bits, i.e. up to 4 GiB).
    Raw: interleaved little-endian s16 (or f32 with ``float32``), no header.

    16-bit output is rounded to the nearest level and clipped to [-1, 1] like
    :func:`opencodec.audio.write_audio`; ``peak`` records the largest magnitude seen so
    the caller can warn once about clipping.
    """

    def __init__(self, fo: tp.BinaryIO, sample_rate: int, channels: int, *, float32: bool = False,
                 raw: bool = False):
        self._fo = fo
        self.sample_rate, self.channels = sample_rate, channels
        self.float32, self.raw = float32, raw
        self.frames = 0
        self.peak = 0.0
        self._start: int | None = None
        if not raw:
            self._start = _patch_position(fo)
            fo.write(self._wav_header(None))

    def _wav_header(self, frames: int | None) -> bytes:
        """The WAV header for ``frames`` sample frames; None (or a size beyond 32 bits):
        0xFFFFFFFF, "unknown", in the RIFF, ``fact`` and ``data`` size fields."""
        width = 4 if self.float32 else 2
        align = width * self.channels
        if self.float32:
            fmt = struct.pack("<4sIHHIIHHH", b"fmt ", 18, _WAV_FLOAT, self.channels, self.sample_rate,
                              self.sample_rate * align, align, 32, 0)
            fact = b"fact" + struct.pack("<II", 4, _UNKNOWN_SIZE if frames is None else frames)
        else:
            fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, _WAV_PCM, self.channels, self.sample_rate,
                              self.sample_rate * align, align, 16)
            fact = b""
        data_size = riff = _UNKNOWN_SIZE
        if frames is not None and 4 + len(fmt) + len(fact) + 8 + frames * align <= _UNKNOWN_SIZE:
            data_size = frames * align
            riff = 4 + len(fmt) + len(fact) + 8 + data_size
        elif fact:
            fact = b"fact" + struct.pack("<II", 4, _UNKNOWN_SIZE)
        return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + fmt + fact + b"data"
                + struct.pack("<I", data_size))

    def write(self, audio: torch.Tensor) -> None:
        """Append audio [C, n] (float, full scale 1.0)."""
        if audio.shape[-1] == 0:
            return
        x = audio.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise AudioIOError("the decoded audio holds NaN or infinite samples")
        data = x.numpy().T  # [n, C]
        if self.float32:
            out = np.ascontiguousarray(data, dtype="<f4")
        else:
            self.peak = max(self.peak, float(np.abs(data).max()))
            out = to_file_samples(np.clip(data, -1.0, 1.0), 16).astype("<i2")
        self._fo.write(out.tobytes())
        self.frames += data.shape[0]

    def close(self) -> None:
        """Write back the real WAV sizes when the output is a seekable file."""
        if self.raw or self._start is None:
            return
        end = self._fo.tell()
        self._fo.seek(self._start)
        self._fo.write(self._wav_header(self.frames))
        self._fo.seek(end)


def _patch_position(fo: tp.BinaryIO) -> int | None:
    """Where the WAV header starts when it can be rewritten later (a seekable output not
    opened for appending, where every write lands at the end), else None."""
    try:
        if not fo.seekable():
            return None
        fileno = fo.fileno()
    except (OSError, ValueError, AttributeError):  # e.g. io.BytesIO has no file descriptor
        try:
            return fo.tell()
        except (OSError, ValueError):
            return None
    import fcntl
    import os

    if fcntl.fcntl(fileno, fcntl.F_GETFL) & os.O_APPEND:
        return None
    return fo.tell()
