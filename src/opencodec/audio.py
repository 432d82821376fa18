"""Audio file I/O and format conversion (soundfile + soxr; no torchaudio).

Waveforms are float tensors ``[C, T]`` (channels, samples) with full scale = 1.0, the
convention of the models. ``read_audio`` decodes anything libsndfile reads (WAV, FLAC,
Ogg/Vorbis, Ogg/Opus, MP3, AIFF, ...); ``convert_audio`` changes the channel count and
sample rate; ``write_audio`` writes WAV (16/24-bit PCM or 32-bit float) or FLAC (16/24-bit)
atomically, clipping with a warning or rescaling to avoid clipping.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ._files import atomic_output, error_reason
from .argtypes import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
# header_declared_frames: re-exported (tests and callers import it from here)
from .audio_checks import check_not_ecdc, has_mpeg_audio, header_declared_frames, starts_like_mpeg
from .errors import AudioIOError, ChannelConversionError, OutputError  # ChannelConversionError: was defined here

#: File extensions (lower case) treated as audio when scanning folders.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"})

#: Output formats ``write_audio`` supports: extension -> (libsndfile format, bits -> subtype).
_WRITE_FORMATS: dict[str, tuple[str, dict[int, str]]] = {
    ".wav": ("WAV", {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}),
    ".flac": ("FLAC", {16: "PCM_16", 24: "PCM_24"}),
}

#: What a FLAC file holds (the format's limits, as libsndfile writes it): at most 8 channels,
#: sample rates up to 655350 Hz. WAV takes every count and rate ``--channels``/``--rate`` take.
FLAC_MAX_CHANNELS, FLAC_MAX_RATE = 8, 655_350

#: Peak that ``rescale=True`` scales a louder signal down to (the official tool's limit).
RESCALE_PEAK = 0.99

#: soxr quality recipe used for resampling ("HQ": 20-bit precision, ~ -130 dB aliasing).
RESAMPLE_QUALITY = "HQ"


def read_audio(path: str | Path, *, refuse_truncated: bool = False) -> tuple[torch.Tensor, int]:
    """Decode an audio file into a float32 tensor ``[C, T]`` and its sample rate (Hz).

    Any format libsndfile reads works (WAV, FLAC, Ogg/Vorbis, Ogg/Opus, MP3, ...), at any
    rate and channel count; integer PCM is scaled to [-1, 1) (divided by 2^(bits-1)).
    Raises ``AudioIOError`` naming the file and the reason when it is missing, not a
    file, an ``.ecdc`` file (:func:`check_not_ecdc`), not decodable (a ``.mp3`` holding no MPEG
    audio: :func:`check_mp3_content`), has a sample rate outside 1000-768000 Hz
    (:func:`check_file_rate`), has no samples, or holds NaN/infinite samples (or, in a DOUBLE
    file, samples beyond float32's range).

    A truncated file (fewer samples than its header declares: :func:`find_truncation`) gives
    the samples it holds with a ``UserWarning`` ("PATH: truncated: its header says N samples,
    the file holds M (the M there are used)"), or with ``refuse_truncated`` raises
    ``AudioIOError`` ("cannot read audio file PATH: truncated: its header says N samples, the
    file holds M"), as ``opencodec tokenize`` does.
    """
    path = Path(path)
    if not path.exists():
        raise AudioIOError(f"cannot read audio file {path}: no such file")
    if not path.is_file():
        raise AudioIOError(f"cannot read audio file {path}: not a regular file")
    check_not_ecdc(path)
    check_mp3_content(path)
    try:  # as soundfile.read does it, keeping the length the header claims
        with sf.SoundFile(soundfile_name(path)) as sfile:
            check_has_header(path, sfile.format)
            check_file_rate(path, sfile.samplerate)
            claimed = sfile.frames
            if sfile.seekable():
                sfile.seek(0)
            data = sfile.read(claimed, dtype="float32", always_2d=True)
            sample_rate = sfile.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise unreadable_audio(path, exc) from exc
    cut = find_truncation(path, data.shape[0], claimed)
    if cut is not None:
        if refuse_truncated:
            raise AudioIOError(f"cannot read audio file {path}: {cut.reason}")
        warnings.warn(f"{path}: {cut.reason} (the {cut.held} there are used)", stacklevel=2)
    if data.shape[0] == 0:
        raise AudioIOError(f"cannot read audio file {path}: it holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioIOError(f"cannot read audio file {path}: {_non_finite_reason(path)}")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def _non_finite_reason(path: Path) -> str:
    """Why ``path``, read as float32, holds infinite or NaN samples: a DOUBLE file's finite
    samples beyond float32's range, which became infinite when read, are named as such."""
    try:
        with sf.SoundFile(soundfile_name(path)) as sfile:
            wide = sfile.read(dtype="float64") if sfile.subtype == "DOUBLE" else None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        wide = None
    return non_finite_reason(wide)


def non_finite_reason(wide: np.ndarray | None, where: str = "") -> str:
    """Why audio read as float32 holds infinite or NaN samples, from the same samples read as
    float64 (``wide``; None when the file is not DOUBLE): finite samples beyond float32's
    range are named as such. ``where`` (e.g. " in its block at 61.0 s") follows the count."""
    if wide is None or not wide.size or not np.isfinite(wide).all():
        return "it holds NaN or infinite samples"
    top = float(np.finfo(np.float32).max)
    return (f"it holds {int((np.abs(wide) > top).sum())} sample(s) beyond float32's range{where} (peak "
            f"{float(np.abs(wide).max()):.3g}, float32 reaches {top:.3g}), in which audio is read and "
            f"coded; full scale is 1.0")


def check_has_header(path: str | Path, sound_format: str) -> None:
    """Refuse a file libsndfile opened as headerless ``RAW`` data (``SoundFile.format``): it
    takes any ``.au``/``.snd`` file without the ``.snd`` header, even a text file, as 8 kHz
    mu-law, which would decode to noise without a word."""
    if sound_format == "RAW":
        raise AudioIOError(f"cannot read audio file {path}: no audio header (libsndfile would read "
                           f"its bytes as headerless 8 kHz mu-law); not a decodable audio file")


def check_file_rate(path: str | Path, sample_rate: int) -> None:
    """Refuse a file whose header gives a sample rate outside ``--rate``'s range
    (:data:`~opencodec.argtypes.MIN_SAMPLE_RATE` to ``MAX_SAMPLE_RATE`` Hz): a damaged or
    crafted header (1 Hz) would otherwise be resampled by a factor of thousands, into more
    samples than memory holds."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioIOError(f"cannot read audio file {path}: its header gives a sample rate of "
                           f"{sample_rate} Hz, outside {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")


def soundfile_name(path: str | Path) -> str | bytes:
    """``path`` as soundfile takes it: a ``str``, or ``bytes`` for a name that is not valid
    UTF-8 (soundfile encodes a ``str`` strictly, so such a name fails as a ``str``)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def stores_float_samples(path: str | Path) -> bool:
    """Whether the audio file ``path`` stores float samples (FLOAT or DOUBLE), which may exceed
    full scale; False when its header cannot be read."""
    try:
        return sf.info(soundfile_name(path)).subtype in ("FLOAT", "DOUBLE")
    except Exception:  # noqa: BLE001 - used only to decide on a warning
        return False


def unreadable_audio(path: str | Path, exc: BaseException) -> AudioIOError:
    """The ``AudioIOError`` for a soundfile/OS exception ``exc`` raised reading ``path``:
    "cannot read audio file PATH: " and :func:`audio_error_reason`."""
    return AudioIOError(f"cannot read audio file {path}: {audio_error_reason(exc, path)}")


def audio_error_reason(exc: BaseException, path: str | Path | None = None) -> str:
    """A short human reason from a soundfile/OS exception (``path``: the file, whose suffix
    names the format in the reason for corrupt data).

    libsndfile answers "File does not exist or is not a regular file" for some files it
    cannot decode (e.g. a broken MP3), "Internal error : SF_INFO struct incomplete." for a
    header with a zero sample rate, and "Internal psf_fseek() failed." or a FLAC decoder
    error for a cut or damaged FLAC body; existence is checked first, so say what they mean.
    """
    if isinstance(exc, sf.LibsndfileError):
        text = exc.error_string or str(exc)
        if "does not exist or is not a regular file" in text:
            return "not a decodable audio file (unknown format or corrupt data)"
        if "SF_INFO struct incomplete" in text:  # e.g. a WAV header with a sample rate of 0
            return "corrupt header (a sample rate or format field of 0)"
        if "psf_fseek" in text or "flac decoder" in text.lower():
            kind = Path(path).suffix.lstrip(".").upper() if path is not None else ""
            return f"corrupt or truncated {kind or 'audio'} data ({text.rstrip('.')})"
        return text
    return error_reason(exc)


@dataclass(frozen=True)
class Truncation:
    """A file holding fewer sample frames (``held``) than its header declares (``declared``):
    an interrupted copy or download, a file cut with ``head -c``."""

    declared: int
    held: int
    approximate: bool = False  # ``held`` worked back from a resampled length

    @property
    def reason(self) -> str:
        """``"truncated: its header says N samples, the file holds M"`` ("about M" when approximate)."""
        about = "about " if self.approximate else ""
        return f"truncated: its header says {self.declared} samples, the file holds {about}{self.held}"


def find_truncation(path: str | Path, held: int | None = None, claimed: int | None = None) -> Truncation | None:
    """How the audio file ``path`` falls short of its header, None when it does not.

    ``held``: the sample frames it holds (decoded); ``claimed``: libsndfile's count from its
    header (``SoundFile.frames``). Left out, both are libsndfile's count, read from the header
    without decoding: that finds a WAV or AIFF that was cut (libsndfile silently counts the
    frames present; :func:`header_declared_frames` gives what the header declares), not an
    MP3 whose Xing header counts more frames than its data holds (only decoding finds that).
    The header declares ``max(claimed, header_declared_frames(path))`` frames. Raises
    ``AudioIOError`` when libsndfile cannot read the header (only when ``held`` or ``claimed``
    is left out)."""
    if held is None or claimed is None:
        check_mp3_content(path)
        try:
            frames = sf.info(soundfile_name(path)).frames
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise unreadable_audio(path, exc) from exc
        held = frames if held is None else held
        claimed = frames if claimed is None else claimed
    declared = max(claimed, header_declared_frames(path) or 0)
    return Truncation(declared, held) if held < declared else None


def check_mp3_content(path: str | Path) -> None:
    """Refuse a ``.mp3`` file that holds no MPEG audio (an ``AudioIOError`` naming it), before
    libsndfile sees it: for a file of that name whose content it does not recognise, libsndfile
    hands it to libmpg123, which prints "Note: Illegal Audio-MPEG-Header ..." and "Note: Trying
    to resync..." to stderr before failing. A ``.mp3`` passes when it holds MPEG audio
    (:func:`~opencodec.audio_checks.has_mpeg_audio`: two consecutive frame headers that agree,
    within :data:`~opencodec.audio_checks.MP3_SNIFF_BYTES` after its ID3v2 tags; a real MP3, also after some junk), or
    when libsndfile recognises its content without the name (a WAV named ``.mp3``).
    Other names pass unread."""
    if os.path.splitext(os.fspath(path))[1].lower() != ".mp3":
        return
    mpeg_start = False
    try:
        with open(path, "rb") as fi:
            if has_mpeg_audio(fi):
                return
            fi.seek(0)
            mpeg_start = starts_like_mpeg(fi.read(4))
            if not mpeg_start:  # else libsndfile would hand it to libmpg123 anyway
                fi.seek(0)
                with sf.SoundFile(fi):  # no name: libsndfile goes by the content alone, quietly
                    return
    except (sf.LibsndfileError, RuntimeError, ValueError):
        pass
    except OSError as exc:
        raise AudioIOError(f"cannot read audio file {path}: {error_reason(exc)}") from exc
    what = (" and it starts as MPEG audio (an ID3 tag or a frame header), but it holds no two consecutive "
            "MPEG audio frames: cut or damaged" if mpeg_start else
            ", but it holds no MPEG audio frame or ID3 tag, nor another audio format")
    raise AudioIOError(f"cannot read audio file {path}: not a decodable audio file (named .mp3{what})")


def convert_channels(wav: torch.Tensor, target_channels: int) -> torch.Tensor:
    """Change the channel count of ``[..., C, T]`` audio to ``target_channels``.

    - same count: returned unchanged;
    - to mono: the mean of the channels, ``y = (1/C) sum_c x_c`` (amplitude-preserving
      for correlated channels; a full-scale channel alone becomes half scale in stereo);
    - from mono: the channel is repeated (each output channel equals the input);
    - anything else (e.g. 6 -> 2): :class:`ChannelConversionError` (a ``ValueError``),
      because a down-mix matrix would be a guess (surround layouts differ in channel order
      and weights).
    """
    if target_channels < 1:
        raise ValueError(f"target_channels must be >= 1, got {target_channels}")
    channels = wav.shape[-2]
    if channels == target_channels:
        return wav
    if target_channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if channels == 1:
        repeats = [1] * (wav.dim() - 2) + [target_channels, 1]
        return wav.repeat(*repeats)
    raise ChannelConversionError(
        f"cannot convert {channels} channels to {target_channels}: only mono down-mix "
        f"and mono up-mix are supported; convert the file with a tool that knows its layout")


def resampled_length(length: int, sample_rate: int, target_rate: int) -> int:
    """Samples that ``length`` samples at ``sample_rate`` Hz have at ``target_rate`` Hz after
    :func:`resample`: ``length * target_rate / sample_rate`` rounded half up (soxr's count,
    e.g. 48001 samples at 48 kHz -> 24001 at 24 kHz), in exact integer arithmetic."""
    return (2 * length * target_rate + sample_rate) // (2 * sample_rate)


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """``[..., T]`` audio cut or zero-padded at the end to ``length`` samples (unchanged when
    it has them): a round trip back to the input's rate gives the input's length."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def resample(wav: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Resample ``[..., T]`` audio from ``sample_rate`` to ``target_rate`` (Hz) with soxr.

    soxr's "HQ" recipe: a linear-phase band-limited (windowed-sinc / polyphase) filter,
    pass band to ~0.91 of the lower Nyquist frequency, stop-band attenuation ~130 dB; any
    rate ratio works (rational or not). The one-shot call compensates the filter delay,
    so the output is time-aligned with the input and has :func:`resampled_length` samples
    (``T * target / source`` rounded half up; so does empty input). Not differentiable
    (runs on CPU through NumPy); float64 stays float64, every other dtype is computed in
    float32 and cast back. The device is preserved.
    """
    if sample_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {sample_rate} -> {target_rate}")
    if sample_rate == target_rate:
        return wav
    work = torch.float64 if wav.dtype == torch.float64 else torch.float32
    shape = wav.shape
    rows = math.prod(shape[:-1])
    if rows == 0 or shape[-1] == 0:
        return wav.new_zeros(*shape[:-1], resampled_length(shape[-1], sample_rate, target_rate))
    flat = wav.detach().to("cpu", work).reshape(rows, shape[-1])  # [N, T]
    out = soxr.resample(np.ascontiguousarray(flat.numpy().T), sample_rate, target_rate,
                        quality=RESAMPLE_QUALITY)  # [T', N]
    result = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*shape[:-1], out.shape[0])
    return result.to(wav.device, wav.dtype)


def convert_audio(wav: torch.Tensor, sample_rate: int, target_rate: int,
                  target_channels: int) -> torch.Tensor:
    """Convert float ``[C, T]`` or ``[B, C, T]`` audio at ``sample_rate`` Hz to
    ``target_channels`` channels at ``target_rate`` Hz; the result is float32 whatever the
    float dtype given (float64, float16 and bfloat16 are converted first). Integer PCM is a
    ``TypeError``: scale it to full scale 1.0 first (int16: ``x.float() / 32768``).

    Channels first (``convert_channels``: mean to mono, repeat from mono, else
    :class:`ChannelConversionError`, a ``ValueError``), then resampling (``resample``: soxr
    HQ), so a down-mix resamples fewer channels. Output length is :func:`resampled_length`:
    ``T * target_rate / sample_rate`` rounded half up (soxr's rounding: 1001 samples at 48 kHz
    give 501 at 24 kHz), so a round trip through another rate can come back one sample longer; cut it
    with :func:`fit_length`.
    """
    _require_tensor(wav, "convert_audio")
    if not wav.is_floating_point():
        hint = " (int16: x.float() / 32768)" if wav.dtype == torch.int16 else ""
        raise TypeError(f"convert_audio expects float audio (full scale 1.0), got {wav.dtype}; "
                        f"scale integer PCM to [-1, 1) first{hint}")
    if wav.dim() not in (2, 3):
        raise ValueError(f"expected audio of shape [C, T] or [B, C, T], got {tuple(wav.shape)}")
    wav = convert_channels(wav.to(torch.float32), target_channels)
    return resample(wav, sample_rate, target_rate)


def convert_input(path: str | Path, wav: torch.Tensor, sample_rate: int, target_rate: int,
                  target_channels: int) -> torch.Tensor:
    """:func:`convert_audio` of the audio read from ``path`` (float ``[C, T]``, ``sample_rate``
    Hz) to a model's rate and channels; ``AudioIOError`` naming the input's samples and rate
    when they resample to no sample (10 samples at 768 kHz are 0.3 at 24 kHz)."""
    out = convert_audio(wav, sample_rate, target_rate, target_channels)
    if wav.shape[-1] and not out.shape[-1]:
        least = -(-sample_rate // (2 * target_rate))  # resampled_length(least, ...) == 1
        raise AudioIOError(f"{path}: {wav.shape[-1]} sample(s) at {sample_rate} Hz resample to 0 samples at "
                           f"{target_rate} Hz (the model's rate): too short to compress (at least {least} "
                           f"samples at {sample_rate} Hz)")
    return out


def _require_tensor(wav: object, where: str) -> None:
    """``TypeError`` naming the type when ``wav`` is not a tensor (a NumPy array: how to convert it)."""
    if not isinstance(wav, torch.Tensor):
        hint = " (torch.from_numpy(array) converts it)" if isinstance(wav, np.ndarray) else ""
        raise TypeError(f"{where} expects a torch.Tensor, got {type(wav).__module__}.{type(wav).__name__}{hint}")


def subtype_for(path: Path, bits: int) -> tuple[str, str]:
    """(libsndfile format, subtype) for writing ``path`` with ``bits`` bits per sample."""
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise AudioIOError(f"cannot write {path}: unsupported output format {ext or '(none)'!r}; "
                           f"use one of {', '.join(sorted(_WRITE_FORMATS))}")
    fmt, subtypes = _WRITE_FORMATS[ext]
    if bits not in subtypes:
        allowed = ", ".join(f"{b} ({'float' if subtypes[b] == 'FLOAT' else 'int'})" for b in subtypes)
        raise AudioIOError(f"cannot write {path}: {fmt} supports bits {allowed}, got {bits}")
    return fmt, subtypes[bits]


def check_output_format(path: str | Path, sample_rate: int, channels: int) -> None:
    """``AudioIOError`` when the format of ``path`` (by its extension) cannot hold ``channels``
    channels at ``sample_rate`` Hz: no output holds more than
    :data:`~opencodec.argtypes.MAX_CHANNELS` channels, and a ``.flac`` file at most
    :data:`FLAC_MAX_CHANNELS` at up to :data:`FLAC_MAX_RATE` Hz (libsndfile would refuse it
    only when writing, as "Format not recognised."). Callers check before decoding, so nothing
    is computed for a file that cannot be written."""
    if channels > MAX_CHANNELS:
        raise AudioIOError(f"cannot write {path}: an output holds at most {MAX_CHANNELS} channels, got {channels}")
    if Path(path).suffix.lower() != ".flac":
        return
    if channels > FLAC_MAX_CHANNELS:
        raise AudioIOError(f"cannot write {path}: FLAC holds at most {FLAC_MAX_CHANNELS} channels, got "
                           f"{channels}; write a .wav file instead")
    if sample_rate > FLAC_MAX_RATE:
        raise AudioIOError(f"cannot write {path}: FLAC holds sample rates up to {FLAC_MAX_RATE} Hz, got "
                           f"{sample_rate}; write a .wav file instead")


def loud_input_message(name: str | Path, peak: float) -> str | None:
    """The warning for input audio ``name`` whose peak amplitude ``peak`` exceeds full scale
    (a float file), which the codec, trained on [-1, 1], reproduces distorted; None within it."""
    if peak <= 1.0:
        return None
    shown = f"{peak:.4f}" if peak < 1e6 else f"{peak:.4g}"
    return (f"{name}: input peak amplitude {shown} exceeds full scale 1.0; the codec expects "
            "audio within [-1, 1] and distorts louder input: scale it down first")


def limit_peak(wav: torch.Tensor, *, rescale: bool, clip: bool, name: str = "audio") -> torch.Tensor:
    """Keep ``[C, T]`` audio inside [-1, 1] for integer formats.

    ``rescale=True``: if the peak ``p = max |x|`` exceeds ``RESCALE_PEAK`` (0.99), return
    ``x * 0.99 / p`` (never scales up). Otherwise, when ``clip`` is True and ``p > 1``,
    clamp to [-1, 1] and ``warnings.warn`` with the peak. Returns the input unchanged
    when nothing is needed.
    """
    if wav.numel() == 0:
        return wav
    peak = float(wav.abs().max())
    if rescale:
        return wav * (RESCALE_PEAK / peak) if peak > RESCALE_PEAK else wav
    if clip and peak > 1.0:
        warnings.warn(f"{name}: peak amplitude {peak:.4f} exceeds full scale 1.0; clipped "
                      f"(rescale to avoid clipping)", stacklevel=3)
        return wav.clamp(-1.0, 1.0)
    return wav


def to_file_samples(data: np.ndarray, bits: int | None) -> np.ndarray:
    """Samples [T, C] as handed to libsndfile: float32 for float files, else integers.

    libsndfile's own float -> PCM conversion rounds toward minus infinity (up to 1 LSB
    error, -0.5 LSB bias), so integer PCM is quantised here to the nearest level:
    ``q = clip(round(x * 2^(bits-1)), -2^(bits-1), 2^(bits-1) - 1)``, which makes
    write -> read exact for representable values. 24-bit samples travel as int32 in the
    top 24 bits (libsndfile keeps the high bits).
    """
    if bits is None:
        return np.ascontiguousarray(data, dtype=np.float32)
    full = 2.0 ** (bits - 1)
    q = np.clip(np.rint(data.astype(np.float64) * full), -full, full - 1)
    if bits == 16:
        return np.ascontiguousarray(q, dtype=np.int16)
    return np.ascontiguousarray(q.astype(np.int32) << (32 - bits))


def write_audio(path: str | Path, wav: torch.Tensor, sample_rate: int, *, bits: int = 16,
                rescale: bool = False) -> None:
    """Write ``[C, T]`` float audio (full scale 1.0) at ``sample_rate`` Hz to ``path``.

    At most :data:`~opencodec.argtypes.MAX_CHANNELS` (64) channels: more is a ``ValueError``
    naming the shape (most likely a transposed ``[T, C]`` tensor). ``sample_rate``: a whole
    number of Hz from 1 to 2**31 - 1 (``24000.0`` is taken; ``44100.7``, NaN or infinity is a
    ``ValueError``, never a file at another rate).

    The format follows the extension: ``.wav`` with ``bits`` 16 or 24 (integer PCM) or
    32 (IEEE float), ``.flac`` with 16 or 24. Integer formats hold [-1, 1]: a louder
    signal is clipped with a warning naming the peak, unless ``rescale`` scales it down
    to a 0.99 peak (never up). Float WAV stores any value, so it is not clipped (but
    ``rescale`` still applies). A FLAC file holds at most 8 channels at up to 655350 Hz
    (:func:`check_output_format`) and at least one sample. The file appears atomically
    (temporary file + rename); on any error no file is left behind. Raises ``AudioIOError``
    on bad format or I/O.
    """
    path = Path(path)
    _require_tensor(wav, "write_audio")
    if wav.dim() != 2:
        raise ValueError(f"expected audio of shape [C, T], got {tuple(wav.shape)}")
    if wav.shape[0] > MAX_CHANNELS:
        likely = (" (it looks transposed: [T, C] as soundfile uses; pass wav.T)"
                  if wav.shape[1] <= MAX_CHANNELS else "")
        raise ValueError(f"cannot write {path}: expected audio [C, T] with at most {MAX_CHANNELS} "
                         f"channels, got shape {tuple(wav.shape)}{likely}")
    number = isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool)
    # whole: int() would silently write 44100.7 as 44100 Hz; libsndfile stores a 32-bit int
    if not (number and 1 <= sample_rate < 2 ** 31 and float(sample_rate).is_integer()):
        raise ValueError(f"cannot write {path}: sample_rate must be a positive whole number of Hz, "
                         f"got {sample_rate!r}")
    fmt, subtype = subtype_for(path, bits)
    check_output_format(path, int(sample_rate), wav.shape[0])
    if fmt == "FLAC" and wav.shape[-1] == 0:  # libsndfile would write an empty (0-byte), unreadable file
        raise AudioIOError(f"cannot write {path}: the audio holds no samples, and libsndfile writes a FLAC "
                           "file of none as 0 bytes that no reader takes; write a .wav file instead")
    wav = wav.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(wav).all()):
        raise AudioIOError(f"cannot write {path}: the audio holds NaN or infinite samples")
    wav = limit_peak(wav, rescale=rescale, clip=subtype != "FLOAT", name=str(path))
    data = to_file_samples(wav.numpy().T, bits if subtype != "FLOAT" else None)  # [T, C]
    try:
        with atomic_output(path) as tmp:
            sf.write(soundfile_name(tmp), data, int(sample_rate), format=fmt, subtype=subtype)
    except OutputError as exc:  # atomic_output's, which already says "cannot write PATH: reason"
        raise AudioIOError(str(exc)) from exc
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioIOError(f"cannot write {path}: {audio_error_reason(exc)}") from exc


def is_audio_file(path: str | Path) -> bool:
    """True when ``path`` has one of ``AUDIO_EXTENSIONS`` (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in AUDIO_EXTENSIONS
