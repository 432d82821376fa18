"""Edge inputs of the Python model API: audio so loud that a normalising model's RMS overflows
float32, tensors and models on the meta device (no values: a one-line error, not torch's
"Cannot copy out of meta tensor"), and the low-level entropy coder's ``block``,
``check_bits`` and ``check_interval`` arguments (a block below one coded nothing, a float
interval placed the checks elsewhere), a name given as ``model_from_state_dict``'s config and a
float ``bins``."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.compress import compress, decompress
from opencodec.entropy import (EntropyLM, decode_segment_fixed, encode_segment_fixed,
                               encode_segment_with_lm, fixed_lm_for)
from opencodec.errors import ModelLoadError
from opencodec.weights_layout import model_from_state_dict
from opencodec.weights_hash import weights_sha256

from codec_helpers import _model

SEGMENTING = dict(channels=2, causal=False, norm="time_group_norm", normalize=True, segment=0.1,
                  overlap=0.2)  # segments of 2400 samples every 1920


@pytest.fixture(scope="module")
def segmenting() -> EncodecModel:
    return _model(**SEGMENTING)


@pytest.fixture(scope="module")
def lm() -> EntropyLM:
    torch.manual_seed(0)
    return EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, past_context=8).eval()


def _codes(frames: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 16, (2, frames), generator=torch.Generator().manual_seed(seed))


def _wav(channels: int, length: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(1, channels, length, generator=torch.Generator().manual_seed(seed))


# -- a normalising model and audio whose squares overflow float32 ---------------------------------
def test_a_normalising_model_scales_audio_whose_squares_overflow_float32(segmenting: EncodecModel) -> None:
    wav = _wav(2, 4500)
    with torch.inference_mode():
        quiet = segmenting.encode(wav)
        loud = segmenting.encode(wav * 1e20)  # finite samples; x**2 summed over a segment is inf
        for q, l in zip(quiet, loud):
            assert torch.isfinite(l.scale).all()
            assert torch.allclose(l.scale.double(), q.scale.double() * 1e20, rtol=1e-5)
            assert torch.equal(l.codes, q.codes)  # the same normalised signal
        out, ref = segmenting.decode(loud), segmenting.decode(quiet)
    assert torch.isfinite(out).all()
    assert torch.allclose(out / 1e20, ref, rtol=1e-4, atol=1e-6)


def test_compress_writes_a_file_of_audio_whose_squares_overflow_float32(segmenting: EncodecModel) -> None:
    wav = _wav(2, 3000)[0] * 1e20
    audio, rate = decompress(compress(segmenting, wav, 1.8), segmenting)
    assert audio.shape == wav.shape and torch.isfinite(audio).all()
    assert 1e19 < float(audio.abs().max()) < 1e22


# -- the meta device: shapes without values --------------------------------------------------------
def test_compress_and_decompress_refuse_a_codec_on_the_meta_device_in_one_line(segmenting: EncodecModel) -> None:
    meta = _model(**SEGMENTING).to("meta")
    with pytest.raises(ValueError, match=r"cannot hash weights on the meta device \(.*\): they have a "
                                         r"shape but no values; load the model on a device with data"):
        compress(meta, _wav(2, 3000)[0], 1.8)
    data = compress(segmenting, _wav(2, 3000)[0], 1.8)
    with pytest.raises(ValueError, match=r"cannot hash weights on the meta device"):
        decompress(data, meta)
    with pytest.raises(ValueError, match=r"meta device"):
        weights_sha256(meta)


def test_an_entropy_model_on_the_meta_device_is_refused_in_one_line(lm: EntropyLM) -> None:
    meta = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1, past_context=8).eval().to("meta")
    with pytest.raises(ModelLoadError, match=r"the entropy model is on the meta device \(.*\): it has "
                                             r"shapes but no weights"):
        fixed_lm_for(meta)
    with pytest.raises(ValueError, match=r"the entropy model is on the meta device: it has shapes"):
        encode_segment_with_lm(meta, _codes())


def test_meta_codes_are_refused_by_the_entropy_coders_in_one_line(lm: EntropyLM) -> None:
    meta = torch.zeros(2, 3, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match=r"codes are on the meta device: they have a shape but no values"):
        encode_segment_with_lm(lm, meta)
    with pytest.raises(ValueError, match=r"codes are on the meta device"):
        encode_segment_fixed(fixed_lm_for(lm), meta, check_bits=8, check_interval=4)


# -- the deterministic coder's arguments -----------------------------------------------------------
@pytest.mark.parametrize("block", [0, -1, -32])
def test_a_block_below_one_is_refused_not_coded_to_nothing(lm: EntropyLM, block: int) -> None:
    flm = fixed_lm_for(lm)
    with pytest.raises(ValueError, match=rf"block must be an int >= 1 \(frames per pass\), got {block}"):
        encode_segment_fixed(flm, _codes(), check_bits=8, check_interval=4, block=block)
    with pytest.raises(ValueError, match=r"block must be an int >= 1"):
        flm.cdfs(_codes(), block=block)


def test_any_block_of_one_or_more_gives_the_same_bytes(lm: EntropyLM) -> None:
    flm = fixed_lm_for(lm)
    ref = encode_segment_fixed(flm, _codes(), check_bits=8, check_interval=4)
    for block in (1, 5, np.int64(7), 1000):
        assert encode_segment_fixed(flm, _codes(), check_bits=8, check_interval=4, block=block) == ref


@pytest.mark.parametrize("change", [dict(check_interval=2.5), dict(check_interval=4.0),
                                    dict(check_bits=8.0), dict(check_bits=True)])
def test_check_bits_and_interval_must_be_ints(lm: EntropyLM, change: dict) -> None:
    flm = fixed_lm_for(lm)
    args = {"check_bits": 8, "check_interval": 4, **change}
    name = next(iter(change))
    with pytest.raises(TypeError, match=rf"{name} must be an int, got (float|bool)"):
        encode_segment_fixed(flm, _codes(), **args)
    with pytest.raises(TypeError, match=rf"{name} must be an int"):
        decode_segment_fixed(flm, b"\0" * 64, 2, 12, **args)


def test_numpy_check_arguments_code_as_the_same_ints(lm: EntropyLM) -> None:
    flm = fixed_lm_for(lm)
    ref = encode_segment_fixed(flm, _codes(), check_bits=8, check_interval=4)
    data = encode_segment_fixed(flm, _codes(), check_bits=np.int32(8), check_interval=np.int64(4))
    assert data == ref
    decoded = decode_segment_fixed(flm, data, 2, 12, check_bits=np.int32(8), check_interval=np.int32(4))
    assert torch.equal(decoded, _codes())


# -- building models ------------------------------------------------------------------------------
def test_model_from_state_dict_says_a_name_is_not_a_config() -> None:
    model = _model()
    with pytest.raises(TypeError, match=r"config must be an EncodecConfig, a dict or None .* got str "
                                        r"'encodec_24khz'"):
        model_from_state_dict(model.state_dict(), "encodec_24khz")  # type: ignore[arg-type]


def test_a_float_bins_is_refused_with_the_fields_message() -> None:
    with pytest.raises(ValueError, match=r"^bins must be a power of two, got 16.0$"):
        EncodecModel(EncodecConfig(n_filters=2, dimension=4, n_q=2, bins=16.0, lstm=0))  # type: ignore[arg-type]


def test_load_lm_model_refuses_more_codebooks_than_the_codec_has() -> None:
    from opencodec.pretrained import load_lm_model, load_model

    codec = load_model()  # the bundled codec
    with pytest.raises(ValueError, match=rf"^load_lm_model: num_codebooks must be at most the {codec.n_q} "
                                         rf"codebooks of codec {re.escape(codec.name)}, got 100$"):
        load_lm_model(codec=codec, num_codebooks=100)
    assert load_lm_model(codec=codec, num_codebooks=codec.n_q).n_q >= codec.n_q


def test_save_model_refuses_a_model_on_the_meta_device_in_one_line(tmp_path) -> None:
    from opencodec.pretrained import save_model

    with pytest.raises(ValueError, match=r"^save_model: the model is on the meta device \(.*\): it has "
                                         r"shapes but no weights to save"):
        save_model(_model().to("meta"), tmp_path / "meta.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_model_names_a_folder_given_as_the_file(tmp_path) -> None:
    from opencodec.pretrained import save_model

    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"weights.safetensors is a folder; pass the path of a "
                                                r"\.safetensors file"):
        save_model(_model(), folder)
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


@pytest.mark.parametrize("counts, message", [((2.0, 12), r"num_codebooks must be an int, got float 2.0"),
                                             ((2, 12.0), r"num_frames must be an int, got float 12.0"),
                                             ((2, -1), r"num_frames must be >= 0")])
def test_the_segment_decoders_check_their_counts(lm: EntropyLM, counts: tuple, message: str) -> None:
    from opencodec.entropy import decode_segment_with_lm

    error = ValueError if "must be >=" in message else TypeError
    with pytest.raises(error, match=message):
        decode_segment_with_lm(lm, b"\0" * 64, *counts)
    with pytest.raises(error, match=message):
        decode_segment_fixed(fixed_lm_for(lm), b"\0" * 64, *counts, check_bits=8, check_interval=4)


def test_the_segment_decoders_take_numpy_counts(lm: EntropyLM) -> None:
    from opencodec.entropy import decode_segment_with_lm

    data = encode_segment_with_lm(lm, _codes())
    assert torch.equal(decode_segment_with_lm(lm, data, np.int64(2), np.int32(12)), _codes())


def test_the_segment_decoders_say_what_data_they_take(lm: EntropyLM) -> None:
    from opencodec.entropy import decode_segment_with_lm

    with pytest.raises(TypeError, match=r"expected the coded bytes \(bytes, bytearray, memoryview\) or a "
                                        r"binary file, got str"):
        decode_segment_with_lm(lm, "\0" * 64, 2, 12)  # type: ignore[arg-type]


# -- the bit packer ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [3.7, 3.0, np.float32(5.0), torch.tensor(2.0)])
def test_the_bit_packer_refuses_a_float_code_instead_of_truncating_it(value: object) -> None:
    import io

    from opencodec.bitstream import BitPacker

    out = io.BytesIO()
    packer = BitPacker(10, out)
    with pytest.raises(ValueError, match=r"codes must be integers, got "):
        packer.push(value)  # type: ignore[arg-type]
    packer.flush()
    assert out.getvalue() == b""


def test_the_bit_packer_takes_numpy_and_tensor_integers_as_pack_codes_does() -> None:
    import io

    from opencodec.bitstream import BitPacker, pack_codes

    out = io.BytesIO()
    packer = BitPacker(10, out)
    for value in (1, np.int16(2), torch.tensor(1023)):
        packer.push(value)  # type: ignore[arg-type]
    packer.flush()
    assert out.getvalue() == pack_codes(torch.tensor([[1, 2, 1023]]), 10) == bytes.fromhex("0108f03f")
