"""Opus / MP3 baselines: shape and rate preserved, sample-accurate alignment, bitrates near
target, lower bitrate scores worse, common Codec interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opencodec.eval import baselines as B
from opencodec.eval import metrics as M
from opencodec.eval.visqol import visqol
from test_eval_metrics import speech_like  # tests/ is on sys.path (conftest.py)


def xcorr_lag(y: np.ndarray, x: np.ndarray, max_lag: int = 200) -> int:
    """Lag (samples) of the cross-correlation peak of y against x, summed over channels;
    positive = y is late."""
    n = x.shape[1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = sum(np.fft.rfft(y[c], size) * np.conj(np.fft.rfft(x[c], size))
               for c in range(x.shape[0]))
    cc = np.fft.irfft(spec, size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    vals = np.concatenate([cc[:max_lag + 1], cc[-max_lag:]])
    return int(lags[np.argmax(vals)])


def test_xcorr_lag_helper() -> None:
    x = speech_like(24000, 1.0)
    assert xcorr_lag(np.roll(x, 7, axis=1), x) == 7
    assert xcorr_lag(np.roll(x, -3, axis=1), x) == -3


@pytest.fixture(scope="module")
def mono24() -> np.ndarray:
    return speech_like(24000, 3.0)


@pytest.fixture(scope="module")
def stereo48() -> np.ndarray:
    return speech_like(48000, 2.0, channels=2)


@pytest.fixture(scope="module")
def opus_mono(mono24: np.ndarray) -> dict[int, B.RoundtripResult]:
    return {br: B.opus_roundtrip_result(mono24, 24000, br) for br in (6, 12, 24)}


# ---------------------------------------------------------------- Opus


@pytest.mark.parametrize("br", [6, 12, 24])
def test_opus_mono_shape_alignment_bitrate(br: int, mono24: np.ndarray,
                                           opus_mono: dict[int, B.RoundtripResult]) -> None:
    r = opus_mono[br]
    assert r.wav.shape == mono24.shape and r.wav.dtype == np.float32
    assert r.codec_rate == 48000
    assert abs(xcorr_lag(r.wav, mono24)) <= 1
    assert 0.7 * br <= r.payload_kbps <= 1.3 * br, r.payload_kbps  # libopus VBR
    assert r.container_kbps > r.payload_kbps
    assert M.si_snr(r.wav, mono24) > 3.0  # aligned: a waveform match, not just a spectrum


@pytest.mark.slow
def test_opus_lower_bitrate_scores_worse(mono24: np.ndarray,
                                         opus_mono: dict[int, B.RoundtripResult]) -> None:
    wavs = [opus_mono[br].wav for br in (6, 12, 24)]
    vq = [visqol(w, mono24, 24000, mode="audio") for w in wavs]
    snr = [M.si_snr(w, mono24) for w in wavs]
    mel = [M.mel_distance(w, mono24, 24000) for w in wavs]
    assert vq[0] < vq[1] < vq[2], vq
    assert snr[0] < snr[1] < snr[2], snr
    assert mel[0] > mel[1] > mel[2], mel


@pytest.mark.parametrize("br", [6, 12])
def test_opus_stereo_aligned(br: int, stereo48: np.ndarray) -> None:
    y, kbps = B.opus_roundtrip(stereo48, 48000, br)
    assert y.shape == stereo48.shape
    assert abs(xcorr_lag(y, stereo48)) <= 1
    assert 0.7 * br <= kbps <= 1.3 * br, kbps


def test_opus_stereo_hybrid_known_residual(stereo48: np.ndarray) -> None:
    """Documented libopus property: stereo hybrid mode (24 kbit/s) has its SILK band a few
    samples early at 48 kHz; not compensated. Guard that it stays that small."""
    y, _ = B.opus_roundtrip(stereo48, 48000, 24)
    assert y.shape == stereo48.shape
    assert abs(xcorr_lag(y, stereo48)) <= 5


def test_opus_other_rates_and_torch_input() -> None:
    x = speech_like(16000, 1.5)
    y, kbps = B.opus_roundtrip(torch.from_numpy(x), 16000, 12)
    assert y.shape == x.shape and abs(xcorr_lag(y, x)) <= 1 and kbps > 0
    x = speech_like(44100, 1.0)[0]  # [T] is mono
    y, _ = B.opus_roundtrip(x, 44100, 24)
    assert y.shape == (1, x.shape[0]) and abs(xcorr_lag(y, x[None])) <= 1


# ---------------------------------------------------------------- MP3


@pytest.mark.parametrize("channels,rate", [(1, 24000), (2, 48000), (1, 44100), (2, 24000)])
def test_mp3_shape_alignment_bitrate(channels: int, rate: int) -> None:
    x = speech_like(rate, 2.0, channels=channels)
    r = B.mp3_roundtrip_result(x, rate, 64)
    assert r.wav.shape == x.shape and r.codec_rate == rate
    assert xcorr_lag(r.wav, x) == 0
    assert 62 <= r.payload_kbps <= 68, r.payload_kbps  # CBR (+ end-padding frames)
    assert M.si_snr(r.wav, x) > 8.0


def test_mp3_unsupported_rate_resamples() -> None:
    x = speech_like(96000, 1.0)
    r = B.mp3_roundtrip_result(x, 96000, 64)
    assert r.codec_rate == 48000 and r.wav.shape == x.shape
    assert abs(xcorr_lag(r.wav, x)) <= 1


# ---------------------------------------------------------------- errors, Codec protocol


def test_bad_inputs_are_clear() -> None:
    x = speech_like(24000, 0.5)
    with pytest.raises(B.BaselineError, match="1 or 2 channels"):
        B.opus_roundtrip(np.zeros((3, 1000), np.float32), 24000, 12)
    with pytest.raises(B.BaselineError, match=r"\[C, T\]"):
        B.mp3_roundtrip(x[None], 24000, 64)
    with pytest.raises(B.BaselineError, match="bitrate"):
        B.opus_roundtrip(x, 24000, 2)
    with pytest.raises(B.BaselineError, match="sample_rate"):
        B.mp3_roundtrip(x, -1, 64)
    with pytest.raises(B.BaselineError, match="empty"):
        B.opus_roundtrip(np.zeros((1, 0), np.float32), 24000, 12)


def test_short_clip_roundtrips() -> None:
    x = speech_like(24000, 0.05)  # shorter than one Opus frame / MP3 frame after delay
    assert B.opus_roundtrip(x, 24000, 12)[0].shape == x.shape
    assert B.mp3_roundtrip(x, 24000, 64)[0].shape == x.shape


def test_codec_protocol() -> None:
    codecs = B.paper_baselines()
    assert [c.name for c in codecs] == ["opus-6kbps", "opus-12kbps", "opus-24kbps",
                                        "mp3-64kbps"]
    assert all(isinstance(c, B.Codec) for c in codecs)
    ident = B.FunctionCodec("identity", 0.0, lambda w, sr: (w.copy(), 0.0))
    half = B.FunctionCodec("half", 3.0, lambda w, sr: (0.5 * w, 3.0 * sr / 24000))
    assert isinstance(ident, B.Codec)
    x = speech_like(24000, 1.0)
    y, kbps = ident.roundtrip(x, 24000)
    assert np.array_equal(y, x) and kbps == 0.0
    y, kbps = half.roundtrip(x, 48000)  # the wrapped function's own output and rate
    assert np.array_equal(y, 0.5 * x) and kbps == 6.0
    # The real codecs give the input back, degraded by their bitrate (measured 9.4 dB
    # and 19.0 dB SI-SNR at 12 and 64 kbit/s on this clip, with the pinned av 18.1.0: av
    # 18.1.1's FFmpeg gave 14.8 dB at 64 kbit/s, which this floor caught in a fresh install).
    for codec, floor in ((codecs[1], 7.0), (codecs[3], 15.0)):
        y, kbps = codec.roundtrip(x, 24000)
        assert y.shape == x.shape and kbps > 0
        assert float(M.si_snr(y, x)) > floor, codec.name
