""":class:`EncodedFrame`, the codes of one segment: the value shared by the model
(:mod:`opencodec.model`, which re-exports it) and the file format (:mod:`opencodec.bitstream`),
kept here so that reading or writing ``.ecdc`` bytes does not import the neural network;
and :func:`check_frames`, the check ``EncodecModel.decode`` runs on its input."""

from __future__ import annotations

import typing as tp

import torch

from .errors import InvalidCodesError
from .input_checks import check_codes, describe

__all__ = ["EncodedFrame", "check_frames", "check_scale"]


class EncodedFrame(tp.NamedTuple):
    """Codes of one segment: ``codes`` [B, K, F] int64 and ``scale`` [B, 1] (or None)."""

    codes: torch.Tensor
    scale: torch.Tensor | None


def check_scale(scale: object, batch: int, where: str = "") -> None:
    """``InvalidCodesError`` unless ``scale`` is None or a floating-point tensor [B, 1]
    (``batch`` rows) of finite values > 0 (what a normalising model's ``encode`` gives:
    each segment's RMS plus 1e-8)."""
    if scale is None:
        return
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise InvalidCodesError(f"{where}expected scale as a float torch.Tensor [B, 1] (or None), "
                                f"got {describe(scale)}")
    if tuple(scale.shape) != (batch, 1):
        raise InvalidCodesError(f"{where}expected scale of shape [B, 1] = {(batch, 1)} (one per item "
                                f"of the codes' batch), got {tuple(scale.shape)}")
    if scale.is_meta:
        raise InvalidCodesError(f"{where}scale is on the meta device: it has a shape but no values")
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        bad = scale[~(torch.isfinite(scale) & (scale > 0))][0]
        raise InvalidCodesError(f"{where}scales must be finite and > 0 (each segment's RMS), got "
                                f"{float(bad)!r}")


def check_frames(frames: tp.Any, bins: int, n_q: int, device: torch.device) -> list[EncodedFrame]:
    """``frames`` as a list of ``EncodedFrame`` with int64 codes (the same tensors when they
    are int64), or ``InvalidCodesError`` unless it is a non-empty sequence of
    ``(codes, scale)`` pairs, codes [B, K, F] integers in ``[0, bins)`` with
    1 <= K <= ``n_q`` and F >= 1 on ``device``, every segment with the same batch size B,
    scales None or finite, > 0, of shape [B, 1] (:func:`check_scale`)."""
    usage = "decode expects a list of EncodedFrame(codes [B, K, F], scale), as encode returns"
    if isinstance(frames, torch.Tensor):
        raise InvalidCodesError(f"{usage}, got a Tensor {tuple(frames.shape)}; for the codes of "
                                "one segment pass [EncodedFrame(codes, None)]")
    if isinstance(frames, EncodedFrame):
        raise InvalidCodesError(f"{usage}, got one EncodedFrame; pass a list: decode([frame])")
    if not isinstance(frames, tp.Sequence) or isinstance(frames, (str, bytes)):
        raise InvalidCodesError(f"{usage}, got {describe(frames)}")
    if len(frames) == 0:
        raise InvalidCodesError("no encoded frames to decode (an empty list)")
    checked: list[EncodedFrame] = []
    for i, frame in enumerate(frames):
        where = f"segment {i}: " if len(frames) > 1 else ""
        if not isinstance(frame, (tuple, list)) or len(frame) != 2:
            got = (f"a Tensor {tuple(frame.shape)}; for the codes of one segment pass "
                   f"[EncodedFrame(codes, None)]" if isinstance(frame, torch.Tensor) else describe(frame))
            raise InvalidCodesError(f"{usage}; {where}got {got}")
        codes, scale = frame
        if isinstance(codes, torch.Tensor) and codes.dim() != 3:
            raise InvalidCodesError(f"{where}expected codes of shape [B, K, F], got {tuple(codes.shape)}")
        codes = check_codes(codes, "[B, K, F]", bins, n_q, device, prefix=where)
        if codes.shape[-1] == 0:
            raise InvalidCodesError(f"{where}no code frames to decode (codes {tuple(codes.shape)})")
        if checked and codes.shape[0] != checked[0].codes.shape[0]:
            raise InvalidCodesError(f"{where}codes have batch size {codes.shape[0]}, but segment 0's "
                                    f"have {checked[0].codes.shape[0]}: every segment must hold the "
                                    f"same items")
        check_scale(scale, int(codes.shape[0]), where)
        checked.append(EncodedFrame(codes, scale))
    return checked
