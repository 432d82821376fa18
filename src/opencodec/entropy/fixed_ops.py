"""Integer kernels of the fixed-point scheme (:mod:`opencodec.entropy.fixed_scheme`): rounding
shifts and divisions, the activation clamp, ``exp`` and GELU from the exact tables, exact integer
square roots, products of integers in float64, and the integer CDF of a softmax."""

from __future__ import annotations

import math

import torch

from .fixed_scheme import (_TABLE_BITS, _U_FRAC, ACT_FRAC, ACT_LIMIT, CDF_BITS, EXP_FRAC, EXP_MIN,
                           GELU_RANGE, MIN_FREQ, _exp2_table, _log2e_q30, _phi_table)


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


