"""Integer-only entropy model (``opencodec.entropy.fixed``): exact tables, overflow bounds on
extreme inputs, CDFs independent of batching and thread count, closeness to the float model."""

from __future__ import annotations

import copy
import re
import math

import pytest
import torch
import torch.nn.functional as F

from opencodec.entropy import EntropyLM, build_quantized_cdf
from opencodec.entropy.fixed import (ACT_FRAC, ACT_LIMIT, CDF_BITS, EXP_FRAC, MIN_FREQ, WEIGHT_BITS,
                                     FixedLM, _exp2_table, _layer_norm, _linear, _LinearParams,
                                     _NormParams, _phi_table, cdf_to_probs, fixed_lm_for, int_exp,
                                     int_gelu, logits_to_cdf)
from opencodec.errors import ModelLoadError

ONE = 1 << ACT_FRAC


def _lm(seed: int, n_q: int = 4, dim: int = 32, layers: int = 2, past_context: int = 262,
        head_gain: float = 1.0) -> EntropyLM:
    torch.manual_seed(seed)
    lm = EntropyLM(n_q=n_q, card=1024, dim=dim, num_layers=layers, past_context=past_context).eval()
    if head_gain != 1.0:  # peaked distributions, like a trained model's
        with torch.no_grad():
            for lin in lm.linears:
                lin.weight.mul_(head_gain)
    return lm


def _check_cdf(cdf: torch.Tensor) -> None:
    freq = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[..., :1]))
    assert cdf.dtype == torch.long
    assert bool((cdf[..., -1] == 1 << CDF_BITS).all())
    assert int(freq.min()) >= MIN_FREQ


# -- exact tables and elementary functions -----------------------------------------------------
def test_exp2_table_is_exact() -> None:
    table = _exp2_table()
    assert table.shape == (257,) and int(table[0]) == 1 << EXP_FRAC and int(table[256]) == 1 << (EXP_FRAC + 1)
    for i, value in enumerate(table.tolist()):  # floor(2**(30 + i/256)): v**256 <= 2**(7680+i) < (v+1)**256
        assert value ** 256 <= 1 << (256 * EXP_FRAC + i) < (value + 1) ** 256


def test_int_exp_accuracy() -> None:
    z = -torch.arange(0, 20 * ONE, 997)  # exactly representable inputs
    got = int_exp(z).double() / (1 << EXP_FRAC)
    want = torch.exp(z.double() / ONE)
    assert int(int_exp(torch.zeros(1, dtype=torch.long))) == 1 << EXP_FRAC
    assert float(((got - want) / want)[want > 1e-3].abs().max()) < 2e-6
    assert float((got - want).abs().max()) < 2e-6
    # far below the clamp: exactly zero, no negative shifts or garbage
    assert int_exp(torch.tensor([-(1 << 40), -(65 * ONE), -(1 << 62)])).tolist() == [0, 0, 0]


def test_gelu_table_and_accuracy() -> None:
    phi = _phi_table()
    assert phi.shape == (4097,) and int(phi[2048]) == 1 << (EXP_FRAC - 1)
    assert torch.equal(phi + phi.flip(0), torch.full_like(phi, 1 << EXP_FRAC))  # Phi(-x) = 1 - Phi(x)
    assert bool((torch.diff(phi) >= 0).all())
    # Phi at a few points, against math.erf (reference only)
    for x in (0.5, 1.0, 2.0, 3.5):
        want = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        assert abs(int(phi[2048 + int(x * 256)]) / 2 ** EXP_FRAC - want) < 1e-9
    x = torch.arange(-12 * ONE, 12 * ONE, 331)
    got = int_gelu(x).double() / ONE
    want = F.gelu(x.double() / ONE)
    assert float((got - want).abs().max()) < 1.5e-5
    big = torch.tensor([ACT_LIMIT, -ACT_LIMIT, 8 * ONE, -8 * ONE - 1])
    assert int_gelu(big).tolist() == [ACT_LIMIT, 0, 8 * ONE, 0]


def test_position_embedding_matches_float64_reference() -> None:
    flm = FixedLM.from_float(_lm(0, dim=64))
    positions = torch.tensor([0, 1, 2, 7, 262, 1000, 4095, 123_457, 999_999])
    got = flm.positions(positions).double() / ONE
    j = torch.arange(32, dtype=torch.float64)
    phase = positions.double().view(-1, 1) / (10000.0 ** (j / 31))
    want = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
    assert float((got - want).abs().max()) < 2e-5
    # a pure function of the position: one at a time == all at once
    one_by_one = torch.cat([flm.positions(positions[i:i + 1]) for i in range(len(positions))])
    assert torch.equal(one_by_one, flm.positions(positions))
    with pytest.raises(ValueError, match="positions"):
        flm.positions(torch.tensor([1 << 48]))
    # the cached blocks of 256 positions used by the model give the same rows
    assert torch.equal(flm._positions_from(250, 300), flm.positions(torch.arange(250, 550)))
    assert flm._positions_from(7, 0).shape == (0, 64)


# -- overflow bounds ---------------------------------------------------------------------------
def _python_linear(x: list[int], w: list[list[int]], shift: int, b: list[int]) -> list[int]:
    """The same rounding rule on Python integers (no overflow possible)."""
    out = []
    for row, bias in zip(w, b):
        acc = sum(xi * wi for xi, wi in zip(x, row))
        value = ((acc + (1 << (shift - 1))) >> shift) + bias
        out.append(max(-ACT_LIMIT, min(ACT_LIMIT, value)))
    return out


@pytest.mark.parametrize("n", [200, 800, 4096])
def test_linear_exact_at_the_bounds(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    wmax = 1 << WEIGHT_BITS
    x = torch.full((1, n), ACT_LIMIT)
    x[0, ::2] = -ACT_LIMIT
    w = torch.stack([torch.full((n,), wmax), torch.full((n,), -wmax), -x[0].sign() * wmax,
                     torch.randint(-wmax, wmax + 1, (n,), generator=gen)])
    b = torch.tensor([ACT_LIMIT, -ACT_LIMIT, 0, 5])
    for shift in (1, 19, 40):
        params = _LinearParams(w, shift, b)
        for rows in (x, torch.cat([x, -x, x.flip(1)])):  # mv and matmul paths
            got = _linear(rows, params)
            want = [_python_linear(r, w.tolist(), shift, b.tolist()) for r in rows.tolist()]
            assert got.tolist() == want


def test_layer_norm_extreme_inputs() -> None:
    C = 4096
    gamma = torch.full((C,), 1 << WEIGHT_BITS)
    params = _NormParams(gamma, WEIGHT_BITS, torch.zeros(C, dtype=torch.long), 42950)
    alternating = torch.full((1, C), ACT_LIMIT)
    alternating[0, ::2] = -ACT_LIMIT
    spike = torch.zeros(1, C, dtype=torch.long)
    spike[0, 0] = ACT_LIMIT
    constant = torch.full((1, C), -ACT_LIMIT)
    for x in (alternating, spike, constant):
        y = _layer_norm(x, params).double() / ONE
        ref = F.layer_norm(x.double() / ONE, (C,), eps=1e-5)
        assert float((y - ref.clamp(-256, 256)).abs().max()) < 1e-3
    assert bool((_layer_norm(constant, params) == 0).all())


def test_logits_to_cdf_extremes() -> None:
    gen = torch.Generator().manual_seed(0)
    cases = torch.stack([
        torch.zeros(1024, dtype=torch.long),
        torch.full((1024,), ACT_LIMIT),
        torch.cat([torch.tensor([ACT_LIMIT]), torch.full((1023,), -ACT_LIMIT)]),
        torch.cat([torch.full((1023,), -ACT_LIMIT), torch.tensor([ACT_LIMIT])]),
        torch.randint(-ACT_LIMIT, ACT_LIMIT + 1, (1024,), generator=gen),
        torch.randint(-ONE, ONE, (1024,), generator=gen),
    ])
    cdf = logits_to_cdf(cases)
    _check_cdf(cdf)
    freq = torch.diff(cdf, dim=-1, prepend=torch.zeros_like(cdf[:, :1]))
    assert freq[0].tolist() == [1 << (CDF_BITS - 10)] * 1024              # uniform: exact
    assert int(freq[2, 0]) == (1 << CDF_BITS) - MIN_FREQ * 1023 and int(freq[3, -1]) == int(freq[2, 0])


def test_extreme_model_weights_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights just inside the range run and give valid CDFs (every product sum provably
    at most 2**53, so exact in float64: checked on the absolute values); outside it they are
    refused."""
    import opencodec.entropy.fixed as fixed

    worst = []
    exact = fixed._matmul_t

    def checked(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        worst.append(float((x.abs().double() @ w.abs().double().t()).max()))
        got = exact(x, w)
        assert torch.equal(got, x @ w.long().t())   # the float64 product is the int64 one
        return got

    monkeypatch.setattr(fixed, "_matmul_t", checked)
    lm = _lm(3)
    with torch.no_grad():
        for p in lm.parameters():
            p.copy_(torch.sign(torch.randn_like(p)) * (2.0 ** 18 - 1))  # largest accepted magnitude
        for e in lm.emb:
            e.weight.clamp_(-256, 256)
        for lin in lm.linears:
            lin.bias.clamp_(-256, 256)
        for layer in lm.transformer.layers:
            for name in ("in_proj_bias",):
                getattr(layer.self_attn, name).clamp_(-256, 256)
            layer.self_attn.out_proj.bias.clamp_(-256, 256)
            for mod in (layer.linear1, layer.linear2, layer.norm1, layer.norm2):
                mod.bias.clamp_(-256, 256)
        lm.transformer.norm_in.bias.clamp_(-256, 256)
    flm = FixedLM.from_float(lm)
    codes = torch.randint(0, 1024, (4, 6))
    _check_cdf(flm.cdfs(codes))
    # Saturated, and within the float64-exact range of the product's path (2**53 for rows of
    # at most 1024 terms, as here), far from int64 overflow.
    assert worst and 2.0 ** 45 < max(worst) <= 2.0 ** 53
    with torch.no_grad():
        lm.transformer.layers[0].linear1.weight[0, 0] = 2.0 ** 18
    with pytest.raises(ModelLoadError, match=r"layers\.0\.linear1\.weight.*fixed-point range"):
        FixedLM.from_float(lm)
    with torch.no_grad():
        lm.transformer.layers[0].linear1.weight[0, 0] = 0.0
        lm.emb[1].weight[3, 0] = 300.0
    with pytest.raises(ModelLoadError, match="emb.*256"):
        FixedLM.from_float(lm)


# -- independence of batching and threads ------------------------------------------------------
def test_step_block_and_batch_give_identical_cdfs() -> None:
    flm = FixedLM.from_float(_lm(1, past_context=5))  # short window: trimming is exercised
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 1024, (3, 17), generator=gen)
    whole = flm.cdfs(codes, block=17)
    for block in (1, 4, 7):
        assert torch.equal(flm.cdfs(codes, block=block), whole)
    state, stepped, inp = None, [], torch.zeros(3, dtype=torch.long)
    for t in range(17):
        cdf, state = flm.step(inp, state)
        stepped.append(cdf)
        inp = codes[:, t] + 1
    assert torch.equal(torch.stack(stepped), whole)
    _check_cdf(whole)
    # a batch of two sequences == each alone
    other = torch.randint(0, 1024, (3, 17), generator=gen)
    inputs = torch.stack([torch.cat([torch.zeros(3, 1, dtype=torch.long), c[:, :-1] + 1], 1)
                          for c in (codes, other)])
    logits, _ = flm(inputs)
    assert torch.equal(logits_to_cdf(logits[0]).transpose(0, 1), whole)
    assert torch.equal(logits_to_cdf(logits[1]).transpose(0, 1), flm.cdfs(other))


def test_thread_count_does_not_change_cdfs() -> None:
    flm = FixedLM.from_float(_lm(2, n_q=8, dim=64))
    codes = torch.randint(0, 1024, (8, 48))
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(flm.cdfs(codes, block=48))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


# -- conversion, hash, cache -------------------------------------------------------------------
def test_hash_and_cache() -> None:
    lm = _lm(4)
    flm = fixed_lm_for(lm)
    assert fixed_lm_for(lm) is flm and fixed_lm_for(flm) is flm
    assert FixedLM.from_float(copy.deepcopy(lm)).weights_hash == flm.weights_hash
    assert re.fullmatch("[0-9a-f]{16}", flm.weights_hash)
    assert _lm(5).__class__ is EntropyLM and FixedLM.from_float(_lm(5)).weights_hash != flm.weights_hash
    with torch.no_grad():
        lm.linears[0].bias[0] += 0.01
    changed = fixed_lm_for(lm)
    assert changed is not flm and changed.weights_hash != flm.weights_hash
    other_window = _lm(4, past_context=100)
    assert FixedLM.from_float(other_window).weights_hash != flm.weights_hash  # sizes are hashed


# -- closeness to the float model --------------------------------------------------------------
def test_fixed_probabilities_close_to_float() -> None:
    """Codes sampled from a peaked float model: the integer model costs within 1% of its bits."""
    lm = _lm(6, n_q=4, dim=64, head_gain=12.0)
    flm = FixedLM.from_float(lm)
    gen = torch.Generator().manual_seed(6)
    K, T = 4, 40
    codes = torch.zeros(K, T, dtype=torch.long)
    float_bits = fixed_bits = kl = 0.0
    state, inp = None, torch.zeros(K, dtype=torch.long)
    with torch.inference_mode():
        probs_all = []
        for t in range(T):
            probs, state = lm.step(inp, state)
            codes[:, t] = torch.multinomial(probs, 1, generator=gen)[:, 0]
            probs_all.append(probs)
            inp = codes[:, t] + 1
    fixed_cdfs = flm.cdfs(codes)
    for t in range(T):
        p = probs_all[t]
        official = build_quantized_cdf(p)
        freq = torch.diff(official, dim=-1, prepend=torch.zeros(K, 1, dtype=torch.long))
        float_bits -= float(torch.log2(freq.gather(1, codes[:, t:t + 1]).double() / 2 ** 24).sum())
        q = cdf_to_probs(fixed_cdfs[t])
        fixed_bits -= float(torch.log2(q.gather(1, codes[:, t:t + 1])).sum())
        kl += float((p.double() * (p.double().clamp_min(1e-30).log() - q.log())).sum(-1).mean())
    per_code = K * T
    assert float_bits / per_code < 8.0  # peaked: clearly below the 10 bits of a uniform code
    assert abs(fixed_bits - float_bits) / float_bits < 0.01
    assert kl / T < 1e-3


# -- float64 BLAS products are the integer ones ---------------------------------------------------
def test_attention_products_exact_in_float64_at_the_bounds() -> None:
    """The attention's q.k and p@v products, done in float64, equal int64 arithmetic at the
    largest values the scheme allows (head_dim 25 and 1024, window 263)."""
    from opencodec.entropy.fixed import _exact_f64_matmul

    gen = torch.Generator().manual_seed(7)
    for hd in (25, 1024):
        qmax = ACT_LIMIT // math.isqrt(hd)
        q = torch.randint(-qmax, qmax + 1, (2, 3, 4, hd), generator=gen)
        q[..., ::2] = qmax
        k = torch.randint(-ACT_LIMIT, ACT_LIMIT + 1, (2, 3, 263, hd), generator=gen)
        k[0] = ACT_LIMIT                       # every term at its largest, same sign
        want = q @ k.transpose(-1, -2)
        got = _exact_f64_matmul(q.double(), k.transpose(-1, -2).double())
        assert torch.equal(got, want)
    e = torch.randint(0, 1 << 30, (2, 3, 4, 263), generator=gen)
    p = torch.div(e << 20, e.sum(-1, keepdim=True), rounding_mode="floor")
    v = torch.randint(-ACT_LIMIT, ACT_LIMIT + 1, (2, 3, 263, 25), generator=gen)
    v[1] = -ACT_LIMIT
    assert torch.equal(_exact_f64_matmul(p.double(), v.double()), p @ v)


def test_bundled_lm_golden_bytes() -> None:
    """The deterministic format's bytes and CDFs for the bundled entropy model, recorded with
    the all-int64 implementation: any machine, BLAS or code change that alters them fails."""
    import hashlib

    from opencodec.entropy import encode_segment_fixed, fixed_lm_for
    from opencodec.pretrained import load_lm_model

    flm = fixed_lm_for(load_lm_model("opencodec_lm_24khz"))
    codes = torch.randint(0, 1024, (8, 300), generator=torch.Generator().manual_seed(2026))
    data = encode_segment_fixed(flm, codes, check_bits=8, check_interval=75)
    cdfs = flm.cdfs(codes[:, :40])
    assert flm.weights_hash == "afe7bbb406b50526"
    assert len(data) == 3222
    assert hashlib.sha256(data).hexdigest()[:16] == "c5445c1235c437f5"
    assert hashlib.sha256(cdfs.numpy().tobytes()).hexdigest()[:16] == "6618707d81e0f658"
