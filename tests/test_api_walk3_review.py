"""Review of Python API walkthrough 3 (commit 6f0202a and older): what the review found.

- ``model.decode`` refused its own ``encode`` output for a segmenting model with ``overlap=0``
  whose segment is a whole number of hops (a 1 s 24 kHz segment: every input longer than one
  segment): a segment before the last was required to have the frames of ``stride + 1``
  samples, one more than a whole segment's when the stride is the segment.
- ``batching.encode_batch`` placed segment s of an item at frame ``s * ceil(segment / hop)``,
  assuming every segment before it whole: a 48 kHz item of 47521-47680 samples (segment 0 of
  149 frames, segment 1 of 1) had its last frame silently left at -1 (a 1-frame write into an
  empty slice broadcasts), as had 95041 samples ([150, 149, 1] frames); ``decode_batch`` read
  the same wrong layout and refused such items, also ``encode_each``'s correct ones (so the
  tokenizer's rows of such files could not be decoded back, on the CPU too).
- ``load_model(device=0)`` (an int, which torch takes as the accelerator's index) was a
  ``TypeError``; ``num_codebooks(nan)`` failed inside ``math.floor``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import opencodec.batching as batching
import opencodec.model as model_module
from official_ref import random_codebooks
from opencodec import EncodecConfig, EncodecModel
from opencodec.batching import decode_batch, encode_batch, encode_each
from opencodec.errors import InvalidCodesError, UnsupportedBandwidthError
from opencodec.input_checks import check_device
from opencodec.model import EncodedFrame
from opencodec.pretrained import load_model
from stream_models import tiny_stream_model


def _wav(batch: int, channels: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, channels, length, generator=gen)


def _shapes_only(config: EncodecConfig, monkeypatch: pytest.MonkeyPatch) -> EncodecModel:
    """A model of ``config``'s geometry whose ``decode`` runs its checks only (no decoder)."""
    model = EncodecModel(dataclasses.replace(config, n_filters=2, dimension=4, n_q=2, lstm=0))
    monkeypatch.setattr(model, "_decode_segments", lambda frames: [])
    monkeypatch.setattr(model_module, "linear_overlap_add", lambda frames, stride: None)
    return model


def _encode_shapes(model: EncodecModel, length: int) -> list[EncodedFrame]:
    """Codes of the shapes ``model.encode`` gives an input of ``length`` samples."""
    return [EncodedFrame(torch.zeros(1, 1, model.num_frames(n), dtype=torch.long), None)
            for _, n in model.segments(length)]


# -- model.decode with overlap 0 ------------------------------------------------------------------
S24, S48 = EncodecConfig.encodec_24khz(), EncodecConfig.encodec_48khz()


@pytest.mark.parametrize("config, lengths", [
    (dataclasses.replace(S24, segment=1.0, overlap=0.0), range(23_000, 50_000, 7)),
    (dataclasses.replace(S24, segment=320 / 24000, overlap=0.0), range(1, 3_000)),  # one hop
    (dataclasses.replace(S24, segment=0.02, overlap=0.0), range(1, 3_000)),  # 1.5 hops
    (dataclasses.replace(S48, overlap=0.0), [*range(47_000, 49_000, 3), *range(95_500, 96_700, 3)]),
    (S48, [*range(47_000, 48_700), *range(94_500, 96_300)]),
    (dataclasses.replace(S24, segment=0.5, overlap=0.5), range(1, 30_000, 5)),
    (dataclasses.replace(S24, segment=0.01, overlap=0.01), range(1, 2_000)),  # segment < a hop
], ids=["24k-1s-ov0", "24k-1hop-ov0", "24k-1.5hops-ov0", "48k-ov0", "48k", "24k-half-ov0.5", "24k-tiny"])
def test_decode_takes_the_segments_encode_gives_for_every_length(
        config: EncodecConfig, lengths: range, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _shapes_only(config, monkeypatch)
    refused = []
    for length in lengths:
        try:
            model.decode(_encode_shapes(model, length))
        except InvalidCodesError as exc:
            refused.append((length, str(exc)))
    assert refused == []


@pytest.fixture(scope="module")
def no_overlap() -> EncodecModel:
    """A tiny model with segments of 960 samples (3 whole hops) and no overlap."""
    model = tiny_stream_model("review_ov0", 11, causal=False, segment=0.04, overlap=0.0)
    model.set_target_bandwidth(1.8)
    return model


@pytest.mark.parametrize("length", [961, 1280, 1920, 1921, 2500, 2880])
def test_overlap_zero_decodes_encode_output_as_its_segments_one_after_another(
        no_overlap: EncodecModel, length: int) -> None:
    """With no overlap, the decoding is each segment's decoding, placed every 960 samples."""
    with torch.inference_mode():
        frames = no_overlap.encode(_wav(1, 1, length, seed=length))
        assert [f.codes.shape[-1] for f in frames][:-1] == [3] * (len(frames) - 1)
        out = no_overlap.decode(frames)
        alone = torch.cat([no_overlap.decode([f]) for f in frames], dim=-1)
    assert out.shape == alone.shape and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, alone, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("order, message", [
    ([1, 0], r"segment 0: 2 code frame\(s\), but a segment before the last .* has at least 3"),
    ("short", r"segment 0: 2 code frame\(s\), but a segment before the last .* has at least 3 "),
    ("long", r"segment 0: 6 code frame\(s\), but a segment before the last .* has 3 "),
    ([0, 0, 0, 1, 1], r"segment 3: 2 code frame\(s\), but a segment before the last .* has 3 "),
])
def test_overlap_zero_still_refuses_segments_encode_cannot_give(
        no_overlap: EncodecModel, order: list[int] | str, message: str) -> None:
    with torch.inference_mode():
        frames = no_overlap.encode(_wav(1, 1, 1500))  # segments of 3 and 2 frames
        assert [f.codes.shape[-1] for f in frames] == [3, 2]
        if order == "short":
            wrong = [EncodedFrame(frames[0].codes[..., :2], frames[0].scale), frames[1]]
        elif order == "long":
            wrong = [EncodedFrame(frames[0].codes.repeat(1, 1, 2), frames[0].scale), frames[1]]
        else:
            assert isinstance(order, list)
            wrong = [frames[i] for i in order]
        with pytest.raises(InvalidCodesError, match=message):
            no_overlap.decode(wrong)


# -- encode_batch / decode_batch at 48 kHz's segment boundaries -----------------------------------
BOUNDARY = [47_519, 47_520, 47_521, 47_600, 47_680, 47_681, 95_041]


@pytest.fixture(scope="module")
def model48() -> EncodecModel:
    """The 48 kHz architecture with random weights, codebooks drawn from its own latents."""
    torch.manual_seed(7)
    model = random_codebooks(EncodecModel(EncodecConfig.encodec_48khz()), 7).eval()
    model.set_target_bandwidth(6.0)
    return model


@pytest.fixture(scope="module")
def boundary_batch(model48: EncodecModel) -> tuple[torch.Tensor, batching.BatchEncoding]:
    wav = _wav(len(BOUNDARY), 2, max(BOUNDARY), seed=48) * 3
    return wav, encode_batch(model48, wav, BOUNDARY)


def test_encode_batch_gives_each_item_its_codes_alone_at_segment_boundaries(
        model48: EncodecModel, boundary_batch: tuple[torch.Tensor, batching.BatchEncoding]) -> None:
    """As tests/test_batching.py: codes bitwise, audio within 1e-5 (measured: bitwise)."""
    wav, enc = boundary_batch
    audio, lengths = decode_batch(model48, enc)
    assert lengths.tolist() == BOUNDARY
    for b, n in enumerate(BOUNDARY):
        with torch.inference_mode():
            frames = model48.encode(wav[b: b + 1, :, :n])
            single_audio = model48.decode(frames)[0, :, :n]
        codes = torch.cat([f.codes for f in frames], dim=-1)[0]
        f = int(enc.frame_lengths[b])
        assert f == codes.shape[-1], n
        assert torch.equal(enc.codes[b, :, :f], codes), n
        assert (enc.codes[b, :, f:] == -1).all(), n
        torch.testing.assert_close(enc.scales[b, : len(frames)], torch.cat([fr.scale.reshape(1) for fr in frames]))
        err = (audio[b, :, :n] - single_audio).norm() / single_audio.norm()
        assert err < 1e-5, (n, float(err))


def test_decode_batch_and_decode_row_take_encode_each_at_segment_boundaries(
        model48: EncodecModel, boundary_batch: tuple[torch.Tensor, batching.BatchEncoding]) -> None:
    """``encode_each`` (the tokenizer's CPU path) was right; decoding its items was refused."""
    from opencodec.tokens.dataset import decode_row

    wav, enc = boundary_batch
    lengths = BOUNDARY[2:5]
    each = encode_each(model48, wav[2:5], lengths)
    assert torch.equal(each.codes, enc.codes[2:5, :, : each.codes.shape[-1]])
    audio, _ = decode_batch(model48, each)
    for b, n in enumerate(lengths):
        f = int(each.frame_lengths[b])
        row = {"codes": each.codes[b, :, :f].to(torch.int16), "num_samples": n,
               "scales": each.scales[b, :2]}
        torch.testing.assert_close(decode_row(model48, row), audio[b, :, :n], rtol=0, atol=0)


def test_a_segment_layout_that_does_not_fit_the_codes_is_an_error_not_silent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the old layout (segment s at ``s * 150`` frames) the 1-frame write of segment 1
    into an empty slice broadcast silently; now any span outside the codes is an error."""
    model = EncodecModel(dataclasses.replace(S48, n_filters=4, dimension=8, n_q=2, lstm=0))

    def old_layout(model: EncodecModel, length: int) -> list[tuple[int, int]]:
        full = model.num_frames(model.segment_length)
        return [(s * full, model.num_frames(n)) for s, (_, n) in enumerate(model.segments(length))]

    def frames_summed(model: EncodecModel, length: int) -> int:
        return sum(model.num_frames(n) for _, n in model.segments(length))

    monkeypatch.setattr(batching, "_segment_frame_spans", old_layout)
    monkeypatch.setattr(batching, "_item_frames", frames_summed)  # the codes' width, as before
    with pytest.raises(AssertionError, match=r"segment frames 150:151 outside codes of 150 frames"):
        encode_batch(model, _wav(1, 2, 47_521), [47_521])
    with pytest.raises(AssertionError, match=r"segment frames 150:151 outside codes of 150 frames"):
        decode_batch(model, encode_each(model, _wav(1, 2, 47_521), [47_521]))


# -- device and bandwidth arguments ---------------------------------------------------------------
def test_load_model_takes_an_int_device_as_torch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.pretrained as pretrained

    def no_read(*args: object) -> None:
        raise AssertionError("weights read before the arguments were checked")

    assert check_device("cpu") == torch.device("cpu") == check_device(torch.device("cpu"))
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    for index in (0, np.int64(0)):
        if torch.cuda.is_available():
            assert check_device(index) == torch.device("cuda", 0)
        elif not accelerator:
            with pytest.raises(ValueError, match=r"load_model: device 0 \(an accelerator index\) is not "
                                                 r"available here"):
                check_device(index)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        for device in (count, f"cuda:{count}"):
            with pytest.raises(ValueError, match=rf"this machine has {count} CUDA device\(s\)"):
                check_device(device)
    elif not accelerator:
        monkeypatch.setattr(pretrained, "read_weights", no_read)
        with pytest.raises(ValueError, match=r"load_model: device 0 \(an accelerator index\) is not available"):
            load_model(device=0)
    with pytest.raises(ValueError, match=r"load_model: device index must be >= 0 \(0 for cuda:0\), got -1"):
        check_device(-1)
    for bad in (True, torch.tensor(0), 0.0, None):  # what torch.device refuses too
        with pytest.raises(TypeError, match=r"load_model: device must be a str .*, an int .* or a torch.device"):
            check_device(bad)


def test_num_codebooks_takes_what_set_target_bandwidth_takes(no_overlap: EncodecModel) -> None:
    """Numbers, numpy's included; a tensor is refused by both (with how to pass it), as are NaN
    and inf (num_codebooks failed inside math.floor)."""
    expected = no_overlap.num_codebooks(1.8)
    for bandwidth in (np.float32(1.8), np.float64(1.8)):
        assert no_overlap.num_codebooks(bandwidth) == expected
    assert no_overlap.num_codebooks(np.int64(2)) == no_overlap.num_codebooks(2.0)
    with pytest.raises(UnsupportedBandwidthError, match=r"got tensor\(1.8000\) \(Tensor\); pass float\(t\)"):
        no_overlap.num_codebooks(torch.tensor(1.8))
    with pytest.raises(UnsupportedBandwidthError, match="bandwidth must be a number"):
        no_overlap.set_target_bandwidth(torch.tensor(1.8))  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), np.float32("-inf")):
        with pytest.raises(UnsupportedBandwidthError, match=r"bandwidth must be a finite number of kbps, got"):
            no_overlap.num_codebooks(bad)
