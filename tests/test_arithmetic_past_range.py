"""A float32 softmax can sum slightly above 1: its quantised CDF then ends a few counts above
2**24, and a code whose counts pass 2**24 can take the coder past its range (where the official
coder fails an assertion). That is refused in words; everything the official coder writes keeps
its bytes, past 2**24 included."""

from __future__ import annotations

import io

import pytest
import torch

from encodec.quantization.ac import ArithmeticCoder  # (official_ref's torchaudio stand-in: conftest)
from opencodec.entropy import EntropyLM, arithmetic
from opencodec.entropy.arithmetic import ArithmeticEncoder, build_quantized_cdf, encode_segment_with_lm

TOTAL = 1 << 24


def overshooting_cdf() -> torch.Tensor:
    """The first seeded 16-bin row whose quantised CDF ends above 2**24."""
    gen = torch.Generator().manual_seed(5)
    for _ in range(100_000):
        cdf = build_quantized_cdf(torch.softmax(torch.randn(16, generator=gen) * 8, -1))
        if int(cdf[-1]) > TOTAL:
            return cdf
    raise AssertionError("no overshooting row found")


def test_a_code_past_the_range_is_refused_and_the_official_coder_fails_too() -> None:
    cdf = overshooting_cdf()
    last = len(cdf) - 1
    with pytest.raises(ValueError, match=r"pass the coder's range here \(a CDF that ends above 2\*\*24"):
        ArithmeticEncoder().push(last, cdf)
    with pytest.raises(AssertionError):
        ArithmeticCoder(io.BytesIO()).push(last, cdf)


def test_codes_within_the_range_keep_the_official_bytes() -> None:
    cdf = overshooting_cdf()
    within = [s for s in range(len(cdf)) if int(cdf[s]) <= TOTAL]
    assert within and len(within) < len(cdf)
    for symbol in within:
        fo = io.BytesIO()
        ref, ours = ArithmeticCoder(fo), ArithmeticEncoder()
        for _ in range(3):
            ref.push(symbol, cdf)
            ours.push(symbol, cdf)
        ref.flush()
        ours.flush()
        assert ours.getvalue() == fo.getvalue()


def test_the_official_format_writer_says_which_code_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, past_context=8).eval()
    real = arithmetic.build_quantized_cdf

    def overshoot_last_bin(pdf: torch.Tensor) -> torch.Tensor:  # the float32 sum above 1, made certain
        cdf = real(pdf)
        cdf[..., -1] = 4 * TOTAL  # far past: certain to leave the coder's range
        return cdf

    monkeypatch.setattr(arithmetic, "build_quantized_cdf", overshoot_last_bin)
    codes = torch.tensor([[3, 4, 5], [1, 15, 2]])  # frame 1, codebook 1: the last bin
    with pytest.raises(ValueError) as info:
        encode_segment_with_lm(lm, codes)
    message = str(info.value)
    assert message.startswith("the official entropy-coded format cannot code frame 1, codebook 1:")
    assert f"({4 * TOTAL}) passes 2**24" in message and "--lm-format deterministic" in message
    assert len(encode_segment_with_lm(lm, codes.clamp(max=14))) > 0  # no code in the last bin: coded
