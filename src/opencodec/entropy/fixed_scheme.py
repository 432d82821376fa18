"""The fixed-point scheme of the integer entropy model: its version, scales and limits, and the
exact tables its non-linear functions use.

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
"""

from __future__ import annotations

import decimal
import math
import typing as tp
from fractions import Fraction

import torch

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

# The sizes FixedLM.from_float accepts (the overflow bounds above assume them); train-lm checks
# a run's against them before it starts.
MAX_N_Q = 64
"""Most codebooks an entropy model predicts (``n_q``)."""

MAX_CARD = 1 << 20
"""Most entries per codebook (``card``, the codec's ``bins``)."""

MAX_PAST_CONTEXT = (1 << 16) - 1
"""Longest attention window, in frames (``past_context``)."""


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
