"""Values of the evaluation, checked against independent computations: the metrics (SI-SNR,
mel and STFT distances by hand with numpy, PESQ and STOI against their packages called
directly, the ViSQOL wrapper's calls into its native scorer), the intervals, the paired
comparison with Opus, and the reported bitrate (duration-weighted: total bits over total
seconds, so that a one-sample item cannot dominate it). Also: ``--metrics`` without a name
is refused."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
from scipy import stats

from opencodec.eval import metrics as M
from opencodec.eval.cli import NO_METRIC_NAMED, run_command
from opencodec.eval.report import run_eval
from opencodec.eval.report_writer import write_report
from opencodec.eval.summary import (RATE_DEFINITION, mean_ci95, paired_versus_opus, rate_kbps,
                                    summarize)
from opencodec.eval.systems import EvalReportError

from train_helpers import SR, write_category_set as _write_set  # tests/ is on sys.path (conftest.py)

V = importlib.import_module("opencodec.eval.visqol")  # the module (the package re-exports its function)


def _signal(seconds: float, seed: int, channels: int = 1, rate: int = SR) -> np.ndarray:
    """Broadband test audio ``[C, T]`` float64: a few tones, a DC offset and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        tones = sum(np.sin(2 * np.pi * f * t + c) / k for k, f in enumerate((220, 1310, 4020), 1))
        out.append(0.2 * tones + 0.05 * rng.standard_normal(t.size) + 0.01 * (c + 1))
    return np.asarray(out)


def _degrade(x: np.ndarray, seed: int) -> np.ndarray:
    """A different signal of the same shape: low-passed, scaled and noisier."""
    rng = np.random.default_rng(seed)
    y = np.stack([np.convolve(ch, [0.5, 0.3, 0.2], mode="same") for ch in x])
    return 0.8 * y + 0.03 * rng.standard_normal(x.shape)


# ------------------------------------------------------------------------------------------
# SI-SNR: the correlation form, 10 log10(rho^2 / (1 - rho^2)) of the zero-mean channels
# ------------------------------------------------------------------------------------------
def _si_snr_by_correlation(est: np.ndarray, ref: np.ndarray) -> float:
    per = []
    for e, r in zip(est, ref):
        rho = np.corrcoef(e, r)[0, 1]
        per.append(10 * math.log10(rho ** 2 / (1 - rho ** 2)))
    return float(np.mean(per))


def test_si_snr_equals_the_correlation_form_per_channel_mean():
    ref = _signal(0.5, seed=1, channels=2)
    est = _degrade(ref, seed=2) + 0.3  # an offset: SI-SNR removes each channel's mean
    expected = _si_snr_by_correlation(est, ref)
    assert M.si_snr(est, ref) == pytest.approx(expected, rel=1e-9)
    assert M.si_snr(5.0 * est, ref) == pytest.approx(expected, rel=1e-9)  # scale-invariant
    # not symmetric in general? it is for the correlation form; the order still matters for
    # the projection: check a hand computation of the projection form on channel 0 too
    e, r = est[0] - est[0].mean(), ref[0] - ref[0].mean()
    s = e @ r / (r @ r) * r
    assert M.si_snr(est[0], ref[0]) == pytest.approx(10 * math.log10((s @ s) / ((e - s) @ (e - s))),
                                                     rel=1e-9)


def test_si_snr_of_an_orthogonal_estimate_is_the_floor():
    t = np.arange(4800) / SR
    ref, est = np.sin(2 * np.pi * 100 * t), np.cos(2 * np.pi * 100 * t)
    assert M.si_snr(est, ref) < -100


# ------------------------------------------------------------------------------------------
# Mel and STFT distances by hand: numpy STFT (periodic Hann, hop n/4, centred, reflect pad)
# ------------------------------------------------------------------------------------------
def _stft_mag(x: np.ndarray, n: int) -> np.ndarray:
    """|STFT| ``[C, n/2+1, frames]`` as torch.stft(center=True, pad_mode='reflect')."""
    hop = n // 4
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    padded = np.pad(x, ((0, 0), (n // 2, n // 2)), mode="reflect")
    frames = 1 + (padded.shape[1] - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(frames)[:, None]
    return np.abs(np.fft.rfft(padded[:, idx] * window, axis=-1)).transpose(0, 2, 1)


def _filterbank(rate: int, n: int, n_mels: int) -> np.ndarray:
    """HTK-mel triangles, Slaney area normalisation, empty filters dropped, one by one."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = [hz(mel(0) + k * (mel(rate / 2) - mel(0)) / (n_mels + 1)) for k in range(n_mels + 2)]
    freqs = np.linspace(0, rate / 2, n // 2 + 1)
    rows = []
    for k in range(n_mels):
        lo, mid, hi = edges[k], edges[k + 1], edges[k + 2]
        tri = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
        if tri.sum() > 0:
            rows.append(tri * 2 / (hi - lo))
    return np.array(rows)


def test_mel_distance_equals_a_numpy_computation():
    ref = _signal(0.4, seed=3, channels=2)
    est = _degrade(ref, seed=4)
    dists = []
    for n in (512, 1024, 2048):
        fb = _filterbank(SR, n, 64)
        me = np.einsum("mf,cft->cmt", fb, _stft_mag(est, n))
        mr = np.einsum("mf,cft->cmt", fb, _stft_mag(ref, n))
        dists.append(np.mean(np.abs(np.log(me + 1e-5) - np.log(mr + 1e-5))))
    assert M.mel_distance(est, ref, SR) == pytest.approx(float(np.mean(dists)), rel=1e-9)
    # one scale alone, and another rate (the filterbank follows the rate)
    fb = _filterbank(16000, 1024, 64)
    one = np.mean(np.abs(np.log(np.einsum("mf,cft->cmt", fb, _stft_mag(est, 1024)) + 1e-5)
                         - np.log(np.einsum("mf,cft->cmt", fb, _stft_mag(ref, 1024)) + 1e-5)))
    assert M.mel_distance(est, ref, 16000, n_ffts=(1024,)) == pytest.approx(float(one), rel=1e-9)


def test_stft_distance_equals_a_numpy_computation():
    ref = _signal(0.4, seed=5, channels=2)
    est = _degrade(ref, seed=6)
    parts = []
    for n in (512, 1024, 2048):
        me, mr = _stft_mag(est, n), _stft_mag(ref, n)
        sc = np.sqrt(np.sum((mr - me) ** 2)) / np.sqrt(np.sum(mr ** 2))  # all channels pooled
        parts.append(sc + np.mean(np.abs(np.log(me + 1e-7) - np.log(mr + 1e-7))))
    assert M.stft_distance(est, ref) == pytest.approx(float(np.mean(parts)), rel=1e-9)
    # spectral convergence is relative to the reference: swapping the two changes the value
    assert M.stft_distance(ref, est) != pytest.approx(M.stft_distance(est, ref), rel=1e-3)


# ------------------------------------------------------------------------------------------
# PESQ and STOI: the packages called directly (reference first, degraded second)
# ------------------------------------------------------------------------------------------
def _speechy(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Syllable-modulated harmonics with noise: something PESQ finds utterances in."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 130 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    return 0.2 * voiced * env + 0.003 * rng.standard_normal(t.size)


def test_pesq_wb_is_the_pesq_package_on_reference_then_degraded():
    from pesq import pesq

    ref = np.stack([_speechy(2.0, 16000, seed=7), _speechy(2.0, 16000, seed=8)])
    est = ref + 0.02 * np.random.default_rng(9).standard_normal(ref.shape)
    est[1] = np.convolve(est[1], [0.6, 0.4], mode="same")
    per = [pesq(16000, ref[c], est[c], "wb") for c in range(2)]
    assert per[0] != pytest.approx(pesq(16000, est[0], ref[0], "wb"), abs=1e-3)  # order matters
    assert M.pesq_wb(est, ref, 16000) == pytest.approx(float(np.mean(per)), abs=1e-9)
    # at 32 kHz both are resampled to 16 kHz (soxr HQ) first
    import soxr

    r32, e32 = ref[0], est[0]
    r32 = soxr.resample(r32, 16000, 32000, quality="HQ")
    e32 = soxr.resample(e32, 16000, 32000, quality="HQ")
    direct = pesq(16000, soxr.resample(r32, 32000, 16000, quality="HQ"),
                  soxr.resample(e32, 32000, 16000, quality="HQ"), "wb")
    assert M.pesq_wb(e32, r32, 32000) == pytest.approx(direct, abs=1e-9)


def test_pesq_minimum_length_is_inclusive():
    ref = _speechy(1.0, 16000, seed=10)
    n = int(M.PESQ_MIN_SECONDS * 16000)
    with pytest.raises(M.ClipTooShortError):
        M.pesq_wb(ref[:n - 1], ref[:n - 1], 16000)
    try:  # exactly the minimum passes the length check (PESQ itself may still decline)
        M.pesq_wb(ref[:n], ref[:n], 16000)
    except M.ClipTooShortError:  # pragma: no cover - the failure this test is for
        pytest.fail("a clip of exactly PESQ_MIN_SECONDS was refused as too short")
    except M.MetricError:
        pass


def test_stoi_is_pystoi_on_clean_then_processed():
    from pystoi import stoi

    ref = np.stack([_speechy(1.5, SR, seed=11), _speechy(1.5, SR, seed=12)])
    est = _degrade(ref, seed=13) + 0.05 * np.random.default_rng(14).standard_normal(ref.shape)
    per = [stoi(ref[c], est[c], SR) for c in range(2)]
    assert per[0] != pytest.approx(stoi(est[0], ref[0], SR), abs=1e-6)  # order matters
    assert M.stoi(est, ref, SR) == pytest.approx(float(np.mean(per)), abs=1e-12)
    ext = [stoi(ref[c], est[c], SR, extended=True) for c in range(2)]
    assert M.stoi(est, ref, SR, extended=True) == pytest.approx(float(np.mean(ext)), abs=1e-12)


# ------------------------------------------------------------------------------------------
# ViSQOL wrapper: what it hands the native scorer
# ------------------------------------------------------------------------------------------
class _FakeScorer:
    """Stands in for ``audio_samples_qoe._native``: records calls, scores by channel index."""

    class VisqolError(Exception):
        pass

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _score(self, ref, ref_rate, deg, deg_rate, mode):
        self.calls.append((np.array(ref), ref_rate, np.array(deg), deg_rate, mode))
        return 1.0 + len(self.calls)  # 2.0 for the first channel, 3.0 for the second


@pytest.fixture
def fake_scorer(monkeypatch):
    fake = _FakeScorer()
    monkeypatch.setattr(V, "_NATIVE", fake)
    return fake


@pytest.mark.parametrize("mode, rate", [("audio", 48000), ("speech", 16000)])
def test_visqol_hands_the_scorer_reference_first_at_the_mode_rate(fake_scorer, mode, rate):
    import soxr

    ref = _signal(1.2, seed=15, channels=2)
    est = _degrade(ref, seed=16)
    assert V.visqol(est, ref, SR, mode=mode) == pytest.approx(2.5)  # mean of 2.0 and 3.0
    assert len(fake_scorer.calls) == 2
    for ch, (r, r_rate, d, d_rate, m) in enumerate(fake_scorer.calls):
        assert (r_rate, d_rate, m) == (rate, rate, mode)
        np.testing.assert_allclose(r, soxr.resample(ref[ch], SR, rate, quality="HQ"), atol=1e-12)
        np.testing.assert_allclose(d, soxr.resample(est[ch], SR, rate, quality="HQ"), atol=1e-12)


def test_visqol_downmix_scores_the_channel_mean_once(fake_scorer):
    ref = _signal(1.2, seed=17, channels=2, rate=48000)
    est = _degrade(ref, seed=18)
    assert V.visqol(est, ref, 48000, mode="audio", channels="downmix") == pytest.approx(2.0)
    (r, _, d, _, _), = fake_scorer.calls
    np.testing.assert_allclose(r, ref.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(d, est.mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("mode", ["audio", "speech"])
def test_visqol_minimum_length_is_inclusive(fake_scorer, mode):
    rate = V.VISQOL_RATES[mode]
    x = _signal(1.1, seed=19, rate=rate)
    n = V.VISQOL_MIN_SAMPLES[mode]
    assert V.visqol(x[:, :n], x[:, :n], rate, mode=mode) == pytest.approx(2.0)
    with pytest.raises(M.ClipTooShortError):
        V.visqol(x[:, :n - 1], x[:, :n - 1], rate, mode=mode)


def test_visqol_silence_threshold_is_at_minus_60_dbfs(fake_scorer):
    t = np.arange(SR) / SR
    square = np.sign(np.sin(2 * np.pi * 50 * t + 0.1))  # RMS 1.0 exactly
    at = square * 10 ** (V.VISQOL_SILENCE_DBFS / 20) * (1 + 1e-9)
    below = square * 10 ** (V.VISQOL_SILENCE_DBFS / 20) * (1 - 1e-6)
    V.check_not_silent(at[None])
    with pytest.raises(M.SilentSignalError, match="-60"):
        V.check_not_silent(below[None])
    with pytest.raises(M.SilentSignalError):  # the second channel alone is silent
        V.check_not_silent(np.stack([square, below]))


def test_visqol_scorer_error_on_a_short_clip_is_clip_too_short(monkeypatch):
    class Raising(_FakeScorer):
        def _score(self, *args):
            raise self.VisqolError("signal too short for one patch")

    monkeypatch.setattr(V, "_NATIVE", Raising())
    x = _signal(1.2, seed=20)
    with pytest.raises(M.ClipTooShortError):
        V.visqol(x, x, SR, mode="audio")


# ------------------------------------------------------------------------------------------
# Intervals and the paired comparison
# ------------------------------------------------------------------------------------------
def test_mean_ci95_is_student_t_half_width():
    vals = [1.0, 2.0, 3.0, 4.0, 10.0, None, float("nan")]  # None and NaN are left out
    kept = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    lo, hi = stats.t.interval(0.95, df=4, loc=kept.mean(), scale=stats.sem(kept))
    mean, half, n = mean_ci95(vals)
    assert (mean, n) == (pytest.approx(4.0), 5)
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert mean_ci95([2.5]) == (2.5, None, 1)
    assert mean_ci95([1.0, 3.0])[1] == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))


def _row(system, family, kind, item, metrics, kbps=6.0, seconds=1.0, category="speech"):
    return {"category": category, "item_id": item, "system": system, "family": family,
            "kind": kind, "nominal_kbps": 6.0, "actual_kbps": kbps, "duration_s": seconds,
            "rtf": None, "metrics": metrics, "errors": {}}


def test_paired_differences_and_wins_by_hand():
    ours = {"a": (3.0, 0.5), "b": (2.0, 0.9), "c": (4.0, 0.2), "d": (3.5, 1.0)}
    opus = {"a": (2.5, 0.7), "b": (2.5, 0.8), "c": (3.0, 0.4), "d": (3.5, 1.0)}
    rows = [_row("m@6kbps", "m", "neural", i, {"visqol": v, "mel": m}) for i, (v, m) in ours.items()]
    rows += [_row("opus-6kbps", "opus", "baseline", i, {"visqol": v, "mel": m})
             for i, (v, m) in opus.items()]
    got = paired_versus_opus(rows, ["visqol", "mel"])["speech"]["m@6kbps"]
    assert got["opus"] == "opus-6kbps"
    for metric, k in (("visqol", 0), ("mel", 1)):
        diffs = [ours[i][k] - opus[i][k] for i in ours]
        mean, half, n = mean_ci95(diffs)
        assert got[metric]["mean"] == pytest.approx(mean) and got[metric]["ci95"] == pytest.approx(half)
        assert got[metric]["n"] == n == 4
    assert got["visqol"]["wins"] == 2  # a, c higher; b lower; d a tie is no win
    assert got["mel"]["wins"] == 2  # a, c lower (lower is better); b higher; d a tie


# ------------------------------------------------------------------------------------------
# The reported bitrate: total bits over total seconds
# ------------------------------------------------------------------------------------------
def test_rate_is_total_bits_over_total_seconds():
    one_sample = 1 / SR
    rows = [_row("m@6kbps", "m", "neural", "tiny", {}, kbps=8 * 103 / one_sample / 1000, seconds=one_sample),
            _row("m@6kbps", "m", "neural", "long", {}, kbps=6.1, seconds=10.0),
            _row("m@6kbps", "m", "neural", "mid", {}, kbps=6.3, seconds=5.0)]
    assert rows[0]["actual_kbps"] == pytest.approx(19776.0)
    bits = 8 * 103 + 6100 * 10.0 + 6300 * 5.0
    seconds = one_sample + 15.0
    got = rate_kbps(rows)
    assert got["mean"] == pytest.approx(bits / seconds / 1000, rel=1e-12)
    assert got["n"] == 3 and got["seconds"] == pytest.approx(seconds)
    assert got["mean"] < 6.3  # the plain mean would be about 6,596 kbps
    # the interval of the ratio: Student t on the residuals b_i - R d_i, over the mean duration
    kbit = np.array([0.824, 61.0, 31.5])
    d = np.array([one_sample, 10.0, 5.0])
    resid = kbit - got["mean"] * d
    half = stats.t.ppf(0.975, 2) * resid.std(ddof=1) / math.sqrt(3) / d.mean()
    assert got["ci95"] == pytest.approx(half, rel=1e-9)
    # rows without a rate or a duration are left out; none at all: no value
    assert rate_kbps(rows + [dict(rows[1], actual_kbps=None), dict(rows[1], duration_s=0.0)]) == got
    assert rate_kbps([dict(rows[1], actual_kbps=None)])["mean"] is None
    single = rate_kbps(rows[1:2])
    assert (single["mean"], single["ci95"], single["n"]) == (pytest.approx(6.1), None, 1)


def test_summary_and_report_give_the_duration_weighted_rate(tmp_path):
    rows = [_row("m@6kbps", "m", "neural", "a", {"si_snr": 5.0}, kbps=19776.0, seconds=1 / SR),
            _row("m@6kbps", "m", "neural", "b", {"si_snr": 7.0}, kbps=6.0, seconds=8.0),
            _row("m@6kbps", "m", "neural", "a", {"si_snr": 1.0}, kbps=12.0, seconds=2.0,
                 category="music"),
            _row("m@6kbps", "m", "neural", "b", {"si_snr": 3.0}, kbps=6.0, seconds=6.0,
                 category="music")]
    summary = summarize(rows, ["si_snr"])
    speech = summary["speech"]["m@6kbps"]["actual_kbps"]["mean"]
    music = summary["music"]["m@6kbps"]["actual_kbps"]["mean"]
    assert speech == pytest.approx((0.824 + 48.0) / (1 / SR + 8.0))
    assert music == pytest.approx((24.0 + 36.0) / 8.0)  # per category: 7.5, not the mean 9.0
    meta = {"models": [], "bandwidths": [], "baselines": [], "set": "s", "max_items": None,
            "metrics": ["si_snr"], "sample_rate": SR, "channels": 1, "n_rows": 4, "wall_s": 1.0,
            "workers": 1}
    write_report(tmp_path, summary, meta, {}, ["si_snr"])
    text = (tmp_path / "report.md").read_text()
    assert RATE_DEFINITION in text
    speech_row = text.split("## speech")[1].split("| m@6kbps |")[1]
    assert speech_row.split("|")[1].strip().startswith(f"{speech:.2f} ± ")
    music_row = text.split("## music")[1].split("| m@6kbps |")[1]
    assert music_row.split("|")[1].strip().startswith("7.50 ± ")


def test_eval_run_reports_total_bits_over_total_seconds(tmp_path):
    """A real run on a 0.2 s and a 2 s item: summary.json's rate is that of the rows'
    bits over their seconds, below the plain mean (the short item's Ogg-free payload is
    dominated by Opus's per-packet overhead)."""
    rng = np.random.default_rng(21)
    eval_set = _write_set(tmp_path / "set", "music",
                          {"short": (0.1 * rng.standard_normal(SR // 5)).astype(np.float32),
                           "long": (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)})
    doc = run_eval([], None, ["opus12"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    bits = sum(r["actual_kbps"] * r["duration_s"] for r in rows)
    seconds = sum(r["duration_s"] for r in rows)
    got = doc["categories"]["music"]["opus-12kbps"]["actual_kbps"]
    assert got["mean"] == pytest.approx(bits / seconds, rel=1e-12)
    assert got["mean"] != pytest.approx(np.mean([r["actual_kbps"] for r in rows]), rel=1e-6)


# ------------------------------------------------------------------------------------------
# --metrics without a name
# ------------------------------------------------------------------------------------------
def test_metrics_without_a_name_is_refused(tmp_path, capsys):
    eval_set = _write_set(tmp_path / "set", "music", {"a": np.zeros(SR, np.float32)})
    out = tmp_path / "out"
    rc = run_command(["--baselines", "opus12", "--set", str(eval_set), "--out", str(out),
                      "--metrics", "-q"], "opencodec eval", run_eval)
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"opencodec eval: error: {NO_METRIC_NAMED}\n"
    assert all(m in err for m in ("si_snr", "mel", "stft", "visqol", "pesq", "stoi"))
    assert not out.exists()
    with pytest.raises(EvalReportError, match="no metric asked for.*si_snr"):
        run_eval([], None, ["opus12"], eval_set, out, metrics=[], quiet=True)
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# MUSHRA: the bitrate of a system per group (all trials, each category), duration-weighted
# ------------------------------------------------------------------------------------------
def test_mushra_rate_is_total_bits_over_total_seconds(tmp_path):
    import dataclasses

    from opencodec.eval.mushra import build as B
    from opencodec.eval.mushra import report as MR

    rng = np.random.default_rng(22)
    lengths = {"a": 0.3, "b": 1.5, "c": 0.7}
    eval_set = _write_set(tmp_path / "set", "music", {
        k: (0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for k, s in lengths.items()})
    test = B.build_test(eval_set, tmp_path / "test", baselines=["opus12"], items_per_category=3,
                        seed=1, test_id="rate", quiet=True)
    secs = {t["trial_id"]: t["duration_s"] for t in test.raw["trials"]}
    pairs = [(c.actual_kbps, secs[t.trial_id]) for t in test.trials for c in t.conditions
             if c.system == "opus-12kbps"]
    assert len(pairs) == 3 and len({round(d, 3) for _, d in pairs}) == 3
    weighted = sum(k * d for k, d in pairs) / sum(d for _, d in pairs)
    assert weighted != pytest.approx(np.mean([k for k, _ in pairs]), rel=1e-6)
    summary = MR.summarize(test, [])
    for group in (MR.ALL, "music"):
        assert summary["groups"][group]["opus-12kbps"]["actual_kbps"] == pytest.approx(weighted, rel=1e-12)
    # without duration_s in test.json, the reference WAV's length is used: the same rate
    raw = json.loads(json.dumps(test.raw))
    for t in raw["trials"]:
        del t["duration_s"]
    bare = MR.summarize(dataclasses.replace(test, raw=raw), [])
    assert bare["groups"][MR.ALL]["opus-12kbps"]["actual_kbps"] == pytest.approx(weighted, rel=1e-9)
    assert RATE_DEFINITION in MR.markdown_text(summary, test, None)


# ------------------------------------------------------------------------------------------
# Baseline bitrates: the file demuxed independently (PyAV) gives the same payload and size
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec, kbps", [("opus", 12), ("mp3", 64)])
def test_baseline_rates_match_the_demuxed_file(monkeypatch, codec, kbps):
    import io

    import av

    from opencodec.eval import baselines as B

    captured = {}
    encode = B._encode

    def spy(*args, **kwargs):
        captured["data"], packets = encode(*args, **kwargs)
        return captured["data"], packets

    monkeypatch.setattr(B, "_encode", spy)
    seconds = 1.5
    x = (0.1 * np.random.default_rng(23).standard_normal((1, int(seconds * SR)))).astype(np.float32)
    fn = B.opus_roundtrip_result if codec == "opus" else B.mp3_roundtrip_result
    r = fn(x, SR, kbps)
    with av.open(io.BytesIO(captured["data"])) as f:
        sizes = [p.size for p in f.demux(f.streams.audio[0]) if p.size]
    assert r.payload_kbps == pytest.approx(8 * sum(sizes) / seconds / 1000, rel=1e-12)
    assert r.container_kbps == pytest.approx(8 * len(captured["data"]) / seconds / 1000, rel=1e-12)
    roundtrip = B.opus_roundtrip if codec == "opus" else B.mp3_roundtrip
    assert roundtrip(x, SR, kbps)[1] == pytest.approx(r.payload_kbps, rel=1e-12)  # what eval stores


def test_report_gives_stoi_three_decimals_and_the_others_two(tmp_path):
    rows = [_row("m@6kbps", "m", "neural", f"i{k}", {"si_snr": 5.0 + k, "stoi": 0.9 + 0.01 * k},
                 seconds=2.0) for k in range(2)]
    summary = summarize(rows, ["si_snr", "stoi"])
    meta = {"models": [], "bandwidths": [], "baselines": [], "set": "s", "max_items": None,
            "metrics": ["si_snr", "stoi"], "sample_rate": SR, "channels": 1, "n_rows": 2,
            "wall_s": 1.0, "workers": 1}
    write_report(tmp_path, summary, meta, {}, ["si_snr", "stoi"])
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines()
               if line.startswith("| m@6kbps |"))
    half_si, half_stoi = (stats.t.ppf(0.975, 1) * np.std(v, ddof=1) / math.sqrt(2)
                          for v in ([5.0, 6.0], [0.9, 0.91]))
    assert f"| 5.50 ± {half_si:.2f} | 0.905 ± {half_stoi:.3f} |" in row
