"""``EncodecModel.encode``/``decode`` and ``encode_batch``/``decode_batch`` on models that cut
the input into segments: every length decodes, segments encode cannot give are refused, overlap 0,
scales and dtypes, items at segment boundaries, and the segment layout of the codes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from opencodec import EncodecModel
from opencodec.batching import BatchEncoding, decode_batch, encode_batch, encode_each
from opencodec.errors import InvalidCodesError
from opencodec.model import EncodedFrame

from codec_helpers import _model


SEGMENTING = dict(channels=2, causal=False, norm="time_group_norm", normalize=True, segment=0.1,
                  overlap=0.2)  # segments of 2400 samples every 1920: 8 frames, >= 7 before the last


@pytest.fixture(scope="module")
def segmenting() -> EncodecModel:
    return _model(**SEGMENTING)


def _wav(batch: int, channels: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, channels, length, generator=gen)


# -- model.decode of a segmenting model -----------------------------------------------------------
def test_every_length_encode_gives_decodes_without_nan(segmenting: EncodecModel) -> None:
    with torch.inference_mode():
        for length in (1, 1920, 1921, 2400, 2401, 3841, 4320, 4321, 6000):
            frames = segmenting.encode(_wav(1, 2, length, seed=length))
            out = segmenting.decode(frames)
            assert out.shape[-1] >= length and bool(torch.isfinite(out).all()), length


@pytest.mark.parametrize("order, message", [
    ([0, 2, 1], r"segment 1: 3 code frame\(s\), but a segment before the last .* has 7 to 8"),
    ([2, 2], r"segment 0: 3 code frame\(s\), but a segment before the last .* has at least 7"),
])
def test_segments_encode_cannot_give_are_refused_not_nan(segmenting: EncodecModel, order: list[int],
                                                         message: str) -> None:
    with torch.inference_mode():
        frames = segmenting.encode(_wav(1, 2, 4500))  # segments of 8, 8 and 3 frames
        assert [f.codes.shape[-1] for f in frames] == [8, 8, 3]
        with pytest.raises(InvalidCodesError, match=message):
            segmenting.decode([frames[i] for i in order])
        doubled = EncodedFrame(torch.cat([frames[0].codes, frames[0].codes], -1), frames[0].scale)
        with pytest.raises(InvalidCodesError, match=r"segment 0: 16 code frame\(s\)"):
            segmenting.decode([doubled, frames[1]])  # overlap-added 2400 samples too late
        assert segmenting.decode([doubled]).shape[-1] == 16 * 320  # alone: nothing overlaps


def test_a_model_that_does_not_segment_refuses_two_segments_with_invalid_codes() -> None:
    model = _model()
    with torch.inference_mode():
        frames = model.encode(_wav(1, 1, 2000))
        with pytest.raises(InvalidCodesError, match="does not segment, got 2 segments"):
            model.decode(frames + frames)


def test_a_float64_scale_gives_audio_in_the_models_dtype(segmenting: EncodecModel) -> None:
    with torch.inference_mode():
        frames = segmenting.encode(_wav(1, 2, 2000))
        out = segmenting.decode(frames)
        out64 = segmenting.decode([EncodedFrame(f.codes, f.scale.double()) for f in frames])
    assert out64.dtype == torch.float32
    assert torch.equal(out64, out)


# -- batching ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_encode_batch_keeps_the_scales_of_a_normalising_model_that_does_not_segment(causal: bool) -> None:
    norm = "weight_norm" if causal else "time_group_norm"
    model = _model(causal=causal, norm=norm, normalize=True)
    wav, lengths = _wav(2, 1, 3000) * torch.tensor([1.0, 0.05])[:, None, None], [3000, 2000]
    batch, each = encode_batch(model, wav, lengths), encode_each(model, wav, lengths)
    assert batch.scales is not None and torch.equal(batch.scales, each.scales)
    out, lens = decode_batch(model, batch)
    assert lens.tolist() == lengths
    for b, n in enumerate(lengths):
        with torch.inference_mode():
            alone = model.decode(model.encode(wav[b: b + 1, :, :n]))[0, :, :n]
        torch.testing.assert_close(out[b, :, :n], alone, rtol=0, atol=1e-6)  # LSTM batch rounding


def _encoding() -> tuple[EncodecModel, BatchEncoding]:
    model = _model()
    return model, encode_batch(model, _wav(3, 1, 4000), [4000, 1000, 2500])


@pytest.mark.parametrize("change, message", [
    (dict(lengths=torch.tensor([4000, 1000])), r"BatchEncoding.lengths: got 2 for a batch of 3"),
    (dict(lengths=torch.tensor([40000, 1000, 2500])), r"item 0: frame_lengths 13 does not fit its length "
                                                      r"of 40000 samples, which model tiny_small encodes to 125"),
    (dict(lengths=torch.tensor([-4000, 1000, 2500])), r"BatchEncoding.lengths must be >= 1, got -4000"),
    (dict(frame_lengths=torch.tensor([13, 2, 8])), r"item 1: frame_lengths 2 does not fit its length of 1000"),
    (dict(frame_lengths=torch.tensor([13.0, 4.0, 8.0])), r"frame_lengths must be integers \(frames\)"),
    (dict(scales=torch.ones(3)), r"scales must be None or a float tensor \[B, S\] = \[3, >= 1\]"),
])
def test_decode_batch_refuses_an_inconsistent_encoding(change: dict, message: str) -> None:
    model, encoding = _encoding()
    with pytest.raises(InvalidCodesError, match=message):
        decode_batch(model, dataclasses.replace(encoding, **change))


def test_decode_batch_says_what_it_takes_and_accepts_plain_lists() -> None:
    model, encoding = _encoding()
    with pytest.raises(InvalidCodesError, match=r"expects the BatchEncoding encode_batch returns, got Tensor"):
        decode_batch(model, encoding.codes)  # type: ignore[arg-type]
    out, _ = decode_batch(model, encoding)
    listed = BatchEncoding(encoding.codes, encoding.frame_lengths.tolist(), encoding.lengths.tolist(), None)
    assert torch.equal(decode_batch(model, listed)[0], out)


def test_encode_batch_takes_numpy_lengths() -> None:
    model, encoding = _encoding()
    again = encode_batch(model, _wav(3, 1, 4000), np.array([4000, 1000, 2500]))
    assert torch.equal(again.codes, encoding.codes)
