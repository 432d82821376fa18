"""A release's or the official checkpoint's weights run only with their own configuration
(opencodec.config_identity): the weights hash covers tensors only, so the bundled release's
weights with ``causal: false`` used to take the release's name and decode its files to other
audio without an error. Also: ``declare_official`` on a copy loaded from a file
(``<name>_custom``)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from opencodec import pretrained
from opencodec.bitstream import parse_header
from opencodec.compress import compress, decompress
from opencodec.config_identity import FREE_FIELDS, SHAPE_FIELDS, config_differences, release_config
from opencodec.errors import ModelLoadError
from opencodec.identity import declare_official, header_identity, is_proven_official
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import config_for_name, load_model, save_model
from opencodec.releases import CODEC_RELEASES, CURRENT_CODEC, RELEASE_SETTINGS, codec_release
from opencodec.weights_hash import weights_sha256
from test_compress_official import _check_against_official  # the byte comparison with the official package

V5 = CURRENT_CODEC
WAV = 0.1 * torch.randn(1, 1, 4800, generator=torch.Generator().manual_seed(11))


@pytest.fixture(autouse=True)
def _no_official_weights_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no official checkpoint loaded by name in this process."""
    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {})


@pytest.fixture(scope="module")
def v5() -> EncodecModel:
    return load_model(V5)


def _with_config(model: EncodecModel, path: Path, **changes: object) -> Path:
    """``model``'s weights saved to ``path`` with its configuration changed (tensors unchanged)."""
    twin = copy.deepcopy(model)
    twin.config = dataclasses.replace(twin.config, **changes)
    return save_model(twin, path, inference_only=True)


def _fake_official_checkpoint(folder: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                              seed: int = 5) -> tuple[Path, EncodecModel]:
    """A random official-architecture 24 kHz checkpoint standing in for the official file: in the
    offline cache under its sha256 prefix (as OFFICIAL_CHECKPOINTS names it); returns its path."""
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    raw = folder / "ckpt.th"
    torch.save(model.state_dict(), raw)
    filename = f"encodec_24khz-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", filename)
    shutil.copy(raw, cache / filename)
    return raw, model


def _codes_and_audio(model: EncodecModel, wav: torch.Tensor, frames: list) -> tuple[list, torch.Tensor]:
    model.set_target_bandwidth(model.target_bandwidths[1])
    with torch.no_grad():
        return [f.codes for f in model.encode(wav)], model.decode(frames)


# -- which fields change the computation (the rule's evidence) ----------------------------------
@pytest.mark.parametrize("changes,matters", [
    (dict(causal=False), True), (dict(pad_mode="constant"), True), (dict(segment=0.1), True),
    (dict(sample_rate=16000), True), (dict(normalize=True), True),
    (dict(name="mine"), False), (dict(target_bandwidths=[1.5, 3.0, 5.25]), False),
    (dict(overlap=0.05), False),  # no segments: nothing overlaps
    (dict(dilation_base=3), False),  # one residual layer: dilation_base ** 0
])
def test_a_changed_field_changes_codes_or_audio_exactly_when_the_rule_says(
        v5: EncodecModel, changes: dict, matters: bool) -> None:
    frames = v5.encode(WAV)
    codes, audio = _codes_and_audio(v5, WAV, frames)
    other = pretrained.model_from_state_dict(v5.state_dict(), dataclasses.replace(v5.config, **changes))
    other_codes, other_audio = _codes_and_audio(other, WAV, frames)
    same = (len(codes) == len(other_codes) and all(torch.equal(a, b) for a, b in zip(codes, other_codes))
            and torch.equal(audio, other_audio))
    assert same != matters
    assert bool(config_differences(other.config, v5.config, V5)) == matters


def test_overlap_changes_a_segmenting_model() -> None:
    """The 48 kHz layout (segments of 1 s, 1 % overlap), small layers: overlap matters there."""
    torch.manual_seed(3)
    config = EncodecConfig(**{**EncodecConfig.encodec_48khz().to_dict(), "n_filters": 2, "dimension": 4, "lstm": 0})
    model = EncodecModel(config).eval()
    other = pretrained.model_from_state_dict(model.state_dict(), dataclasses.replace(config, overlap=0.05))
    wav = 0.1 * torch.randn(1, 2, 72000, generator=torch.Generator().manual_seed(1))
    assert model.segments(72000) != other.segments(72000)  # where each segment starts
    with torch.no_grad():
        frames = model.encode(wav)
        assert model.decode(frames).shape != other.decode(frames).shape  # overlap-added elsewhere
    assert config_differences(other.config, config, "encodec_48khz") == ["overlap 0.05 (encodec_48khz: 0.01)"]


def test_shipped_releases_store_the_recorded_settings() -> None:
    """What RELEASE_SETTINGS gives a release that is not shipped is what the shipped ones store."""
    shipped = [r for r in CODEC_RELEASES if r.file is not None]
    assert shipped
    for release in shipped:
        stored = config_for_name(release.name)
        assert stored is not None
        assert {k: getattr(stored, k) for k in RELEASE_SETTINGS} == RELEASE_SETTINGS
        assert config_differences(release_config(release, None, stored), stored, release.name) == []
    assert not (FREE_FIELDS & SHAPE_FIELDS)


# -- 1: a release by name with config= ---------------------------------------------------------
@pytest.mark.parametrize("changes,named", [
    (dict(causal=False), "causal False (opencodec_24khz_v5: True)"),
    (dict(pad_mode="constant"), "pad_mode 'constant' (opencodec_24khz_v5: 'reflect')"),
    (dict(n_filters=8), "n_filters 8 (opencodec_24khz_v5: 16)"),  # named, not its tensors
])
def test_release_by_name_refuses_another_configuration(changes: dict, named: str) -> None:
    config = dataclasses.replace(config_for_name(V5), **changes)
    with pytest.raises(ModelLoadError, match="config= does not fit release opencodec_24khz_v5") as err:
        load_model(V5, config=config)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert "load 'opencodec_24khz_v5' by name" in str(err.value)


def test_free_fields_still_load_with_the_release_name(v5: EncodecModel, tmp_path: Path) -> None:
    config = dataclasses.replace(config_for_name(V5), name="mine", target_bandwidths=[1.5, 3.0],
                                 overlap=0.5, dilation_base=3)
    model = load_model(V5, config=config)
    assert model.name == V5 and model.target_bandwidths == [1.5, 3.0]
    assert weights_sha256(model) == weights_sha256(v5)
    assert load_model(_with_config(v5, tmp_path / "n.safetensors", name="my_model")).name == V5
    assert load_model("opencodec_24khz").name == V5  # the alias, no config=


# -- 2: a file whose weights are a release's ----------------------------------------------------
@pytest.mark.parametrize("changes,named", [
    (dict(causal=False), "causal False (opencodec_24khz_v5: True)"),
    (dict(pad_mode="constant"), "pad_mode 'constant' (opencodec_24khz_v5: 'reflect')"),
    (dict(normalize=True), "normalize True (opencodec_24khz_v5: False)"),
])
def test_a_file_with_a_releases_weights_refuses_another_configuration(
        v5: EncodecModel, tmp_path: Path, changes: dict, named: str) -> None:
    path = _with_config(v5, tmp_path / "odd.safetensors", **changes)
    with pytest.raises(ModelLoadError, match="holds the weights of release opencodec_24khz_v5 with "
                                             "another configuration") as err:
        load_model(path)
    assert named in str(err.value)
    # the advice works: the release's configuration given with the file
    assert load_model(path, config=config_for_name(V5)).name == V5
    good = save_model(v5, tmp_path / "good.safetensors")
    with pytest.raises(ModelLoadError, match=r"causal False \(opencodec_24khz_v5: True\)"):
        load_model(good, config=dataclasses.replace(v5.config, causal=False))


def test_the_cached_file_of_a_release_not_shipped_is_checked(v5: EncodecModel, tmp_path: Path, offline: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that is not shipped is read from the cache: its file's configuration must be the
    recorded one (RELEASE_SETTINGS), as its weights must have the release's hash."""
    release = dataclasses.replace(codec_release(V5), file=None)  # as if v5 were not shipped
    monkeypatch.setattr(pretrained, "codec_release", lambda name: release if name == V5 else None)
    _with_config(v5, offline / f"{V5}.safetensors", pad_mode="constant")
    with pytest.raises(ModelLoadError, match=r"stores another configuration than release "
                                             r"opencodec_24khz_v5's: pad_mode 'constant' .*git show") as err:
        load_model(V5)
    assert "config_for_name" not in str(err.value)  # gives None for a release not shipped
    save_model(v5, offline / f"{V5}.safetensors", inference_only=True)
    assert load_model(V5).name == V5


# -- 3: the official model by name with config=, and its checkpoint file by path -----------------
def test_official_by_name_refuses_another_configuration(tmp_path: Path, offline: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # refused before any file is looked for (the cache is empty and downloads are off)
    with pytest.raises(ModelLoadError, match=r"config= does not fit the official encodec_48khz: "
                                             r"segment None \(encodec_48khz: 1.0\)"):
        load_model("encodec_48khz", config=dataclasses.replace(EncodecConfig.encodec_48khz(), segment=None))
    with pytest.raises(ModelLoadError, match=r"overlap 0.02 \(encodec_48khz: 0.01\)"):
        load_model("encodec_48khz", config=dataclasses.replace(EncodecConfig.encodec_48khz(), overlap=0.02))
    raw, _ = _fake_official_checkpoint(tmp_path, offline, monkeypatch)
    odd = dataclasses.replace(EncodecConfig.encodec_24khz(), causal=False)
    with pytest.raises(ModelLoadError, match=r"config= does not fit the official encodec_24khz: "
                                             r"causal False \(encodec_24khz: True\)"):
        load_model("encodec_24khz", config=odd)
    assert pretrained._OFFICIAL_WEIGHTS == {}  # nothing recorded as official
    free = dataclasses.replace(EncodecConfig.encodec_24khz(), target_bandwidths=[6.0])
    model = load_model("encodec_24khz", config=free)
    assert model.name == "encodec_24khz" and is_proven_official(model)


def test_the_official_weights_from_a_file_refuse_another_configuration(tmp_path: Path, offline: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    raw, built = _fake_official_checkpoint(tmp_path, offline, monkeypatch)
    odd = dataclasses.replace(EncodecConfig.encodec_24khz(), pad_mode="constant")
    with pytest.raises(ModelLoadError, match=r"ckpt.th holds the official encodec_24khz weights with another "
                                             r"configuration: pad_mode 'constant' \(encodec_24khz: 'reflect'\)"):
        load_model(raw, config=odd)
    with pytest.raises(ModelLoadError, match="causal False"):  # whatever the config's name
        load_model(raw, config=dataclasses.replace(odd, name="mine", pad_mode="reflect", causal=False))
    assert load_model(raw).name == "encodec_24khz"
    # a copy of the weights, once the official file was loaded by name in this process
    copy_path = _with_config(built, tmp_path / "copy.safetensors", causal=False)
    assert load_model("encodec_24khz").name == "encodec_24khz"
    with pytest.raises(ModelLoadError, match=r"copy.safetensors holds the official encodec_24khz weights"):
        load_model(copy_path)
    # custom weights (no release, not the official file) keep loading with any configuration:
    # their hash is weights-only (the documented limitation)
    torch.manual_seed(6)
    custom = tmp_path / "custom.th"
    torch.save(EncodecModel(EncodecConfig.encodec_24khz()).state_dict(), custom)
    model = load_model(custom, config=odd)
    assert (model.name, model.config.pad_mode) == ("encodec_24khz_custom", "constant")


# -- declare_official on a copy loaded from a file (<name>_custom) ------------------------------
@pytest.mark.parametrize("name,length,bandwidth", [("encodec_24khz", 4800, 6.0), ("encodec_48khz", 9600, 12.0)])
def test_declare_official_accepts_a_custom_copy_and_writes_the_official_bytes(
        official_models: dict, tmp_path: Path, name: str, length: int, bandwidth: float) -> None:
    path = tmp_path / "A.bin"
    torch.save(official_models[name].state_dict(), path)  # not the official file: not proven
    model = load_model(path)
    assert model.name == f"{name}_custom"
    declared = declare_official(model)
    assert declared is model and declared.name == name and is_proven_official(declared)
    assert header_identity(declared) == (name, None)
    _check_against_official(official_models, {name: declared}, name, length, bandwidth)


def test_declare_official_refuses_a_configuration_that_computes_otherwise() -> None:
    torch.manual_seed(7)
    config = dataclasses.replace(EncodecConfig.encodec_24khz(), name="encodec_24khz_custom", causal=False)
    model = EncodecModel(config).eval()
    with pytest.raises(ValueError, match=r"computes otherwise than the official encodec_24khz.*"
                                         r"causal False \(encodec_24khz: True\)"):
        declare_official(model)
    assert model.name == "encodec_24khz_custom" and not is_proven_official(model)
    with pytest.raises(ValueError, match=r"pad_mode 'constant' \(encodec_24khz: 'reflect'\)"):
        declare_official(EncodecModel(dataclasses.replace(config, name="encodec_24khz", causal=True,
                                                          pad_mode="constant")))
    with pytest.raises(ValueError, match=r"segment None \(encodec_48khz: 1.0\)"):
        declare_official(EncodecModel(dataclasses.replace(EncodecConfig.encodec_48khz(),
                                                          name="encodec_48khz_custom", segment=None)))
    with pytest.raises(ValueError, match="named encodec_24khz or encodec_48khz"):
        declare_official(EncodecModel(dataclasses.replace(config, name="mine", causal=True)))
    # a declared copy's files decode with it and carry no hash
    fine = declare_official(EncodecModel(dataclasses.replace(config, causal=True)).eval())
    data = compress(fine, WAV[0], 6.0)
    assert (parse_header(data)[0].model_name, parse_header(data)[0].model_hash) == ("encodec_24khz", None)
    assert decompress(data, fine)[0].shape == (1, 4800)
