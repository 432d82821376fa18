"""`compress IN OUT.wav` keeps the input's rate and channels; --rate/--channels on the round trip
and on decompress; `python -m opencodec` works like `opencodec`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import __version__, cli
from opencodec.audio import convert_audio, read_audio
from opencodec.compress import compress, decompress
from opencodec.pretrained import load_model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _offline(offline: Path) -> Path:
    return offline


@pytest.fixture(scope="module")
def ckpt24(official_checkpoints: dict) -> str:
    return str(official_checkpoints["encodec_24khz"])


def _write(path: Path, rate: int, seconds: float, channels: int) -> np.ndarray:
    rng = np.random.default_rng(rate + channels)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] * np.linspace(0.5, 1.0, channels)[None]
    x = (x + 0.02 * rng.standard_normal(x.shape)).astype(np.float32)
    sf.write(path, x, rate, subtype="FLOAT")
    return x


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip_keeps_48k_stereo(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    _write(tmp_path / "in.wav", 48_000, 0.5, 2)
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "rt.wav", "-m", ckpt24, "--float")
    assert code == 0, err
    info = sf.info(tmp_path / "rt.wav")
    assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 24_000)
    # the values: the 24 kHz mono decoding, resampled to 48 kHz and repeated on both channels
    model = load_model(ckpt24)
    wav, rate = read_audio(tmp_path / "in.wav")
    with torch.no_grad():
        decoded, dec_rate = decompress(compress(model, convert_audio(wav, rate, 24_000, 1), 6.0), model)
    expected = convert_audio(decoded, dec_rate, 48_000, 2)
    got, _ = read_audio(tmp_path / "rt.wav")
    assert torch.equal(got[0], got[1])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_round_trip_rate_and_channels_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              ckpt24: str) -> None:
    _write(tmp_path / "in.wav", 48_000, 0.5, 2)
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "rt.wav", "-m", ckpt24,
                        "--rate", 16_000, "--channels", 1)
    assert code == 0, err
    info = sf.info(tmp_path / "rt.wav")
    assert (info.samplerate, info.channels, info.frames) == (16_000, 1, 8_000)
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "x.ecdc", "-m", ckpt24, "--rate", 8000)
    assert code == 2 and "--rate applies to decoded audio: a round trip" in err
    assert not (tmp_path / "x.ecdc").exists()
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "y.wav", "-m", ckpt24, "--rate", 0)
    assert code == 2 and "--rate: must be between 1000 and 768000, got 0" in err


def test_decompress_rate_and_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str], ckpt24: str) -> None:
    _write(tmp_path / "in.wav", 24_000, 0.4, 1)
    assert _run(capsys, "compress", tmp_path / "in.wav", "-m", ckpt24, "-q")[0] == 0
    code, _, err = _run(capsys, "decompress", tmp_path / "in.ecdc", tmp_path / "default.wav", "-m", ckpt24)
    assert code == 0, err
    assert (sf.info(tmp_path / "default.wav").samplerate, sf.info(tmp_path / "default.wav").channels) == (24_000, 1)
    code, _, err = _run(capsys, "decompress", tmp_path / "in.ecdc", tmp_path / "hi.wav", "-m", ckpt24,
                        "--rate", 44_100, "--channels", 2, "--float")
    assert code == 0, err
    info = sf.info(tmp_path / "hi.wav")
    assert (info.samplerate, info.channels, info.frames) == (44_100, 2, round(9_600 * 44_100 / 24_000))
    base, _ = read_audio(tmp_path / "default.wav")
    got, _ = read_audio(tmp_path / "hi.wav")
    # same audio as the default decoding, resampled (16-bit default file: within its quantisation)
    expected = convert_audio(base, 24_000, 44_100, 2)
    assert (got - expected).abs().max() < 3 / 32768
    code, out, _ = _run(capsys, "info", tmp_path / "in.ecdc")
    assert code == 0 and "decompress --rate HZ --channels N" in out


def test_python_dash_m_is_the_command(tmp_path: Path) -> None:
    """(tests/test_tokenize.py runs ``python -m opencodec tokenize`` too.)"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "opencodec", "--version"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"opencodec {__version__}"
    done = subprocess.run([sys.executable, "-m", "opencodec", "decompress", str(tmp_path / "none.ecdc")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "opencodec: error:" in done.stderr
