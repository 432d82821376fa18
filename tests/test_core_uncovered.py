"""Paths of the codec core that no other test ran (line coverage of the whole suite): error
paths, options and edge cases of the bitstream, the entropy models, loading and saving, the
streaming steps and the batched encoder, each checked by the value or the exact error a user sees."""

from __future__ import annotations

import errno
import io
import pathlib
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from opencodec import EncodecConfig, EncodecModel
from opencodec.batching import BatchEncoding, decode_batch, encode_batch, encode_each
from opencodec.bitstream import EcdcHeader, StreamLayout, pack_codes, parse_header, unpack_codes
from opencodec.bitstream.body import read_ecdc, write_body, write_ecdc
from opencodec.compress import compress, compress_to_file, decompress, decompress_from_file
from opencodec.entropy import EntropyLM, load_lm
from opencodec.entropy import stepper as stepper_module
from opencodec.entropy.arithmetic import decode_segment_with_lm, encode_segment_with_lm
from opencodec.entropy.deterministic import decode_segment_fixed, encode_segment_fixed
from opencodec.entropy.fixed import FixedLM, fixed_lm_for
from opencodec.entropy.fixed_ops import _round_shift, logits_to_cdf
from opencodec.entropy.fixed_params import _weight_shift
from opencodec.entropy.lm import sin_embedding
from opencodec.errors import BitstreamError, InvalidAudioError, InvalidCodesError, ModelLoadError
from opencodec.frames import EncodedFrame
from opencodec.input_checks import parameter_dtype_device
from opencodec.lm_loading import load_lm_model
from opencodec.model import linear_overlap_add
from opencodec.modules.conv import NormConv1d, NormConvTranspose1d
from opencodec.pretrained import load_model, save_model
from opencodec.releases import LM_RELEASES
from opencodec.step import DecoderStep, EncoderStep

from codec_helpers import _tiny
from official_ref import random_codebooks
from stream_models import tiny_stream_model

HOP = 320


def _lm(card: int = 64, n_q: int = 4, dim: int = 16, seed: int = 0) -> EntropyLM:
    torch.manual_seed(seed)
    return EntropyLM(n_q=n_q, card=card, dim=dim, num_heads=2, num_layers=1, past_context=5).eval()


def _noise(*shape: int, seed: int = 0, gain: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * gain


# -- model configuration, releases, headers, layouts, packing ---------------------------------
def test_config_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"^unknown EncodecConfig field\(s\): bogus, zz$"):
        EncodecConfig.from_dict({"name": "x", "zz": 2, "bogus": 1})


def test_unknown_conv_norm_is_named() -> None:
    with pytest.raises(ValueError, match=r"conv norm must be one of \('none', 'weight_norm', "
                                         r"'time_group_norm'\), got 'batch_norm'"):
        EncodecModel(EncodecConfig(name="u", n_filters=4, dimension=16, lstm=0, n_q=4, norm="batch_norm"))
    with pytest.raises(ValueError, match="conv norm must be one of .* got 'layer'"):
        NormConvTranspose1d(2, 2, 4, 2, norm="layer")
    with pytest.raises(ValueError, match="conv norm must be one of .* got 'layer'"):
        NormConv1d(2, 2, 3, norm="layer")


def test_lm_release_short_hash_is_its_fixed_hash() -> None:
    release = LM_RELEASES[0]
    assert release.short_hash == release.fixed_hash and len(release.short_hash) == 16


def test_header_from_json_text_and_type_checks() -> None:
    header = EcdcHeader.from_json('{"m": "tiny", "al": 480, "nc": 2, "lm": false}')
    assert (header.model_name, header.audio_length, header.num_codebooks, header.use_lm) == ("tiny", 480, 2, False)
    assert EcdcHeader.from_json(header.to_json()) == header  # bytes and str read alike
    with pytest.raises(TypeError, match="^deterministic must be a DeterministicCoding or None$"):
        EcdcHeader("tiny", 480, 2, True, deterministic={"lmn": "x"})  # type: ignore[arg-type]


def test_layout_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"n_q and hop_length must be >= 1, got 0, 320"):
        StreamLayout("m", 0, 10, 320, False)
    with pytest.raises(ValueError, match=r"n_q and hop_length must be >= 1, got 4, 0"):
        StreamLayout("m", 4, 10, 0, False)
    for length, stride in ((0, 0), (100, 0), (0, 100), (100, -1)):
        with pytest.raises(ValueError, match="^segment_length and segment_stride must be >= 1$"):
            StreamLayout("m", 4, 10, 320, False, length, stride)


def test_pack_codes_float_arrays_and_empty_codes() -> None:
    with pytest.raises(ValueError, match="^codes must be integers, got dtype float64$"):
        pack_codes(np.array([[1.0, 2.0]]), 4)
    assert pack_codes(np.zeros((2, 0), dtype=np.int64), 4) == b""
    assert pack_codes([[], []], 4) == b""  # an empty list is no float array
    empty = unpack_codes(b"", 2, 0, 4)
    assert empty.shape == (2, 0) and empty.dtype == torch.long


# -- entropy models -----------------------------------------------------------------------------
def test_entropy_lm_argument_errors() -> None:
    with pytest.raises(ValueError, match="^dim must be even$"):
        sin_embedding(torch.zeros(1, 1, 1), 7)
    with pytest.raises(ValueError, match="^dim must be a multiple of num_heads$"):
        EntropyLM(n_q=2, card=16, dim=10, num_heads=3)
    lm = _lm(card=16, n_q=2)
    with pytest.raises(ValueError, match="^3 codebooks given, the model has 2$"):
        lm(torch.zeros(1, 3, 1, dtype=torch.long))


def test_load_lm_refuses_non_mappings_and_wrong_shapes() -> None:
    with pytest.raises(ModelLoadError, match="^LM checkpoint is not a state dict$"):
        load_lm([1, 2], n_q=2, card=16)  # type: ignore[arg-type]
    state = dict(_lm(card=16, n_q=2).state_dict())
    state["emb.0.weight"] = torch.zeros(18, 16)  # card + 1 = 17 rows expected
    with pytest.raises(ModelLoadError,
                       match=r"^LM state dict shape mismatch: emb\.0\.weight: \(18, 16\) != \(17, 16\)$"):
        load_lm(state, n_q=2, card=16, dim=16, num_heads=2, num_layers=1)


def test_segment_coders_refuse_bad_shapes_and_frame_counts() -> None:
    lm = _lm(card=16, n_q=2)
    with pytest.raises(ValueError, match=r"^codes must be \[K, F\], got \(1, 2, 3\)$"):
        encode_segment_with_lm(lm, torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="^num_frames must be >= 0$"):
        decode_segment_with_lm(lm, b"", 2, -1)
    with pytest.raises(TypeError, match="^expected a FixedLM, got EntropyLM$"):
        encode_segment_fixed(lm, torch.zeros(2, 3, dtype=torch.long),  # type: ignore[arg-type]
                             check_bits=8, check_interval=4)
    with pytest.raises(ValueError, match="^num_frames must be >= 0$"):
        decode_segment_fixed(fixed_lm_for(lm), b"", 2, -1, check_bits=8, check_interval=4)


def test_fixed_lm_for_names_and_types() -> None:
    lm = _lm(card=16, n_q=2, seed=1)
    flm = fixed_lm_for(lm)
    assert fixed_lm_for(flm, "abc") is flm and flm.name == "abc"  # a FixedLM is renamed in place
    assert fixed_lm_for(lm, "xyz") is flm and flm.name == "xyz"  # the cached conversion too
    with pytest.raises(TypeError, match="^expected an EntropyLM or FixedLM, got object$"):
        fixed_lm_for(object())  # type: ignore[arg-type]
    cdfs = flm.cdfs(torch.zeros(2, 0, dtype=torch.long))
    assert cdfs.shape == (0, 2, 16) and cdfs.dtype == torch.long


def test_fixed_position_cache_evicts_and_stays_exact() -> None:
    """Positions from more than 8 blocks of 256 (a segment over 2048 frames): the oldest block
    is dropped, and every position is still what ``positions`` computes."""
    flm = FixedLM.from_float(_lm(card=16, n_q=2, seed=2))
    offsets = [256 * b + 7 for b in range(10)] + [3]  # 10 blocks, then block 0 again (evicted)
    for offset in offsets:
        got = flm._positions_from(offset, 2)
        assert torch.equal(got, flm.positions(torch.arange(offset, offset + 2)))
    assert len(flm._pos_cache) == 8 and 0 in flm._pos_cache and 1 not in flm._pos_cache


def test_fixed_point_helpers_edge_values() -> None:
    assert _round_shift(torch.tensor([5, -5]), 0).tolist() == [5, -5]
    assert _round_shift(torch.tensor([5, -5]), -2).tolist() == [20, -20]
    with pytest.raises(ValueError, match="^1024 bins need more than 10 total bits$"):
        logits_to_cdf(torch.zeros(1, 1024), total_bits=10, min_freq=1)
    assert _weight_shift(torch.zeros(3, 3), "w") == 40  # an all-zero tensor: the largest shift
    assert _weight_shift(torch.zeros(0), "w") == 40


def test_float_lm_positions_past_the_cache_code_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames past the position cache (4096 frames, 55 s at 75 Hz) get their embedding computed
    afresh: the same bytes as with every position cached."""
    lm = _lm(card=16, n_q=2, seed=3)
    codes = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(0))
    cached = encode_segment_with_lm(lm, codes)
    if hasattr(lm, "_position_rows"):
        del lm._position_rows
    monkeypatch.setattr(stepper_module, "_POSITION_CACHE_ROWS", 5)
    assert encode_segment_with_lm(lm, codes) == cached
    assert torch.equal(decode_segment_with_lm(lm, cached, 2, 12), codes)


# -- compress / decompress --------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmented_model() -> EncodecModel:
    """A tiny normalising model of 960-sample segments and 64 bins (a 48 kHz-like layout)."""
    torch.manual_seed(0)
    config = EncodecConfig(name="segn", n_filters=4, dimension=16, lstm=0, n_q=4, bins=64,
                           target_bandwidths=[0.9, 1.8], causal=False, normalize=True, segment=0.04,
                           overlap=0.0)
    return random_codebooks(EncodecModel(config), 0).eval()


@pytest.mark.parametrize("deterministic", [False, True])
def test_lm_body_cut_inside_a_scale(segmented_model: EncodecModel, deterministic: bool) -> None:
    """A body cut just after a segment's codes, inside the next segment's scale."""
    lm = _lm(card=64)
    data = compress(segmented_model, _noise(1, 2000), 1.8, lm=lm, deterministic=deterministic)
    _, offset = parse_header(data)
    msgs = set()
    for cut in range(offset + 1, len(data)):
        with pytest.raises(BitstreamError) as info:
            decompress(data[:cut], segmented_model, lm=lm)
        msgs.add(str(info.value))
    assert "ECDC body truncated: segment 1 (sample 960) ends inside its scale" in msgs
    assert "ECDC body truncated: segment 2 (sample 1920) ends inside its scale" in msgs


def test_official_lm_format_needs_the_float_lm(segmented_model: EncodecModel) -> None:
    lm = _lm(card=64)
    data = compress(segmented_model, _noise(1, 2000), 1.8, lm=lm)  # version 0
    with pytest.raises(BitstreamError, match=r"^the official entropy-coded format \(version 0\) needs the "
                                             r"float EntropyLM, got FixedLM$"):
        decompress(data, segmented_model, lm=fixed_lm_for(lm))


def test_compress_lm_type_and_bins() -> None:
    model, wav = _tiny(), _noise(1, 2400)
    with pytest.raises(TypeError, match="^lm must be an opencodec.entropy.EntropyLM or FixedLM, got object$"):
        compress(model, wav, 1.5, lm=object(), deterministic=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="^the entropy model predicts 16 bins per codebook, but model "
                                                "unit_24khz has 1024$"):
        compress(model, wav, 1.5, lm=_lm(card=16))


def test_closed_file_objects_are_refused(tmp_path: pathlib.Path) -> None:
    model, wav = _tiny(), _noise(1, 2400)
    buf = io.BytesIO()
    buf.close()
    with pytest.raises(TypeError, match="^expected a binary file object open for writing, got BytesIO: "
                                        "I/O operation on closed file.$"):
        compress_to_file(model, wav, buf, 1.5)
    with pytest.raises(TypeError, match="^expected a binary file object open for reading, got BytesIO: "
                                        "I/O operation on closed file.$"):
        decompress_from_file(buf, model)
    with open(tmp_path / "x.ecdc", "wb") as fo:
        pass
    with pytest.raises(TypeError, match="open for writing, got BufferedWriter: I/O operation on closed file"):
        compress_to_file(model, wav, fo, 1.5)
    assert (tmp_path / "x.ecdc").read_bytes() == b""


def test_ecdc_writers_need_the_lm_and_readers_bytes() -> None:
    model = _tiny()
    (frame,) = model.encode(_noise(1, 1, 960))
    header = EcdcHeader(model.name, 960, frame.codes.shape[1], True)
    with pytest.raises(BitstreamError, match=r"^writing an entropy-coded \('lm': true\) body needs the entropy model$"):
        write_body(io.BytesIO(), header, [frame], model)
    with pytest.raises(BitstreamError, match=r"^writing an entropy-coded \('lm': true\) file needs the entropy model$"):
        write_ecdc(io.BytesIO(), header, [frame], model)
    with pytest.raises(TypeError, match="^expected bytes, got str$"):
        read_ecdc("ECDC", model)  # type: ignore[arg-type]


# -- input checks ---------------------------------------------------------------------------------
def test_inputs_on_another_device_or_of_bool_dtype() -> None:
    model = _tiny()
    assert parameter_dtype_device(torch.nn.ReLU()) == (torch.float32, torch.device("cpu"))
    with pytest.raises(InvalidAudioError, match=r"^expected audio as a float32 torch.Tensor \[B, C, T\], got bool$"):
        model.encode(torch.zeros(1, 1, 100, dtype=torch.bool))
    with pytest.raises(InvalidAudioError, match=r"on cpu \(the model's device\), got one on meta; "
                                                r"move it with \.to\('cpu'\)$"):
        model.encode(torch.zeros(1, 1, 100, device="meta"))
    codes = model.encode(_noise(1, 1, 960))
    meta = _tiny().to("meta")
    with pytest.raises(InvalidCodesError, match=r"^expected codes on meta \(the model's device\), got codes on "
                                                r"cpu; move them with \.to\('meta'\)$"):
        meta.decode(codes)


# -- model ----------------------------------------------------------------------------------------
def test_linear_overlap_add_needs_segments() -> None:
    with pytest.raises(ValueError, match="^no segments to overlap-add$"):
        linear_overlap_add([], 10)


def test_fold_weight_norm_follows_weight_changes() -> None:
    """Folded weights give the same audio, and are refreshed when the weights change
    (``load_state_dict``, ``.double()``) instead of silently decoding with the old ones."""
    model, other, x = _tiny(seed=0), _tiny(seed=1), _noise(1, 1, 2400)
    with torch.no_grad():
        before = model.decode(model.encode(x))
        model.fold_weight_norm()
        assert torch.equal(model.decode(model.encode(x)), before)
        model.load_state_dict(other.state_dict())
        assert torch.equal(model.decode(model.encode(x)), other.decode(other.encode(x)))
        model.double()
        y = model.decode(model.encode(x.double()))
        assert y.dtype == torch.float64
        model.fold_weight_norm(False)
        assert torch.equal(model.decode(model.encode(x.double())), y)


def test_folded_weights_let_gradients_through() -> None:
    """While a gradient may flow to ``weight_v`` and ``weight_g``, the weight is computed from
    them, folded or not (training a folded model would otherwise leave them unchanged)."""
    model = _tiny()
    model.fold_weight_norm()
    conv = model.encoder.model[0].conv.conv
    conv.weight.sum().backward()
    assert conv.weight_v.grad is not None and conv.weight_g.grad is not None
    with torch.no_grad():
        assert conv.weight is conv._folded  # without autograd: the folded copy


# -- loading and saving -----------------------------------------------------------------------
def test_save_model_suffix_and_failed_replace(tmp_path: pathlib.Path) -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="^save_model writes .safetensors files, got m.th$"):
        save_model(model, tmp_path / "m.th")
    target = tmp_path / "in_the_way.safetensors"
    target.mkdir()  # os.replace onto a folder fails after the temporary file is written
    with pytest.raises(IsADirectoryError):
        save_model(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in_the_way.safetensors"]  # no temporary left


def test_load_model_refuses_a_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match=r"is a folder; pass a weights file \(.th, .pt, .safetensors\)$"):
        load_model(str(tmp_path))


def test_unreadable_path_error_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError other than a too-long name (no permission to look) is not turned into
    'no such model': it names the path."""
    real = pathlib.Path.exists

    def exists(self: pathlib.Path, *args: object, **kwargs: object) -> bool:
        if "secret" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    with pytest.raises(PermissionError, match=r"Permission denied: '/nowhere/secret/x.safetensors'"):
        load_model("/nowhere/secret/x.safetensors")


def test_missing_bundled_file_says_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    from opencodec import model_registry
    from opencodec.releases import CODEC_RELEASES

    release = next(r for r in (*CODEC_RELEASES, *LM_RELEASES) if r.file is not None)
    monkeypatch.setattr(model_registry, "BUNDLED_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=rf"^the bundled model '{release.name}' is missing from the "
                                             rf"installation \(.*\); reinstall opencodec$"):
        model_registry.release_path(release, "model")


def test_load_lm_model_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelLoadError, match="^load_lm_model needs an entropy model name or path, or the codec "
                                             "whose entropy model to load$"):
        load_lm_model()
    with pytest.raises(ModelLoadError, match=r"is a folder; pass an entropy model weights file \(.th, .pt, "
                                             r".safetensors\)$"):
        load_lm_model(str(tmp_path))
    save_file({"foo": torch.zeros(2)}, tmp_path / "foo.safetensors")
    with pytest.raises(ModelLoadError, match=r"foo.safetensors is not an entropy model state dict \(expected "
                                             r"emb.0.weight and transformer.layers.0.linear1.weight; "
                                             r"first keys: foo\)$"):
        load_lm_model(tmp_path / "foo.safetensors")
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError, match="garbage.pt: cannot load as a PyTorch state dict"):
        load_lm_model(tmp_path / "garbage.pt")
    for name, obj in (("dict.pt", {"a": 1}), ("ms.pt", {"model": {"w": torch.zeros(1)}, "step": 3})):
        torch.save(obj, tmp_path / name)
        with pytest.raises(ModelLoadError, match=rf"{name}: expected a dict of tensors \(a state dict\)$"):
            load_lm_model(tmp_path / name)
    lm = EntropyLM(n_q=2, card=16, dim=12, num_heads=2, num_layers=1, past_context=5)  # 8 heads do not fit
    save_file({k: v.contiguous() for k, v in lm.state_dict().items()}, tmp_path / "dim12.safetensors")
    with pytest.raises(ModelLoadError, match=r"dim12.safetensors: cannot build the entropy model \(dim must be a "
                                             r"multiple of num_heads\)$"):
        load_lm_model(tmp_path / "dim12.safetensors")


# -- streaming steps ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stream_model() -> EncodecModel:
    return tiny_stream_model("core_uncovered", 5)


@pytest.mark.parametrize("exact", [True, False])
def test_steps_refuse_bad_shapes_and_zero_frames(stream_model: EncodecModel, exact: bool) -> None:
    enc, dec = EncoderStep(stream_model, exact=exact), DecoderStep(stream_model, exact=exact)
    x = _noise(1, 1, 10 * HOP)
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"^expected audio \[B, 1, n\], got \(1, 2240\)$"):
            enc.start(x[0, :, :enc.warmup_frames * HOP])
        _, state = enc.start(x[..., :enc.warmup_frames * HOP])
        for n in (100, 0):
            with pytest.raises(ValueError, match=rf"^expected whole frames of 320 samples \(at least one\), "
                                                 rf"got {n} samples$"):
                enc(x[..., :n], *state)
        with pytest.raises(ValueError, match=r"^expected codes \[B, K, n\], got \(4, 3\)$"):
            dec.start(torch.zeros(4, 3, dtype=torch.long))
        with pytest.raises(ValueError, match=r"^expected at least one code frame \[B, K, n >= 1\], got \(1, 2, 0\)$"):
            dec.start(torch.zeros(1, 2, 0, dtype=torch.long))
        _, dstate = dec.start(torch.zeros(1, 2, dec.warmup_frames, dtype=torch.long))
        with pytest.raises(ValueError, match=r"^expected at least one code frame"):
            dec(torch.zeros(1, 2, 0, dtype=torch.long), *dstate)
        audio, *_ = dec(torch.zeros(1, 2, 1, dtype=torch.long), *dstate)  # one frame still works
        assert audio.shape == (1, 1, HOP)


def _step_codes(model: EncodecModel, x: torch.Tensor, exact: bool) -> torch.Tensor:
    enc = EncoderStep(model, exact=exact)
    w, frames = enc.warmup_frames, x.shape[-1] // HOP
    codes, state = enc.start(x[..., :w * HOP])
    out = [codes]
    for t in range(w, frames):
        c, *state = enc(x[..., t * HOP:(t + 1) * HOP], *state)
        out.append(c)
    out.append(enc.finish(x[..., frames * HOP:], state))
    return torch.cat(out, -1)


@pytest.mark.parametrize("config", [dict(true_skip=True), dict(kernel_size=1, last_kernel_size=1)],
                         ids=["true_skip", "kernel_1"])
def test_other_architectures_stream_and_batch_like_offline(config: dict) -> None:
    """Identity shortcuts (``true_skip``) and 1-tap convolutions, in the exact and fast steps,
    the decoder steps and the batched encoder: the offline model's codes and audio."""
    model = tiny_stream_model("arch", 5, **config)
    x = _noise(2, 1, 12 * HOP + 100, seed=3, gain=0.3)
    with torch.inference_mode():
        ref = model.encode(x)[0].codes
        audio = model.decode([(ref, None)])
        for exact in (True, False):
            assert torch.equal(_step_codes(model, x, exact), ref)
            dec = DecoderStep(model, exact=exact)
            a, state = dec.start(ref[..., :dec.warmup_frames])
            b, *_ = dec(ref[..., dec.warmup_frames:], *state)
            streamed = torch.cat([a, b], -1)
            assert (streamed - audio[..., :streamed.shape[-1]]).abs().max() < 1e-5
    lengths = [x.shape[-1], 3000]
    assert torch.equal(encode_batch(model, x, lengths).codes, encode_each(model, x, lengths).codes)


# -- batched encoding and decoding ------------------------------------------------------------
@pytest.mark.parametrize("pad_mode", ["constant", "replicate", "circular"])
def test_batch_codes_and_audio_follow_the_pad_mode(pad_mode: str) -> None:
    """Items shorter than the batch are padded at their end as the model pads a single item:
    zeros, their last sample repeated, or (circular) their own start, which reaches the
    left pad of every conv, so such models are not run as one length-aware batch."""
    model = tiny_stream_model("pad_" + pad_mode, 5, pad_mode=pad_mode)
    wav, lengths = _noise(3, 1, 4000, seed=1, gain=0.3), [4000, 3100, 2517]
    batch, each = encode_batch(model, wav, lengths), encode_each(model, wav, lengths)
    assert torch.equal(batch.codes, each.codes)
    out, lens = decode_batch(model, each)
    assert lens.tolist() == lengths
    with torch.no_grad():
        for b, n in enumerate(lengths):
            f = int(each.frame_lengths[b])
            alone = model.decode([EncodedFrame(each.codes[b:b + 1, :, :f], None)])[0, :, :n]
            assert (out[b, :, :n] - alone).abs().max() < 1e-6


def test_batch_input_errors(stream_model: EncodecModel) -> None:
    wav = _noise(2, 1, 2000)
    with pytest.raises(InvalidAudioError, match=r"^expected audio \[B, 1, T\], got \(1, 2000\)$"):
        encode_batch(stream_model, wav[0], [2000])
    with pytest.raises(InvalidAudioError, match="^lengths must be a list or 1-D tensor of ints, got int$"):
        encode_batch(stream_model, wav, 2000)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="^lengths must be a list or 1-D tensor of ints, got set$"):
        encode_batch(stream_model, wav, {2000, 1000})  # type: ignore[arg-type]
    enc = encode_batch(stream_model, wav, [2000, 1000])
    with pytest.raises(InvalidCodesError, match=r"^expected BatchEncoding.codes \[B, K, F_max\], got \(4, 7\)$"):
        decode_batch(stream_model, BatchEncoding(enc.codes[0], enc.frame_lengths, enc.lengths, None))
    with pytest.raises(InvalidCodesError, match=r"^item 0: frame_lengths 7 > the 5 frames of codes \[B, K, F_max\]$"):
        decode_batch(stream_model, BatchEncoding(enc.codes[..., :5], enc.frame_lengths, enc.lengths, None))


def test_released_lm_for_a_renamed_copy_of_its_codec_does_not_warn() -> None:
    """A codec under the user's own name whose weights are the release's: its entropy model
    fits, so loading it warns about nothing."""
    from opencodec.model_config import BUNDLED_DIR

    codec = load_model(BUNDLED_DIR / "opencodec_24khz.safetensors")
    codec.config.name = "my_24khz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = load_lm_model("opencodec_lm_24khz", codec=codec)
    assert lm.name == "opencodec_lm_24khz_v5"


def test_circular_padding_is_named_as_not_streamable() -> None:
    """Circular padding fills a conv's pad with the end of the signal, which a stream does not
    have yet: the streamability rule names it, before any layer is built."""
    from opencodec.errors import OpenCodecError
    from opencodec.streamability import check_streamable, streaming_problems
    from opencodec.streaming import StreamingEncoder

    config = EncodecConfig(name="circ", n_filters=4, dimension=16, lstm=0, n_q=4, pad_mode="circular")
    assert streaming_problems(config) == ["circular_padding"]
    assert streaming_problems(EncodecConfig(name="x", pad_mode="replicate")) == []
    with pytest.raises(OpenCodecError, match=r"^model 'circ' cannot be streamed: its convolutions pad circularly "
                                             r"\(with the end of the signal\)\. Streaming needs"):
        check_streamable(config)
    model = EncodecModel(config).eval()
    for build in (StreamingEncoder, EncoderStep, DecoderStep):
        with pytest.raises(ValueError, match=r"^model 'circ' pads circularly \(with the end of the signal\): "
                                             r"streaming needs reflect, replicate or constant padding$"):
            build(model)


def test_a_fold_refreshed_under_inference_mode_still_lets_gradients_reach_the_input() -> None:
    """A frozen folded conv whose weights changed is refreshed at its first use; when that use
    is under ``inference_mode`` the cached weight must still be a normal tensor, or a later
    pass whose input needs a gradient fails ("Inference tensors cannot be saved for backward")."""
    from opencodec.modules.conv import WeightNormConv1d

    torch.manual_seed(0)
    conv = WeightNormConv1d(2, 2, 3)
    conv.requires_grad_(False)
    conv.fold()
    with torch.no_grad():
        conv.weight_v.mul_(2)
    with torch.inference_mode():
        conv(torch.randn(1, 2, 8))
    x = torch.randn(1, 2, 8, requires_grad=True)
    conv(x).sum().backward()
    expected = torch.nn.functional.conv1d(x.detach(), torch._weight_norm(conv.weight_v, conv.weight_g, 0),
                                          conv.bias).sum()
    assert x.grad is not None and torch.equal(conv(x.detach()).sum(), expected)
