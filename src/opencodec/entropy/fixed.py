"""Integer-only inference of the entropy model: CDFs that every machine computes bit for bit.

:class:`FixedLM` runs the transformer of :class:`~opencodec.entropy.EntropyLM` with int64
tensors only. Integer additions and products are exact, so no result depends on the
summation order, the thread count, the BLAS, the CPU or the math library; every
non-linear function is an integer algorithm or an integer table that is itself computed
with exact arithmetic (Python integers and the correctly rounded :mod:`decimal`
functions). No float operation touches a value after the weights are converted, and the
conversion only multiplies float32 weights by powers of two and rounds (both exact in
IEEE arithmetic). The output is an integer CDF per codebook whose total is exactly
``2**CDF_BITS`` with every bin at least ``MIN_FREQ``, ready for the arithmetic coder of
:mod:`opencodec.entropy.arithmetic` (``total_range_bits = CDF_BITS = 24``; ``MIN_FREQ = 2``
keeps every symbol interval non-empty for that coder).

Scales (fixed-point scheme ``SCHEME = 1``; any change here must bump it, since it changes
the CDFs and the weights hash):

* activations: integers at scale ``2**ACT_FRAC`` (``ACT_FRAC = 16``), clamped to
  ``|x| <= ACT_LIMIT = 2**24`` (real values within +-256) after every linear layer,
  residual sum and layer norm;
* weights (each parameter tensor; the per-codebook heads stacked as one): ``round(w * 2**s)``
  with one power-of-two ``s`` per tensor, the largest for which ``|w_int| <= 2**19``; a
  tensor needing ``s < 1`` (weights of 2**18 or more) is refused;
* biases, LayerNorm shifts (beta), embedding tables: at the activation scale (``|v| <= 256``,
  else refused); LayerNorm gains (gamma) like weights;
* attention probabilities at ``2**ATTN_FRAC`` (20), exponentials at ``2**EXP_FRAC`` (30).

Operations:

* linear: ``y = round_shift(x @ W_int^T, s) + b_int`` (``round_shift(v, s) = (v + 2**(s-1)) >> s``);
* LayerNorm: ``mean = round(sum(x) / C)``, ``d = x - mean``, ``var = floor(sum(d**2) / C)``,
  ``std = isqrt((var + eps_int) << 12)`` (scale ``2**(ACT_FRAC + 6)``, ``eps_int = round(eps *
  2**32)``; the square root is :func:`math.isqrt` on Python integers), ``y = round(d * 2**22 /
  std)``, then ``round_shift(y * gamma_int, s) + beta_int``;
* position embedding: ``cos``/``sin`` of ``p * w_j`` (``w_j = max_period ** (-j / (C/2 - 1))``)
  as products of the rotations by ``2**b * w_j`` for the set bits ``b`` of ``p`` (integers at
  scale ``2**30``, rounded after each product; error below ``48 * 2**-30``); those rotations
  come from ``w_j``, its cosine and sine evaluated with :mod:`decimal` (``exp``/``ln`` are
  correctly rounded there, the series use exact operations) at 90 digits and repeated
  angle doubling on 200-bit integers; positions must stay below ``2**48``;
* softmax (attention and output): ``z = x - max(x) >= -64`` (clamped), ``u = z * log2 e``
  (24 fractional bits, ``log2 e`` at 2**30), ``2**u`` split into an integer power of two (a
  shift) and a fraction looked up in a 257-entry table of ``floor(2**30 * 2**(i/256))``
  (repeated :func:`math.isqrt`, exact) with linear interpolation (relative error < 2e-6
  while ``exp(z) * 2**30`` is large, absolute error about ``2**-30`` below);
* attention scores ``round_shift(q' . k, 16)`` with ``q' = round_shift(q * isqrt(2**60 //
  head_dim), 30)``; probabilities ``p = floor(e * 2**20 / sum(e))``; output
  ``round_shift(p @ v, 20)``;
* GELU (the exact, erf-based one): ``x * Phi(x)`` with ``Phi`` from a 4097-entry table on
  ``[-8, 8]`` (step 1/256, scale ``2**30``, linear interpolation; absolute error of ``Phi``
  < 5e-7), ``x`` itself above 8 and 0 below -8. The table comes from ``Phi(x) = 1/2 +
  phi(x) * sum_n x**(2n+1) / (2n+1)!!`` summed on 100-bit integers (all terms positive);
* output CDF of a codebook: ``e = exp(z)`` as above, ``freq = floor(e * (2**24 - 2 * card) /
  sum(e)) + 2``, the remainder up to ``2**24`` added to the first most likely bin,
  ``cdf = cumsum(freq)``.

Overflow bounds (int64, ``|v| < 2**63``): with ``|x| <= 2**24`` and ``|w| <= 2**19`` a dot
product of ``n <= 4096`` terms stays below ``2**55``; LayerNorm has ``|d| <= 2**25``,
``sum(d**2) <= 2**62`` (``C <= 4096``), ``(var + eps) << 12 < 2**63``; attention scores
``<= sqrt(head_dim) * 2**48``; ``p @ v <= 2**44`` (the ``p`` of a row sum to at most
``2**20``); inside ``exp``, ``|z * log2e_q30| < 2**22 * 2**31`` and the interpolation product
``< 2**23 * 2**16``; exponentials ``<= 2**30`` times ``2**24`` in the CDF. Sizes beyond those
limits are refused at conversion (``dim <= 4096``, feed-forward width ``<= 4096``,
``card <= 2**20``, ``n_q <= 64``, ``past_context < 2**16``).

Because every operation is exact integer arithmetic, the CDFs do not depend on how the
rows are batched: running a whole segment at once (:meth:`FixedLM.forward` with ``T > 1``)
gives exactly the CDFs of :meth:`FixedLM.step` frame by frame, which is why the keys and
values of earlier steps can be cached (the float model has to recompute them).

The weights hash (:attr:`FixedLM.weights_hash`, 16 hex digits of a SHA-256 over the scheme,
the sizes and every integer tensor with its shift) identifies exactly what drives the CDFs;
the deterministic ``.ecdc`` format stores it so that a file is never decoded with another
entropy model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import hashlib
import json
import math
import typing as tp
import weakref
from fractions import Fraction

import torch

from ..errors import ModelLoadError

if tp.TYPE_CHECKING:
    from .lm import EntropyLM

__all__ = [
    "SCHEME", "ACT_FRAC", "ACT_LIMIT", "CDF_BITS", "MIN_FREQ", "FixedLM", "FixedLMState",
    "fixed_lm_for", "logits_to_cdf", "cdf_to_probs", "int_exp", "int_gelu", "one_thread",
]

SCHEME = 1
"""Version of the fixed-point scheme (scales, tables, algorithms) described above."""

ACT_FRAC = 16
"""Fractional bits of activations, biases, embeddings and logits."""

ACT_LIMIT = 1 << 24
"""Activations are clamped to ``[-ACT_LIMIT, ACT_LIMIT]`` (real values within +-256)."""

WEIGHT_BITS = 19
"""Converted weights satisfy ``|w_int| <= 2**WEIGHT_BITS``."""

EXP_FRAC = 30
"""Fractional bits of exponentials (``exp(0) = 2**EXP_FRAC``)."""

ATTN_FRAC = 20
"""Fractional bits of attention probabilities."""

LN_EXTRA = 6
"""Extra fractional bits of the LayerNorm standard deviation."""

EXP_MIN = 64
"""Softmax inputs are clamped to ``z >= -EXP_MIN`` (``exp(-64)`` is 0 at every scale used)."""

CDF_BITS = 24
"""The CDFs end at exactly ``2**CDF_BITS`` (the coder's ``total_range_bits``)."""

MIN_FREQ = 2
"""Smallest frequency of a bin (the arithmetic coder needs at least 2)."""

ROT_FRAC = 30
"""Fractional bits of the position-embedding rotations."""

MAX_POSITION_BITS = 48
"""Positions must be below ``2**MAX_POSITION_BITS``."""

GELU_RANGE = 8
"""GELU uses its table on ``[-GELU_RANGE, GELU_RANGE)``."""

_TABLE_BITS = 8  # table steps of 2**-8 (exp2 fraction, Phi)
_U_FRAC = 24     # fractional bits of z * log2(e) inside int_exp
_MAX_DIM = 4096


# ------------------------------------------------------------------------------------------
# Exact tables (computed once per process with Python integers / decimal)
# ------------------------------------------------------------------------------------------
_TABLES: dict[str, tp.Any] = {}


def _exp2_table() -> torch.Tensor:
    """``T[i] = floor(2**EXP_FRAC * 2**(i / 256))`` for ``i = 0..256``, int64 ``[257]``.

    ``floor(N ** (1/256))`` is eight nested integer square roots of ``N = 2**(256 * EXP_FRAC
    + i)`` (``isqrt(isqrt(n)) = floor(n ** (1/4))``), so the table is exact.
    """
    if "exp2" not in _TABLES:
        steps = 1 << _TABLE_BITS
        values = []
        for i in range(steps + 1):
            n = 1 << (steps * EXP_FRAC + i)
            for _ in range(_TABLE_BITS):
                n = math.isqrt(n)
            values.append(n)
        _TABLES["exp2"] = torch.tensor(values, dtype=torch.long)
    return _TABLES["exp2"]


def _decimal_context() -> decimal.Context:
    return decimal.Context(prec=90, rounding=decimal.ROUND_HALF_EVEN)


def _log2e_q30() -> int:
    """``round(2**30 * log2(e))`` (decimal ``ln``, correctly rounded)."""
    if "log2e" not in _TABLES:
        ctx = _decimal_context()
        value = ctx.divide(1 << 30, ctx.ln(decimal.Decimal(2)))
        _TABLES["log2e"] = int(ctx.to_integral_value(value))
    return _TABLES["log2e"]


def _phi_table() -> torch.Tensor:
    """Standard normal CDF ``Phi`` on ``[-8, 8]`` in steps of 1/256, scale ``2**30``:
    int64 ``[4097]``, entry ``i`` for ``x = i / 256 - 8``.

    ``Phi(x) = 1/2 + phi(x) * S(x)``, ``S(x) = sum_n x**(2n+1) / (2n+1)!!`` (positive terms),
    ``phi(x) = exp(-x**2 / 2) / sqrt(2 pi)``, evaluated on integers with 100 fractional bits
    for ``x >= 0``; ``exp(-x**2/2)`` for ``x = i/256`` by the recurrence
    ``E[i+1] = E[i] * q**(2i+1)``, ``q = exp(-1/131072)``; negative ``x`` by symmetry.
    """
    if "phi" not in _TABLES:
        frac = 100
        one = 1 << frac
        ctx = _decimal_context()
        scale = decimal.Decimal(one)
        q = int(ctx.multiply(ctx.exp(ctx.divide(-1, 131072)), scale))
        two_pi = ctx.multiply(2, _decimal_pi(ctx))
        inv_sqrt_2pi = int(ctx.multiply(ctx.divide(1, ctx.sqrt(two_pi)), scale))
        steps = 1 << _TABLE_BITS
        count = GELU_RANGE * steps  # positive half: x = i / 256, i = 0..count
        half = one >> 1
        gauss, q_pow, q_sq = one, q, (q * q) >> frac  # E[0] = 1, q**(2*0+1), q**2
        positive = []
        for i in range(count + 1):
            term = (i * one) // steps        # x
            total = term
            x2_num, n = i * i, 0             # x**2 = x2_num / steps**2
            while term:
                term = (term * x2_num) // (steps * steps * (2 * n + 3))
                total += term
                n += 1
            value = half + (((gauss * total) >> frac) * inv_sqrt_2pi >> frac)
            positive.append((value + (1 << (frac - EXP_FRAC - 1))) >> (frac - EXP_FRAC))
            gauss = (gauss * q_pow) >> frac
            q_pow = (q_pow * q_sq) >> frac
        full = [(1 << EXP_FRAC) - v for v in reversed(positive[1:])] + positive
        _TABLES["phi"] = torch.tensor(full, dtype=torch.long)
    return _TABLES["phi"]


def _decimal_pi(ctx: decimal.Context) -> decimal.Decimal:
    """pi to ``ctx.prec`` digits by Machin's formula (exact decimal operations only)."""
    def arctan_inv(n: int) -> decimal.Decimal:
        x = ctx.divide(1, n)
        x2 = ctx.multiply(x, x)
        total, power, k = x, x, 1
        eps = ctx.power(10, -(ctx.prec + 2))
        while True:
            power = ctx.multiply(power, x2)
            term = ctx.divide(power, 2 * k + 1)
            if term < eps:
                return total
            total = ctx.subtract(total, term) if k % 2 else ctx.add(total, term)
            k += 1

    return ctx.subtract(ctx.multiply(16, arctan_inv(5)), ctx.multiply(4, arctan_inv(239)))


def _rotation_tables(dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of ``2**b * w_j`` (``b < MAX_POSITION_BITS``, ``j < dim/2``) at scale
    ``2**ROT_FRAC``: two int64 ``[MAX_POSITION_BITS, dim/2]``."""
    key = f"rot:{dim}:{max_period!r}"
    if key not in _TABLES:
        half = dim // 2
        ctx = _decimal_context()
        frac = 200
        scale = decimal.Decimal(1 << frac)
        ratio = Fraction(max_period)
        log_period = ctx.ln(ctx.divide(ratio.numerator, ratio.denominator))
        eps = ctx.power(10, -(ctx.prec + 2))
        cos_rows: list[list[int]] = [[] for _ in range(MAX_POSITION_BITS)]
        sin_rows: list[list[int]] = [[] for _ in range(MAX_POSITION_BITS)]
        for j in range(half):
            omega = ctx.exp(ctx.divide(ctx.multiply(-j, log_period), half - 1))
            c, s = _decimal_cos_sin(omega, ctx, eps)
            ci, si = int(ctx.multiply(c, scale)), int(ctx.multiply(s, scale))
            for b in range(MAX_POSITION_BITS):
                cos_rows[b].append((ci + (1 << (frac - ROT_FRAC - 1))) >> (frac - ROT_FRAC))
                sin_rows[b].append((si + (1 << (frac - ROT_FRAC - 1))) >> (frac - ROT_FRAC))
                ci, si = (ci * ci - si * si) >> frac, (2 * ci * si) >> frac  # angle doubling
        _TABLES[key] = (torch.tensor(cos_rows, dtype=torch.long), torch.tensor(sin_rows, dtype=torch.long))
    return _TABLES[key]


def _decimal_cos_sin(x: decimal.Decimal, ctx: decimal.Context, eps: decimal.Decimal
                     ) -> tuple[decimal.Decimal, decimal.Decimal]:
    """Taylor series of cos and sin for ``|x| <= 1`` in decimal arithmetic (every operation
    through ``ctx``, never the thread's current decimal context)."""
    x2 = ctx.multiply(x, x)
    cos, sin = decimal.Decimal(1), x
    term_c, term_s, k = decimal.Decimal(1), x, 1
    while True:
        term_c = ctx.divide(ctx.multiply(ctx.minus(term_c), x2), (2 * k - 1) * (2 * k))
        term_s = ctx.divide(ctx.multiply(ctx.minus(term_s), x2), (2 * k) * (2 * k + 1))
        if ctx.compare_total_mag(term_c, eps) < 0 and ctx.compare_total_mag(term_s, eps) < 0:
            return cos, sin
        cos, sin = ctx.add(cos, term_c), ctx.add(sin, term_s)
        k += 1


@contextlib.contextmanager
def one_thread() -> tp.Iterator[None]:
    """Run the block with one intra-op thread, then restore the previous count.

    The integer model's results do not depend on the thread count, and its many small
    operations run fastest on one thread: a second one only adds synchronisation (on the
    2-core development machine, decoding took 1.7x as long with 2 threads as with 1).
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# Integer operations
# ------------------------------------------------------------------------------------------
def _round_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``round(x / 2**shift)`` (halves up) for ``shift >= 0``."""
    if shift <= 0:
        return x if shift == 0 else x << -shift
    return (x + (1 << (shift - 1))) >> shift


def _round_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``round(a / b)`` (halves up) for positive ``b`` (broadcast)."""
    return torch.div(2 * a + b, 2 * b, rounding_mode="floor")


def _clamp(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(-ACT_LIMIT, ACT_LIMIT)


def int_exp(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` for ``z <= 0``.

    Args:
        z: int64, any shape, at scale ``2**ACT_FRAC``; values below ``-EXP_MIN`` count as it.
    Returns:
        int64, same shape, at scale ``2**EXP_FRAC`` (``int_exp(0) = 2**EXP_FRAC``).
    """
    table = _exp2_table()
    z = z.clamp(min=-(EXP_MIN << ACT_FRAC))
    u = _round_shift(z * _log2e_q30(), 30 + ACT_FRAC - _U_FRAC)  # z * log2(e) at 2**_U_FRAC, <= 0
    n = u >> _U_FRAC                                  # integer part (floor), >= -93
    f = u - (n << _U_FRAC)                            # fraction in [0, 2**_U_FRAC)
    low = _U_FRAC - _TABLE_BITS
    idx = f >> low
    r = f & ((1 << low) - 1)
    t0 = table[idx]
    val = t0 + (((table[idx + 1] - t0) * r) >> low)   # 2**(f) at scale 2**EXP_FRAC
    return val >> (-n).clamp(max=62)


def int_gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU ``x * Phi(x)`` on int64 activations at scale ``2**ACT_FRAC`` (any shape)."""
    table = _phi_table()
    lim = GELU_RANGE << ACT_FRAC
    pos = (x + lim).clamp(0, 2 * lim - 1)
    low = ACT_FRAC - _TABLE_BITS
    idx = pos >> low
    r = pos & ((1 << low) - 1)
    t0 = table[idx]
    phi = t0 + (((table[idx + 1] - t0) * r) >> low)
    out = _round_shift(x * phi, EXP_FRAC)
    out = torch.where(x >= lim, x, out)
    return torch.where(x < -lim, torch.zeros_like(x), out)


def _isqrt_rows(v: torch.Tensor) -> torch.Tensor:
    """Exact integer square root (floor) of each non-negative int64 entry, with Python's
    :func:`math.isqrt` (the LayerNorm calls it on one value per row)."""
    flat = v.reshape(-1).tolist()
    return torch.tensor([math.isqrt(n) for n in flat], dtype=torch.long).view(v.shape)


def _layer_norm(x: torch.Tensor, p: "_NormParams") -> torch.Tensor:
    """LayerNorm over the last axis (``C``) of int64 activations (see the module doc)."""
    C = x.shape[-1]
    mean = torch.div(2 * x.sum(-1, keepdim=True) + C, 2 * C, rounding_mode="floor")
    d = x - mean
    var = torch.div((d * d).sum(-1, keepdim=True), C, rounding_mode="floor")
    std = _isqrt_rows((var + p.eps) << (2 * LN_EXTRA))
    y = _round_div(d << (ACT_FRAC + LN_EXTRA), std)
    return _clamp(_round_shift(y * p.weight, p.shift) + p.bias)


_F64_TERMS = 1 << (53 - ACT_LIMIT.bit_length() + 1 - WEIGHT_BITS)
"""Most terms of a dot product of activations by weights that float64 sums exactly (1024)."""

_SPLIT_BITS = 12
"""Longer products split the activations as ``hi * 2**12 + lo`` (each part exact in float64)."""


def _exact_f64_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for integer-valued float64 tensors whose exact result and every partial sum
    are integers below ``2**53`` in magnitude, converted back to int64.

    Such a product is exact in IEEE float64 whatever the order of the additions, the
    blocking, the use of fused multiply-adds or the number of threads (every intermediate
    value is an integer that float64 represents exactly), so BLAS gives the same integers
    as int64 arithmetic, on every machine, several times faster.
    """
    if a.dim() == 2 and a.shape[0] == 1 and b.dim() == 2:
        return torch.mv(b.t(), a[0]).unsqueeze(0).long()
    return (a @ b).long()


def _matmul_t(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for int64 ``x [N, in]`` (``|x| <= ACT_LIMIT``) and integer ``w [out, in]``
    (``|w| <= 2**WEIGHT_BITS``; float64, as converted models hold it, or int64), exact.

    Computed in float64: with at most :data:`_F64_TERMS` terms every partial sum stays below
    ``2**53``; longer rows are split into ``hi * 2**12 + lo`` (``0 <= lo < 2**12``,
    ``|hi| <= 2**12``), two exact products.
    """
    wt = w.to(torch.float64).t()
    if x.shape[-1] <= _F64_TERMS:
        return _exact_f64_matmul(x.double(), wt)
    hi = x >> _SPLIT_BITS
    lo = x - (hi << _SPLIT_BITS)
    return (_exact_f64_matmul(hi.double(), wt) << _SPLIT_BITS) + _exact_f64_matmul(lo.double(), wt)


def _linear(x: torch.Tensor, p: "_LinearParams") -> torch.Tensor:
    """``x [..., in] -> [..., out]``: exact product, rounded rescale, bias, clamp."""
    shape = x.shape
    acc = _matmul_t(x.reshape(-1, shape[-1]), p.weight)
    acc += 1 << (p.shift - 1)   # shift >= 1 (checked at conversion): round half up
    acc >>= p.shift
    acc += p.bias
    return _clamp(acc).view(*shape[:-1], -1)


def logits_to_cdf(logits: torch.Tensor, total_bits: int = CDF_BITS, min_freq: int = MIN_FREQ
                  ) -> torch.Tensor:
    """Integer CDF of a softmax over the last axis.

    Args:
        logits: int64 ``[..., N]`` at scale ``2**ACT_FRAC``.
        total_bits: the CDF ends at exactly ``2**total_bits``.
        min_freq: smallest frequency of a bin.
    Returns:
        int64 ``[..., N]``, strictly increasing, ``cdf[..., -1] == 2**total_bits``; bin ``i``
        has frequency ``cdf[i] - cdf[i-1] >= min_freq``.
    """
    n = logits.shape[-1]
    total = 1 << total_bits
    spread = total - min_freq * n
    if spread <= 0:
        raise ValueError(f"{n} bins need more than {total_bits} total bits")
    top = logits.amax(-1, keepdim=True)
    e = int_exp(logits - top)                         # <= 2**EXP_FRAC, max bin exactly that
    freq = torch.div(e * spread, e.sum(-1, keepdim=True), rounding_mode="floor") + min_freq
    rest = total - freq.sum(-1, keepdim=True)          # in [0, N)
    freq.scatter_add_(-1, logits.argmax(-1, keepdim=True), rest)
    return freq.cumsum(-1)


def cdf_to_probs(cdf: torch.Tensor) -> torch.Tensor:
    """Probabilities (float64 ``[..., N]``) that an integer CDF ``[..., N]`` codes with."""
    freq = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))
    return freq.double() / cdf[..., -1:].double()


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _LinearParams:
    weight: torch.Tensor  # integers [out, in], |w| <= 2**WEIGHT_BITS (float64 when converted)
    shift: int            # w_int = round(w * 2**shift)
    bias: torch.Tensor    # int64 [out] at 2**ACT_FRAC


@dataclasses.dataclass(frozen=True)
class _NormParams:
    weight: torch.Tensor  # int64 [C] gamma
    shift: int
    bias: torch.Tensor    # int64 [C] beta at 2**ACT_FRAC
    eps: int              # round(eps * 2**(2 ACT_FRAC))


@dataclasses.dataclass(frozen=True)
class _LayerParams:
    in_proj: _LinearParams
    out_proj: _LinearParams
    linear1: _LinearParams
    linear2: _LinearParams
    norm1: _NormParams
    norm2: _NormParams


@dataclasses.dataclass
class FixedLMState:
    """Streaming state of :class:`FixedLM`.

    Attributes:
        keys, values: per layer, ``[B, heads, L, head_dim]``: the keys and values of the
            last ``L <= past_context`` steps (initially the one zero "past" input, as in
            :class:`~opencodec.entropy.EntropyLM`); integers held as float64 (exact: at most
            ``ACT_LIMIT``), the type the attention's products take.
        offset: steps already processed (the next step's position).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    offset: int = 0


def _weight_shift(w: torch.Tensor, name: str) -> int:
    """Largest ``s`` with ``max|w| * 2**s < 2**WEIGHT_BITS`` (exact: frexp), at most 40."""
    top = float(w.detach().abs().max()) if w.numel() else 0.0
    if not math.isfinite(top):
        raise ModelLoadError(f"entropy model tensor {name} has non-finite values")
    if top == 0.0:
        return 40
    _, exponent = math.frexp(top)  # top < 2**exponent
    shift = min(WEIGHT_BITS - exponent, 40)
    if shift < 1:
        raise ModelLoadError(f"entropy model tensor {name}: values up to {top:g} are beyond the "
                             f"fixed-point range (|w| < {2 ** (WEIGHT_BITS - 1)})")
    return shift


def _to_int(w: torch.Tensor, shift: int) -> torch.Tensor:
    """``round(w * 2**shift)`` (half to even; exact in float64 for float32 ``w``)."""
    return torch.round(w.detach().to("cpu", torch.float64) * float(2 ** shift)).long()


def _act_tensor(w: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor at the activation scale (biases, betas, embeddings); must fit ``ACT_LIMIT``."""
    out = _to_int(w, ACT_FRAC)
    if out.numel() and int(out.abs().max()) > ACT_LIMIT:
        raise ModelLoadError(f"entropy model tensor {name}: values beyond +-"
                             f"{ACT_LIMIT >> ACT_FRAC} do not fit the fixed-point range")
    return out


def _linear_params(weight: torch.Tensor, bias: torch.Tensor, name: str) -> _LinearParams:
    shift = _weight_shift(weight, name + ".weight")
    # The integers held once, as float64 (exact: |w| <= 2**19), the type the products use.
    return _LinearParams(_to_int(weight, shift).double(), shift, _act_tensor(bias, name + ".bias"))


def _norm_params(norm: torch.nn.LayerNorm, name: str) -> _NormParams:
    shift = _weight_shift(norm.weight, name + ".weight")
    eps = int(round(Fraction(float(norm.eps)) * (1 << (2 * ACT_FRAC))))
    return _NormParams(_to_int(norm.weight, shift), shift, _act_tensor(norm.bias, name + ".bias"),
                       max(eps, 1))


class FixedLM:
    """Integer-only twin of an :class:`~opencodec.entropy.EntropyLM` (build it with
    :meth:`from_float` or :func:`fixed_lm_for`).

    Attributes:
        n_q, card, dim, num_heads, num_layers, hidden, past_context, max_period: the sizes.
        weights_hash: 16 hex digits identifying the integer weights and the scheme.
        name: optional name of the entropy model (stored in file headers; not hashed).
    """

    def __init__(self, *, n_q: int, card: int, dim: int, num_heads: int, past_context: int,
                 max_period: float, embeddings: torch.Tensor, norm_in: _NormParams,
                 layers: list[_LayerParams], heads: _LinearParams, name: str | None = None) -> None:
        self.n_q, self.card, self.dim, self.num_heads = n_q, card, dim, num_heads
        self.head_dim = dim // num_heads
        self.num_layers = len(layers)
        self.hidden = int(layers[0].linear1.weight.shape[0]) if layers else 0
        self.past_context = past_context
        self.max_period = max_period
        self.name = name
        self._emb = embeddings            # [n_q * (card + 1), dim]
        self._emb_offsets = torch.arange(n_q) * (card + 1)
        self._norm_in = norm_in
        self._layers = layers
        self._heads = heads               # weight [n_q * card, dim]
        self._q_scale = math.isqrt((1 << 60) // self.head_dim)   # 2**30 / sqrt(head_dim)
        self._rot_cos, self._rot_sin = _rotation_tables(dim, max_period)
        self._pos_cache: dict[int, torch.Tensor] = {}
        self.weights_hash = self._hash()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_float(cls, lm: "EntropyLM", name: str | None = None) -> "FixedLM":
        """Convert a float :class:`~opencodec.entropy.EntropyLM` (exact, deterministic).

        Raises:
            ModelLoadError: sizes or weight values outside the fixed-point ranges.
        """
        tr = lm.transformer
        layers = list(tr.layers)
        num_heads = layers[0].self_attn.num_heads if layers else 1
        hidden = layers[0].linear1.out_features if layers else 0
        sizes = dict(n_q=lm.n_q, card=lm.card, dim=lm.dim, hidden=hidden, heads=num_heads,
                     past_context=tr.past_context)
        limits = dict(n_q=64, card=1 << 20, dim=_MAX_DIM, hidden=_MAX_DIM, heads=lm.dim,
                      past_context=(1 << 16) - 1)
        bad = [f"{k}={v} (at most {limits[k]})" for k, v in sizes.items() if not 1 <= v <= limits[k]]
        if lm.dim % 2 or lm.dim < 4:
            bad.append(f"dim={lm.dim} (must be even and >= 4)")
        if bad:
            raise ModelLoadError("entropy model sizes outside the fixed-point limits: " + ", ".join(bad))
        float_period = float(tr.max_period)
        if not math.isfinite(float_period) or float_period <= 0:
            raise ModelLoadError(f"entropy model max_period must be finite and > 0, got {float_period}")
        with torch.no_grad():
            emb = torch.cat([e.weight for e in lm.emb], dim=0)
            embeddings = _act_tensor(emb, "emb")
            head_w = torch.cat([lin.weight for lin in lm.linears], dim=0)
            head_b = torch.cat([lin.bias for lin in lm.linears], dim=0)
            heads = _linear_params(head_w, head_b, "linears")
            norm_in = _norm_params(tr.norm_in, "transformer.norm_in")
            converted = []
            for i, layer in enumerate(layers):
                pre = f"transformer.layers.{i}"
                attn = layer.self_attn
                converted.append(_LayerParams(
                    in_proj=_linear_params(attn.in_proj_weight, attn.in_proj_bias, pre + ".self_attn.in_proj"),
                    out_proj=_linear_params(attn.out_proj.weight, attn.out_proj.bias,
                                            pre + ".self_attn.out_proj"),
                    linear1=_linear_params(layer.linear1.weight, layer.linear1.bias, pre + ".linear1"),
                    linear2=_linear_params(layer.linear2.weight, layer.linear2.bias, pre + ".linear2"),
                    norm1=_norm_params(layer.norm1, pre + ".norm1"),
                    norm2=_norm_params(layer.norm2, pre + ".norm2")))
        return cls(n_q=lm.n_q, card=lm.card, dim=lm.dim, num_heads=num_heads,
                   past_context=tr.past_context, max_period=float_period, embeddings=embeddings,
                   norm_in=norm_in, layers=converted, heads=heads, name=name)

    def _named_tensors(self) -> tp.Iterator[tuple[str, int, torch.Tensor]]:
        yield "emb", ACT_FRAC, self._emb
        yield f"norm_in.weight.eps={self._norm_in.eps}", self._norm_in.shift, self._norm_in.weight
        yield "norm_in.bias", ACT_FRAC, self._norm_in.bias
        for i, layer in enumerate(self._layers):
            for label in ("in_proj", "out_proj", "linear1", "linear2"):
                lin: _LinearParams = getattr(layer, label)
                yield f"{i}.{label}.weight", lin.shift, lin.weight
                yield f"{i}.{label}.bias", ACT_FRAC, lin.bias
            for label in ("norm1", "norm2"):
                norm: _NormParams = getattr(layer, label)
                yield f"{i}.{label}.weight.eps={norm.eps}", norm.shift, norm.weight
                yield f"{i}.{label}.bias", ACT_FRAC, norm.bias
        yield "heads.weight", self._heads.shift, self._heads.weight
        yield "heads.bias", ACT_FRAC, self._heads.bias

    def _hash(self) -> str:
        """SHA-256 of the scheme, the sizes and the integer tensors (int32 little-endian)."""
        digest = hashlib.sha256()
        meta = dict(scheme=SCHEME, n_q=self.n_q, card=self.card, dim=self.dim, heads=self.num_heads,
                    layers=self.num_layers, hidden=self.hidden, past_context=self.past_context,
                    max_period=repr(self.max_period))
        digest.update(b"opencodec-fixed-lm\0" + json.dumps(meta, sort_keys=True).encode())
        for name, shift, tensor in self._named_tensors():
            digest.update(f"\0{name}:{list(tensor.shape)}:{shift}\0".encode())
            digest.update(tensor.to(torch.int32).numpy().astype("<i4").tobytes())
        return digest.hexdigest()[:16]

    # -- inference ---------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> FixedLMState:
        """State before the first step: per layer the keys/values of one zero input."""
        keys, values = [], []
        for layer in self._layers:
            kv = _clamp(layer.in_proj.bias[self.dim:].clone()).view(2, self.num_heads, 1, self.head_dim)
            keys.append(kv[0].expand(batch, -1, -1, -1).double())
            values.append(kv[1].expand(batch, -1, -1, -1).double())
        return FixedLMState(keys, values, 0)

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Integer sinusoidal embedding: int64 positions ``[T]`` -> int64 ``[T, dim]`` at
        scale ``2**ACT_FRAC`` (cosines then sines, as :func:`~opencodec.entropy.sin_embedding`)."""
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >> MAX_POSITION_BITS):
            raise ValueError(f"positions must be in [0, 2**{MAX_POSITION_BITS})")
        T, half = positions.shape[0], self.dim // 2
        c = torch.full((T, half), 1 << ROT_FRAC, dtype=torch.long)
        s = torch.zeros(T, half, dtype=torch.long)
        top = int(positions.max()).bit_length() if T else 0
        for b in range(top):
            mask = ((positions >> b) & 1).bool().view(-1, 1)
            if not bool(mask.any()):
                continue
            cb, sb = self._rot_cos[b], self._rot_sin[b]
            nc = _round_shift(c * cb - s * sb, ROT_FRAC)
            ns = _round_shift(c * sb + s * cb, ROT_FRAC)
            c = torch.where(mask, nc, c)
            s = torch.where(mask, ns, s)
        return _round_shift(torch.cat([c, s], dim=1), ROT_FRAC - ACT_FRAC)

    def _positions_from(self, offset: int, count: int) -> torch.Tensor:
        """:meth:`positions` of ``offset .. offset + count - 1``, from a cache of blocks of
        256 positions (a pure function of the position, so caching changes nothing)."""
        if offset < 0 or (offset + count) >> MAX_POSITION_BITS:
            raise ValueError(f"positions must be in [0, 2**{MAX_POSITION_BITS})")
        if count == 0:
            return torch.zeros(0, self.dim, dtype=torch.long)
        parts = []
        pos = offset
        while pos < offset + count:
            block = pos >> 8
            table = self._pos_cache.get(block)
            if table is None:
                table = self.positions(torch.arange(block << 8, (block + 1) << 8))
                if len(self._pos_cache) >= 8:
                    self._pos_cache.pop(next(iter(self._pos_cache)))
                self._pos_cache[block] = table
            stop = min(offset + count, (block + 1) << 8)
            parts.append(table[pos - (block << 8):stop - (block << 8)])
            pos = stop
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _attention(self, x: torch.Tensor, layer: _LayerParams, keys: torch.Tensor,
                   values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention of ``x [B, T, C]`` over the cached ``[B, H, L, hd]`` and itself.
        Returns the output ``[B, T, C]`` and the new (trimmed) keys and values."""
        B, T, C = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = _linear(x, layer.in_proj).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        q = _round_shift(qkv[0] * self._q_scale, 30)
        all_k = torch.cat([keys, qkv[1].double()], dim=2)   # exact integers, as float64
        all_v = torch.cat([values, qkv[2].double()], dim=2)
        L = keys.shape[2]
        # Exact in float64 (see _exact_f64_matmul): |q| <= 2**24 / sqrt(hd), |k| <= 2**24, so
        # every partial sum of hd terms is below sqrt(hd) * 2**48 <= 2**53 (hd <= 1024).
        scores = _round_shift(_exact_f64_matmul(q.double(), all_k.transpose(-1, -2)),
                              ACT_FRAC)                                        # [B, H, T, L + T]
        blocked = None
        if T > 1:  # one new step (L <= past_context) sees every cached key: no mask needed
            delta = (torch.arange(L, L + T).view(-1, 1) - torch.arange(L + T).view(1, -1))
            blocked = (delta < 0) | (delta > self.past_context)
            scores = scores.masked_fill(blocked, -(1 << 62))
        z = scores - scores.amax(-1, keepdim=True)
        e = int_exp(z)
        if blocked is not None:
            e = e.masked_fill(blocked, 0)
        p = torch.div(e << ATTN_FRAC, e.sum(-1, keepdim=True), rounding_mode="floor")
        # Exact in float64: p >= 0 with sum(p) <= 2**20 and |v| <= 2**24 bound every partial
        # sum by 2**44.
        out = _round_shift(_exact_f64_matmul(p.double(), all_v), ATTN_FRAC)  # [B, H, T, hd]
        out = out.transpose(1, 2).reshape(B, T, C)
        keep = self.past_context
        return _linear(out, layer.out_proj), all_k[:, :, -keep:], all_v[:, :, -keep:]

    def forward(self, indices: torch.Tensor, state: FixedLMState | None = None
                ) -> tuple[torch.Tensor, FixedLMState]:
        """Run ``T`` steps at once.

        Args:
            indices: long ``[B, K, T]``: ``1 + code`` of the previous frame (0 at t = 0),
                ``K <= n_q``.
            state: from the previous call, or None to start.
        Returns:
            ``(logits, state)``: int64 logits ``[B, K, T, card]`` at scale ``2**ACT_FRAC``
            (:func:`logits_to_cdf` turns them into CDFs) and the new state.
        """
        B, K, T = indices.shape
        if K > self.n_q:
            raise ValueError(f"{K} codebooks given, the entropy model has {self.n_q}")
        indices = indices.to("cpu", torch.long)
        if T and (int(indices.min()) < 0 or int(indices.max()) > self.card):
            raise ValueError(f"indices must be in [0, {self.card}]")
        if state is None:
            state = self.initial_state(B)
        rows = self._emb.index_select(0, (indices + self._emb_offsets[:K].view(1, K, 1)).reshape(-1))
        x = _clamp(rows.view(B, K, T, self.dim).sum(1))                       # [B, T, C]
        pos = self._positions_from(state.offset, T)
        x = _clamp(_layer_norm(x, self._norm_in) + pos)
        new_keys, new_values = [], []
        for layer, keys, values in zip(self._layers, state.keys, state.values):
            attn, k, v = self._attention(x, layer, keys, values)
            new_keys.append(k)
            new_values.append(v)
            x = _layer_norm(_clamp(x + attn), layer.norm1)
            ff = _linear(int_gelu(_linear(x, layer.linear1)), layer.linear2)
            x = _layer_norm(_clamp(x + ff), layer.norm2)
        heads = self._heads
        sub = _LinearParams(heads.weight[:K * self.card], heads.shift, heads.bias[:K * self.card])
        logits = _linear(x, sub).view(B, T, K, self.card).transpose(1, 2)
        return logits, FixedLMState(new_keys, new_values, state.offset + T)

    def __call__(self, indices: torch.Tensor, state: FixedLMState | None = None
                 ) -> tuple[torch.Tensor, FixedLMState]:
        return self.forward(indices, state)

    def step(self, indices: torch.Tensor, state: FixedLMState | None = None
             ) -> tuple[torch.Tensor, FixedLMState]:
        """One step, returning CDFs.

        Args:
            indices: long ``[K]`` or ``[B, K]``: ``1 + code`` of the previous frame (0 at t=0).
            state: previous state or None.
        Returns:
            ``(cdf, state)``: int64 ``[K, card]`` (or ``[B, K, card]``) CDFs ending at
            ``2**CDF_BITS``, and the new state.
        """
        squeeze = indices.dim() == 1
        idx = indices.view(1, -1, 1) if squeeze else indices.unsqueeze(-1)
        logits, state = self.forward(idx, state)
        cdf = logits_to_cdf(logits[:, :, 0])
        return (cdf[0] if squeeze else cdf), state

    def iter_cdfs(self, codes: torch.Tensor, block: int = 32) -> tp.Iterator[tuple[int, torch.Tensor]]:
        """CDFs of every frame of a known segment, ``block`` frames per forward pass.

        Args:
            codes: long ``[K, F]``.
            block: frames per pass (any value gives the same CDFs).
        Yields:
            ``(start, cdfs)`` with int64 ``cdfs [T, K, card]``: the CDFs that frames
            ``start .. start + T - 1`` are coded with (identical to :meth:`step`).
        """
        K, F = codes.shape
        inputs = torch.cat([torch.zeros(K, 1, dtype=torch.long), codes.to("cpu", torch.long) + 1], dim=1)
        state = None
        for start in range(0, F, block):
            stop = min(F, start + block)
            logits, state = self.forward(inputs[None, :, start:stop], state)
            yield start, logits_to_cdf(logits[0]).transpose(0, 1)

    def cdfs(self, codes: torch.Tensor, block: int = 32) -> torch.Tensor:
        """All CDFs of a known segment at once: int64 ``[F, K, card]`` for codes ``[K, F]``
        (see :meth:`iter_cdfs`; memory grows with ``F``)."""
        parts = [cdf for _, cdf in self.iter_cdfs(codes, block)]
        if not parts:
            return torch.zeros(0, codes.shape[0], self.card, dtype=torch.long)
        return torch.cat(parts, dim=0)


_CACHE: "weakref.WeakKeyDictionary[EntropyLM, tuple[tuple[tp.Any, ...], FixedLM]]" = weakref.WeakKeyDictionary()


def fixed_lm_for(lm: "EntropyLM | FixedLM", name: str | None = None) -> FixedLM:
    """The :class:`FixedLM` of ``lm`` (converted once per float model and kept while its
    weights are unchanged); a ``FixedLM`` is returned as is. ``name`` is set when given."""
    if isinstance(lm, FixedLM):
        if name is not None:
            lm.name = name
        return lm
    from .lm import EntropyLM

    if not isinstance(lm, EntropyLM):
        raise TypeError(f"expected an EntropyLM or FixedLM, got {type(lm).__name__}")
    key = tuple((p.data_ptr(), p._version) for p in lm.parameters())
    hit = _CACHE.get(lm)
    if hit is None or hit[0] != key:
        hit = (key, FixedLM.from_float(lm))
        _CACHE[lm] = hit
    if name is not None:
        hit[1].name = name
    return hit[1]
