"""Arithmetic coding compatible, byte for byte, with the official EnCodec ``.ecdc`` LM streams.

Quantised CDF (:func:`build_quantized_cdf`).  A float32 pdf ``p`` over ``N`` bins becomes
integer cumulative counts on a ``2**B`` scale (``B = 24``): ``p`` is rounded down to a multiple
of ``1e-8``, mixed with a uniform floor so that every bin gets at least ``min_range = 2``:
``range_i = floor((1 - alpha) * 2**B * p_i) + 2`` with ``alpha = 2 N / 2**B``, and
``cdf = cumsum(range)``, so ``cdf[-1] <= 2**B`` when the pdf sums to at most 1.  The float32
operations are the official ones, element by element, so batching rows (all codebooks of a frame
at once) gives the same integers.  A float32 softmax can sum slightly above 1 (a very peaked
distribution): ``cdf[-1]`` then ends a few counts above ``2**B``. A symbol whose counts pass
``2**B`` can then take ``high`` past the coder's window: the official coder fails an assertion
there, and this one raises a ``ValueError`` saying so (where the window holds, both write the
same bytes).

Coder state.  ``low <= high`` are integers holding the bits not yet written, ``max_bit`` is the
index of their top pending bit (``-1``: nothing pending), ``delta = high - low + 1``.

Encoding a symbol ``s`` with counts ``[c_lo, c_hi)`` (``c_lo = cdf[s-1]`` or 0, ``c_hi = cdf[s]``):

1. renormalise: while ``delta < 2**B``, ``low = 2 low``, ``high = 2 high + 1``, ``max_bit += 1``
   (done here in one shift by ``25 - delta.bit_length()``);
2. narrow: ``high = low + floor((c_hi - 1) * delta / 2**B)``, ``low = low + ceil(c_lo * delta / 2**B)``.
   The official code computes these with float64 ``math.ceil``/``floor`` of
   ``c * (delta / 2**B)``; since ``delta < 2**25`` and ``c <= 2**24`` the product is exact in
   float64, so the integer forms ``(c * delta + 2**B - 1) >> B`` and ``(c * delta) >> B`` are equal;
3. emit the leading bits that ``low`` and ``high`` share (from ``max_bit`` down; their count is
   ``max_bit + 1 - (low ^ high).bit_length()``) and drop them from both.

``flush`` emits all ``max_bit + 1`` remaining bits of ``low``.  Bits are packed into bytes least
significant bit first (the official ``BitPacker(bits=1)``), the last byte zero-padded.

Decoding mirrors it: ``current`` holds the bits read so far (renormalising shifts in one new
bit per doubling); the symbol is the one whose narrowed interval contains ``current``: with
``v = current - low`` it is ``s = #{j : cdf[j] <= (v * 2**B) // delta}`` (a bisection), and a
``v`` above that symbol's upper end (a gap or past the last bin) means a corrupt stream.
The decoder reads a byte only when it needs a bit, so after the last symbol of a segment it
has read exactly the bytes the encoder wrote for it (both did the same doublings): the next
field of the file starts right where it stops, as with the official decoder.
"""

from __future__ import annotations

import numbers
import typing as tp
from bisect import bisect_right

import numpy as np
import torch

from ..errors import BitstreamError

from .stepper import LMStepper

if tp.TYPE_CHECKING:
    from .lm import EntropyLM

__all__ = [
    "TOTAL_RANGE_BITS", "build_quantized_cdf", "ArithmeticEncoder", "ArithmeticDecoder",
    "encode_segment_with_lm", "decode_segment_with_lm",
]

TOTAL_RANGE_BITS = 24


def build_quantized_cdf(pdf: torch.Tensor, total_range_bits: int = TOTAL_RANGE_BITS,
                        roundoff: float = 1e-8, min_range: int = 2) -> torch.Tensor:
    """Quantised CDF of ``pdf`` along its last axis (official ``check=False`` behaviour).

    Args:
        pdf: probabilities ``[..., N]`` (float32 for official compatibility; any layout).
        total_range_bits: ``B``; the counts live in ``[0, 2**B]``.
        roundoff: pdf values are rounded down to a multiple of this (0 disables).
        min_range: smallest count of a bin (at least 2).
    Returns:
        int64 ``[..., N]``, increasing, ``cdf[..., i] = sum_{j<=i} range_j``.
    """
    if min_range < 2:
        raise ValueError("min_range must be at least 2")
    pdf = pdf.detach()
    if roundoff:
        pdf = (pdf / roundoff).floor() * roundoff
    total = 2 ** total_range_bits
    alpha = min_range * pdf.shape[-1] / total
    if alpha > 1:
        raise ValueError("too many bins for total_range_bits and min_range")
    ranges = (((1 - alpha) * total) * pdf).floor().long()
    ranges += min_range
    return torch.cumsum(ranges, dim=-1)


def _reverse_bits(value: int, n: int) -> int:
    """The ``n`` low bits of ``value`` in reverse order."""
    return int(format(value, f"0{n}b")[::-1], 2) if n else 0


class ArithmeticEncoder:
    """Arithmetic encoder producing the official ``ArithmeticCoder`` bytes.

    Args:
        total_range_bits: ``B`` (24 in ``.ecdc``); CDFs must end at or below ``2**B``.

    Use :meth:`encode` (integer interval) or :meth:`push` (symbol + CDF) per symbol, then
    :meth:`flush` once; :meth:`getvalue` returns the bytes.
    """

    def __init__(self, total_range_bits: int = TOTAL_RANGE_BITS) -> None:
        if not 1 <= total_range_bits <= 30:
            raise ValueError("total_range_bits must be in [1, 30]")
        self.total_range_bits = total_range_bits
        self.low = 0
        self.high = 0
        self.max_bit = -1
        self._out = bytearray()
        self._acc = 0   # pending output bits, first one in bit 0
        self._nacc = 0

    def _emit(self, value: int, n: int) -> None:
        """Append the ``n`` low bits of ``value``, most significant first."""
        self._acc |= _reverse_bits(value, n) << self._nacc
        self._nacc += n
        while self._nacc >= 8:
            self._out.append(self._acc & 0xFF)
            self._acc >>= 8
            self._nacc -= 8

    def encode(self, c_lo: int, c_hi: int) -> None:
        """Code the symbol whose counts are ``[c_lo, c_hi)`` (``c_lo = cdf[s-1]`` or 0, ``c_hi = cdf[s]``)."""
        B = self.total_range_bits
        low, high, max_bit = self.low, self.high, self.max_bit
        delta = high - low + 1
        if delta < (1 << B):
            n = B + 1 - delta.bit_length()
            low <<= n
            high = (high << n) | ((1 << n) - 1)
            max_bit += n
            delta <<= n
        high = low + (((c_hi - 1) * delta) >> B)
        low = low + ((c_lo * delta + (1 << B) - 1) >> B)
        if low > high:
            raise ValueError(f"empty symbol interval [{c_lo}, {c_hi})")
        if high >> (max_bit + 1):  # counts past 2**B (the official coder's assertion: the same cases)
            raise ValueError(f"symbol counts [{c_lo}, {c_hi}) pass the coder's range here (a CDF that ends "
                             f"above 2**{B}: see build_quantized_cdf)")
        n = max_bit + 1 - (low ^ high).bit_length()
        if n:
            keep = max_bit + 1 - n
            self._emit(low >> keep, n)
            mask = (1 << keep) - 1
            low &= mask
            high &= mask
            max_bit -= n
        self.low, self.high, self.max_bit = low, high, max_bit

    def push(self, symbol: int, cdf: tp.Sequence[int] | torch.Tensor) -> None:
        """Code ``symbol`` with the quantised CDF ``cdf`` (``[N]``, from :func:`build_quantized_cdf`)."""
        c_lo = 0 if symbol == 0 else int(cdf[symbol - 1])
        self.encode(c_lo, int(cdf[symbol]))

    def flush(self) -> None:
        """Write the pending bits of ``low`` and pad the last byte with zeros."""
        if self.max_bit >= 0:
            self._emit(self.low, self.max_bit + 1)
            self.max_bit = -1
        if self._nacc:
            self._out.append(self._acc)
            self._acc = 0
            self._nacc = 0

    def getvalue(self) -> bytes:
        """The bytes written so far (complete only after :meth:`flush`)."""
        return bytes(self._out)


class ArithmeticDecoder:
    """Decoder for :class:`ArithmeticEncoder` / official ``ArithmeticCoder`` streams.

    Args:
        source: the bytes, or a binary file-like object read one byte at a time, only when a
            bit is needed (so it is left positioned right after this coded segment).
        total_range_bits: ``B``, as used by the encoder.

    Attributes:
        bytes_read: bytes consumed from ``source`` so far.
    """

    def __init__(self, source: bytes | bytearray | memoryview | tp.BinaryIO,
                 total_range_bits: int = TOTAL_RANGE_BITS) -> None:
        self.total_range_bits = total_range_bits
        self.low = 0
        self.high = 0
        self.current = 0
        self.max_bit = -1
        self._acc = 0
        self._nacc = 0
        self.bytes_read = 0
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data: bytes | None = bytes(source)
            self._fo: tp.BinaryIO | None = None
        elif not callable(getattr(source, "read", None)):
            raise TypeError(f"expected the coded bytes (bytes, bytearray, memoryview) or a binary "
                            f"file, got {type(source).__name__}")
        else:
            self._data = None
            self._fo = source

    def _read_bits(self, n: int) -> int:
        """The next ``n`` bits of the stream, the first one as the most significant."""
        while self._nacc < n:
            if self._data is not None:
                if self.bytes_read >= len(self._data):
                    raise BitstreamError("arithmetic-coded data ended sooner than expected")
                byte = self._data[self.bytes_read]
            else:
                assert self._fo is not None
                buf = self._fo.read(1)
                if not buf:
                    raise BitstreamError("arithmetic-coded data ended sooner than expected")
                byte = buf[0]
            self.bytes_read += 1
            self._acc |= byte << self._nacc
            self._nacc += 8
        bits = self._acc & ((1 << n) - 1)
        self._acc >>= n
        self._nacc -= n
        return _reverse_bits(bits, n)

    def pull(self, cdf: tp.Sequence[int] | np.ndarray) -> int:
        """Decode one symbol coded with ``cdf`` (ints ``[N]``, exactly the encoder's).

        ``cdf`` is a list (searched with ``bisect``) or a 1-D int64 numpy array (searched with
        ``numpy.searchsorted``, much faster than converting a whole row to a list).

        Raises:
            BitstreamError: the data ended, or is not a valid code for this CDF.
        """
        B = self.total_range_bits
        low, high, current, max_bit = self.low, self.high, self.current, self.max_bit
        delta = high - low + 1
        if delta < (1 << B):
            n = B + 1 - delta.bit_length()
            low <<= n
            high = (high << n) | ((1 << n) - 1)
            current = (current << n) | self._read_bits(n)
            max_bit += n
            delta <<= n
        v = current - low
        target = (v << B) // delta
        symbol = (int(np.searchsorted(cdf, target, side="right")) if isinstance(cdf, np.ndarray)
                  else bisect_right(cdf, target))
        if symbol >= len(cdf):
            raise BitstreamError("corrupt arithmetic-coded data (value past the last symbol)")
        c_hi = int(cdf[symbol])
        c_lo = int(cdf[symbol - 1]) if symbol else 0
        if v > (((c_hi - 1) * delta) >> B):
            raise BitstreamError("corrupt arithmetic-coded data (value outside every symbol range)")
        high = low + (((c_hi - 1) * delta) >> B)
        low = low + ((c_lo * delta + (1 << B) - 1) >> B)
        n = max_bit + 1 - (low ^ high).bit_length()
        if n:
            mask = (1 << (max_bit + 1 - n)) - 1
            low &= mask
            high &= mask
            current &= mask
            max_bit -= n
        self.low, self.high, self.current, self.max_bit = low, high, current, max_bit
        return symbol


FrameProgress = tp.Optional[tp.Callable[[int], None]]
"""A callback taking the number of frames of a segment coded or decoded so far."""

PROGRESS_FRAMES = 64
"""Frames between two calls of a :data:`FrameProgress` callback (plus one at the end)."""


def report_progress(progress: FrameProgress, done: int, total: int, force: bool = False) -> None:
    """Call ``progress(done)`` every :data:`PROGRESS_FRAMES` frames, at the last one, or when forced."""
    if progress is not None and (force or done == total or done % PROGRESS_FRAMES == 0):
        progress(done)


class DecodedColumns:
    """Code frames collected as they are decoded, in compact blocks.

    Python lists of ints cost ~40 bytes per code; long segments (a 1-hour 24 kHz file is
    one segment of 270 000 frames) are kept instead as int32 blocks of ``block`` frames.
    Nothing is allocated up front: a corrupt header may claim a huge frame count, and the
    data runs out long before.
    """

    def __init__(self, num_codebooks: int, block: int = 1024) -> None:
        self.num_codebooks = num_codebooks
        self.block = block
        self._rows: list[list[int]] = []
        self._blocks: list[np.ndarray] = []

    def append(self, symbols: list[int]) -> None:
        """Add one frame's ``K`` codes."""
        self._rows.append(symbols)
        if len(self._rows) == self.block:
            self._blocks.append(np.asarray(self._rows, dtype=np.int32))
            self._rows = []

    def codes(self) -> torch.Tensor:
        """All codes as long ``[K, F]``."""
        parts = self._blocks + ([np.asarray(self._rows, dtype=np.int32)] if self._rows else [])
        if not parts:
            return torch.zeros(self.num_codebooks, 0, dtype=torch.long)
        return torch.from_numpy(np.concatenate(parts).T.copy()).long()


def check_integer_codes(codes: torch.Tensor) -> None:
    """``ValueError`` unless ``codes`` is ``[K, F]`` of an integer dtype: float codes would be
    truncated to other codes without a word (3.7 coded as 3), so they are refused, as
    :func:`opencodec.bitstream.packing.pack_codes` refuses them."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes must be a torch.Tensor [K, F], got {type(codes).__name__}")
    if codes.dim() != 2:
        raise ValueError(f"codes must be [K, F], got {tuple(codes.shape)}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.is_meta:
        raise ValueError("codes are on the meta device: they have a shape but no values; pass a "
                         "tensor with data (e.g. on the CPU)")


def check_counts(num_codebooks: int, num_frames: int) -> tuple[int, int]:
    """A decoder's ``num_codebooks`` and ``num_frames`` as Python ints (numpy's too), or
    ``TypeError`` naming the argument (a float would fail deep inside), or ``ValueError`` for
    ``num_frames`` < 0."""
    for name, value in (("num_codebooks", num_codebooks), ("num_frames", num_frames)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if num_frames < 0:
        raise ValueError("num_frames must be >= 0")
    return int(num_codebooks), int(num_frames)


def _check_lm_shape(lm: "EntropyLM", num_codebooks: int) -> None:
    if num_codebooks < 1 or num_codebooks > lm.n_q:
        raise ValueError(f"{num_codebooks} codebooks, the LM supports 1..{lm.n_q}")


def encode_segment_with_lm(lm: "EntropyLM", codes: torch.Tensor,
                           progress: FrameProgress = None) -> bytes:
    """Arithmetic-code one segment's codes with the entropy model, as the official writer does.

    Args:
        lm: the entropy model (eval mode); its state starts fresh here.
        codes: integer ``[K, F]`` (K codebooks, F frames), values in ``[0, lm.card)`` (else
            ``ValueError``: float codes are refused, not truncated).
        progress: called with the number of frames coded so far, now and then and at the end.
    Returns:
        The coded bytes of the segment (coder flushed, last byte padded): exactly what the
        official ``compress_to_file(..., use_lm=True)`` writes for this segment after its scale.
        A model giving NaN or infinite probabilities is a ``ValueError`` naming the frame.
    """
    check_integer_codes(codes)
    K, num_frames = codes.shape
    _check_lm_shape(lm, K)
    codes = codes.detach().to("cpu", torch.long)
    if num_frames and (int(codes.min()) < 0 or int(codes.max()) >= lm.card):
        raise ValueError(f"codes must be in [0, {lm.card})")
    enc = ArithmeticEncoder()
    device = next(lm.parameters()).device
    inputs = torch.cat([torch.zeros(K, 1, dtype=torch.long), codes + 1], dim=1).to(device)
    lo_idx = (codes - 1).clamp(min=0).to(device)
    hi_idx = codes.to(device)
    # All inputs are known, so the model runs many frames layer by layer (LMStepper.run);
    # the probabilities are bitwise those of frame-by-frame stepping.
    stepper = LMStepper(lm)
    with torch.inference_mode():
        for begin in range(0, num_frames, stepper.chunk):
            probs = stepper.run(inputs[:, begin:min(begin + stepper.chunk, num_frames)])
            if not bool(torch.isfinite(probs).all()):  # (NaN weights: the coder would fail deep inside)
                t, k = (int(i) for i in (~torch.isfinite(probs)).nonzero()[0][:2])
                raise ValueError(f"the entropy model gives non-finite probabilities at frame {begin + t}, "
                                 f"codebook {k} (NaN or infinite weights?)")
            # CDFs a few frames at a time: the whole chunk's would not stay in cache.
            for sub in range(0, probs.shape[0], 8):
                cdf = build_quantized_cdf(probs[sub:sub + 8])
                t0, t1 = begin + sub, begin + sub + cdf.shape[0]
                his = cdf.gather(2, hi_idx[:, t0:t1].t().unsqueeze(-1)).squeeze(-1).tolist()
                los = cdf.gather(2, lo_idx[:, t0:t1].t().unsqueeze(-1)).squeeze(-1).tolist()
                is_first = (codes[:, t0:t1] == 0).t().tolist()         # [T][K]
                for t in range(t1 - t0):
                    first, hi, lo = is_first[t], his[t], los[t]
                    for k in range(K):
                        try:
                            enc.encode(0 if first[k] else lo[k], hi[k])
                        except ValueError as exc:
                            if hi[k] > 1 << TOTAL_RANGE_BITS:
                                raise _past_the_range(t0 + t, k, hi[k]) from exc
                            raise
                report_progress(progress, t1, num_frames, force=True)
    enc.flush()
    return enc.getvalue()


def _past_the_range(frame: int, codebook: int, c_hi: int) -> ValueError:
    """The error for a code whose counts end above ``2**TOTAL_RANGE_BITS`` (see the module's docstring)."""
    return ValueError(
        f"the official entropy-coded format cannot code frame {frame}, codebook {codebook}: the entropy "
        f"model's float32 probabilities there sum above 1, and the code's cumulative count ({c_hi}) passes "
        f"2**{TOTAL_RANGE_BITS} (the official package fails on it too); write the deterministic format "
        f"(--lm-format deterministic, the default), whose integer model has no such limit")


@tp.overload
def decode_segment_with_lm(lm: "EntropyLM", data: bytes | bytearray | memoryview | tp.BinaryIO,
                           num_codebooks: int, num_frames: int,
                           return_consumed: tp.Literal[False] = ...,
                           progress: FrameProgress = None) -> torch.Tensor: ...
@tp.overload
def decode_segment_with_lm(lm: "EntropyLM", data: bytes | bytearray | memoryview | tp.BinaryIO,
                           num_codebooks: int, num_frames: int,
                           return_consumed: tp.Literal[True],
                           progress: FrameProgress = None) -> tuple[torch.Tensor, int]: ...
def decode_segment_with_lm(lm: "EntropyLM", data: bytes | bytearray | memoryview | tp.BinaryIO,
                           num_codebooks: int, num_frames: int, return_consumed: bool = False,
                           progress: FrameProgress = None
                           ) -> torch.Tensor | tuple[torch.Tensor, int]:
    """Decode one LM-coded segment (inverse of :func:`encode_segment_with_lm`).

    Args:
        lm: the entropy model used to encode (same weights); its state starts fresh here.
        data: the bytes starting at the segment, or a binary file positioned there. A file is
            read one byte at a time and left right after the segment, where the official
            decoder leaves it (e.g. on the next segment's float32 scale); trailing data is ignored.
        num_codebooks: ``K``.
        num_frames: ``F``.
        return_consumed: also return the number of bytes the segment used.
        progress: called with the number of frames decoded so far, every
            :data:`PROGRESS_FRAMES` frames and at the end.
    Returns:
        long ``[K, F]`` codes (on CPU), or ``(codes, bytes_consumed)``.
    Raises:
        BitstreamError: truncated or corrupt data.
    """
    num_codebooks, num_frames = check_counts(num_codebooks, num_frames)
    _check_lm_shape(lm, num_codebooks)
    dec = ArithmeticDecoder(data)
    K = num_codebooks
    columns = DecodedColumns(K)
    device = next(lm.parameters()).device
    inp = torch.zeros(K, dtype=torch.long, device=device)
    stepper = LMStepper(lm)
    with torch.inference_mode():
        for t in range(num_frames):
            probs = stepper.step(inp)
            rows = build_quantized_cdf(probs).cpu().numpy()
            syms = [dec.pull(rows[k]) for k in range(K)]
            columns.append(syms)
            inp = (torch.tensor(syms, dtype=torch.long) + 1).to(device)
            report_progress(progress, t + 1, num_frames)
    out = columns.codes()
    if return_consumed:
        return out, dec.bytes_read
    return out
