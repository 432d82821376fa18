"""Metrics: identical signals score best, more noise scores monotonically worse, bad inputs
fail clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from opencodec.eval import metrics as M
from opencodec.eval.visqol import (VISQOL_IMPLEMENTATION, load_native_scorer, visqol,
                                   visqol_min_seconds)

SR = 24000


def speech_like(sample_rate: int, seconds: float, seed: int = 0, channels: int = 1
                ) -> np.ndarray:
    """Synthetic voiced 'speech': a glottal-like harmonic series with vibrato and formant
    tilt, syllabic envelope, short fricative noise bursts and a -45 dB noise floor.
    Returns float32 [C, T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    out = []
    for c in range(channels):
        f0 = 120 + 15 * c + 25 * np.sin(2 * np.pi * 0.8 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = np.zeros_like(t)
        for k in range(1, int(sample_rate / 2 / 170)):
            f = k * 140.0
            formant = (np.exp(-((f - 700) / 300) ** 2) + 0.6 * np.exp(-((f - 1200) / 400) ** 2)
                       + 0.3 * np.exp(-((f - 2600) / 600) ** 2) + 0.02)
            voiced += formant * np.sin(k * phase) / np.sqrt(k)
        env = np.clip(np.sin(2 * np.pi * 2.2 * t + 0.7 * c), 0, None) ** 0.6
        fric = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 2.2 * t + 0.7 * c) < -0.8)
        fric = np.convolve(fric, [1, -0.9], mode="same")  # high-frequency tilt
        sig = 0.25 * voiced * env + 0.04 * fric + 10 ** (-45 / 20) * rng.standard_normal(len(t))
        out.append(sig / np.max(np.abs(sig)) * 0.7)
    return np.asarray(out, dtype=np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.shape)
    scale = np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (x + scale * noise).astype(np.float32)


SNRS = (30.0, 20.0, 10.0, 0.0)  # decreasing quality


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return speech_like(SR, 3.0)


@pytest.fixture(scope="module")
def noisy(clean: np.ndarray) -> list[np.ndarray]:
    return [add_noise(clean, s) for s in SNRS]


# ---------------------------------------------------------------- identical = top score


def test_identical_scores(clean: np.ndarray) -> None:
    assert M.si_snr(clean, clean) > 100
    assert M.mel_distance(clean, clean, SR) == pytest.approx(0.0, abs=1e-12)
    assert M.stft_distance(clean, clean) == pytest.approx(0.0, abs=1e-12)
    assert M.pesq_wb(clean, clean, SR) > 4.5
    assert M.stoi(clean, clean, SR) == pytest.approx(1.0, abs=1e-6)


def test_visqol_identical(clean: np.ndarray) -> None:
    assert visqol(clean, clean, SR, mode="audio") == pytest.approx(4.73, abs=0.01)
    assert visqol(clean, clean, SR, mode="speech") == pytest.approx(5.0, abs=1e-6)
    assert "audio-samples-qoe" in VISQOL_IMPLEMENTATION
    assert hasattr(load_native_scorer(), "_score")


# ---------------------------------------------------------------- monotone in noise


def _strictly_decreasing(v: list[float]) -> bool:
    return all(a > b for a, b in zip(v, v[1:]))


@pytest.mark.parametrize("name", ["si_snr", "pesq_wb", "stoi"])
def test_higher_is_better_monotone(name: str, clean: np.ndarray,
                                   noisy: list[np.ndarray]) -> None:
    fn = getattr(M, name)
    scores = [fn(n, clean) if name == "si_snr" else fn(n, clean, SR) for n in noisy]
    assert _strictly_decreasing(scores), scores
    if name == "si_snr":  # SI-SNR of additive white noise equals the SNR
        np.testing.assert_allclose(scores, SNRS, atol=0.2)


@pytest.mark.parametrize("name", ["mel_distance", "stft_distance"])
def test_lower_is_better_monotone(name: str, clean: np.ndarray,
                                  noisy: list[np.ndarray]) -> None:
    scores = [M.mel_distance(n, clean, SR) if name == "mel_distance" else
              M.stft_distance(n, clean) for n in noisy]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 0


@pytest.mark.parametrize("mode", ["audio", "speech"])
def test_visqol_monotone(mode: str, clean: np.ndarray, noisy: list[np.ndarray]) -> None:
    scores = [visqol(n, clean, SR, mode=mode) for n in noisy[:3]]
    top = 4.73 if mode == "audio" else 5.0
    assert top > scores[0], scores
    assert _strictly_decreasing(scores), scores


# ---------------------------------------------------------------- shapes, types, stereo


def test_torch_and_numpy_agree(clean: np.ndarray, noisy: list[np.ndarray]) -> None:
    a = M.si_snr(noisy[1], clean)
    b = M.si_snr(torch.from_numpy(noisy[1]), torch.from_numpy(clean))
    c = M.si_snr(noisy[1][0], clean[0])  # [T]
    assert a == pytest.approx(b) and a == pytest.approx(c)
    d = M.mel_distance(torch.from_numpy(noisy[1]), clean, SR)
    assert isinstance(d, float) and d > 0
    assert d == pytest.approx(M.mel_distance(noisy[1], clean, SR), rel=1e-12)
    assert d == pytest.approx(M.mel_distance(noisy[1][0], torch.from_numpy(clean[0]), SR),
                              rel=1e-12)


def _broadband(seconds: float = 1.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((1, int(SR * seconds)))
            ).astype(np.float32)


def test_mel_distance_is_in_nepers() -> None:
    # Mel energies are linear in the STFT magnitude, so scaling the signal by 10 scales every
    # energy by 10 and every natural-log difference is ln 10 (energies >> eps for broadband
    # noise). The docstring says nepers (natural log); log10 would give 1.0.
    x = _broadband()
    assert M.mel_distance(10 * x, x, SR) == pytest.approx(math.log(10), rel=1e-3)
    assert M.mel_distance(x, 10 * x, SR) == pytest.approx(math.log(10), rel=1e-3)
    assert M.mel_distance(0.5 * x, x, SR) == pytest.approx(math.log(2), rel=1e-3)
    # one scale alone gives the same value (mean over scales of equal values)
    assert M.mel_distance(10 * x, x, SR, n_ffts=(1024,)) == pytest.approx(math.log(10), rel=1e-3)


def test_stft_distance_pinned_value() -> None:
    # E = 10 R: spectral convergence ||R - 10R|| / ||R|| = 9, log-magnitude |ln 10| per bin
    x = _broadband()
    assert M.stft_distance(10 * x, x) == pytest.approx(9 + math.log(10), rel=1e-4)
    # E = R / 2: SC = 0.5, LM = ln 2
    assert M.stft_distance(0.5 * x, x) == pytest.approx(0.5 + math.log(2), rel=1e-4)


def test_stereo_is_mean_of_channels() -> None:
    x = speech_like(SR, 1.5, channels=2)
    y = np.stack([add_noise(x[:1], 10)[0], add_noise(x[1:], 20)[0]])
    per = [M.si_snr(y[i], x[i]) for i in range(2)]
    assert M.si_snr(y, x) == pytest.approx(np.mean(per))
    per = [M.stoi(y[i], x[i], SR) for i in range(2)]
    assert M.stoi(y, x, SR) == pytest.approx(np.mean(per))


def test_shape_mismatch_is_clear(clean: np.ndarray) -> None:
    with pytest.raises(M.MetricError, match="same shape"):
        M.si_snr(clean[:, :-1], clean)
    with pytest.raises(M.MetricError, match="same shape"):
        visqol(clean[:, :-10], clean, SR)
    with pytest.raises(M.MetricError, match=r"\[T\] or \[C, T\]"):
        M.stft_distance(clean[None], clean[None])
    with pytest.raises(M.MetricError, match="sample_rate"):
        M.mel_distance(clean, clean, 0)
    with pytest.raises(M.MetricError, match="NaN"):
        M.si_snr(np.full_like(clean, np.nan), clean)
    with pytest.raises(M.MetricError, match="mode"):
        visqol(clean, clean, SR, mode="music")  # type: ignore[arg-type]


# ---------------------------------------------------------------- short clips, silence


def test_visqol_short_clip_error() -> None:
    audio_min = visqol_min_seconds("audio")
    speech_min = visqol_min_seconds("speech")
    assert 0.9 < audio_min < 1.0 and 0.6 < speech_min < 0.7
    x = speech_like(SR, 0.9)
    with pytest.raises(M.ClipTooShortError, match="at least 0.98 s"):
        visqol(x, x, SR, mode="audio")
    y = speech_like(SR, 0.5)
    with pytest.raises(M.ClipTooShortError, match="at least 0.64 s"):
        visqol(y, y, SR, mode="speech")
    # just above the minimum works
    z = speech_like(SR, 0.7)
    assert visqol(z, z, SR, mode="speech") == pytest.approx(5.0)


def test_short_clip_errors_other_metrics() -> None:
    x = speech_like(SR, 0.2)
    with pytest.raises(M.ClipTooShortError, match="PESQ"):
        M.pesq_wb(x, x, SR)
    with pytest.raises(M.ClipTooShortError, match="STOI"):
        M.stoi(x, x, SR)
    # spectral distances work on clips shorter than their windows
    assert M.mel_distance(x[:, :300], x[:, :300], SR) == pytest.approx(0.0, abs=1e-12)


def test_silence_is_clear(clean: np.ndarray) -> None:
    z = np.zeros_like(clean)
    with pytest.raises(M.SilentSignalError):
        M.pesq_wb(clean, z, SR)
    with pytest.raises(M.SilentSignalError):
        M.si_snr(clean, z)
    with pytest.raises(M.SilentSignalError):
        M.stoi(clean, z, SR)
    with pytest.raises(M.SilentSignalError):
        M.stft_distance(clean, z)


def _reference_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Written from the formula (HTK mel m = 2595 log10(1 + f / 700), n_mels + 2 points
    equally spaced in mel from 0 Hz to Nyquist, triangles scaled to unit area by
    2 / (f_upper - f_lower)), evaluated at bin frequencies k * sr / n_fft; no row dropped."""
    mel = 2595.0 * np.log10(1.0 + (sample_rate / 2.0) / 700.0)
    hz = 700.0 * (10.0 ** (np.linspace(0.0, mel, n_mels + 2) / 2595.0) - 1.0)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    return np.array([np.interp(freqs, hz[i:i + 3], [0.0, 2.0 / (hz[i + 2] - hz[i]), 0.0],
                               left=0.0, right=0.0) for i in range(n_mels)])


def test_mel_filterbank() -> None:
    fb = M.mel_filterbank(24000, 1024, 64)
    assert fb.shape == (64, 513)
    assert np.all(fb >= 0)
    # each triangle peaks once, centres strictly increase with the band index
    centres = np.argmax(fb, axis=1)
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(fb, _reference_filterbank(24000, 1024, 64), rtol=1e-9, atol=1e-15)
    small = M.mel_filterbank(48000, 256, 64)  # narrow low bands get no bin: dropped
    assert 0 < small.shape[0] < 64 and np.all(small.sum(axis=1) > 0)
    ref = _reference_filterbank(48000, 256, 64)
    kept = ref.sum(axis=1) > 0
    assert small.shape[0] == int(kept.sum()) == 58  # 6 low bands fall between two bins
    np.testing.assert_allclose(small, ref[kept], rtol=1e-9, atol=1e-15)
    # Slaney normalisation: on a fine frequency grid every triangle has unit area
    fine = M.mel_filterbank(24000, 16384, 64)
    np.testing.assert_allclose(fine.sum(axis=1) * 24000 / 16384, 1.0, rtol=1e-3)
