"""ViSQOL v3 MOS-LQO via the native scorer of ``audio-samples-qoe`` (a Rust reimplementation).

Implementation used: **audio-samples-qoe 0.1.2** (PyPI), a Rust port of Google's ViSQOL v3
(audio mode: 32 gammatone bands, SVR mapping, 48 kHz; speech mode: 21 bands up to 8 kHz,
voice-activity-gated patches, exponential NSIM->MOS fit, 16 kHz). It is *not* Google's C++
ViSQOL: scores are close in spirit but reports must name this implementation.

The package's Python wrapper imports ``audio-samples`` (no wheel on this platform), so it is
installed with ``pip install --no-deps audio-samples-qoe==0.1.2`` and its compiled module
``audio_samples_qoe/_native.abi3.so`` is loaded directly with
``importlib.util.spec_from_file_location`` (never importing the package ``__init__``). The
scorer is ``_score(reference: float64[T] | float64[C, T], reference_rate: int,
degraded: ..., degraded_rate: int, mode: "audio" | "speech") -> float``; it raises
``VisqolError`` when a clip is too short to yield one analysis patch.

Measured on this scorer: identical signals score 4.732 (audio mode) and 5.0 (speech mode);
the minimum clip is 47,040 samples at 48 kHz (0.98 s) in audio mode and 10,240 samples at
16 kHz (0.64 s) in speech mode; ~0.25 s of compute per second of audio in audio mode.

Silence (measured): on a silent reference the scorer finds nothing to compare and returns
its *maximum* (5.0 speech / 4.732 audio) whatever the degraded signal, and so it does on
a reference of -80 dBFS noise. :func:`visqol` therefore refuses (``SilentSignalError``,
as SI-SNR, PESQ and STOI do) a reference any of whose channels has an RMS level below
:data:`VISQOL_SILENCE_DBFS` (-60 dBFS, relative to full scale 1.0); the quietest item of
``data/eval_24000`` (mono downmix) is at -36 dBFS, far above it.

Level (measured): like Google's C++ ViSQOL, which floors the gammatone band levels at an
absolute -45 dB relative to full scale (``MiscAudio::PrepareSpectrogramsForComparison``), the
score depends on the level: white noise at 10 dB SNR scores 2.70 (speech mode) on a reference
at -20 dBFS RMS, 2.57 at -35, 2.25 at -50 and 3.32 at -59 dBFS, and at 30 dB SNR 4.67 at -20
against 4.99 at -59. A reference between -60 and about -45 dBFS is scored, its score drifting
toward the maximum.

Caveat (measured): in audio mode a reference with *empty* high-frequency bands (e.g. a pure
sum of a few sinusoids) scores white-noise degradations non-monotonically; use realistic,
broadband references (speech, music, or synthetic signals with a noise floor).
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np

from .metrics import (ArrayLike, ClipTooShortError, MetricError, SilentSignalError, _check_rate,
                      _pair, resample)

__all__ = ["visqol", "VISQOL_IMPLEMENTATION", "VISQOL_RATES", "VISQOL_MIN_SAMPLES",
           "VISQOL_SILENCE_DBFS", "visqol_min_seconds", "load_native_scorer", "check_not_silent"]

#: Which ViSQOL produced the scores (put this in reports).
VISQOL_IMPLEMENTATION = "audio-samples-qoe 0.1.2 (Rust ViSQOL v3 reimplementation, native _score)"

#: Scoring rate (Hz) per mode; inputs are resampled to it with soxr HQ before scoring.
VISQOL_RATES: dict[str, int] = {"audio": 48000, "speech": 16000}

#: Shortest clip (samples at ``VISQOL_RATES[mode]``) the native scorer accepts (measured).
VISQOL_MIN_SAMPLES: dict[str, int] = {"audio": 47040, "speech": 10240}

#: A reference channel whose RMS level (dB relative to full scale 1.0) is below this is
#: "effectively silent": ViSQOL is undefined on it (the scorer would give its maximum).
VISQOL_SILENCE_DBFS = -60.0

_NATIVE: ModuleType | None = None


def load_native_scorer() -> ModuleType:
    """Load ``audio_samples_qoe/_native.abi3.so`` without importing the package wrapper.

    Returns:
        the extension module (attributes ``_score``, ``VisqolError``, ``__version__``).

    Raises:
        ImportError: the package is not installed (with the install command).
    """
    global _NATIVE
    if _NATIVE is not None:
        return _NATIVE
    candidates: list[Path] = []
    spec = importlib.util.find_spec("audio_samples_qoe")  # locates only; runs no package code
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[key]) / "audio_samples_qoe")
    for entry in sys.path:
        if entry:
            candidates.append(Path(entry) / "audio_samples_qoe")
    for folder in candidates:
        so_files = sorted(folder.glob("_native*.so")) + sorted(folder.glob("_native*.pyd"))
        if so_files:
            spec = importlib.util.spec_from_file_location("audio_samples_qoe._native",
                                                          so_files[0])
            if spec is None or spec.loader is None:  # pragma: no cover
                continue
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _NATIVE = module
            return module
    raise ImportError(
        "ViSQOL needs the native scorer of audio-samples-qoe: "
        "pip install --no-deps audio-samples-qoe==0.1.2")


def check_not_silent(ref: np.ndarray) -> None:
    """Raise :class:`SilentSignalError` when a channel of ``ref`` (``[C, T]``, full scale
    1.0) has an RMS level below :data:`VISQOL_SILENCE_DBFS`."""
    rms = np.sqrt(np.mean(np.square(ref, dtype=np.float64), axis=-1))
    for ch, level in enumerate(rms):
        dbfs = 20.0 * np.log10(level) if level > 0 else -np.inf
        if dbfs < VISQOL_SILENCE_DBFS:
            raise SilentSignalError(
                f"ViSQOL is undefined: reference channel {ch} is silent or nearly so "
                f"({dbfs:.1f} dBFS RMS, below {VISQOL_SILENCE_DBFS:g} dBFS)")


def visqol_min_seconds(mode: Literal["audio", "speech"] = "audio") -> float:
    """Shortest clip, in seconds, that :func:`visqol` accepts in ``mode``."""
    if mode not in VISQOL_RATES:
        raise MetricError(f"mode must be 'audio' or 'speech', got {mode!r}")
    return VISQOL_MIN_SAMPLES[mode] / VISQOL_RATES[mode]


def visqol(est: ArrayLike, ref: ArrayLike, sample_rate: int,
           mode: Literal["audio", "speech"] = "audio",
           channels: Literal["mean", "downmix"] = "mean") -> float:
    """ViSQOL v3 MOS-LQO of ``est`` against ``ref`` (higher is better, 1..5).

    Both signals are resampled with soxr (HQ) to 48 kHz (``mode="audio"``) or 16 kHz
    (``mode="speech"``), converted to float64 and scored by the native ``_score`` of
    audio-samples-qoe 0.1.2 (see the module docstring: a Rust ViSQOL v3, not Google's C++).
    Identical signals score ~4.73 (audio) / 5.0 (speech).

    Stereo / multi-channel: ``channels="mean"`` (default) scores every channel separately
    and returns the mean; ``channels="downmix"`` averages the channels to mono first (what
    the native scorer would do on its own).

    Args:
        est: decoded signal ``[T]`` or ``[C, T]``, float, full scale 1.0.
        ref: reference, same shape.
        sample_rate: Hz of both signals.
        mode: ``"audio"`` (full band, 48 kHz, the EnCodec paper's music/general setting) or
            ``"speech"`` (16 kHz).
        channels: ``"mean"`` or ``"downmix"``, see above.

    Returns:
        MOS-LQO.

    Raises:
        ClipTooShortError: the clip is shorter than the scorer's minimum (0.98 s in audio
            mode, 0.64 s in speech mode).
        SilentSignalError: a reference channel is below :data:`VISQOL_SILENCE_DBFS`
            (the scorer would give its maximum score whatever ``est`` is).
        MetricError: shape mismatch, bad mode/channels, or any other scorer failure.
        ImportError: audio-samples-qoe is not installed.
    """
    if mode not in VISQOL_RATES:
        raise MetricError(f"mode must be 'audio' or 'speech', got {mode!r}")
    if channels not in ("mean", "downmix"):
        raise MetricError(f"channels must be 'mean' or 'downmix', got {channels!r}")
    e, r = _pair(est, ref)
    sr = _check_rate(sample_rate)
    rate = VISQOL_RATES[mode]
    min_s = visqol_min_seconds(mode)
    if r.shape[1] * rate < VISQOL_MIN_SAMPLES[mode] * sr:
        raise ClipTooShortError(
            f"ViSQOL {mode} mode needs clips of at least {min_s:.2f} s "
            f"({VISQOL_MIN_SAMPLES[mode]} samples at {rate} Hz); got {r.shape[1] / sr:.3f} s")
    native = load_native_scorer()
    if channels == "downmix":
        e, r = e.mean(axis=0, keepdims=True), r.mean(axis=0, keepdims=True)
    check_not_silent(r)
    e, r = resample(e, sr, rate), resample(r, sr, rate)
    scores = []
    for ch in range(r.shape[0]):
        try:
            scores.append(float(native._score(np.ascontiguousarray(r[ch]), rate,
                                              np.ascontiguousarray(e[ch]), rate, mode)))
        except native.VisqolError as exc:
            msg = str(exc)
            if "too short" in msg:
                raise ClipTooShortError(
                    f"ViSQOL {mode} mode: clip too short ({r.shape[1] / rate:.3f} s; "
                    f"minimum {min_s:.2f} s): {msg}") from exc
            raise MetricError(f"ViSQOL failed on channel {ch}: {msg}") from exc
    return float(np.mean(scores))
