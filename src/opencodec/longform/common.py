"""Shared by the long-file encoder and decoder: what can be streamed, the unit sizes."""

from __future__ import annotations

import typing as tp

import numpy as np

from ..model import EncodecModel


Progress = tp.Optional[tp.Callable[[int, int], None]]

_PACK_FRAMES = 8  # frames per packing unit: K * 8 * bits is always a whole number of bytes
_PUSH_SECONDS = 1.0  # the networks see at most this much audio per push (bounds activations)


def code_dtype(bits_per_codebook: int) -> np.dtype:
    """The smallest little-endian dtype holding codes of ``bits_per_codebook`` bits, for codes
    kept until the end of a file: unsigned 16-bit up to 16 bits (a quarter of int64's memory;
    int16 wrapped codes of 65536-entry codebooks negative), int32 beyond."""
    return np.dtype("<u2" if bits_per_codebook <= 16 else "<i4")


def supports_streaming(model: EncodecModel) -> bool:
    """True when files can be processed by ``model`` in bounded memory: a segmenting model
    (segment by segment), or a causal one that does not renormalise its input (streamed)."""
    return model.segment_length is not None or (bool(model.config.causal) and not model.normalize)


def _require_streaming(model: EncodecModel) -> None:
    if not supports_streaming(model):
        raise ValueError(f"model {model.name!r} cannot be streamed (it must either segment its "
                         "input, or be causal and not renormalise it); use compress/decompress")
