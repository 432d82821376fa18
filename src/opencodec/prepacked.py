"""Products with a fixed weight, the weight reordered once for oneDNN (CPU, float32).

``torch.addmm(bias, x, w)`` with a few rows ``x`` [M, K] (2 <= M <= ~32) and a large weight
``w`` [K, N] (megabytes: EnCodec's LSTM gates, its 512-channel convolutions) reads the weight
far slower than a one-row product does (our reading: MKL's small-M path packs the weight as it
goes; not confirmed in its source). Reordering the weight once into oneDNN's layout
(``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile`` does with frozen weights)
and multiplying with ``_linear_pointwise`` is faster from 3 rows on. ``benchmarks/
prepacked_products.py`` (4 MiB weights cycling through 64 MiB, one thread; docs/BENCHMARKS.md)
measured per product: 1 row 166 us either way, 4 rows 572-597 us with ``addmm`` against
483-493 us prepacked, 8 rows 824 against 561 us, 16 rows 879 against 656 us; but 2 rows 428-456
against 476-489 us, slower prepacked (two rows still go prepacked; see docs/BENCHMARKS.md).
One row (a matrix-vector product) stays on ``addmm``: the table's 1-row column is ``addmm`` in
both, and oneDNN's product of one row was slower in hand measurements (224 against 172 us).

The two kernels sum in different orders: their results differ by float rounding
(~1e-7 relative, measured in tests/test_prepacked.py), which is why only the fast streaming
path (:mod:`opencodec.step_fast`) uses this, never the bit-exact one.
"""

from __future__ import annotations

import torch

__all__ = ["PrepackedWeight", "prepacking_available"]

# Weights up to 2 MiB of float32 (a core's L2 cache on the CPU this was measured on) stay
# plain: they are often still in cache, where the plain product was as fast or faster.
MIN_ELEMENTS = (1 << 19) + 1


def prepacking_available(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (float32 on the CPU) can use oneDNN's prepacked products here."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PrepackedWeight:
    """A weight ``w`` [K, N] for products ``x @ w`` (+ bias), prepacked when large.

    Args:
        weight: [K, N], the right-hand factor of every product.
        min_elements: weights smaller than this stay plain (``addmm`` only).
    """

    def __init__(self, weight: torch.Tensor, min_elements: int = MIN_ELEMENTS):
        self.weight = weight
        self.packed: torch.Tensor | None = None
        if weight.numel() >= min_elements and prepacking_available(weight):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), None)
            except RuntimeError:  # a build whose oneDNN refuses the reorder: plain products
                self.packed = None

    def _use_packed(self, rows: torch.Tensor) -> bool:
        return (self.packed is not None and rows.shape[0] > 1 and rows.dtype == torch.float32
                and not torch.is_grad_enabled())

    def addmm(self, bias: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """``bias + rows @ w``: rows [M, K], bias [N] or None -> [M, N]."""
        if self._use_packed(rows):
            return torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, bias, "none", [], "")
        return torch.mm(rows, self.weight) if bias is None else torch.addmm(bias, rows, self.weight)

    def addmm_matrix(self, other: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``other + rows @ w`` for a full [M, N] ``other`` (an LSTM's input gates)."""
        if self._use_packed(rows):
            out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed, None, "none", [], "")
            return out.add_(other)
        return torch.addmm(other, rows, self.weight)
