"""Objective audio-quality metrics: numpy arrays or torch tensors in, Python floats out.

Every metric takes ``est`` (the decoded / degraded signal) first and ``ref`` (the clean
reference) second, both shaped ``[T]`` (mono) or ``[C, T]`` (channels, samples), float, full
scale = 1.0, at the same sample rate and with *exactly* the same shape (no implicit trimming:
a length mismatch is almost always a misaligned codec and is reported as an error).

Multi-channel signals are scored channel by channel and the per-channel scores are averaged
(for SI-SNR, PESQ and STOI); the spectral distances pool all channels into one mean.

=================  ==========================================  ========================
metric             unit / range                                better
=================  ==========================================  ========================
``si_snr``         dB (identical signals: ~+150 dB, capped)     higher
``mel_distance``   mean |Δ ln mel magnitude| (nepers), >= 0     lower
``stft_distance``  spectral convergence + mean |Δ ln |STFT||    lower
``pesq_wb``        MOS-LQO, ~1.0 .. 4.64 (ITU-T P.862.2 WB)     higher
``stoi``           0 .. 1 (intelligibility)                     higher
``visqol``         MOS-LQO 1 .. 5 (see :mod:`.visqol`)          higher
=================  ==========================================  ========================

Optional dependencies are imported lazily: ``pesq`` (PESQ), ``pystoi`` (STOI, pulls scipy).
"""

from __future__ import annotations

import math
import operator
import warnings
from functools import lru_cache
from typing import Sequence, Union

import numpy as np
import soxr
import torch

from ..errors import OpenCodecError

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "MetricError", "ClipTooShortError", "SilentSignalError",
    "si_snr", "mel_distance", "stft_distance", "pesq_wb", "stoi",
    "mel_filterbank", "as_channels_first", "resample",
]


class MetricError(OpenCodecError, ValueError):
    """A metric cannot be computed for these inputs (shape, rate, length or content)."""


class ClipTooShortError(MetricError):
    """The clip is shorter than the minimum length the metric needs."""


class SilentSignalError(MetricError):
    """The reference (or the estimate) is silent, so the metric is undefined."""


# --------------------------------------------------------------------------------------
# input handling


def as_channels_first(x: ArrayLike, name: str = "signal") -> np.ndarray:
    """Convert a waveform to a float64 numpy array ``[C, T]``.

    Args:
        x: ``[T]`` or ``[C, T]`` numpy array or torch tensor (any float/int dtype; a tensor
            may require grad or live on any device, it is detached and copied to CPU).
        name: used in error messages.

    Returns:
        float64 array ``[C, T]`` (a mono ``[T]`` input becomes ``[1, T]``).

    Raises:
        MetricError: if ``x`` is not 1-D or 2-D, is empty, or contains NaN/inf.
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise MetricError(f"{name} must be shaped [T] or [C, T], got shape {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise MetricError(f"{name} is empty (shape {tuple(arr.shape)})")
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{name} contains NaN or infinite samples")
    return arr


def _pair(est: ArrayLike, ref: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert an ``(est, ref)`` pair to float64 ``[C, T]`` arrays of equal shape."""
    e = as_channels_first(est, "est")
    r = as_channels_first(ref, "ref")
    if e.shape != r.shape:
        raise MetricError(
            f"est and ref must have the same shape [C, T]; got est {tuple(e.shape)} and "
            f"ref {tuple(r.shape)} (trim/align the decoded signal to the reference first)")
    return e, r


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) \
            or sample_rate <= 0:
        raise MetricError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample ``[C, T]`` float64 audio with soxr (HQ, linear phase, no added delay).

    Args:
        x: ``[C, T]`` array at ``in_rate`` Hz.
        in_rate: input rate in Hz.
        out_rate: output rate in Hz.

    Returns:
        ``[C, T']`` float64 array at ``out_rate`` Hz, ``T' = round(T * out_rate / in_rate)``.
    """
    if in_rate == out_rate:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T), in_rate, out_rate, quality="HQ")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    return np.ascontiguousarray(y.T)


# --------------------------------------------------------------------------------------
# SI-SNR

#: Lower bound on the noise energy relative to the target energy: caps SI-SNR at +150 dB.
_SI_SNR_FLOOR = 1e-15


def si_snr(est: ArrayLike, ref: ArrayLike) -> float:
    """Scale-invariant signal-to-noise ratio in dB (higher is better).

    Both signals are made zero-mean per channel; the estimate is projected on the
    reference, ``s = <est, ref> / ||ref||^2 * ref``, ``e = est - s``, and
    ``SI-SNR = 10 log10(||s||^2 / ||e||^2)``. Multi-channel: mean of the per-channel dB
    values. Identical signals give the cap, +150 dB.

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``.
        ref: reference signal, same shape.

    Returns:
        SI-SNR in dB.

    Raises:
        MetricError: shape mismatch; SilentSignalError if a reference channel is all zeros
            (constant).
    """
    e, r = _pair(est, ref)
    e = e - e.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=1, keepdims=True)
    out = []
    for ch in range(r.shape[0]):
        rr = float(np.dot(r[ch], r[ch]))
        if rr == 0.0:
            raise SilentSignalError(f"SI-SNR is undefined: reference channel {ch} is silent")
        s = (float(np.dot(e[ch], r[ch])) / rr) * r[ch]
        noise = e[ch] - s
        ss = float(np.dot(s, s))
        nn = float(np.dot(noise, noise))
        if ss == 0.0:
            out.append(10.0 * math.log10(_SI_SNR_FLOOR))  # estimate orthogonal to ref
            continue
        out.append(10.0 * math.log10(ss / max(nn, ss * _SI_SNR_FLOOR)))
    return float(np.mean(out))


# --------------------------------------------------------------------------------------
# spectrograms


#: The smallest window :func:`mel_distance` and :func:`stft_distance` take (hop ``n_fft // 4`` >= 1).
MIN_N_FFT = 4


def _check_n_fft(n_fft: int) -> int:
    """``n_fft`` as an int if it is a whole number >= :data:`MIN_N_FFT` (an int, a numpy or
    0-d torch integer, or a float without a fraction such as ``1024.0``), else a ``MetricError``."""
    value: int | None = None
    if not isinstance(n_fft, bool):
        try:
            value = operator.index(n_fft)
        except TypeError:
            if isinstance(n_fft, (float, np.floating)) and float(n_fft).is_integer():
                value = int(n_fft)
    if value is None or value < MIN_N_FFT:
        raise MetricError(f"window sizes (n_fft) must be whole numbers >= {MIN_N_FFT}, got {n_fft!r}")
    return value


def _check_n_ffts(n_ffts: Sequence[int]) -> list[int]:
    """The window sizes ``n_ffts``: at least one, each checked by :func:`_check_n_fft`."""
    if not n_ffts:
        raise MetricError("n_ffts must name at least one window size")
    return [_check_n_fft(n) for n in n_ffts]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=64)
def _mel_filterbank_cached(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                           f_max: float) -> np.ndarray:
    n_freqs = n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    mel_pts = np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    lower, center, upper = hz_pts[:-2, None], hz_pts[1:-1, None], hz_pts[2:, None]
    up = (fft_freqs[None, :] - lower) / (center - lower)
    down = (upper - fft_freqs[None, :]) / (upper - center)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (upper - lower))  # Slaney area normalisation: each triangle has unit area
    fb = fb[fb.sum(axis=1) > 0]  # drop filters that no FFT bin falls into
    fb.setflags(write=False)
    return fb


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 64, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """Triangular mel filterbank (HTK mel scale, Slaney area normalisation).

    ``n_mels + 2`` points equally spaced on the HTK mel scale ``m = 2595 log10(1 + f/700)``
    between ``f_min`` and ``f_max`` define ``n_mels`` overlapping triangles, evaluated at the
    ``n_fft // 2 + 1`` FFT bin frequencies and scaled by ``2 / (f_upper - f_lower)`` so every
    triangle has unit area. Filters so narrow that no FFT bin falls inside them (low
    frequencies at small ``n_fft``) are dropped, so the result may have fewer rows.

    Args:
        sample_rate: Hz.
        n_fft: FFT size.
        n_mels: number of triangles before dropping empty ones.
        f_min: lowest edge, Hz.
        f_max: highest edge, Hz (default: ``sample_rate / 2``).

    Returns:
        read-only float64 array ``[n_mels_kept, n_fft // 2 + 1]``.

    Raises:
        MetricError: ``n_fft`` below :data:`MIN_N_FFT` or not whole, ``n_mels`` below 1,
            or edges outside ``0 <= f_min < f_max <= sample_rate / 2``.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    _check_n_fft(n_fft)
    if isinstance(n_mels, bool) or not isinstance(n_mels, (int, np.integer)) or n_mels < 1:
        raise MetricError(f"n_mels must be a whole number >= 1, got {n_mels!r}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise MetricError(f"need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}")
    return _mel_filterbank_cached(int(sample_rate), int(n_fft), int(n_mels), float(f_min),
                                  float(f_max))


def _stft_mag(x: np.ndarray, n_fft: int) -> torch.Tensor:
    """|STFT| of ``[C, T]`` audio: Hann window ``n_fft``, hop ``n_fft // 4``, centred with
    reflect padding (zero padding when the clip is shorter than the window).

    Returns ``[C, n_fft // 2 + 1, frames]`` float64 magnitudes."""
    t = torch.from_numpy(x)
    pad_mode = "reflect" if x.shape[1] > n_fft // 2 else "constant"
    spec = torch.stft(t, n_fft=n_fft, hop_length=n_fft // 4, win_length=n_fft,
                      window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                      pad_mode=pad_mode, return_complex=True)
    return spec.abs()


def mel_distance(est: ArrayLike, ref: ArrayLike, sample_rate: int,
                 n_ffts: Sequence[int] = (512, 1024, 2048), n_mels: int = 64,
                 eps: float = 1e-5) -> float:
    """Multi-scale log-mel L1 distance (lower is better; 0 for identical signals).

    For each window size ``n`` in ``n_ffts``: magnitude STFT (Hann, hop ``n // 4``,
    centred), projected on :func:`mel_filterbank` ``(sample_rate, n, n_mels)`` (0 Hz to
    Nyquist), ``L = ln(mel + eps)``; the distance at that scale is the mean of
    ``|L_est - L_ref|`` over channels, mel bands and frames. The result is the mean over
    scales, in nepers (natural-log units of magnitude; 1.0 ≈ 8.7 dB).

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``.
        ref: reference, same shape.
        sample_rate: Hz (shared by both).
        n_ffts: window sizes, samples.
        n_mels: mel bands per scale (empty bands dropped, see :func:`mel_filterbank`).
        eps: floor added to mel magnitudes before the log (≈ -100 dBFS).

    Returns:
        mean absolute log-mel difference, nepers.
    """
    e, r = _pair(est, ref)
    sr = _check_rate(sample_rate)
    dists = []
    for n in _check_n_ffts(n_ffts):
        fb = torch.from_numpy(np.array(mel_filterbank(sr, n, n_mels)))
        me = torch.einsum("mf,cft->cmt", fb, _stft_mag(e, n))
        mr = torch.einsum("mf,cft->cmt", fb, _stft_mag(r, n))
        dists.append(float((torch.log(me + eps) - torch.log(mr + eps)).abs().mean()))
    return float(np.mean(dists))


def stft_distance(est: ArrayLike, ref: ArrayLike,
                  n_ffts: Sequence[int] = (512, 1024, 2048), eps: float = 1e-7) -> float:
    """Multi-resolution STFT distance (lower is better; 0 for identical signals).

    For each window size ``n`` (Hann, hop ``n // 4``, centred), with magnitudes ``E``
    (estimate) and ``R`` (reference), all channels pooled:

    * spectral convergence ``SC = ||R - E||_F / ||R||_F`` (dimensionless),
    * log-magnitude distance ``LM = mean |ln(E + eps) - ln(R + eps)|`` (nepers).

    Returns the mean over resolutions of ``SC + LM`` (as in the Parallel WaveGAN
    multi-resolution STFT loss). Sample-rate independent, so no rate argument.

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``.
        ref: reference, same shape.
        n_ffts: window sizes, samples.
        eps: magnitude floor before the log.

    Returns:
        mean over resolutions of (spectral convergence + log-magnitude L1).

    Raises:
        MetricError: shape mismatch, no window size or one below :data:`MIN_N_FFT`;
            SilentSignalError if the reference is all zeros.
    """
    e, r = _pair(est, ref)
    sizes = _check_n_ffts(n_ffts)
    if not np.any(r):
        raise SilentSignalError("stft_distance is undefined: the reference is silent")
    out = []
    for n in sizes:
        me, mr = _stft_mag(e, n), _stft_mag(r, n)
        sc = float(torch.linalg.vector_norm(mr - me) / torch.linalg.vector_norm(mr))
        lm = float((torch.log(me + eps) - torch.log(mr + eps)).abs().mean())
        out.append(sc + lm)
    return float(np.mean(out))


# --------------------------------------------------------------------------------------
# PESQ / STOI

#: PESQ needs at least this many seconds (the P.862 implementation rejects shorter clips).
PESQ_MIN_SECONDS = 0.25

#: The lowest sample rate (Hz) :func:`pesq_wb` scores: P.862.2 is the wide-band (16 kHz) mode;
#: audio at a lower rate is narrow-band whatever it is resampled to.
PESQ_WB_MIN_RATE = 16000


def pesq_wb(est: ArrayLike, ref: ArrayLike, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2) MOS-LQO, higher is better (~1.0 to 4.64).

    Both signals are resampled to 16 kHz with soxr (HQ), then scored with the ``pesq``
    package (mode ``"wb"``). Multi-channel: mean of the per-channel scores.

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``.
        ref: reference, same shape.
        sample_rate: Hz.

    Returns:
        PESQ-WB MOS-LQO.

    Raises:
        MetricError: ``sample_rate`` below 16 kHz (:data:`PESQ_WB_MIN_RATE`): such audio is
            narrow-band, and its wide-band score would not be comparable.
        ClipTooShortError: clip shorter than 0.25 s.
        SilentSignalError: the reference (or the estimate) contains no utterance PESQ can
            detect (e.g. digital silence): PESQ is undefined there, no score is returned.
        MetricError: shape mismatch or any other PESQ failure.
        ImportError: ``pesq`` is not installed.
    """
    try:
        from pesq import NoUtterancesError, PesqError, pesq as _pesq
    except ImportError as exc:  # pragma: no cover - dependency message
        raise ImportError("pesq_wb needs the 'pesq' package: pip install pesq==0.0.4") from exc
    e, r = _pair(est, ref)
    sr = _check_rate(sample_rate)
    if sr < PESQ_WB_MIN_RATE:
        raise MetricError(
            f"PESQ-WB (ITU-T P.862.2) scores wide-band audio; at {sr} Hz the signals hold only "
            f"0-{sr / 2:g} Hz, so a score would not be a wide-band one (score at "
            f"{PESQ_WB_MIN_RATE} Hz or above)")
    if r.shape[1] < PESQ_MIN_SECONDS * sr:
        raise ClipTooShortError(
            f"PESQ needs at least {PESQ_MIN_SECONDS} s; got {r.shape[1] / sr:.3f} s")
    e16, r16 = resample(e, sr, 16000), resample(r, sr, 16000)
    scores = []
    for ch in range(r16.shape[0]):
        if not np.any(r16[ch]) or not np.any(e16[ch]):
            which = "reference" if not np.any(r16[ch]) else "decoded audio"
            raise SilentSignalError(f"PESQ is undefined: channel {ch} of the {which} is silent")
        try:
            scores.append(float(_pesq(16000, r16[ch], e16[ch], "wb")))
        except NoUtterancesError as exc:
            raise SilentSignalError(
                f"PESQ found no utterances in channel {ch} (silent or too quiet): {exc}"
            ) from exc
        except PesqError as exc:
            raise MetricError(f"PESQ failed on channel {ch}: {exc}") from exc
    return float(np.mean(scores))


#: pystoi's rate (Hz) and the samples at that rate a clip must exceed to give its 30 frames
#: of 256 with hop 128 (31 frames before its silence removal): a clip of at most 4096 samples
#: at 10 kHz (0.4096 s) is too short whatever it holds (pystoi fails on one of under a frame).
_STOI_RATE, _STOI_MIN_SAMPLES = 10000, 4096


def _stoi_too_short(channel: int, seconds: float) -> ClipTooShortError:
    """The error of :func:`stoi` for a clip of ``seconds`` too short in ``channel``."""
    return ClipTooShortError(
        f"STOI needs about 0.4 s of non-silent audio (30 frames of 25.6 ms after silence "
        f"removal); channel {channel} of this {seconds:.3f} s clip has less")


def stoi(est: ArrayLike, ref: ArrayLike, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (Taal et al. 2011), 0..1, higher is better.

    Computed with ``pystoi`` (which resamples to 10 kHz internally and drops frames more
    than 40 dB below the loudest). Multi-channel: mean of the per-channel scores.

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``.
        ref: reference, same shape.
        sample_rate: Hz.
        extended: use extended STOI (Jensen & Taal 2016) instead.

    Returns:
        STOI (or ESTOI) in [0, 1] (ESTOI can be slightly negative).

    Raises:
        ClipTooShortError: fewer than 30 non-silent 25.6 ms frames remain (≈ 0.4 s of
            non-silent audio needed); pystoi would silently return 1e-5 there.
        SilentSignalError: the reference is silent.
        ImportError: ``pystoi`` is not installed.
    """
    try:
        from pystoi import stoi as _stoi
    except ImportError as exc:  # pragma: no cover - dependency message
        raise ImportError("stoi needs the 'pystoi' package: pip install pystoi==0.4.1") from exc
    e, r = _pair(est, ref)
    sr = _check_rate(sample_rate)
    too_short = r.shape[1] * _STOI_RATE <= _STOI_MIN_SAMPLES * sr
    scores = []
    for ch in range(r.shape[0]):
        if not np.any(r[ch]):
            raise SilentSignalError(f"STOI is undefined: reference channel {ch} is silent")
        if too_short:  # pystoi would warn, or fail deep inside on a clip under one frame
            raise _stoi_too_short(ch, r.shape[1] / sr)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            val = float(_stoi(r[ch], e[ch], sr, extended=extended))
        if any("Not enough STFT frames" in str(w.message) for w in caught):
            raise _stoi_too_short(ch, r.shape[1] / sr)
        scores.append(val)
    return float(np.mean(scores))
