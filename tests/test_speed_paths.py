"""The inference fast paths against the plain module code (``opencodec.modules.fast``).

Encoder and (default) exact decoder: bitwise identical outputs (so codes and decoded audio
are too), for both official architectures and small variants, several lengths, batch
sizes and thread counts. Approximate decoder (``exact_decode`` off): not bitwise the plain
path (so the flag is seen to take effect) but within 1e-5 (relative L2 and absolute) of it,
and its batched 48 kHz segments bitwise equal to decoding them one at a time.
"""

from __future__ import annotations

import contextlib
import typing as tp

import pytest
import torch
from official_ref import random_codebooks

from opencodec import EncodecConfig, EncodecModel
from opencodec.model import linear_overlap_add
from opencodec.modules import fast


@contextlib.contextmanager
def _plain() -> tp.Iterator[None]:
    """Run the plain module code (fast paths off) inside the block."""
    previous = fast.set_fast_path(False)
    try:
        yield
    finally:
        fast.set_fast_path(previous)


@contextlib.contextmanager
def _bandwidth(model: EncodecModel, bandwidth: float) -> tp.Iterator[None]:
    """Target ``bandwidth`` inside the block; the shared session models get theirs back."""
    previous = model.bandwidth
    model.set_target_bandwidth(bandwidth)
    try:
        yield
    finally:
        model.bandwidth = previous


@contextlib.contextmanager
def _threads(n: int) -> tp.Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _noise(batch: int, channels: int, length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    return 0.2 * torch.randn(batch, channels, length, generator=gen) + 0.3 * torch.sin(2 * torch.pi * 220 * t)


def _assert_close(fast_out: torch.Tensor, plain_out: torch.Tensor, tol: float = 1e-5) -> None:
    assert fast_out.shape == plain_out.shape
    assert torch.isfinite(fast_out).all()
    rel = ((fast_out - plain_out).norm() / plain_out.norm().clamp_min(1e-12)).item()
    assert rel < tol, rel
    assert (fast_out - plain_out).abs().max().item() < tol


# Small architectures that exercise the other options of the generic code paths.
SMALL: dict[str, dict[str, tp.Any]] = {
    "causal_weight_norm": {"causal": True, "norm": "weight_norm"},
    "noncausal_group_norm_true_skip": {"causal": False, "norm": "time_group_norm", "true_skip": True,
                                       "n_residual_layers": 2},
    "noncausal_no_norm": {"causal": False, "norm": "none", "n_residual_layers": 2, "compress": 4},
}


@pytest.fixture(scope="module")
def small_models() -> dict[str, EncodecModel]:
    models = {}
    for i, (name, extra) in enumerate(SMALL.items()):
        torch.manual_seed(10 + i)
        cfg = EncodecConfig(name=name, n_filters=8, dimension=32, n_q=8, ratios=[4, 2], lstm=1,
                            target_bandwidths=[6.0, 24.0], **extra)
        models[name] = random_codebooks(EncodecModel(cfg), i).eval()
    return models


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
@pytest.mark.parametrize("length", [1, 6, 100, 319, 321, 4_000, 24_017])
def test_encoder_latent_bitwise(our_models: dict, name: str, length: int) -> None:
    model = our_models[name]
    batch = 2 if length in (321, 4_000) else 1
    x = _noise(batch, model.channels, length, seed=length)
    with torch.inference_mode():
        fast_latent = model.encoder(x)
        with _plain():
            plain_latent = model.encoder(x)
    assert torch.equal(fast_latent, plain_latent)


def test_encoder_time_chunks_bitwise(our_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread, long input: the downsampling stack runs in time chunks (here 40 frames,
    so a short input has many chunk boundaries); every residue of the length modulo 4
    (the ELU's scalar tails depend on it) and a merged short last chunk."""
    model = our_models["encodec_24khz"]
    monkeypatch.setattr(fast, "ENCODER_CHUNK_FRAMES", 40)
    plan = fast._encoder_chunk_plan(list(model.encoder.model))
    assert plan is not None and plan.hop == 320
    for length in (38_400, 38_401, 38_402, 38_403, 41_000 + 17, 44_800 + 5):
        x = _noise(1, 1, length, seed=length)
        assert fast._can_chunk(plan, x)
        with torch.inference_mode():
            chunked = model.encoder(x)
            with _plain():
                plain = model.encoder(x)
        assert torch.equal(chunked, plain), length
    assert model.encoder.__dict__.get("_chunk_plan") not in (None, False)  # chunks were used
    assert fast._encoder_chunk_plan(list(our_models["encodec_48khz"].encoder.model)) is None  # group norm


def test_encoder_chunks_checked_on_the_model() -> None:
    """Chunking is kept only where this model's kernels give bitwise the one-pass latent: a
    small architecture (8-32 channels) differed by ~1e-7 on this CPU before the check, and
    must now equal the plain computation whatever the kernels do."""
    from official_ref import random_codebooks
    from opencodec import EncodecConfig, EncodecModel

    torch.manual_seed(3)
    small = random_codebooks(EncodecModel(EncodecConfig(
        name="small", n_filters=8, dimension=32, n_q=8, ratios=[4, 2], lstm=1,
        target_bandwidths=[6.0, 24.0])), 3).eval()
    for length in (5_000, 9_000 + 3):
        x = _noise(1, 1, length, seed=length)
        with torch.inference_mode():
            latent = small.encoder(x)
            with _plain():
                plain = small.encoder(x)
        assert torch.equal(latent, plain), length


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_codes_bitwise_two_threads_and_no_grad(our_models: dict, name: str) -> None:
    """Thread count and no_grad vs inference_mode: the fast path matches the plain one."""
    model = our_models[name]
    x = _noise(1, model.channels, 50_000, seed=5)
    with _bandwidth(model, 6.0), _threads(2), torch.no_grad():
        fast_frames = model.encode(x)
        with _plain():
            plain_frames = model.encode(x)
    assert len(fast_frames) == len(plain_frames)
    for a, b in zip(fast_frames, plain_frames):
        assert torch.equal(a.codes, b.codes)
        assert (a.scale is None and b.scale is None) or torch.equal(a.scale, b.scale)
    assert len(torch.unique(fast_frames[0].codes)) > 1


@contextlib.contextmanager
def _approximate(model: EncodecModel) -> tp.Iterator[None]:
    """Decode with the faster, approximate decoder (``exact_decode`` off) inside the block."""
    model.exact_decode = False
    try:
        yield
    finally:
        model.exact_decode = True


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
@pytest.mark.parametrize("frames,batch", [(1, 1), (7, 2), (151, 1)])
def test_decoder_exact_and_approximate(our_models: dict, name: str, frames: int, batch: int) -> None:
    model = our_models[name]
    assert model.exact_decode
    z = torch.randn(batch, model.config.dimension, frames, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        exact = model.decoder(z)
        with _approximate(model):
            approximate = model.decoder(z)
        with _plain():
            plain = model.decoder(z)
    assert torch.equal(exact, plain)
    assert not torch.equal(approximate, plain)  # the flag takes effect: other kernels, other rounding
    _assert_close(approximate, plain)


def test_decoder_exact_two_threads(our_models: dict) -> None:
    model = our_models["encodec_24khz"]
    z = torch.randn(1, 128, 40, generator=torch.Generator().manual_seed(4))
    with _threads(2), torch.no_grad():
        exact = model.decoder(z)
        with _plain():
            plain = model.decoder(z)
    assert torch.equal(exact, plain)


def test_segmented_decode_batched(our_models: dict) -> None:
    """48 kHz, approximate decoder: consecutive same-shape segments decode as one batch,
    bitwise equal to decoding them one at a time (what the long-file path does) and within
    1e-5 of the plain path. The exact decoder decodes one segment at a time."""
    model = our_models["encodec_48khz"]
    x = _noise(1, 2, 4 * 47_520 + 3_000, seed=9)
    with _bandwidth(model, 12.0), torch.inference_mode():
        frames = model.encode(x)
        assert len(frames) == 5
        exact = model.decode(frames)
        with _approximate(model):
            batched = model.decode(frames)
            alone = linear_overlap_add([model._decode_segment(*f) for f in frames], model.segment_stride)
        with _plain():
            plain = model.decode(frames)
    assert torch.equal(exact, plain)
    assert torch.equal(batched, alone)
    assert not torch.equal(batched, plain)  # the approximate decoder really ran
    _assert_close(batched, plain)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_architectures(small_models: dict, name: str) -> None:
    model = small_models[name]
    model.set_target_bandwidth(24.0)
    for length, batch in ((1, 1), (5, 2), (777, 3)):
        x = _noise(batch, 1, length, seed=length)
        with torch.inference_mode():
            latent = model.encoder(x)
            audio = model.decoder(latent)
            with _approximate(model):
                approximate = model.decoder(latent)
            with _plain():
                plain_latent = model.encoder(x)
                plain_audio = model.decoder(latent)
        assert torch.equal(latent, plain_latent), (name, length)
        assert torch.equal(audio, plain_audio), (name, length)
        assert not torch.equal(approximate, plain_audio), (name, length)  # exact_decode off takes effect
        _assert_close(approximate, plain_audio)


def test_weight_changes_invalidate_the_cache(small_models: dict) -> None:
    model = small_models["causal_weight_norm"]
    x = _noise(1, 1, 500, seed=1)
    conv = model.encoder.model[0].conv.conv
    saved = conv.weight_g.detach().clone()
    with torch.inference_mode():
        before = model.encoder(x)
    with torch.no_grad():
        conv.weight_g.mul_(1.5)
    try:
        with torch.inference_mode():
            after = model.encoder(x)
            with _plain():
                plain = model.encoder(x)
        assert not torch.equal(before, after)
        assert torch.equal(after, plain)
    finally:
        with torch.no_grad():
            conv.weight_g.copy_(saved)


def test_autograd_and_training_use_the_module_path(small_models: dict) -> None:
    """With autograd on the fast path is off: gradients flow as before."""
    model = small_models["causal_weight_norm"]
    x = _noise(1, 1, 300, seed=2)
    latent = model.encoder(x)
    assert latent.requires_grad
    latent.sum().backward()
    conv = model.encoder.model[0].conv.conv
    assert conv.weight_v.grad is not None and torch.isfinite(conv.weight_v.grad).all()
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        with torch.no_grad():
            assert fast.fast_path_enabled(model.encoder, x) is False
    finally:
        model.eval()
    with torch.no_grad():
        assert fast.fast_path_enabled(model.encoder, x) is True
        assert fast.fast_path_enabled(model.encoder, x.double()) is False
