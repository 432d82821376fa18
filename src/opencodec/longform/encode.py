"""Long files to ``.ecdc`` in bounded memory: streamed or segment by segment, packed as it goes
(entropy-coded files: codes spooled to a temporary file and coded at the end)."""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_output
from ..audio import find_truncation, loud_input_message, stores_float_samples
from ..bitstream import (DEFAULT_CHECK_BITS, SCALE_STRUCT, DeterministicCoding, EcdcHeader,
                        StreamLayout, body_size, pack_codes, write_ecdc, write_header)
from ..compress import (InvalidAudioError, check_model_bandwidth, check_lm_covers, deterministic_coding,
                       model_device, model_dtype, header_identity_fields)
from ..model import EncodedFrame, EncodecModel
from ..threads import one_thread
from .blocks import _ConvertedBlocks
from .exact_encoder import ChunkedExactEncoder
from .common import _PACK_FRAMES, Progress, _require_streaming, code_dtype

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM
    from ..entropy.fixed import FixedLM

    AnyLM = EntropyLM | FixedLM


class _CodeWriter:
    """Packs code frames [K, f] time-major into ``fo`` in whole-byte units of 8 frames."""

    def __init__(self, bits: int, fo: tp.BinaryIO):
        self.bits = bits
        self.fo = fo
        self._pending: list[np.ndarray] = []
        self._count = 0
        self.frames = 0

    def push(self, codes: torch.Tensor) -> None:
        if codes.shape[-1] == 0:
            return
        self._pending.append(codes.cpu().numpy())
        self._count += codes.shape[-1]
        self.frames += codes.shape[-1]
        whole = self._count - self._count % _PACK_FRAMES
        if whole:
            block = np.concatenate(self._pending, axis=1)
            self.fo.write(pack_codes(block[:, :whole], self.bits))
            rest = block[:, whole:]
            self._pending = [rest] if rest.shape[1] else []
            self._count = rest.shape[1]

    def flush(self) -> None:
        if self._count:
            self.fo.write(pack_codes(np.concatenate(self._pending, axis=1), self.bits))
        self._pending, self._count = [], 0


class _CodeSpool:
    """Keeps code frames [K, f] for entropy coding, whose segment body can only be written
    once all its codes are known: spooled as :func:`.common.code_dtype` (2 bytes per code up
    to 16 bits, ~4 MB per hour at 6 kbps) to a temporary file and read back at the end.
    Holding them as many small arrays in memory made the process grow far more than their
    size (heap fragmentation: 5 MB of codes, +280 MB of peak memory over an hour)."""

    def __init__(self, fo: tp.BinaryIO, num_codebooks: int, bits_per_codebook: int) -> None:
        self.fo = fo
        self.num_codebooks = num_codebooks
        self.dtype = code_dtype(bits_per_codebook)
        self.frames = 0
        self._start = fo.tell()

    def push(self, codes: torch.Tensor) -> None:
        """Append frames ``[K, f]`` (frame-major on disk)."""
        if codes.shape[-1] == 0:
            return
        self.fo.write(np.ascontiguousarray(codes.cpu().numpy().T, dtype=self.dtype).tobytes())
        self.frames += codes.shape[-1]

    def flush(self) -> None:
        pass

    def read(self, first: int, count: int) -> torch.Tensor:
        """Frames ``first .. first + count - 1`` as long ``[1, K, count]``."""
        K, size = self.num_codebooks, self.dtype.itemsize
        self.fo.seek(self._start + size * K * first)
        raw = self.fo.read(size * K * count)
        self.fo.seek(0, os.SEEK_END)
        codes = np.frombuffer(raw, dtype=self.dtype).reshape(count, K).T
        return torch.from_numpy(codes.astype(np.int64))[None]


def compress_file_streaming(model: EncodecModel, in_path: str | Path, out_path: str | Path,
                            bandwidth: float | None = None, block_seconds: float = 10.0,
                            progress: Progress = None, lm: "AnyLM | None" = None, *,
                            deterministic: bool = False, lm_name: str | None = None,
                            check_bits: int = DEFAULT_CHECK_BITS,
                            check_interval: int | None = None, lm_progress: Progress = None) -> int:
    """Encode the audio file ``in_path`` into the ``.ecdc`` file ``out_path`` in bounded memory.

    The input is read ``block_seconds`` at a time (any format libsndfile reads, any rate
    and channel count, converted like :func:`opencodec.audio.convert_audio`). The output
    equals ``compress(model, convert_audio(read_audio(in_path), ...), bandwidth)`` byte for
    byte (see the module notes on resampling). It appears atomically; on any error no
    file is left. ``progress(samples_read, total_samples)`` (input samples, the total
    from the file's header) is called after each block. Returns the bytes written.

    ``lm`` and the keywords after it: entropy coding, as in
    :func:`opencodec.compress.compress_to_file` (same bytes). The audio is still encoded
    block by block; the codes are spooled to a temporary file (2 bytes per code: 4 MB per
    hour of 24 kHz audio at 6 kbps) and arithmetic coded at the end, segment by segment;
    ``lm_progress(frames_coded, total_frames)`` follows that stage.

    Raises ``ValueError`` for a model that neither segments nor streams (see
    :func:`supports_streaming`), ``InvalidAudioError`` for an unsupported bandwidth or an
    entropy model that does not fit the codec, ``AudioIOError`` for an unreadable, empty or
    non-finite input. A float input louder than full scale (its audio at the model's rate
    and channels peaking above 1.0) is encoded with a ``UserWarning`` naming the peak, and
    one shorter than its header says (a cut WAV) with the ``UserWarning`` of
    :func:`opencodec.audio.read_audio` ("PATH: truncated: its header says N samples, ...").
    """
    _require_streaming(model)
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds!r}")
    if deterministic and lm is None:
        raise InvalidAudioError("deterministic=True needs an entropy model (lm=...)")
    in_path, out_path = Path(in_path), Path(out_path)
    previous = model.bandwidth
    if bandwidth is not None:
        model.set_target_bandwidth(check_model_bandwidth(model, bandwidth))
    try:
        coding = None
        if lm is not None:  # before reading any audio
            check_lm_covers(model, lm, model.num_codebooks(), deterministic)
            det = deterministic_coding(model, lm, lm_name, check_bits, check_interval) \
                if deterministic else None
            coding = (lm, det, lm_progress)
        return _compress_file(model, in_path, out_path, block_seconds, progress, coding)
    finally:
        model.bandwidth = previous


class _StreamSink:
    """Encodes audio pushed block by block with :class:`ChunkedExactEncoder` into ``body``:
    the codes of ``model.encode`` of the whole signal, bit for bit (that class names the cases
    where it falls back to exact streaming, which can differ at rare near-ties)."""

    def __init__(self, model: EncodecModel, body: tp.BinaryIO, collect: bool = False):
        self.model = model
        self.encoder = ChunkedExactEncoder(model)
        self.num_codebooks = self.encoder.num_codebooks
        self.writer: _CodeWriter | _CodeSpool = (
            _CodeSpool(body, self.num_codebooks, model.bits_per_codebook) if collect
            else _CodeWriter(model.bits_per_codebook, body))

    def push(self, x: np.ndarray) -> None:
        """x: float32 [n, C] at the model's rate, the next samples."""
        self.writer.push(self.encoder.push(x.T))

    def finish(self, length: int) -> int:
        """End of the input (``length`` samples in all); returns the frames written."""
        if self.encoder.samples_in != length:
            raise AssertionError(f"pushed {self.encoder.samples_in} samples, expected {length}")
        self.writer.push(self.encoder.finish())
        self.writer.flush()
        return self.writer.frames

    def collected(self) -> list[EncodedFrame]:
        """With ``collect``: the one segment, ``(codes [1, K, F], None)``."""
        assert isinstance(self.writer, _CodeSpool)
        return [(self.writer.read(0, self.writer.frames), None)]


class _SegmentSink:
    """Encodes each segment of a segmenting model as soon as the pushed audio covers it,
    writing its record (scale, packed codes) to ``body``, or with ``collect`` keeping its
    codes (:func:`.common.code_dtype`) and scale for entropy coding."""

    def __init__(self, model: EncodecModel, body: tp.BinaryIO, collect: bool = False):
        assert model.segment_length is not None and model.segment_stride is not None
        self.model, self.body = model, body
        self.num_codebooks = model.num_codebooks()
        # With collect: the codes go to a spool, and each segment's frame count and scale here.
        self._spool = _CodeSpool(body, self.num_codebooks, model.bits_per_codebook) if collect else None
        self._records: list[tuple[int, torch.Tensor | None]] = []
        self.seg, self.stride = model.segment_length, model.segment_stride
        self.device, self.dtype = model_device(model), model_dtype(model)
        self.buffer = np.zeros((0, model.channels), dtype=np.float32)
        self.buffer_start = 0  # absolute index of buffer[0]
        self.next_offset = 0   # start of the next segment to encode
        self.frames = 0

    def _encode(self, offset: int, length: int) -> None:
        start = offset - self.buffer_start
        piece = np.ascontiguousarray(self.buffer[start:start + length].T)
        x = torch.from_numpy(piece)[None].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode(), one_thread(x):  # what model.encode does per segment
            codes, scale = self.model._encode_segment(x)
        if self._spool is not None:
            self._spool.push(codes[0])
            self._records.append((codes.shape[-1], None if scale is None else scale.cpu()))
        else:
            if scale is not None:
                self.body.write(SCALE_STRUCT.pack(float(scale.reshape(-1)[0])))
            self.body.write(pack_codes(codes[0].cpu(), self.model.bits_per_codebook))
        self.frames += codes.shape[-1]
        self.next_offset = offset + self.stride
        drop = min(self.next_offset - self.buffer_start, self.buffer.shape[0])
        self.buffer = self.buffer[drop:]
        self.buffer_start += drop

    def push(self, x: np.ndarray) -> None:
        """x: float32 [n, C] at the model's rate, the next samples."""
        self.buffer = np.concatenate([self.buffer, x])
        while self.buffer_start + self.buffer.shape[0] >= self.next_offset + self.seg:
            self._encode(self.next_offset, self.seg)

    def finish(self, length: int) -> int:
        """End of the input (``length`` samples in all): the remaining, shorter segments."""
        for offset in range(self.next_offset, length, self.stride):
            self._encode(offset, min(self.seg, length - offset))
        return self.frames

    def collected(self) -> list[EncodedFrame]:
        """With ``collect``: ``(codes [1, K, f], scale [1, 1] or None)`` per segment."""
        assert self._spool is not None
        frames, first = [], 0
        for count, scale in self._records:
            frames.append((self._spool.read(first, count), scale))
            first += count
        return frames


def encode_file_streaming(model: EncodecModel, in_path: str | Path, block_seconds: float = 10.0
                          ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Codes of a whole audio file, read and encoded in bounded memory.

    Returns ``(codes [K, F] int64 on the CPU, scales [S] float32 or None, length)``:
    for streamed models the codes of :class:`~.exact_encoder.ChunkedExactEncoder` (bitwise
    ``model.encode`` of the converted file), for segmenting models every segment's codes concatenated in
    time with one scale per segment (normalising models). ``length`` is the input's
    length in samples at the model's rate. Memory holds the codes (2 bytes each, spooled
    to a temporary file while encoding) and a few blocks of audio, whatever the duration.
    K follows the model's current bandwidth.
    """
    _require_streaming(model)
    blocks = _ConvertedBlocks(Path(in_path), model.sample_rate, model.channels, block_seconds)
    with tempfile.TemporaryFile() as body:
        sink: _StreamSink | _SegmentSink = (
            _SegmentSink(model, body, collect=True) if model.segment_length is not None
            else _StreamSink(model, body, collect=True))
        for data in blocks:
            sink.push(data)
        sink.finish(blocks.length)
        frames = sink.collected()
    codes = torch.cat([c[0] for c, _ in frames], dim=-1)
    scales = None if frames[0][1] is None else torch.cat([s.reshape(-1).float() for _, s in frames])
    return codes, scales, blocks.length


def _compress_file(model: EncodecModel, in_path: Path, out_path: Path, block_seconds: float,
                   progress: Progress,
                   coding: tuple[AnyLM, DeterministicCoding | None, Progress] | None = None
                   ) -> int:
    det = None if coding is None else coding[1]
    # before encoding, as compress_to_file: the weights hash also notices weights changed through
    # .data, and then refreshes the caches the encoder reads (folded or packed weights)
    identity = header_identity_fields(model, None if coding is None else coding[0], det)
    with tempfile.TemporaryFile() as body:
        collect = coding is not None
        sink: _StreamSink | _SegmentSink = (
            _SegmentSink(model, body, collect) if model.segment_length is not None
            else _StreamSink(model, body, collect))
        blocks = _ConvertedBlocks(in_path, model.sample_rate, model.channels, block_seconds, progress)
        peak = 0.0
        for data in blocks:
            peak = max(peak, float(np.abs(data).max())) if data.size else peak
            sink.push(data)
        length = blocks.length
        cut = find_truncation(in_path, blocks.read, blocks.claimed)  # as read_audio reports a cut file
        if cut is not None:
            warnings.warn(f"{in_path}: {cut.reason} (the {cut.held} there are used)", stacklevel=3)
        loud = loud_input_message(in_path, peak)
        if loud is not None and stores_float_samples(in_path):  # (integer PCM only overshoots by resampling)
            warnings.warn(loud, stacklevel=3)
        frames = sink.finish(length)
        header = EcdcHeader(audio_length=int(length), num_codebooks=int(sink.num_codebooks),
                            use_lm=collect, deterministic=det, **identity)
        layout = StreamLayout.from_config(model.config, header.model_name)  # (from_model would hash again)
        expected_frames = layout.total_frames(length)
        if frames != expected_frames or (not collect and body.tell() != body_size(header, layout)):
            raise AssertionError(f"encoder produced {frames} frames / "
                                 f"{body.tell()} bytes for {length} samples")  # pragma: no cover
        body.seek(0)
        with atomic_output(out_path) as tmp:
            with open(tmp, "wb") as fo:
                if coding is not None:  # entropy coding, segment by segment, at the end
                    size = write_ecdc(fo, header, sink.collected(), layout, coding[0],
                                      progress=coding[2])
                else:
                    size = write_header(fo, header)
                    shutil.copyfileobj(body, fo, 1 << 20)
                    size += body_size(header, layout)
                fo.flush()
                os.fsync(fo.fileno())
    return size
