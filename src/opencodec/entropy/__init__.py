"""Entropy coding of EnCodec codes: the transformer entropy model and an arithmetic coder
whose bytes match the official ``.ecdc`` LM streams.

Public API:

* :class:`EntropyLM`, :class:`LMState`, :func:`load_lm` (``opencodec.entropy.lm``);
* :func:`build_quantized_cdf`, :class:`ArithmeticEncoder`, :class:`ArithmeticDecoder`,
  :func:`encode_segment_with_lm`, :func:`decode_segment_with_lm`
  (``opencodec.entropy.arithmetic``);
* :class:`FixedLM`, :func:`fixed_lm_for` (``opencodec.entropy.fixed``: integer-only inference,
  identical CDFs on every machine) and :func:`encode_segment_fixed`,
  :func:`decode_segment_fixed` (``opencodec.entropy.deterministic``: the checked segments of
  the deterministic ``.ecdc`` format).
"""

from .arithmetic import (TOTAL_RANGE_BITS, ArithmeticDecoder, ArithmeticEncoder,
                         build_quantized_cdf, decode_segment_with_lm, encode_segment_with_lm)
from .deterministic import decode_segment_fixed, encode_segment_fixed
from .fixed import FixedLM, FixedLMState, fixed_lm_for
from .lm import EntropyLM, LMState, load_lm, sin_embedding

__all__ = [
    "TOTAL_RANGE_BITS", "ArithmeticDecoder", "ArithmeticEncoder", "EntropyLM", "LMState",
    "build_quantized_cdf", "decode_segment_with_lm", "encode_segment_with_lm", "load_lm",
    "sin_embedding", "FixedLM", "FixedLMState", "fixed_lm_for", "encode_segment_fixed",
    "decode_segment_fixed",
]
