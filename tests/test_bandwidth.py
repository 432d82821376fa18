"""The one bandwidth check (``opencodec.bandwidth.check_bandwidth``) and every entry point
that takes a bandwidth from a user going through it, with the same message."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.bandwidth import check_bandwidth
from opencodec.compress import InvalidAudioError, compress
from opencodec.errors import OpenCodecError, UnsupportedBandwidthError
from opencodec.stream import encode_stream

SUPPORTED = [1.5, 3.0, 6.0, 12.0, 24.0]
MESSAGE = "model m does not support {} kbps; choose one of: 1.5, 3, 6, 12, 24 kbps"


@pytest.mark.parametrize("value,expected", [(6, 6.0), (6.0, 6.0), (1.5, 1.5), (24.0 + 1e-12, 24.0),
                                            (3.0 - 5e-10, 3.0)])
def test_supported_values_return_the_models_value(value: object, expected: float) -> None:
    got = check_bandwidth(value, SUPPORTED, "m")
    assert got == expected and type(got) is float


@pytest.mark.parametrize("value,shown", [(5.0, "5"), (6.01, "6.01"), (6.0 + 1e-6, "6.000001"), (0, "0"),
                                         (-6.0, "-6"), (float("nan"), "nan"),
                                         (math.inf, "inf")])
def test_unsupported_values_have_one_message(value: object, shown: str) -> None:
    with pytest.raises(UnsupportedBandwidthError) as info:
        check_bandwidth(value, SUPPORTED, "m")
    assert str(info.value) == MESSAGE.format(shown)
    # one error type that every earlier caller still catches, whichever of these it catches
    assert all(isinstance(info.value, kind) for kind in (InvalidAudioError, ValueError, OpenCodecError))


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    torch.manual_seed(0)
    return EncodecModel(EncodecConfig(name="tiny_bw", n_filters=4, dimension=8, n_q=4, bins=16,
                                      lstm=0, target_bandwidths=[0.6, 1.2]))


def test_codebooks_for_bandwidths_that_are_not_multiples(tiny: EncodecModel) -> None:
    # 16 bins = 4 bits per code at 24000 / 320 = 75 frames/s: 0.3 kbps per codebook, and
    # spec section 5: n = max(1, floor(bw / 0.3)), at most the model's 4 codebooks
    assert tiny.frame_rate == 75 and tiny.bandwidth_for_codebooks(1) == pytest.approx(0.3)
    for bw, n in [(0.01, 1), (0.1, 1), (0.29, 1), (0.5, 1), (0.59, 1), (0.61, 2), (0.75, 2),
                  (0.95, 3), (1.1, 3), (1.19, 3), (1.25, 4), (5.0, 4), (0.0, 4)]:
        assert tiny.num_codebooks(bw) == n, bw


def test_every_entry_point_uses_the_check(tiny: EncodecModel) -> None:
    expected = "model tiny_bw does not support 0.9 kbps; choose one of: 0.6, 1.2 kbps"
    with pytest.raises(UnsupportedBandwidthError, match=expected):
        tiny.set_target_bandwidth(0.9)
    with pytest.raises(UnsupportedBandwidthError, match=expected):
        compress(tiny, torch.zeros(1, 1000), bandwidth=0.9)
    with pytest.raises(UnsupportedBandwidthError, match=expected):
        encode_stream(tiny, io.BytesIO(b""), io.BytesIO(), bandwidth=0.9)
    assert tiny.bandwidth is None  # nothing was set
    tiny.set_target_bandwidth(1.2 + 1e-12)
    assert tiny.bandwidth == 1.2
    tiny.bandwidth = None


def test_trainer_uses_the_check(tiny: EncodecModel, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.pretrained
    from opencodec.train import lm_solver

    monkeypatch.setattr(opencodec.pretrained, "load_model", lambda *a, **k: tiny)
    settings = lm_solver.parse_settings({"codec": "tiny_bw", "data": {"train": ["none.jsonl"]},
                                         "bandwidths": [0.6, 0.9]})
    with pytest.raises(lm_solver.ConfigError, match="config field bandwidths: model tiny_bw does not "
                                                    "support 0.9 kbps; choose one of: 0.6, 1.2 kbps"):
        lm_solver.prepare_data(settings, tmp_path, torch.device("cpu"), progress=False)
