""":class:`EncodedFrame`, the codes of one segment: the value shared by the model
(:mod:`opencodec.model`, which re-exports it) and the file format (:mod:`opencodec.bitstream`),
kept here so that reading or writing ``.ecdc`` bytes does not import the neural network."""

from __future__ import annotations

import typing as tp

import torch

__all__ = ["EncodedFrame"]


class EncodedFrame(tp.NamedTuple):
    """Codes of one segment: ``codes`` [B, K, F] int64 and ``scale`` [B, 1] (or None)."""

    codes: torch.Tensor
    scale: torch.Tensor | None
