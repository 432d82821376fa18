"""``.ecdc`` to a long audio file in bounded memory: blocks of frames streamed through the
decoder (or segments overlap-added), written incrementally."""

from __future__ import annotations

import os
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .._files import atomic_output
from ..audio import audio_error_reason, subtype_for, to_file_samples
from ..bitstream import (SCALE_STRUCT, StreamLayout, body_size, packed_size,
                        read_body, read_header, unpack_codes)
from ..compress import (decoding_layout, model_device, lm_for_header, model_for_header)
from ..errors import AudioIOError, BitstreamError, OutputError
from ..model import EncodedFrame, EncodecModel, overlap_add_weight
from ..streaming import StreamingDecoder
from .common import _PACK_FRAMES, _PUSH_SECONDS, Progress, _require_streaming, code_dtype

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM
    from ..entropy.fixed import FixedLM

    AnyLM = EntropyLM | FixedLM


def decompress_file_streaming(in_path: str | Path, out_path: str | Path,
                              model: EncodecModel | None = None, block_frames: int = 750, *,
                              bits: int = 16, progress: Progress = None,
                              lm: "AnyLM | None" = None, lm_progress: Progress = None) -> int:
    """Decode the ``.ecdc`` file ``in_path`` into the audio file ``out_path`` in bounded memory.

    ``model`` None loads the model named in the header. A model that does not segment (the
    24 kHz ones) decodes the body ``block_frames`` code frames at a time (rounded up to a
    multiple of 8) through the streaming decoder; a segmenting one (the 48 kHz model) one
    segment at a time, overlap-added as ``model.decode`` does. The output format follows the extension
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
    fmt, subtype = subtype_for(out_path, bits)
    quant_bits = None if subtype == "FLOAT" else bits
    block_frames = -(-block_frames // _PACK_FRAMES) * _PACK_FRAMES
    with open(in_path, "rb") as fi:
        header = read_header(fi)
        model = model_for_header(header, model)
        _require_streaming(model)
        layout = decoding_layout(model)
        if header.num_codebooks > layout.n_q:
            raise BitstreamError(f"ECDC header field 'nc' (number of codebooks): model "
                                 f"{model.name!r} has at most {layout.n_q}, got {header.num_codebooks}")
        nc, al = header.num_codebooks, header.audio_length
        total_frames = layout.total_frames(al)
        if header.use_lm:  # the codes first (small), checked by read_body
            records = _compact(read_body(fi.read(), header, layout, lm_for_header(header, model, lm),
                                         progress=lm_progress), model.bits_per_codebook)
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
                with sf.SoundFile(os.fsencode(tmp), "w", samplerate=model.sample_rate,
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
                        fo.write(to_file_samples(audio.numpy().T, quant_bits))
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
        except OutputError as exc:  # atomic_output's, which already says "cannot write PATH: reason"
            raise AudioIOError(str(exc)) from exc
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioIOError(f"cannot write {out_path}: {audio_error_reason(exc)}") from exc
    if peak > 1.0:
        warnings.warn(f"{out_path}: peak amplitude {peak:.4f} exceeds full scale 1.0; clipped "
                      f"(rescale to avoid clipping)", stacklevel=2)
    return written


def _compact(frames: list[EncodedFrame], bits_per_codebook: int) -> list[tuple[np.ndarray, torch.Tensor | None]]:
    """Decoded segments with their codes as :func:`.common.code_dtype` (a quarter of the
    memory of int64 up to 16 bits a code)."""
    return [(codes[0].numpy().astype(code_dtype(bits_per_codebook)), scale) for codes, scale in frames]


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
        yield torch.from_numpy(codes[:, start:start + block_frames].astype(np.int64))[None]


def _decode_stream(model: EncodecModel, blocks: tp.Iterator[torch.Tensor], total_frames: int,
                   emit: tp.Callable[[torch.Tensor], None], progress: Progress) -> None:
    """Run blocks of codes ``[1, K, n]`` through StreamingDecoder, emitting the audio."""
    device = model_device(model)
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
    from ..bitstream.layout import _scale_tensor

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
    device = model_device(model)
    segments = layout.segments(al)
    assert layout.segment_stride is not None
    stride = layout.segment_stride
    total_frames = layout.total_frames(al)
    out = weight_sum = weight = None
    out_start = 0  # absolute index of out[..., 0]
    done = 0
    for index, ((offset, _), (raw_codes, scale)) in enumerate(zip(segments, records)):
        codes = torch.from_numpy(raw_codes.astype(np.int64))[None].to(device)
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
