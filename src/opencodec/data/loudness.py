"""Loudness and mixing helpers of the corpus builder (pure numpy functions, unit-tested):
gated RMS level, loudness normalisation, mixing at a given SNR."""
from __future__ import annotations

import math

import numpy as np


def gated_rms_db(audio: np.ndarray, sample_rate: int, block_s: float = 0.05) -> float:
    """Gated RMS level in dBFS of ``audio`` [C, T] (float, full scale 1.0).

    Blocks of ``block_s`` seconds of the channel-mean power are gated like ITU BS.1770
    (absolute gate -70 dBFS, then relative gate 10 dB under the mean of the kept blocks),
    but without K-weighting. Returns ``-inf`` for silence.
    """
    power = np.mean(audio.astype(np.float64) ** 2, axis=0)
    n = max(1, int(block_s * sample_rate))
    nb = max(1, len(power) // n)
    blocks = power[: nb * n].reshape(nb, n).mean(axis=1) if len(power) >= n else power.mean(keepdims=True)
    blocks = blocks[blocks > 10 ** (-70 / 10)]
    if blocks.size == 0:
        return float("-inf")
    rel = blocks.mean() * 10 ** (-10 / 10)
    kept = blocks[blocks >= rel]
    return float(10 * np.log10(kept.mean()))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_db: float = -20.0,
                       peak: float = 0.95) -> np.ndarray:
    """Scale ``audio`` [C, T] to a gated RMS of ``target_db`` dBFS, then lower the gain if
    needed so the absolute peak is at most ``peak`` (no clipping, no limiter).
    Silence is returned unchanged."""
    level = gated_rms_db(audio, sample_rate)
    if not math.isfinite(level):
        return audio
    gain = 10 ** ((target_db - level) / 20)
    mx = float(np.max(np.abs(audio))) * gain
    if mx > peak:
        gain *= peak / mx
    return (audio * gain).astype(np.float32)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Return ``clean + g * noise`` (float32) with ``g`` chosen so that the power ratio (over
    the whole signals, all channels) is ``snr_db`` dB. Shapes [C, T], equal; silent noise or
    silent ``clean`` returns a float32 copy of ``clean``."""
    ps = float(np.mean(clean.astype(np.float64) ** 2))
    pn = float(np.mean(noise.astype(np.float64) ** 2))
    if pn <= 0 or ps <= 0:
        return clean.astype(np.float32, copy=True)
    g = math.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (clean + g * noise).astype(np.float32)
