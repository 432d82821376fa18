"""Training batches drawn on the device from a corpus decoded once (``data.loader: device``).

The loader path (``opencodec.data.AudioDataset`` in ``data.num_workers`` processes) reads,
resamples and augments every segment on the CPU; at GPU speeds that is the bottleneck.
Here every training file is decoded once, at the model's rate and channel count, into one
int16 tensor in device memory (``data.device_storage: device``, default) or in pinned host
memory (``pinned``: segments are gathered there and copied over). A corpus of H hours
takes ``H * 3600 * rate * channels * 2`` bytes (2 h at 24 kHz mono: 346 MB).

Each step's batch is drawn on the device by a generator seeded from ``(seed, step)``, so a
resumed run draws the same batches. The augmentation follows ``AudioDataset``'s recipe
with the same parameter names and defaults (``data.augment``): with probability
``noisy_speech_prob`` a speech segment mixed with noise (a noise file or, with
``generated_noise_prob``, white/pink/brown noise) at an SNR drawn from ``snr_db``;
otherwise a mixture of 1, 2 or 3 sources (``mix_probs``; 3-source mixtures without music);
every source gets a gain from ``gain_db``; a synthetic room reverberation (``reverb_prob``,
``rt60``) except on single music sources; the peak is brought under 1. Files are drawn
in proportion to their duration. Differences from the loader: the random streams differ
(same distributions, not the same segments), and files shorter than the segment are
placed at a random offset with zeros around, as there.
"""

from __future__ import annotations

import math
import typing as tp

import numpy as np
import torch

from ..data.dataset import convert_channels, load_training_rows, resample
from ..errors import ConfigError

__all__ = ["DeviceCorpus"]

INT16_SCALE = 32767.0


def _decode(row: dict, sample_rate: int, channels: int) -> np.ndarray:
    from ..audio import read_audio

    wav, sr = read_audio(row["path"])  # AudioIOError naming the file and the reason
    x = resample(np.ascontiguousarray(wav.numpy()), int(sr), sample_rate)
    return convert_channels(x, channels)


class DeviceCorpus:
    """A decoded corpus in (device or pinned) memory and its augmented batches.

    ``batch(step, batch_size)`` -> float32 [batch_size, channels, length] on ``device``.
    """

    def __init__(self, manifests: tp.Any, sample_rate: int, channels: int, segment_seconds: float,
                 device: torch.device, seed: int = 0, noise_manifests: tp.Any = None, storage: str = "device",
                 mix_probs: tp.Sequence[float] = (0.64, 0.24, 0.12), gain_db: tuple[float, float] = (-10.0, 6.0),
                 reverb_prob: float = 0.2, rt60: tuple[float, float] = (0.3, 1.3), noisy_speech_prob: float = 0.1,
                 snr_db: tuple[float, float] = (0.0, 20.0), generated_noise_prob: float = 0.2,
                 min_seconds: float = 0.1, augment: bool = True, **unused: tp.Any) -> None:
        if storage not in ("device", "pinned"):
            raise ConfigError(f"data.device_storage: expected 'device' or 'pinned', got {storage!r}")
        if unused:
            raise ConfigError(f"data.augment keys the device loader does not know: {sorted(unused)}")
        self.device, self.seed, self.channels, self.sample_rate = device, int(seed), int(channels), int(sample_rate)
        self.length = int(round(segment_seconds * sample_rate))
        self.augment = augment
        p = torch.tensor(mix_probs, dtype=torch.float64)
        self.mix_probs = (p / p.sum()).tolist()
        self.gain_db, self.reverb_prob, self.rt60 = gain_db, reverb_prob, rt60
        self.noisy_speech_prob, self.snr_db, self.generated_noise_prob = noisy_speech_prob, snr_db, generated_noise_prob
        rows, noise_rows = load_training_rows(manifests, noise_manifests or None)
        rows = [r for r in rows if float(r.get("duration", 0)) >= min_seconds]
        if not rows:
            raise ConfigError(f"no usable rows in the manifests (a training row is not noise, and lasts at "
                              f"least {min_seconds:g} s)")
        audio = [_decode(r, self.sample_rate, self.channels) for r in rows + noise_rows]
        lengths = [a.shape[1] for a in audio]
        flat = np.concatenate([np.clip(a, -1, 1) for a in audio], axis=1) * INT16_SCALE
        store = torch.from_numpy(np.round(flat).astype(np.int16))  # [C, N]
        self.storage_device = device if storage == "device" else torch.device("cpu")
        self.audio = store.to(device) if storage == "device" else (store.pin_memory() if device.type == "cuda" else store)
        n = len(rows)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        on = self.storage_device
        self.offsets = torch.tensor(starts, dtype=torch.long, device=on)
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=on)
        dur = torch.tensor(lengths[:n], dtype=torch.float64)
        category = [r.get("category", "general") for r in rows]
        speech = torch.tensor([c == "speech" for c in category])
        music = torch.tensor([c == "music" for c in category])
        self.weights_all = dur
        self.weights_no_music = torch.where(music, 0.0, dur) if (~music).any() else dur
        self.weights_speech = torch.where(speech, dur, 0.0) if speech.any() else None
        self.is_music = music
        self.noise_ids = torch.arange(n, len(audio))
        self.weights_noise = torch.tensor(lengths[n:], dtype=torch.float64)
        self.hours = sum(lengths) / self.sample_rate / 3600

    def _segments(self, ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random segments [len(ids), C, length] of the files ``ids`` (zero-padded at a random
        offset when a file is shorter), as float32 on the storage device."""
        ids = ids.to(self.storage_device)
        lengths, offsets = self.lengths[ids], self.offsets[ids]
        u = torch.rand(len(ids), generator=g).to(self.storage_device)
        span = (lengths - self.length).abs()
        shift = (u * (span + 1)).long().clamp_max(span)
        start = torch.where(lengths >= self.length, shift, -shift)  # short file: begins at +shift
        pos = start[:, None] + torch.arange(self.length, device=self.storage_device)[None]
        valid = (pos >= 0) & (pos < lengths[:, None])
        index = offsets[:, None] + pos.clamp(min=0).minimum(lengths[:, None] - 1)
        seg = self.audio[:, index.reshape(-1)].reshape(self.channels, len(ids), self.length).transpose(0, 1)
        return seg.float().mul_(1 / INT16_SCALE) * valid[:, None]

    def _choose(self, weights: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
        return torch.multinomial(weights, count, replacement=True, generator=g)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """The augmented batch of training step ``step`` [batch_size, C, length] (float32, on ``device``).

        The random draws (a few numbers per item) come from a host generator seeded by
        ``(seed, step)``; the audio work runs on the device, with no host synchronisation.
        """
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        b = batch_size
        if not self.augment:
            return self._segments(self._choose(self.weights_all, b, g), g).to(self.device, non_blocking=True)
        noisy = torch.rand(b, generator=g) < self.noisy_speech_prob
        if self.weights_speech is None:
            noisy[:] = False
        k = torch.multinomial(torch.tensor(self.mix_probs), b, replacement=True, generator=g) + 1
        k = torch.where(noisy, 1, k)
        ids = torch.stack([self._choose(self.weights_all, b, g) for _ in range(3)], dim=1)  # [B, 3]
        three = torch.stack([self._choose(self.weights_no_music, b, g) for _ in range(3)], dim=1)
        ids = torch.where((k == 3)[:, None], three, ids)
        if self.weights_speech is not None:
            ids[:, 0] = torch.where(noisy, self._choose(self.weights_speech, b, g), ids[:, 0])
        lo, hi = self.gain_db
        gains = 10 ** ((lo + (hi - lo) * torch.rand(b, 3, generator=g)) / 20) * (torch.arange(3)[None] < k[:, None])
        sources = self._segments(ids.reshape(-1), g).to(self.device, non_blocking=True)
        sources = sources.reshape(b, 3, self.channels, self.length)
        rows = noisy.nonzero().squeeze(1)
        if len(rows):  # speech + noise at the drawn SNR (before the gain, as the loader does)
            noise = self._noise(len(rows), g)
            snr = self.snr_db[0] + (self.snr_db[1] - self.snr_db[0]) * torch.rand(len(rows), generator=g)
            at = rows.to(self.device)
            speech = sources[at, 0]
            ps, pn = speech.pow(2).mean(dim=(1, 2)), noise.pow(2).mean(dim=(1, 2))
            ratio = ps / (pn * 10 ** (snr.to(self.device) / 10)).clamp_min(1e-20)
            scale = torch.where((ps > 0) & (pn > 0), ratio.sqrt(), torch.zeros_like(ps))
            sources[at, 0] = speech + scale[:, None, None] * noise
        y = (sources * gains.to(self.device)[:, :, None, None]).sum(dim=1)
        single_music = (k == 1) & ~noisy & self.is_music[ids[:, 0]]
        reverb = (torch.rand(b, generator=g) < self.reverb_prob) & ~single_music
        rt60 = self.rt60[0] + (self.rt60[1] - self.rt60[0]) * torch.rand(b, generator=g)
        rows = reverb.nonzero().squeeze(1)
        if len(rows):
            at = rows.to(self.device)
            y[at] = self._reverb(y[at], rt60[rows], g)
        peak = y.abs().amax(dim=(1, 2), keepdim=True)
        return torch.where(peak > 1, y * (0.99 / peak.clamp_min(1e-12)), y)

    def _noise(self, n: int, g: torch.Generator) -> torch.Tensor:
        """[n, C, length]: a noise file's segment, or (``generated_noise_prob``, or always
        without noise files) white/pink/brown noise of unit RMS."""
        generated = torch.rand(n, generator=g) < self.generated_noise_prob
        if len(self.noise_ids) == 0:
            generated[:] = True
        exponent = torch.randint(0, 3, (n,), generator=g).float()
        files = self._segments(self.noise_ids[self._choose(self.weights_noise, n, g)], g).to(self.device) \
            if len(self.noise_ids) else torch.zeros(n, self.channels, self.length, device=self.device)
        rows = generated.nonzero().squeeze(1)
        if len(rows):
            white = torch.randn(len(rows), self.channels, self.length, generator=g).to(self.device)
            spec = torch.fft.rfft(white, dim=-1)
            f = torch.arange(spec.shape[-1], device=self.device, dtype=torch.float32).clamp_min(1.0)
            spec = spec * f.pow(-exponent[rows].to(self.device)[:, None, None] / 2)
            coloured = torch.fft.irfft(spec, n=self.length, dim=-1)
            files[rows.to(self.device)] = coloured / (coloured.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-12)
        return files

    def _reverb(self, y: torch.Tensor, rt60: torch.Tensor, g: torch.Generator, max_seconds: float = 1.5,
                predelay_s: float = 0.002) -> torch.Tensor:
        """``y`` [B, C, T] convolved with a synthetic room response per item (``synthetic_rir``'s recipe)."""
        n = int(max_seconds * self.sample_rate)
        t = torch.arange(n, dtype=torch.float32) / self.sample_rate
        rt = rt60[:, None].float()
        tail = torch.randn(len(rt60), n, generator=g) * torch.exp(-6.908 * t[None] / rt) * (t[None] < rt)
        tail[:, : int(predelay_s * self.sample_rate)] = 0.0
        tail = tail * (rt / (tail.pow(2).sum(dim=1, keepdim=True) + 1e-12)).sqrt()
        tail[:, 0] = 1.0
        rir = (tail / tail.pow(2).sum(dim=1, keepdim=True).sqrt()).to(self.device)
        size = 1 << math.ceil(math.log2(self.length + n))
        out = torch.fft.irfft(torch.fft.rfft(y, size, dim=-1) * torch.fft.rfft(rir, size, dim=-1)[:, None], size, dim=-1)
        return out[..., : self.length]
