"""A file decodes with the weights that wrote it or fails with a clear error: names of models
loaded from files, damaged headers, wording when no model was given, and ``info``
identifying the model as decompress does."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from opencodec import cli, pretrained
from opencodec.bitstream import EcdcHeader, parse_header, write_header
from opencodec.compress import compress, decompress
from opencodec.ecdc_info import describe_file
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.identity import check_model_for_file, declare_official, model_for_file, model_hash
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model
from opencodec.releases import CURRENT_CODEC, codec_release

WAV = 0.1 * torch.randn(1, 2400, generator=torch.Generator().manual_seed(7))


@pytest.fixture(autouse=True)
def _no_official_weights_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no official checkpoint loaded by name in this process."""
    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {}, raising=False)


@pytest.fixture(scope="module")
def fake24() -> EncodecModel:
    """The official 24 kHz architecture with weights that are not the official ones."""
    torch.manual_seed(101)
    return EncodecModel(EncodecConfig.encodec_24khz()).eval()


@pytest.fixture(scope="module")
def current() -> EncodecModel:
    return load_model()


def _tiny(name: str, seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, lstm=0, n_q=4,
                                      target_bandwidths=[1.5, 3.0])).eval()


def _with_header(data: bytes, **changes: object) -> bytes:
    """``data`` (a version 0 .ecdc file) with its JSON header's keys changed (None: removed)."""
    size = struct.unpack(">I", data[5:9])[0]
    meta = json.loads(data[9:9 + size])
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    text = json.dumps(meta).encode()
    return data[:5] + struct.pack(">I", len(text)) + text + data[9 + size:]


# -- 1: an official name with other weights -------------------------------------------------
def test_official_name_with_other_weights_is_custom_and_hashed(fake24: EncodecModel, tmp_path: Path) -> None:
    saved = save_model(fake24, tmp_path / "fake.safetensors")  # metadata says encodec_24khz
    bare = tmp_path / "fake.th"
    torch.save(fake24.state_dict(), bare)  # no metadata: the name is inferred from the shapes
    for path in (saved, bare):
        model = load_model(path)
        assert model.name == "encodec_24khz_custom", path
        header, _ = parse_header(compress(model, WAV, 6.0))
        assert (header.model_name, header.model_hash) == ("encodec_24khz_custom", model_hash(fake24))
    # another model of that architecture cannot decode it (before: any encodec_24khz did)
    data = compress(load_model(saved), WAV, 6.0)
    torch.manual_seed(102)
    other = tmp_path / "other.safetensors"
    save_model(EncodecModel(EncodecConfig.encodec_24khz()).eval(), other)
    with pytest.raises(BitstreamError, match="weights hash"):
        decompress(data, load_model(other))
    (tmp_path / "f.ecdc").write_bytes(data)
    assert describe_file(tmp_path / "f.ecdc")["release"] != "official EnCodec weights"
    # a model built in Python with those weights is not proven official either: <name>_custom
    # and its hash, unless declared official (the official package's headers, no hash)
    header, _ = parse_header(compress(fake24, WAV, 6.0))
    assert (header.model_name, header.model_hash) == ("encodec_24khz_custom", model_hash(fake24))
    declared = declare_official(copy.deepcopy(fake24))
    header, _ = parse_header(compress(declared, WAV, 6.0))
    assert (header.model_name, header.model_hash) == ("encodec_24khz", None)
    # a file of the official package (no hash) still decodes with a copy loaded from a file,
    # with a warning that its weights are not proven official (nothing in such a file proves it)
    official_file = compress(declared, WAV, 6.0)
    with pytest.warns(UserWarning, match="not proven to be the official ones"):
        audio, _ = decompress(official_file, load_model(saved))
    assert torch.equal(audio, decompress(official_file, declared)[0])


def test_the_official_checkpoint_file_keeps_its_name(fake24: EncodecModel, tmp_path: Path,
                                                     offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official file itself (its sha256 prefix is the official one) keeps the official
    name; a converted copy of its weights does only once the official file was loaded by name."""
    raw = tmp_path / "ckpt.th"
    torch.save(fake24.state_dict(), raw)
    filename = f"encodec_24khz-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", filename)
    copy = save_model(fake24, tmp_path / "converted.safetensors")
    assert load_model(raw).name == "encodec_24khz"  # the official file, by path
    pretrained._OFFICIAL_WEIGHTS.clear()
    assert load_model(copy).name == "encodec_24khz_custom"  # not provable offline
    (offline / filename).write_bytes(raw.read_bytes())
    assert load_model("encodec_24khz").name == "encodec_24khz"
    assert load_model(copy).name == "encodec_24khz"  # the same weights as the official file


# -- 10: a release's name with other weights -------------------------------------------------
def test_fine_tuned_release_is_custom(current: EncodecModel, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    same = save_model(current, tmp_path / "same.safetensors")
    assert load_model(same).name == CURRENT_CODEC  # the release's weights: its name
    tuned = load_model()
    with torch.no_grad():
        for p in tuned.decoder.parameters():
            p.mul_(1.05)
    path = save_model(tuned, tmp_path / "ft.safetensors")  # stores the name opencodec_24khz_v5
    loaded = load_model(path)
    assert loaded.name == f"{CURRENT_CODEC}_custom"
    header, _ = parse_header(compress(loaded, WAV, 6.0))
    assert header.model_name == f"{CURRENT_CODEC}_custom" and header.model_hash == model_hash(tuned)
    wav = tmp_path / "a.wav"
    import soundfile as sf
    sf.write(wav, WAV[0].numpy(), 24000)
    assert cli.main(["compress", str(wav), str(tmp_path / "a.ecdc"), "--model", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"({CURRENT_CODEC}_custom)" in out + err and f"({CURRENT_CODEC})" not in out + err


def test_alias_and_config_names(tmp_path: Path) -> None:
    path = save_model(_tiny("opencodec_24khz", 3), tmp_path / "alias.safetensors")
    assert load_model(path).name == "opencodec_24khz_custom"
    own = save_model(_tiny("my_model", 3), tmp_path / "own.safetensors")
    assert load_model(own).name == "my_model"  # not a registered name: kept
    config = dataclasses.replace(_tiny("opencodec_24khz_v4", 3).config)
    assert load_model(own, config=config).name == "opencodec_24khz_v4_custom"
    assert config.name == "opencodec_24khz_v4"  # the caller's config is not renamed


# -- 2: a release's name without its hash, unknown keys ------------------------------------
def test_release_name_without_hash_is_damaged(current: EncodecModel) -> None:
    data = compress(current, WAV, 6.0)
    i = data.index(b'"mh"')
    flipped = bytearray(data)
    flipped[i + 1] ^= 1  # "mh" -> "lh": one bit
    for damaged in (bytes(flipped), _with_header(data, mh=None)):
        with pytest.raises(BitstreamError, match=r"'opencodec_24khz_v5' .*no weights hash.*damaged"):
            decompress(damaged)
        with pytest.raises(BitstreamError, match="damaged"):
            decompress(damaged, current)
    with pytest.raises(BitstreamError, match="damaged"):
        model_for_file(CURRENT_CODEC, None, 8, "the stream", lambda name: current)
    with pytest.raises(BitstreamError, match="damaged"):
        check_model_for_file(current, CURRENT_CODEC, None, 8, "the stream")
    # the legacy alias without a hash is not damaged: it asks for the release
    with pytest.raises(ModelLoadError, match="before versioned model names"):
        decompress(_with_header(data, m="opencodec_24khz", mh=None))


def test_unknown_header_keys_warn() -> None:
    fo = io.BytesIO()
    write_header(fo, EcdcHeader("x", 5, 2, False))
    data = _with_header(fo.getvalue(), future=[1, 2], lh="0123456789abcdef")
    with pytest.warns(UserWarning, match=r"unknown key\(s\) 'future', 'lh'"):
        header, _ = parse_header(data)
    assert header == EcdcHeader("x", 5, 2, False)  # still read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_header(fo.getvalue())  # known keys only: no warning


# -- 16: no "model given" when none was -------------------------------------------------------
def test_wording_when_the_model_comes_from_the_header(current: EncodecModel) -> None:
    data = _with_header(compress(current, WAV, 6.0), m="encodec_24khz")
    with pytest.raises(BitstreamError) as info:
        decompress(data)
    message = str(info.value)
    assert "model given" not in message
    assert "model 'opencodec_24khz_v5' (the release whose weights hash the file records)" in message
    with pytest.raises(BitstreamError, match=r"the model given \('opencodec_24khz_v5'\)"):
        decompress(data, current)


# -- 17: info identifies the model as decompress does --------------------------------------
def test_info_uses_the_hash_like_decompress(current: EncodecModel, tmp_path: Path) -> None:
    path = tmp_path / "foo.ecdc"
    path.write_bytes(_with_header(compress(current, WAV, 6.0), m="foo_24khz"))
    info = describe_file(path)
    release = codec_release(CURRENT_CODEC)
    assert info["release"] == f"the weights of release {CURRENT_CODEC}"
    assert (info["sample_rate"], info["channels"], info["bandwidth_kbps"]) == (24000, 1, 6.0)
    assert info["duration_s"] == pytest.approx(0.1) and info["body_bytes_missing"] == 0
    wav, rate = decompress(path.read_bytes())
    assert (rate, wav.shape) == (release.sample_rate, (1, 2400))


def test_safetensors_without_metadata_says_where_the_architecture_came_from(tmp_path: Path) -> None:
    """An inference-only export stripped of its metadata: the error says where the architecture
    came from, never "unset architecture"."""
    from safetensors.torch import load_file

    tensors = load_file(str(pretrained.BUNDLED_DIR / "opencodec_24khz_v4.safetensors"))
    path = tmp_path / "nometa.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert "unset" not in message and str(path) in message
    assert "read off its tensor shapes" in message and "training statistics" in message
