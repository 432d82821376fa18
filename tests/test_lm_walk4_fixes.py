"""Entropy-model walk 4: an entropy model that the official coder cannot run bit-exactly (in
training mode, as a new ``EntropyLM`` is, or not float32) is refused in one line that says
what to call, before any coding (not ``LMStepper needs ...`` or a dtype error from a matrix
product); a released entropy model given for a codec that is not a release (the user's own
weights) warns, as it does for another release; the entropy coders refuse float codes (they
truncated them to other codes without a word); a wrong entropy model that has the file's name
(another export of the same run) is said to be one."""

from __future__ import annotations

import warnings

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.compress import compress, decompress
from opencodec.entropy import EntropyLM
from opencodec.pretrained import BUNDLED_DIR, load_lm_model, load_model


def _codec() -> EncodecModel:
    torch.manual_seed(1)
    return EncodecModel(EncodecConfig(name="walk4_24khz", n_filters=4, dimension=16, ratios=[8, 5, 4, 2],
                                      lstm=1, n_q=4, bins=1024, target_bandwidths=[1.5, 3.0])).eval()


def _lm() -> EntropyLM:
    torch.manual_seed(0)
    return EntropyLM(n_q=4, card=1024, dim=16, num_heads=2, num_layers=1, hidden_scale=2.0)


def _wav() -> torch.Tensor:
    return 0.1 * torch.randn(1, 4800, generator=torch.Generator().manual_seed(0))


def test_new_entropy_model_in_training_mode_is_refused_with_the_call_to_make() -> None:
    codec, lm = _codec(), _lm()
    assert lm.training  # as nn.Module makes it
    with pytest.raises(ValueError, match=r"training mode .*call lm\.eval\(\)"):
        compress(codec, _wav(), 3.0, lm=lm)
    data = compress(codec, _wav(), 3.0, lm=lm.eval())
    with pytest.raises(ValueError, match=r"training mode .*call lm\.eval\(\)"):
        decompress(data, model=codec, lm=lm.train())
    lm.eval()
    assert decompress(data, model=codec, lm=lm)[0].shape == (1, 4800)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_entropy_model_not_float32_is_refused_with_the_call_to_make(dtype: torch.dtype) -> None:
    codec, lm = _codec(), _lm().eval()
    data = compress(codec, _wav(), 3.0, lm=lm)
    other = _lm().eval().to(dtype)
    with pytest.raises(ValueError, match=rf"weights are {dtype}.*call lm\.float\(\)"):
        compress(codec, _wav(), 3.0, lm=other)
    if dtype == torch.float64:  # same values, same weights hash (float16 rounds them: another hash)
        with pytest.raises(ValueError, match=rf"weights are {dtype}.*call lm\.float\(\)"):
            decompress(data, model=codec, lm=lm.to(dtype))


def test_released_entropy_model_for_a_codec_that_is_no_release_warns() -> None:
    with pytest.warns(UserWarning, match=r"opencodec_lm_24khz_v5 was trained for codec opencodec_24khz_v5, "
                                         r"not walk4_24khz \(weights hash [0-9a-f]{16}, not a release\)"):
        load_lm_model("opencodec_lm_24khz", codec=_codec())
    same_weights = load_model(BUNDLED_DIR / "opencodec_24khz.safetensors")  # the release's own weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_lm_model("opencodec_lm_24khz", codec=same_weights)
        load_lm_model("opencodec_lm_24khz", codec=_codec(), any_codec=True)  # decoding: no warning


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_entropy_coders_refuse_codes_that_are_not_integers(dtype: torch.dtype) -> None:
    from opencodec.entropy import encode_segment_fixed, encode_segment_with_lm, fixed_lm_for

    lm = _lm().eval()
    codes = torch.tensor([[3.7, 1023.9], [0.5, 2.2]]).to(dtype)  # float32: coded as 3, 1023, 0, 2 before
    with pytest.raises(ValueError, match=rf"codes must be integers, got dtype {dtype}"):
        encode_segment_with_lm(lm, codes)
    with pytest.raises(ValueError, match=rf"codes must be integers, got dtype {dtype}"):
        encode_segment_fixed(fixed_lm_for(lm), codes, check_bits=8, check_interval=75)
    with pytest.raises(TypeError, match="codes must be a torch.Tensor"):
        encode_segment_with_lm(lm, [[1, 2]])  # type: ignore[arg-type]
    ints = torch.tensor([[3, 1023], [0, 2]], dtype=torch.int32)  # any integer dtype still codes
    data = encode_segment_with_lm(lm, ints)
    from opencodec.entropy import decode_segment_with_lm
    assert decode_segment_with_lm(lm, data, 2, 2).tolist() == ints.tolist()


def test_wrong_entropy_model_with_the_files_name_says_it_is_another_export_of_the_run() -> None:
    codec = _codec()
    written, other = _lm().eval(), _lm().eval()
    with torch.no_grad():
        other.linears[0].bias.add_(1.0)  # more training steps: other weights, same run name
    written.name = other.name = "walk4_24khz_lm_run1"  # as load_lm_model names both exports
    data = compress(codec, _wav(), 3.0, lm=written, deterministic=True)
    from opencodec.errors import BitstreamError
    with pytest.raises(BitstreamError, match=r"given \('walk4_24khz_lm_run1'\) has weights hash [0-9a-f]+ "
                                             r"\(the same name, other weights: another export"):
        decompress(data, model=codec, lm=other)
    other.name = "walk4_24khz_lm_run2"
    with pytest.raises(BitstreamError, match=r"given \('walk4_24khz_lm_run2'\) has weights hash [0-9a-f]+; decode"):
        decompress(data, model=codec, lm=other)
