"""The proof that a model holds the official weights: a model loaded by name in a spawned process,\nthe proof kept on the model, reading official files with an unproven model, and compressing with\nmodels built under inference mode."""

from __future__ import annotations

import copy
import hashlib
import io
import multiprocessing
import warnings
from pathlib import Path

import pytest
import torch
from test_bitstream import _random_frames

from opencodec import pretrained
from opencodec.bitstream import EcdcHeader, encode_ecdc, parse_header, read_body, read_ecdc, StreamLayout, write_ecdc
from opencodec.compress import compress, decompress
from opencodec.errors import BitstreamError
from opencodec.identity import declare_official, header_identity, is_proven_official, model_hash
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model
from opencodec.weights_hash import state_dict_sha256, weights_sha256


SMALL = dict(n_filters=2, dimension=4, lstm=0)


WAV24 = 0.1 * torch.randn(1, 2400, generator=torch.Generator().manual_seed(3))


NOT_PROVEN = "not proven to be the official ones"


@pytest.fixture(autouse=True)
def _no_official_weights_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no official checkpoint loaded by name in this process."""
    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {})


def _small(name: str, seed: int) -> EncodecModel:
    """The official architecture of ``name`` (rate, channels, codebooks), small layers."""
    base = EncodecConfig.encodec_24khz() if name == "encodec_24khz" else EncodecConfig.encodec_48khz()
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(**{**base.to_dict(), **SMALL})).eval()


# -- 2: the proof travels with the model ------------------------------------------------------
def test_model_loaded_by_name_writes_the_official_header_in_a_spawned_process(
        tmp_path: Path, offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random official-architecture checkpoint stands in for the official file (in the
    offline cache under its sha256 prefix): ``load_model("encodec_24khz")`` proves it in this
    process; pickled to a spawn-context worker (which never loaded anything by name), the
    model still writes the official header, and a copy whose weights changed does not."""
    torch.manual_seed(202)
    raw = tmp_path / "ckpt.th"
    torch.save(EncodecModel(EncodecConfig.encodec_24khz()).state_dict(), raw)
    filename = f"encodec_24khz-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", filename)
    (offline / filename).write_bytes(raw.read_bytes())
    model = load_model("encodec_24khz")
    assert header_identity(model) == ("encodec_24khz", None)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        tuned.decoder.model[0].conv.conv.bias.add_(1e-3)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        official = pool.apply(compress, (model, WAV24, 6.0))
        other = pool.apply(compress, (tuned, WAV24, 6.0))
    header = parse_header(official)[0]
    assert (header.model_name, header.model_hash) == ("encodec_24khz", None)
    assert official == compress(model, WAV24, 6.0)  # the same bytes as in this process
    header = parse_header(other)[0]
    assert (header.model_name, header.model_hash) == ("encodec_24khz_custom", model_hash(tuned))


def test_the_proof_on_the_model_outlives_the_process_record(tmp_path: Path, offline: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What a spawned process sees: no record of weights loaded by name, only the model."""
    torch.manual_seed(5)
    official = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    raw = tmp_path / "ckpt.th"
    torch.save(official.state_dict(), raw)
    filename = f"encodec_24khz-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", filename)
    model = load_model(raw)  # the official file itself, by path: proven
    assert model.name == "encodec_24khz" and is_proven_official(model)
    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {})
    assert header_identity(model) == ("encodec_24khz", None)
    copy_path = save_model(model, tmp_path / "copy.safetensors")
    assert load_model(copy_path).name == "encodec_24khz_custom"  # a file copy is not proven


# -- 3: the bitstream API reads official files with an official-architecture model ----------
@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_read_ecdc_reads_an_official_file_with_an_unproven_model(name: str) -> None:
    declared, unproven = declare_official(_small(name, 1)), _small(name, 2)
    header = EcdcHeader(name, 50_000, 3, False)  # the official package's header: no hash
    frames = _random_frames(StreamLayout.from_config(declared.config), header)
    data = encode_ecdc(header, frames, declared)  # a model serves as layout
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_header, reference = read_ecdc(data, declared)  # proven: no warning
    assert got_header == header
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        got_header, got = read_ecdc(data, unproven)
    assert got_header == header
    assert all(torch.equal(a.codes, b.codes) for a, b in zip(got, reference))
    body = data[parse_header(data)[1]:]
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        assert len(read_body(body, header, unproven)) == len(reference)
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        read_body(body, header, StreamLayout.from_model(unproven))
    # as decompress does with the same model and a file compress wrote
    official_file = compress(declared, 0.1 * torch.randn(declared.channels, 4800), 6.0)
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        decompress(official_file, unproven)
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        read_ecdc(official_file, unproven)


def test_bitstream_identity_checks_that_still_hold(tmp_path: Path) -> None:
    """The unproven model still reads its own (``<name>_custom``) files without a warning; it
    may not write an official header through the bitstream API; another name is refused."""
    unproven = _small("encodec_24khz", 2)
    own = compress(unproven, WAV24, 6.0)
    assert parse_header(own)[0].model_name == "encodec_24khz_custom"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ecdc(own, unproven)
    header = EcdcHeader("encodec_24khz", 2400, 2, False)
    frames = _random_frames(StreamLayout.from_config(unproven.config), header)
    with pytest.raises(BitstreamError, match="declare_official"):
        write_ecdc(io.BytesIO(), header, frames, unproven)
    other = encode_ecdc(EcdcHeader("encodec_48khz", 2400, 2, False),
                        _random_frames(StreamLayout.from_config(_small("encodec_48khz", 3).config),
                                       EcdcHeader("encodec_48khz", 2400, 2, False)),
                        StreamLayout.from_config(_small("encodec_48khz", 3).config))
    with pytest.raises(BitstreamError, match="written by model 'encodec_48khz'"):
        read_ecdc(other, unproven)
    # a file of the official name that records a hash is not an official file
    hashed = encode_ecdc(EcdcHeader("encodec_24khz", 2400, 2, False, model_hash="0" * 16), frames,
                         StreamLayout.from_config(unproven.config))
    with pytest.raises(BitstreamError, match="being read with model 'encodec_24khz_custom'"):
        read_ecdc(hashed, unproven)


# -- 4: inference tensors ---------------------------------------------------------------------
def test_compress_with_models_built_under_inference_mode() -> None:
    with torch.inference_mode():
        official = _small("encodec_24khz", 7)
        plain = EncodecModel(EncodecConfig(name="mine", n_filters=4, dimension=16, lstm=0, n_q=4,
                                           target_bandwidths=[1.5, 3.0])).eval()
        assert official.encoder.model[0].conv.conv.weight.is_inference()
        custom = compress(official, WAV24, 6.0)
        mine = compress(plain, WAV24, 3.0)
    twin = _small("encodec_24khz", 7)  # the same weights, ordinary tensors
    assert weights_sha256(official) == weights_sha256(twin) == state_dict_sha256(twin.state_dict())
    header = parse_header(custom)[0]
    assert (header.model_name, header.model_hash) == ("encodec_24khz_custom", model_hash(twin))
    assert compress(official, WAV24, 6.0) == custom == compress(twin, WAV24, 6.0)
    header = parse_header(mine)[0]
    assert (header.model_name, header.model_hash) == ("mine", model_hash(plain))
    decompress(mine, plain)
    with pytest.warns(UserWarning, match=NOT_PROVEN):
        decompress(compress(declare_official(twin), WAV24, 6.0), official)
    # declared official while inference tensors: the declaration ends when they change
    declare_official(official)
    assert parse_header(compress(official, WAV24, 6.0))[0].model_hash is None
    with torch.inference_mode():
        official.decoder.model[0].conv.conv.bias.add_(1e-3)  # no version counter to bump
    assert weights_sha256(official) != weights_sha256(twin)
    assert parse_header(compress(official, WAV24, 6.0))[0].model_name == "encodec_24khz_custom"
