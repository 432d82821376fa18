"""Round 2 of the user walkthrough (trust24): names that mean particular weights, and what
``info`` and the load errors say about them.

- a deterministic file may not carry the unversioned alias ``opencodec_lm_24khz`` (today's
  release) or an official entropy model's name on a release's weights: it would name a model
  it does not decode with (as a versioned release name already was refused);
- reading a file that names a release's entropy model with weights no release has says so
  (not "not a known name");
- the empty-name error's grammar; a release that is not shipped names the one option that
  takes it (``--model`` for a codec, ``--lm-model`` for an entropy model);
- an official-format entropy-coded body cut to nothing is "complete: NO" in ``info``;
- a legacy file (bare ``opencodec_24khz``, no weights hash) whose entropy-model hash is a
  release that served another codec release warns when decoded with the given model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from opencodec import cli
from opencodec.bitstream import parse_header
from opencodec.cli.info import format_info
from opencodec.compress import compress, decompress
from opencodec.ecdc_info import describe_file
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.identity import check_model_for_file, lm_name_for_file
from opencodec.model_registry import release_path, weights_path
from opencodec.pretrained import load_lm_model, load_model
from opencodec.releases import codec_release, lm_release


@pytest.fixture(scope="module")
def v5():
    return load_model("opencodec_24khz_v5")


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    gen = torch.Generator().manual_seed(24)
    return 0.1 * torch.randn(1, 2400, generator=gen)


def _changed_v5_lm():
    lm = load_lm_model("opencodec_lm_24khz_v5")
    with torch.no_grad():
        next(lm.parameters()).add_(0.01)
    return lm


# -- item 1: the alias and the official names on other weights -----------------------------------
def test_alias_on_another_release_is_refused_and_names_that_release(v5, wav) -> None:
    lm = load_lm_model("opencodec_lm_24khz_v4b")
    with pytest.raises(BitstreamError, match=r"named 'opencodec_lm_24khz' \(today's release "
                                             r"opencodec_lm_24khz_v5\), but its weights are not that "
                                             r"release's .*: name it 'opencodec_lm_24khz_v4b'"):
        compress(v5, wav, bandwidth=1.5, lm=lm, deterministic=True, lm_name="opencodec_lm_24khz")


def test_alias_on_changed_weights_is_refused(v5, wav) -> None:
    with pytest.raises(BitstreamError, match=r"named 'opencodec_lm_24khz' .*give the model its own "
                                             r"name \(lm_name=\.\.\.\)$"):
        compress(v5, wav, bandwidth=1.5, lm=_changed_v5_lm(), deterministic=True,
                 lm_name="opencodec_lm_24khz")


def test_alias_on_todays_release_still_writes_and_decodes(v5, wav) -> None:
    lm = load_lm_model("opencodec_lm_24khz_v5")
    data = compress(v5, wav, bandwidth=1.5, lm=lm, deterministic=True, lm_name="opencodec_lm_24khz")
    assert parse_header(data)[0].deterministic.lm_name == "opencodec_lm_24khz"
    plain = compress(v5, wav, bandwidth=1.5)
    assert torch.equal(decompress(data)[0], decompress(plain)[0])


@pytest.mark.parametrize("official", ["encodec_lm_24khz", "encodec_lm_48khz"])
def test_official_name_on_a_release_is_refused(v5, wav, official: str) -> None:
    lm = load_lm_model("opencodec_lm_24khz_v4b")
    with pytest.raises(BitstreamError, match=rf"named '{official}' \(the official entropy model\), but "
                                             rf"its weights are release opencodec_lm_24khz_v4b's .*: "
                                             rf"name it 'opencodec_lm_24khz_v4b'"):
        compress(v5, wav, bandwidth=1.5, lm=lm, deterministic=True, lm_name=official)


@pytest.mark.parametrize("name", ["opencodec_lm_24khz", "opencodec_lm_24khz_v5"])
def test_reading_a_release_name_on_unknown_weights_says_so(v5, name: str) -> None:
    with pytest.raises(ModelLoadError) as err:
        lm_name_for_file(name, "0123456789abcdef", v5, "the ECDC file")
    message = str(err.value)
    assert "(encodec_lm_24khz, " not in message  # the old error listed the very name as unknown
    assert message.startswith(f"the ECDC file was entropy coded with entropy model {name!r}, but with "
                              f"weights hash 0123456789abcdef, which no release has: with those weights "
                              f"it is not a known name (other weights under that name")
    assert message.endswith("pass that entropy model (lm=..., or --lm-model PATH on the command line)")


# -- item 2 and 4: load errors ---------------------------------------------------------------------
@pytest.mark.parametrize(("what", "article"), [("entropy model", "an"), ("model", "a")])
def test_empty_name_error_grammar(what: str, article: str) -> None:
    with pytest.raises(ModelLoadError, match=rf"^empty {what} name: pass {article} {what} name \("):
        weights_path("", what)


def test_release_not_shipped_names_its_own_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODEC_CACHE", str(tmp_path))
    codec, lm = codec_release("opencodec_24khz_v1"), lm_release("opencodec_lm_24khz_v1")
    assert codec is not None and lm is not None and codec.file is None and lm.file is None
    with pytest.raises(ModelLoadError) as err:
        release_path(codec, "model")
    assert "pass that file (--model PATH; its weights hash is checked)" in str(err.value)
    assert "--lm-model" not in str(err.value)
    with pytest.raises(ModelLoadError) as err:
        release_path(lm, "entropy model")
    assert "pass that file (--lm-model PATH; its weights hash is checked)" in str(err.value)
    assert "--model/" not in str(err.value)


# -- item 3: an official-format entropy-coded body cut to nothing ----------------------------------
def test_info_says_an_empty_official_format_lm_body_is_incomplete(v5, wav, tmp_path: Path) -> None:
    data = compress(v5, wav, bandwidth=1.5, lm=load_lm_model("opencodec_lm_24khz_v5"))
    _, offset = parse_header(data)
    (tmp_path / "cut.ecdc").write_bytes(data[:offset])
    (tmp_path / "whole.ecdc").write_bytes(data)
    cut = describe_file(tmp_path / "cut.ecdc")
    assert cut["body_bytes"] == 0 and cut["lm_body_min_bytes"] == 1
    assert ("complete:      NO, truncated: the entropy-coded body has 0 bytes, and 2400 samples x 2 "
            "codebooks need at least 1") in format_info(cut)
    whole = format_info(describe_file(tmp_path / "whole.ecdc"))
    assert "complete:      not checked (entropy coded: only decoding tells)" in whole
    assert cli.main(["info", str(tmp_path / "cut.ecdc")]) == 1  # described, but damaged: fails
    assert cli.main(["info", str(tmp_path / "whole.ecdc")]) == 0


# -- item 6: a legacy file whose entropy model served another codec release -------------------------
def test_legacy_file_with_another_releases_entropy_model_warns(v5) -> None:
    v4b = lm_release("opencodec_lm_24khz_v4b")
    assert v4b is not None
    with pytest.warns(UserWarning) as said:
        check_model_for_file(v5, "opencodec_24khz", None, 8, "the ECDC file", lm_hash=v4b.fixed_hash)
    assert [str(w.message) for w in said] == [
        f"the ECDC file names model 'opencodec_24khz' without a weights hash, and its entropy model "
        f"(opencodec_lm_24khz_v4b, by the hash it records, {v4b.fixed_hash}) served codec "
        f"opencodec_24khz_v4, not the model given (opencodec_24khz_v5): it was most likely written by "
        f"opencodec_24khz_v4, and other weights decode it to wrong audio; decode with -m "
        f"opencodec_24khz_v4 (Python: load_model('opencodec_24khz_v4'))"]


def test_legacy_file_checks_stay_quiet_when_nothing_contradicts(v5) -> None:
    v4 = load_model("opencodec_24khz_v4")
    v4b, v5_lm = lm_release("opencodec_lm_24khz_v4b"), lm_release("opencodec_lm_24khz_v5")
    codec_v5 = codec_release("opencodec_24khz_v5")
    assert v4b is not None and v5_lm is not None and codec_v5 is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model_for_file(v4, "opencodec_24khz", None, 8, lm_hash=v4b.fixed_hash)  # the right release
        check_model_for_file(v5, "opencodec_24khz", None, 8, lm_hash=v5_lm.fixed_hash)
        check_model_for_file(v5, "opencodec_24khz", None, 8, lm_hash=None)  # a plain file
        check_model_for_file(v5, "opencodec_24khz", None, 8, lm_hash="0123456789abcdef")  # not a release
        # a file that records the codec's weights hash proves its codec: no warning
        check_model_for_file(v5, "opencodec_24khz_v5", codec_v5.short_hash, 8, lm_hash=v4b.fixed_hash)


def test_official_lm_names_are_the_registry_ones() -> None:
    """The torch-free list the bitstream checks names by is the registry's."""
    from opencodec.model_registry import OFFICIAL_LM_CHECKPOINTS
    from opencodec.releases import OFFICIAL_LM_NAMES

    assert set(OFFICIAL_LM_NAMES) == set(OFFICIAL_LM_CHECKPOINTS)


def test_info_model_of_a_release_describes_a_file_from_before_versioned_names(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``decompress -m opencodec_24khz_v4`` decodes a file whose header names the bare
    ``opencodec_24khz`` without a hash (before versioned names); ``info -m opencodec_24khz_v4``
    said it "was not used" for that file ("it describes only files that name it"), against the
    README's "describes only the files decompress would decode with it". No such warning now; a
    model that is no release still gets it."""
    legacy = Path(__file__).parent / "fixtures" / "stage3_621d886_6kbps.ecdc"
    assert cli.main(["info", str(legacy), "-m", "opencodec_24khz_v4"]) == 0
    assert "was not used" not in capsys.readouterr().err
    assert cli.main(["info", str(legacy), "-m", "encodec_24khz"]) == 0
    assert "was not used" in capsys.readouterr().err
