"""LMStepper: the fast single-stream entropy-model runner gives the official probabilities bit for bit."""

from __future__ import annotations

import io

import pytest
import torch
from encodec.model import LMModel
from encodec.quantization.ac import (
    ArithmeticDecoder,
    build_stable_quantized_cdf,
)
from official_ref import official_lm_segment_bytes

from opencodec.entropy import stepper as stepper_module
from opencodec.entropy import decode_segment_with_lm, encode_segment_with_lm, load_lm
from opencodec.entropy.stepper import LMStepper, projection_rows_are_independent


def _official(n_q: int, past_context: int, seed: int) -> LMModel:
    torch.manual_seed(seed)
    return LMModel(n_q, 1024, num_layers=5, dim=200, past_context=past_context).eval()


def _inputs(n_q: int, frames: int, seed: int) -> torch.Tensor:
    """``[K, F]`` LM inputs: 0 at the first frame, then ``1 + code``."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (n_q, frames - 1), generator=gen)
    return torch.cat([torch.zeros(n_q, 1, dtype=torch.long), codes + 1], dim=1)


def _official_probs(ref: LMModel, inputs: torch.Tensor) -> torch.Tensor:
    """``[F, K, card]`` from the official model stepped frame by frame."""
    frames = inputs.shape[1]
    states, offset, out = None, 0, []
    with torch.no_grad():
        for t in range(frames):
            probs, states, offset = ref(inputs[None, :, t:t + 1], states, offset)
            out.append(probs[0, :, :, 0].t())
    return torch.stack(out)


@pytest.fixture(scope="module")
def reference() -> tuple[LMModel, torch.Tensor, torch.Tensor]:
    """An official LM (window 40 steps), 120 frames of inputs and its probabilities."""
    ref = _official(6, past_context=40, seed=3)
    inputs = _inputs(6, 120, seed=4)
    return ref, inputs, _official_probs(ref, inputs)


@pytest.mark.parametrize("spare_rows", [8, 1024])
def test_step_equals_official(reference, spare_rows: int) -> None:
    """Frame by frame, past the window, with the buffer moved every few frames or never."""
    ref, inputs, expect = reference
    stepper = LMStepper(load_lm(ref.state_dict(), 6, past_context=40), chunk=8,
                        spare_rows=spare_rows)
    got = torch.stack([stepper.step(inputs[:, t]) for t in range(inputs.shape[1])])
    assert torch.equal(got, expect)
    assert stepper.offset == inputs.shape[1]


@pytest.mark.parametrize("chunk,splits", [(256, [120]), (16, [1, 30, 89]), (7, [50, 3, 67])])
def test_run_equals_official(reference, chunk: int, splits: list[int]) -> None:
    """Layer by layer over chunks, in calls of any length, also mixed with single steps."""
    ref, inputs, expect = reference
    stepper = LMStepper(load_lm(ref.state_dict(), 6, past_context=40), chunk=chunk,
                        spare_rows=max(chunk, 20))
    parts, begin = [], 0
    for n in splits:
        if n == 1:
            parts.append(stepper.step(inputs[:, begin])[None])
        else:
            parts.append(stepper.run(inputs[:, begin:begin + n]))
        begin += n
    assert torch.equal(torch.cat(parts), expect)


def test_without_cached_projections_equals_official(reference) -> None:
    """The fallback (the window recomputed each frame, as the official code does) is exact too."""
    ref, inputs, expect = reference
    stepper = LMStepper(load_lm(ref.state_dict(), 6, past_context=40))
    stepper.cache_projections = False
    stepper.reset()
    assert torch.equal(stepper.run(inputs[:, :70]), expect[:70])
    got = torch.stack([stepper.step(inputs[:, t]) for t in range(70, 120)])
    assert torch.equal(got, expect[70:])


def test_reset_and_fewer_codebooks(reference) -> None:
    ref, inputs, _ = reference
    lm = load_lm(ref.state_dict(), 6, past_context=40)
    expect = _official_probs(ref, inputs[:3, :30])
    stepper = LMStepper(lm)
    stepper.run(inputs[:, :50])
    stepper.reset()
    assert torch.equal(stepper.run(inputs[:3, :30]), expect)
    with pytest.raises(ValueError, match="7 codebooks"):
        stepper.step(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="spare_rows"):
        LMStepper(lm, chunk=64, spare_rows=32)


def test_two_threads_equal_lm_step(reference) -> None:
    """Under 2 threads (other BLAS splits) the stepper still matches the model's own steps."""
    ref, inputs, _ = reference
    lm = load_lm(ref.state_dict(), 6, past_context=40)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        state, expect = None, []
        for t in range(60):
            probs, state = lm.step(inputs[:, t], state)
            expect.append(probs)
        stepper = LMStepper(lm)
        assert torch.equal(stepper.run(inputs[:, :60]), torch.stack(expect))
    finally:
        torch.set_num_threads(before)


def test_projection_check_is_cached_and_boolean() -> None:
    """The answer is a bool, computed once per weight storage: a second call reads the cache
    (a poisoned entry comes back), a copy of the weight is checked afresh (same answer)."""
    w = torch.randn(40, 20)
    b = torch.randn(40)
    first = projection_rows_are_independent(w, b, past_context=30, pad_rows=16)
    assert isinstance(first, bool)
    keys = [k for k in stepper_module._INDEPENDENCE_CACHE if k[1] == w.data_ptr()]
    assert len(keys) == 1 and stepper_module._INDEPENDENCE_CACHE[keys[0]] is first
    stepper_module._INDEPENDENCE_CACHE[keys[0]] = not first
    try:
        assert projection_rows_are_independent(w, b, past_context=30, pad_rows=16) is (not first)
        assert projection_rows_are_independent(w.clone(), b, past_context=30, pad_rows=16) is first
    finally:
        del stepper_module._INDEPENDENCE_CACHE[keys[0]]


def test_segment_bytes_past_the_official_window() -> None:
    """The paper-size 24 kHz LM (window 262) over 300 frames: bytes identical both ways."""
    ref = _official(32, past_context=262, seed=8)
    lm = load_lm(ref.state_dict(), 32, frame_rate=75)
    codes = torch.randint(0, 1024, (2, 300), generator=torch.Generator().manual_seed(9))
    expect = official_lm_segment_bytes(ref, codes)
    assert encode_segment_with_lm(lm, codes) == expect
    assert torch.equal(decode_segment_with_lm(lm, expect, 2, 300), codes)
    dec = ArithmeticDecoder(io.BytesIO(expect))
    states, offset = None, 0
    input_ = torch.zeros(1, 2, 1, dtype=torch.long)
    with torch.no_grad():
        for t in range(12):   # the official reader agrees on the first frames
            probas, states, offset = ref(input_, states, offset)
            got = [dec.pull(build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False))
                   for k in range(2)]
            assert got == codes[:, t].tolist()
            input_ = 1 + codes[None, :, t:t + 1]
