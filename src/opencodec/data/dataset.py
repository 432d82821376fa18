"""Training and evaluation datasets over the JSONL manifests written by the corpus builder.

Manifest rows need ``path`` (absolute, or relative to the manifest file's folder),
``duration`` (s), ``sample_rate`` (Hz), ``channels`` and ``category``
(``speech``/``music``/``general``/``noise`` for training, the evaluation category for
evaluation manifests).

Augmentation (``AudioDataset``, following the EnCodec paper, section 4.1, with the
differences documented here):

* a training example is one source (probability 0.64 by default), a mixture of two
  (0.24), or of three (0.12; never music, as in the paper). Sources are drawn with
  probability proportional to file duration, segment start uniform in the file.
* every source gets a random gain uniform in [-10, +6] dB (files are already
  loudness-normalised to -20 dBFS gated RMS by the corpus builder).
* noisy speech (probability ``noisy_speech_prob``): a speech segment mixed with a noise
  segment (from ``category == "noise"`` rows, or generated white/pink/brown noise when there
  is none or with probability ``generated_noise_prob``) at an SNR uniform in ``snr_db``.
* reverberation with probability 0.2 (not on single-source music, as in the paper), with a
  synthetic room impulse response instead of the DNS-challenge RIRs (see
  :func:`synthetic_rir`): RT60 uniform in [0.3, 1.3] s.
* the paper rejects clipped examples; here, if the mixture's peak exceeds 1.0 the whole
  example is scaled so its peak is 0.99 (``info["peak_scale"]`` < 1).

Reproducibility/sharding: example ``i`` of epoch ``e`` on rank ``r`` is generated from
``numpy.random.default_rng([seed, e, r, i])`` only, so it does not depend on DataLoader
workers or the order of access, and ranks draw different examples.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch

from ..errors import AudioIOError, ConfigError
from ._jsonl import manifest_rows
from .loudness import mix_at_snr

log = logging.getLogger("opencodec.data.dataset")

PathLike = Union[str, os.PathLike]
Manifests = Union[PathLike, Sequence[PathLike], Sequence[dict]]


# ---------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------


def load_manifests(manifests: Manifests) -> list[dict]:
    """Read one or several JSONL manifests (or take a list of row dicts).

    Relative ``path`` fields (and ``clean_path``/``noise`` of noisy-speech rows) are
    resolved against the manifest file's folder. Returns a list of dicts with absolute
    ``path`` strings. Raises :class:`~opencodec.errors.ConfigError` naming the file and line
    of a line that is not a JSON object with a string ``path``."""
    if isinstance(manifests, (str, os.PathLike)):
        manifests = [manifests]
    rows: list[dict] = []
    for m in manifests:  # type: ignore[union-attr]
        if isinstance(m, dict):
            rows.append(dict(m))
            continue
        base = Path(m).resolve().parent
        for r in manifest_rows(m, ConfigError):
            for k in ("path", "clean_path", "noise"):
                if k in r and isinstance(r[k], str) and not os.path.isabs(r[k]):
                    r[k] = str((base / r[k]).resolve())
            rows.append(r)
    return rows


def read_error(path: PathLike, exc: BaseException) -> str:
    """Why the audio file ``path`` could not be read: "no such file" when it does not exist
    (soundfile says only "System error."), else ``exc``'s message (or its type)."""
    return "no such file" if not os.path.exists(path) else str(exc) or type(exc).__name__


def _names(manifests: Manifests) -> str:
    """The manifest files of ``manifests`` for a message (``3 rows`` when given rows)."""
    items = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests)
    files = [str(m) for m in items if not isinstance(m, dict)]
    return ", ".join(files) if files else f"({len(items)} rows)"


def check_durations(rows: list[dict], manifests: Manifests) -> None:
    """Refuse training rows without a ``duration`` in seconds (the sampler weighs files by
    it), naming the first such file: a hand-written manifest row may lack it."""
    for row in rows:
        try:
            ok = math.isfinite(float(row["duration"])) and float(row["duration"]) >= 0
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            found = "no" if "duration" not in row else f"a bad ({row['duration']!r})"
            raise ConfigError(f"manifest {_names(manifests)}: the row of {row.get('path')} has {found} "
                              f"\"duration\" (seconds; a training row needs it, see docs/DATA_PIPELINE.md)")


def load_training_rows(manifests: Manifests, noise_manifests: Manifests | None = None
                       ) -> tuple[list[dict], list[dict]]:
    """The rows of ``manifests`` that are not noise, and the noise rows: those of ``manifests``
    (``category`` "noise") and every row of ``noise_manifests`` (None: none). Every row needs
    a duration (:func:`check_durations`, whose error names the manifest the row is in)."""
    rows = load_manifests(manifests)
    check_durations(rows, manifests)
    noise_rows = [r for r in rows if r.get("category") == "noise"]
    if noise_manifests is not None:
        extra_noise = load_manifests(noise_manifests)
        check_durations(extra_noise, noise_manifests)
        noise_rows += extra_noise
    return [r for r in rows if r.get("category") != "noise"], noise_rows


# ---------------------------------------------------------------------------------------
# Signal helpers (numpy, [C, T] float32)
# ---------------------------------------------------------------------------------------


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """[C_in, T] -> [channels, T]: mean for downmix to mono, repeat for mono upmix,
    otherwise keep the first channels / repeat the last one.

    More permissive than :func:`opencodec.audio.convert_channels`, which refuses e.g. 6 -> 2
    because a file's down-mix would be a guess: a training segment only needs plausible audio
    with the model's channel count, and refusing would drop the file from the corpus."""
    c = x.shape[0]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(x, channels, axis=0)
    if c > channels:
        return x[:channels]
    return np.concatenate([x, np.repeat(x[-1:], channels - c, axis=0)], axis=0)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample [C, T] with soxr (HQ). Returns float32 [C, round(T * sr_out / sr_in)]."""
    if sr_in == sr_out:
        return x
    import soxr
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def fix_length(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or right-pad with zeros [C, T] to [C, length]."""
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def apply_gain_db(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Multiply by ``10 ** (gain_db / 20)``."""
    return (x * 10 ** (gain_db / 20)).astype(np.float32)


def coloured_noise(channels: int, length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise [channels, length] with power spectrum ~ 1/f**exponent
    (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal((channels, length)), axis=1)
    f = np.arange(spec.shape[1], dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-exponent / 2)
    x = np.fft.irfft(spec, n=length, axis=1)
    x /= np.sqrt(np.mean(x ** 2)) + 1e-12
    return x.astype(np.float32)


def synthetic_rir(rt60: float, sample_rate: int, rng: np.random.Generator,
                  max_seconds: float = 1.5, predelay_s: float = 0.002) -> np.ndarray:
    """A simple synthetic room impulse response [L] (float32, unit energy).

    A direct-path impulse at t = 0, then after ``predelay_s`` a Gaussian-noise tail whose
    amplitude decays as ``exp(-6.908 * t / rt60)`` (i.e. -60 dB after ``rt60`` seconds),
    with tail energy equal to the direct path's times ``rt60`` (longer rooms sound wetter).
    Length ``min(rt60, max_seconds)`` s. No early-reflection modelling."""
    n = max(2, int(min(rt60, max_seconds) * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    tail[: int(predelay_s * sample_rate)] = 0.0
    tail *= math.sqrt(rt60 / (np.sum(tail ** 2) + 1e-12))
    h = tail
    h[0] = 1.0
    h /= np.sqrt(np.sum(h ** 2))
    return h.astype(np.float32)


def apply_reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Causal FFT convolution of every channel of [C, T] with ``rir`` [L], cut to T."""
    t = x.shape[1]
    n = 1 << int(math.ceil(math.log2(t + len(rir))))
    y = np.fft.irfft(np.fft.rfft(x, n, axis=1) * np.fft.rfft(rir, n)[None], n, axis=1)[:, :t]
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Training dataset
# ---------------------------------------------------------------------------------------


def _whole(x: Any, lo: int) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and math.isfinite(x) and float(x).is_integer() and x >= lo


def _check_rate_channels(sample_rate: Optional[int], channels: Optional[int]) -> None:
    """``ValueError`` for a ``sample_rate`` or ``channels`` (when given) under 1."""
    if sample_rate is not None and not _whole(sample_rate, 1):
        raise ValueError(f"sample_rate must be a whole number of Hz >= 1, got {sample_rate!r}")
    if channels is not None and not _whole(channels, 1):
        raise ValueError(f"channels must be a whole number >= 1, got {channels!r}")


def _check_segment(segment_seconds: float, sample_rate: int, channels: int, epoch_size: int) -> None:
    """``ValueError`` naming the argument: a segment of no samples, a rate or channel count
    under 1 or a negative epoch would otherwise mark every file unreadable ("division by
    zero", "no audio frames") or give tensors of a wrong shape."""
    _check_rate_channels(sample_rate, channels)
    if not _whole(epoch_size, 0):
        raise ValueError(f"epoch_size must be a whole number >= 0, got {epoch_size!r}")
    seconds = float(segment_seconds)
    if not (math.isfinite(seconds) and round(seconds * sample_rate) >= 1):
        raise ValueError(f"segment_seconds must be finite and at least one sample "
                         f"(1/{sample_rate} s), got {segment_seconds!r}")


class AudioDataset(torch.utils.data.Dataset):
    """Random fixed-length training segments with the paper's augmentation.

    Map-style: ``len(ds) == epoch_size`` (examples per epoch *per rank*); item ``i`` is a
    float32 tensor [channels, round(segment_seconds * sample_rate)], deterministic given
    ``(seed, epoch, rank, i)`` (call :meth:`set_epoch` each epoch). Use with a plain
    ``DataLoader(ds, batch_size=..., shuffle=False)``; no DistributedSampler is needed.

    Args:
        manifests: JSONL manifest path(s) or row dicts. Rows with ``category == "noise"``
            are used only as noise for noisy speech.
        segment_seconds: example length in seconds.
        sample_rate: output rate in Hz (files at other rates are resampled with soxr).
        channels: output channels (1: mono downmix; 2: mono files are duplicated).
        epoch_size: number of examples per epoch per rank.
        seed: base seed.
        rank, world_size: distributed shard (rank in ``[0, world_size)``).
        noise_manifests: extra manifests whose rows are all used as noise.
        augment: if False, every example is one source without any augmentation.
        mix_probs: probabilities of 1, 2 and 3-source mixtures (normalised).
        gain_db: (low, high) range of the per-source random gain in dB.
        reverb_prob: probability of reverberation; ``rt60``: (low, high) seconds.
        noisy_speech_prob: probability that an example is speech + noise.
        snr_db: (low, high) SNR range in dB for noisy speech.
        generated_noise_prob: probability that the noise is generated coloured noise
            (always generated when there is no noise row).
        min_seconds: rows shorter than this are skipped (logged). Rows shorter than the
            segment are zero-padded at a random offset if ``pad_short``, else skipped.
        categories: only use rows of these categories (noise rows are always kept).
    """

    def __init__(self, manifests: Manifests, segment_seconds: float = 1.0, sample_rate: int = 24000,
                 channels: int = 1, *, epoch_size: int = 10000, seed: int = 0, rank: int = 0,
                 world_size: int = 1, noise_manifests: Optional[Manifests] = None,
                 augment: bool = True, mix_probs: Sequence[float] = (0.64, 0.24, 0.12),
                 gain_db: tuple[float, float] = (-10.0, 6.0), reverb_prob: float = 0.2,
                 rt60: tuple[float, float] = (0.3, 1.3), noisy_speech_prob: float = 0.1,
                 snr_db: tuple[float, float] = (0.0, 20.0), generated_noise_prob: float = 0.2,
                 min_seconds: float = 0.1, pad_short: bool = True,
                 categories: Optional[Sequence[str]] = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        _check_segment(segment_seconds, sample_rate, channels, epoch_size)
        self.segment_seconds = float(segment_seconds)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.length = int(round(segment_seconds * sample_rate))
        self.epoch_size = int(epoch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.augment = augment
        p = np.asarray(mix_probs, dtype=np.float64)
        self.mix_probs = p / p.sum()
        self.gain_db = gain_db
        self.reverb_prob, self.rt60 = reverb_prob, rt60
        self.noisy_speech_prob, self.snr_db = noisy_speech_prob, snr_db
        self.generated_noise_prob = generated_noise_prob
        self.pad_short = pad_short
        self._bad: set[str] = set()
        self._last_error = ""  # the last unreadable file and why, for the error when none is left

        rows, noise_rows = load_training_rows(manifests, noise_manifests)
        if categories is not None:
            rows = [r for r in rows if r.get("category") in set(categories)]
        min_keep = min_seconds if pad_short else max(min_seconds, self.segment_seconds)
        short = [r for r in rows + noise_rows if float(r.get("duration", 0)) < min_keep]
        if short:
            log.warning("skipping %d files shorter than %.3f s: %s%s", len(short), min_keep,
                        ", ".join(r["path"] for r in short[:5]), " ..." if len(short) > 5 else "")
        self.rows = [r for r in rows if float(r.get("duration", 0)) >= min_keep]
        self.noise_rows = [r for r in noise_rows if float(r.get("duration", 0)) >= min_keep]
        if not self.rows:
            kept = f", of categories {', '.join(categories)}" if categories is not None else ""
            raise ConfigError(f"no usable rows in the manifests {_names(manifests)} (a training row is not "
                              f"noise{kept}, and lasts at least {min_keep:g} s)")
        self._dur = np.array([float(r["duration"]) for r in self.rows])
        self._w = self._dur.copy()  # sampling weights; 0 for files found unreadable
        self._cat = np.array([r.get("category", "general") for r in self.rows])
        self._ndur = np.array([float(r["duration"]) for r in self.noise_rows])

    def __len__(self) -> int:
        return self.epoch_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes every example deterministically)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator example ``index`` of the current epoch/rank is drawn from."""
        return np.random.default_rng([self.seed, self.epoch, self.rank, int(index)])

    # -- reading ----------------------------------------------------------------------

    def _pick(self, rng: np.random.Generator, mask: Optional[np.ndarray] = None) -> int:
        w = self._w if mask is None else self._w * mask
        if w.sum() <= 0:
            raise AudioIOError(f"no readable audio file left in the manifests: {len(self._bad)} unreadable, "
                               f"the last {self._last_error}")
        return int(rng.choice(len(w), p=w / w.sum()))

    def read_segment(self, row: dict, rng: np.random.Generator) -> np.ndarray:
        """Read a random segment of ``row`` (only the needed frames), resample, convert
        channels. Returns float32 [channels, length]. Raises on unreadable files."""
        sr = int(row.get("sample_rate") or sf.info(row["path"]).samplerate)
        n_in = int(math.ceil(self.length * sr / self.sample_rate)) + (16 if sr != self.sample_rate else 0)
        total = int(float(row["duration"]) * sr)
        start = int(rng.integers(0, total - n_in + 1)) if total > n_in else 0
        x, file_sr = sf.read(row["path"], start=start, frames=n_in, dtype="float32", always_2d=True)
        if x.shape[0] == 0:  # the file is shorter than its row's duration
            raise ValueError(f"no audio frames at {start / sr:.3f} s (the manifest gives the file "
                             f"{float(row['duration']):g} s)")
        x = resample(np.ascontiguousarray(x.T), int(file_sr), self.sample_rate)
        x = convert_channels(x, self.channels)
        if x.shape[1] < self.length:  # short file: zero-pad at a random offset
            off = int(rng.integers(0, self.length - x.shape[1] + 1))
            x = np.pad(x, ((0, 0), (off, self.length - x.shape[1] - off)))
        return fix_length(x, self.length)

    def _read_row(self, pick: Any, rng: np.random.Generator, tries: int = 20) -> tuple[np.ndarray, dict]:
        for _ in range(tries):
            i = pick()
            row = self.rows[i]
            try:
                return self.read_segment(row, rng), row
            except Exception as e:
                reason = read_error(row["path"], e)
                log.warning("skipping unreadable file %s: %s", row["path"], reason)
                self._bad.add(row["path"])
                self._last_error = f"{row['path']} ({reason})"
                self._w[i] = 0.0
        raise AudioIOError(f"too many unreadable audio files: {tries} in a row, the last {self._last_error}")

    def _noise(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        usable = [i for i, r in enumerate(self.noise_rows) if r["path"] not in self._bad]
        if usable and rng.random() >= self.generated_noise_prob:
            w = self._ndur[usable]
            row = self.noise_rows[usable[int(rng.choice(len(usable), p=w / w.sum()))]]
            try:
                return self.read_segment(row, rng), row["path"]
            except Exception as e:
                log.warning("skipping unreadable file %s: %s", row["path"], read_error(row["path"], e))
                self._bad.add(row["path"])
        exponent = float(rng.choice([0.0, 1.0, 2.0]))
        return coloured_noise(self.channels, self.length, exponent, rng), f"generated:{exponent:g}"

    # -- examples ---------------------------------------------------------------------

    def sample(self, index: int) -> tuple[torch.Tensor, dict]:
        """Example ``index`` and a dict describing how it was made: ``sources`` (paths),
        ``categories``, ``gains_db``, ``snr_db`` (or None), ``noise``, ``rt60`` (or None),
        ``peak_scale`` (1.0 unless the mixture overflowed)."""
        rng = self.rng(index)
        info: dict[str, Any] = {"sources": [], "categories": [], "gains_db": [], "snr_db": None,
                                "noise": None, "rt60": None, "peak_scale": 1.0}
        if not self.augment:
            x, row = self._read_row(lambda: self._pick(rng), rng)
            info["sources"].append(row["path"])
            info["categories"].append(row.get("category"))
            return torch.from_numpy(np.ascontiguousarray(x)), info
        is_speech = (self._cat == "speech").astype(np.float64)
        parts: list[np.ndarray] = []
        if is_speech.any() and rng.random() < self.noisy_speech_prob:
            x, row = self._read_row(lambda: self._pick(rng, is_speech), rng)
            nz, name = self._noise(rng)
            snr = float(rng.uniform(*self.snr_db))
            g = float(rng.uniform(*self.gain_db))
            parts.append(apply_gain_db(mix_at_snr(x, nz, snr), g))
            info.update(snr_db=snr, noise=name)
            info["sources"].append(row["path"])
            info["categories"].append(row.get("category"))
            info["gains_db"].append(g)
        else:
            k = int(rng.choice(3, p=self.mix_probs)) + 1
            mask = (self._cat != "music").astype(np.float64) if k == 3 else None
            if mask is not None and not mask.any():
                mask = None
            for _ in range(k):
                x, row = self._read_row(lambda: self._pick(rng, mask), rng)
                g = float(rng.uniform(*self.gain_db))
                parts.append(apply_gain_db(x, g))
                info["sources"].append(row["path"])
                info["categories"].append(row.get("category"))
                info["gains_db"].append(g)
        y = np.sum(parts, axis=0).astype(np.float32)
        single_music = len(parts) == 1 and info["categories"][0] == "music"
        if not single_music and rng.random() < self.reverb_prob:
            rt60 = float(rng.uniform(*self.rt60))
            y = apply_reverb(y, synthetic_rir(rt60, self.sample_rate, rng))
            info["rt60"] = rt60
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 1.0:
            info["peak_scale"] = 0.99 / peak
            y = y * info["peak_scale"]
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), info

    def __getitem__(self, index: int) -> torch.Tensor:
        """Float32 tensor [channels, length] (see :meth:`sample`)."""
        return self.sample(index)[0]


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


class EvalDataset(torch.utils.data.Dataset):
    """The fixed items of evaluation manifest(s), in manifest order.

    Item ``i`` is a dict: ``audio`` float32 tensor [C, T] (whole item, resampled to
    ``sample_rate`` and converted to ``channels`` if given, else the file's own), plus
    ``sample_rate``, ``item_id``, ``category``, ``source``, ``path`` and, for noisy speech,
    ``snr_db``. With ``skip_errors`` (the default) rows whose audio file cannot be read are
    dropped at construction time (files checked with ``soundfile.info``), logged, and kept in
    ``skipped`` as ``(path, reason)``; without, reading such an item raises."""

    def __init__(self, manifests: Manifests, sample_rate: Optional[int] = None,
                 channels: Optional[int] = None, skip_errors: bool = True) -> None:
        _check_rate_channels(sample_rate, channels)
        rows = load_manifests(manifests)
        self.skipped: list[tuple[str, str]] = []
        if skip_errors:
            good = []
            for r in rows:
                try:
                    sf.info(r["path"])
                    good.append(r)
                except Exception as e:
                    reason = read_error(r["path"], e)
                    log.warning("skipping unreadable audio file %s: %s", r["path"], reason)
                    self.skipped.append((str(r["path"]), reason))
            rows = good
        self.rows = rows
        self.sample_rate = sample_rate
        self.channels = channels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        r = self.rows[index]
        x, sr = sf.read(r["path"], dtype="float32", always_2d=True)
        x = np.ascontiguousarray(x.T)
        if self.sample_rate is not None:
            x, sr = resample(x, int(sr), self.sample_rate), self.sample_rate
        if self.channels is not None:
            x = convert_channels(x, self.channels)
        out = {k: v for k, v in r.items() if k not in ("parts",)}
        out.update(audio=torch.from_numpy(np.ascontiguousarray(x)), sample_rate=int(sr))
        out.setdefault("item_id", Path(r["path"]).stem)
        return out


def iter_eval_items(manifests: Manifests, sample_rate: Optional[int] = None,
                    channels: Optional[int] = None) -> Iterator[dict]:
    """Yield the items of :class:`EvalDataset` one by one (same dicts)."""
    ds = EvalDataset(manifests, sample_rate, channels)
    for i in range(len(ds)):
        yield ds[i]
