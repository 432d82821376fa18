"""Parameters of the integer entropy model and their exact conversion from float tensors:
power-of-two weight shifts, rounding to integers, and the range checks of the fixed-point scheme
(:mod:`opencodec.entropy.fixed_scheme`)."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import torch

from ..errors import ModelLoadError
from .fixed_scheme import ACT_FRAC, ACT_LIMIT, WEIGHT_BITS


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
    top = float(w.detach().abs().max()) if w.numel() else 0.0
    if not math.isfinite(top):  # (the int64 conversion would give NaN an arbitrary, machine-dependent value)
        raise ModelLoadError(f"entropy model tensor {name} has non-finite values")
    # huge values are refused before the conversion, which would overflow int64 (and pass the check)
    out = _to_int(w, ACT_FRAC) if top <= ACT_LIMIT else None
    if out is None or (out.numel() and int(out.abs().max()) > ACT_LIMIT):
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
