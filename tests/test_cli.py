"""The `opencodec` command line, run in-process through `main([...])` (plus one subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import official_ref
from opencodec import __version__, cli, codec_files
from opencodec.audio import convert_audio, read_audio
from opencodec.bitstream import EcdcHeader, parse_header, write_header
from opencodec.compress import compress, decompress
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model

RATE24 = 24_000


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    """Every CLI test runs offline with an empty model cache (conftest's ``offline``)."""
    return offline


_LOADED: dict[str, EncodecModel] = {}


@pytest.fixture(autouse=True)
def reuse_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load each weights file once per session (the real loader runs the first time)."""
    def load(name_or_path: str | None = None, **kwargs: tp.Any) -> EncodecModel:
        key = str(name_or_path)
        if key not in _LOADED:
            _LOADED[key] = load_model(name_or_path, **kwargs)
        return _LOADED[key]

    monkeypatch.setattr(codec_files, "load_model", load)


@pytest.fixture(scope="module")
def ckpt24(official_checkpoints: dict) -> str:
    return str(official_checkpoints["encodec_24khz"])


@pytest.fixture(scope="module")
def ckpt48(official_checkpoints: dict) -> str:
    return str(official_checkpoints["encodec_48khz"])


def make_signal(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """[T, C] float32: two tones plus a little noise, peak well under 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(rate * seconds))) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1330 * t)
    x = tone[:, None] + 0.02 * rng.standard_normal((len(t), channels))
    return x.astype(np.float32)


def write_wav(path: Path, rate: int = RATE24, seconds: float = 1.0, channels: int = 1,
              seed: int = 0, subtype: str = "FLOAT") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = make_signal(rate, seconds, channels, seed)
    sf.write(path, x, rate, subtype=subtype)
    return x


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def official_bytes(model: object, x: np.ndarray, bandwidth: float) -> bytes:
    """The official compressor's output for audio [T, C]."""
    previous = model.bandwidth
    model.set_target_bandwidth(bandwidth)
    try:
        return official_ref.official_compress_module.compress(model, torch.from_numpy(x.T.copy()), use_lm=False)
    finally:
        model.bandwidth = previous


# -- compress / decompress ------------------------------------------------------------------
@pytest.mark.parametrize("extra,bandwidth", [([], 6.0), (["-b", "1.5"], 1.5), (["--bandwidth", "24"], 24.0)])
def test_compress_matches_official_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str,
                                         official_models: dict, extra: list[str], bandwidth: float) -> None:
    x = write_wav(tmp_path / "in.wav")
    code, out, err = run(capsys, "compress", tmp_path / "in.wav", "--model", ckpt24, "-q", *extra)
    assert (code, out, err) == (0, "", "")
    data = (tmp_path / "in.ecdc").read_bytes()  # default OUT: IN with .ecdc
    assert data == official_bytes(official_models["encodec_24khz"], x, bandwidth)


def test_compress_48khz_segments_with_progress_matches_official(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt48: str, official_models: dict) -> None:
    x = write_wav(tmp_path / "st.wav", rate=48_000, seconds=1.2, channels=2)
    code, _, err = run(capsys, "compress", tmp_path / "st.wav", tmp_path / "st.ecdc", "--model", ckpt48, "-b", "12")
    assert code == 0
    assert "2/2" in err and "segment" in err  # progress bar over the 2 segments, not quiet
    assert "st.ecdc" in err
    data = (tmp_path / "st.ecdc").read_bytes()
    assert data == official_bytes(official_models["encodec_48khz"], x, 12.0)


def test_compress_then_decompress(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    write_wav(tmp_path / "src.wav", seconds=0.7)
    assert run(capsys, "compress", tmp_path / "src.wav", tmp_path / "a.ecdc", "--model", ckpt24, "-q")[0] == 0
    code, out, err = run(capsys, "decompress", tmp_path / "a.ecdc", "--model", ckpt24, "-q", "--float")
    assert (code, out, err) == (0, "", "")
    info = sf.info(tmp_path / "a.wav")  # default OUT: IN with .wav
    assert info.samplerate == RATE24 and info.channels == 1 and info.frames == int(0.7 * RATE24)


def test_options_between_the_positionals(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    """``compress IN -b 6 OUT`` (the README's order) and ``decompress IN --float OUT``: options
    may stand between IN and OUT, with the same result as options last."""
    write_wav(tmp_path / "src.wav", seconds=0.5)
    assert run(capsys, "compress", tmp_path / "src.wav", "-b", "3", tmp_path / "mid.ecdc", "--model", ckpt24,
               "-q")[0] == 0
    assert run(capsys, "compress", tmp_path / "src.wav", tmp_path / "end.ecdc", "--model", ckpt24, "-q",
               "-b", "3")[0] == 0
    assert (tmp_path / "mid.ecdc").read_bytes() == (tmp_path / "end.ecdc").read_bytes()
    assert run(capsys, "decompress", tmp_path / "mid.ecdc", "--float", tmp_path / "mid.wav", "--model", ckpt24,
               "-q")[0] == 0
    assert sf.info(tmp_path / "mid.wav").subtype == "FLOAT"
    code, _, err = run(capsys, "compress", tmp_path / "src.wav", "-b", "3", tmp_path / "x.ecdc", tmp_path / "y")
    assert code == 2 and "unrecognized arguments" in err  # a third positional is still refused


def test_decompress_values_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    write_wav(tmp_path / "src" / "a.wav", seconds=0.5)
    run(capsys, "compress", tmp_path / "src" / "a.wav", tmp_path / "a.ecdc", "--model", ckpt24, "-q")
    data = (tmp_path / "a.ecdc").read_bytes()
    expected, rate = decompress(data, codec_files.load_model(ckpt24))
    assert run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "f.wav", "--model", ckpt24, "--float")[0] == 0
    got, got_rate = read_audio(tmp_path / "f.wav")
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT" and got_rate == rate
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "p.flac", "--model", ckpt24)[0] == 0
    pcm, _ = read_audio(tmp_path / "p.flac")
    assert sf.info(tmp_path / "p.flac").subtype == "PCM_16" and pcm.shape == expected.shape
    assert float((pcm - expected.clamp(-1, 1)).abs().max()) <= 0.5 / 32768 + 1e-6


def test_decompress_clipping_warning_and_rescale(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 ckpt24: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write_wav(tmp_path / "src.wav", seconds=0.2)
    run(capsys, "compress", tmp_path / "src.wav", tmp_path / "a.ecdc", "--model", ckpt24, "-q")
    loud = torch.tensor([[0.5, 1.5, -0.75, 0.0]])
    monkeypatch.setattr(codec_files, "decompress", lambda data, model: (loud, RATE24))
    code, _, err = run(capsys, "decompress", tmp_path / "a.ecdc", "--model", ckpt24, "-q")
    assert code == 0 and "opencodec: warning:" in err and "peak amplitude 1.5000" in err and "--rescale" in err
    assert read_audio(tmp_path / "a.wav")[0][0].tolist() == pytest.approx([0.5, 1.0, -0.75, 0.0], abs=1e-4)
    code, _, err = run(capsys, "decompress", tmp_path / "a.ecdc", "--model", ckpt24, "-q", "-f", "--rescale")
    assert (code, err) == (0, "")
    assert read_audio(tmp_path / "a.wav")[0][0].tolist() == pytest.approx([0.33, 0.99, -0.495, 0.0], abs=1e-4)


def test_compress_resamples_and_downmixes(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str,
                                         official_models: dict) -> None:
    """A 44.1 kHz stereo file with a different tone in each channel: the file is the
    official compressor's bytes for the channel mean resampled to 24 kHz (computed here with
    NumPy and soxr directly), so a wrong rate or a one-channel mix would change it."""
    rate, n = 44_100, 22_050
    t = np.arange(n) / rate
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    sf.write(tmp_path / "cd.flac", stereo.astype(np.float32), rate, subtype="PCM_16")
    code, out, _ = run(capsys, "compress", tmp_path / "cd.flac", "--model", ckpt24, "-q")
    assert code == 0
    code, out, _ = run(capsys, "info", tmp_path / "cd.ecdc", "--json")
    assert json.loads(out)["samples"] == round(n * RATE24 / rate)
    stored = sf.read(tmp_path / "cd.flac", dtype="float32")[0]  # the 16-bit samples
    mono = soxr.resample(stored.mean(axis=1, dtype=np.float32), rate, RATE24, quality="HQ")
    expected = official_bytes(official_models["encodec_24khz"], mono.astype(np.float32)[:, None], 6.0)
    assert (tmp_path / "cd.ecdc").read_bytes() == expected


def test_compress_round_trip_to_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    """``compress IN OUT.wav`` writes the decoded audio: the library's compress then
    decompress of the resampled input, to 16-bit precision."""
    x = write_wav(tmp_path / "in.wav", rate=16_000, seconds=0.5)
    code, _, err = run(capsys, "compress", tmp_path / "in.wav", tmp_path / "rt.wav", "--model", ckpt24)
    assert code == 0 and "rt.wav" in err
    wav, rate = read_audio(tmp_path / "rt.wav")
    assert rate == 16_000 and wav.shape == (1, 8_000)  # the input's rate (tests/test_cli_rate_channels.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "rt.wav"]  # no .ecdc, no temp files
    model = codec_files.load_model(ckpt24)
    source = convert_audio(torch.from_numpy(x.T.copy()), 16_000, RATE24, 1)
    decoded, _ = decompress(compress(model, source, bandwidth=6.0), model)
    expected = convert_audio(decoded, RATE24, 16_000, 1)  # back to the input's rate
    assert float(expected.abs().max()) > 1e-3  # (random weights: the values, not their quality)
    assert float((wav - expected.clamp(-1, 1)).abs().max()) <= 0.5 / 32768 + 1e-6




def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.3)
    (tmp_path / "a.ecdc").write_bytes(b"precious")
    code, _, err = run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24)
    assert code == 1
    assert f"opencodec: error: output file {tmp_path / 'a.ecdc'} already exists" in err and "--force" in err
    assert (tmp_path / "a.ecdc").read_bytes() == b"precious"
    assert run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24, "-f", "-q")[0] == 0
    assert (tmp_path / "a.ecdc").read_bytes()[:4] == b"ECDC"
    code, _, err = run(capsys, "decompress", tmp_path / "a.ecdc", "--model", ckpt24)  # a.wav exists
    assert code == 1 and "a.wav already exists" in err


def test_never_overwrites_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    """``compress a.wav a.wav -f`` (a round trip onto its own input, under any name or a
    link) is refused even with --force: the input would be replaced by its lossy copy."""
    write_wav(tmp_path / "a.wav", seconds=0.3)
    before = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "link.wav").symlink_to(tmp_path / "a.wav")
    for out in (tmp_path / "a.wav", tmp_path / "." / "a.wav", tmp_path / "link.wav"):
        code, _, err = run(capsys, "compress", tmp_path / "a.wav", out, "--model", ckpt24, "-f", "-q")
        assert code == 1 and "is the input file itself" in err, err
    assert (tmp_path / "a.wav").read_bytes() == before


@pytest.mark.parametrize("damage,message,header_only", [
    (lambda d: b"XXXX" + d[4:], "magic", True),
    (lambda d: d[:6], "truncated", True),
    (lambda d: d[:-7], "truncated", False),
    (lambda d: d + b"\0", "extra byte", False),
])
def test_corrupt_ecdc(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str,
                      damage: tp.Callable[[bytes], bytes], message: str, header_only: bool) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.3)
    run(capsys, "compress", tmp_path / "a.wav", tmp_path / "good.ecdc", "--model", ckpt24, "-q")
    (tmp_path / "bad.ecdc").write_bytes(damage((tmp_path / "good.ecdc").read_bytes()))
    # A damaged header is reported before any model is needed; the body needs the model.
    for model_args in (["--model", ckpt24], []) if header_only else (["--model", ckpt24],):
        code, out, err = run(capsys, "decompress", tmp_path / "bad.ecdc", tmp_path / "out.wav", *model_args)
        assert code == 1 and out == ""
        assert err.startswith("opencodec: error: ") and "bad.ecdc" in err and message in err
        assert "Traceback" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "bad.ecdc", "good.ecdc"]


def test_decompress_model_mismatch_and_entropy_coded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     ckpt24: str, ckpt48: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24, "-q")
    code, _, err = run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "b.wav", "--model", ckpt48)
    assert code == 1 and "encodec_24khz" in err and "encodec_48khz" in err
    with open(tmp_path / "lm.ecdc", "wb") as fo:
        write_header(fo, EcdcHeader(model_name="encodec_24khz", audio_length=4800, num_codebooks=8, use_lm=True))
        fo.write(bytes(40))
    # The codec loads; its entropy model is not in the (empty, offline) cache.
    code, _, err = run(capsys, "decompress", tmp_path / "lm.ecdc", tmp_path / "c.wav", "--model", ckpt24)
    assert code == 1 and "entropy" in err and "lm.ecdc" in err and "encodec_lm_24khz-1608e3c0.th" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ecdc", "a.wav", "lm.ecdc"]


@pytest.mark.parametrize("value,expected", [("5", "1.5, 3, 6, 12, 24"), ("abc", "invalid bandwidth"),
                                            ("0", "positive"), ("nan", "positive")])
def test_bad_bandwidth_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str,
                                      value: str, expected: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    code, _, err = run(capsys, "compress", tmp_path / "a.wav", "-b", value, "--model", ckpt24)
    assert code == 2 and "usage: opencodec compress" in err and expected in err
    assert not (tmp_path / "a.ecdc").exists()


def test_bad_bandwidth_for_named_model_fails_before_loading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    monkeypatch.setattr(codec_files, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    code, _, err = run(capsys, "compress", tmp_path / "a.wav", "-b", "1.5", "--model", "encodec_48khz")
    assert code == 2 and "model encodec_48khz does not support 1.5 kbps; choose one of: 3, 6, 12, 24" in err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    assert run(capsys, )[0] == 2
    assert run(capsys, "transmogrify", "x")[0] == 2
    code, _, err = run(capsys, "compress", tmp_path / "a.wav", tmp_path / "a.mp3", "--model", ckpt24)
    assert code == 2 and ".ecdc, .wav, .flac" in err
    code, _, err = run(capsys, "compress", tmp_path / "a.wav", tmp_path / "b.flac", "--float", "--model", ckpt24)
    assert code == 2 and "FLAC" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_version_and_quiet_flag_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"opencodec {__version__}"
    write_wav(tmp_path / "a.wav", seconds=0.2)
    assert run(capsys, "-q", "compress", tmp_path / "a.wav", "--model", ckpt24) == (0, "", "")


def test_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "compress", tmp_path / "nothing.wav")
    assert code == 1 and err.strip() == f"opencodec: error: input {tmp_path / 'nothing.wav'} does not exist"
    code, _, err = run(capsys, "decompress", tmp_path / "nothing.ecdc", "-q")
    assert code == 1 and "nothing.ecdc does not exist" in err


def test_unreadable_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    (tmp_path / "noise.wav").write_bytes(os.urandom(300))
    code, _, err = run(capsys, "compress", tmp_path / "noise.wav", "--model", ckpt24)
    assert code == 1 and "cannot read audio file" in err and "noise.wav" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.wav"]


def test_decompress_without_model_not_cached(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             ckpt24: str, offline: Path) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24, "-q")
    code, _, err = run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "b.wav")
    assert code == 1 and "Traceback" not in err
    assert "encodec_24khz-d7cc33bc.th" in err and str(offline) in err
    assert not (tmp_path / "b.wav").exists()


# -- folders --------------------------------------------------------------------------------
def make_tree(root: Path) -> None:
    write_wav(root / "a.wav", seconds=0.25, seed=1)
    write_wav(root / "sub" / "b.flac", rate=16_000, seconds=0.25, seed=2, subtype="PCM_16")
    (root / "sub" / "deep").mkdir()
    sf.write(root / "sub" / "deep" / "c.ogg", make_signal(22_050, 0.3, 2), 22_050, format="OGG", subtype="VORBIS")
    (root / "sub" / "notes.txt").write_text("not audio")
    write_wav(root / ".hidden" / "h.wav", seconds=0.1)


def test_folder_compress_and_decompress_keep_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  ckpt24: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "in")
    loads: list[object] = []
    real_load = codec_files.load_model
    monkeypatch.setattr(codec_files, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "codes", "--model", ckpt24)
    assert code == 0 and "3/3" in err and "file" in err
    assert len(loads) == 1  # once per invocation, not per file
    files = sorted(str(p.relative_to(tmp_path / "codes")) for p in (tmp_path / "codes").rglob("*") if p.is_file())
    assert files == ["a.ecdc", "sub/b.ecdc", "sub/deep/c.ecdc"]
    code, _, err = run(capsys, "decompress", tmp_path / "codes", tmp_path / "out", "--model", ckpt24, "-q")
    assert (code, err) == (0, "")
    assert len(loads) == 2
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["a.wav", "sub/b.wav", "sub/deep/c.wav"]
    assert read_audio(tmp_path / "out" / "sub" / "deep" / "c.wav")[0].shape == (1, round(0.3 * RATE24))
    # default OUT: next to the inputs
    assert run(capsys, "compress", tmp_path / "in", "--model", ckpt24, "-q")[0] == 0
    assert (tmp_path / "in" / "sub" / "deep" / "c.ecdc").is_file()
    assert not (tmp_path / "in" / ".hidden" / "h.ecdc").exists()


def test_folder_continues_after_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str,
                                         official_models: dict) -> None:
    write_wav(tmp_path / "in" / "a.wav", seconds=0.2)
    write_wav(tmp_path / "in" / "a.flac", seconds=0.2, subtype="PCM_16")  # also -> a.ecdc
    (tmp_path / "in" / "y").mkdir()
    (tmp_path / "in" / "y" / "b.wav").write_bytes(b"RIFF not really")
    write_wav(tmp_path / "in" / "z" / "c.wav", seconds=0.2)
    (tmp_path / "out" / "z").mkdir(parents=True)
    (tmp_path / "out" / "z" / "c.ecdc").write_bytes(b"keep me")
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--model", ckpt24, "-q", "-f")
    assert code == 1
    assert f"opencodec: error: cannot read audio file {tmp_path / 'in' / 'y' / 'b.wav'}: " in err
    assert "Traceback" not in err
    assert f"would also be written from {tmp_path / 'in' / 'a.flac'}" in err  # sorted: a.flac first
    assert "2 of 4 file(s) failed" in err
    data = (tmp_path / "out" / "a.ecdc").read_bytes()
    assert data[:4] == b"ECDC"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ecdc", "z"]  # no empty y/
    assert (tmp_path / "out" / "z" / "c.ecdc").read_bytes() != b"keep me"  # -f overwrote it
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--model", ckpt24, "-q")
    assert code == 1 and "4 of 4 file(s) failed" in err and "c.ecdc already exists" in err
    assert (tmp_path / "out" / "a.ecdc").read_bytes() == data


def test_skip_existing_resumes_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    """``--skip-existing``: the inputs whose output exists are left out (and left alone), the
    others written; a rerun then does nothing and succeeds. It contradicts --force."""
    for name in ("a", "b", "c"):
        write_wav(tmp_path / "in" / f"{name}.wav", seconds=0.3, seed=ord(name))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.ecdc").write_bytes(b"done before")  # as from an interrupted run
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--model", ckpt24, "--skip-existing")
    assert code == 0 and "1 file(s) skipped, their output exists" in err and "2 file(s) done, 1 skipped" in err
    assert (tmp_path / "out" / "b.ecdc").read_bytes() == b"done before"
    assert all((tmp_path / "out" / f"{n}.ecdc").read_bytes()[:4] == b"ECDC" for n in ("a", "c"))
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--model", ckpt24, "--skip-existing")
    assert code == 0 and "3 file(s) skipped" in err
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--model", ckpt24)
    assert code == 1 and "3 of 3 file(s) failed" in err  # without the option, existing outputs are errors
    code, _, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "--skip-existing", "-f")
    assert code == 2 and "--force and --skip-existing contradict" in err
    code, _, err = run(capsys, "decompress", tmp_path / "out" / "a.ecdc", tmp_path / "a.wav", "--model", ckpt24, "-q")
    assert code == 0
    code, _, err = run(capsys, "decompress", tmp_path / "out" / "a.ecdc", tmp_path / "a.wav", "--model", ckpt24,
                       "--skip-existing")
    assert code == 0 and "1 file(s) skipped, their output exists" in err


def test_folder_decompress_loads_header_model_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   ckpt24: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        write_wav(tmp_path / "in" / f"{name}.wav", seconds=0.2)
    run(capsys, "compress", tmp_path / "in", tmp_path / "codes", "--model", ckpt24, "-q")
    model = codec_files.load_model(ckpt24)
    names: list[object] = []
    monkeypatch.setattr(codec_files, "load_model", lambda name=None, **k: names.append(name) or model)
    assert run(capsys, "decompress", tmp_path / "codes", "-q") == (0, "", "")
    assert names == ["encodec_24khz"]
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == [
        "a.ecdc", "a.wav", "b.ecdc", "b.wav", "c.ecdc", "c.wav"]


# -- info ---------------------------------------------------------------------------------------
def test_info_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=1.0)
    run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24, "-q", "-b", "3")
    size = (tmp_path / "a.ecdc").stat().st_size
    code, out, err = run(capsys, "info", tmp_path / "a.ecdc")
    assert (code, err) == (0, "")
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    fields = {k.strip(): v.strip() for k, v in lines.items()}
    assert fields["model"] == "encodec_24khz"
    assert fields["sample rate"] == "24000 Hz" and fields["channels"] == "1"
    assert fields["codebooks"] == "4" and fields["bandwidth"] == "3 kbps (nominal)"
    assert fields["duration"] == "1.000 s (24000 samples)"
    assert fields["size"] == f"{size} bytes"
    assert fields["bitrate"] == f"{size * 8 / 1000:.2f} kbps (actual)"
    assert fields["entropy model"] == "no" and fields["complete"] == "yes"
    code, out, _ = run(capsys, "info", tmp_path, "--json")  # folder: every .ecdc under it
    info = json.loads(out)
    assert info == {"file": str(tmp_path / "a.ecdc"), "model": "encodec_24khz", "model_hash": None,
                    "release": "official EnCodec weights", "sample_rate": 24000,
                    "channels": 1, "codebooks": 4, "bandwidth_kbps": 3.0, "samples": 24000,
                    "duration_s": 1.0, "size_bytes": size, "bitrate_kbps": size * 8 / 1000,
                    "entropy_coded": False, "body_bytes_missing": 0,
                    "body_bytes": size - parse_header((tmp_path / "a.ecdc").read_bytes())[1],
                    "lm_body_min_bytes": None}


def test_info_reports_a_truncated_or_padded_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 ckpt24: str) -> None:
    """A plain body's length follows from the header: ``info`` says how many bytes are missing
    (or too many) and exits 1, as ``decompress`` would refuse the file."""
    write_wav(tmp_path / "a.wav", seconds=1.0)
    run(capsys, "compress", tmp_path / "a.wav", "--model", ckpt24, "-q", "-b", "3")
    data = (tmp_path / "a.ecdc").read_bytes()
    (tmp_path / "cut.ecdc").write_bytes(data[:-100])
    (tmp_path / "long.ecdc").write_bytes(data + b"xy")
    code, out, err = run(capsys, "info", tmp_path / "cut.ecdc", tmp_path / "long.ecdc")
    assert code == 1
    assert "complete:      NO, truncated: 100 bytes missing" in out and "complete:      NO, 2 bytes after the end" in out
    assert f"{tmp_path / 'cut.ecdc'}: truncated: 100 bytes missing" in err and "long.ecdc: 2 bytes after the end" in err
    code, out, _ = run(capsys, "info", tmp_path / "cut.ecdc", "--json")
    assert code == 1 and json.loads(out)["body_bytes_missing"] == 100
    code, _, err = run(capsys, "decompress", tmp_path / "cut.ecdc", "--model", ckpt24, "-q")
    assert code == 1 and "truncated" in err  # what decompress says of the same file


def test_info_unknown_model_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(tmp_path / "custom.ecdc", "wb") as fo:
        write_header(fo, EcdcHeader(model_name="my_codec", audio_length=16000, num_codebooks=3, use_lm=True))
        fo.write(bytes(100))
    (tmp_path / "junk.ecdc").write_bytes(b"JUNK" * 5)
    code, out, err = run(capsys, "info", tmp_path / "custom.ecdc", tmp_path / "junk.ecdc", tmp_path / "gone.ecdc")
    assert code == 1
    assert "model:         my_codec" in out and "codebooks:     3" in out and "16000 samples" in out
    assert "sample rate:   unknown" in out and "entropy model: yes" in out
    assert "junk.ecdc" in err and "magic" in err and "gone.ecdc" in err and "Traceback" not in err


def test_info_with_model_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A custom model's file: unknown rate/duration/bitrate by name, known with --model."""
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="my_16khz", sample_rate=16000, n_filters=4, dimension=16,
                                       n_q=4, ratios=[4, 4], lstm=1, target_bandwidths=[2.0]))
    ckpt = save_model(model, tmp_path / "my.safetensors")
    with open(tmp_path / "x.ecdc", "wb") as fo:
        write_header(fo, EcdcHeader(model_name="my_16khz", audio_length=32000, num_codebooks=2, use_lm=False))
        fo.write(bytes(5000))  # 2000 frames x 2 codes x 10 bits: a complete plain body
    code, out, _ = run(capsys, "info", tmp_path / "x.ecdc", "--json")
    assert code == 0 and json.loads(out)["duration_s"] is None
    code, out, _ = run(capsys, "info", tmp_path / "x.ecdc", "--json", "--model", ckpt)
    info = json.loads(out)
    assert code == 0 and info["sample_rate"] == 16000 and info["duration_s"] == 2.0
    assert info["bandwidth_kbps"] == 2 * 10 * 1000 / 1000  # 2 codebooks x 10 bits x 1000 Hz
    assert info["bitrate_kbps"] == (5000 + len(EcdcHeader("my_16khz", 32000, 2, False).to_json()) + 9) * 8 / 2 / 1000
    assert info["body_bytes_missing"] == 0


# -- the installed console script ---------------------------------------------------------------
def test_console_script(tmp_path: Path, ckpt24: str) -> None:
    write_wav(tmp_path / "a.wav", seconds=0.2)
    data = compress(codec_files.load_model(ckpt24), read_audio(tmp_path / "a.wav")[0], bandwidth=6.0)
    (tmp_path / "a.ecdc").write_bytes(data)
    script = Path(sys.executable).parent / "opencodec"
    if not script.exists():
        script = Path(shutil.which("opencodec") or script)
    assert script.exists(), "the opencodec console script is not installed (pip install -e .)"
    env = {**os.environ, "OPENCODEC_OFFLINE": "1"}
    done = subprocess.run([str(script), "info", str(tmp_path / "a.ecdc"), str(tmp_path / "none.ecdc")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "model:         encodec_24khz" in done.stdout and "6 kbps (nominal)" in done.stdout
    assert "opencodec: error:" in done.stderr and "none.ecdc" in done.stderr and "Traceback" not in done.stderr
