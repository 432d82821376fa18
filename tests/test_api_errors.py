"""Python API and weights-file mistakes get a clear error, never an AttributeError from deep
inside."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from opencodec import cli
from opencodec.bandwidth import check_bandwidth
from opencodec.compress import compress, decompress
from opencodec.errors import InvalidAudioError, InvalidCodesError, ModelLoadError, UnsupportedBandwidthError
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import BUNDLED_DIR, load_lm_model, load_model

WAV = 0.1 * torch.randn(1, 2400, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    torch.manual_seed(0)
    return EncodecModel(EncodecConfig(name="tiny_api", n_filters=4, dimension=16, lstm=0, n_q=4,
                                      target_bandwidths=[1.5, 3.0])).eval()


# -- 21: wrong types ------------------------------------------------------------------------
def test_decompress_with_a_name_or_a_path(tiny: EncodecModel) -> None:
    data = compress(tiny, WAV, 3.0)
    with pytest.raises(TypeError, match=r"model must be an EncodecModel or None .*got str "
                                        r"'opencodec_24khz_v5'.*load_model\(NAME_OR_PATH\)"):
        decompress(data, "opencodec_24khz_v5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"decompress_from_file"):
        decompress("speech24.ecdc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"decompress_from_file"):
        decompress(Path("speech24.ecdc"))  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [None, "opencodec_24khz", Path("model.safetensors")])
def test_compress_without_a_model(model: object) -> None:
    with pytest.raises(TypeError, match=r"model must be an EncodecModel, got .*load_model"):
        compress(model, WAV, 6.0)  # type: ignore[arg-type]


def test_load_model_bad_argument(offline: Path) -> None:
    with pytest.raises(TypeError, match=r"expected a model name or a weights file path .*got int 5"):
        load_model(5)  # type: ignore[arg-type]
    for empty in ("", "  "):
        with pytest.raises(ModelLoadError, match="empty model name"):
            load_model(empty)
        with pytest.raises(ModelLoadError, match="empty entropy model name"):
            load_lm_model(empty)


def test_cli_empty_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    sf.write(tmp_path / "a.wav", WAV[0].numpy(), 24000)
    code = cli.main(["compress", str(tmp_path / "a.wav"), str(tmp_path / "a.ecdc"), "--model", ""])
    err = capsys.readouterr().err
    assert code == 1 and "empty model name" in err and "is a folder" not in err
    assert not (tmp_path / "a.ecdc").exists()


def test_decode_one_encoded_frame(tiny: EncodecModel) -> None:
    with torch.inference_mode():
        frames = tiny.encode(WAV[None])
        with pytest.raises(InvalidCodesError, match=r"got one EncodedFrame; pass a list"):
            tiny.decode(frames[0])
        assert tiny.decode(list(frames)).shape[-1] >= WAV.shape[-1]


def test_meta_tensors(tiny: EncodecModel) -> None:
    with pytest.raises(InvalidAudioError, match="meta device"):
        compress(tiny, WAV.to("meta"), 3.0)
    with torch.inference_mode():
        frames = tiny.encode(WAV[None])
        meta = [type(frames[0])(frames[0].codes.to("meta"), None)]
        with pytest.raises(InvalidCodesError, match="meta device"):
            tiny.decode(meta)


# -- 7: bandwidths --------------------------------------------------------------------------
def test_near_miss_bandwidth_shows_its_digits(tiny: EncodecModel) -> None:
    with pytest.raises(UnsupportedBandwidthError, match=r"does not support 6\.0000001 kbps; choose one "
                                                        r"of: 1\.5, 3, 6, 12 kbps"):
        check_bandwidth(6.0000001, [1.5, 3.0, 6.0, 12.0], "m")
    with pytest.raises(UnsupportedBandwidthError, match=r"does not support 3\.0000001 kbps"):
        compress(tiny, WAV, 3.0000001)


@pytest.mark.parametrize("value, shown", [("6", "'6'"), (True, "True"), (None, "None"), ([6], r"\[6\]")])
def test_bandwidth_that_is_not_a_number(tiny: EncodecModel, value: object, shown: str) -> None:
    with pytest.raises(UnsupportedBandwidthError, match=rf"^bandwidth must be a number, got {shown} "
                                                        r"\(\w+\); choose one of: 1\.5, 3, 6 kbps \(model m\)$"):
        check_bandwidth(value, [1.5, 3.0, 6.0], "m")
    if value is not None:  # None is compress's "the model's current bandwidth"
        with pytest.raises(UnsupportedBandwidthError, match=rf"bandwidth must be a number, got {shown}"):
            compress(tiny, WAV, value)  # type: ignore[arg-type]


# -- 11: weights files ----------------------------------------------------------------------
class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_not_a_pytorch_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError) as info:
        load_model(junk)
    message = str(info.value)
    assert message.startswith(f"{junk}: ") and "not a PyTorch file" in message
    assert "weights_only" not in message and "likely succeed" not in message


def test_pickle_with_code_is_refused_in_one_clean_line(tmp_path: Path) -> None:
    evil = tmp_path / "evil.th"
    torch.save({"x": torch.zeros(1)}, evil)  # a real torch zip whose pickle holds a global
    with zipfile.ZipFile(evil) as zf:
        names = zf.namelist()
        parts = {n: zf.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    parts[pkl] = pickle.dumps(_Evil(), protocol=2)
    with zipfile.ZipFile(evil, "w") as zf:
        for n in names:
            zf.writestr(n, parts[n])
    with pytest.raises(ModelLoadError) as info:
        load_model(evil)
    message = str(info.value)
    assert str(evil) in message and "\x1b" not in message and "\n" not in message
    assert "could run code" in message and "likely succeed" not in message


def test_not_a_codec_state_dict_names_the_file(tmp_path: Path) -> None:
    rand = tmp_path / "rand.safetensors"
    save_file({"a": torch.randn(3, 4)}, str(rand))
    with pytest.raises(ModelLoadError, match=rf"^{rand}: not an EnCodec state dict"):
        load_model(rand)


def test_entropy_model_file_as_codec() -> None:
    lm_file = BUNDLED_DIR / "opencodec_lm_24khz.safetensors"
    with pytest.raises(ModelLoadError, match=r"this is an entropy model, not a codec: use --lm-model"):
        load_model(lm_file)
