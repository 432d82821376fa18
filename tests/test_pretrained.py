"""Weight loading: layouts, strictness, safety, the cache and the offline message."""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel, ModelLoadError
from opencodec import pretrained
from opencodec.pretrained import load_model, save_model


def _to_hf(key: str, parametrized: bool) -> str:
    """Official key -> Hugging Face key (the spec's renaming rules)."""
    key = key.replace("encoder.model.", "encoder.layers.").replace("decoder.model.", "decoder.layers.")
    key = key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
    key = key.replace(".conv.norm.", ".norm.").replace(".convtr.norm.", ".norm.")
    key = key.replace("quantizer.vq.layers.", "quantizer.layers.").replace("._codebook.", ".codebook.")
    if parametrized:
        key = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", key)
        key = re.sub(r"\.weight_v$", ".parametrizations.weight.original1", key)
    return key


def _same_weights(a: EncodecModel, b: EncodecModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
@pytest.mark.parametrize("parametrized", [False, True])
def test_hugging_face_layout(official_models: dict, official_checkpoints: dict, tmp_path: Path,
                             name: str, parametrized: bool) -> None:
    state = official_models[name].state_dict()
    hf = {_to_hf(k, parametrized): v for k, v in state.items()}
    assert not set(hf) & set(state)  # really another layout
    path = tmp_path / "hf.bin"
    torch.save(hf, path)
    model = load_model(path)
    assert model.name == name
    assert _same_weights(model, load_model(official_checkpoints[name]))


def test_parametrizations_naming_in_official_layout(official_models: dict, official_checkpoints: dict,
                                                    tmp_path: Path) -> None:
    state = official_models["encodec_24khz"].state_dict()
    renamed = {re.sub(r"\.weight_g$", ".parametrizations.weight.original0",
                      re.sub(r"\.weight_v$", ".parametrizations.weight.original1", k)): v for k, v in state.items()}
    path = tmp_path / "p.pt"
    torch.save(renamed, path)
    assert _same_weights(load_model(path), load_model(official_checkpoints["encodec_24khz"]))


def test_missing_unexpected_and_misshaped_keys_are_named(official_models: dict, tmp_path: Path) -> None:
    state = dict(official_models["encodec_24khz"].state_dict())
    missing = dict(state)
    del missing["decoder.model.15.conv.conv.bias"]
    torch.save(missing, tmp_path / "missing.th")
    with pytest.raises(ModelLoadError, match=r"missing keys: decoder\.model\.15\.conv\.conv\.bias"):
        load_model(tmp_path / "missing.th")

    extra = dict(state, **{"decoder.model.99.foo": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.th")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: decoder\.model\.99\.foo"):
        load_model(tmp_path / "extra.th")

    shaped = dict(state)
    shaped["decoder.model.15.conv.conv.bias"] = torch.zeros(3)
    torch.save(shaped, tmp_path / "shape.th")
    with pytest.raises(ModelLoadError, match=r"decoder\.model\.15\.conv\.conv\.bias \(expected \(1,\), got \(3,\)\)"):
        load_model(tmp_path / "shape.th")


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (exec, ("raise SystemExit('unpickled!')",))


def test_arbitrary_objects_are_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.th"
    with open(path, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(path)


def test_not_a_model(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foo.th")
    with pytest.raises(ModelLoadError, match="not an EnCodec state dict"):
        load_model(tmp_path / "foo.th")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(ModelLoadError, match="no model named 'nope'"):
        load_model("nope")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="unknown weights format"):
        load_model(tmp_path / "w.txt")


def test_custom_config_round_trip_through_safetensors(tmp_path: Path) -> None:
    cfg = EncodecConfig(name="tiny_16khz", sample_rate=16000, n_filters=4, dimension=16, n_q=4,
                        ratios=[4, 4], lstm=1, target_bandwidths=[1.0, 2.0])
    model = EncodecModel(cfg)
    path = save_model(model, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert loaded.config == cfg
    assert _same_weights(model, loaded)
    x = torch.randn(1, 1, 999)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_offline_message_names_the_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError) as info:
        load_model("encodec_48khz")
    msg = str(info.value)
    assert "encodec_48khz-7e698e3e.th" in msg
    assert str(tmp_path / "cache" / "encodec_48khz-7e698e3e.th") in msg
    assert "OPENCODEC_CACHE" in msg


def test_cache_lookup_checks_the_hash(official_checkpoints: dict, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(official_checkpoints["encodec_24khz"]).read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("OPENCODEC_CACHE", str(cache))
    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    good = f"encodec_24khz-{prefix}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", good)
    (cache / good).write_bytes(data)
    model = load_model("encodec_24khz")
    assert model.name == "encodec_24khz"
    assert _same_weights(model, load_model(official_checkpoints["encodec_24khz"]))
    # The real file name carries another hash: random weights under it are reported corrupt.
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", "encodec_24khz-d7cc33bc.th")
    (cache / "encodec_24khz-d7cc33bc.th").write_bytes(data)
    with pytest.raises(ModelLoadError, match=f"corrupt: its sha256 starts with {prefix}, expected d7cc33bc"):
        load_model("encodec_24khz")
