"""The Python API end to end: round-trip lengths, ``convert_audio``, ``save_model`` dtypes,
``decode``/``encode_batch`` argument errors, ``write_audio`` shapes, and the messages of ``info``
and of entropy-model options (help, lower bounds, extra bytes, deterministic-only arguments)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from opencodec import cli
from opencodec.audio import convert_audio, resampled_length, write_audio
from opencodec.batching import encode_batch
from opencodec.bitstream import parse_header
from opencodec.cli.main import build_parser
from opencodec.compress import compress, decompress
from opencodec.ecdc_info import describe_file
from opencodec.errors import BitstreamError, InvalidAudioError, InvalidCodesError, ModelLoadError
from opencodec.frames import EncodedFrame
from opencodec.model import EncodecModel
from opencodec.pretrained import load_lm_model, load_model, save_model

from codec_helpers import _tiny, WAV24, first_line_into_a_closed_pipe


@pytest.fixture(scope="module")
def bundled() -> EncodecModel:
    return load_model()


@pytest.fixture(scope="module")
def bundled_lm(bundled: EncodecModel):
    return load_lm_model(codec=bundled)


# -- 1 and 11: lengths and dtypes -----------------------------------------------------------------
@pytest.mark.parametrize("rate,length,channels", [(48000, 4801, 1), (44100, 4411, 1), (16000, 1601, 1),
                                                   (48000, 4803, 2), (44100, 4409, 2), (16000, 1603, 2)])
def test_round_trip_keeps_the_input_length(tmp_path: Path, rate: int, length: int, channels: int) -> None:
    x = (np.random.default_rng(1).standard_normal((length, channels)) * 0.1).astype("float32")
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x, rate)
    assert cli.main(["compress", str(src), str(dst), "-q"]) == 0
    info = sf.info(dst)
    assert (info.frames, info.samplerate, info.channels) == (length, rate, channels)


def test_resampled_length_is_soxrs_count_and_convert_audio_says_so() -> None:
    for length, src, dst in [(48001, 48000, 24000), (1003, 16000, 24000), (1001, 48000, 24000),
                             (7, 44100, 24000), (44101, 44100, 24000), (5, 2, 3), (11, 4, 3), (1, 48000, 24000)]:
        n = len(soxr.resample(np.zeros(length, np.float32), src, dst, quality="HQ"))
        assert resampled_length(length, src, dst) == n, (length, src, dst)
        assert convert_audio(torch.zeros(1, length), src, dst, 1).shape[-1] == n
    assert resampled_length(1001, 48000, 24000) == 501  # round() would give 500
    # the empty-input path rounds as soxr does
    assert convert_audio(torch.zeros(0, 1, 1001), 48000, 24000, 1).shape == (0, 1, 501)
    assert convert_audio(torch.zeros(0, 1, 1003), 16000, 24000, 1).shape == (0, 1, 1505)


def test_convert_audio_gives_float32_and_refuses_integers() -> None:
    x = torch.randn(2, 1000, dtype=torch.float64) * 0.1
    out = convert_audio(x, 48000, 24000, 1)
    assert out.dtype == torch.float32 and out.shape == (1, 500)
    assert convert_audio(x, 24000, 24000, 2).dtype == torch.float32  # no resampling: still float32
    assert convert_audio(x.half(), 24000, 24000, 1).dtype == torch.float32
    with pytest.raises(TypeError, match=r"float audio.*torch.int16.*32768"):
        convert_audio((x * 32767).short(), 48000, 24000, 1)


# -- 3: save_model ----------------------------------------------------------------------------------
def test_save_model_takes_only_float_dtypes_and_models(tmp_path: Path) -> None:
    model = _tiny()
    for dtype in (torch.int8, torch.bool, torch.complex64, torch.int64):
        with pytest.raises(ValueError, match="floating-point dtype"):
            save_model(model, tmp_path / "x.safetensors", dtype=dtype)
    assert not (tmp_path / "x.safetensors").exists()
    save_model(model, tmp_path / "h.safetensors", dtype=torch.bfloat16)
    assert load_model(tmp_path / "h.safetensors").encoder.model[0].conv.conv.weight.dtype == torch.float32
    with pytest.raises(TypeError, match=r"EncodecModel, got str.*load_model\(name\)"):
        save_model("opencodec_24khz", tmp_path / "y.safetensors")  # type: ignore[arg-type]


# -- 4 and 5: the --lm-format help -----------------------------------------------------------------
def test_lm_format_help_says_what_each_format_guarantees() -> None:
    compress_parser = build_parser()._subparsers._group_actions[0].choices["compress"]
    text = next(a.help for a in compress_parser._actions if "--lm-format" in a.option_strings)
    assert "codes decode identically on any machine and thread count" in text
    assert "last bit with the decoder's thread count" in text
    assert "no integrity check" in text and "decode silently" in text


# -- 6: the "larger files" warning is for compression ---------------------------------------------
def test_no_size_warning_when_loading_an_entropy_model_to_decode(bundled: EncodecModel) -> None:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        load_lm_model("opencodec_lm_24khz_v4b", codec=bundled, any_codec=True)
    assert [str(w.message) for w in said] == []
    with pytest.warns(UserWarning, match="come out larger"):
        load_lm_model("opencodec_lm_24khz_v4b", codec=bundled)


# -- 7: info | head --------------------------------------------------------------------------------
def test_info_into_a_closed_pipe_exits_quietly(tmp_path: Path, bundled: EncodecModel) -> None:
    path = tmp_path / "a.ecdc"
    path.write_bytes(compress(bundled, WAV24, 1.5))
    first, err, status = first_line_into_a_closed_pipe(["-m", "opencodec", "info", *[str(path)] * 400])
    assert status == 141
    assert first.startswith(b"file:") and err == ""


# -- 8: info on entropy-coded files ----------------------------------------------------------------
def test_info_checks_the_lower_bound_of_an_entropy_coded_body(tmp_path: Path, bundled: EncodecModel,
                                                              bundled_lm, capsys) -> None:
    data = compress(bundled, WAV24, 6.0, lm=bundled_lm, deterministic=True)
    whole, cut = tmp_path / "whole.ecdc", tmp_path / "cut.ecdc"
    whole.write_bytes(data)
    _, start = parse_header(data)
    cut.write_bytes(data[:start])  # the header alone
    info = describe_file(cut)
    assert info["body_bytes"] == 0 and info["lm_body_min_bytes"] >= 2
    assert cli.main(["info", str(cut)]) == 1
    out = capsys.readouterr()
    assert "complete:      NO, truncated: the entropy-coded body has 0 bytes" in out.out
    assert "truncated" in out.err
    assert cli.main(["info", str(whole)]) == 0
    assert "complete:      not checked (entropy coded" in capsys.readouterr().out


# -- 9: decode checks scales and batch sizes ------------------------------------------------------
def test_decode_checks_scales_and_batch_sizes() -> None:
    model = _tiny()
    codes = torch.zeros(2, 2, 5, dtype=torch.long)
    ok = torch.full((2, 1), 0.5)
    assert model.decode([EncodedFrame(codes, ok)]).shape[0] == 2
    for bad, match in [(ok * float("nan"), "finite and > 0"), (-ok, "finite and > 0"),
                       (torch.zeros(2, 1), "finite and > 0"), (torch.ones(3, 1), r"\[B, 1\] = \(2, 1\)"),
                       (torch.ones(2), r"got \(2,\)"), (torch.ones(2, 1, dtype=torch.long), "float")]:
        with pytest.raises(InvalidCodesError, match=match):
            model.decode([EncodedFrame(codes, bad)])
    with pytest.raises(InvalidCodesError, match="segment 1: codes have batch size 1, but segment 0's have 2"):
        model.decode([EncodedFrame(codes, None), EncodedFrame(codes[:1], None)])


# -- 10: write_audio and [T, C] --------------------------------------------------------------------
def test_write_audio_refuses_a_transposed_tensor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(4800, 2\).*transposed"):
        write_audio(tmp_path / "o.wav", torch.zeros(4800, 2), 24000)
    with pytest.raises(ValueError, match=r"at most 64 channels, got shape \(300, 10\)"):
        write_audio(tmp_path / "w.wav", torch.zeros(300, 10), 24000)
    assert not list(tmp_path.iterdir())
    write_audio(tmp_path / "ok.wav", torch.zeros(64, 10), 24000)
    assert sf.info(tmp_path / "ok.wav").channels == 64


# -- 12: encode_batch arguments --------------------------------------------------------------------
def test_encode_batch_argument_errors() -> None:
    model = _tiny()
    wav = torch.randn(2, 1, 960) * 0.1
    with pytest.raises(InvalidAudioError, match="empty batch"):
        encode_batch(model, wav[:0], [])
    with pytest.raises(InvalidAudioError, match=r"1-D.*\(1, 2\)"):
        encode_batch(model, wav, torch.tensor([960, 640])[None])
    with pytest.raises(InvalidAudioError, match="whole numbers.*float"):
        encode_batch(model, wav, [960.0, 640])
    with pytest.raises(InvalidAudioError, match="integers.*float32"):
        encode_batch(model, wav, torch.tensor([960.0, 640.0]))
    out = encode_batch(model, wav, torch.tensor([960, 640]))
    assert out.lengths.tolist() == [960, 640]
    assert encode_batch(model, wav, [np.int64(960), 640]).lengths.tolist() == [960, 640]


# -- 13: extra bytes may mean another entropy model ------------------------------------------------
def test_extra_bytes_in_an_official_format_file_mention_another_entropy_model(bundled, bundled_lm) -> None:
    data = compress(bundled, WAV24, 6.0, lm=bundled_lm) + b"\0" * 24
    with pytest.raises(BitstreamError, match="24 extra byte.*another entropy model than the one that wrote it"):
        decompress(data, bundled, lm=bundled_lm)


# -- 14: deterministic-only arguments --------------------------------------------------------------
def test_deterministic_only_arguments_need_deterministic(bundled, bundled_lm) -> None:
    for kwargs in (dict(check_bits=33), dict(check_bits=8), dict(lm_name="foo"), dict(check_interval=5)):
        with pytest.raises(InvalidAudioError, match=f"{next(iter(kwargs))} only apply to the deterministic"):
            compress(bundled, WAV24, 6.0, lm=bundled_lm, **kwargs)
    with pytest.raises(TypeError, match="lm_name must be a str"):
        compress(bundled, WAV24, 6.0, lm=bundled_lm, deterministic=True, lm_name=123)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="lm_name is empty"):
        compress(bundled, WAV24, 6.0, lm=bundled_lm, deterministic=True, lm_name=" ")
    data = compress(bundled, WAV24, 6.0, lm=bundled_lm, deterministic=True, lm_name="foo")
    assert parse_header(data)[0].deterministic.lm_name == "foo"


# -- 15: the entropy models the error lists --------------------------------------------------------
def test_no_entropy_model_error_lists_only_available_ones() -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_lm_model(codec=_tiny("encodec_24khz_custom"))
    text = str(caught.value)
    listed = text.split("entropy models exist for ")[1].split(")")[0].split(", ")
    assert listed == ["encodec_24khz", "encodec_48khz", "opencodec_24khz", "opencodec_24khz_v4",
                      "opencodec_24khz_v5"]
    assert "official ones" not in text
