"""Classic-codec baselines (Opus, MP3) with sample-accurate round trips, and a common
``Codec`` interface so the evaluation harness treats them and neural models alike.

Both codecs run in memory through PyAV (``av``; its wheels bundle FFmpeg with libopus and
LAME). Waveforms are float32 ``[C, T]`` (C = 1 or 2), full scale 1.0.

**Opus** (libopus, VBR as libopus defaults, 20 ms frames, application "audio"): libopus runs
at 48 kHz; the input is resampled to 48 kHz with soxr HQ (linear phase, no added delay),
encoded, muxed to an in-memory Ogg stream, demuxed and decoded by FFmpeg's Opus decoder,
and resampled back to the input rate with soxr. The encoder delay (Ogg ``pre-skip``, 312
samples at 48 kHz) is removed by FFmpeg from the header and the final granule position trims
the end padding, so the output has exactly the input's length. Measured residual: when
libopus codes *narrowband SILK* (every packet's TOC says SILK/NB, which libopus chooses at
<= 8 kbps mono), the decoded signal lags by another 6 samples at 48 kHz (0.125 ms; its SILK
8 kHz resampler delays are not fully covered by the pre-skip); this constant is compensated
(:data:`OPUS_SILK_NB_EXTRA_DELAY_48K`). Mono SILK-WB, hybrid and CELT modes align at lag 0.
Known residual, *not* compensated: **stereo in hybrid mode** (libopus picks it at about
16-40 kbit/s stereo) has its SILK band (< 8 kHz) 3-4 samples at 48 kHz *early* while the
CELT band (> 8 kHz) is aligned, so no single shift is right; at 24 kbit/s stereo the
broadband cross-correlation peak is at -4 samples (48 kHz) / about -2 (24 kHz). Stereo at
6 and 12 kbit/s (SILK only) and all mono rates align at lag 0.

**MP3** (LAME, CBR): encoded at the input rate when MPEG audio supports it (8-48 kHz rates),
otherwise at 48 kHz via soxr. The in-memory MP3 file carries a Xing/LAME header with the
encoder delay and padding, which FFmpeg's demuxer applies (gapless decoding: the 529-sample
decoder delay + LAME's 576-sample encoder delay at the start and the padding at the end are
removed), giving exactly the input's length at lag 0.

Actual bitrate = 8 * bytes / input duration. ``payload_kbps`` counts codec packets only
(what :func:`opus_roundtrip` / :func:`mp3_roundtrip` return as ``actual_kbps``);
``container_kbps`` counts the whole Ogg / MP3 file (page headers, OpusHead/OpusTags, the
Xing/LAME frame, ID3 tag).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable, Protocol, Union, runtime_checkable

import numpy as np
import soxr
import torch

from ..errors import OpenCodecError

__all__ = [
    "BaselineError", "Codec", "RoundtripResult", "OpusCodec", "MP3Codec", "FunctionCodec",
    "opus_roundtrip", "mp3_roundtrip", "opus_roundtrip_result", "mp3_roundtrip_result",
    "paper_baselines", "OPUS_SILK_NB_EXTRA_DELAY_48K", "MP3_RATES", "BITRATE_RANGES",
    "check_bitrate", "MP3_BITRATES", "OPUS_MAX_KBPS_PER_CHANNEL", "mp3_coding_rate",
    "mp3_bitrates", "check_bitrate_for",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Extra lag (samples at 48 kHz) of libopus' narrowband SILK output beyond the pre-skip,
#: measured with libopus 1.6 (FFmpeg in PyAV 18.1) and compensated by the Opus round trip.
OPUS_SILK_NB_EXTRA_DELAY_48K = 6

#: Sample rates LAME / MPEG-1, 2, 2.5 layer III support (Hz).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

_OPUS_RATE = 48000

#: The bitrates (kbit/s, inclusive) each baseline's encoder takes: libopus 6..510, LAME 8..320.
BITRATE_RANGES = {"opus": (6.0, 510.0), "mp3": (8.0, 320.0)}
_CODEC_LABELS = {"opus": "Opus", "mp3": "MP3"}

#: LAME's CBR bitrates (kbit/s) per MPEG version, keyed by that version's sample rates (Hz):
#: MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz), MPEG-2.5 (8-12 kHz). FFmpeg hands LAME any
#: bitrate, and LAME silently codes the nearest one of its version (measured: 320 kbit/s at
#: 24 kHz codes 160, 100 codes 96, 80 at 8 kHz codes 64), so others are refused.
MP3_BITRATES: dict[tuple[int, ...], tuple[int, ...]] = {
    (32000, 44100, 48000): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (16000, 22050, 24000): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (8000, 11025, 12000): (8, 16, 24, 32, 40, 48, 56, 64),
}

#: The most libopus takes per channel (kbit/s): 256 mono, 510 stereo (measured: mono 257 fails
#: in ``avcodec_open2``).
OPUS_MAX_KBPS_PER_CHANNEL = 256.0


class BaselineError(OpenCodecError, ValueError):
    """A baseline codec cannot process this input (shape, rate, bitrate)."""


@dataclass(frozen=True)
class RoundtripResult:
    """Result of one encode/decode round trip.

    Attributes:
        wav: decoded float32 ``[C, T]`` at the input rate, aligned with and as long as the
            input.
        payload_kbps: 8 * codec packet bytes / input duration / 1000 (kbit/s).
        container_kbps: 8 * whole file bytes (Ogg / MP3 incl. headers) / duration / 1000.
        codec_rate: rate (Hz) the codec itself ran at.
        delay_trimmed: samples (at ``codec_rate``) removed from the start of the decoded
            stream (pre-skip / encoder+decoder delay, plus any measured residual).
    """

    wav: np.ndarray
    payload_kbps: float
    container_kbps: float
    codec_rate: int
    delay_trimmed: int


@runtime_checkable
class Codec(Protocol):
    """Anything the evaluation harness can run: a name, a nominal bitrate, a round trip.

    ``roundtrip(wav, sample_rate)`` takes float32 ``[C, T]`` audio at ``sample_rate`` Hz and
    returns ``(decoded [C, T] float32 at the same rate and length, actual_kbps)``.
    """

    name: str
    nominal_kbps: float

    def roundtrip(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        """Encode and decode ``wav`` ``[C, T]``; return ``(decoded [C, T], actual kbit/s)``."""
        ...


# --------------------------------------------------------------------------------------
# helpers


def _to_wav(wav: ArrayLike) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        arr = wav.detach().to("cpu", torch.float32).numpy()
    else:
        arr = np.asarray(wav, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise BaselineError(f"wav must be shaped [C, T], got {tuple(arr.shape)}")
    if arr.shape[0] not in (1, 2):
        raise BaselineError(f"baselines support 1 or 2 channels, got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise BaselineError("wav is empty")
    if not np.all(np.isfinite(arr)):
        raise BaselineError("wav contains NaN or infinite samples")
    return np.ascontiguousarray(arr)


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or sample_rate <= 0:
        raise BaselineError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """soxr HQ resampling of float32 ``[C, T]``."""
    if in_rate == out_rate:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T), in_rate, out_rate, quality="HQ")
    if y.ndim == 1:
        y = y[:, None]
    return np.ascontiguousarray(y.T, dtype=np.float32)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``[C, T]`` at the end to ``length`` samples."""
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def check_bitrate(codec: str, bitrate_kbps: float) -> None:
    """Raise :class:`BaselineError` unless ``codec``'s encoder (``"opus"`` or ``"mp3"``) takes
    ``bitrate_kbps`` (:data:`BITRATE_RANGES`); the one check of the round trips and of
    :func:`opencodec.eval.systems.parse_baseline`."""
    low, high = BITRATE_RANGES[codec]
    if not low <= bitrate_kbps <= high:
        raise BaselineError(f"{_CODEC_LABELS[codec]} bitrate must be {low:g}..{high:g} kbit/s, "
                            f"got {bitrate_kbps}")


def mp3_coding_rate(sample_rate: int) -> int:
    """The rate (Hz) LAME codes ``sample_rate`` audio at: itself when MPEG audio has it
    (:data:`MP3_RATES`), else 48000 (resampled with soxr)."""
    return int(sample_rate) if sample_rate in MP3_RATES else 48000


def mp3_bitrates(sample_rate: int) -> tuple[int, ...]:
    """LAME's CBR bitrates (kbit/s) for audio at ``sample_rate`` Hz (:data:`MP3_BITRATES`
    of its coding rate's MPEG version)."""
    rate = mp3_coding_rate(sample_rate)
    return next(rates for versions, rates in MP3_BITRATES.items() if rate in versions)


def check_bitrate_for(codec: str, bitrate_kbps: float, sample_rate: int, channels: int) -> None:
    """Raise :class:`BaselineError`, naming the allowed values, unless ``codec``'s encoder
    codes ``bitrate_kbps`` itself at ``sample_rate`` Hz with ``channels`` channels: Opus at
    most :data:`OPUS_MAX_KBPS_PER_CHANNEL` per channel, MP3 one of :func:`mp3_bitrates`.
    (:func:`check_bitrate` is the rate-independent range.)"""
    check_bitrate(codec, bitrate_kbps)
    if codec == "opus":
        high = min(BITRATE_RANGES["opus"][1], OPUS_MAX_KBPS_PER_CHANNEL * channels)
        if bitrate_kbps > high:
            raise BaselineError(f"Opus bitrate must be {BITRATE_RANGES['opus'][0]:g}..{high:g} "
                                f"kbit/s for {channels} channel(s), got {bitrate_kbps:g}")
    else:
        allowed = mp3_bitrates(sample_rate)
        if bitrate_kbps not in allowed:
            raise BaselineError(f"MP3 bitrate {bitrate_kbps:g} kbit/s is not one LAME codes at "
                                f"{mp3_coding_rate(sample_rate)} Hz; choose one of "
                                f"{', '.join(map(str, allowed))}")


def _import_av():  # type: ignore[no-untyped-def]
    try:
        import av
    except ImportError as exc:  # pragma: no cover - dependency message
        raise ImportError("the Opus/MP3 baselines need PyAV: pip install av") from exc
    return av


def _encode(x: np.ndarray, rate: int, codec: str, container: str, sample_fmt: str,
            bitrate: int, options: dict[str, str]) -> tuple[bytes, list[bytes]]:
    """Encode float32 ``[C, T]`` to an in-memory file; return (file bytes, packet payloads)."""
    av = _import_av()
    layout = "mono" if x.shape[0] == 1 else "stereo"
    buf = io.BytesIO()
    packets: list[bytes] = []
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        stream.bit_rate = bitrate
        stream.format = sample_fmt
        planar = sample_fmt.endswith("p")
        arr = x if planar else x.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=sample_fmt,
                                           layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            packets.append(bytes(packet))
            out.mux(packet)
    return buf.getvalue(), packets


def _decode(data: bytes, channels: int) -> tuple[np.ndarray, int]:
    """Decode an in-memory file to float32 ``[C, T]``; FFmpeg applies the stream's delay /
    padding side data (Ogg pre-skip and end granule, LAME gapless tag)."""
    av = _import_av()
    chunks = []
    with av.open(io.BytesIO(data), "r") as inp:
        stream = inp.streams.audio[0]
        rate = int(stream.rate)
        for frame in inp.decode(stream):
            a = frame.to_ndarray()
            if not frame.format.is_planar:
                a = a.reshape(-1, frame.layout.nb_channels).T
            chunks.append(a.astype(np.float32, copy=False))
    if not chunks:
        raise BaselineError("the decoder produced no audio")
    y = np.concatenate(chunks, axis=1)
    if y.shape[0] != channels:
        raise BaselineError(f"decoder returned {y.shape[0]} channels, expected {channels}")
    return y, rate


def _opus_bandwidths(packets: list[bytes]) -> set[str]:
    """Mode/bandwidth of each Opus packet from its TOC byte (RFC 6716 section 3.1)."""
    out = set()
    for p in packets:
        if not p:
            continue
        config = p[0] >> 3
        if config < 12:
            out.add("SILK-" + ("NB", "MB", "WB")[config // 4])
        elif config < 16:
            out.add("HYBRID-" + ("SWB", "FB")[(config - 12) // 2])
        else:
            out.add("CELT-" + ("NB", "WB", "SWB", "FB")[(config - 16) // 4])
    return out


# --------------------------------------------------------------------------------------
# Opus


def opus_roundtrip_result(wav: ArrayLike, sample_rate: int, bitrate_kbps: float
                          ) -> RoundtripResult:
    """Opus round trip with full details; see :func:`opus_roundtrip` and the module notes.

    Args:
        wav: float32 ``[C, T]`` (C = 1 or 2; ``[T]`` is taken as mono), full scale 1.0.
        sample_rate: Hz.
        bitrate_kbps: libopus target bitrate, kbit/s (6 to 256 per channel: 256 mono, 510
            stereo).

    Returns:
        :class:`RoundtripResult` (``codec_rate`` 48000).
    """
    x = _to_wav(wav)
    sr = _check_rate(sample_rate)
    check_bitrate_for("opus", bitrate_kbps, sr, x.shape[0])
    length, duration = x.shape[1], x.shape[1] / sr
    x48 = _resample(x, sr, _OPUS_RATE)
    data, packets = _encode(x48, _OPUS_RATE, "libopus", "ogg", "flt",
                            int(round(bitrate_kbps * 1000)), {"application": "audio"})
    y48, rate = _decode(data, x.shape[0])
    if rate != _OPUS_RATE:  # pragma: no cover - FFmpeg's Opus decoder always outputs 48 kHz
        y48 = _resample(y48, rate, _OPUS_RATE)
    extra = OPUS_SILK_NB_EXTRA_DELAY_48K if _opus_bandwidths(packets) == {"SILK-NB"} else 0
    y48 = _fit_length(y48[:, extra:], x48.shape[1])
    y = _fit_length(_resample(y48, _OPUS_RATE, sr), length)
    return RoundtripResult(
        wav=np.ascontiguousarray(y, dtype=np.float32),
        payload_kbps=8 * sum(len(p) for p in packets) / duration / 1000,
        container_kbps=8 * len(data) / duration / 1000,
        codec_rate=_OPUS_RATE, delay_trimmed=312 + extra)


def opus_roundtrip(wav: ArrayLike, sample_rate: int, bitrate_kbps: float
                   ) -> tuple[np.ndarray, float]:
    """Encode and decode with Opus (libopus via PyAV), aligned sample-accurately.

    Args:
        wav: float32 ``[C, T]`` (C = 1 or 2), full scale 1.0.
        sample_rate: Hz (any; resampled to/from libopus' 48 kHz with soxr HQ).
        bitrate_kbps: target bitrate, kbit/s (the paper's baselines: 6, 12; also 24).

    Returns:
        ``(decoded float32 [C, T] at sample_rate, actual payload kbit/s)``. Payload = Opus
        packets only, excluding Ogg overhead (see :func:`opus_roundtrip_result` for both).
    """
    r = opus_roundtrip_result(wav, sample_rate, bitrate_kbps)
    return r.wav, r.payload_kbps


# --------------------------------------------------------------------------------------
# MP3


def mp3_roundtrip_result(wav: ArrayLike, sample_rate: int, bitrate_kbps: float
                         ) -> RoundtripResult:
    """MP3 round trip with full details; see :func:`mp3_roundtrip` and the module notes.

    Args:
        wav: float32 ``[C, T]`` (C = 1 or 2), full scale 1.0.
        sample_rate: Hz; encoded at this rate if in :data:`MP3_RATES`, else at 48 kHz.
        bitrate_kbps: LAME CBR bitrate, kbit/s: one of :func:`mp3_bitrates` for the rate
            (else :class:`BaselineError` naming them).

    Returns:
        :class:`RoundtripResult`.
    """
    x = _to_wav(wav)
    sr = _check_rate(sample_rate)
    check_bitrate_for("mp3", bitrate_kbps, sr, x.shape[0])
    length, duration = x.shape[1], x.shape[1] / sr
    rate = mp3_coding_rate(sr)
    xc = _resample(x, sr, rate)
    try:
        data, packets = _encode(xc, rate, "libmp3lame", "mp3", "fltp",
                                int(round(bitrate_kbps * 1000)), {})
    except Exception as exc:  # av.error.FFmpegError subclasses; invalid rate/bitrate combos
        raise BaselineError(f"LAME rejected {bitrate_kbps} kbit/s at {rate} Hz: {exc}") from exc
    yc, dec_rate = _decode(data, x.shape[0])
    if dec_rate != rate:  # pragma: no cover
        yc = _resample(yc, dec_rate, rate)
    yc = _fit_length(yc, xc.shape[1])
    y = _fit_length(_resample(yc, rate, sr), length)
    return RoundtripResult(
        wav=np.ascontiguousarray(y, dtype=np.float32),
        payload_kbps=8 * sum(len(p) for p in packets) / duration / 1000,
        container_kbps=8 * len(data) / duration / 1000,
        codec_rate=rate, delay_trimmed=576 + 529)


def mp3_roundtrip(wav: ArrayLike, sample_rate: int, bitrate_kbps: float = 64.0
                  ) -> tuple[np.ndarray, float]:
    """Encode and decode with MP3 (LAME via PyAV, CBR), gapless and sample-aligned.

    Args:
        wav: float32 ``[C, T]`` (C = 1 or 2), full scale 1.0.
        sample_rate: Hz.
        bitrate_kbps: CBR bitrate, kbit/s (paper baseline: 64, stereo).

    Returns:
        ``(decoded float32 [C, T] at sample_rate, actual payload kbit/s)`` (MP3 frames
        only; the Xing/LAME info frame and ID3 tag are excluded).
    """
    r = mp3_roundtrip_result(wav, sample_rate, bitrate_kbps)
    return r.wav, r.payload_kbps


# --------------------------------------------------------------------------------------
# Codec objects


@dataclass(frozen=True)
class OpusCodec:
    """Opus baseline as a :class:`Codec` (``name`` like ``"opus-12kbps"``)."""

    nominal_kbps: float
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"opus-{self.nominal_kbps:g}kbps")

    def roundtrip(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        """See :func:`opus_roundtrip`."""
        return opus_roundtrip(wav, sample_rate, self.nominal_kbps)


@dataclass(frozen=True)
class MP3Codec:
    """MP3 baseline as a :class:`Codec` (``name`` like ``"mp3-64kbps"``)."""

    nominal_kbps: float = 64.0
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"mp3-{self.nominal_kbps:g}kbps")

    def roundtrip(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        """See :func:`mp3_roundtrip`."""
        return mp3_roundtrip(wav, sample_rate, self.nominal_kbps)


@dataclass(frozen=True)
class FunctionCodec:
    """Wrap any ``fn(wav [C, T], sample_rate) -> (decoded [C, T], actual_kbps)`` (e.g. an
    EnCodec model at one bandwidth) as a :class:`Codec`."""

    name: str
    nominal_kbps: float
    fn: Callable[[np.ndarray, int], tuple[np.ndarray, float]]

    def roundtrip(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        """Call the wrapped function."""
        return self.fn(wav, sample_rate)


def paper_baselines() -> list[Codec]:
    """The classic baselines used here: Opus 6, 12, 24 kbit/s and MP3 64 kbit/s."""
    return [OpusCodec(6), OpusCodec(12), OpusCodec(24), MP3Codec(64)]
