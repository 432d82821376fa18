"""Training losses and validation metrics for EnCodec (spec section 8).

Everything here works on waveforms shaped ``[B, C, T]`` (batch, audio channels,
samples; amplitudes in [-1, 1]) unless a docstring says otherwise, and is built
on ``torch.stft`` only (torchaudio is not usable in this environment).

Contents
--------
* Mel scale and filterbank: :func:`hz_to_mel`, :func:`mel_to_hz`,
  :func:`mel_filterbank`, :class:`MelFilterbank`, :class:`MelSpectrogram`.
* Reconstruction losses: :func:`waveform_l1` (the paper's time loss l_t) and
  :class:`MultiScaleMelLoss` (the paper's frequency loss l_f).
* Metrics: :func:`mel_distance`, :func:`si_snr`.
* Adversarial losses (hinge, as in the paper): :func:`discriminator_hinge_loss`,
  :func:`generator_hinge_loss`, :func:`relative_feature_matching_loss`.

Mel scale
---------
The HTK mel scale, ``mel(f) = 2595 * log10(1 + f / 700)``, with triangular filters
whose corners are ``n_mels + 2`` points equally spaced in mel between ``f_min`` and
``f_max``; triangles are evaluated at the FFT bin frequencies, peak value 1 (no area
normalisation by default, like ``torchaudio``'s default, which audiocraft uses);
``norm="slaney"`` divides each triangle by its width in Hz / 2 (equal area).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "hz_to_mel", "mel_to_hz", "mel_filterbank", "MelFilterbank", "MelSpectrogram",
    "MultiScaleMelLoss", "audiocraft_alphas", "waveform_l1", "mel_distance", "si_snr",
    "discriminator_hinge_loss", "generator_hinge_loss", "relative_feature_matching_loss",
]

#: Floor applied to mel energies before taking the log (clamp, not add).
LOG_EPS = 1e-5


# --------------------------------------------------------------------------- mel scale
def hz_to_mel(freq_hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``; ``freq_hz`` in Hz, returns mels."""
    f = torch.as_tensor(freq_hz, dtype=torch.float64)
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(mels: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`: ``700 * (10^(m / 2595) - 1)`` Hz."""
    m = torch.as_tensor(mels, dtype=torch.float64)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None, norm: str | None = None) -> torch.Tensor:
    """Triangular HTK mel filterbank, shape ``[n_mels, n_fft // 2 + 1]`` (float32).

    Row ``m`` is a triangle rising linearly (in Hz) from corner ``c_m`` to ``c_{m+1}``
    (value 1) and falling back to 0 at ``c_{m+2}``, where ``c_0 .. c_{n_mels+1}`` are
    equally spaced on the HTK mel scale between ``f_min`` and ``f_max`` (default
    ``sample_rate / 2``). It is evaluated at the bin frequencies
    ``k * sample_rate / n_fft``. Between the first and the last peak the rows sum to
    exactly 1 (adjacent triangles form a partition of unity).

    When the FFT is coarse (e.g. ``n_fft=32`` at 24 kHz: 17 bins for 64 bands) some
    triangles fall between two bins and their row is all zeros; they are returned as
    zero rows here. :class:`MelFilterbank` can drop them.

    Args:
        sample_rate: sampling rate in Hz.
        n_fft: FFT size in samples.
        n_mels: number of triangular filters.
        f_min: lowest corner frequency in Hz.
        f_max: highest corner frequency in Hz (default Nyquist).
        norm: ``None`` (peak 1) or ``"slaney"`` (each row scaled by
            ``2 / (c_{m+2} - c_m)``, i.e. constant area).
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}")
    bin_hz = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    corners = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)),
                                       n_mels + 2, dtype=torch.float64))
    lower, centre, upper = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (upper - lower))
    return fb.float()


class MelFilterbank(nn.Module):
    """Apply a mel filterbank to a power spectrogram, optionally dropping empty bands.

    ``forward(spec [..., n_fft//2+1, N]) -> [..., n_bands, N]`` where ``n_bands`` is
    ``n_mels`` minus the number of all-zero filters when ``drop_empty`` (the default).
    Dropping keeps small windows (e.g. 32 samples with 64 bands) free of constant-zero
    bands, whose log would only ever be the clamp floor and carry no information.
    """

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                 f_max: float | None = None, norm: str | None = None, drop_empty: bool = True) -> None:
        super().__init__()
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, norm)
        if drop_empty:
            fb = fb[fb.sum(dim=1) > 0]
        self.register_buffer("fb", fb, persistent=False)

    @property
    def n_bands(self) -> int:
        """Number of (non-empty, if dropped) mel bands produced."""
        return int(self.fb.shape[0])

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``spec`` [..., F, N] (power) -> mel energies [..., n_bands, N]."""
        return torch.matmul(self.fb.to(spec.dtype), spec)


# --------------------------------------------------------------------------- spectrograms
def _pad_for_stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Pad ``x`` [..., T] for a ``center=False`` STFT (audiocraft's framing).

    ``(n_fft - hop) // 2`` samples on each side (reflect, or zeros when the input is
    too short to reflect), then zeros on the right so that the frames tile the
    signal exactly and there is at least one frame. Frames = ``ceil((T' - n_fft) /
    hop) + 1``, about ``T / hop``.
    """
    p = (n_fft - hop) // 2
    mode = "reflect" if x.shape[-1] > p else "constant"
    x = F.pad(x, (p, p), mode=mode)
    length = x.shape[-1]
    n_frames = max(1, math.ceil((length - n_fft) / hop) + 1)
    extra = (n_frames - 1) * hop + n_fft - length
    return F.pad(x, (0, extra)) if extra > 0 else x


def stft_power(x: torch.Tensor, n_fft: int, hop: int, normalized: bool = True) -> torch.Tensor:
    """Power spectrogram ``|STFT|^2`` of ``x`` [..., T] -> [..., n_fft//2+1, N].

    Periodic Hann window of ``n_fft`` samples, ``center=False`` after
    :func:`_pad_for_stft`. ``normalized`` divides the complex STFT by
    ``sqrt(sum(window^2))`` (torchaudio's ``normalized=True``), so that a unit-power
    white noise has bins of mean power 1 whatever the window size.
    """
    lead = x.shape[:-1]
    x = _pad_for_stft(x.reshape(-1, x.shape[-1]), n_fft, hop)
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=False, return_complex=True)
    if normalized:
        spec = spec / window.pow(2).sum().sqrt()
    power = spec.real.pow(2) + spec.imag.pow(2)
    return power.reshape(*lead, *power.shape[-2:])


class MelSpectrogram(nn.Module):
    """Mel power spectrogram: ``x`` [B, C, T] -> [B, C, n_bands, N] (linear energies).

    Window ``n_fft`` samples (periodic Hann), hop ``hop_length`` samples, framing as in
    :func:`_pad_for_stft`, power spectrum (normalised STFT by default, as in the
    paper), then :class:`MelFilterbank` (HTK, empty bands dropped).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float | None = None, normalized: bool = True,
                 drop_empty: bool = True) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.normalized = n_fft, hop_length, normalized
        self.filterbank = MelFilterbank(sample_rate, n_fft, n_mels, f_min, f_max, drop_empty=drop_empty)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [..., T] -> mel energies [..., n_bands, N]."""
        return self.filterbank(stft_power(x, self.n_fft, self.hop_length, self.normalized))


def log_mel(mel: torch.Tensor, eps: float = LOG_EPS) -> torch.Tensor:
    """``log10(max(mel, eps))``: the clamp keeps silence finite (floor -5 for 1e-5)."""
    return torch.log10(mel.clamp(min=eps))


# --------------------------------------------------------------------------- reconstruction
def waveform_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Time-domain loss l_t: mean absolute difference of two waveforms [B, C, T] (scalar)."""
    return F.l1_loss(x, y)


def audiocraft_alphas(scales: Iterable[int]) -> list[float]:
    """audiocraft's per-scale log-L2 weights ``alpha_i = sqrt(2^i - 1)``."""
    return [math.sqrt(2 ** i - 1) for i in scales]


class MultiScaleMelLoss(nn.Module):
    """Multi-scale mel reconstruction loss l_f (EnCodec paper, eq. 2).

    For each scale ``i`` in ``scales`` (paper: 5..11) a mel spectrogram ``S_i`` with a
    window of ``2^i`` samples, hop ``2^i / 4`` and ``n_mels`` bands (empty bands
    dropped, see :class:`MelFilterbank`) is computed, and::

        loss = 1/|scales| * sum_i [ mean|S_i(x) - S_i(y)|
                                    + alpha_i * mean( (log10 S_i(x) - log10 S_i(y))^2 ) ]

    with ``log10`` applied after clamping energies at ``eps`` (1e-5). The paper writes
    ``||S_i(x) - S_i(y)||_1 + alpha_i ||S_i(x) - S_i(y)||_2``; like audiocraft we take
    the L1 term on linear mel energies and the L2 term as the *mean squared* error of
    log mel energies, and average (rather than sum) over elements and scales, so the
    value does not depend on the signal length. The paper sets ``alpha_i = 1`` (the
    default here); ``alpha=audiocraft_alphas(scales)`` gives audiocraft's
    ``sqrt(2^i - 1)``.

    Args:
        sample_rate: Hz.
        scales: exponents ``i`` of the window sizes ``2^i``.
        n_mels: mel bands per scale (before dropping empty ones).
        alpha: one weight for all scales, or one per scale.
        normalized: normalised STFT (divide by ``sqrt(sum window^2)``), as in the paper.
        eps: clamp floor before the log.
    """

    def __init__(self, sample_rate: int, scales: Iterable[int] = range(5, 12), n_mels: int = 64,
                 alpha: float | Sequence[float] = 1.0, f_min: float = 0.0, f_max: float | None = None,
                 normalized: bool = True, eps: float = LOG_EPS) -> None:
        super().__init__()
        self.scales = list(scales)
        alphas = [float(alpha)] * len(self.scales) if isinstance(alpha, (int, float)) else list(alpha)
        if len(alphas) != len(self.scales):
            raise ValueError(f"{len(alphas)} alphas for {len(self.scales)} scales")
        self.alphas = alphas
        self.eps = eps
        self.mels = nn.ModuleList(
            MelSpectrogram(sample_rate, 2 ** i, 2 ** i // 4, n_mels, f_min, f_max, normalized)
            for i in self.scales)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y`` [B, C, T] (prediction, target) -> scalar loss."""
        total = x.new_zeros(())
        for alpha, mel in zip(self.alphas, self.mels):
            sx, sy = mel(x), mel(y)
            total = total + F.l1_loss(sx, sy)
            total = total + alpha * F.mse_loss(log_mel(sx, self.eps), log_mel(sy, self.eps))
        return total / len(self.mels)


# --------------------------------------------------------------------------- metrics
@functools.lru_cache(maxsize=32)
def _cached_mel(sample_rate: int, n_fft: int, n_mels: int) -> MelSpectrogram:
    return MelSpectrogram(sample_rate, n_fft, n_fft // 4, n_mels)


@torch.no_grad()
def mel_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int,
                 scales: Iterable[int] = range(5, 12), n_mels: int = 64) -> torch.Tensor:
    """Validation metric: mean over scales of mean |log10 S_i(x) - log10 S_i(y)|.

    Same spectrograms as :class:`MultiScaleMelLoss` (window ``2^i``, hop ``2^i/4``,
    HTK mel, clamp at 1e-5). Units: log10 energy (1.0 = a factor 10 in energy, 10 dB).
    ``x``, ``y`` [B, C, T] -> scalar tensor (no gradient).
    """
    dists = []
    for i in scales:
        mel = _cached_mel(sample_rate, 2 ** i, n_mels).to(x.device)
        dists.append(F.l1_loss(log_mel(mel(x)), log_mel(mel(y))))
    return torch.stack(dists).mean()


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB per batch item: [B, ...] x [B, ...] -> [B].

    Each item (all channels and samples flattened) is made zero-mean; the reference is
    scaled to its projection ``s = (<e, r> / ||r||^2) r`` on the estimate ``e`` and
    ``SI-SNR = 10 log10(||s||^2 / ||e - s||^2)``. ``eps`` keeps silence finite.
    """
    e = estimate.reshape(estimate.shape[0], -1)
    r = reference.reshape(reference.shape[0], -1)
    e = e - e.mean(dim=1, keepdim=True)
    r = r - r.mean(dim=1, keepdim=True)
    scale = (e * r).sum(dim=1, keepdim=True) / (r.pow(2).sum(dim=1, keepdim=True) + eps)
    target = scale * r
    noise = e - target
    return 10 * torch.log10((target.pow(2).sum(dim=1) + eps) / (noise.pow(2).sum(dim=1) + eps))


# --------------------------------------------------------------------------- adversarial
def discriminator_hinge_loss(real_logits: Sequence[torch.Tensor],
                             fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminators (scalar).

    ``1/K sum_k [ mean relu(1 - D_k(x)) + mean relu(1 + D_k(x_hat)) ]`` over the ``K``
    sub-discriminators; each logits tensor has any shape (e.g. [B, 1, T', F']).
    Pass ``fake_logits`` computed on the *detached* generator output.
    """
    _check_same_count(real_logits, fake_logits)
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Adversarial loss of the generator (scalar): ``1/K sum_k mean relu(1 - D_k(x_hat))``."""
    if len(fake_logits) == 0:
        raise ValueError("no discriminator outputs")
    return torch.stack([F.relu(1 - f).mean() for f in fake_logits]).mean()


def relative_feature_matching_loss(real_feats: Sequence[Sequence[torch.Tensor]],
                                   fake_feats: Sequence[Sequence[torch.Tensor]],
                                   eps: float = 1e-8) -> torch.Tensor:
    """Relative feature matching (scalar), EnCodec paper eq. for l_feat.

    ``1/(K L) sum_{k,l} mean|f_kl(x) - f_kl(x_hat)| / mean|f_kl(x)|`` over the ``K``
    discriminators and their ``L`` feature maps (any shapes). Real features are
    detached, so the loss only trains the generator; it is invariant to a common
    scaling of both feature maps and ``eps`` guards all-zero real features.
    """
    _check_same_count(real_feats, fake_feats)
    terms = []
    for reals, fakes in zip(real_feats, fake_feats):
        _check_same_count(reals, fakes)
        for real, fake in zip(reals, fakes):
            real = real.detach()
            terms.append((real - fake).abs().mean() / (real.abs().mean() + eps))
    return torch.stack(terms).mean()


def _check_same_count(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"expected matching non-empty lists, got {len(a)} and {len(b)}")
