"""Products through weights prepacked for oneDNN (opencodec.prepacked) against addmm."""

from __future__ import annotations

import pytest
import torch

from opencodec.prepacked import MIN_ELEMENTS, PrepackedWeight, prepacking_available

needs_packing = pytest.mark.skipif(not prepacking_available(torch.zeros(1)),
                                   reason="this PyTorch build has no oneDNN prepacked products")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@needs_packing
@pytest.mark.parametrize("rows", [2, 4, 6, 17, 48])
def test_several_rows_match_addmm(rows: int) -> None:
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(512, 2048, generator=gen) / 512 ** 0.5
    bias, x = torch.randn(2048, generator=gen), torch.randn(rows, 512, generator=gen)
    other = torch.randn(rows, 2048, generator=gen)
    pw = PrepackedWeight(weight)
    assert pw.packed is not None
    with torch.inference_mode():
        ref64 = x.double() @ weight.double()
        got = pw.addmm(bias, x)
        assert got.shape == (rows, 2048)
        # rounding-level, like addmm's own distance from float64
        assert _rel(got, ref64 + bias.double()) < 2e-6
        assert _rel(pw.addmm(None, x), ref64) < 2e-6
        assert _rel(pw.addmm_matrix(other, x), ref64 + other.double()) < 2e-6
        # a non-contiguous left factor (a strided view) gives the same rows
        wide = torch.randn(rows, 1024, generator=gen)
        assert torch.allclose(pw.addmm(bias, wide[:, ::2]), pw.addmm(bias, wide[:, ::2].contiguous()))


def test_one_row_and_small_weights_stay_on_addmm() -> None:
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(512, 2048, generator=gen), torch.randn(2048, generator=gen)
    x = torch.randn(1, 512, generator=gen)
    with torch.inference_mode():
        assert torch.equal(PrepackedWeight(weight).addmm(bias, x), torch.addmm(bias, x, weight))
        small = torch.randn(256, 256, generator=gen)
        pw = PrepackedWeight(small)
        assert pw.packed is None and small.numel() < MIN_ELEMENTS
        rows = torch.randn(8, 256, generator=gen)
        assert torch.equal(pw.addmm(None, rows), rows @ small)


def test_autograd_uses_plain_products() -> None:
    """With gradients on, the plain product (oneDNN's prepacked op has no backward)."""
    weight = torch.randn(512, 2048)
    x = torch.randn(4, 512, requires_grad=True)
    out = PrepackedWeight(weight).addmm(None, x)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, weight.sum(1).expand(4, -1), rtol=1e-4, atol=1e-3)


def test_other_dtypes_are_not_packed() -> None:
    assert PrepackedWeight(torch.randn(1024, 1024, dtype=torch.float64)).packed is None
