"""Python API walkthrough 3: what a researcher calling the low-level API met.

- ``model.decode`` of a segmenting model overlap-added segments of any length: a short segment
  before the last left a gap (NaN audio), a long one mixed segments at the wrong places; now
  segments ``encode`` cannot give are an ``InvalidCodesError`` (every length ``encode`` gives
  still decodes). A float64 scale no longer turns the audio into float64.
- ``batching.encode_batch`` dropped the scales of a normalising model that does not segment
  (its items decoded ~20x too loud), and ``decode_batch`` ignored scales on its batched causal
  path; ``decode_batch`` took a ``BatchEncoding`` whose lengths disagree with its frames
  (silently wrong audio, or a RuntimeError from deep inside) and other types (AttributeError).
- ``load_model`` / ``load_lm_model`` read the weights before failing on a bad ``device`` (a
  RuntimeError, or an AssertionError for "cuda" without CUDA), took a dict as ``config``
  (AttributeError inside ``dataclasses.replace``), a codec name as ``codec`` and
  ``num_codebooks=-1``.
- ``EncodecModel(config)`` built models that fail at the first encode (``channels=0``,
  ``segment=0``, ``ratios=[]``, an unknown ``pad_mode``) or took a dict.
- A model on the meta device (shapes only) failed inside ``decode`` (``Tensor.item()``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.batching import BatchEncoding, decode_batch, encode_batch, encode_each
from opencodec.errors import InvalidCodesError, UnsupportedBandwidthError
from opencodec.model import EncodedFrame
from opencodec.pretrained import load_lm_model, load_model
from stream_models import tiny_stream_model

SEGMENTING = dict(channels=2, causal=False, norm="time_group_norm", normalize=True, segment=0.1,
                  overlap=0.2)  # segments of 2400 samples every 1920: 8 frames, >= 7 before the last


def _model(**config: object) -> EncodecModel:
    model = tiny_stream_model("walk3", 5, **config)
    model.set_target_bandwidth(1.8)
    return model


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
                                                      r"of 40000 samples, which model walk3 encodes to 125"),
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


# -- loading ----------------------------------------------------------------------------------------
def test_load_model_checks_device_and_config_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.pretrained as pretrained

    def no_read(*args: object) -> None:
        raise AssertionError("weights read before the arguments were checked")

    monkeypatch.setattr(pretrained, "read_weights", no_read)
    with pytest.raises(ValueError, match=r"load_model: unknown device 'bogus'"):
        load_model(device="bogus")
    with pytest.raises(TypeError, match=r"load_model: device must be a str .* got float"):
        load_model(device=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config must be an EncodecConfig .* got dict; build one with "
                                        r"EncodecConfig.from_dict"):
        load_model(config={"name": "x"})  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"load_model: device 'cuda' is not available here"):
            load_model(device="cuda")


def test_load_lm_model_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"codec: model must be an EncodecModel, got str 'opencodec_24khz'"):
        load_lm_model(codec="opencodec_24khz")  # type: ignore[arg-type]
    codec = load_model()
    with pytest.raises(ValueError, match=r"num_codebooks must be >= 1, got -1"):
        load_lm_model(codec=codec, num_codebooks=-1)
    with pytest.raises(TypeError, match=r"num_codebooks must be an int"):
        load_lm_model(codec=codec, num_codebooks=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"load_lm_model: unknown device 'gpu0'"):
        load_lm_model(codec=codec, device="gpu0")


# -- building a model -------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(channels=0), r"EncodecConfig.channels must be an integer >= 1, got 0"),
    (dict(ratios=[]), r"EncodecConfig.ratios must be a non-empty list"),
    (dict(ratios=[4, 0]), r"EncodecConfig.ratios must be a non-empty list of integers >= 1, got \[4, 0\]"),
    (dict(segment=0.0, causal=False), r"EncodecConfig.segment must be None or at least one sample"),
    (dict(segment=0.1, overlap=1.0, causal=False), r"EncodecConfig.overlap must be in \[0, 1\)"),
    (dict(pad_mode="mirror"), r"EncodecConfig.pad_mode must be one of reflect, .* got 'mirror'"),
])
def test_a_config_no_model_can_have_is_refused_when_building(change: dict, message: str) -> None:
    config = EncodecConfig(n_filters=2, dimension=4, n_q=2, bins=16, lstm=0, **change)
    with pytest.raises(ValueError, match=message):
        EncodecModel(config)


def test_a_dict_is_not_a_config() -> None:
    with pytest.raises(TypeError, match=r"EncodecModel expects an EncodecConfig, got dict; build one with"):
        EncodecModel({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"from_dict expects a dict, got list"):
        EncodecConfig.from_dict(["name"])  # type: ignore[arg-type]


def test_num_codebooks_of_a_bandwidth_that_is_not_a_number() -> None:
    model = _model()
    assert model.num_codebooks(0.9) == 2
    with pytest.raises(UnsupportedBandwidthError, match=r"bandwidth must be a number of kbps .* got '6' \(str\)"):
        model.num_codebooks("6")  # type: ignore[arg-type]


def test_a_model_on_the_meta_device_computes_shapes() -> None:
    model = _model().to("meta")
    with torch.inference_mode():
        (frame,) = model.encode(torch.empty(2, 1, 1000, device="meta"))
        assert frame.codes.shape == (2, model.num_codebooks(), 4) and frame.codes.is_meta
        out = model.decode([frame])
    assert out.shape == (2, 1, 1280) and out.is_meta
