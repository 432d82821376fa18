"""Compress and decompress very long audio files in bounded memory.

::

    compress_file_streaming(model, "talk.flac", "talk.ecdc", bandwidth=6.0)
    decompress_file_streaming("talk.ecdc", "talk.wav")

For causal models that do not segment (``opencodec_24khz``, ``encodec_24khz``) the file
is read in blocks, converted and resampled block by block, encoded with
:class:`~opencodec.streaming.StreamingEncoder` and packed as it goes; decoding reads the
body a block of frames at a time, runs :class:`~opencodec.streaming.StreamingDecoder`
and writes the audio incrementally.

Segmenting models (``encodec_48khz``: 1 s segments every 0.99 s, each encoded on its own
with its own scale) are handled one segment at a time: a segment is encoded as soon as
the audio read so far covers it, and written as one record; decoding reads one record at a
time, decodes it and overlap-adds it into a running buffer, writing out every sample that
no later segment overlaps. The arithmetic is that of
:func:`opencodec.model.linear_overlap_add` in the same order, so the result is identical.

Either way memory depends on the block sizes, not on the duration (a 1-hour file needs no
more than a 1-minute one).

Entropy-coded files (an entropy model given): the audio is processed the same way, but a
segment's arithmetic-coded body can only be written once all its codes are known (the
24 kHz models have a single segment), so the codes are spooled to a temporary file, 2 bytes
each (about 4 MB per hour at 6 kbps, 16 MB at 24 kbps), and coded at the end with the same
functions as :func:`opencodec.compress.compress` (same bytes), which then hold them in
memory (8 bytes each). Decoding decodes all codes first (kept as 2 bytes each), then the
audio block by block. Memory then grows with the duration, by those amounts only.

Exactness
---------
* ``compress_file_streaming`` writes the same bytes as
  ``compress(model, convert_audio(read_audio(path)), bandwidth)``: channel conversion is
  per sample, the codes of :class:`StreamingEncoder` equal ``model.encode`` bit for bit,
  and the packing is the same. Resampling uses ``soxr.ResampleStream`` (same "HQ"
  recipe as :func:`opencodec.audio.resample`); in our checks (python-soxr 1.1) its output
  was sample-identical to the one-shot ``soxr.resample`` whatever the block size, and it
  is trimmed/zero-padded to the same ``round(T * target / source)`` length. Exact
  equality is *guaranteed* (and tested) only when no resampling is needed.
* For segmenting models the bytes are identical too (each segment is encoded alone, on
  the same samples, by the same ``model.encode``).
* ``decompress_file_streaming`` decodes with ``StreamingDecoder(fast_lstm=False)``,
  equal to :func:`opencodec.compress.decompress` to ~1e-7 (segmenting models: the same
  operations as ``decompress``), then quantises like
  :func:`opencodec.audio.write_audio` (same rounding and clipping, the clipping warning
  is issued once with the overall peak).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ._files import atomic_output
from .audio import RESAMPLE_QUALITY, _reason, _subtype_for, _to_file_samples, convert_channels
from .bitstream import (DEFAULT_CHECK_BITS, SCALE_STRUCT, DeterministicCoding, EcdcHeader,
                        StreamLayout, body_size, pack_codes, packed_size, read_body, read_header,
                        unpack_codes, write_ecdc, write_header)
from .compress import (InvalidAudioError, _check_bandwidth, _check_lm, _deterministic_coding,
                       _decoding_layout, _model_device, _model_dtype, _resolve_lm,
                       _resolve_model, header_identity_fields)
from .errors import AudioIOError, BitstreamError
from .model import EncodedFrame, EncodecModel, overlap_add_weight
from .streaming import StreamingDecoder, StreamingEncoder

__all__ = ["supports_streaming", "compress_file_streaming", "decompress_file_streaming",
           "encode_file_streaming"]

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM
    from .entropy.fixed import FixedLM

    AnyLM = EntropyLM | FixedLM

Progress = tp.Optional[tp.Callable[[int, int], None]]

_PACK_FRAMES = 8  # frames per packing unit: K * 8 * bits is always a whole number of bytes
_PUSH_SECONDS = 1.0  # the networks see at most this much audio per push (bounds activations)


def supports_streaming(model: EncodecModel) -> bool:
    """True when files can be processed by ``model`` in bounded memory: a segmenting model
    (segment by segment), or a causal one that does not renormalise its input (streamed)."""
    return model.segment_length is not None or (bool(model.config.causal) and not model.normalize)


def _require_streaming(model: EncodecModel) -> None:
    if not supports_streaming(model):
        raise ValueError(f"model {model.name!r} cannot be streamed (it must either segment its "
                         "input, or be causal and not renormalise it); use compress/decompress")


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
    once all its codes are known: spooled as int16 to a temporary file (2 bytes per code,
    ~4 MB per hour at 6 kbps) and read back at the end. Holding them as many small arrays
    in memory made the process grow far more than their size (heap fragmentation: 5 MB of
    codes, +280 MB of peak memory over an hour)."""

    def __init__(self, fo: tp.BinaryIO, num_codebooks: int) -> None:
        self.fo = fo
        self.num_codebooks = num_codebooks
        self.frames = 0
        self._start = fo.tell()

    def push(self, codes: torch.Tensor) -> None:
        """Append frames ``[K, f]`` (frame-major on disk)."""
        if codes.shape[-1] == 0:
            return
        self.fo.write(np.ascontiguousarray(codes.cpu().numpy().T, dtype="<i2").tobytes())
        self.frames += codes.shape[-1]

    def flush(self) -> None:
        pass

    def read(self, first: int, count: int) -> torch.Tensor:
        """Frames ``first .. first + count - 1`` as long ``[1, K, count]``."""
        K = self.num_codebooks
        self.fo.seek(self._start + 2 * K * first)
        raw = self.fo.read(2 * K * count)
        self.fo.seek(0, os.SEEK_END)
        codes = np.frombuffer(raw, dtype="<i2").reshape(count, K).T
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
    non-finite input.
    """
    _require_streaming(model)
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds!r}")
    if deterministic and lm is None:
        raise InvalidAudioError("deterministic=True needs an entropy model (lm=...)")
    in_path, out_path = Path(in_path), Path(out_path)
    previous = model.bandwidth
    if bandwidth is not None:
        model.set_target_bandwidth(_check_bandwidth(model, bandwidth))
    try:
        coding = None
        if lm is not None:  # before reading any audio
            _check_lm(model, lm, model.num_codebooks(), deterministic)
            det = _deterministic_coding(model, lm, lm_name, check_bits, check_interval) \
                if deterministic else None
            coding = (lm, det, lm_progress)
        return _compress_file(model, in_path, out_path, block_seconds, progress, coding)
    finally:
        model.bandwidth = previous


class _StreamSink:
    """Encodes audio pushed block by block with :class:`StreamingEncoder` into ``body``."""

    def __init__(self, model: EncodecModel, body: tp.BinaryIO, collect: bool = False):
        self.model = model
        self.encoder = StreamingEncoder(model)
        self.num_codebooks = self.encoder.num_codebooks
        self.writer: _CodeWriter | _CodeSpool = (
            _CodeSpool(body, self.num_codebooks) if collect
            else _CodeWriter(model.bits_per_codebook, body))
        self.device, self.dtype = _model_device(model), _model_dtype(model)

    def push(self, x: np.ndarray) -> None:
        """x: float32 [n, C] at the model's rate, the next samples."""
        step = max(1, int(_PUSH_SECONDS * self.model.sample_rate))
        for start in range(0, x.shape[0], step):  # the codes do not depend on the chunking
            piece = np.ascontiguousarray(x[start:start + step].T)
            piece_t = torch.from_numpy(piece)[None].to(device=self.device, dtype=self.dtype)
            self.writer.push(self.encoder.push(piece_t)[0])

    def finish(self, length: int) -> int:
        """End of the input (``length`` samples in all); returns the frames written."""
        with torch.inference_mode():
            self.writer.push(self.encoder.flush()[0])
        self.writer.flush()
        return self.writer.frames

    def collected(self) -> list[EncodedFrame]:
        """With ``collect``: the one segment, ``(codes [1, K, F], None)``."""
        assert isinstance(self.writer, _CodeSpool)
        return [(self.writer.read(0, self.writer.frames), None)]


class _SegmentSink:
    """Encodes each segment of a segmenting model as soon as the pushed audio covers it,
    writing its record (scale, packed codes) to ``body``, or with ``collect`` keeping its
    codes (int16) and scale for entropy coding."""

    def __init__(self, model: EncodecModel, body: tp.BinaryIO, collect: bool = False):
        assert model.segment_length is not None and model.segment_stride is not None
        self.model, self.body = model, body
        self.num_codebooks = model.num_codebooks()
        # With collect: the codes go to a spool, and each segment's frame count and scale here.
        self._spool = _CodeSpool(body, self.num_codebooks) if collect else None
        self._records: list[tuple[int, torch.Tensor | None]] = []
        self.seg, self.stride = model.segment_length, model.segment_stride
        self.device, self.dtype = _model_device(model), _model_dtype(model)
        self.buffer = np.zeros((0, model.channels), dtype=np.float32)
        self.buffer_start = 0  # absolute index of buffer[0]
        self.next_offset = 0   # start of the next segment to encode
        self.frames = 0

    def _encode(self, offset: int, length: int) -> None:
        start = offset - self.buffer_start
        piece = np.ascontiguousarray(self.buffer[start:start + length].T)
        x = torch.from_numpy(piece)[None].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            codes, scale = self.model._encode_segment(x)  # what model.encode does per segment
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


class _ConvertedBlocks:
    """Iterates over a file's audio converted to ``channels`` at ``target_rate`` Hz, as
    float32 blocks ``[n, C]`` of about ``block_seconds``; after the iteration ``length``
    holds the samples yielded in all, ``round(T * target / source)`` (the one-shot
    ``convert_audio`` length). ``progress(read, total)`` counts input frames."""

    def __init__(self, in_path: Path, target_rate: int, channels: int, block_seconds: float,
                 progress: Progress = None):
        self.in_path, self.target_rate, self.channels = in_path, target_rate, channels
        self.block_seconds, self.progress = block_seconds, progress
        self.length = 0

    def __iter__(self) -> tp.Iterator[np.ndarray]:
        in_path, target_rate, channels, progress = (self.in_path, self.target_rate, self.channels,
                                                    self.progress)
        try:
            sfile = sf.SoundFile(str(in_path))
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise AudioIOError(f"cannot read audio file {in_path}: {_reason(exc)}") from exc
        with sfile:
            rate = int(sfile.samplerate)
            total = int(sfile.frames) if sfile.frames > 0 else 0
            block = max(1, int(round(self.block_seconds * rate)))
            resampler = None if rate == target_rate else soxr.ResampleStream(
                rate, target_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY)
            hold = 0 if resampler is None else 4096  # resampled samples held back to fix the length
            tail = np.zeros((0, channels), dtype=np.float32)
            read = 0
            pushed = 0
            while True:
                try:
                    data = sfile.read(block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                    raise AudioIOError(f"cannot read audio file {in_path}: {_reason(exc)}") from exc
                last = data.shape[0] < block
                if data.shape[0]:
                    if not np.isfinite(data).all():
                        raise AudioIOError(f"cannot read audio file {in_path}: it holds NaN or "
                                           "infinite samples")
                    read += data.shape[0]
                    data = convert_channels(torch.from_numpy(np.ascontiguousarray(data.T)), channels).numpy().T
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
            length = read if resampler is None else round(read * target_rate / rate)
            tail = tail[:max(0, length - pushed)]
            if pushed + tail.shape[0] < length:  # resampler came up short: zero-pad as needed
                pad = np.zeros((length - pushed - tail.shape[0], channels), dtype=np.float32)
                tail = np.concatenate([tail, pad])
            self.length = length
            yield tail
            if progress is not None:
                progress(read, read)


def encode_file_streaming(model: EncodecModel, in_path: str | Path, block_seconds: float = 10.0
                          ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Codes of a whole audio file, read and encoded in bounded memory.

    Returns ``(codes [K, F] int64 on the CPU, scales [S] float32 or None, length)``:
    for streamed models the codes of :class:`StreamingEncoder` (equal to ``model.encode``
    of the converted file), for segmenting models every segment's codes concatenated in
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
    with tempfile.TemporaryFile() as body:
        collect = coding is not None
        sink: _StreamSink | _SegmentSink = (
            _SegmentSink(model, body, collect) if model.segment_length is not None
            else _StreamSink(model, body, collect))
        blocks = _ConvertedBlocks(in_path, model.sample_rate, model.channels, block_seconds, progress)
        for data in blocks:
            sink.push(data)
        length = blocks.length
        frames = sink.finish(length)
        det = None if coding is None else coding[1]
        header = EcdcHeader(audio_length=int(length), num_codebooks=int(sink.num_codebooks),
                            use_lm=collect, deterministic=det,
                            **header_identity_fields(model, None if coding is None else coding[0], det))
        layout = StreamLayout.from_model(model)
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


def decompress_file_streaming(in_path: str | Path, out_path: str | Path,
                              model: EncodecModel | None = None, block_frames: int = 750, *,
                              bits: int = 16, progress: Progress = None,
                              lm: "AnyLM | None" = None, lm_progress: Progress = None) -> int:
    """Decode the ``.ecdc`` file ``in_path`` into the audio file ``out_path`` in bounded memory.

    ``model`` None loads the model named in the header; it must be causal and must not
    segment (``ValueError`` otherwise). The body is read ``block_frames`` code frames at a
    time (rounded up to a multiple of 8). The output format follows the extension
    (``.wav`` 16/24-bit PCM or 32-bit float, ``.flac`` 16/24-bit), as
    :func:`opencodec.audio.write_audio` writes it with ``rescale=False``: integer PCM is
    rounded to the nearest level and a louder signal is clipped with one warning naming the
    peak. The file appears atomically; on any error nothing is left. ``progress(frames_done,
    total_frames)`` is called per block. Returns the number of samples per channel written.

    An entropy-coded file (header ``"lm": true``) is decoded with ``lm`` or the entropy
    model the header names, as :func:`opencodec.compress.decompress_from_file` finds it: its
    codes are decoded first and kept in memory (2 bytes per code),
    ``lm_progress(frames_decoded, total_frames)`` following that stage, then the audio is
    decoded and written block by block as for other files.

    Raises ``BitstreamError`` for a malformed or truncated file, a failed check or a model
    mismatch, ``ModelLoadError`` when the entropy model cannot be found, and
    ``AudioIOError`` for an unsupported output format or an I/O error.
    """
    if isinstance(block_frames, bool) or not isinstance(block_frames, int) or block_frames < 1:
        raise ValueError(f"block_frames must be an integer >= 1, got {block_frames!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    fmt, subtype = _subtype_for(out_path, bits)
    quant_bits = None if subtype == "FLOAT" else bits
    block_frames = -(-block_frames // _PACK_FRAMES) * _PACK_FRAMES
    with open(in_path, "rb") as fi:
        header = read_header(fi)
        model = _resolve_model(header, model)
        _require_streaming(model)
        layout = _decoding_layout(model)
        if header.num_codebooks > layout.n_q:
            raise BitstreamError(f"ECDC header field 'nc' (number of codebooks): model "
                                 f"{model.name!r} has at most {layout.n_q}, got {header.num_codebooks}")
        nc, al = header.num_codebooks, header.audio_length
        total_frames = layout.total_frames(al)
        if header.use_lm:  # the codes first (small), checked by read_body
            records = _compact(read_body(fi.read(), header, layout, _resolve_lm(header, model, lm),
                                         progress=lm_progress))
        else:
            expected = body_size(header, layout)
            available = os.fstat(fi.fileno()).st_size - fi.tell()
            if available < expected:
                raise BitstreamError(f"ECDC body truncated: expected {expected} bytes for "
                                     f"{header.audio_length} samples x {header.num_codebooks} "
                                     f"codebooks, got {available} ({expected - available} missing)")
            if available > expected:
                raise BitstreamError(f"ECDC body has {available - expected} extra byte(s) after "
                                     f"the last segment (expected {expected} bytes, got {available})")
            records = None
        peak = 0.0
        written = 0
        try:
            with atomic_output(out_path) as tmp:
                with sf.SoundFile(str(tmp), "w", samplerate=model.sample_rate,
                                  channels=model.channels, format=fmt, subtype=subtype) as fo:

                    def emit(audio: torch.Tensor) -> None:
                        nonlocal peak, written
                        audio = audio[0, :, :max(0, al - written)].to("cpu", torch.float32)
                        if audio.shape[-1] == 0:
                            return
                        if not bool(torch.isfinite(audio).all()):
                            raise AudioIOError(f"cannot write {out_path}: the audio holds NaN or "
                                               "infinite samples")
                        if quant_bits is not None:
                            peak = max(peak, float(audio.abs().max()))
                            audio = audio.clamp(-1.0, 1.0)
                        fo.write(_to_file_samples(audio.numpy().T, quant_bits))
                        written += audio.shape[-1]

                    if layout.segment_length is None:
                        blocks = (_packed_blocks(fi, nc, total_frames, block_frames, layout.bits)
                                  if records is None else _memory_blocks(records, block_frames))
                        _decode_stream(model, blocks, total_frames, emit, progress)
                    else:
                        segments = (_packed_records(fi, layout, nc, al) if records is None
                                    else iter(records))
                        _decode_segments(model, layout, segments, al, emit, progress)
                if written != al:  # cannot happen with a consistent model
                    raise BitstreamError(f"model {model.name} decoded {written} samples, "
                                         f"header says {al}")
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioIOError(f"cannot write {out_path}: {_reason(exc)}") from exc
    if peak > 1.0:
        warnings.warn(f"{out_path}: peak amplitude {peak:.4f} exceeds full scale 1.0; clipped "
                      f"(rescale to avoid clipping)", stacklevel=2)
    return written


def _compact(frames: list[EncodedFrame]) -> list[tuple[np.ndarray, torch.Tensor | None]]:
    """Decoded segments with their codes as int16 (a quarter of the memory of int64)."""
    return [(codes[0].numpy().astype(np.int16), scale) for codes, scale in frames]


def _packed_blocks(fi: tp.BinaryIO, nc: int, total_frames: int, block_frames: int,
                   bits: int) -> tp.Iterator[torch.Tensor]:
    """Codes ``[1, K, n]`` of a plain non-segmented body, ``block_frames`` frames at a time."""
    done = 0
    while done < total_frames:
        count = min(block_frames, total_frames - done)
        size = packed_size(nc * count, bits)
        data = fi.read(size)
        if len(data) != size:  # the file changed under us
            raise BitstreamError(f"ECDC body truncated at frame {done} of {total_frames}")
        yield unpack_codes(data, nc, count, bits)[None]
        done += count


def _memory_blocks(records: list[tuple[np.ndarray, torch.Tensor | None]],
                   block_frames: int) -> tp.Iterator[torch.Tensor]:
    """Codes ``[1, K, n]`` of the one decoded segment, ``block_frames`` frames at a time."""
    (codes, _), = records
    for start in range(0, codes.shape[1], block_frames):
        yield torch.from_numpy(codes[:, start:start + block_frames]).long()[None]


def _decode_stream(model: EncodecModel, blocks: tp.Iterator[torch.Tensor], total_frames: int,
                   emit: tp.Callable[[torch.Tensor], None], progress: Progress) -> None:
    """Run blocks of codes ``[1, K, n]`` through StreamingDecoder, emitting the audio."""
    device = _model_device(model)
    decoder = StreamingDecoder(model, fast_lstm=False)
    step = max(1, int(_PUSH_SECONDS * model.sample_rate / model.hop_length))  # frames per push
    done = 0
    for block in blocks:
        codes = block.to(device)
        count = codes.shape[-1]
        for start in range(0, count, step):
            emit(decoder.push(codes[..., start:start + step]))
        done += count
        if progress is not None:
            progress(done, total_frames)
    emit(decoder.flush())


def _packed_records(fi: tp.BinaryIO, layout: StreamLayout, nc: int, al: int
                    ) -> tp.Iterator[tuple[np.ndarray, torch.Tensor | None]]:
    """Per segment of a plain segmented body: ``(codes [K, f], scale [1, 1] or None)``."""
    from .bitstream import _scale_tensor

    for index, (offset, length) in enumerate(layout.segments(al)):
        scale = None
        if layout.normalize:
            raw = fi.read(SCALE_STRUCT.size)
            if len(raw) != SCALE_STRUCT.size:
                raise BitstreamError(f"ECDC body truncated in segment {index}")
            scale = _scale_tensor(SCALE_STRUCT.unpack(raw)[0], index, offset)
        count = layout.num_frames(length)
        size = packed_size(nc * count, layout.bits)
        data = fi.read(size)
        if len(data) != size:
            raise BitstreamError(f"ECDC body truncated in segment {index}")
        yield unpack_codes(data, nc, count, layout.bits).numpy(), scale


def _decode_segments(model: EncodecModel, layout: StreamLayout,
                     records: tp.Iterator[tuple[np.ndarray, torch.Tensor | None]], al: int,
                     emit: tp.Callable[[torch.Tensor], None], progress: Progress) -> None:
    """Decode one segment record ``(codes [K, f], scale)`` at a time and overlap-add it into
    a running buffer.

    Same arithmetic, in the same order, as :func:`opencodec.model.linear_overlap_add`:
    each position accumulates ``weight * segment`` over the segments covering it (in
    segment order, from zero) and the weights likewise; a position is divided and emitted
    once the next segment starts after it, since no later segment can reach it.
    """
    device = _model_device(model)
    segments = layout.segments(al)
    assert layout.segment_stride is not None
    stride = layout.segment_stride
    total_frames = layout.total_frames(al)
    out = weight_sum = weight = None
    out_start = 0  # absolute index of out[..., 0]
    done = 0
    for index, ((offset, _), (raw_codes, scale)) in enumerate(zip(segments, records)):
        codes = torch.from_numpy(raw_codes).long()[None].to(device)
        count = codes.shape[-1]
        if scale is not None:
            scale = scale.to(device)
        with torch.no_grad():
            frame = model._decode_segment(codes, scale)  # what model.decode does per segment
        if weight is None:  # the triangle of linear_overlap_add, sized by the first segment
            weight = overlap_add_weight(frame)
            out = torch.zeros(*frame.shape[:-1], 0, device=frame.device, dtype=frame.dtype)
            weight_sum = torch.zeros(0, device=frame.device, dtype=frame.dtype)
        assert out is not None and weight_sum is not None
        n = frame.shape[-1]
        end = offset + n - out_start
        if end > out.shape[-1]:  # grow the running buffer with zeros
            grow = end - out.shape[-1]
            out = torch.cat([out, out.new_zeros(*out.shape[:-1], grow)], dim=-1)
            weight_sum = torch.cat([weight_sum, weight_sum.new_zeros(grow)])
        rel = offset - out_start
        out[..., rel:rel + n] += weight[:n] * frame
        weight_sum[rel:rel + n] += weight[:n]
        final = (offset + stride if index + 1 < len(segments) else out_start + out.shape[-1]) - out_start
        final = min(final, out.shape[-1])
        emit(out[..., :final] / weight_sum[:final])
        out, weight_sum = out[..., final:], weight_sum[final:]
        out_start += final
        done += count
        if progress is not None:
            progress(done, total_frames)
