"""The body's layout: :class:`StreamLayout` (segments, frames and record sizes, from the
model), the body sizes it implies, and the per-segment scale field."""

from __future__ import annotations

import math
import struct
import typing as tp
from dataclasses import dataclass

from ..errors import BitstreamError
from .header import EcdcHeader
from .packing import _check_bits, packed_size

if tp.TYPE_CHECKING:
    import torch

    from ..model import EncodecConfig, EncodecModel

SCALE_STRUCT = struct.Struct("!f")


@dataclass(frozen=True)
class StreamLayout:
    """What the body's layout depends on, taken from the model that reads or wrote it.

    ``model_name`` (checked against the header's ``m``; None skips the check),
    ``n_q`` (most codebooks), ``bits`` per code, ``hop_length`` (samples per frame),
    ``normalize`` (a float32 scale per segment), ``segment_length`` and ``segment_stride``
    in samples (both None when the whole signal is one segment).
    """

    model_name: str | None
    n_q: int
    bits: int
    hop_length: int
    normalize: bool
    segment_length: int | None = None
    segment_stride: int | None = None

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.n_q < 1 or self.hop_length < 1:
            raise ValueError(f"n_q and hop_length must be >= 1, got {self.n_q}, {self.hop_length}")
        if (self.segment_length is None) != (self.segment_stride is None):
            raise ValueError("segment_length and segment_stride must both be set or both be None")
        if self.segment_length is not None and (self.segment_length < 1 or self.segment_stride < 1):
            raise ValueError("segment_length and segment_stride must be >= 1")

    @classmethod
    def from_model(cls, model: "EncodecModel") -> "StreamLayout":
        """The layout of ``model``'s files, named as their headers name it
        (:func:`opencodec.official_proof.header_identity`: an official name with weights not
        proven official writes ``<name>_custom``). Such a layout still reads an official
        file (the official name, no weights hash) with a warning, as
        :func:`opencodec.compress.decompress` does with the model (see
        :func:`opencodec.bitstream.read_body`)."""
        from ..releases import OFFICIAL_NAMES

        name = model.name
        if name in OFFICIAL_NAMES:
            from ..official_proof import header_identity

            name = header_identity(model)[0]
        return cls.from_config(model.config, name)

    @classmethod
    def from_config(cls, config: "EncodecConfig", name: str | None = None) -> "StreamLayout":
        """The layout of the files of a model built from ``config`` (no weights needed);
        ``name``: the model's name, checked against headers (default ``config.name``)."""
        return cls(model_name=config.name if name is None else name, n_q=config.n_q,
                   bits=config.bits_per_codebook, hop_length=config.hop_length,
                   normalize=bool(config.normalize), segment_length=config.segment_length,
                   segment_stride=config.segment_stride)

    @property
    def scale_bytes(self) -> int:
        """Bytes of the per-segment scale: 4 for normalising models, else 0."""
        return SCALE_STRUCT.size if self.normalize else 0

    def num_frames(self, length: int) -> int:
        """Frames in a segment of ``length`` samples: ``ceil(length / hop_length)``."""
        return -(-length // self.hop_length)

    def num_segments(self, audio_length: int) -> int:
        """Segments for ``audio_length`` samples."""
        if self.segment_stride is None:
            return 1
        return -(-audio_length // self.segment_stride)

    def segments(self, audio_length: int) -> list[tuple[int, int]]:
        """(offset, length) in samples of each segment, as the model cuts them."""
        if self.segment_length is None or self.segment_stride is None:
            return [(0, audio_length)]
        return [(off, min(self.segment_length, audio_length - off))
                for off in range(0, audio_length, self.segment_stride)]

    def total_frames(self, audio_length: int) -> int:
        """Code frames of all segments of ``audio_length`` samples together."""
        return sum(self.num_frames(n) for _, n in self.segments(audio_length))

    def segment_size(self, length: int, num_codebooks: int) -> int:
        """Bytes of one segment record of ``length`` samples (scale + packed codes)."""
        return self.scale_bytes + packed_size(num_codebooks * self.num_frames(length), self.bits)


LayoutLike = tp.Union[StreamLayout, "EncodecModel"]


def as_layout(layout: LayoutLike) -> StreamLayout:
    """``layout`` itself, or the layout of a model."""
    return layout if isinstance(layout, StreamLayout) else StreamLayout.from_model(layout)


def body_size(header: EcdcHeader, layout: StreamLayout) -> int:
    """Exact body size in bytes (without the LM) for ``header``; closed form, so a huge
    ``audio_length`` costs nothing to check."""
    al, nc = header.audio_length, header.num_codebooks
    seg, stride = layout.segment_length, layout.segment_stride
    if seg is None or stride is None:
        return layout.segment_size(al, nc)
    n = layout.num_segments(al)
    n_full = min(n, (al - seg) // stride + 1) if al >= seg else 0
    total = n_full * layout.segment_size(seg, nc)
    for i in range(n_full, n):  # partial segments at the end: at most about seg / stride
        total += layout.segment_size(al - i * stride, nc)
    return total


def min_lm_body_size(header: EcdcHeader, layout: StreamLayout, card: int) -> int:
    """A lower bound on the bytes of an entropy-coded body for ``header``.

    Each code costs at least ``-log2(p_max)`` bits, where ``p_max = (2**24 - 2 card + 2) / 2**24``
    is the largest probability a quantised CDF can give a bin (every other bin keeps 2
    counts), plus each segment's scale. Half of that bound is returned, as a safety margin:
    it only serves to reject, before any decoding, headers whose audio length is absurd for
    the body (which would otherwise make the decoder run for a very long time). A
    deterministic (version 1) body also codes a CRC-32 per segment (32 bits at uniform
    probability: 4 bytes, of which half count here), so a body cut to nothing is caught.
    """
    al, nc = header.audio_length, header.num_codebooks
    n_seg = layout.num_segments(al)
    if layout.segment_length is None or layout.segment_stride is None:
        frames = layout.num_frames(al)
    else:  # closed form as in body_size: full segments, then the few partial ones
        seg, stride = layout.segment_length, layout.segment_stride
        n_full = min(n_seg, (al - seg) // stride + 1) if al >= seg else 0
        frames = n_full * layout.num_frames(seg)
        frames += sum(layout.num_frames(al - i * stride) for i in range(n_full, n_seg))
    total = 1 << 24
    bits_per_code = -math.log2((total - 2 * card + 2) / total) if 2 * card <= total else 0.0
    crc = 2 * n_seg if header.deterministic is not None else 0
    return n_seg * layout.scale_bytes + crc + int(frames * nc * bits_per_code / 16)


def _scale_tensor(value: float, index: int, offset: int) -> torch.Tensor:
    if not math.isfinite(value) or value <= 0:
        raise BitstreamError(f"ECDC segment {index} (sample {offset}): scale must be "
                             f"finite and > 0, got {value!r}")
    import torch  # only here: sizes and layouts need no torch (opencodec info)

    return torch.tensor([[value]], dtype=torch.float32)

