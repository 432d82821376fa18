"""`compress`/`decompress` against the official package: same bytes, same audio, both ways."""

from __future__ import annotations

import io
import sys
import types
import typing as tp

import pytest
import torch

import official_ref
from opencodec import EncodecModel
from opencodec.bitstream import EcdcHeader, parse_header, write_header
from opencodec.compress import (
    InvalidAudioError, compress, compress_to_file, decompress, decompress_from_file,
)
from opencodec.errors import BitstreamError, ModelLoadError, OpenCodecError

official = official_ref.official_compress_module


def _audio(channels: int, length: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """A deterministic test signal [C, T]: tones with a little noise, peak well under 1."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / sample_rate
    rows = []
    for c in range(channels):
        tone = 0.3 * torch.sin(2 * torch.pi * (220 + 110 * c) * t) + 0.1 * torch.sin(2 * torch.pi * 1750 * t)
        rows.append(tone + 0.05 * torch.randn(length, generator=gen))
    return torch.stack(rows)


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _check_against_official(official_models: dict, our_models: dict, name: str, length: int,
                            bandwidth: float) -> None:
    ref, ours = official_models[name], our_models[name]
    wav = _audio(ours.channels, length, ours.sample_rate, seed=length)
    ref.set_target_bandwidth(bandwidth)
    official_bytes = official.compress(ref, wav, use_lm=False)
    our_bytes = compress(ours, wav, bandwidth=bandwidth)
    assert our_bytes == official_bytes
    header, _ = parse_header(our_bytes)
    assert header == EcdcHeader(name, length, ours.num_codebooks(bandwidth), False)

    our_wav, sample_rate = decompress(official_bytes, ours)
    assert sample_rate == ours.sample_rate
    assert our_wav.shape == (ours.channels, length)
    with official_ref.patched_official_models({name: ref}):
        ref_wav, ref_rate = official.decompress(our_bytes)
    assert ref_rate == sample_rate and ref_wav.shape == our_wav.shape
    assert _relative_l2(our_wav, ref_wav) < 1e-4
    assert torch.equal(our_wav, ref_wav)  # the same arithmetic: expected to be exact


@pytest.mark.parametrize("bandwidth", [1.5, 3.0, 6.0, 12.0, 24.0])
def test_24khz_every_bandwidth(official_models: dict, our_models: dict, bandwidth: float) -> None:
    _check_against_official(official_models, our_models, "encodec_24khz", 24_000 + 17, bandwidth)


@pytest.mark.parametrize("bandwidth", [3.0, 6.0, 12.0, 24.0])
def test_48khz_every_bandwidth(official_models: dict, our_models: dict, bandwidth: float) -> None:
    # 48017 samples: two segments (47520 + 497 samples), each with its own scale
    _check_against_official(official_models, our_models, "encodec_48khz", 48_000 + 17, bandwidth)


@pytest.mark.parametrize("length, bandwidth", [
    (1, 6.0), (319, 6.0), (320, 6.0), (321, 6.0), (321, 1.5), (641, 24.0), (24_000 + 17, 3.0),
])
def test_24khz_lengths(official_models: dict, our_models: dict, length: int, bandwidth: float) -> None:
    _check_against_official(official_models, our_models, "encodec_24khz", length, bandwidth)


@pytest.mark.parametrize("length, bandwidth", [
    (1, 6.0), (319, 6.0), (321, 24.0), (47_521, 6.0), (96_000 + 123, 12.0),
])
def test_48khz_lengths(official_models: dict, our_models: dict, length: int, bandwidth: float) -> None:
    # 47521: a second segment of one sample; 96123: three segments
    _check_against_official(official_models, our_models, "encodec_48khz", length, bandwidth)


@pytest.mark.slow
@pytest.mark.parametrize("name, bandwidth", [("encodec_24khz", 6.0), ("encodec_48khz", 24.0)])
def test_ten_seconds(official_models: dict, our_models: dict, name: str, bandwidth: float) -> None:
    length = 10 * our_models[name].sample_rate + 7
    _check_against_official(official_models, our_models, name, length, bandwidth)


def test_default_bandwidth_uses_all_codebooks(official_models: dict, our_models: dict) -> None:
    ref, ours = official_models["encodec_24khz"], our_models["encodec_24khz"]
    wav = _audio(1, 1000, 24_000)
    ref.bandwidth = None
    assert ours.bandwidth is None
    data = compress(ours, wav)
    assert data == official.compress(ref, wav, use_lm=False)
    assert parse_header(data)[0].num_codebooks == 32


def test_bandwidth_is_per_call(our_models: dict) -> None:
    model = our_models["encodec_24khz"]
    wav = _audio(1, 700, 24_000)
    model.set_target_bandwidth(3.0)
    try:
        assert parse_header(compress(model, wav, bandwidth=12.0))[0].num_codebooks == 16
        assert model.bandwidth == 3.0
        assert parse_header(compress(model, wav))[0].num_codebooks == 4
    finally:
        model.bandwidth = None


@pytest.mark.parametrize("length", [6720, 13440])
def test_lengths_the_official_reader_miscounts(official_models: dict, our_models: dict, length: int) -> None:
    """The official reader counts frames as ceil(L / sr * frame_rate) in floating point,
    which gives one frame too many for some multiples of 320 (6720 / 24000 * 75 =
    21.000000000000004), so it fails on files its own writer made. We count frames as
    the writer does (ceil(L / 320)) and read them."""
    ref, ours = official_models["encodec_24khz"], our_models["encodec_24khz"]
    wav = _audio(1, length, 24_000)
    ref.set_target_bandwidth(6.0)
    official_bytes = official.compress(ref, wav, use_lm=False)
    assert compress(ours, wav, bandwidth=6.0) == official_bytes
    with official_ref.patched_official_models({"encodec_24khz": ref}), pytest.raises(EOFError):
        official.decompress(official_bytes)
    our_wav, _ = decompress(official_bytes, ours)
    with torch.no_grad():
        ref.set_target_bandwidth(6.0)
        expected = ref.decode(ref.encode(wav[None]))[0, :, :length]
    assert torch.equal(our_wav, expected)


# -- files and model resolution -----------------------------------------------------------------
def test_file_objects(our_models: dict, tmp_path) -> None:
    model = our_models["encodec_48khz"]
    wav = _audio(2, 5000, 48_000)
    path = tmp_path / "a.ecdc"
    with open(path, "wb") as fo:
        written = compress_to_file(model, wav, fo, bandwidth=6.0)
    data = path.read_bytes()
    assert written == len(data) and data == compress(model, wav, bandwidth=6.0)
    with open(path, "rb") as fo:
        out, rate = decompress_from_file(fo, model)
    assert rate == 48_000 and out.shape == (2, 5000)
    assert torch.equal(out, decompress(data, model)[0])
    assert not out.is_inference()
    assert _relative_l2(out, decompress(bytearray(data), model)[0]) == 0.0


def test_model_from_header(our_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    model = our_models["encodec_24khz"]
    data = compress(model, _audio(1, 999, 24_000), bandwidth=1.5)
    asked: list[str] = []

    def load_model(name: str, device: str = "cpu") -> EncodecModel:
        asked.append(name)
        return model

    monkeypatch.setitem(sys.modules, "opencodec.pretrained", types.SimpleNamespace(load_model=load_model))
    out, rate = decompress(data)
    assert asked == ["encodec_24khz"]
    assert torch.equal(out, decompress(data, model)[0]) and rate == 24_000


def test_entropy_coded_file_loads_the_entropy_model_of_its_codec(monkeypatch: pytest.MonkeyPatch,
                                                                 our_models: dict) -> None:
    """Without ``lm``, an entropy-coded file is read with the entropy model of the codec in its
    header (here the loader fails: its error comes out unchanged)."""
    asked: list[tp.Any] = []

    def load_model(name: str, device: str = "cpu") -> EncodecModel:
        asked.append(name)
        return our_models[name]

    def load_lm_model(name_or_path: tp.Any = None, codec: tp.Any = None, **kwargs: tp.Any) -> tp.NoReturn:
        asked.append((name_or_path, codec.name, kwargs.get("num_codebooks")))
        raise ModelLoadError("no entropy model here")

    monkeypatch.setitem(sys.modules, "opencodec.pretrained",
                        types.SimpleNamespace(load_model=load_model, load_lm_model=load_lm_model,
                                              known_lm_models=lambda: ["encodec_lm_24khz"],
                                              check_lm_for_decoding=lambda *args: None))
    fo = io.BytesIO()
    write_header(fo, EcdcHeader("encodec_24khz", 24_000, 8, True))
    with pytest.raises(ModelLoadError, match="no entropy model here"):
        decompress(fo.getvalue() + bytes(100))
    assert asked == ["encodec_24khz", (None, "encodec_24khz", 8)]


def test_model_mismatch(our_models: dict) -> None:
    data = compress(our_models["encodec_24khz"], _audio(1, 500, 24_000), bandwidth=6.0)
    with pytest.raises(BitstreamError, match="'encodec_24khz'.*'encodec_48khz'"):
        decompress(data, our_models["encodec_48khz"])


def test_damaged_official_file(official_models: dict, our_models: dict) -> None:
    ref = official_models["encodec_48khz"]
    ref.set_target_bandwidth(3.0)
    data = official.compress(ref, _audio(2, 50_000, 48_000), use_lm=False)
    model = our_models["encodec_48khz"]
    with pytest.raises(BitstreamError, match=r"\(10 missing\)"):
        decompress(data[:-10], model)
    with pytest.raises(BitstreamError, match="1 extra byte"):
        decompress(data + b"\0", model)
    with pytest.raises(BitstreamError, match="magic"):
        decompress(b"RIFF" + data[4:], model)


# -- argument checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("wav, pattern", [
    (torch.zeros(100), r"shape \[C, T\]"),
    (torch.zeros(1, 1, 100), r"shape \[C, T\]"),
    (torch.zeros(2, 100), r"expects 1 channel\(s\), got 2"),
    (torch.zeros(1, 0), "empty"),
    (torch.zeros(1, 100, dtype=torch.int16), "floating point"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), "1 non-finite"),
    (torch.tensor([[float("inf"), -float("inf")]]), "2 non-finite"),
    ([[0.0, 0.1]], "torch.Tensor"),
])
def test_bad_audio(our_models: dict, wav: object, pattern: str) -> None:
    with pytest.raises(InvalidAudioError, match=pattern) as info:
        compress(our_models["encodec_24khz"], wav)  # type: ignore[arg-type]
    assert isinstance(info.value, OpenCodecError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("bandwidth", [5.0, 48.0, 0.0, -6.0, True, float("nan"), "6"])
def test_bad_bandwidth(our_models: dict, bandwidth: object) -> None:
    model = our_models["encodec_48khz"]
    with pytest.raises(InvalidAudioError, match=r"(does not support .* kbps|bandwidth must be a number, "
                                                r"got .*); choose one of: 3, 6, 12, 24 kbps"):
        compress(model, _audio(2, 100, 48_000), bandwidth=bandwidth)  # type: ignore[arg-type]
    assert model.bandwidth is None


def test_double_precision_audio_accepted(our_models: dict) -> None:
    model = our_models["encodec_24khz"]
    wav = _audio(1, 800, 24_000)
    assert compress(model, wav.double(), bandwidth=6.0) == compress(model, wav, bandwidth=6.0)
