"""Reading a long audio file as converted, resampled blocks (bounded memory)."""

from __future__ import annotations

import math
import typing as tp
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ..audio import (RESAMPLE_QUALITY, check_file_rate, check_has_header, convert_channels, non_finite_reason,
                     resampled_length, soundfile_name, unreadable_audio)
from ..errors import AudioIOError
from .common import Progress


def _start_reading(sfile: sf.SoundFile) -> None:
    """Position ``sfile`` at its first frame the way ``soundfile.read`` (so ``read_audio``)
    does: one seek to 0 when the file is seekable. For MPEG files this seek changes the
    decoder's start state, so the samples only match ``read_audio``'s after the same seek."""
    if sfile.seekable():
        sfile.seek(0)


def _block_non_finite_reason(sfile: sf.SoundFile, start: int, frames: int) -> str:
    """:func:`non_finite_reason` for the block of ``frames`` samples from ``start`` (a DOUBLE
    file's block is read again as float64; only that block is held)."""
    wide = None
    if sfile.subtype == "DOUBLE":
        try:
            sfile.seek(start)
            wide = sfile.read(frames, dtype="float64")
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
            pass
    return non_finite_reason(wide, f" in its block from {start / sfile.samplerate:.1f} s")


def _read_block(sfile: sf.SoundFile, frames: int) -> np.ndarray:
    """The next ``frames`` frames (fewer at the end) of ``sfile`` as float32 ``[n, C]``.

    ``SoundFile.read`` seeks to its own position after every call (``tell`` + ``seek``). For
    MP3 that seek is not transparent: libmpg123 restarts decoding at a frame boundary without
    the bit reservoir of the frames before it ("part2_3_length too large" on stderr), so
    block reads gave other samples than one whole read (up to 0.2 apart with small blocks).
    Calling libsndfile's ``sf_readf_float`` directly decodes sequentially, sample for sample
    what ``read_audio`` returns whatever the block size. Falls back to ``SoundFile.read``
    where python-soundfile's internals differ.
    """
    snd, ffi, handle = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(sfile, "_file", None)
    if snd is None or ffi is None or handle is None:
        return sfile.read(frames, dtype="float32", always_2d=True)
    out = np.empty((frames, sfile.channels), dtype=np.float32)
    got = snd.sf_readf_float(handle, ffi.cast("float *", out.ctypes.data), frames)
    code = snd.sf_error(handle)
    if code:
        raise sf.LibsndfileError(code)
    return out[:max(0, int(got))]


class _ConvertedBlocks:
    """Iterates over a file's audio converted to ``channels`` at ``target_rate`` Hz, as
    float32 blocks ``[n, C]`` of about ``block_seconds``; after the iteration ``length``
    holds the samples yielded in all, ``resampled_length(T, source, target)`` (``T * target /
    source`` rounded half up: the one-shot ``convert_audio`` length), ``read`` the input's frames
    read (T) and ``claimed`` libsndfile's count of them from the header (0 when not known).
    ``progress(read, total)`` counts input frames."""

    def __init__(self, in_path: Path, target_rate: int, channels: int, block_seconds: float,
                 progress: Progress = None):
        if not (block_seconds > 0 and math.isfinite(block_seconds)):  # inf: no whole block size
            raise ValueError(f"block_seconds must be a finite number > 0, got {block_seconds!r}")
        self.in_path, self.target_rate, self.channels = in_path, target_rate, channels
        self.block_seconds, self.progress = block_seconds, progress
        self.length = self.read = self.claimed = 0

    def __iter__(self) -> tp.Iterator[np.ndarray]:
        in_path, target_rate, channels, progress = (self.in_path, self.target_rate, self.channels,
                                                    self.progress)
        if not Path(in_path).exists():  # as read_audio says it (libsndfile: "System error.")
            raise AudioIOError(f"cannot read audio file {in_path}: no such file")
        if Path(in_path).is_dir():
            raise AudioIOError(f"cannot read audio file {in_path}: not a regular file")
        try:
            sfile = sf.SoundFile(soundfile_name(in_path))
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise unreadable_audio(in_path, exc) from exc
        with sfile:
            try:
                _start_reading(sfile)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                raise unreadable_audio(in_path, exc) from exc
            rate = int(sfile.samplerate)
            check_has_header(in_path, sfile.format)
            check_file_rate(in_path, rate)
            total = int(sfile.frames) if sfile.frames > 0 else 0
            block = max(1, int(round(self.block_seconds * rate)))
            resampler = None if rate == target_rate else soxr.ResampleStream(
                rate, target_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY)
            hold = 0 if resampler is None else 4096  # resampled samples held back to fix the length
            tail = np.zeros((0, channels), dtype=np.float32)
            read = 0
            pushed = 0
            while True:
                # at most the header's frame count, as read_audio (soundfile.read) reads
                want = block if not total else min(block, total - read)
                try:
                    data = _read_block(sfile, want) if want else np.zeros((0, sfile.channels), np.float32)
                except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                    raise unreadable_audio(in_path, exc) from exc
                last = data.shape[0] < block
                if data.shape[0]:
                    if not np.isfinite(data).all():
                        raise AudioIOError(f"cannot read audio file {in_path}: "
                                           f"{_block_non_finite_reason(sfile, read, data.shape[0])}")
                    read += data.shape[0]
                    data = convert_channels(torch.from_numpy(np.ascontiguousarray(data.T)), channels).numpy().T
                else:  # end of file on a block boundary: an empty block, at the model's channel count
                    data = np.zeros((0, channels), dtype=np.float32)
                data = np.ascontiguousarray(data, dtype=np.float32)
                if resampler is not None:
                    data = resampler.resample_chunk(data, last=last).reshape(-1, channels)
                if last:
                    tail = np.concatenate([tail, data])
                    break
                if hold:
                    tail = np.concatenate([tail, data])
                    data, tail = tail[:max(0, len(tail) - hold)], tail[max(0, len(tail) - hold):]
                yield data
                pushed += data.shape[0]
                if progress is not None:
                    progress(read, max(total, read))
            if read == 0:
                raise AudioIOError(f"cannot read audio file {in_path}: it holds no audio samples")
            length = read if resampler is None else resampled_length(read, rate, target_rate)
            tail = tail[:max(0, length - pushed)]
            if pushed + tail.shape[0] < length:  # resampler came up short: zero-pad as needed
                pad = np.zeros((length - pushed - tail.shape[0], channels), dtype=np.float32)
                tail = np.concatenate([tail, pad])
            self.length, self.read, self.claimed = length, read, total
            yield tail
            if progress is not None:
                progress(read, read)
