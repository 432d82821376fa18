"""Our models against the official package, with the same random weights.

Weights go through a real checkpoint file and ``load_model`` (the user's path), then
codes must be identical and decoded audio bitwise equal (the default, exact decoder; one
thread, as the whole suite runs).
"""

from __future__ import annotations

import pytest
import torch

from opencodec import EncodecModel
from opencodec.pretrained import load_model

NAMES = ["encodec_24khz", "encodec_48khz"]
BANDWIDTHS = {"encodec_24khz": [1.5, 3.0, 6.0, 12.0, 24.0], "encodec_48khz": [3.0, 6.0, 12.0, 24.0]}


@pytest.fixture(scope="module")
def ours(official_checkpoints: dict) -> dict[str, EncodecModel]:
    return {name: load_model(path) for name, path in official_checkpoints.items()}


def _signal(channels: int, length: int, seed: int) -> torch.Tensor:
    """Noise plus a few tones, so every codebook sees a varied input."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    tones = sum(torch.sin(2 * torch.pi * f * t) for f in (110.0, 440.0, 2500.0)) / 6
    return (0.3 * torch.randn(1, channels, length, generator=gen) + tones).clamp(-1, 1)


def _compare(ref, model: EncodecModel, bandwidth: float, length: int, seed: int) -> None:
    ref.set_target_bandwidth(bandwidth)
    model.set_target_bandwidth(bandwidth)
    x = _signal(model.channels, length, seed)
    with torch.no_grad():
        ref_frames = ref.encode(x)
        our_frames = model.encode(x)
        assert len(ref_frames) == len(our_frames) == len(model.segments(length))
        for (rc, rs), (oc, os_) in zip(ref_frames, our_frames):
            assert oc.dtype == torch.long
            assert oc.shape == rc.shape
            assert oc.shape[1] == model.num_codebooks()
            assert torch.equal(oc, rc)
            if rs is None:
                assert os_ is None
            else:
                assert torch.equal(os_, rs)
        ref_out = ref.decode(ref_frames)[:, :, :length]
        our_out = model.decode(our_frames)[:, :, :length]
    assert our_out.shape == (1, model.channels, length)
    # The default (exact) decoder gives bitwise the official audio (one thread: conftest).
    assert model.exact_decode
    assert torch.equal(our_out, ref_out), ((our_out - ref_out).norm() / ref_out.norm()).item()
    # Codes actually vary, within each codebook and with the input (the comparison is not
    # between constant outputs).
    codes = our_frames[0].codes
    if codes.shape[-1] >= 4:
        assert all(len(torch.unique(codes[0, k])) > 1 for k in range(codes.shape[1]))
        with torch.no_grad():
            other = model.encode(_signal(model.channels, length, seed + 1))[0].codes
        assert not torch.equal(other, codes)


def test_loaded_name_and_config(ours: dict) -> None:
    assert ours["encodec_24khz"].name == "encodec_24khz"
    assert ours["encodec_24khz"].config.causal and not ours["encodec_24khz"].normalize
    assert ours["encodec_48khz"].name == "encodec_48khz"
    assert ours["encodec_48khz"].segment_length == 48000
    assert ours["encodec_48khz"].segment_stride == 47520
    assert sum(p.numel() for p in ours["encodec_24khz"].parameters()) == 14_851_810
    assert sum(p.numel() for p in ours["encodec_48khz"].parameters()) == 14_856_294
    assert len(ours["encodec_24khz"].state_dict()) == 252
    assert len(ours["encodec_48khz"].state_dict()) == 224


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [1, 100, 319, 321, 24000 + 17])
def test_equal_to_official_all_bandwidths(official_models: dict, ours: dict, name: str, length: int) -> None:
    for i, bw in enumerate(BANDWIDTHS[name]):
        _compare(official_models[name], ours[name], bw, length, seed=length + i)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_equal_to_official_ten_seconds(official_models: dict, ours: dict, name: str) -> None:
    length = 10 * ours[name].sample_rate + 123
    for i, bw in enumerate(BANDWIDTHS[name]):
        _compare(official_models[name], ours[name], bw, length, seed=7 + i)


def test_frame_counts(ours: dict) -> None:
    model = ours["encodec_24khz"]
    model.set_target_bandwidth(6.0)
    for length in (1, 320, 321, 24000):
        frames = model.encode(torch.zeros(1, 1, length))
        assert frames[0].codes.shape == (1, 8, -(-length // 320))


def test_bandwidth_to_codebooks(ours: dict) -> None:
    assert [ours["encodec_24khz"].num_codebooks(b) for b in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert [ours["encodec_48khz"].num_codebooks(b) for b in (3, 6, 12, 24)] == [2, 4, 8, 16]
    with pytest.raises(ValueError, match="does not support"):
        ours["encodec_24khz"].set_target_bandwidth(5.0)


# bandwidths that are not multiples of one codebook's cost (0.75 kbps at 24 kHz, 1.5 at 48 kHz),
# below one codebook, at and past the largest, and 0 / negative (= every codebook)
ANY_BANDWIDTHS = ([0.0, -1.0, 0.01, 0.5, 0.74, 0.75, 0.76, 1.0, 1.49, 2.2, 4.0, 5.0, 7.4,
                   11.99, 13.1, 23.9, 24.0, 24.1, 100.0]
                  + [0.25 * i for i in range(1, 110)])


@pytest.mark.parametrize("name", NAMES)
def test_any_bandwidth_to_codebooks_as_official(official_models: dict, ours: dict, name: str) -> None:
    """``num_codebooks`` at any bandwidth, not only the supported ones, is the official
    ``ResidualVectorQuantizer.get_num_quantizers_for_bandwidth`` (which the official encoder
    then caps at its ``n_q`` codebooks by slicing the layers)."""
    ref, model = official_models[name], ours[name]
    assert model.frame_rate == ref.frame_rate and model.quantizer.n_q == ref.quantizer.n_q
    for bw in ANY_BANDWIDTHS:
        expected = min(ref.quantizer.n_q,
                       ref.quantizer.get_num_quantizers_for_bandwidth(ref.frame_rate, bw))
        assert model.num_codebooks(bw) == expected, bw


def test_any_bandwidth_to_codebooks_spec_values(ours: dict) -> None:
    # spec section 5: n = max(1, floor(bw * 1000 / (log2(bins) * frame_rate))), at most n_q
    m24, m48 = ours["encodec_24khz"], ours["encodec_48khz"]
    assert [m24.num_codebooks(b) for b in (0.1, 0.5, 0.75, 1.4, 5.0, 23.9, 100.0)] == [
        1, 1, 1, 1, 6, 31, 32]
    assert [m48.num_codebooks(b) for b in (0.5, 1.5, 2.9, 4.0, 23.9, 100.0)] == [1, 1, 1, 2, 15, 16]


def test_bad_input_shapes(ours: dict) -> None:
    model = ours["encodec_24khz"]
    with pytest.raises(ValueError, match="shape"):
        model.encode(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="channel"):
        model.encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match="empty"):
        model.encode(torch.zeros(1, 1, 0))


def test_segment_lengths_the_reference_overlap_add_cannot_size(official_models: dict, ours: dict) -> None:
    """95300 samples at 48 kHz: the second segment decodes to 48000 samples (rounded up to
    whole frames) and ends after the third; the reference's overlap-add raises here."""
    model = ours["encodec_48khz"]
    model.set_target_bandwidth(6.0)
    x = _signal(2, 95_300, seed=3)
    with torch.no_grad():
        frames = model.encode(x)
        out = model.decode(frames)[:, :, : x.shape[-1]]
        # The reference, where it can: the official decoder on each segment, then the
        # official overlap-add's formula (triangle weights, normalised by their sum) into
        # a buffer as long as the segment that ends last.
        ref = official_models["encodec_48khz"]
        ref.set_target_bandwidth(6.0)
        ref_frames = ref.encode(x)
        for (codes, scale), (ref_codes, ref_scale) in zip(frames, ref_frames):
            assert torch.equal(codes, ref_codes) and torch.equal(scale, ref_scale)
        pieces = [ref._decode_frame(f) for f in ref_frames]
    stride = model.segment_stride
    assert [p.shape[-1] for p in pieces] == [48_000, 48_000, 320]
    size = max(i * stride + p.shape[-1] for i, p in enumerate(pieces))
    assert size > stride * (len(pieces) - 1) + pieces[-1].shape[-1]  # what the reference sizes
    t = torch.linspace(0, 1, pieces[0].shape[-1] + 2)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    total = torch.zeros(1, 2, size)
    weights = torch.zeros(size)
    for i, piece in enumerate(pieces):
        n = piece.shape[-1]
        total[..., i * stride:i * stride + n] += weight[:n] * piece
        weights[i * stride:i * stride + n] += weight[:n]
    expected = (total / weights)[:, :, : x.shape[-1]]
    assert out.shape == x.shape
    assert torch.equal(out, expected)
