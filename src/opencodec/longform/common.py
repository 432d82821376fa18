"""Shared by the long-file encoder and decoder: what can be streamed, the unit sizes."""

from __future__ import annotations

import typing as tp

from ..model import EncodecModel


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
