"""Codec training pinned by value against independent references: the mel
spectrograms and losses against a numpy STFT written here, the feature-matching mean, the
balancer's weight sum and norms, the training step's real/fake halves and commitment weight, the
speech split and train/valid groups, the loudness gates, and the augmentation's peak, reverb and RIR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from opencodec.train import Balancer, mel_distance, relative_feature_matching_loss, si_snr
from opencodec.train.losses import MelSpectrogram, MultiScaleMelLoss, mel_filterbank, stft_power

SR = 24000


# --------------------------------------------------------------------------- numpy reference
def _ref_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Power STFT of 1-d ``x`` as audiocraft frames it: reflect-pad ``(n_fft - hop) // 2`` each
    side, zero-pad right to whole frames, periodic Hann, no centring, divided by sqrt(sum w^2).
    Returns [n_fft // 2 + 1, frames]."""
    p = (n_fft - hop) // 2
    x = np.pad(x.astype(np.float64), (p, p), mode="reflect")
    frames = max(1, math.ceil((len(x) - n_fft) / hop) + 1)
    x = np.pad(x, (0, max(0, (frames - 1) * hop + n_fft - len(x))))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    cols = [np.fft.rfft(x[k * hop: k * hop + n_fft] * window) for k in range(frames)]
    spec = np.stack(cols, axis=1) / np.sqrt(np.sum(window ** 2))
    return np.abs(spec) ** 2


def _ref_mel(x: np.ndarray, n_fft: int, n_mels: int = 64) -> np.ndarray:
    """Mel energies [bands, frames] of 1-d ``x`` with hop ``n_fft // 4`` (empty bands dropped)."""
    fb = mel_filterbank(SR, n_fft, n_mels).double().numpy()
    fb = fb[fb.sum(axis=1) > 0]
    return fb @ _ref_power(x, n_fft, n_fft // 4)


def _signal(length: int, seed: int) -> np.ndarray:
    """Broadband noise with a very quiet second half (mel energies around and under 1e-5)."""
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.standard_normal(length)
    x[length // 2:] *= 3e-3
    return x


def test_mel_spectrogram_matches_a_numpy_stft() -> None:
    x = _signal(3000, 0)
    for n_fft in (32, 256, 2048):
        ours = MelSpectrogram(SR, n_fft, n_fft // 4)(torch.tensor(x, dtype=torch.float64)[None, None])[0, 0]
        ref = _ref_mel(x, n_fft)
        assert ours.shape == ref.shape, n_fft
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6, atol=1e-12)


def test_normalised_stft_gives_unit_power_white_noise_whatever_the_window() -> None:
    # the docstring's promise: a unit-power white noise has bins of mean power 1
    x = torch.randn(1, 1, 48000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for n_fft in (64, 512, 2048):
        power = stft_power(x, n_fft, n_fft // 4)
        assert power[..., 1:-1, :].mean().item() == pytest.approx(1.0, rel=0.05), n_fft


def test_multiscale_mel_loss_matches_the_reference_formula() -> None:
    x, y = _signal(4000, 1), _signal(4000, 2)
    scales, alphas, eps = [5, 7, 9], [0.5, 1.0, 2.0], 1e-5
    expected = 0.0
    for i, a in zip(scales, alphas):
        sx, sy = _ref_mel(y, 2 ** i), _ref_mel(x, 2 ** i)
        assert (sx < eps).any() and (sx > eps).any()  # the clamp floor matters in this signal
        expected += np.mean(np.abs(sx - sy)) + a * np.mean(
            (np.log10(np.maximum(sx, eps)) - np.log10(np.maximum(sy, eps))) ** 2)
    expected /= len(scales)
    loss = MultiScaleMelLoss(SR, scales=scales, alpha=alphas)
    got = loss(torch.tensor(y)[None, None], torch.tensor(x)[None, None]).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_mel_distance_matches_the_reference_formula() -> None:
    x, y = _signal(4000, 3), _signal(4000, 4)
    eps = 1e-5
    expected = np.mean([np.mean(np.abs(np.log10(np.maximum(_ref_mel(x, 2 ** i), eps))
                                       - np.log10(np.maximum(_ref_mel(y, 2 ** i), eps))))
                        for i in range(5, 12)])
    got = mel_distance(torch.tensor(x, dtype=torch.float32)[None, None],
                       torch.tensor(y, dtype=torch.float32)[None, None], SR).item()
    assert got == pytest.approx(expected, rel=1e-4)


def test_si_snr_ignores_a_dc_offset_of_the_estimate() -> None:
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(2, 1, 8000, generator=g)
    noise = torch.randn(2, 1, 8000, generator=g)
    est = ref + 0.3 * noise
    assert torch.allclose(si_snr(est + 0.7, ref), si_snr(est, ref), atol=1e-3)
    assert torch.allclose(si_snr(est, ref + 0.7), si_snr(est, ref), atol=1e-3)


def test_feature_matching_is_the_mean_over_every_map_of_every_discriminator() -> None:
    # terms: |2-1|/2 = 0.5, 0, |4-1|/4 = 0.75 -> mean 1.25 / 3 (a sum would be 1.25)
    real = [[torch.full((2, 3), 2.0), torch.full((4,), 1.0)], [torch.full((5,), 4.0)]]
    fake = [[torch.full((2, 3), 1.0), torch.full((4,), 1.0)], [torch.full((5,), 1.0)]]
    assert relative_feature_matching_loss(real, fake).item() == pytest.approx(1.25 / 3)


# --------------------------------------------------------------------------- balancer
def test_balancer_normalises_by_the_weights_of_the_losses_it_is_given() -> None:
    # the trainer passes only the losses of this step (no adv/feat before the adversary
    # starts): their weights alone make the sum, so the output gradient has the norm R
    g = torch.Generator().manual_seed(0)
    param = torch.randn(3, 1, 40, generator=g, requires_grad=True)
    bal = Balancer({"l1": 0.1, "mel": 1.0, "adv": 3.0, "feat": 3.0}, total_norm=2.0)
    out = param * 1.0
    a = torch.randn(3, 1, 20, generator=g)
    bal.backward({"l1": (out[..., :20] * a).sum(), "mel": 5 * out[..., 20:].pow(2).sum()}, out)
    # disjoint supports: each half carries its own component, of mean item norm R * w / (0.1 + 1)
    item_norm = lambda t: t.flatten(1).norm(dim=1).mean().item()  # noqa: E731
    assert item_norm(param.grad[..., :20]) == pytest.approx(2.0 * 0.1 / 1.1, rel=1e-5)
    assert item_norm(param.grad[..., 20:]) == pytest.approx(2.0 * 1.0 / 1.1, rel=1e-5)


def test_balancer_norm_is_per_batch_item_then_mean() -> None:
    bal = Balancer({"a": 1.0})
    grad = torch.zeros(2, 1, 4)
    grad[0, 0, :] = 1.0  # item norms 2 and 0
    assert bal.grad_norm(grad).item() == pytest.approx(1.0)  # (not the tensor norm 2)
    assert Balancer({"a": 1.0}, per_batch_item=False).grad_norm(grad).item() == pytest.approx(2.0)


# --------------------------------------------------------------------------- training step
def _parts(commit_weight: float = 1.0, weights: dict[str, float] | None = None, world_size: int = 1):
    """A tiny generator and discriminator with SGD optimisers of rate 0 (the step's gradients
    stay readable in ``.grad`` and no weight moves)."""
    import contextlib

    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.train import MultiScaleSTFTDiscriminator
    from opencodec.train.step import StepParts, TrainerModule

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.from_dict(
        {"name": "unit_24khz", "n_filters": 4, "dimension": 16, "ratios": [8, 5, 4, 2], "lstm": 1,
         "n_q": 4, "bins": 16, "target_bandwidths": [0.6, 1.2]})).train()
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 128))
    weights = weights if weights is not None else {"l1": 0.1, "mel": 1.0, "adv": 3.0, "feat": 3.0}
    return StepParts(model=model, trainer=TrainerModule(model), disc=disc, disc_run=disc,
                     opt_g=torch.optim.SGD(model.parameters(), lr=0.0),
                     opt_d=torch.optim.SGD(disc.parameters(), lr=0.0),
                     balancer=Balancer(weights), mel_loss=MultiScaleMelLoss(SR, scales=[6, 8]),
                     autocast=contextlib.nullcontext, commit_weight=commit_weight, world_size=world_size)


def _wav(seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(2, 1, 2400, generator=torch.Generator().manual_seed(seed))


def test_generator_step_losses_put_real_and_decoded_audio_in_their_places() -> None:
    from opencodec.train import generator_hinge_loss
    from opencodec.train.step import generator_step

    p = _parts()
    x = _wav()
    y, losses, _ = generator_step(p, x, n_q=2, bypass=False, adversarial=True)
    assert all(q.requires_grad for q in p.disc.parameters())  # unfrozen again after the step
    with torch.no_grad():
        (_, real_feats), (fake_logits, fake_feats) = p.disc(x), p.disc(y)
    assert losses["adv"].item() == pytest.approx(generator_hinge_loss(fake_logits).item(), rel=1e-5)
    assert losses["feat"].item() == pytest.approx(
        relative_feature_matching_loss(real_feats, fake_feats).item(), rel=1e-5)
    assert losses["feat"].item() != pytest.approx(
        relative_feature_matching_loss(fake_feats, real_feats).item(), rel=1e-3)  # the test can tell


def test_discriminator_step_loss_has_real_audio_on_the_real_side() -> None:
    from opencodec.train import discriminator_hinge_loss
    from opencodec.train.step import discriminator_step

    p = _parts()
    with torch.no_grad():  # confident logits (untrained ones are all near 0, where hinge is linear)
        for scale in p.disc.discriminators:
            scale.conv_post.parametrizations.weight.original0.mul_(300)
    x, y = 10 * _wav(1), torch.zeros(2, 1, 2400)
    with torch.no_grad():
        real, fake = p.disc(x)[0], p.disc(y)[0]
    expected = discriminator_hinge_loss(real, fake).item()
    assert expected != pytest.approx(discriminator_hinge_loss(fake, real).item(), rel=1e-3)
    assert discriminator_step(p, x, y).item() == pytest.approx(expected, rel=1e-5)


def _step_grads(**kwargs) -> dict[str, torch.Tensor]:
    from opencodec.train.step import generator_step

    p = _parts(**kwargs)
    p.model.train_forward(_wav(9), 2)  # k-means initialises the codebooks on other audio
    generator_step(p, _wav(3), n_q=2, bypass=False, adversarial=False)
    return {k: v.grad.clone() for k, v in p.model.named_parameters() if v.grad is not None}


def test_commitment_weight_scales_the_encoder_gradient() -> None:
    # no loss through the output (every balancer weight 0): the gradient is the commitment's
    one, two = (_step_grads(commit_weight=w, weights={"l1": 0.0, "mel": 0.0}) for w in (1.0, 2.0))
    enc = [k for k in one if k.startswith("encoder.") and one[k].abs().sum() > 0]
    assert enc and not any(k.startswith("decoder.") and one[k].abs().sum() > 0 for k in one)
    for k in enc:
        assert torch.allclose(two[k], 2 * one[k], rtol=1e-5, atol=1e-12), k


def test_balanced_gradient_is_multiplied_by_the_world_size() -> None:
    # DDP averages the ranks' gradients; the balanced gradient is scaled back to their sum
    one, two = (_step_grads(commit_weight=0.0, world_size=n) for n in (1, 2))
    dec = [k for k in one if k.startswith("decoder.") and one[k].abs().sum() > 0]
    assert dec
    for k in dec:
        assert torch.allclose(two[k], 2 * one[k], rtol=1e-5, atol=1e-12), k


def test_mel_loss_config_defaults_are_the_papers_scales_and_audiocraft_alphas() -> None:
    from opencodec.train.losses import audiocraft_alphas
    from opencodec.train.solver import build_mel_loss

    assert audiocraft_alphas([5, 11]) == pytest.approx([math.sqrt(31), math.sqrt(2047)])
    default = build_mel_loss({}, SR)
    assert default.scales == [5, 6, 7, 8, 9, 10, 11] and default.alphas == [1.0] * 7
    assert [m.n_fft for m in default.mels] == [32, 64, 128, 256, 512, 1024, 2048]
    assert [m.hop_length for m in default.mels] == [8, 16, 32, 64, 128, 256, 512]
    ac = build_mel_loss({"mel_scales": [6, 8], "mel_alpha": "audiocraft"}, SR)
    assert ac.scales == [6, 7] and ac.alphas == pytest.approx([math.sqrt(63), math.sqrt(127)])


# --------------------------------------------------------------------------- speech split
def test_a_speaker_is_refused_in_the_probe_and_an_evaluation_even_without_training() -> None:
    from opencodec.data.split import SpeakerUse, SplitError, check_split

    # one voice known across packages: probe from one package, evaluation from another
    uses = [SpeakerUse("a", "pa", "voice:Ann", "probe"), SpeakerUse("b", "pb", "voice:Ann", "eval:clean_speech"),
            SpeakerUse("c", "pc", "s1", "train")]
    with pytest.raises(SplitError, match=r"speaker voice:Ann is in \['eval:clean_speech', 'probe'\]"):
        check_split(uses)
    # and in two evaluation categories (the rule is any two roles)
    uses = [SpeakerUse("a", "pa", "voice:Bob", "eval:clean_speech"),
            SpeakerUse("b", "pb", "voice:Bob", "eval:speech_unseen")]
    with pytest.raises(SplitError, match="speaker voice:Bob is in"):
        check_split(uses)


def test_an_eval_source_without_a_category_is_refused() -> None:
    from opencodec.data.split import SplitError, role_of

    for category in (None, ""):
        with pytest.raises(SplitError, match="eval_category"):
            role_of("eval", category)


def test_split_groups_keeps_a_group_in_training_and_follows_the_seed() -> None:
    from opencodec.data.source_files import split_groups

    for n in (2, 3, 5):
        hours = {f"g{i}": 1.0 for i in range(n)}
        valid = split_groups(hours, 0.95, seed=0)
        assert len(valid) == n - 1, n  # however large the fraction, one group trains
    hours = {f"g{i}": 1.0 for i in range(20)}
    picks = {frozenset(split_groups(hours, 0.1, seed=s)) for s in range(6)}
    assert all(len(p) == 2 for p in picks) and len(picks) > 1  # the seed chooses which groups
    assert split_groups(hours, 0.1, seed=3) == split_groups(dict(reversed(list(hours.items()))), 0.1, seed=3)


# --------------------------------------------------------------------------- loudness
def _sine(amplitude: float, seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * 250 * t))[None].astype(np.float64)


def test_gated_rms_level_and_its_gates() -> None:
    from opencodec.data.loudness import gated_rms_db

    sr = 16000
    assert gated_rms_db(_sine(0.1, 1.0), sr) == pytest.approx(10 * math.log10(0.01 / 2), abs=0.01)
    # the relative gate (10 dB under the mean of the kept blocks) drops a part 20 dB quieter
    loud_quiet = np.concatenate([_sine(0.1, 1.0), _sine(0.01, 1.0)], axis=1)
    assert gated_rms_db(loud_quiet, sr) == pytest.approx(10 * math.log10(0.01 / 2), abs=0.01)
    # the absolute gate is at -70 dBFS: a -60 dBFS signal is measured, a -80 dBFS one is silence
    assert gated_rms_db(_sine(math.sqrt(2) * 1e-3, 1.0), sr) == pytest.approx(-60.0, abs=0.01)
    assert gated_rms_db(_sine(math.sqrt(2) * 1e-4, 1.0), sr) == float("-inf")


def test_normalize_loudness_reaches_the_target_under_the_peak() -> None:
    from opencodec.data.loudness import gated_rms_db, normalize_loudness

    sr = 16000
    out = normalize_loudness(_sine(0.01, 1.0), sr, target_db=-20.0)
    assert gated_rms_db(out, sr) == pytest.approx(-20.0, abs=0.01)
    assert np.abs(out).max() == pytest.approx(0.1 * math.sqrt(2), rel=1e-3)
    # a click over a quiet tone: the gain to -20 dBFS would clip it, so the peak sets the gain
    spiky = _sine(0.01, 1.0)
    spiky[0, 100] = 0.5
    out = normalize_loudness(spiky, sr, target_db=-20.0, peak=0.9)
    assert np.abs(out).max() == pytest.approx(0.9, rel=1e-5)
    assert out[0, 100] / spiky[0, 100] == pytest.approx(out[0, 5000] / spiky[0, 5000], rel=1e-4)  # one gain


# --------------------------------------------------------------------------- augmentation
def _wav_rows(tmp_path, specs: list[tuple[str, float, str]]) -> list[dict]:
    """24 kHz mono tones of ``amp`` (1 s each) as manifest rows."""
    import soundfile as sf

    rows = []
    for i, (name, amp, category) in enumerate(specs):
        path = tmp_path / f"{name}.wav"
        sf.write(str(path), _sine(amp, 1.0, 24000)[0].astype(np.float32), 24000)
        rows.append({"path": str(path), "duration": 1.0, "sample_rate": 24000, "channels": 1,
                     "category": category, "source": "synthetic"})
    return rows


def test_an_overflowing_mixture_is_scaled_to_a_peak_of_0_99(tmp_path) -> None:
    from opencodec.data.dataset import AudioDataset

    rows = _wav_rows(tmp_path, [("a", 0.9, "speech"), ("b", 0.9, "general")])
    ds = AudioDataset(rows, segment_seconds=0.2, mix_probs=(1, 0, 0), gain_db=(6.0, 6.0), reverb_prob=0.0,
                      noisy_speech_prob=0.0, epoch_size=4, seed=0)
    for i in range(4):
        x, info = ds.sample(i)
        assert info["peak_scale"] < 1.0
        assert x.abs().max().item() == pytest.approx(0.99, rel=1e-6)


def test_a_single_music_source_is_never_reverberated(tmp_path) -> None:
    from opencodec.data.dataset import AudioDataset

    rows = _wav_rows(tmp_path, [("m", 0.3, "music"), ("s", 0.3, "speech")])
    ds = AudioDataset(rows, segment_seconds=0.2, mix_probs=(1, 0, 0), reverb_prob=1.0, noisy_speech_prob=0.0,
                      epoch_size=12, seed=0)
    infos = [ds.sample(i)[1] for i in range(12)]
    assert {i["categories"][0] for i in infos} == {"music", "speech"}  # both were drawn
    assert all((i["rt60"] is None) == (i["categories"] == ["music"]) for i in infos)


@pytest.mark.parametrize("rt60", [0.4, 1.2])
def test_synthetic_rir_tail_energy_is_rt60_times_the_direct_path(rt60: float) -> None:
    from opencodec.data.dataset import synthetic_rir

    h = synthetic_rir(rt60, 16000, np.random.default_rng(0)).astype(np.float64)
    assert np.sum(h ** 2) == pytest.approx(1.0, rel=1e-5)
    assert np.sum(h[1:] ** 2) / h[0] ** 2 == pytest.approx(rt60, rel=1e-4)


def test_discriminator_weight_norm_is_on_every_conv_by_default() -> None:
    # spec and paper: weight norm everywhere (the checkpoints' parameter names depend on it)
    from opencodec.train import MultiScaleSTFTDiscriminator

    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(128,))
    convs = [*disc.discriminators[0].convs, disc.discriminators[0].conv_post]
    assert len(convs) == 6 and all(hasattr(c, "parametrizations") for c in convs)
    official = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(128,), weight_norm_first=False)
    assert not hasattr(official.discriminators[0].convs[0], "parametrizations")
