"""Training losses, MS-STFT discriminator and balancer (spec section 8), on real values."""

from __future__ import annotations

import math

import pytest
import torch

from opencodec.train import (
    Balancer,
    MelFilterbank,
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    generator_hinge_loss,
    mel_distance,
    mel_filterbank,
    relative_feature_matching_loss,
    si_snr,
    waveform_l1,
)
from opencodec.train.losses import hz_to_mel, mel_to_hz

SR = 24000


def _tone(length: int = SR // 4, batch: int = 2) -> torch.Tensor:
    t = torch.arange(length) / SR
    x = 0.5 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 3000 * t)
    return x.expand(batch, 1, length).clone()


# --------------------------------------------------------------------------- adversarial
def test_hinge_losses_known_values() -> None:
    real = [torch.tensor([2.0, 0.5])]
    fake = [torch.tensor([-2.0, 0.5])]
    # D: mean(relu(1-2), relu(1-0.5)) = 0.25 ; mean(relu(1-2), relu(1+0.5)) = 0.75
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(1.0)
    # G: mean(relu(1+2), relu(1-0.5)) = 1.75
    assert generator_hinge_loss(fake).item() == pytest.approx(1.75)
    # mean over discriminators: second one perfectly confident -> 0
    real2 = real + [torch.full((1, 1, 3, 4), 5.0)]
    fake2 = fake + [torch.full((1, 1, 3, 4), -5.0)]
    assert discriminator_hinge_loss(real2, fake2).item() == pytest.approx(0.5)
    assert generator_hinge_loss(fake2).item() == pytest.approx((1.75 + 6.0) / 2)


def test_feature_matching_zero_scale_invariant_and_detached() -> None:
    real = [[torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 3)], [torch.randn(2, 4, 7, 2)]]
    fake = [[f + 0.3 * torch.randn_like(f) for f in fm] for fm in real]
    assert relative_feature_matching_loss(real, real).item() == 0.0
    base = relative_feature_matching_loss(real, fake)
    scaled = relative_feature_matching_loss([[100 * f for f in fm] for fm in real],
                                            [[100 * f for f in fm] for fm in fake])
    assert base.item() > 0.1
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)
    # one map, known value: |f(x) - f(x_hat)| = 1 everywhere, |f(x)| = 2 -> 0.5
    assert relative_feature_matching_loss([[torch.full((3,), 2.0)]],
                                          [[torch.full((3,), 1.0)]]).item() == pytest.approx(0.5)
    r = torch.randn(4, requires_grad=True)
    f = torch.randn(4, requires_grad=True)
    relative_feature_matching_loss([[r]], [[f]]).backward()
    assert r.grad is None and f.grad is not None


# --------------------------------------------------------------------------- mel
def test_mel_scale_and_filterbank() -> None:
    assert hz_to_mel(1000.0).item() == pytest.approx(1000.0, abs=0.1)  # HTK: 1 kHz ~ 1000 mel
    assert mel_to_hz(hz_to_mel(5000.0)).item() == pytest.approx(5000.0)
    fb = mel_filterbank(SR, 2048, 64)
    assert fb.shape == (64, 1025)
    assert fb.min().item() >= 0.0 and fb.max().item() <= 1.0 + 1e-6
    assert (fb.max(dim=1).values > 0.5).all()  # every band non-empty at this resolution
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all() and peaks[-1] > peaks[0]
    # partition of unity between the first and last peaks
    sums = fb.sum(dim=0)[peaks[0] + 1: peaks[-1]]
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    # nothing above f_max
    fb_lim = mel_filterbank(SR, 2048, 40, f_min=100.0, f_max=4000.0)
    freqs = torch.arange(1025) * SR / 2048
    assert fb_lim[:, freqs > 4000].abs().sum() == 0 and fb_lim[:, freqs < 100].abs().sum() == 0


def test_small_window_empty_bands_are_dropped() -> None:
    raw = mel_filterbank(SR, 32, 64)
    n_empty = int((raw.sum(dim=1) == 0).sum())
    assert n_empty > 0  # 17 bins cannot feed 64 bands
    fb = MelFilterbank(SR, 32, 64)
    assert fb.n_bands == 64 - n_empty and fb.n_bands > 0
    assert (fb.fb.sum(dim=1) > 0).all()


def test_mel_loss_zero_noise_silence_short() -> None:
    loss = MultiScaleMelLoss(SR)
    x = _tone()
    assert loss(x, x).item() == 0.0
    noise = torch.randn_like(x)
    small, large = loss(x + 0.01 * noise, x).item(), loss(x + 0.1 * noise, x).item()
    assert 0 < small < large
    silence = torch.zeros_like(x)
    assert loss(silence, silence).item() == 0.0
    pred = silence.clone().requires_grad_(True)
    value = loss(pred, x)
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 0
    assert torch.isfinite(pred.grad).all()
    for length in (1, 10, 100):
        short = torch.randn(1, 1, length)
        v = loss(short, torch.zeros_like(short))
        assert math.isfinite(v.item())


def test_mel_loss_alpha_weights_log_term() -> None:
    x = _tone()
    y = 0.5 * x  # -6 dB: log term is the same at every scale, linear term small
    l1_only = MultiScaleMelLoss(SR, scales=[8], alpha=0.0)(y, x)
    both = MultiScaleMelLoss(SR, scales=[8], alpha=1.0)(y, x)
    assert both.item() > l1_only.item() > 0


def _noise(length: int = SR // 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, 1, length, generator=g)  # broadband: no band at the log floor


@pytest.mark.parametrize("scales", [[6], [8], [6, 8]])
def test_mel_loss_log_term_pinned_value(scales: list[int]) -> None:
    # y = x / 2 quarters every *power* mel energy, so every log10 difference is log10(1/4)
    # and the log term (a mean *squared* error) is log10(4)^2 at every scale; the mean over
    # scales of equal values is that value again (a sum over 2 scales would double it).
    x = _noise()
    y = 0.5 * x
    l1_only = MultiScaleMelLoss(SR, scales=scales, alpha=0.0)(y, x).item()
    both = MultiScaleMelLoss(SR, scales=scales, alpha=1.0)(y, x).item()
    assert both - l1_only == pytest.approx(math.log10(4) ** 2, rel=2e-3)
    weighted = MultiScaleMelLoss(SR, scales=scales, alpha=2.5)(y, x).item()
    assert weighted - l1_only == pytest.approx(2.5 * math.log10(4) ** 2, rel=2e-3)


def test_mel_loss_linear_term_and_scale_average() -> None:
    x = _noise()
    y = 0.5 * x
    single = MultiScaleMelLoss(SR, scales=[8], alpha=0.0)
    # linear L1 term: |S(x)/4 - S(x)| = 3/4 S(x) for every (non-negative) energy
    energies = single.mels[0](x)
    assert single(y, x).item() == pytest.approx(0.75 * energies.mean().item(), rel=1e-5)
    # the multi-scale loss is the mean of the single-scale losses (docstring: 1/|scales| sum)
    g = torch.Generator().manual_seed(1)
    z = x + 0.05 * torch.randn(x.shape, generator=g)
    alphas = [0.7, 1.9]
    multi = MultiScaleMelLoss(SR, scales=[6, 8], alpha=alphas)(z, x).item()
    singles = [MultiScaleMelLoss(SR, scales=[s], alpha=a)(z, x).item()
               for s, a in zip([6, 8], alphas)]
    assert multi == pytest.approx(sum(singles) / 2, rel=1e-6)
    assert singles[0] != pytest.approx(singles[1], rel=1e-2)  # the two scales really differ


def test_mel_distance_and_waveform_l1() -> None:
    x = 0.05 * torch.randn(2, 1, SR // 4)  # broadband: no band sits at the log floor
    assert mel_distance(x, x, SR).item() == 0.0
    # scaling by 10 changes every unclamped log10 energy by exactly 2 (power ratio 100)
    assert mel_distance(10 * x, x, SR).item() == pytest.approx(2.0, rel=1e-2)
    assert waveform_l1(x + 0.25, x).item() == pytest.approx(0.25)


def test_si_snr() -> None:
    ref = torch.randn(2, 1, 16000)
    assert (si_snr(0.3 * ref, ref) > 60).all()
    noise = torch.randn_like(ref)
    noise = noise - noise.mean(dim=-1, keepdim=True)
    r = ref - ref.mean(dim=-1, keepdim=True)
    noise = noise - (noise * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True) * r
    for target_db in (0.0, 10.0, 20.0):
        gain = (r.pow(2).sum(-1) / noise.pow(2).sum(-1) / 10 ** (target_db / 10)).sqrt()
        est = ref + gain[..., None] * noise
        out = si_snr(est, ref)
        assert out.shape == (2,)
        assert torch.allclose(out, torch.full_like(out, target_db), atol=1e-2)


# --------------------------------------------------------------------------- discriminator
def test_discriminator_shapes_and_gradients() -> None:
    disc = MultiScaleSTFTDiscriminator(filters=8)
    x = torch.randn(2, 1, 4000, requires_grad=True)
    logits, feats = disc(x)
    assert len(logits) == len(feats) == 5 == disc.num_discriminators
    for n_fft, logit, fmap in zip((2048, 1024, 512, 256, 128), logits, feats):
        frames = (4000 - n_fft) // (n_fft // 4) + 1
        freq = n_fft // 2 + 1
        for _ in range(3):
            freq = (freq + 1) // 2
        assert logit.shape == (2, 1, frames, freq)  # [B, 1, time, freq]
        assert len(fmap) == 5 and all(f.shape[:3] == (2, 8, frames) for f in fmap)
    sum(lg.sum() for lg in logits).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    stereo_logits, _ = MultiScaleSTFTDiscriminator(filters=4, in_channels=2)(torch.randn(1, 2, 4000))
    assert stereo_logits[-1].shape[:2] == (1, 1)
    short_logits, _ = disc(torch.randn(1, 1, 100))  # shorter than every window: padded
    assert all(torch.isfinite(lg).all() for lg in short_logits)


def test_discriminator_matches_official_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same convolutions (axes, padding, strides, dilations) as encodec/msstftd.py.

    torchaudio is a stand-in here, so the official module gets a minimal complex
    Spectrogram (normalised, center=False); weights are copied across.
    """
    import sys

    import official_ref  # noqa: F401  (installs the torchaudio stand-in)

    class _Spectrogram(torch.nn.Module):
        def __init__(self, n_fft: int, hop_length: int, win_length: int, window_fn, normalized: bool,
                     center: bool, pad_mode, power) -> None:
            super().__init__()
            self.n_fft, self.hop = n_fft, hop_length
            self.window = window_fn(win_length)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, t = x.shape
            s = torch.stft(x.reshape(b * c, t), self.n_fft, self.hop, window=self.window,
                           center=False, return_complex=True) / self.window.pow(2).sum().sqrt()
            return s.reshape(b, c, *s.shape[-2:])

    monkeypatch.setattr(sys.modules["torchaudio"].transforms, "Spectrogram", _Spectrogram, raising=False)
    from encodec.msstftd import MultiScaleSTFTDiscriminator as Official

    n_ffts = [512, 256, 128]
    ref = Official(filters=8, n_ffts=n_ffts, hop_lengths=[n // 4 for n in n_ffts], win_lengths=n_ffts)
    ours = MultiScaleSTFTDiscriminator(filters=8, n_ffts=n_ffts, weight_norm_first=False)
    with torch.no_grad():
        for d_ref, d_ours in zip(ref.discriminators, ours.discriminators):
            pairs = [(a.conv, b) for a, b in zip(d_ref.convs, d_ours.convs)]
            pairs.append((d_ref.conv_post.conv, d_ours.conv_post))
            for a, b in pairs:
                b.bias.copy_(a.bias)
                if hasattr(a, "weight_g"):
                    b.parametrizations.weight.original0.copy_(a.weight_g)
                    b.parametrizations.weight.original1.copy_(a.weight_v)
                else:
                    b.weight.copy_(a.weight)
    x = torch.randn(2, 1, 3000)
    (lr, fr), (lo, fo) = ref(x), ours(x)
    for a, b in zip(lr, lo):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    for ma, mb in zip(fr, fo):
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ma, mb))


# --------------------------------------------------------------------------- balancer
def _two_losses(param: torch.Tensor, a: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Losses with disjoint gradient supports on the output: 'big' ~1000x 'small'."""
    out = param * 1.0
    half = out.shape[-1] // 2
    losses = {"big": 1000 * (out[..., :half] * a).sum(), "small": 0.5 * out[..., half:].pow(2).sum()}
    return losses, out


def _item_norm(g: torch.Tensor) -> float:
    return g.flatten(1).norm(dim=1).mean().item()


def test_balancer_shares_follow_weights() -> None:
    a = torch.randn(3, 1, 32)
    param = torch.randn(3, 1, 64, requires_grad=True)
    bal = Balancer({"big": 1.0, "small": 3.0}, total_norm=2.0)
    losses, out = _two_losses(param, a)
    raw_big = _item_norm(1000 * a)
    raw_small = _item_norm(param.detach()[..., 32:])
    stats = bal.backward(losses, out)
    # bias correction: after one step the EMA equals the raw norm exactly
    assert stats["ema_norm/big"] == pytest.approx(raw_big, rel=1e-6)
    assert stats["grad_norm/small"] == pytest.approx(raw_small, rel=1e-6)
    g_big, g_small = param.grad[..., :32], param.grad[..., 32:]
    assert _item_norm(g_big) == pytest.approx(2.0 * 1 / 4, rel=1e-5)
    assert _item_norm(g_small) == pytest.approx(2.0 * 3 / 4, rel=1e-5)
    assert stats["share/big"] == pytest.approx(0.25, rel=1e-5)
    assert stats["share/small"] == pytest.approx(0.75, rel=1e-5)
    # second step with a 10x larger 'big' gradient: EMA = (beta * n1 + n2) / (beta + 1)
    param.grad = None
    losses, out = _two_losses(param, 10 * a)
    stats = bal.backward(losses, out)
    beta = 0.999
    assert stats["ema_norm/big"] == pytest.approx((beta * raw_big + 10 * raw_big) / (beta + 1), rel=1e-5)


def test_balancer_state_round_trip() -> None:
    a = torch.randn(2, 1, 16)
    param = torch.randn(2, 1, 32, requires_grad=True)
    first = Balancer({"big": 1.0, "small": 1.0}, ema_decay=0.9)
    for scale in (1.0, 3.0):
        first.backward(*_two_losses(param, scale * a))
    second = Balancer({"big": 1.0, "small": 1.0}, ema_decay=0.9)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()
    param.grad = None
    s1 = first.backward(*_two_losses(param, 7 * a))
    g1 = param.grad.clone()
    param.grad = None
    s2 = second.backward(*_two_losses(param, 7 * a))
    assert s1 == s2 and torch.equal(g1, param.grad)


def test_balancer_disabled_is_weighted_sum() -> None:
    a = torch.randn(2, 1, 16)
    param = torch.randn(2, 1, 32, requires_grad=True)
    Balancer({"big": 0.1, "small": 3.0}, balance=False).backward(*_two_losses(param, a))
    balanced_off = param.grad.clone()
    param.grad = None
    losses, _ = _two_losses(param, a)
    (0.1 * losses["big"] + 3.0 * losses["small"]).backward()
    assert torch.allclose(balanced_off, param.grad, rtol=1e-6)
    with pytest.raises(KeyError):
        Balancer({"big": 1.0}).backward(*_two_losses(param, a))
