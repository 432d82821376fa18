"""When a file may name the official weights: a model built with the official architecture writes\na custom name and its hash, ``declare_official`` writes the official header, and weights loaded by\nname stay official."""

from __future__ import annotations

import copy

import pytest
import torch

from opencodec import pretrained
from opencodec.bitstream import parse_header
from opencodec.compress import compress, decompress
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.identity import declare_official, header_identity, is_proven_official, model_hash
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.weights_hash import weights_sha256

from codec_helpers import _tiny, WAV24


@pytest.fixture(scope="module")
def official24() -> EncodecModel:
    torch.manual_seed(3)
    return EncodecModel(EncodecConfig.encodec_24khz()).eval()


# -- 2: official names and unproven weights --------------------------------------------------------
def test_built_official_architecture_writes_custom_and_hash(official24: EncodecModel) -> None:
    assert not is_proven_official(official24)
    assert header_identity(official24) == ("encodec_24khz_custom", model_hash(official24))
    data = compress(official24, WAV24, 6.0)
    header, _ = parse_header(data)
    assert (header.model_name, header.model_hash) == ("encodec_24khz_custom", model_hash(official24))
    assert decompress(data, official24)[0].shape == (1, 2400)
    torch.manual_seed(4)
    other = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    with pytest.raises(BitstreamError, match="weights hash"):
        decompress(data, other)
    with pytest.raises(ModelLoadError, match="not a registered release"):
        decompress(data)  # never the official checkpoint


def test_declare_official_writes_the_official_header_while_the_weights_stay(official24: EncodecModel) -> None:
    declared = declare_official(copy.deepcopy(official24))
    assert is_proven_official(declared)
    header, _ = parse_header(compress(declared, WAV24, 6.0))
    assert (header.model_name, header.model_hash) == ("encodec_24khz", None)
    with torch.no_grad():
        declared.decoder.model[0].conv.conv.bias.add_(1e-3)  # fine-tuned after the declaration
    assert not is_proven_official(declared)
    assert parse_header(compress(declared, WAV24, 6.0))[0].model_name == "encodec_24khz_custom"
    # decoding an official (hashless) file with an unproven model warns, as a file copy does
    official_file = compress(declare_official(copy.deepcopy(official24)), WAV24, 6.0)
    with pytest.warns(UserWarning, match="not proven to be the official ones"):
        decompress(official_file, official24)
    with pytest.raises(ValueError, match="named encodec_24khz or encodec_48khz"):
        declare_official(_tiny())
    with pytest.raises(ValueError, match="official architecture"):
        declare_official(_tiny("encodec_24khz"))


def test_weights_loaded_by_name_stay_official(official24: EncodecModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """What load_model("encodec_24khz") records (the official checkpoint's weights hash)
    proves a model official, whichever object holds the weights."""
    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {"encodec_24khz": {weights_sha256(official24)}})
    assert header_identity(official24) == ("encodec_24khz", None)
    assert parse_header(compress(official24, WAV24, 6.0))[0].model_hash is None
