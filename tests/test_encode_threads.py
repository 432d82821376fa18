"""Codes do not depend on the caller's thread count: CPU encoding runs on one thread
(opencodec.threads.one_thread)."""

from __future__ import annotations

import pytest
import torch

import official_ref
from opencodec.batching import encode_batch
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.multistream import MultiStreamEncoder
from opencodec.streaming import StreamingEncoder
from opencodec.threads import one_thread


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _model() -> EncodecModel:
    """The 24 kHz architecture with random weights and codebooks drawn from its encoder's
    outputs: codes that follow the input (a new model's codebooks are all zeros, which gives
    code 0 everywhere, so comparing codes could not fail)."""
    torch.manual_seed(0)
    model = official_ref.fitted_codebooks(EncodecModel(EncodecConfig.encodec_24khz()), 1).eval()
    model.set_target_bandwidth(24.0)
    return model


def _latent_at(model: EncodecModel, x: torch.Tensor, threads: int) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return model.encoder(x)
    finally:
        torch.set_num_threads(before)


def test_one_thread_restores_the_count(two_threads) -> None:
    with one_thread():
        assert torch.get_num_threads() == 1
        with one_thread(torch.zeros(1)):  # nested
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with one_thread(torch.zeros(1)):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
    with one_thread(torch.zeros(1, device="meta")):  # not a CPU tensor: left alone
        assert torch.get_num_threads() == 2


def test_encode_latent_is_the_one_thread_latent(two_threads) -> None:
    """The latent ``model.encode`` quantises on two threads is bitwise the one-thread latent.
    (On two threads the plain encoder's latent of a short input is not, on the machines
    measured: its last convolution's sums are split among the threads.)"""
    model = _model()
    x = 0.1 * torch.randn(1, 1, 7200)  # 0.3 s: 23 frames
    seen: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda mod, inp, out: seen.append(out.clone()))
    with torch.inference_mode():
        codes = model.encode(x)[0].codes
    hook.remove()
    assert torch.get_num_threads() == 2  # the caller's count is given back
    one = _latent_at(model, x, 1)
    assert torch.equal(seen[0], one)
    assert torch.equal(codes, model.quantizer.encode(one, model.num_codebooks()))
    assert len(torch.unique(codes[0, 0])) > 1  # codes follow the input


@pytest.fixture()
def conv_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread count each 1-d convolution runs on from here on."""
    seen: list[int] = []
    conv1d = torch.nn.functional.conv1d

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return conv1d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv1d", counted)
    return seen


def _frames_equal(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of code frames [.., K, F] whose K codes all agree."""
    assert a.shape == b.shape
    return float((a == b).reshape(-1, a.shape[-1]).all(0).float().mean())


def test_streams_and_batches_give_the_one_thread_codes(two_threads, conv_threads) -> None:
    """Batches, streams and multistreams compute on one thread: on two threads each gives
    bitwise its own one-thread codes, and the convolutions run on one thread. Each path's
    codes are ``model.encode``'s but for rare near-ties (their kernels see other shapes and
    round differently, ~1e-8: measured here, frame 18 of item 0 of the batch flips), so
    those are compared frame by frame (>= 90%: a wrong frame layout or padding fails)."""
    model = _model()
    x = 0.1 * torch.randn(2, 1, 9600)
    lengths = [9600, 7000]
    hop = model.hop_length
    frames = x[0, :, : 9600 // hop * hop]

    def run_batch() -> torch.Tensor:
        return encode_batch(model, x, lengths).codes

    def run_stream() -> torch.Tensor:
        stream = StreamingEncoder(model, exact=True)
        return torch.cat([stream.push(x[:1, :, i: i + 2000]) for i in range(0, 9600, 2000)] + [stream.flush()], -1)

    def run_multi() -> torch.Tensor:
        multi = MultiStreamEncoder(model, batched=False, exact=True)
        sid = multi.open()
        out = [multi.push({sid: frames[:, i: i + hop]})[sid] for i in range(0, frames.shape[-1], hop)]
        out.append(multi.close(sid, x[0, :, frames.shape[-1]:]))
        return torch.cat(out, -1)[None]

    torch.set_num_threads(1)
    with torch.inference_mode():
        want = [model.encode(x[b: b + 1, :, :n])[0].codes for b, n in enumerate(lengths)]
    assert all(len(torch.unique(w[0, k])) > 1 for w in want for k in range(w.shape[1]))  # codes vary
    one = {"batch": run_batch(), "stream": run_stream(), "multi": run_multi()}
    torch.set_num_threads(2)
    for name, run in (("batch", run_batch), ("stream", run_stream), ("multi", run_multi)):
        conv_threads.clear()
        got = run()
        assert conv_threads and set(conv_threads) == {1}, name
        assert torch.get_num_threads() == 2
        assert torch.equal(got, one[name]), name
        items = [got[b: b + 1, :, : want[b].shape[-1]] for b in range(len(lengths))] if name == "batch" else [got]
        for b, codes in enumerate(items):
            assert _frames_equal(codes, want[b]) >= 0.9, (name, b)


@pytest.mark.parametrize("config", ["encodec_24khz", "encodec_48khz"])
def test_long_files_encode_on_one_thread(two_threads, conv_threads, tmp_path, config) -> None:
    """Files encoded in bounded memory (long files in ``compress``, ``tokenize`` over
    ``--max-seconds``): the streamed 24 kHz model and the segmented 48 kHz one."""
    import soundfile as sf

    from opencodec.longform import encode_file_streaming

    torch.manual_seed(0)
    model = EncodecModel(getattr(EncodecConfig, config)()).eval()
    path = tmp_path / "x.wav"
    sf.write(path, 0.1 * torch.randn(int(2.2 * model.sample_rate), model.channels).numpy(), model.sample_rate)
    conv_threads.clear()
    codes, _, _ = encode_file_streaming(model, path, block_seconds=1.0)
    assert codes.shape[-1] > 0 and conv_threads and set(conv_threads) == {1}
    assert torch.get_num_threads() == 2
