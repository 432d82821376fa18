"""Entropy coding, exact values: argument checks of the quantised CDF and the coder, the integer
model's weights hash (everything that drives the CDFs is hashed, so a file is never decoded with
another model), its range checks, and the official entropy model's default attention window.

Each test here fails on a plausible one-token bug that the
other entropy tests let through."""

from __future__ import annotations

import pytest
import torch

from opencodec.entropy import ArithmeticEncoder, EntropyLM, build_quantized_cdf, load_lm
from opencodec.entropy.fixed import FixedLM
from opencodec.errors import ModelLoadError


def _small_lm(seed: int = 0, past_context: int = 5, dim: int = 16, max_period: float = 10000) -> EntropyLM:
    torch.manual_seed(seed)
    lm = EntropyLM(n_q=2, card=16, dim=dim, num_heads=2, num_layers=1, hidden_scale=2.0,
                   past_context=past_context, max_period=max_period)
    return lm.eval()


# -- quantised CDF and coder arguments -------------------------------------------------------------
def test_quantized_cdf_refuses_min_range_below_2_and_too_many_bins() -> None:
    pdf = torch.full((8,), 1 / 8)
    with pytest.raises(ValueError, match="min_range must be at least 2"):
        build_quantized_cdf(pdf, min_range=1)
    # 2**4 = 16 counts: 8 bins of at least 2 fill it exactly (alpha = 1), 9 bins do not fit.
    assert build_quantized_cdf(pdf, total_range_bits=4).tolist() == [2, 4, 6, 8, 10, 12, 14, 16]
    with pytest.raises(ValueError, match="too many bins"):
        build_quantized_cdf(torch.full((9,), 1 / 9), total_range_bits=4)
    with pytest.raises(ValueError, match="too many bins"):
        build_quantized_cdf(torch.full((16,), 1 / 16), total_range_bits=4)


@pytest.mark.parametrize("bits", [0, 31, 64])
def test_encoder_refuses_total_range_bits_outside_1_to_30(bits: int) -> None:
    with pytest.raises(ValueError, match=r"total_range_bits must be in \[1, 30\]"):
        ArithmeticEncoder(bits)


# -- the integer model's weights hash ----------------------------------------------------------------
def test_weights_hash_covers_window_period_and_weight_shifts() -> None:
    """The hash must change with everything that changes the CDFs: the attention window, the
    position embedding's period and the power-of-two scale of each weight tensor (doubling a
    tensor gives the same integers at a shift one lower: another model, the same integers)."""
    base = FixedLM.from_float(_small_lm())
    window = FixedLM.from_float(_small_lm(past_context=6))
    period = FixedLM.from_float(_small_lm(max_period=5000))
    doubled_lm = _small_lm()
    with torch.no_grad():
        doubled_lm.transformer.layers[0].linear2.weight.mul_(2)
    doubled = FixedLM.from_float(doubled_lm)
    codes = torch.randint(0, 16, (2, 9), generator=torch.Generator().manual_seed(0))
    # each one really is another model (other CDFs) ...
    for other in (window, period, doubled):
        assert not torch.equal(other.cdfs(codes), base.cdfs(codes))
    assert torch.equal(doubled._layers[0].linear2.weight, base._layers[0].linear2.weight)
    assert doubled._layers[0].linear2.shift == base._layers[0].linear2.shift - 1
    # ... so each has another hash
    hashes = {m.weights_hash for m in (base, window, period, doubled)}
    assert len(hashes) == 4
    assert FixedLM.from_float(_small_lm()).weights_hash == base.weights_hash  # and it is stable


# -- the integer model's range checks -----------------------------------------------------------------
def test_fixed_model_refuses_sizes_and_values_outside_its_ranges() -> None:
    with pytest.raises(ModelLoadError, match=r"dim=2 \(must be even and >= 4\)"):
        FixedLM.from_float(_small_lm(dim=2))
    with pytest.raises(ModelLoadError, match="max_period must be finite and > 0"):
        FixedLM.from_float(_small_lm(max_period=float("inf")))
    lm = _small_lm()
    with torch.no_grad():
        lm.transformer.layers[0].linear1.weight[0, 0] = float("nan")
    with pytest.raises(ModelLoadError, match=r"layers\.0\.linear1\.weight has non-finite values"):
        FixedLM.from_float(lm)
    lm = _small_lm()
    with torch.no_grad():
        lm.linears[1].bias[0] = 256.5   # biases live at the activation scale: |b| <= 256
    with pytest.raises(ModelLoadError, match=r"linears\.bias.*256"):
        FixedLM.from_float(lm)
    flm = FixedLM.from_float(_small_lm())
    for bad in ([-1], [1 << 48]):
        with pytest.raises(ValueError, match=r"positions must be in \[0, 2\*\*48\)"):
            flm.positions(torch.tensor(bad))
    assert flm.positions(torch.tensor([0]))[0, :8].tolist() == [1 << 16] * 8   # cos(0) = 1
    # inputs are 1 + code, in [0, card]: card + 1 would read the next codebook's embedding
    for bad in (-1, 17):
        with pytest.raises(ValueError, match=r"indices must be in \[0, 16\]"):
            flm(torch.full((1, 2, 1), bad))
    with pytest.raises(ValueError, match="3 codebooks given, the entropy model has 2"):
        flm(torch.zeros(1, 3, 1, dtype=torch.long))


def test_fixed_layer_norm_with_zero_eps_on_a_constant_row_is_finite() -> None:
    """A LayerNorm with eps = 0 (or below 2**-32) still gets an integer eps of 1: a constant
    input row has zero variance and would otherwise divide by zero."""
    lm = _small_lm()
    lm.transformer.norm_in.eps = 0.0
    flm = FixedLM.from_float(lm)
    assert flm._norm_in.eps == 1
    cdf = flm.cdfs(torch.zeros(2, 3, dtype=torch.long))
    assert int(cdf[..., -1].min()) == 1 << 24


# -- the official entropy model's window ---------------------------------------------------------------
@pytest.mark.parametrize("frame_rate,window", [(None, 262), (75, 262), (150, 525)])
def test_load_lm_default_window_is_3_5_seconds(frame_rate: int | None, window: int) -> None:
    lm = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, hidden_scale=2.0)
    got = load_lm(lm.state_dict(), n_q=2, card=16, dim=16, num_heads=2, num_layers=1, hidden_scale=2.0,
                  frame_rate=frame_rate)
    assert got.past_context == window
    assert not got.training


# -- the deterministic format's segment bytes ---------------------------------------------------------
def _rational_lm() -> EntropyLM:
    """A small entropy model whose weights are exact binary fractions set without a random
    generator, so its integer twin (and every byte coded with it) is the same on any machine
    and torch version."""
    lm = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, hidden_scale=2.0, past_context=4)
    with torch.no_grad():
        for i, p in enumerate(lm.parameters()):
            n = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_(((((n * 7919 + 31 * i) % 97) - 48) / 64).view_as(p).float())
    return lm.eval()


def _golden_codes() -> torch.Tensor:
    return ((torch.arange(2 * 20).view(2, 20) * 5 + 3) % 16).long()


def test_deterministic_segment_golden_bytes_with_odd_check_widths() -> None:
    """Exact bytes of a segment with 12-bit checks every 3 frames (a check of a width that is not
    a multiple of 8 is coded as a 4-bit then an 8-bit uniform symbol) and a seeded CRC: a change
    to the CDFs, the CRC input, the check positions or widths, or the order of the check's
    symbols changes them, and the reader still gets the codes back."""
    import hashlib

    from opencodec.entropy import decode_segment_fixed, encode_segment_fixed, fixed_lm_for

    flm = fixed_lm_for(_rational_lm())
    codes = _golden_codes()
    data = encode_segment_fixed(flm, codes, check_bits=12, check_interval=3, crc_seed=0x1234ABCD)
    assert flm.weights_hash == GOLDEN["hash"]
    assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == GOLDEN["bytes"]
    got, used = decode_segment_fixed(flm, data + b"\x00", 2, 20, check_bits=12, check_interval=3,
                                     crc_seed=0x1234ABCD, return_consumed=True)
    assert torch.equal(got, codes) and used == len(data)
    # without the intermediate checks (the final CRC-32 stays) it is exactly their bits shorter:
    # 6 checks of 12 bits = 9 bytes, give or take the padding of the last byte
    plain = encode_segment_fixed(flm, codes, check_bits=0, check_interval=3, crc_seed=0x1234ABCD)
    assert abs(len(data) - len(plain) - 9) <= 1


GOLDEN = {"hash": "4b1c8fecb24fa2ee", "bytes": (45, "4cb70a45b71dc672")}


def test_a_failed_check_names_the_frames_since_the_previous_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second check of a segment written with a wrong value: the error names the frames it
    covers (those after the first, passed, check), not the whole segment."""
    import opencodec.entropy.deterministic as det

    flm = det.FixedLM.from_float(_rational_lm())
    codes = _golden_codes()
    real = det._encode_value
    calls = []

    def second_one_wrong(enc: ArithmeticEncoder, value: int, bits: int) -> None:
        calls.append(value)
        real(enc, value ^ 1 if len(calls) == 2 else value, bits)

    monkeypatch.setattr(det, "_encode_value", second_one_wrong)
    data = det.encode_segment_fixed(flm, codes, check_bits=12, check_interval=3)
    monkeypatch.undo()
    with pytest.raises(det.BitstreamError, match=r"^frame 5: the 12-bit check does not match the codes of "
                                                 r"frames 3\.\.5 \("):
        det.decode_segment_fixed(flm, data, 2, 20, check_bits=12, check_interval=3)


def test_segment_coders_refuse_bad_arguments() -> None:
    """One clear ValueError per bad argument, from both the official and the deterministic
    segment coders, before anything is coded."""
    from opencodec.entropy import (decode_segment_fixed, decode_segment_with_lm, encode_segment_fixed,
                                   encode_segment_with_lm, fixed_lm_for)

    lm = _rational_lm()
    flm = fixed_lm_for(lm)
    codes = _golden_codes()[:, :4]
    ok = dict(check_bits=8, check_interval=3)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        encode_segment_fixed(flm, torch.full((2, 3), 16), **ok)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 16\)"):
        encode_segment_with_lm(lm, torch.full((2, 3), 16))
    for encode in (lambda c: encode_segment_fixed(flm, c, **ok), lambda c: encode_segment_with_lm(lm, c)):
        with pytest.raises(ValueError, match="codes must be integers, got dtype torch.float32"):
            encode(codes.float() + 0.5)
        with pytest.raises(ValueError, match=r"3 codebooks, the (LM|entropy model) supports 1\.\.2"):
            encode(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"check_bits must be in \[0, 32\], got 33"):
        encode_segment_fixed(flm, codes, check_bits=33, check_interval=3)
    with pytest.raises(ValueError, match="check_interval must be >= 1, got 0"):
        encode_segment_fixed(flm, codes, check_bits=8, check_interval=0)
    with pytest.raises(ValueError, match=r"3 codebooks, the entropy model supports 1\.\.2"):
        decode_segment_fixed(flm, b"", 3, 1, **ok)
    with pytest.raises(ValueError, match=r"3 codebooks, the LM supports 1\.\.2"):
        decode_segment_with_lm(lm, b"", 3, 1)
    # zero frames: nothing coded, nothing read
    for decode in (lambda: decode_segment_fixed(flm, b"", 2, 0, return_consumed=True, **ok),
                   lambda: decode_segment_with_lm(lm, b"", 2, 0, return_consumed=True)):
        got, used = decode()
        assert got.shape == (2, 0) and used == 0


def test_decoders_report_progress_every_64_frames_and_at_the_end() -> None:
    from opencodec.entropy import (decode_segment_fixed, decode_segment_with_lm, encode_segment_fixed,
                                   encode_segment_with_lm, fixed_lm_for)

    lm = _rational_lm()
    flm = fixed_lm_for(lm)
    codes = ((torch.arange(2 * 70).view(2, 70) * 7) % 16).long()
    ok = dict(check_bits=8, check_interval=75)
    seen: list[int] = []
    decode_segment_fixed(flm, encode_segment_fixed(flm, codes, **ok), 2, 70, progress=seen.append, **ok)
    assert seen == [64, 70]
    seen.clear()
    decode_segment_with_lm(lm, encode_segment_with_lm(lm, codes), 2, 70, progress=seen.append)
    assert seen == [64, 70]


# -- entropy-model training: validation numbers and batch sampling --------------------------------------
def test_validation_bits_are_the_coders_and_kbps_scale_with_codebooks() -> None:
    """validate's bits per code are -log2 of the probabilities the coder steps with (input 0 at
    the first frame, 1 + the previous code after), averaged over the codes; ideal kbps is bits
    per code x codebooks x frame rate / 1000."""
    from opencodec.train.lm_codes import CodeSet
    from opencodec.train.lm_eval import validate

    lm = _rational_lm()
    seqs = [_golden_codes()[:, :7], ((torch.arange(2 * 5).view(2, 5) * 3 + 1) % 16).long()]
    codes = CodeSet.from_sequences(seqs, ["a", "b"])
    want = {}
    for k in (1, 2):
        bits, n = 0.0, 0
        for seq in seqs:
            state, inp = None, torch.zeros(k, dtype=torch.long)
            for t in range(seq.shape[1]):
                probs, state = lm.step(inp, state)
                bits -= float(torch.log2(probs[torch.arange(k), seq[:k, t]].double()).sum())
                inp = seq[:k, t] + 1
            n += k * seq.shape[1]
        want[k] = bits / n
    got = validate(lm, codes, [1.5, 3.0], [1, 2], frame_rate=75)
    assert got["bits_per_code/1.5kbps"] == pytest.approx(want[1], rel=1e-5)
    assert got["bits_per_code/3kbps"] == pytest.approx(want[2], rel=1e-5)
    assert got["ideal_kbps/1.5kbps"] == pytest.approx(want[1] * 1 * 75 / 1000, rel=1e-5)
    assert got["ideal_kbps/3kbps"] == pytest.approx(want[2] * 2 * 75 / 1000, rel=1e-5)


def test_each_training_step_samples_other_windows() -> None:
    from opencodec.train.lm_codes import CodeSet
    from opencodec.train.lm_solver import _batch_rng, sample_batch

    codes = CodeSet.from_sequences([((torch.arange(2 * 400).view(2, 400) * 7) % 1024).long()], ["a"])
    first = sample_batch(codes, 8, 16, 2, _batch_rng(0, 1))
    again = sample_batch(codes, 8, 16, 2, _batch_rng(0, 1))
    second = sample_batch(codes, 8, 16, 2, _batch_rng(0, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))     # a function of (seed, step)
    assert not torch.equal(first[2], second[2])                      # another step: other windows


def test_a_code_one_count_past_the_range_gets_the_official_format_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CDF ending at 2**24 + 1 (the smallest overshoot): a code in its last bin at the very first
    symbol takes ``high`` one past the fresh coder's window, and the writer's error names the
    frame and codebook and the way out, like larger overshoots."""
    import opencodec.entropy.arithmetic as arithmetic

    real = arithmetic.build_quantized_cdf

    def one_past(pdf: torch.Tensor) -> torch.Tensor:
        cdf = real(pdf)
        cdf[..., -1] = (1 << 24) + 1
        return cdf

    monkeypatch.setattr(arithmetic, "build_quantized_cdf", one_past)
    codes = torch.tensor([[15, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"^the official entropy-coded format cannot code frame 0, codebook 0: .*"
                                         r"\(16777217\) passes 2\*\*24"):
        arithmetic.encode_segment_with_lm(_rational_lm(), codes)


def test_an_entropy_model_covering_too_few_codebooks_is_refused() -> None:
    from types import SimpleNamespace

    from opencodec.lm_pairing import check_lm_for_codec

    lm = _rational_lm()   # 2 codebooks of 16 bins
    codec = SimpleNamespace(bins=16, name="tiny", bandwidth_for_codebooks=lambda n: 0.75 * n)
    check_lm_for_codec(lm, codec, 2)
    check_lm_for_codec(lm, codec, None)
    with pytest.raises(ModelLoadError, match=r"covers 2 codebooks, but 3 are used \(tiny at 2\.25 kbps\)"):
        check_lm_for_codec(lm, codec, 3)
    with pytest.raises(ModelLoadError, match="predicts 16 bins per codebook, but codec tiny has 32"):
        check_lm_for_codec(lm, SimpleNamespace(bins=32, name="tiny"), 1)


def test_a_weights_file_with_any_feed_forward_width_loads(tmp_path) -> None:
    """Sizes are read off the tensors (8 heads, as load_lm_model builds): a feed-forward width that
    is not a float multiple of the model width (61 / 56: int(56 * (61 / 56)) is 60) still gives a
    model of that width."""
    from opencodec.lm_loading import load_lm_model

    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=16, dim=56, num_heads=8, num_layers=1, hidden_scale=61.5 / 56)
    assert lm.transformer.layers[0].linear1.out_features == 61
    torch.save(lm.state_dict(), tmp_path / "lm.th")
    got = load_lm_model(tmp_path / "lm.th")
    assert got.transformer.layers[0].linear1.out_features == 61
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), lm.state_dict().values()))


def test_a_released_entropy_models_file_with_other_weights_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A release is identified by its weights hash: a damaged or replaced file under a release's
    name is an error, never silently another entropy model (files coded with it would not decode)."""
    from safetensors.torch import save_file

    import opencodec.lm_loading as lm_loading

    path = tmp_path / "replaced.safetensors"
    save_file({k: v.contiguous() for k, v in _rational_lm().state_dict().items()}, str(path))
    monkeypatch.setattr(lm_loading, "release_path", lambda release, what: path)
    with pytest.raises(ModelLoadError, match=r"does not hold the entropy model release 'opencodec_lm_24khz"):
        lm_loading.load_lm_model("opencodec_lm_24khz")


def test_the_stepper_refuses_a_model_in_training_mode_or_not_float32() -> None:
    """Dropout-free as it is, a model in training mode or in float64 would give other
    probabilities than the official coder's: refused, with what to call."""
    from opencodec.entropy.stepper import LMStepper

    lm = _rational_lm()
    with pytest.raises(ValueError, match=r"training mode .*call lm\.eval\(\)"):
        LMStepper(lm.train())
    with pytest.raises(ValueError, match=r"weights are torch\.float64.*call lm\.float\(\)"):
        LMStepper(lm.eval().double())
    with pytest.raises(ValueError, match="need pad_rows >= 1, chunk >= 1 and spare_rows >= chunk"):
        LMStepper(lm.float(), chunk=8, spare_rows=4)
