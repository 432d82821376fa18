"""Entropy coding of EnCodec codes: the transformer entropy model and an arithmetic coder
whose bytes match the official ``.ecdc`` LM streams.

Public API:

* :class:`EntropyLM`, :class:`LMState`, :func:`load_lm` (``opencodec.entropy.lm``);
* :func:`build_quantized_cdf`, :class:`ArithmeticEncoder`, :class:`ArithmeticDecoder`,
  :func:`encode_segment_with_lm`, :func:`decode_segment_with_lm`
  (``opencodec.entropy.arithmetic``).
"""

from .arithmetic import (TOTAL_RANGE_BITS, ArithmeticDecoder, ArithmeticEncoder,
                         build_quantized_cdf, decode_segment_with_lm, encode_segment_with_lm)
from .lm import EntropyLM, LMState, load_lm, sin_embedding

__all__ = [
    "TOTAL_RANGE_BITS", "ArithmeticDecoder", "ArithmeticEncoder", "EntropyLM", "LMState",
    "build_quantized_cdf", "decode_segment_with_lm", "encode_segment_with_lm", "load_lm",
    "sin_embedding",
]
