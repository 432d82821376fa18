"""Weights changed through ``.data`` or a numpy view (which do not move a tensor's version
counter) are seen by the weights hash, by the caches keyed on versions once a file is written,
and by an entropy model's integer twin: a file names the weights it was coded with (a change of a
few elements through ``.data`` can miss the sample the check reads)."""

from __future__ import annotations

import io

import torch

from opencodec.bitstream import parse_header
from opencodec.compress import compress, compress_to_file
from opencodec.entropy import EntropyLM
from opencodec.entropy.fixed import FixedLM, fixed_lm_for
from opencodec.identity import short_hash
from opencodec.weights_hash import state_dict_sha256, weights_sha256

from stream_models import tiny_stream_model


def _wav(seconds: float = 0.2) -> torch.Tensor:
    return 0.1 * torch.randn(1, int(24000 * seconds), generator=torch.Generator().manual_seed(3))


def _model() -> torch.nn.Module:
    """A tiny causal model whose codebooks are residuals of its own latents (so that its codes
    follow a change of the encoder's weights)."""
    return tiny_stream_model("data_edits", 5)


def _twin(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh model of the same config holding ``model``'s weights now."""
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def test_a_change_through_data_or_a_numpy_view_changes_the_weights_hash() -> None:
    model = _model()
    before = weights_sha256(model)
    bias = model.decoder.model[0].conv.conv.bias
    version = bias._version
    bias.data.add_(0.5)
    assert bias._version == version  # what made the cached hash miss it
    after = weights_sha256(model)
    assert after != before and after == state_dict_sha256(model.state_dict())
    embed = model.quantizer.vq.layers[0]._codebook.embed
    embed.detach().numpy()[0, 0] += 1.0  # one element, through a numpy view
    assert weights_sha256(model) not in (before, after)
    assert weights_sha256(model) == state_dict_sha256(model.state_dict())


def test_a_data_change_that_keeps_every_value_keeps_the_cached_hash_and_versions() -> None:
    model = _model()
    digest = weights_sha256(model)
    versions = [p._version for p in model.parameters()]
    for p in model.parameters():
        p.data.mul_(1.0)
    assert weights_sha256(model) == digest
    assert [p._version for p in model.parameters()] == versions


def test_a_file_written_after_a_data_change_names_the_weights_it_was_coded_with() -> None:
    """The header's weights hash is the edited weights', and the codes are theirs: equal to a
    fresh model holding the same weights (the fast path's packed weights were refreshed)."""
    model = _model()
    model.exact = False  # fast mode caches packed weights, keyed on version counters
    wav = _wav()
    compress(model, wav)  # fills the caches
    for p in model.encoder.parameters():
        p.data.mul_(1.25)
    data = compress(model, wav)
    header = parse_header(data)[0]
    assert header.model_hash == short_hash(state_dict_sha256(model.state_dict()))
    fresh = _twin(model)
    fresh.exact = False
    assert data == compress(fresh, wav)


def test_folded_weight_norms_refresh_once_a_file_is_written_after_a_data_change() -> None:
    model = _model()
    model.fold_weight_norm()
    wav = _wav()
    out = io.BytesIO()
    compress_to_file(model, wav, out)
    conv = model.encoder.model[0].conv.conv
    conv.weight_g.data.mul_(3.0)
    again = io.BytesIO()
    compress_to_file(model, wav, again)
    fresh = _twin(model)
    assert again.getvalue() == compress(fresh, wav)
    assert again.getvalue() != out.getvalue()
    with torch.no_grad():
        assert torch.equal(conv.weight, fresh.encoder.model[0].conv.conv.weight)


def test_the_integer_twin_of_an_entropy_model_follows_a_data_change() -> None:
    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, past_context=8).eval()
    first = fixed_lm_for(lm)
    assert fixed_lm_for(lm) is first  # cached while the weights are unchanged
    for p in lm.parameters():
        p.data.mul_(1.5)
    second = fixed_lm_for(lm)
    assert second is not first
    assert second.weights_hash == FixedLM.from_float(lm).weights_hash != first.weights_hash


def test_the_stamp_follows_bool_and_non_contiguous_tensors_changed_through_data() -> None:
    """A bool buffer and a transposed (non-contiguous) one changed through ``.data``: their
    sums change and their version counters move, so caches keyed on versions refresh."""
    from opencodec.weights_hash import weights_stamp

    module = torch.nn.Module()
    module.register_buffer("flags", torch.tensor([True, False, False]))
    module.register_buffer("weight", torch.arange(12.0).reshape(3, 4).t())
    first = weights_stamp(module, dict(module.state_dict()))
    module.flags.data[1] = True
    module.weight.data.mul_(2.0)
    second = weights_stamp(module, dict(module.state_dict()))
    assert [entry[2] for entry in first[1:]] == [1, 1]  # (name, address, version, sum): moved once
    assert [entry[2] for entry in second[1:]] == [2, 2]  # on the first stamp, and again for the change
    assert all(a[3] != b[3] for a, b in zip(first[1:], second[1:]))
    assert weights_stamp(module, dict(module.state_dict())) == second  # nothing changed since


def test_a_strided_tensor_is_sampled_where_it_lies_not_copied() -> None:
    """A transposed (non-contiguous) CPU tensor was copied whole on every stamp (numpy's
    ``reshape(-1)`` of a strided array): 64 MiB of copies per check for a 4096 x 4096 weight.
    Its sample is read in place now, and sums the same elements as its contiguous copy."""
    import tracemalloc

    from opencodec.weights_hash import _bit_sums

    gen = torch.Generator().manual_seed(0)
    for shape in [(3000, 7), (64, 32, 3), (1, 1)]:
        for dtype in (torch.float32, torch.float16, torch.int64):
            strided = (100 * torch.randn(shape, generator=gen)).to(dtype).transpose(0, -1)
            assert _bit_sums([strided]) == _bit_sums([strided.contiguous()])
    big = torch.randn(4096, 4096, generator=gen).t()
    _bit_sums([big])  # numpy's first-call set-up outside the measurement
    tracemalloc.start()
    try:
        _bit_sums([big])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the copy was 64 MiB


def test_caches_filled_before_the_first_hash_refresh_after_a_data_change() -> None:
    """A model built and used before any file (fast mode's packed weights filled by ``encode``,
    no weights hash yet), then changed through ``.data``: the first file still codes with the
    changed weights, which its header names."""
    model = _model()
    model.exact = False
    wav = _wav()
    with torch.no_grad():
        model.encode(wav[None])  # fills the packed weights, keyed on version counters
    for p in model.encoder.parameters():
        p.data.mul_(1.25)
    data = compress(model, wav)
    fresh = _twin(model)
    fresh.exact = False
    assert data == compress(fresh, wav)


def test_a_long_file_written_after_a_data_change_is_coded_with_the_weights_it_names(tmp_path) -> None:
    """``compress_file_streaming`` (the long-file path) computes the header's identity before
    it encodes, as ``compress_to_file`` does: its folded weights refresh first."""
    import soundfile as sf

    from opencodec.longform import compress_file_streaming

    model = _model()
    model.fold_weight_norm()
    source = tmp_path / "in.wav"
    sf.write(source, _wav(0.5)[0].numpy(), 24000)
    for _ in range(2):  # the second time, the folded weights are current with every counter
        compress_file_streaming(model, source, tmp_path / "first.ecdc")
    model.encoder.model[0].conv.conv.weight_g.data.mul_(3.0)
    compress_file_streaming(model, source, tmp_path / "again.ecdc")
    fresh = _twin(model)
    fresh.fold_weight_norm()
    compress_file_streaming(fresh, source, tmp_path / "fresh.ecdc")
    again = (tmp_path / "again.ecdc").read_bytes()
    assert again == (tmp_path / "fresh.ecdc").read_bytes() != (tmp_path / "first.ecdc").read_bytes()
