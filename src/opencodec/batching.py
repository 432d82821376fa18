"""Batches of unequal lengths whose codes do not depend on the padding or the other items.

Encoding a padded batch naively changes the codes near the end of every item shorter
than the batch: a strided convolution pads the *end* of its input with a reflection of
the item's last samples (see ``modules/conv.py``), and in a batch those positions hold
the padding instead. Here every strided layer receives the per-item valid lengths and
rewrites, for each item, the few padded positions its last output window reads with
that item's own reflection, exactly as a single-item pass would. Everything else in a
causal encoder looks only to the left, so the first ``ceil(L_b / hop)`` code frames of
item ``b`` are those of encoding it alone, up to the rounding of batched kernels (a
near-tied code can flip; :func:`encode_each` is bitwise, see :func:`encode_batch`).

- Causal models: one batched pass with length-aware right padding (above). Items so
  short that a layer's reflection would need the zero-extension trick of ``pad1d``
  (a few frames) are encoded alone. Circular padding fills a conv's left pad with the end
  of the signal, so such models (causal or not) are grouped by equal length.
- Segmenting models (48 kHz): every full segment of every item forms one batch of equal
  shapes; the last, shorter segments are grouped by length.
- Other models: items are grouped by equal length.

Decoding: a causal decoder only looks left (transposed convs are trimmed on the right),
so padded code frames do not change the valid samples; other models (circular padding
included) decode per group.
"""

from __future__ import annotations

import typing as tp
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import InvalidAudioError, InvalidCodesError
from .input_checks import check_audio_tensor, check_codes, parameter_dtype_device
from .model import EncodecModel, EncodedFrame
from .modules.conv import StreamableConv1d, extra_padding_for_conv1d, pad1d
from .modules.lstm import StreamableLSTM
from .modules.seanet import SEANetResnetBlock
from .threads import one_thread


@dataclass
class BatchEncoding:
    """Codes of a batch of items with their own lengths.

    ``codes`` [B, K, F_max] int64, frames after an item's end are ``-1``;
    ``frame_lengths`` [B] valid frames per item; ``lengths`` [B] input samples per item;
    ``scales`` [B, S_max] per-segment scales for normalising models (NaN past the end),
    else None. For segmenting models the frames of consecutive segments are concatenated
    in time, as ``torch.cat([f.codes for f in model.encode(item)], -1)``: segment s of item b
    starts after the frames of its segments before s (``_segment_frame_spans``), which is
    not ``s * ceil(segment / hop)`` when segment 0 is shorter than a whole segment.
    """

    codes: torch.Tensor
    frame_lengths: torch.Tensor
    lengths: torch.Tensor
    scales: torch.Tensor | None


# -- length-aware encoder pass (causal models) -------------------------------------------
def _conv_with_lengths(conv: StreamableConv1d, x: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Apply ``conv`` to x [B, C, T] where item b is valid on [0, lengths[b]).

    Returns the output [B, C', T'] and the per-item valid output lengths.
    """
    k, s, total = conv.kernel_size, conv.stride, conv.padding_total
    if conv.causal:
        left, fixed_right = total, 0
    else:
        fixed_right = total // 2
        left = total - fixed_right
    T = x.shape[-1]
    rights = [fixed_right + extra_padding_for_conv1d(n, k, s, total) for n in lengths]
    padded = pad1d(x, (left, fixed_right + extra_padding_for_conv1d(T, k, s, total)), conv.pad_mode)
    need = left + max(n + r for n, r in zip(lengths, rights))
    if padded.shape[-1] < need:
        padded = torch.nn.functional.pad(padded, (0, need - padded.shape[-1]))
    # For item b, padded position left + n + i (i < r) holds x[n - 2 - i] (reflect), x[n - 1]
    # (replicate) or 0 (constant). One gather and one scatter for the whole batch (not two
    # small copies per item: GPU launches).
    pairs = [(b, n, i) for b, (n, r) in enumerate(zip(lengths, rights)) if n < T for i in range(r)]
    if pairs:
        rows = torch.tensor([b for b, _, _ in pairs], device=x.device)
        dst = torch.tensor([left + n + i for _, n, i in pairs], device=x.device)
        if conv.pad_mode in ("reflect", "replicate"):  # replicate: x[n - 1], the item's last sample
            src = torch.tensor([n - 2 - i if conv.pad_mode == "reflect" else n - 1 for _, n, i in pairs],
                               device=x.device)
            padded[rows, :, dst] = x[rows, :, src].to(padded.dtype)
        else:  # constant (circular models never get here: see _looks_left_only)
            padded[rows, :, dst] = 0.0
    out = conv.conv(padded)
    out_lengths = [(n + left + r - k) // s + 1 for n, r in zip(lengths, rights)]
    return out, out_lengths


def _layers_with_lengths(layers: nn.Sequential, x: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
    for layer in layers:
        if isinstance(layer, StreamableConv1d):
            x, lengths = _conv_with_lengths(layer, x, lengths)
        elif isinstance(layer, SEANetResnetBlock):
            y, _ = _layers_with_lengths(layer.block, x, lengths)
            if isinstance(layer.shortcut, StreamableConv1d):
                skip, _ = _conv_with_lengths(layer.shortcut, x, lengths)
            else:
                skip = layer.shortcut(x)
            x = skip + y
        elif isinstance(layer, (nn.ELU, StreamableLSTM, nn.Identity)):
            x = layer(x)  # pointwise or causal: the valid prefix is unaffected by what follows
        else:
            raise TypeError(f"no length-aware rule for layer {type(layer).__name__}")
    return x, lengths


def _looks_left_only(model: EncodecModel) -> bool:
    """Whether ``model``'s output at a time depends only on the input up to it, apart from
    the end-of-signal padding the length-aware pass rewrites: causal, and not circular
    padding (which fills a conv's left pad with the end of the signal, padding included)."""
    return bool(model.config.causal) and model.config.pad_mode != "circular"


def _decoder_safe_for_batched_pass(model: EncodecModel, num_frames: int) -> bool:
    """True when every decoder conv sees more valid samples than its left reflection needs."""
    length = num_frames
    for layer in model.decoder.model:
        convs = [m for m in layer.modules() if isinstance(m, StreamableConv1d)]
        if any(length <= conv.padding_total for conv in convs):
            return False
        stride = getattr(layer, "stride", 1)
        if not isinstance(layer, StreamableConv1d):
            length *= stride
    return True


def _safe_for_batched_pass(model: EncodecModel, length: int) -> bool:
    """True when no layer's reflection for an item of ``length`` samples needs zero-extension."""
    lengths = [length]

    def walk(layers: nn.Sequential) -> bool:
        nonlocal lengths
        for layer in layers:
            convs = [layer] if isinstance(layer, StreamableConv1d) else []
            if isinstance(layer, SEANetResnetBlock):
                convs = [m for m in layer.modules() if isinstance(m, StreamableConv1d)]
            for conv in convs:
                total = conv.padding_total
                right = extra_padding_for_conv1d(lengths[0], conv.kernel_size, conv.stride, total)
                right += 0 if conv.causal else total // 2
                if lengths[0] <= max(total, right):
                    return False
            if isinstance(layer, StreamableConv1d):
                n = lengths[0]
                lengths = [-(-n // layer.stride)]
        return True

    return walk(model.encoder.model)


# -- public API ------------------------------------------------------------------------------
def _check(model: EncodecModel, wav: torch.Tensor, lengths: torch.Tensor | list[int]) -> list[int]:
    """The lengths as ints, or ``InvalidAudioError`` (a ``ValueError``) unless ``wav`` is a
    float32 (the model's dtype) tensor [B, C, T] on the model's device with ``lengths[b]`` in
    [1, T] and finite samples within every item's length (padding may hold anything)."""
    layout = f"[B, {model.channels}, T]"
    dtype, device = parameter_dtype_device(model)
    check_audio_tensor(wav, layout, dtype, device)
    if wav.dim() != 3 or wav.shape[1] != model.channels:
        raise InvalidAudioError(f"expected audio {layout}, got {tuple(wav.shape)}")
    if wav.shape[0] == 0:
        raise InvalidAudioError(f"empty batch: audio {tuple(wav.shape)} has no items")
    lens = _as_lengths(lengths)
    if len(lens) != wav.shape[0]:
        raise InvalidAudioError(f"got {len(lens)} lengths for a batch of {wav.shape[0]}")
    bad = [n for n in lens if n < 1 or n > wav.shape[-1]]
    if bad:
        raise InvalidAudioError(f"lengths must be in [1, {wav.shape[-1]}], got {bad[0]}")
    _check_finite_items(wav, lens)
    return lens


def _as_lengths(lengths: object, name: str = "lengths", unit: str = "samples",
                error: type[ValueError] = InvalidAudioError) -> list[int]:
    """``lengths`` (a 1-D integer tensor or numpy array, or a sequence of ints) as a list of
    ints, else ``error`` (``InvalidAudioError``) naming ``name`` and what was given (a float
    such as 24000.0 is refused: a length is a whole number of ``unit``)."""
    if isinstance(lengths, np.ndarray):
        lengths = torch.from_numpy(lengths) if lengths.dtype.kind in "biuf" else lengths
    if isinstance(lengths, torch.Tensor):
        if lengths.dim() != 1:
            raise error(f"{name} must be 1-D, one per item [B], got a tensor of shape "
                        f"{tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise error(f"{name} must be integers ({unit}), got a {lengths.dtype} tensor")
        if lengths.is_meta:
            raise error(f"{name} is a meta tensor, which holds no values: pass the lengths as ints "
                        f"or a CPU tensor")
        return [int(n) for n in lengths.tolist()]
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, tp.Sequence):
        raise error(f"{name} must be a list or 1-D tensor of ints, got {type(lengths).__name__}")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) and not (
                isinstance(n, torch.Tensor) and n.dim() == 0 and not n.is_floating_point()):
            raise error(f"{name} must be whole numbers of {unit} (int), got {type(n).__name__} {n!r:.40}")
        if isinstance(n, torch.Tensor) and n.is_meta:
            raise error(f"{name} holds a meta tensor, which has no value: pass the lengths as ints")
    return [int(n) for n in lengths]


def _check_finite_items(wav: torch.Tensor, lens: list[int]) -> None:
    """``InvalidAudioError`` naming the first item of ``wav`` [B, C, T] with a NaN or infinite
    sample within its first ``lens[b]`` samples (one ``isfinite`` pass when there is none)."""
    finite = torch.isfinite(wav)
    if bool(finite.all()):
        return
    for b, n in enumerate(lens):
        bad = int((~finite[b, :, :n]).sum())
        if bad:
            raise InvalidAudioError(f"item {b}: audio contains {bad} non-finite sample(s) (NaN or inf)")


def _segment_frame_spans(model: EncodecModel, length: int) -> list[tuple[int, int]]:
    """(first frame, frames) of each segment of an item of ``length`` samples in its
    concatenated codes (:class:`BatchEncoding`'s layout, ``model.encode``'s segments one after
    the other): segment s starts at the sum of the frame counts of segments 0..s-1. The
    layout ``encode_batch`` writes and ``decode_batch`` reads (``encode_each`` concatenates)."""
    spans, start = [], 0
    for _, n in model.segments(length):
        frames = model.num_frames(n)
        spans.append((start, frames))
        start += frames
    return spans


def _spans_frames(spans: list[tuple[int, int]]) -> int:
    """Code frames of an item whose segments have the (first frame, frames) ``spans``: the sum
    of its segments' frame counts."""
    return sum(frames for _, frames in spans)


def _item_frames(model: EncodecModel, length: int) -> int:
    """Code frames :func:`encode_batch` gives an item of ``length`` samples (the width
    :func:`_encode_segmented` gives it from the same spans)."""
    return _spans_frames(_segment_frame_spans(model, length))


def _frame_slice(codes: torch.Tensor, start: int, frames: int) -> torch.Tensor:
    """``codes[..., start:start + frames]``, which must be ``frames`` wide: a narrower slice
    (past the end of the tensor) would take a 1-frame write by broadcasting, or give a
    shorter segment, silently; it is a bug here, so an ``AssertionError``."""
    part = codes[..., start: start + frames]
    if part.shape[-1] != frames:
        raise AssertionError(f"segment frames {start}:{start + frames} outside codes of "
                             f"{codes.shape[-1]} frames")
    return part


def _encoding_lengths(values: object, field: str, batch: int) -> list[int]:
    """``BatchEncoding.<field>`` (a 1-D integer tensor or sequence, one per item) as ints >= 1,
    else ``InvalidCodesError`` naming the field."""
    unit = "frames" if field == "frame_lengths" else "samples"
    lens = _as_lengths(values, f"BatchEncoding.{field}", unit, InvalidCodesError)
    if len(lens) != batch:
        raise InvalidCodesError(f"BatchEncoding.{field}: got {len(lens)} for a batch of {batch} (codes [B, K, F_max])")
    if any(n < 1 for n in lens):
        raise InvalidCodesError(f"BatchEncoding.{field} must be >= 1, got {min(lens)}")
    return lens


def _check_encoding(model: EncodecModel, encoding: BatchEncoding
                    ) -> tuple[torch.Tensor, list[int], list[int], torch.Tensor | None]:
    """``encoding``'s codes (int64, on the model's device), frame lengths, lengths and scales,
    or ``InvalidCodesError`` (a ``ValueError``) unless it is a ``BatchEncoding`` as
    :func:`encode_batch` gives: ``codes`` an integer tensor [B, K, F_max] (1 <= K <= ``n_q``)
    whose codes are in ``[0, bins)`` within each item's ``frame_lengths[b]`` frames and in
    ``[0, bins)`` or -1 (padding) after them; ``lengths`` [B] >= 1 samples, and
    ``frame_lengths`` [B] the frames those lengths encode to (at most F_max); ``scales``
    None or a float tensor [B, S] with a column per segment of the longest item."""
    if not isinstance(encoding, BatchEncoding):
        raise InvalidCodesError(f"decode_batch expects the BatchEncoding encode_batch returns, got "
                                f"{type(encoding).__name__}; for a tensor of codes: "
                                f"BatchEncoding(codes, frame_lengths, lengths, None)")
    codes = encoding.codes
    if isinstance(codes, torch.Tensor) and codes.dim() != 3:
        raise InvalidCodesError(f"expected BatchEncoding.codes [B, K, F_max], got {tuple(codes.shape)}")
    codes = check_codes(codes, "[B, K, F_max]", model.bins, model.n_q, padding=True)
    B, F = codes.shape[0], codes.shape[-1]
    frames = _encoding_lengths(encoding.frame_lengths, "frame_lengths", B)
    lens = _encoding_lengths(encoding.lengths, "lengths", B)
    for b, (f, n) in enumerate(zip(frames, lens)):
        if f != _item_frames(model, n):
            raise InvalidCodesError(f"item {b}: frame_lengths {f} does not fit its length of {n} samples, "
                                    f"which model {model.name} encodes to {_item_frames(model, n)} frames")
    if max(frames) > F:
        raise InvalidCodesError(f"item {frames.index(max(frames))}: frame_lengths {max(frames)} > the "
                                f"{F} frames of codes [B, K, F_max]")
    valid = torch.arange(F, device=codes.device)[None, :] < torch.tensor(frames, device=codes.device)[:, None]
    padding_inside = (codes < 0) & valid[:, None, :]
    if bool(padding_inside.any()):
        b, k, f = (int(i) for i in padding_inside.nonzero()[0])
        raise InvalidCodesError(f"item {b}: code -1 (padding) in codebook {k} at frame {f}, within its "
                                f"{frames[b]} frames; codes must be in [0, {model.bins}) there")
    scales = encoding.scales
    if scales is not None:
        segments = max(len(model.segments(n)) for n in lens)
        if not isinstance(scales, torch.Tensor) or not scales.is_floating_point() or scales.dim() != 2 \
                or scales.shape[0] != B or scales.shape[1] < segments:
            shown = tuple(scales.shape) if isinstance(scales, torch.Tensor) else type(scales).__name__
            raise InvalidCodesError(f"BatchEncoding.scales must be None or a float tensor [B, S] = [{B}, "
                                    f">= {segments}] (one per segment), got {shown}")
    device = parameter_dtype_device(model)[1]
    return codes.to(device), frames, lens, None if scales is None else scales.to(device)


def _group_by_length(lens: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for b, n in enumerate(lens):
        groups[n].append(b)
    return groups


@torch.inference_mode()
def encode_batch(model: EncodecModel, wav: torch.Tensor, lengths: torch.Tensor | list[int]) -> BatchEncoding:
    """Encode audio [B, C, T] (float32, the model's dtype) whose item b is valid on its first
    ``lengths[b]`` samples (finite there; the padding may hold anything); anything else
    raises ``InvalidAudioError`` (a ``ValueError``).

    Item b's codes are ``model.encode(wav[b:b+1, :, :lengths[b]])``'s (concatenated over
    segments for segmenting models) but for rare near-ties, independent of the padding (and,
    as ``model.encode``'s, of the thread count: on the CPU it runs on one thread). Not bitwise
    in general: a batch of several items goes through other kernels than one item (the LSTM
    and the frame-rate convolutions round a batch differently, ~5e-8 on the latent), so a
    near-tied code can flip (seen for the official 24 kHz architecture with random weights:
    one frame of a 2-item batch, tests/test_encode_threads.py). :func:`encode_each` gives
    ``model.encode``'s codes bit for bit (and is the faster way on the CPU).
    """
    lens = _check(model, wav, lengths)
    with one_thread(wav):
        return _encode_batch(model, wav, lens)


def _encode_batch(model: EncodecModel, wav: torch.Tensor, lens: list[int]) -> BatchEncoding:
    B, K = len(lens), model.num_codebooks()
    if model.segment_length is not None:
        return _encode_segmented(model, wav, lens)
    frames = [model.num_frames(n) for n in lens]
    codes = torch.full((B, K, max(frames)), -1, dtype=torch.long, device=wav.device)  # no copy per item
    if _looks_left_only(model) and not model.normalize:
        batched = [b for b, n in enumerate(lens) if _safe_for_batched_pass(model, n)]
        if batched:
            sub = wav[batched][:, :, : max(lens[b] for b in batched)]
            emb, _ = _layers_with_lengths(model.encoder.model, sub, [lens[b] for b in batched])
            sub_codes = model.quantizer.encode(emb, K)
            for i, b in enumerate(batched):
                codes[b, :, : frames[b]] = sub_codes[i, :, : frames[b]]
        rest = [b for b in range(B) if b not in set(batched)]
    else:
        rest = list(range(B))
    scales = torch.full((B, 1), float("nan")) if model.normalize else None
    for n, items in _group_by_length([lens[b] for b in rest]).items():
        idx = [rest[i] for i in items]
        (frame,) = model.encode(wav[idx][:, :, :n])
        codes[idx, :, : frames[idx[0]]] = frame.codes
        if scales is not None and frame.scale is not None:  # a normalising model's: as encode_each keeps them
            scales[idx] = frame.scale.float().cpu()
    return BatchEncoding(codes, torch.tensor(frames), torch.tensor(lens), scales)


@torch.inference_mode()
def encode_each(model: EncodecModel, wav: torch.Tensor, lengths: torch.Tensor | list[int]) -> BatchEncoding:
    """What :func:`encode_batch` returns, computed item by item with ``model.encode`` (so item
    b's codes are ``model.encode(wav[b:b+1, :, :lengths[b]])`` by construction).

    On the CPU this is the faster way: the single-item encoder runs its cache-sized fast
    paths, while one batched pass over padded items costs far more per second of audio
    (measured on 16 files of 1-30 s, official 24 kHz architecture, one thread: 16.3 s item by
    item, 30.0 s in length-sorted batches of 4, 71.7 s as one padded batch).
    """
    lens = _check(model, wav, lengths)
    encoded = []
    for b, n in enumerate(lens):
        frames = model.encode(wav[b: b + 1, :, :n])
        scales = None if frames[0].scale is None else torch.stack([f.scale.reshape(()) for f in frames])
        encoded.append((torch.cat([f.codes for f in frames], dim=-1)[0], scales))
    B, K = len(lens), encoded[0][0].shape[0]
    frame_counts = [c.shape[-1] for c, _ in encoded]
    codes = torch.full((B, K, max(frame_counts)), -1, dtype=torch.long, device=wav.device)
    scales = None
    if encoded[0][1] is not None:
        scales = torch.full((B, max(s.numel() for _, s in encoded)), float("nan"))
    for b, (c, s) in enumerate(encoded):
        codes[b, :, : c.shape[-1]] = c
        if scales is not None and s is not None:
            scales[b, : s.numel()] = s.float().cpu()
    return BatchEncoding(codes, torch.tensor(frame_counts), torch.tensor(lens), scales)


def _encode_segmented(model: EncodecModel, wav: torch.Tensor, lens: list[int]) -> BatchEncoding:
    assert model.segment_length is not None
    layouts = [model.segments(n) for n in lens]
    spans = [_segment_frame_spans(model, n) for n in lens]
    B, K = len(lens), model.num_codebooks()
    total_frames = [_spans_frames(item) for item in spans]  # the width, from the spans it writes
    codes = torch.full((B, K, max(total_frames)), -1, dtype=torch.long, device=wav.device)
    scales = torch.full((B, max(len(lay) for lay in layouts)), float("nan")) if model.normalize else None
    # Group (item, segment) pairs by segment length: each group is one batched pass.
    groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for b, lay in enumerate(layouts):
        for s, (off, n) in enumerate(lay):
            groups[n].append((b, s, off))
    for n, members in groups.items():
        chunk = torch.stack([wav[b, :, off: off + n] for b, _, off in members])
        frame = model._encode_segment(chunk)  # one segment per row, no re-segmenting
        for i, (b, s, _) in enumerate(members):
            start, f = spans[b][s]
            if frame.codes.shape[-1] != f:  # the layout's count is the encoder's: a bug otherwise
                raise AssertionError(f"a segment of {n} samples encoded to {frame.codes.shape[-1]} "
                                     f"frames, the layout has {f}")
            _frame_slice(codes[b], start, f).copy_(frame.codes[i])
            if scales is not None and frame.scale is not None:
                scales[b, s] = frame.scale[i, 0]
    return BatchEncoding(codes, torch.tensor(total_frames), torch.tensor(lens), scales)


@torch.inference_mode()
def decode_batch(model: EncodecModel, encoding: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a ``BatchEncoding``: returns audio [B, C, max(lengths)] (zeros past each
    item's end) and the per-item lengths [B] in samples. Codes must be in ``[0, bins)``
    within each item's ``frame_lengths`` and may be -1 (padding) after them; ``lengths`` (or
    lists of ints) must be the samples those frames encode (what :func:`encode_batch` gives),
    ``scales`` None or [B, S >= segments]; anything else raises ``InvalidCodesError`` (a
    ``ValueError``) naming the item, field or codebook. Each item's audio is its
    ``model.decode`` to float rounding (the decoder's LSTM rounds a batch differently, ~1e-7)."""
    all_codes, frames, lens, scales = _check_encoding(model, encoding)
    B = len(lens)
    out = torch.zeros(B, model.channels, max(lens))
    rest = list(range(B))
    if model.segment_length is None and _looks_left_only(model):
        batched = [b for b in range(B) if _decoder_safe_for_batched_pass(model, frames[b])]
        if batched:
            # Padding frames only affect samples past each item's end (the decoder looks left).
            codes = all_codes[batched][:, :, : max(frames[b] for b in batched)].clamp_min(0)
            scale = None if scales is None else scales[batched][:, :1]  # as model.decode scales them
            audio = model.decode([EncodedFrame(codes, scale)])
            for i, b in enumerate(batched):
                out[b, :, : lens[b]] = audio[i, :, : lens[b]]
        rest = [b for b in range(B) if b not in set(batched)]
    for n, group in _group_by_length([lens[b] for b in rest]).items():
        items = [rest[i] for i in group]
        segment_frames = []
        for s, (start, f) in enumerate(_segment_frame_spans(model, n)):
            codes = _frame_slice(all_codes[items], start, f)
            scale = scales[items][:, s: s + 1] if scales is not None else None
            segment_frames.append(EncodedFrame(codes, scale))
        out[items, :, :n] = model.decode(segment_frames)[:, :, :n]
    return out, torch.tensor(lens)
