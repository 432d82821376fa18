"""Differential fuzzing against the official package (random weights, both architectures):
inputs at segment and frame boundaries, silence / full scale / DC / near-silence (the 48 kHz
scale of a silent segment is 1e-8), batches against the official model, the official writer's
bytes with and without the entropy model (random, uniform and very peaked official LMs, and
past the LM's 3.5 s attention window), and state dicts both ways."""

from __future__ import annotations

import pytest
import torch
from encodec.model import LMModel

import official_ref
from opencodec.compress import compress, decompress
from opencodec.entropy import load_lm

official = official_ref.official_compress_module
BANDWIDTHS = {"encodec_24khz": [1.5, 3.0, 6.0, 12.0, 24.0], "encodec_48khz": [3.0, 6.0, 12.0, 24.0]}


def _signal(kind: str, channels: int, length: int, seed: int) -> torch.Tensor:
    """[1, C, T] test input of one ``kind``: noise, silence, full-scale square noise, DC, or
    noise at 1e-9 (its 48 kHz scale is dominated by the 1e-8 floor)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "silence":
        return torch.zeros(1, channels, length)
    if kind == "full":
        return torch.sign(torch.randn(1, channels, length, generator=gen))
    if kind == "dc":
        return torch.full((1, channels, length), 0.5)
    if kind == "tiny":
        return 1e-9 * torch.randn(1, channels, length, generator=gen)
    return (0.3 * torch.randn(1, channels, length, generator=gen)).clamp(-1, 1)


def _same_as_official(ref, ours, x: torch.Tensor, bandwidth: float) -> None:
    """Codes and scales equal, decoded audio bitwise equal, and for a batch of one the
    ``.ecdc`` bytes equal the official writer's and each side reads the other's."""
    length = x.shape[-1]
    ref.set_target_bandwidth(bandwidth)
    ours.set_target_bandwidth(bandwidth)
    try:
        with torch.no_grad():
            ref_frames, our_frames = ref.encode(x), ours.encode(x)
            assert len(ref_frames) == len(our_frames)
            for (rc, rs), (oc, os_) in zip(ref_frames, our_frames):
                assert torch.equal(oc, rc)
                assert (rs is None and os_ is None) or torch.equal(os_, rs)
            assert torch.equal(ours.decode(our_frames)[..., :length], ref.decode(ref_frames)[..., :length])
    finally:
        ours.bandwidth = None
    if x.shape[0] == 1:
        official_bytes = official.compress(ref, x[0], use_lm=False)
        assert compress(ours, x[0], bandwidth=bandwidth) == official_bytes
        our_wav, _ = decompress(official_bytes, ours)
        with official_ref.patched_official_models({ours.name: ref}):
            ref_wav, _ = official.decompress(official_bytes)
        assert our_wav.shape == (ours.channels, length)
        assert torch.equal(our_wav, ref_wav)


@pytest.mark.parametrize("kind", ["noise", "silence", "full", "dc", "tiny"])
@pytest.mark.parametrize("length", [1, 319, 320, 321])
def test_24khz_short_inputs_every_kind_match_official(official_models: dict, our_models: dict,
                                                      kind: str, length: int) -> None:
    for i, bandwidth in enumerate(BANDWIDTHS["encodec_24khz"]):
        x = _signal(kind, 1, length, seed=length + i)
        _same_as_official(official_models["encodec_24khz"], our_models["encodec_24khz"], x, bandwidth)


# one segment exactly, a stride minus/plus one, a segment plus one, two strides (+ 1 frame,
# + 1 sample): the overlap-add and the per-segment scale at every boundary
@pytest.mark.parametrize("length, kind", [
    (47_519, "noise"), (47_520, "silence"), (47_521, "full"), (47_521, "silence"), (48_000, "tiny"),
    (48_001, "silence"), (48_001, "noise"), (95_521, "full"),
])
def test_48khz_segment_boundaries_every_kind_match_official(official_models: dict, our_models: dict,
                                                            length: int, kind: str) -> None:
    bandwidth = BANDWIDTHS["encodec_48khz"][length % 4]
    x = _signal(kind, 2, length, seed=length)
    _same_as_official(official_models["encodec_48khz"], our_models["encodec_48khz"], x, bandwidth)


def test_48khz_silent_segment_scale_is_the_official_floor(our_models: dict) -> None:
    """A silent segment's scale is 1e-8 (float32) in the file, as the official writer puts it."""
    ours = our_models["encodec_48khz"]
    x = torch.zeros(1, 2, 48_001)
    x[..., :47_520] = 0.25  # first segment loud, second (samples 47520 on) silent
    with torch.no_grad():
        frames = ours.encode(x)
    assert frames[0].scale.item() == pytest.approx(0.25 * (47_520 / 48_000) ** 0.5, rel=1e-6)
    assert frames[1].scale.item() == torch.tensor(1e-8).item()


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_batch_matches_official_batch_and_items_alone(official_models: dict, our_models: dict,
                                                      name: str) -> None:
    """A batch (one loud, one silent, one quiet item) gives the official batch's codes, scales
    and audio; each item alone gives its row of the batch's codes."""
    ref, ours = official_models[name], our_models[name]
    gen = torch.Generator().manual_seed(5)
    x = 0.3 * torch.randn(3, ours.channels, ours.sample_rate + 77, generator=gen)
    x[0] *= 3
    x[1] = 0
    _same_as_official(ref, ours, x, BANDWIDTHS[name][2])
    ours.set_target_bandwidth(BANDWIDTHS[name][2])
    try:
        with torch.no_grad():
            batch = ours.encode(x)
            for i in range(3):
                alone = ours.encode(x[i:i + 1])
                for b, a in zip(batch, alone):
                    assert torch.equal(b.codes[i:i + 1], a.codes)
    finally:
        ours.bandwidth = None


def _official_lm(ref, seed: int, sharpness: float) -> LMModel:
    """An official entropy model with random weights, its output heads scaled by
    ``sharpness`` (0: uniform probabilities; 1e6: one bin takes almost everything)."""
    torch.manual_seed(seed)
    lm = LMModel(ref.quantizer.n_q, ref.quantizer.bins, num_layers=5, dim=200,
                 past_context=int(3.5 * ref.frame_rate)).eval()
    with torch.no_grad():
        for linear in lm.linears:
            linear.weight.mul_(sharpness)
            linear.bias.mul_(sharpness)
    return lm


def _same_lm_bytes_as_official(ref, ours, lm_ref: LMModel, wav: torch.Tensor, bandwidth: float) -> None:
    our_lm = load_lm(lm_ref.state_dict(), ours.n_q, frame_rate=ours.frame_rate)
    ref.set_target_bandwidth(bandwidth)
    saved = ref.get_lm_model
    ref.get_lm_model = lambda: lm_ref
    try:
        official_bytes = official.compress(ref, wav, use_lm=True)
        our_bytes = compress(ours, wav, bandwidth=bandwidth, lm=our_lm)
        assert our_bytes == official_bytes
        our_wav, _ = decompress(official_bytes, ours, lm=our_lm)
        with official_ref.patched_official_models({ours.name: ref}):
            ref_wav, _ = official.decompress(our_bytes)
        assert torch.equal(our_wav, ref_wav)
    finally:
        ref.get_lm_model = saved


@pytest.mark.parametrize("sharpness", [0.0, 200.0, 1e6])
@pytest.mark.parametrize("kind", ["noise", "silence"])
def test_24khz_entropy_coded_bytes_with_uniform_and_peaked_lms(official_models: dict, our_models: dict,
                                                               sharpness: float, kind: str) -> None:
    ref, ours = official_models["encodec_24khz"], our_models["encodec_24khz"]
    wav = _signal(kind, 1, 2_000, seed=int(sharpness) % 97)[0]
    _same_lm_bytes_as_official(ref, ours, _official_lm(ref, 100, sharpness), wav, 6.0)


def test_48khz_entropy_coded_bytes_peaked_lm_two_segments(official_models: dict, our_models: dict) -> None:
    ref, ours = official_models["encodec_48khz"], our_models["encodec_48khz"]
    wav = _signal("noise", 2, 48_001, seed=3)[0]
    wav[:, :20_000] = 0  # a silent stretch in the first segment
    _same_lm_bytes_as_official(ref, ours, _official_lm(ref, 101, 1e4), wav, 3.0)


@pytest.mark.slow
def test_24khz_entropy_coded_bytes_past_the_lm_context(official_models: dict, our_models: dict) -> None:
    """272 frames: past the official LM's 262-frame (3.5 s) attention window."""
    ref, ours = official_models["encodec_24khz"], our_models["encodec_24khz"]
    wav = _signal("noise", 1, 272 * 320 - 5, seed=4)[0]
    _same_lm_bytes_as_official(ref, ours, _official_lm(ref, 102, 1.0), wav, 1.5)


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_state_dict_round_trip_into_official(official_models: dict, our_models: dict, name: str) -> None:
    """Our state dict loads strictly into a fresh official model, giving the same codes."""
    ref, ours = official_models[name], our_models[name]
    fresh = official_ref.make_official_model(name, seed=9)
    fresh.load_state_dict(ours.state_dict())
    expected = ref.state_dict()
    assert set(fresh.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
    x = _signal("noise", ours.channels, 4_000, seed=8)
    _same_as_official(fresh, ours, x, BANDWIDTHS[name][-1])


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_training_mode_model_compresses_as_official(official_models: dict, our_models: dict, name: str) -> None:
    """A model left in training mode gives the official bytes, keeps its codebooks unchanged
    and stays in training mode."""
    ref, ours = official_models[name], our_models[name]
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ref.train()
    ours.train()
    try:
        wav = _signal("noise", ours.channels, 5_000, seed=3)[0]
        ref.set_target_bandwidth(6.0)
        assert compress(ours, wav, bandwidth=6.0) == official.compress(ref, wav, use_lm=False)
        assert ours.training
        assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())
    finally:
        ref.eval()
        ours.eval()


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_lm_state_dict_round_trip_into_official(official_models: dict, our_models: dict, name: str) -> None:
    """An official entropy model's weights loaded into ours come back out with the same keys
    and values, and load strictly into a fresh official LMModel."""
    ref, ours = official_models[name], our_models[name]
    lm_ref = _official_lm(ref, 103, 1.0)
    our_lm = load_lm(lm_ref.state_dict(), ours.n_q, frame_rate=ours.frame_rate)
    fresh = _official_lm(ref, 104, 1.0)
    fresh.load_state_dict(our_lm.state_dict())
    expected = lm_ref.state_dict()
    assert set(fresh.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
