"""Small models against the official ``encodec`` package: fast, bitwise checks of what the
full-size comparisons (tests/test_model_official.py) cover slowly or not at all.

Two small architectures are built from the official modules with random weights and loaded
into ours through the state dict:

* ``causal``: mono, causal, weight norm, strides [3, 2] (hop 6) at 8 kHz, so that the frame
  rate is not a whole number (8000 / 6 = 1333.3, rounded up to 1334 by the official model)
  and one supported bandwidth (16 kbps) gets 2 codebooks only because of that rounding;
* ``segmented``: stereo, non-causal, time group norm, renormalising, 75 ms segments with 1 %
  overlap, two residual layers (dilation 1 and 2), a compress factor of 4 and an odd stride
  (3: the non-causal padding and trim split an odd number of samples).

Codes, scales and decoded audio must equal the official ones bit for bit (the exact decoder),
the approximate decoder must stay within 1e-5 relative L2 of it, and the configuration's
derived sizes (frame rate, segment length and stride) must follow the official formulas for
awkward values too.
"""

from __future__ import annotations

import math
import typing as tp

import pytest
import torch

import official_ref
from encodec import modules as official_modules
from encodec import quantization as official_quantization
from opencodec import EncodecConfig, EncodecModel
from opencodec.model import linear_overlap_add

SMALL: dict[str, dict[str, tp.Any]] = {
    "causal": dict(sample_rate=8000, channels=1, causal=True, norm="weight_norm", normalize=False,
                   segment=None, ratios=[3, 2], n_filters=4, dimension=8, n_q=4, bins=16, lstm=1,
                   n_residual_layers=1, compress=2, true_skip=False, target_bandwidths=[16.0, 24.0]),
    "segmented": dict(sample_rate=8000, channels=2, causal=False, norm="time_group_norm", normalize=True,
                      segment=0.075, ratios=[3, 2], n_filters=8, dimension=8, n_q=4, bins=16, lstm=1,
                      n_residual_layers=2, compress=4, true_skip=False, target_bandwidths=[16.0, 32.0]),
}
_SEANET_KEYS = ("channels", "dimension", "n_filters", "n_residual_layers", "ratios", "norm", "causal",
                "true_skip", "compress", "lstm")


def _pair(name: str, seed: int) -> tuple[tp.Any, EncodecModel]:
    """(official model, ours with its weights) of the small architecture ``name``."""
    spec = SMALL[name]
    torch.manual_seed(seed)
    seanet = {key: spec[key] for key in _SEANET_KEYS}
    encoder = official_modules.SEANetEncoder(**seanet)
    decoder = official_modules.SEANetDecoder(**seanet)
    quantizer = official_quantization.ResidualVectorQuantizer(dimension=spec["dimension"], n_q=spec["n_q"],
                                                              bins=spec["bins"])
    ref = official_ref.EncodecModelRef(encoder, decoder, quantizer, spec["target_bandwidths"],
                                       spec["sample_rate"], spec["channels"], normalize=spec["normalize"],
                                       segment=spec["segment"], name=f"small_{name}")
    official_ref.fitted_codebooks(ref, seed + 1)
    ref.eval()
    ours = EncodecModel(EncodecConfig(name=f"small_{name}", **spec))
    ours.load_state_dict(ref.state_dict())
    return ref, ours.eval()


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[tp.Any, EncodecModel]]:
    return {name: _pair(name, seed) for seed, name in enumerate(SMALL)}


def _signal(channels: int, length: int, seed: int, level: float = 1.0) -> torch.Tensor:
    """Noise plus tones at 8 kHz, scaled by ``level`` (a loud or quiet input exercises the
    renormalisation)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 8000
    tones = (torch.sin(2 * math.pi * 220 * t) + torch.sin(2 * math.pi * 1900 * t)) / 4
    return level * (0.3 * torch.randn(1, channels, length, generator=gen) + tones)


LENGTHS = {"causal": [1, 2, 5, 6, 7, 31, 599, 601, 1203],
           "segmented": [1, 5, 7, 599, 600, 601, 1500, 2003]}


@pytest.mark.parametrize("name", list(SMALL))
def test_codes_scales_and_audio_equal_official(pairs: dict, name: str) -> None:
    """Every bandwidth, lengths around the kernel sizes, a frame, a segment and several
    segments: codes, scales and the exact decoder's audio are the official ones bit for bit."""
    ref, ours = pairs[name]
    assert ours.frame_rate == ref.frame_rate == 1334
    for i, length in enumerate(LENGTHS[name]):
        for bw in SMALL[name]["target_bandwidths"]:
            ref.set_target_bandwidth(bw)
            ours.set_target_bandwidth(bw)
            x = _signal(ours.channels, length, seed=100 * i + int(bw), level=(0.05, 3.0)[i % 2])
            with torch.no_grad():
                ref_frames = ref.encode(x)
                our_frames = ours.encode(x)
                assert len(our_frames) == len(ref_frames), length
                for (oc, os_), (rc, rs) in zip(our_frames, ref_frames):
                    assert oc.shape == rc.shape and torch.equal(oc, rc), (length, bw)
                    assert (os_ is None and rs is None) or torch.equal(os_, rs), (length, bw)
                ref_audio = ref.decode(ref_frames)
                our_audio = ours.decode(our_frames)
            assert our_audio.shape == ref_audio.shape, length
            assert torch.equal(our_audio, ref_audio), (length, bw)


def test_codes_vary_and_the_bandwidth_selects_codebooks(pairs: dict) -> None:
    """The comparison above is not between constant codes: codes follow the input, and the
    frame rate's rounding up (1334 Hz) makes 16 kbps two codebooks (1333 Hz would give three)."""
    ref, ours = pairs["causal"]
    assert [ours.num_codebooks(bw) for bw in (16.0, 24.0)] == [2, 4]
    assert ours.num_codebooks(16.0) == ref.quantizer.get_num_quantizers_for_bandwidth(ref.frame_rate, 16.0)
    ours.set_target_bandwidth(24.0)
    with torch.no_grad():
        a = ours.encode(_signal(1, 1203, seed=1))[0].codes
        b = ours.encode(_signal(1, 1203, seed=2))[0].codes
    assert a.shape == (1, 4, 201)
    assert not torch.equal(a, b)
    assert all(len(torch.unique(a[0, k])) > 2 for k in range(4))


@pytest.mark.parametrize("name", list(SMALL))
def test_approximate_decoder_close_to_exact(pairs: dict, name: str) -> None:
    """``exact_decode`` off: other kernels (channels-last, fused bias, the narrow last conv, the
    group norm's affine map), within 1e-5 relative L2 of the exact audio, and not equal to it
    (the flag takes effect)."""
    _, ours = pairs[name]
    ours.set_target_bandwidth(SMALL[name]["target_bandwidths"][-1])
    x = _signal(ours.channels, 2003, seed=7)
    with torch.inference_mode():
        frames = ours.encode(x)
        exact = ours.decode(frames)
        ours.exact_decode = False
        try:
            assert not ours.exact
            approximate = ours.decode(frames)
        finally:
            ours.exact_decode = True
    assert ours.exact and ours.exact_decode
    assert approximate.shape == exact.shape
    assert not torch.equal(approximate, exact)
    assert ((approximate - exact).norm() / exact.norm()).item() < 1e-5


@pytest.mark.parametrize("items", [1, 2])
def test_segmented_batched_decode_equals_one_at_a_time(pairs: dict, items: int) -> None:
    """Approximate decoder of a segmenting model: segments decoded in one batch give bitwise
    what decoding each alone gives (a lone segment is run in a batch of two), for a batch of
    one item or of two (whose rows must stay with their item), and each item's audio is
    what decoding that item alone gives."""
    _, ours = pairs["segmented"]
    ours.set_target_bandwidth(32.0)
    x = torch.cat([_signal(2, 4 * 594 + 300, seed=9 + i, level=(1.0, 0.1)[i]) for i in range(items)])
    with torch.inference_mode():
        frames = ours.encode(x)
        assert len(frames) == 5
        ours.exact_decode = False
        try:
            batched = ours.decode(frames)
            alone = linear_overlap_add([ours._decode_segment(*f) for f in frames], ours.segment_stride)
            each = [ours.decode([(f.codes[i: i + 1], f.scale[i: i + 1]) for f in frames]) for i in range(items)]
        finally:
            ours.exact_decode = True
        exact = ours.decode(frames)
    assert batched.shape == exact.shape == (items, 2, x.shape[-1])
    assert torch.equal(batched, alone)
    for i in range(items):
        assert torch.equal(batched[i: i + 1], each[i]), i
    assert ((batched - exact).norm() / exact.norm()).item() < 1e-5


def test_exact_switches_both_halves(pairs: dict) -> None:
    _, ours = pairs["causal"]
    try:
        ours.exact_decode = False
        assert not ours.exact and ours.encoder.exact
        ours.exact_decode = True
        ours.encoder.exact = False
        assert not ours.exact and ours.exact_decode
        ours.exact = False
        assert not ours.encoder.exact and not ours.decoder.exact
        ours.exact = True
        assert ours.encoder.exact and ours.decoder.exact and ours.exact
    finally:
        ours.exact = True


def test_float64_scale_decodes_to_float32(pairs: dict) -> None:
    """A scale given in float64 scales the audio but does not make it float64."""
    _, ours = pairs["segmented"]
    ours.set_target_bandwidth(16.0)
    with torch.no_grad():
        (frame,) = ours.encode(_signal(2, 300, seed=3))
        audio = ours.decode([(frame.codes, frame.scale)])
        audio64 = ours.decode([(frame.codes, frame.scale.double())])
    assert audio64.dtype == torch.float32
    torch.testing.assert_close(audio64, audio, rtol=1e-6, atol=0)


def test_train_forward_scales_back_like_decode() -> None:
    """``train_forward`` of a renormalising model (no segments) divides by the RMS and
    multiplies the reconstruction back: in eval mode without autograd it gives what
    ``decode(encode(x))`` gives, at the input's level (a loud input: a missing rescale
    is off by its scale)."""
    model = _small_normalizing(5)
    x = _signal(1, 601, seed=11, level=6.0)
    with torch.no_grad():
        (frame,) = model.encode(x)
        assert frame.scale is not None and frame.scale.item() > 2.0
        expected = model.decode([frame])[:, :, :601]
        out, q = model.train_forward(x)
    assert torch.equal(q.codes, frame.codes)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


# -- the configuration's derived sizes -------------------------------------------------------
def test_derived_sizes_follow_the_official_formulas(pairs: dict) -> None:
    """Frame rate (rounded up), segment length and stride (truncated) as the official model
    computes them, for rates and fractions that do not divide evenly (where rounding to
    nearest, or down, would differ)."""
    ref, _ = pairs["segmented"]
    cases = [(8000, [3, 2], 0.075, 0.01), (22050, [8, 5, 4, 2], 1.0, 0.01), (1000, [3], 0.0017, 0.0),
             (1000, [3], 1.0, 0.0013), (44100, [7, 5], 0.0101, 0.2501)]
    for rate, ratios, segment, overlap in cases:
        config = EncodecConfig(sample_rate=rate, ratios=ratios, segment=segment, overlap=overlap)
        ref.sample_rate, ref.segment, ref.overlap = rate, segment, overlap
        assert config.frame_rate == math.ceil(rate / math.prod(ratios))
        assert config.segment_length == ref.segment_length, (rate, segment)
        assert config.segment_stride == ref.segment_stride, (rate, segment, overlap)
    ref.sample_rate, ref.segment, ref.overlap = 8000, 0.075, 0.01
    # the cases above reach the rounding: values that round-to-nearest would change
    assert EncodecConfig(sample_rate=1000, segment=0.0017).segment_length == 1
    assert EncodecConfig(sample_rate=1000, segment=1.0, overlap=0.0013).segment_stride == 998
    assert EncodecConfig(sample_rate=22050).frame_rate == 69


@pytest.mark.parametrize("field,value,match", [
    ("bins", 1000, "power of two"), ("bins", 1, "power of two"), ("bins", 3, "power of two"),
    ("overlap", 1.0, "overlap"), ("overlap", -0.01, "overlap"), ("pad_mode", "mirror", "pad_mode"),
    ("n_q", 0, "n_q"), ("ratios", [], "ratios"), ("ratios", [2, 0], "ratios"), ("segment", 1e-6, "segment"),
])
def test_impossible_configs_are_refused(field: str, value: tp.Any, match: str) -> None:
    config = EncodecConfig(name="bad", n_filters=4, dimension=8, n_q=2, bins=16, ratios=[2], lstm=0)
    setattr(config, field, value)
    with pytest.raises(ValueError, match=match):
        EncodecModel(config)


def test_codes_at_the_edges_of_the_frame_count(pairs: dict) -> None:
    """ceil(T / hop) frames (one more from the first sample past a whole frame), and a
    segment decoded from those frames is whole frames long."""
    _, ours = pairs["causal"]
    ours.set_target_bandwidth(24.0)
    for length, frames in ((1, 1), (6, 1), (7, 2), (12, 2), (13, 3)):
        assert ours.num_frames(length) == frames
        with torch.no_grad():
            (frame,) = ours.encode(_signal(1, length, seed=length))
            assert frame.codes.shape == (1, 4, frames)
            assert ours.decode([frame]).shape == (1, 1, 6 * frames)


def _small_normalizing(seed: int) -> EncodecModel:
    """A causal, renormalising model that does not segment (one scale per item)."""
    torch.manual_seed(seed)
    return official_ref.fitted_codebooks(EncodecModel(EncodecConfig(
        name="small_norm", sample_rate=8000, normalize=True, ratios=[3, 2], n_filters=4, dimension=8,
        n_q=4, bins=16, lstm=1, target_bandwidths=[32.0])), seed).eval()


def test_decode_batch_of_a_normalising_causal_model_keeps_each_scale() -> None:
    """``decode_batch`` decodes a causal model's items in one pass: each item's audio is its
    own ``model.decode`` (scaled by its own scale), for items of very different levels."""
    from opencodec.batching import decode_batch, encode_batch

    model = _small_normalizing(5)
    lengths, levels = [601, 300, 455], [6.0, 0.05, 1.0]
    wav = torch.zeros(3, 1, 601)
    for b, (n, level) in enumerate(zip(lengths, levels)):
        wav[b, :, :n] = _signal(1, n, seed=20 + b, level=level)[0]
    enc = encode_batch(model, wav, lengths)
    assert enc.scales is not None and enc.scales.shape == (3, 1)
    audio, out_lengths = decode_batch(model, enc)
    assert out_lengths.tolist() == lengths
    for b, n in enumerate(lengths):
        with torch.inference_mode():
            frames = model.encode(wav[b: b + 1, :, :n])
            single = model.decode(frames)[0, :, :n]
        assert torch.equal(enc.codes[b, :, : frames[0].codes.shape[-1]], frames[0].codes[0])
        assert torch.equal(enc.scales[b, :1], frames[0].scale.reshape(1))
        err = (audio[b, :, :n] - single).norm() / single.norm()
        assert err < 1e-5, (b, float(err))


def test_quantizer_refuses_more_codebooks_than_it_has() -> None:
    from opencodec.quantization.rvq import ResidualVectorQuantizer

    rvq = ResidualVectorQuantizer(dimension=4, n_q=3, bins=8, kmeans_init=False)
    codes = torch.zeros(1, 4, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="4 codebooks, the quantiser has 3"):
        rvq.decode(codes)
    assert rvq.decode(codes[:, :3]).shape == (1, 4, 5)


@pytest.mark.parametrize("exact", [True, False])
def test_streaming_a_dilated_model_matches_offline(exact: bool) -> None:
    """A causal model with two residual layers (dilations 1 and 2) streamed in small pushes,
    exact and fast mode: codes are ``model.encode``'s (all but rare near-ties) and audio is
    ``model.decode``'s to 1e-4 relative L2 (the dilated taps of the fast per-frame step are
    read at their dilation)."""
    from opencodec.streaming import StreamingDecoder, StreamingEncoder

    torch.manual_seed(8)
    model = official_ref.fitted_codebooks(EncodecModel(EncodecConfig(
        name="small_dilated", sample_rate=8000, ratios=[3, 2], n_filters=8, dimension=8, n_q=4, bins=16,
        lstm=1, n_residual_layers=2, target_bandwidths=[32.0])), 8).eval()
    x = _signal(1, 1203, seed=4)
    with torch.inference_mode():
        (frame,) = model.encode(x)
        audio = model.decode([frame])
    enc, dec = StreamingEncoder(model, exact=exact), StreamingDecoder(model, exact=exact)
    codes = torch.cat([enc.push(x[..., i: i + 50]) for i in range(0, x.shape[-1], 50)] + [enc.flush()], -1)
    assert codes.shape == frame.codes.shape
    assert (codes == frame.codes).all(1).float().mean().item() >= 0.99
    out = torch.cat([dec.push(frame.codes[..., i: i + 3]) for i in range(0, frame.codes.shape[-1], 3)]
                    + [dec.flush()], -1)
    assert out.shape == audio.shape
    assert ((out - audio).norm() / audio.norm()).item() < 1e-4


def test_codebook_ema_update_equals_official() -> None:
    """One training step of a codebook (no dead-code expiry): the EMA of the cluster sizes and
    sums, the Laplace smoothing and the new entries are the official ``EuclideanCodebook``'s."""
    from encodec.quantization.core_vq import EuclideanCodebook as OfficialCodebook

    from opencodec.quantization.vq import EuclideanCodebook

    gen = torch.Generator().manual_seed(2)
    embed = torch.randn(8, 3, generator=gen)
    sizes = torch.rand(8, generator=gen) * 4 + 0.5
    x = torch.randn(50, 3, generator=gen)
    ours = EuclideanCodebook(3, 8, kmeans_init=False, decay=0.8, threshold_ema_dead_code=0.0)
    ref = OfficialCodebook(3, 8, kmeans_init=False, decay=0.8, threshold_ema_dead_code=0)
    for book in (ours, ref):
        book.embed.copy_(embed)
        book.embed_avg.copy_(embed * sizes[:, None])
        book.cluster_size.copy_(sizes)
    ref.train()
    ref(x)
    indices = ours.quantize(x)
    assert len(indices.unique()) >= 4
    ours.update_(x, indices)
    for name in ("cluster_size", "embed_avg", "embed"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-6, msg=name)
    assert not torch.allclose(ours.embed, embed)  # the step moved the entries


def test_encoder_chunking_needs_whole_elu_blocks(pairs: dict) -> None:
    """The encoder's time chunks are planned only where every chunk boundary falls on whole
    32-element blocks of each ELU's input (else PyTorch's scalar tail would evaluate other
    elements than in one pass): the 24 kHz architecture (32-512 channels) chunks, the small
    one (4 channels at the full rate: 4 * 6 elements per frame) does not."""
    from opencodec.modules import fast

    plan = fast._encoder_chunk_plan(list(EncodecModel(EncodecConfig.encodec_24khz()).encoder.model))
    assert plan is not None and plan.hop == 320
    _, small = pairs["causal"]
    assert fast._encoder_chunk_plan(list(small.encoder.model)) is None


def test_step_warmup_rounds_up_partial_frames() -> None:
    """``warmup_frames``: a reflect-padded conv needs P + 1 input steps before its first output;
    the stride-8 conv (kernel 16, P = 8) of a one-ratio model reads 9 samples, more than one
    frame of 8, so two frames (a model whose last conv has kernel 1, so that conv decides)."""
    from opencodec.step import EncoderStep

    torch.manual_seed(0)
    model = official_ref.fitted_codebooks(EncodecModel(EncodecConfig(
        name="one_ratio", ratios=[8], n_filters=4, dimension=8, n_q=2, bins=16, lstm=0, last_kernel_size=1,
        target_bandwidths=[6.0])), 0).eval()
    step = EncoderStep(model)
    assert step.warmup_frames == 2
    x = _signal(1, 8 * 6, seed=1)
    with torch.inference_mode():
        codes, state = step.start(x[..., :16])
        assert codes.shape == (1, 2, 2)
        more, *state = step(x[..., 16:], *state)
        (frame,) = model.encode(x)
    assert len(torch.unique(frame.codes[0, 0])) > 1
    assert torch.equal(torch.cat([codes, more], -1), frame.codes)


def test_batches_with_items_at_the_reflection_limits(pairs: dict) -> None:
    """Items exactly as long as a reflect pad (6 samples: the first conv's; 6 frames = 36
    samples: the decoder's first conv's) need ``pad1d``'s short-input path, so they are
    encoded / decoded alone; their codes and audio are their ``model.encode`` /
    ``model.decode``'s."""
    from opencodec.batching import decode_batch, encode_batch, encode_each

    _, ours = pairs["causal"]
    ours.set_target_bandwidth(24.0)
    lengths = [6, 36, 601]
    wav = torch.zeros(3, 1, 601)
    for b, n in enumerate(lengths):
        wav[b, :, :n] = _signal(1, n, seed=40 + b)[0]
    batch, each = encode_batch(ours, wav, lengths), encode_each(ours, wav, lengths)
    for b in range(2):
        assert torch.equal(batch.codes[b], each.codes[b]), b
    audio, _ = decode_batch(ours, batch)
    for b, n in enumerate(lengths[:2]):
        with torch.inference_mode():
            single = ours.decode([(batch.codes[b: b + 1, :, : int(batch.frame_lengths[b])], None)])[0, :, :n]
        assert ((audio[b, :, :n] - single).norm() / single.norm()).item() < 1e-5, b
