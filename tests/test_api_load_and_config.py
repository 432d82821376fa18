"""``load_model``/``load_lm_model`` argument checks, configurations no model can have, a dict
that is not a config, ``num_codebooks`` of odd bandwidths and a model on the meta device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.errors import UnsupportedBandwidthError
from opencodec.input_checks import check_device
from opencodec.pretrained import load_lm_model, load_model

from codec_helpers import _model, no_overlap  # noqa: F401, F811 (pytest fixtures)


# -- loading ----------------------------------------------------------------------------------------
def test_load_model_checks_device_and_config_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.pretrained as pretrained

    def no_read(*args: object) -> None:
        raise AssertionError("weights read before the arguments were checked")

    monkeypatch.setattr(pretrained, "read_weights", no_read)
    with pytest.raises(ValueError, match=r"load_model: unknown device 'bogus'"):
        load_model(device="bogus")
    with pytest.raises(TypeError, match=r"load_model: device must be a str .* got float"):
        load_model(device=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"config must be an EncodecConfig .* got dict; build one with "
                                        r"EncodecConfig.from_dict"):
        load_model(config={"name": "x"})  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"load_model: device 'cuda' is not available here"):
            load_model(device="cuda")


def test_load_lm_model_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"codec: model must be an EncodecModel, got str 'opencodec_24khz'"):
        load_lm_model(codec="opencodec_24khz")  # type: ignore[arg-type]
    codec = load_model()
    with pytest.raises(ValueError, match=r"num_codebooks must be >= 1, got -1"):
        load_lm_model(codec=codec, num_codebooks=-1)
    with pytest.raises(TypeError, match=r"num_codebooks must be an int"):
        load_lm_model(codec=codec, num_codebooks=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"load_lm_model: unknown device 'gpu0'"):
        load_lm_model(codec=codec, device="gpu0")


# -- building a model -------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(channels=0), r"EncodecConfig.channels must be an integer >= 1, got 0"),
    (dict(ratios=[]), r"EncodecConfig.ratios must be a non-empty list"),
    (dict(ratios=[4, 0]), r"EncodecConfig.ratios must be a non-empty list of integers >= 1, got \[4, 0\]"),
    (dict(segment=0.0, causal=False), r"EncodecConfig.segment must be None or at least one sample"),
    (dict(segment=0.1, overlap=1.0, causal=False), r"EncodecConfig.overlap must be in \[0, 1\)"),
    (dict(pad_mode="mirror"), r"EncodecConfig.pad_mode must be one of reflect, .* got 'mirror'"),
])
def test_a_config_no_model_can_have_is_refused_when_building(change: dict, message: str) -> None:
    config = EncodecConfig(n_filters=2, dimension=4, n_q=2, bins=16, lstm=0, **change)
    with pytest.raises(ValueError, match=message):
        EncodecModel(config)


def test_a_dict_is_not_a_config() -> None:
    with pytest.raises(TypeError, match=r"EncodecModel expects an EncodecConfig, got dict; build one with"):
        EncodecModel({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"from_dict expects a dict, got list"):
        EncodecConfig.from_dict(["name"])  # type: ignore[arg-type]


def test_num_codebooks_of_a_bandwidth_that_is_not_a_number() -> None:
    model = _model()
    assert model.num_codebooks(0.9) == 2
    with pytest.raises(UnsupportedBandwidthError, match=r"bandwidth must be a number of kbps .* got '6' \(str\)"):
        model.num_codebooks("6")  # type: ignore[arg-type]


def test_a_model_on_the_meta_device_computes_shapes() -> None:
    model = _model().to("meta")
    with torch.inference_mode():
        (frame,) = model.encode(torch.empty(2, 1, 1000, device="meta"))
        assert frame.codes.shape == (2, model.num_codebooks(), 4) and frame.codes.is_meta
        out = model.decode([frame])
    assert out.shape == (2, 1, 1280) and out.is_meta


# -- device and bandwidth arguments ---------------------------------------------------------------
def test_load_model_takes_an_int_device_as_torch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.pretrained as pretrained

    def no_read(*args: object) -> None:
        raise AssertionError("weights read before the arguments were checked")

    assert check_device("cpu") == torch.device("cpu") == check_device(torch.device("cpu"))
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    for index in (0, np.int64(0)):
        if torch.cuda.is_available():
            assert check_device(index) == torch.device("cuda", 0)
        elif not accelerator:
            with pytest.raises(ValueError, match=r"load_model: device 0 \(an accelerator index\) is not "
                                                 r"available here"):
                check_device(index)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        for device in (count, f"cuda:{count}"):
            with pytest.raises(ValueError, match=rf"this machine has {count} CUDA device\(s\)"):
                check_device(device)
    elif not accelerator:
        monkeypatch.setattr(pretrained, "read_weights", no_read)
        with pytest.raises(ValueError, match=r"load_model: device 0 \(an accelerator index\) is not available"):
            load_model(device=0)
    with pytest.raises(ValueError, match=r"load_model: device index must be >= 0 \(0 for cuda:0\), got -1"):
        check_device(-1)
    for bad in (True, torch.tensor(0), 0.0, None):  # what torch.device refuses too
        with pytest.raises(TypeError, match=r"load_model: device must be a str .*, an int .* or a torch.device"):
            check_device(bad)


def test_num_codebooks_takes_what_set_target_bandwidth_takes(no_overlap: EncodecModel) -> None:
    """Numbers, numpy's included; a tensor is refused by both (with how to pass it), as are NaN
    and inf (num_codebooks failed inside math.floor)."""
    expected = no_overlap.num_codebooks(1.8)
    for bandwidth in (np.float32(1.8), np.float64(1.8)):
        assert no_overlap.num_codebooks(bandwidth) == expected
    assert no_overlap.num_codebooks(np.int64(2)) == no_overlap.num_codebooks(2.0)
    with pytest.raises(UnsupportedBandwidthError, match=r"got tensor\(1.8000\) \(Tensor\); pass float\(t\)"):
        no_overlap.num_codebooks(torch.tensor(1.8))
    with pytest.raises(UnsupportedBandwidthError, match="bandwidth must be a number"):
        no_overlap.set_target_bandwidth(torch.tensor(1.8))  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), np.float32("-inf")):
        with pytest.raises(UnsupportedBandwidthError, match=r"bandwidth must be a finite number of kbps, got"):
            no_overlap.num_codebooks(bad)
