"""Exact checks of one eval item's scoring and of the per-system aggregates:

* ``score`` passes (decoded, reference) in that order to every metric, ViSQOL's mode follows
  the category, PESQ and STOI are speech-only, a non-finite value is stored as None with a
  reason;
* ``evaluate_item`` labels rows with the system's own name, family, bandwidth and model,
  measures kbps in bits and the RTF per second of audio;
* a system's RTF in a category is total wall time over total duration, like its kbps;
* a decoded output that is digital silence (PESQ undefined) is named in the report and in
  ``summary.json`` instead of silently leaving the PESQ mean;
* ``stft`` and ``mel`` count as lower-is-better in the paired comparison.
"""

from __future__ import annotations

import importlib
import json
import math
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.eval import metrics as M
from opencodec.eval import scoring
from opencodec.eval.report import _write_outputs
from opencodec.eval.report_writer import write_report
from opencodec.eval.summary import (RTF_DEFINITION, paired_versus_opus, rtf_total,
                                    silent_left_out, summarize)
from opencodec.eval.systems import (ALL_METRICS, LOWER_IS_BETTER, SILENT_KEY, SystemSpec,
                                    metrics_for, neural_system_name, visqol_mode)

SR = 16000
V = importlib.import_module("opencodec.eval.visqol")  # the module (the package exports its function)


def _speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """[1, T] float32: an amplitude-modulated tone with a little noise (PESQ finds speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)[None]


# ------------------------------------------------------------------------------------------
# score: argument order, ViSQOL mode, speech-only metrics, non-finite values
# ------------------------------------------------------------------------------------------
@pytest.fixture
def recorded(monkeypatch):
    """Replace every metric with a recorder that returns a distinct value."""
    calls: dict[str, tuple] = {}

    def recorder(name, value):
        def f(*args, **kwargs):
            calls[name] = (args, kwargs)
            return value
        return f

    monkeypatch.setattr(M, "si_snr", recorder("si_snr", 1.0))
    monkeypatch.setattr(M, "mel_distance", recorder("mel", 2.0))
    monkeypatch.setattr(M, "stft_distance", recorder("stft", 3.0))
    monkeypatch.setattr(V, "visqol", recorder("visqol", 4.0))
    monkeypatch.setattr(M, "pesq_wb", recorder("pesq", 5.0))
    monkeypatch.setattr(M, "stoi", recorder("stoi", 6.0))
    return calls


def test_score_passes_decoded_then_reference_to_every_metric(recorded):
    est, ref = np.full((1, 8), 0.5, np.float32), np.full((1, 8), 0.25, np.float32)
    values, errors = scoring.score(est, ref, SR, "clean_speech", ALL_METRICS)
    assert values == {"si_snr": 1.0, "mel": 2.0, "stft": 3.0, "visqol": 4.0, "pesq": 5.0, "stoi": 6.0}
    assert errors == {}
    for name, (args, kwargs) in recorded.items():
        assert args[0] is est and args[1] is ref, name
    assert recorded["mel"][0][2] == SR and recorded["pesq"][0][2] == SR and recorded["stoi"][0][2] == SR
    assert recorded["visqol"][0][2] == SR and recorded["visqol"][1] == {"mode": "speech"}


@pytest.mark.parametrize("category, mode, speech", [
    ("clean_speech", "speech", True), ("noisy_speech_unseen", "speech", True),
    ("music", "audio", False), ("general", "audio", False)])
def test_visqol_mode_and_speech_only_metrics_follow_the_category(recorded, category, mode, speech):
    est = ref = np.zeros((1, 8), np.float32)
    values, _ = scoring.score(est, ref, SR, category, ALL_METRICS)
    assert recorded["visqol"][1] == {"mode": mode}
    assert visqol_mode(category) == mode
    expected = list(ALL_METRICS) if speech else ["si_snr", "mel", "stft", "visqol"]
    assert list(values) == expected
    assert set(recorded) == set(expected)  # PESQ and STOI are not even computed on music
    assert metrics_for(category, ALL_METRICS) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_metric_value_is_stored_as_none_with_the_reason(monkeypatch, bad):
    monkeypatch.setattr(M, "si_snr", lambda est, ref: bad)
    monkeypatch.setattr(M, "stft_distance", lambda est, ref: 0.5)
    values, errors = scoring.score(np.zeros((1, 8)), np.zeros((1, 8)), SR, "music", ["si_snr", "stft"])
    assert values == {"si_snr": None, "stft": 0.5}
    assert errors == {"si_snr": f"non-finite value {bad}"}


def test_score_on_real_signals_is_not_symmetric_in_its_arguments():
    """The real metrics, decoded = reference scaled by 0.5 plus noise: the values are those of
    (decoded, reference), not (reference, decoded)."""
    ref = _speech_like(1.0)
    est = (0.5 * ref + 0.05 * np.random.default_rng(1).standard_normal(ref.shape)).astype(np.float32)
    values, errors = scoring.score(est, ref, SR, "music", ["si_snr", "stft"])
    assert errors == {}
    assert values["stft"] == pytest.approx(M.stft_distance(est, ref), abs=1e-9)
    assert abs(M.stft_distance(ref, est) - M.stft_distance(est, ref)) > 0.01
    # SI-SNR and the mel distance are symmetric but for a silent signal: a silent decoded
    # output scores the floor (-150 dB) and a finite mel distance; only a silent reference
    # makes them undefined
    values, errors = scoring.score(np.zeros_like(ref), ref, SR, "music", ["si_snr", "mel", "stft"])
    assert values["si_snr"] == -150.0 and values["mel"] > 5.0 and values["stft"] > 5.0
    assert errors == {}


# ------------------------------------------------------------------------------------------
# evaluate_item and neural_roundtrip: labels, kbps in bits, RTF per second of audio
# ------------------------------------------------------------------------------------------
def _task(tmp_path, systems, category="clean_speech", seconds=1.0, metrics=("si_snr",), seed=0):
    path = tmp_path / f"{category}_{seed}.wav"
    sf.write(path, _speech_like(seconds, seed)[0], SR)
    return {"row": {"path": str(path)}, "category": category, "item_id": f"item{seed}",
            "item_sha256": "ab" * 8, "sample_rate": SR, "channels": 1,
            "metrics": list(metrics), "systems": [s.__dict__ for s in systems]}


def test_evaluate_item_labels_rows_with_each_systems_own_name_bandwidth_and_model(tmp_path, monkeypatch):
    models = {"spec_a": types.SimpleNamespace(sample_rate=SR, name="a"),
              "spec_b": types.SimpleNamespace(sample_rate=SR, name="b")}
    calls = []

    def fake_roundtrip(model, wav, bandwidth):
        calls.append((model, bandwidth))
        return wav.copy(), bandwidth + 0.25, 0.125

    monkeypatch.setitem(scoring._WORKER, "models", models)
    monkeypatch.setitem(scoring._WORKER, "baselines", {})
    monkeypatch.setattr(scoring, "neural_roundtrip", fake_roundtrip)
    systems = [SystemSpec(neural_system_name("a", 1.5), "a", "neural", 1.5, model="spec_a", weights="w_a"),
               SystemSpec(neural_system_name("b", 12.0), "b", "neural", 12.0, model="spec_b", weights="w_b")]
    rows = scoring.evaluate_item(_task(tmp_path, systems, seconds=0.5))
    assert [s.name for s in systems] == ["a@1.5kbps", "b@12kbps"]
    assert [(m.name, b) for m, b in calls] == [("a", 1.5), ("b", 12.0)]
    got = [(r["system"], r["family"], r["kind"], r["nominal_kbps"], r["weights_sha256"], r["actual_kbps"])
           for r in rows]
    assert got == [("a@1.5kbps", "a", "neural", 1.5, "w_a", 1.75), ("b@12kbps", "b", "neural", 12.0, "w_b", 12.25)]
    for r in rows:
        assert r["duration_s"] == 0.5 and r["rtf"] == 0.125 / 0.5  # wall s per audio s
        assert r[SILENT_KEY] is False and r["visqol_mode"] == "speech"
        assert r["scored_metrics"] == ["si_snr"] and r["metrics"]["si_snr"] > 40  # decoded = reference


def test_neural_roundtrip_counts_bits_of_the_ecdc_bytes_and_its_wall_time(monkeypatch):
    C = importlib.import_module("opencodec.compress")  # the module (the package exports its function)

    wav = np.zeros((1, 12000), np.float32)  # 0.5 s at 24 kHz
    seen = {}

    def fake_compress(model, x, bandwidth):
        seen["bandwidth"] = bandwidth
        return b"\x01" * 375

    monkeypatch.setattr(C, "compress", fake_compress)
    monkeypatch.setattr(C, "decompress", lambda data, model: (torch.ones(1, 12000), 24000))
    clock = iter([10.0, 10.75])
    monkeypatch.setattr(scoring, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    out, kbps, elapsed = scoring.neural_roundtrip(types.SimpleNamespace(sample_rate=24000), wav, 3.0)
    assert seen["bandwidth"] == 3.0
    assert kbps == 8 * 375 / 0.5 / 1000 == 6.0  # bits, not bytes; kbit = 1000 bits
    assert elapsed == 0.75
    assert out.dtype == np.float32 and out.shape == (1, 12000) and np.all(out == 1)


# ------------------------------------------------------------------------------------------
# RTF over a category: total wall time over total duration
# ------------------------------------------------------------------------------------------
def _row(system, item, rtf, seconds, metrics=None, kind="neural", family="ours", category="clean_speech",
         silent=False):
    return {"category": category, "item_id": item, "system": system, "family": family, "kind": kind,
            "nominal_kbps": 6.0, "actual_kbps": 6.0, "duration_s": seconds, "rtf": rtf,
            "metrics": metrics if metrics is not None else {"si_snr": 1.0}, "errors": {},
            "visqol_mode": "speech", SILENT_KEY: silent}


def test_rtf_is_total_wall_time_over_total_duration_not_a_mean_of_ratios():
    # 10 s coded in 1 s, and a 0.01 s clip whose fixed costs took 0.05 s (RTF 5)
    rows = [_row("ours@6kbps", "long", 0.1, 10.0), _row("ours@6kbps", "tiny", 5.0, 0.01)]
    got = summarize(rows, ["si_snr"])["clean_speech"]["ours@6kbps"]["rtf"]
    assert got["mean"] == pytest.approx((1.0 + 0.05) / 10.01, rel=1e-12)  # 0.1049, not 2.55
    assert got["n"] == 2 and got["seconds"] == pytest.approx(10.01)
    # the interval: Student t over the residuals wall_i - mean * d_i, over the mean duration
    from scipy import stats
    res = np.array([1.0 - got["mean"] * 10.0, 0.05 - got["mean"] * 0.01])
    half = stats.t.ppf(0.975, 1) * res.std(ddof=1) / math.sqrt(2) / 5.005
    assert got["ci95"] == pytest.approx(half, rel=1e-9)
    # baselines have no RTF; rows without a positive duration are left out
    assert rtf_total([_row("opus", "long", None, 10.0, kind="baseline")]) == {
        "mean": None, "ci95": None, "n": 0, "seconds": 0.0}
    for bad in (_row("ours@6kbps", "bad", 3.0, 0.0), _row("ours@6kbps", "bad", float("nan"), 1.0),
                _row("ours@6kbps", "bad", 3.0, float("inf")), _row("ours@6kbps", "bad", float("inf"), 1.0)):
        assert rtf_total(rows + [bad]) == got


def test_per_second_interval_is_the_ratio_interval_and_takes_numpy_scalars():
    from scipy import stats

    from opencodec.eval.summary import mean_ci95, per_second
    # equal durations: the ratio is the plain mean, with the plain mean's interval
    vals = [3.0, 4.0, 8.0]
    got = per_second([{"x": v, "duration_s": 2.5} for v in vals], "x")
    mean, half, n = mean_ci95(vals)
    assert (got["mean"], got["n"]) == (pytest.approx(mean, rel=1e-12), n)
    assert got["ci95"] == pytest.approx(half, rel=1e-12)
    # unequal durations: near the bootstrap's spread of sum(b) / sum(d) (seeded, 40 items)
    rng = np.random.default_rng(0)
    v, d = rng.uniform(5, 7, 40), rng.uniform(1, 10, 40)
    got = per_second([{"x": a, "duration_s": b} for a, b in zip(v, d)], "x")
    idx = rng.integers(0, 40, (4000, 40))
    boot = (v[idx] * d[idx]).sum(1) / d[idx].sum(1)
    assert got["ci95"] == pytest.approx(stats.t.ppf(0.975, 39) * boot.std(), rel=0.15)
    # NumPy scalars are numbers (as in mean_ci95), a bool is not a duration or a value
    np_rows = [{"x": np.float32(3.0), "duration_s": np.float64(2.0)},
               {"x": 5.0, "duration_s": np.int64(6)}]
    assert per_second(np_rows, "x") == per_second(
        [{"x": 3.0, "duration_s": 2.0}, {"x": 5.0, "duration_s": 6.0}], "x")
    assert per_second([{"x": 3.0, "duration_s": True}, {"x": True, "duration_s": 1.0}], "x")["n"] == 0


def test_report_states_the_rtf_definition_and_shows_the_weighted_value(tmp_path):
    rows = [_row("ours@6kbps", "long", 0.1, 10.0), _row("ours@6kbps", "tiny", 5.0, 0.01)]
    summary = summarize(rows, ["si_snr"])
    meta = {"models": [], "bandwidths": [], "baselines": [], "set": "s", "max_items": None,
            "metrics": ["si_snr"], "sample_rate": SR, "channels": 1, "workers": 1, "n_rows": 2,
            "wall_s": 1.0}
    write_report(tmp_path, summary, meta, {}, ["si_snr"])
    text = (tmp_path / "report.md").read_text()
    assert RTF_DEFINITION in text
    assert "| ours@6kbps | 2 | 6.00 ± 0.00 | 0.105 ± " in text


# ------------------------------------------------------------------------------------------
# Digital silence out of a codec: PESQ undefined, and said so
# ------------------------------------------------------------------------------------------
class _SilentOn:
    """A baseline whose round trip returns digital silence on the items named, else the input."""

    def __init__(self, silent_items):
        self.silent_items, self.item = silent_items, None

    def roundtrip(self, wav, sr):
        return (np.zeros_like(wav) if self.item in self.silent_items else wav.copy()), 6.0


def test_silent_decoded_audio_is_counted_and_named_in_report_and_summary(tmp_path, monkeypatch):
    codec = _SilentOn({"item1"})
    monkeypatch.setitem(scoring._WORKER, "models", {})
    monkeypatch.setitem(scoring._WORKER, "baselines", {"mute": codec})
    spec = SystemSpec("mute-6kbps", "mute", "baseline", 6.0, baseline="mute")
    rows = []
    for seed in (0, 1):
        codec.item = f"item{seed}"
        rows += scoring.evaluate_item(_task(tmp_path, [spec], seconds=1.0, metrics=("pesq", "si_snr"), seed=seed))
    assert [r[SILENT_KEY] for r in rows] == [False, True]
    assert rows[1]["metrics"]["pesq"] is None and "decoded audio is silent" in rows[1]["errors"]["pesq"]
    assert rows[0]["metrics"]["pesq"] > 4.0  # decoded = reference
    assert silent_left_out(rows, ["pesq", "si_snr"]) == [
        {"category": "clean_speech", "system": "mute-6kbps", "item_id": "item1", "metrics": ["pesq"]}]

    out = tmp_path / "out"
    out.mkdir()
    summary = summarize(rows, ["pesq", "si_snr"])
    assert summary["clean_speech"]["mute-6kbps"]["metrics"]["pesq"]["n"] == 1  # still left out: no invented score
    meta = {"models": [], "bandwidths": [], "baselines": ["mute"], "set": "s", "max_items": None,
            "metrics": ["pesq", "si_snr"], "sample_rate": SR, "channels": 1, "workers": 1,
            "n_rows": 2, "wall_s": 1.0}
    doc = _write_outputs(out, summary, meta, rows, ["pesq", "si_snr"])
    stored = json.loads((out / "summary.json").read_text())
    assert stored["meta"]["silent_decoded"] == doc["meta"]["silent_decoded"] == [
        {"category": "clean_speech", "system": "mute-6kbps", "item_id": "item1", "metrics": ["pesq"]}]
    text = (out / "report.md").read_text()
    assert ("**PESQ-WB left out on 1 item(s) where the decoded audio is silent** (undefined there; "
            "the mean above is over the other items, so it flatters a system that outputs "
            "silence): mute-6kbps on `item1`.") in text
    assert "- **Silent decoded audio**: on 1 (item, system) pair(s)" in text


class _Shorter:
    """A baseline whose output is ``cut`` samples shorter than its input."""

    def __init__(self, cut):
        self.cut = cut

    def roundtrip(self, wav, sr):
        return wav[..., :-self.cut].copy(), 6.0


def test_a_shorter_output_is_padded_and_music_rows_list_only_their_metrics(tmp_path, monkeypatch):
    monkeypatch.setitem(scoring._WORKER, "models", {})
    monkeypatch.setitem(scoring._WORKER, "baselines", {"short": _Shorter(800)})
    spec = SystemSpec("short-6kbps", "short", "baseline", 6.0, baseline="short")
    task = _task(tmp_path, [spec], category="music", seconds=1.0, metrics=("si_snr", "pesq", "stft"))
    (row,) = scoring.evaluate_item(task)
    assert row["scored_metrics"] == ["si_snr", "stft"]  # PESQ is speech-only
    assert row["errors"] == {} and set(row["metrics"]) == {"si_snr", "stft"}
    assert row["rtf"] is None and row["visqol_mode"] == "audio" and row[SILENT_KEY] is False
    ref = scoring.load_reference(task)  # as read from the 16-bit file
    padded = np.concatenate([ref[:, :-800], np.zeros((1, 800), np.float32)], axis=1)
    assert row["metrics"]["si_snr"] == pytest.approx(M.si_snr(padded, ref), abs=1e-6)
    assert row["metrics"]["stft"] == pytest.approx(M.stft_distance(padded, ref), abs=1e-6)


def test_silence_in_one_channel_counts_and_a_quiet_output_does_not():
    assert scoring.is_silent(np.zeros((1, 5)))
    assert scoring.is_silent(np.array([[0.0, 0.1], [0.0, 0.0]]))  # PESQ fails on the silent channel
    assert not scoring.is_silent(np.array([[0.0, 1e-30], [-1e-30, 0.0]]))
    assert not scoring.is_silent(_speech_like(0.1))
    # against the item: a channel silent in the reference too is no fault of the codec
    ref = np.array([[0.2, 0.1], [0.0, 0.0]])
    assert not scoring.is_silent(np.array([[0.1, 0.1], [0.0, 0.0]]), ref)
    assert scoring.is_silent(np.array([[0.0, 0.0], [0.0, 0.0]]), ref)
    assert not scoring.is_silent(np.zeros((1, 4)), np.zeros((1, 4)))


def test_an_item_silent_in_the_reference_is_not_named_as_silent_output(tmp_path, monkeypatch):
    """An item whose reference has a silent channel, coded exactly: PESQ is undefined for
    every system there, and the report must not blame the codec's (silent) output."""
    monkeypatch.setitem(scoring._WORKER, "models", {})
    monkeypatch.setitem(scoring._WORKER, "baselines", {"exact": _SilentOn(set())})
    spec = SystemSpec("exact-6kbps", "exact", "baseline", 6.0, baseline="exact")
    speech = _speech_like(1.0)[0]
    path = tmp_path / "half_silent.wav"
    sf.write(path, np.stack([speech, np.zeros_like(speech)], axis=1), SR)
    task = {"row": {"path": str(path)}, "category": "clean_speech", "item_id": "half",
            "sample_rate": SR, "channels": 2, "metrics": ["pesq"], "systems": [spec.__dict__]}
    rows = scoring.evaluate_item(task)
    assert rows[0]["metrics"]["pesq"] is None and "reference is silent" in rows[0]["errors"]["pesq"]
    assert rows[0][SILENT_KEY] is False
    assert silent_left_out(rows, ["pesq"]) == []


def test_no_silent_line_without_silent_items(tmp_path):
    rows = [_row("ours@6kbps", "a", 0.1, 1.0, {"pesq": None}, silent=False),
            _row("ours@6kbps", "b", 0.1, 1.0, {"pesq": 2.0}, silent=True)]
    assert silent_left_out(rows, ["pesq"]) == []  # a) not silent, b) has its value
    doc = _write_outputs(tmp_path, summarize(rows, ["pesq"]), {
        "models": [], "bandwidths": [], "baselines": [], "set": "s", "max_items": None,
        "metrics": ["pesq"], "sample_rate": SR, "channels": 1, "workers": 1, "n_rows": 2,
        "wall_s": 1.0}, rows, ["pesq"])
    assert doc["meta"]["silent_decoded"] == []
    assert "silent**" not in (tmp_path / "report.md").read_text()


# ------------------------------------------------------------------------------------------
# Lower is better: mel and stft
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["mel", "stft", "si_snr", "visqol"])
def test_paired_wins_count_lower_distances_as_better(metric):
    rows = []
    for item, (ours, opus) in {"a": (1.0, 2.0), "b": (1.5, 2.0), "c": (3.0, 2.0), "tie": (2.0, 2.0)}.items():
        rows.append(_row("ours@6kbps", item, None, 1.0, {metric: ours}))
        rows.append(_row("opus-6kbps", item, None, 1.0, {metric: opus}, kind="baseline", family="opus"))
    got = paired_versus_opus(rows, [metric])["clean_speech"]["ours@6kbps"]
    assert got["opus"] == "opus-6kbps"
    assert got[metric]["n"] == 4  # the tie is an item, not a win
    assert got[metric]["wins"] == (2 if metric in ("mel", "stft") else 1)
    assert (metric in LOWER_IS_BETTER) == (metric in ("mel", "stft"))


# ------------------------------------------------------------------------------------------
# The stored reports are what their results.jsonl give with today's aggregation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["report_opencodec_24khz", "report_speech_unseen",
                                    "report_speech_unseen/probe"])
def test_stored_reports_match_their_results_file(folder):
    from pathlib import Path

    from opencodec.eval.results_file import read_results

    root = Path(__file__).resolve().parents[1] / "docs" / folder
    doc = json.loads((root / "summary.json").read_text())
    rows = read_results(root / "results.jsonl")
    meta = doc["meta"]
    assert len(rows) == meta["n_rows"]
    assert summarize(rows, meta["metrics"], meta.get("codec_failures", [])) == doc["categories"]
    assert paired_versus_opus(rows, meta["metrics"]) == doc["paired_versus_opus"]
    assert meta["silent_decoded"] == silent_left_out(rows, meta["metrics"]) == []
    text = (root / "report.md").read_text()
    assert RTF_DEFINITION in text
    from opencodec.eval.report_writer import _fmt

    sections = {part.split("\n", 1)[0].strip(): part for part in text.split("\n## ")[1:]}
    for cat, systems in doc["categories"].items():
        for name, s in systems.items():
            if s["rtf"]["mean"] is not None:
                assert f"| {name} | {s['n_items']} | " in text
                assert f" | {s['rtf']['mean']:.3f} ± {s['rtf']['ci95']:.3f} | " in text
            # the whole row's n, kbps and RTF cells, in that category's table
            row = f"| {name} | {s['n_items']} | {_fmt(s['actual_kbps'])} | {_fmt(s['rtf'], 3)} |"
            assert row in sections[cat], (cat, row)
