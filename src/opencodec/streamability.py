"""Whether a codec can be streamed frame by frame, and why not: the one statement of the rule.

Streaming needs a causal model (no convolution looks into the future) that neither cuts its
input into segments nor renormalises it by its loudness (those need the whole segment before
the first frame), and whose convolutions do not pad circularly (a circular pad reads the end
of the signal). The 24 kHz models are streamable; ``encodec_48khz`` is not.
"""
from __future__ import annotations

import typing as tp

from .errors import OpenCodecError

if tp.TYPE_CHECKING:
    from .model import EncodecConfig


StreamProblem = tp.Literal["not_causal", "segmented", "normalized", "circular_padding"]


def streaming_problems(config: EncodecConfig) -> list[StreamProblem]:
    """Why a model of ``config`` cannot be streamed, in this order (empty: it can): streaming
    needs a causal model (``"not_causal"``) that neither cuts its input into segments
    (``"segmented"``) nor renormalises it (``"normalized"``), and does not pad circularly
    (``"circular_padding"``: the pad would be the end of the signal). The one statement of the rule;
    :func:`check_streamable` and :func:`opencodec.step.check_streamable_model` word it."""
    problems: list[StreamProblem] = []
    if not config.causal:
        problems.append("not_causal")
    if config.segment is not None:
        problems.append("segmented")
    if config.normalize:
        problems.append("normalized")
    if config.pad_mode == "circular":
        problems.append("circular_padding")
    return problems


def check_streamable(config: EncodecConfig) -> None:
    """Raise ``OpenCodecError`` unless a model of ``config`` (``model.config``) can be
    streamed (causal, no segments, no renormalisation, :func:`streaming_problems`), naming
    the reason."""
    reasons = []
    for problem in streaming_problems(config):
        if problem == "not_causal":
            reasons.append("it is not causal (its convolutions look into the future)")
        elif problem == "segmented":
            reasons.append(f"it cuts the input into {config.segment:g} s segments")
        elif problem == "normalized":
            reasons.append("it renormalises each segment by its loudness")
        else:
            reasons.append("its convolutions pad circularly (with the end of the signal)")
    if reasons:
        raise OpenCodecError(f"model {config.name!r} cannot be streamed: {'; '.join(reasons)}. "
                             "Streaming needs a causal model such as opencodec_24khz or "
                             "encodec_24khz; use 'opencodec compress' for files")
