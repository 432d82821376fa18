"""Audio I/O and conversion: round trips, resampling accuracy, channels, clipping, atomicity."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import audio
from opencodec.audio import convert_audio, read_audio, resample, write_audio
from opencodec.errors import AudioIOError, OpenCodecError


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    """[T, C] float32 sine (all channels equal)."""
    t = np.arange(int(round(rate * seconds))) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a 1-D signal (Hann window)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- reading -------------------------------------------------------------------------------
def test_read_wav_int16_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ints = rng.integers(-32768, 32768, size=(1000, 2), dtype=np.int16)
    sf.write(tmp_path / "a.wav", ints, 16000, subtype="PCM_16")
    wav, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000
    assert wav.dtype == torch.float32 and wav.shape == (2, 1000)
    torch.testing.assert_close(wav, torch.from_numpy(ints.T.astype(np.float32) / 32768), rtol=0, atol=0)


def test_read_many_channels_and_rates(tmp_path: Path) -> None:
    data = np.stack([np.full(300, v, np.float32) for v in (0.1, -0.2, 0.3, 0.4, -0.5, 0.6)], axis=1)
    sf.write(tmp_path / "six.wav", data, 11025, subtype="FLOAT")
    wav, rate = read_audio(str(tmp_path / "six.wav"))
    assert rate == 11025 and wav.shape == (6, 300)
    assert wav[:, 0].tolist() == pytest.approx([0.1, -0.2, 0.3, 0.4, -0.5, 0.6])


@pytest.mark.parametrize("name,fmt,subtype,rate", [
    ("a.ogg", "OGG", "VORBIS", 44100),
    ("a.opus", "OGG", "OPUS", 48000),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 44100),
])
def test_read_lossy_formats(tmp_path: Path, name: str, fmt: str, subtype: str, rate: int) -> None:
    x = sine(440.0, rate, 0.5, amp=0.5, channels=2)
    sf.write(tmp_path / name, x, rate, format=fmt, subtype=subtype)
    wav, got_rate = read_audio(tmp_path / name)
    assert got_rate == rate
    assert wav.shape[0] == 2 and abs(wav.shape[1] - x.shape[0]) <= 0.1 * rate
    y = wav[0].numpy()
    assert peak_frequency(y, rate) == pytest.approx(440.0, abs=3.0)
    mid = y[len(y) // 4: 3 * len(y) // 4]  # away from codec start-up / padding
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioIOError, match="nope.wav.*no such file"):
        read_audio(path)


def test_read_corrupt_and_empty_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)))
    with pytest.raises(AudioIOError, match="corrupt.wav") as info:
        read_audio(corrupt)
    assert isinstance(info.value, OpenCodecError)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(AudioIOError, match="empty.flac"):
        read_audio(empty)
    no_samples = tmp_path / "zero.wav"
    sf.write(no_samples, np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(AudioIOError, match="zero.wav.*no audio samples"):
        read_audio(no_samples)
    with pytest.raises(AudioIOError, match="not a regular file"):
        read_audio(tmp_path)
    rate0 = tmp_path / "rate0.wav"  # a WAV header whose sample rate field is 0
    sf.write(rate0, np.zeros((100, 1), np.float32), 8000)
    data = bytearray(rate0.read_bytes())
    data[24:28] = bytes(4)
    rate0.write_bytes(bytes(data))
    with pytest.raises(AudioIOError, match="rate0.wav: corrupt header"):
        read_audio(rate0)


def test_read_rejects_nan(tmp_path: Path) -> None:
    x = np.zeros((100, 1), np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(AudioIOError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


# -- writing -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,bits,step", [
    ("a.wav", 16, 2.0 ** -15), ("a.wav", 24, 2.0 ** -23), ("a.flac", 16, 2.0 ** -15), ("a.flac", 24, 2.0 ** -23),
])
def test_write_read_round_trip_pcm(tmp_path: Path, name: str, bits: int, step: float) -> None:
    rng = np.random.default_rng(1)
    levels = rng.integers(-(1 / step), 1 / step, size=(2, 4000))
    wav = torch.from_numpy((levels * step).astype(np.float32))  # exactly representable
    write_audio(tmp_path / name, wav, 22050, bits=bits)
    info = sf.info(tmp_path / name)
    assert info.subtype == f"PCM_{bits}" and info.samplerate == 22050 and info.channels == 2
    back, rate = read_audio(tmp_path / name)
    assert rate == 22050
    torch.testing.assert_close(back, wav, rtol=0, atol=0)
    assert leftovers(tmp_path) == [name]


def test_write_pcm16_quantises_to_nearest_level(tmp_path: Path) -> None:
    wav = torch.rand(1, 5000) * 1.8 - 0.9
    write_audio(tmp_path / "q.wav", wav, 8000)
    back, _ = read_audio(tmp_path / "q.wav")
    assert float((back - wav).abs().max()) <= 0.5 / 32768 + 1e-7


def test_write_float_wav_is_exact_and_unclipped(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    wav = torch.randn(3, 1000) * 2  # peaks well above 1: float WAV holds them
    write_audio(tmp_path / "f.wav", wav, 48000, bits=32)
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"
    back, _ = read_audio(tmp_path / "f.wav")
    torch.testing.assert_close(back, wav, rtol=0, atol=0)
    assert not [w for w in recwarn if "peak" in str(w.message)]


def test_write_clips_with_warning(tmp_path: Path) -> None:
    wav = torch.tensor([[0.5, 1.5, -2.25, 0.25]])
    with pytest.warns(UserWarning, match=r"clip.wav.*peak amplitude 2\.25"):
        write_audio(tmp_path / "clip.wav", wav, 8000)
    back, _ = read_audio(tmp_path / "clip.wav")
    assert back[0].tolist() == pytest.approx([0.5, 32767 / 32768, -1.0, 0.25], abs=1e-6)


def test_write_rescale(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    wav = torch.tensor([[0.5, 2.0, -1.0, 0.25]])
    write_audio(tmp_path / "r.wav", wav, 8000, bits=32, rescale=True)
    back, _ = read_audio(tmp_path / "r.wav")
    torch.testing.assert_close(back, wav * (0.99 / 2.0))
    quiet = torch.tensor([[0.5, -0.25]])
    write_audio(tmp_path / "q.wav", quiet, 8000, bits=32, rescale=True)  # never scaled up
    torch.testing.assert_close(read_audio(tmp_path / "q.wav")[0], quiet)
    assert not [w for w in recwarn if "peak" in str(w.message)]


def test_write_rejects_bad_formats(tmp_path: Path) -> None:
    wav = torch.zeros(1, 10)
    with pytest.raises(AudioIOError, match="FLAC supports bits"):
        write_audio(tmp_path / "x.flac", wav, 8000, bits=32)
    with pytest.raises(AudioIOError, match="unsupported output format '.mp3'"):
        write_audio(tmp_path / "x.mp3", wav, 8000)
    with pytest.raises(AudioIOError, match="NaN"):
        write_audio(tmp_path / "x.wav", torch.tensor([[0.0, float("nan")]]), 8000)
    with pytest.raises(AudioIOError, match="missing"):
        write_audio(tmp_path / "missing" / "x.wav", wav, 8000)
    assert leftovers(tmp_path) == []


def test_write_is_atomic_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.wav"
    target.write_bytes(b"old content")

    def failing_write(file: str, data: np.ndarray, samplerate: int, **kwargs: object) -> None:
        Path(file).write_bytes(b"RIFF partial")  # something half-written
        raise RuntimeError("disk full")

    monkeypatch.setattr(audio.sf, "write", failing_write)
    with pytest.raises(AudioIOError, match="out.wav.*disk full"):
        write_audio(target, torch.zeros(1, 100), 8000)
    assert target.read_bytes() == b"old content"
    assert leftovers(tmp_path) == ["out.wav"]

    monkeypatch.setattr(audio.sf, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "new.wav", torch.zeros(1, 100), 8000)
    assert leftovers(tmp_path) == ["out.wav"]


def test_write_permissions_follow_umask(tmp_path: Path) -> None:
    write_audio(tmp_path / "p.wav", torch.zeros(1, 10), 8000)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "p.wav").stat().st_mode) == 0o666 & ~mask


# -- channels ------------------------------------------------------------------------------
def test_channels_to_mono_is_mean() -> None:
    wav = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.5, 1.0]])
    out = convert_audio(wav, 8000, 8000, 1)
    assert out.tolist() == [[0.5, 0.5, 0.0]]
    batch = torch.randn(4, 3, 50)
    torch.testing.assert_close(convert_audio(batch, 8000, 8000, 1), batch.mean(dim=1, keepdim=True))


def test_channels_from_mono_repeats() -> None:
    wav = torch.tensor([[0.25, -0.5]])
    assert convert_audio(wav, 8000, 8000, 2).tolist() == [[0.25, -0.5], [0.25, -0.5]]
    batch = torch.randn(2, 1, 40)
    out = convert_audio(batch, 8000, 8000, 3)
    assert out.shape == (2, 3, 40)
    for c in range(3):
        torch.testing.assert_close(out[:, c], batch[:, 0], rtol=0, atol=0)


def test_channels_unchanged_and_unsupported() -> None:
    wav = torch.randn(2, 10)
    assert convert_audio(wav, 8000, 8000, 2) is wav
    with pytest.raises(AudioIOError, match="6 channels to 2"):
        convert_audio(torch.randn(6, 10), 48000, 48000, 2)
    with pytest.raises(ValueError):
        convert_audio(torch.randn(10), 8000, 8000, 1)


# -- resampling ----------------------------------------------------------------------------
def test_resample_sine_keeps_frequency_and_amplitude() -> None:
    x = torch.from_numpy(sine(1000.0, 44100, 1.0, amp=0.5).T.copy())  # [1, 44100]
    y = convert_audio(x, 44100, 24000, 1)
    assert y.dtype == torch.float32 and y.shape == (1, 24000)
    t = np.arange(24000) / 24000
    ideal = 0.5 * np.sin(2 * np.pi * 1000 * t)
    inner = slice(500, -500)  # skip the filter's edge transients
    err = np.abs(y[0].numpy()[inner] - ideal[inner]).max()
    assert err < 1e-4  # also proves the output is time-aligned (no filter delay)
    rms = float(np.sqrt(np.mean(y[0].numpy()[inner] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-4)
    assert peak_frequency(y[0].numpy(), 24000) == pytest.approx(1000.0, abs=1.0)


def test_resample_removes_content_above_new_nyquist() -> None:
    x = torch.from_numpy(sine(15000.0, 44100, 0.5, amp=0.5).T.copy())
    y = convert_audio(x, 44100, 24000, 1)  # 15 kHz > 12 kHz: must not alias to 9 kHz
    assert float(y[0, 200:-200].abs().max()) < 1e-3


def test_resample_up_batch_and_dtypes() -> None:
    x = torch.from_numpy(np.stack([sine(300.0, 16000, 0.25).T, sine(500.0, 16000, 0.25).T]))  # [2, 1, 4000]
    y = convert_audio(x, 16000, 48000, 2)
    assert y.shape == (2, 2, 12000) and y.dtype == torch.float32
    t = np.arange(12000) / 48000
    for b, freq in enumerate((300.0, 500.0)):
        ideal = 0.5 * np.sin(2 * np.pi * freq * t)
        assert np.abs(y[b, 1].numpy()[300:-300] - ideal[300:-300]).max() < 1e-4
    x64 = torch.randn(1, 1000, dtype=torch.float64)
    assert convert_audio(x64, 32000, 24000, 1).dtype == torch.float32  # float32 out, as documented
    assert resample(x64, 32000, 24000).dtype == torch.float64  # the lower level keeps float64
    odd = convert_audio(torch.randn(1, 44101), 44100, 24000, 1)  # length T * 24000 / 44100, half up
    assert odd.shape == (1, 24001)
    assert convert_audio(torch.zeros(1, 0), 44100, 24000, 1).shape == (1, 0)
