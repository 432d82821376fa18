"""Entropy coding with an entropy model (``--lm``) refuses what the official coder cannot
run bit-exactly (training mode, not float32, rounded copies of a release, non-integer codes)
and names the model it needs: another export of a run, a changed release, a release for a
codec that is no release, an official codec's own entropy model."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.compress import compress, decompress
from opencodec.entropy import EntropyLM
from opencodec.errors import BitstreamError
from opencodec.pretrained import BUNDLED_DIR, load_lm_model, load_model


def _codec() -> EncodecModel:
    torch.manual_seed(1)
    return EncodecModel(EncodecConfig(name="tiny_lm_coding_24khz", n_filters=4, dimension=16, ratios=[8, 5, 4, 2],
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
                                         r"not tiny_lm_coding_24khz \(weights hash [0-9a-f]{16}, not a release\)"):
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
    written.name = other.name = "tiny_lm_coding_24khz_lm_run1"  # as load_lm_model names both exports
    data = compress(codec, _wav(), 3.0, lm=written, deterministic=True)
    from opencodec.errors import BitstreamError
    with pytest.raises(BitstreamError, match=r"given \('tiny_lm_coding_24khz_lm_run1'\) has weights hash [0-9a-f]+ "
                                             r"\(the same name, other weights: another export"):
        decompress(data, model=codec, lm=other)
    other.name = "tiny_lm_coding_24khz_lm_run2"
    with pytest.raises(BitstreamError, match=r"given \('tiny_lm_coding_24khz_lm_run2'\) has weights hash [0-9a-f]+; decode"):
        decompress(data, model=codec, lm=other)


# ------------------------------------------------------------------------------------------
# 1. The wrong-entropy-model error says why a model of the same name has other weights
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled() -> tuple:
    """The bundled codec and entropy model, 0.5 s of noise coded in the deterministic format
    at 1.5 kbps with the entropy model in float32, and the same coded with a float16 copy
    under the release's name (as a writer without the release-name check writes it), and that copy."""
    from opencodec.bitstream import body
    from opencodec.compress import compress
    from opencodec.pretrained import load_lm_model, load_model

    torch.manual_seed(0)
    model = load_model("opencodec_24khz")
    lm = load_lm_model("opencodec_lm_24khz", codec=model)
    wav = 0.1 * torch.randn(1, 12000)
    coded = compress(model, wav, 1.5, lm, deterministic=True)
    half = load_lm_model("opencodec_lm_24khz", codec=model).half()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body, "_check_release_name", lambda det: None)
        coded_half = compress(model, wav, 1.5, half, deterministic=True)
    return model, lm, coded, coded_half, half, wav


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_rounded_entropy_model_is_named_as_such(bundled, dtype) -> None:
    """The release's entropy model in half precision makes another integer model: the error
    says so, not that it is another export of a training run."""
    from opencodec.compress import decompress
    from opencodec.pretrained import load_lm_model

    model, _, coded, *_ = bundled
    rounded = load_lm_model("opencodec_lm_24khz", codec=model).to(dtype)
    with pytest.raises(BitstreamError) as info:
        decompress(coded, model, rounded)
    message = str(info.value)
    assert f"the entropy model given is in {dtype}: rounded weights make another integer model" in message
    assert "training run" not in message


def test_a_file_coded_with_a_changed_copy_of_a_release(bundled) -> None:
    """A file coded with a float16 copy of the release carries the release's name with
    another hash: decoding it with the release itself says that the file was coded with a
    changed copy, not that the release is another export of a training run."""
    from opencodec.compress import decompress

    model, lm, _, coded_half, *_ = bundled
    with pytest.raises(BitstreamError) as info:
        decompress(coded_half, model, lm)
    message = str(info.value)
    assert "the file was not coded with that release's weights" in message
    assert "training run" not in message


def test_a_changed_model_under_a_release_name(bundled) -> None:
    """A float32 model with other weights named as the release (weights changed in place):
    the error points to the release itself."""
    from opencodec.compress import decompress
    from opencodec.pretrained import load_lm_model

    model, _, coded, *_ = bundled
    changed = load_lm_model("opencodec_lm_24khz", codec=model)
    with torch.no_grad():
        changed.linears[0].weight.mul_(1.5)
    with pytest.raises(BitstreamError) as info:
        decompress(coded, model, changed)
    message = str(info.value)
    assert "load_lm_model('opencodec_lm_24khz_v5')" in message and "training run" not in message


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_rounded_release_is_not_written_under_its_name(bundled, dtype) -> None:
    """Coding with the release's entropy model in half precision wrote a file that names the
    release with another integer model: ``decompress`` (which finds the model by that name)
    could not decode it. It is refused, before any byte; under a name of its own
    (``lm_name=``) the rounded model codes, and a file written before is still read with the
    model that wrote it."""
    from opencodec.compress import compress, compress_to_file, decompress
    from opencodec.pretrained import load_lm_model

    model, _, _, coded_half, half, wav = bundled
    rounded = load_lm_model("opencodec_lm_24khz", codec=model).to(dtype)
    out = io.BytesIO()
    with pytest.raises(BitstreamError, match=r"named 'opencodec_lm_24khz_v5', but its weights are "
                                             r"not that release's .* \(lm_name=\.\.\.\)"):
        compress_to_file(model, wav, out, 1.5, rounded, deterministic=True)
    assert out.getvalue() == b""
    own = compress(model, wav, 1.5, rounded, deterministic=True, lm_name="my_rounded_lm")
    assert decompress(own, model, rounded)[0].shape == wav.shape
    assert decompress(coded_half, model, half)[0].shape == wav.shape


# ------------------------------------------------------------------------------------------
# 4. The pairing warning for a codec that has an entropy model of its own names it
# ------------------------------------------------------------------------------------------
def test_pairing_warning_names_an_official_codecs_own_entropy_model() -> None:
    """The bundled entropy model given for a codec named ``encodec_24khz`` (the official
    architecture; weights made here, so nothing is downloaded): the warning points to that
    codec's own entropy model, ``encodec_lm_24khz``, not to training one, and does not call
    an official name "not a release"."""
    import warnings

    from opencodec.model import EncodecModel
    from opencodec.model_config import OFFICIAL_CONFIGS
    from opencodec.pretrained import load_lm_model

    torch.manual_seed(0)
    codec = EncodecModel(OFFICIAL_CONFIGS["encodec_24khz"]())
    assert codec.name == "encodec_24khz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_lm_model("opencodec_lm_24khz", codec=codec, num_codebooks=8)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "not encodec_24khz (weights hash " in messages[0]
    assert messages[0].endswith("its own entropy model is encodec_lm_24khz")
    assert "train-lm" not in messages[0] and "not a release" not in messages[0]
