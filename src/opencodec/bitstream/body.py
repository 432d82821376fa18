"""Reading and writing a body (plain, LM-coded or deterministic version 1) and whole files,
after checking that the header fits the model's layout and the entropy model."""

from __future__ import annotations

import io
import typing as tp

import torch

from ..errors import BitstreamError
from ..frames import EncodedFrame
from .coded_body import (BodyProgress, _read_det_body, _read_lm_body, _segment_crc_seed,
                         _segment_progress)
from .header import EcdcHeader, header_bytes, parse_header, write_header
from .layout import SCALE_STRUCT, LayoutLike, StreamLayout, _scale_tensor, as_layout, body_size
from .packing import pack_codes, packed_size, unpack_codes

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM
    from ..entropy.fixed import FixedLM

    AnyLM = tp.Union[EntropyLM, FixedLM]


def _check_name(header: EcdcHeader, layout: StreamLayout, reading: bool) -> None:
    """The header's model name must be the layout's (None: not checked). An official file
    (official name, no weights hash) read with the layout of a model whose weights are not
    proven official (``<name>_custom``, :meth:`StreamLayout.from_model`) is read with a
    warning, as :func:`opencodec.compress.decompress` reads it with that model; writing one
    with that layout is refused (:func:`opencodec.identity.declare_official` allows it)."""
    from ..official_proof import warn_not_proven
    from ..releases import OFFICIAL_NAMES, export_name

    name = header.model_name
    if layout.model_name is None or name == layout.model_name:
        return
    unproven = (name in OFFICIAL_NAMES and header.model_hash is None
                and layout.model_name == export_name(name))
    if unproven and reading:
        warn_not_proven(name, f"the model given (its files are named {layout.model_name!r})",
                        "the ECDC file", stacklevel=4)  # points at read_body's caller
        return
    hint = (f": its weights are not proven to be the official ones (load {name!r} by name, or "
            f"opencodec.identity.declare_official(model))" if unproven else "")
    raise BitstreamError(f"ECDC file was written by model {name!r}, "
                         f"but is being {'read' if reading else 'written'} with model "
                         f"{layout.model_name!r}{hint}")


def _check_compatible(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM | None" = None,
                      reading: bool = True) -> "AnyLM | None":
    """Check that the header fits the layout (:func:`_check_name`; ``reading``: the file is
    read, not written) and the entropy model; returns the model to code the body with (the
    integer :class:`~opencodec.entropy.fixed.FixedLM` for version 1)."""
    _check_name(header, layout, reading)
    if header.num_codebooks > layout.n_q:
        raise BitstreamError(f"ECDC header field 'nc' (number of codebooks): model "
                             f"{layout.model_name!r} has at most {layout.n_q}, got "
                             f"{header.num_codebooks}")
    if header.deterministic is not None:
        if not reading:
            _check_release_name(header.deterministic)
        return _fixed_lm(header, layout, lm)
    if header.use_lm:
        if lm is None:
            raise BitstreamError("ECDC file uses the entropy model (header 'lm': true): its body "
                                 "can only be read with that entropy model (pass lm=...)")
        from ..entropy import EntropyLM

        if not isinstance(lm, EntropyLM):
            raise BitstreamError("the official entropy-coded format (version 0) needs the float "
                                 f"EntropyLM, got {type(lm).__name__}")
        _check_lm(header, layout, lm)
    return lm


def _fixed_lm(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM | None") -> "FixedLM":
    """The integer entropy model for a version 1 file: ``lm`` converted (cached) and checked
    against the header's scheme and weights hash, the codec's bins and the codebooks."""
    from ..entropy.fixed import SCHEME, fixed_lm_for

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
        name = getattr(lm, "name", None) or flm.name
        given = f" ({name!r})" if name else ""
        raise BitstreamError(f"wrong entropy model: the file was coded with {det.lm_name!r} (weights "
                             f"hash {det.lm_hash}), the entropy model given{given} has weights hash "
                             f"{flm.weights_hash}{_same_name_hint(lm, name, det)}; decode with the "
                             f"entropy model the file was written with")
    return flm


def _check_release_name(det: tp.Any) -> None:
    """Refuse to write a deterministic header (``det``) that names a released entropy model
    (a versioned name, or the alias ``opencodec_lm_24khz``: today's release) with other
    weights (its integer model's hash is not the release's): the file could not be decoded
    with the model it names (``decompress`` finds the model by that name). Such a model is
    the release in float16 or bfloat16, or one changed in place; a model of one's own takes
    its own name (``lm_name=``). An official entropy model's name (``encodec_lm_24khz``) on
    a release's weights is refused too (the official weights' integer hash is not recorded,
    so only weights known to be others' are caught here; decoding checks the hash)."""
    from ..releases import OFFICIAL_LM_NAMES, lm_release, lm_release_by_fixed_hash, resolve_alias

    if det.lm_name in OFFICIAL_LM_NAMES:
        other = lm_release_by_fixed_hash(det.lm_hash)
        if other is not None:
            raise BitstreamError(
                f"the entropy model is named {det.lm_name!r} (the official entropy model), but its "
                f"weights are release {other.name}'s (integer model hash {det.lm_hash}): name it "
                f"{other.name!r} (lm_name=...), the name decompress finds it by")
        return
    release = lm_release(resolve_alias(det.lm_name))
    if release is not None and det.lm_hash != release.fixed_hash:
        alias = f" (today's release {release.name})" if release.name != det.lm_name else ""
        other = lm_release_by_fixed_hash(det.lm_hash)
        advice = (f"name it {other.name!r} (lm_name=...), the release whose weights it has"
                  if other is not None else "code with the release in float32, or give the model "
                  "its own name (lm_name=...)")
        raise BitstreamError(
            f"the entropy model is named {det.lm_name!r}{alias}, but its weights are not that "
            f"release's (integer model hash {det.lm_hash}, the release's {release.fixed_hash}; "
            f"rounded weights, such as in float16 or bfloat16, make another one): {advice}")


def _same_name_hint(lm: "AnyLM", name: str | None, det: tp.Any) -> str:
    """Why an entropy model named as the file's (``det``, the header's deterministic fields)
    (or an unnamed one) has other weights, for the wrong-model error: given in half precision
    (its rounded weights make another integer model), a release's name on a changed copy (in the file or
    given), or, for a train-lm export, another export of its run. Empty for another name."""
    from ..releases import lm_release, resolve_alias

    weight = getattr(getattr(lm, "linears", [None])[0], "weight", None)
    dtype = getattr(weight, "dtype", None)
    if name in (None, det.lm_name) and dtype is not None and dtype not in (torch.float32, torch.float64):
        return (f" (the entropy model given is in {dtype}: rounded weights make another "
                "integer model, so give it in float32)")
    if name != det.lm_name:
        return ""
    release = lm_release(resolve_alias(det.lm_name))
    if release is not None and release.fixed_hash != det.lm_hash:
        return (" (the same name, but the file was not coded with that release's weights: with a "
                "changed copy of them, such as one in float16 or bfloat16; decode with that copy)")
    if release is not None:
        return (" (the same name on other weights: load the release itself, "
                f"load_lm_model({release.name!r}) or --lm-model {release.name})")
    return (" (the same name, other weights: another export of its training run, such as "
            "lm_best.safetensors, or lm.safetensors before or after more steps)")


def _check_lm(header: EcdcHeader, layout: StreamLayout, lm: "AnyLM") -> None:
    """The entropy model must cover the file's codebooks and the codec's bins."""
    if lm.card != 1 << layout.bits:
        raise BitstreamError(f"the entropy model predicts {lm.card} bins per codebook, but model "
                             f"{layout.model_name!r} has {1 << layout.bits}")
    if header.num_codebooks > lm.n_q:
        raise BitstreamError(f"ECDC file uses {header.num_codebooks} codebooks, but the entropy "
                             f"model covers only {lm.n_q}")


def read_body(body: bytes, header: EcdcHeader, layout: LayoutLike,
              lm: "AnyLM | None" = None, progress: BodyProgress = None) -> list[EncodedFrame]:
    """Parse the body (everything after the header) into one ``EncodedFrame`` per segment.

    Each frame has codes LongTensor [1, nc, ceil(L / hop)] for a segment of L samples and
    a float32 scale [1, 1] (normalising models) or None. Raises ``BitstreamError`` when the
    header does not fit the layout, the body is truncated or has extra bytes, or a scale
    is not finite and positive. ``layout`` may be the model itself; an official file
    (official name, no weights hash) read with a model whose weights are not proven official
    (its layout's name is ``<name>_custom``) gives a warning, as ``decompress`` does.

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
            from ..entropy.deterministic import encode_segment_fixed
            _check_release_name(det)
            flm = _fixed_lm(header, layout, lm)
            head = header_bytes(header)
        else:
            _check_lm(header, layout, lm)
            from ..entropy import encode_segment_with_lm
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
    _check_compatible(header, layout, lm, reading=False)
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
