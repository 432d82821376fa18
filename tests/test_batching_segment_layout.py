"""``encode_batch``/``decode_batch`` against ``encode_each`` at segment boundaries, overlap 0,
and one layout for a segmented item's code width and segment spans."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import opencodec.batching as batching
import opencodec.model as model_module
from opencodec import EncodecConfig, EncodecModel
from opencodec.batching import decode_batch, encode_batch, encode_each
from opencodec.errors import InvalidCodesError
from opencodec.model import EncodedFrame

from codec_helpers import no_overlap  # noqa: F401, F811 (pytest fixtures)
from official_ref import random_codebooks


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


# -- 4. one layout for a segmented item's codes ---------------------------------------------------------------
def test_segment_spans_and_code_width_come_from_one_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout with a gap (segment 1 one frame late) leaves no frame at -1 silently: the width
    is the spans' frame count, so the late span falls outside it. The real layout's codes are
    encode_each's, bit for bit."""
    model = EncodecModel(dataclasses.replace(EncodecConfig.encodec_48khz(), n_filters=4, dimension=8, n_q=2,
                                             lstm=0))
    wav = 0.1 * torch.randn(2, 2, 96_000, generator=torch.Generator().manual_seed(0))
    lengths = [47_521, 96_000]
    batched, each = encode_batch(model, wav, lengths), encode_each(model, wav, lengths)
    assert torch.equal(batched.codes, each.codes) and torch.equal(batched.frame_lengths, each.frame_lengths)

    def late_layout(model: EncodecModel, length: int) -> list[tuple[int, int]]:
        full = model.num_frames(model.segment_length)
        return [(s * full, model.num_frames(n)) for s, (_, n) in enumerate(model.segments(length))]

    monkeypatch.setattr(batching, "_segment_frame_spans", late_layout)
    with pytest.raises(AssertionError, match=r"segment frames 150:151 outside codes of 150 frames"):
        encode_batch(model, wav[:1], [47_521])
