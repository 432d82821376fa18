"""The eval report's rows when items or codecs fail: a NaN item skipped and listed, a
codec failure reported and retried, ``--force`` and plots, a single-item comparison, the
header's bandwidth labels, what counts as a result row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opencodec.eval import baselines as BL, report as R
from opencodec.eval.report_writer import _header_lines, versus_opus
from opencodec.eval.results_file import repair_results
from opencodec.eval.scoring import ItemReadError, load_reference
from opencodec.eval.systems import EvalReportError

from train_helpers import SR, _noise, _write_set  # noqa: F401


# ------------------------------------------------------------------------------------------
# 2. NaN items are skipped; codec failures are warned about, reported, not counted, retried
# ------------------------------------------------------------------------------------------
def test_nan_item_is_skipped_and_listed(tmp_path, capsys):
    bad = _noise(seed=4)
    bad[100] = np.nan
    eval_set = _write_set(tmp_path / "set", {"clean_speech": [("good", _noise(seed=5)),
                                                              ("bad", bad)]}, subtype="FLOAT")
    with pytest.raises(ItemReadError, match="1 non-finite sample"):
        load_reference({"row": {"path": str(eval_set / "bad.wav")}, "sample_rate": SR, "channels": 1})
    doc = R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert [s["item_id"] for s in doc["meta"]["skipped"]] == ["bad"]
    assert doc["categories"]["clean_speech"]["opus-6kbps"]["n_items"] == 1
    assert "skipping item 'bad'" in capsys.readouterr().err
    assert "## Skipped items" in (tmp_path / "out" / "report.md").read_text()


def test_codec_failure_is_reported_not_counted_and_retried(tmp_path, monkeypatch, capsys):
    eval_set = _write_set(tmp_path / "set", {"music": [("a", _noise(1.2, seed=6)),
                                                       ("b", _noise(1.5, seed=7))]})
    real = BL.OpusCodec.roundtrip

    def fail_on_b(self, wav, sample_rate):
        if wav.shape[-1] == int(1.5 * SR):
            raise BL.BaselineError("boom")
        return real(self, wav, sample_rate)

    monkeypatch.setattr(BL.OpusCodec, "roundtrip", fail_on_b)
    out = tmp_path / "out"
    doc = R.run_eval([], None, ["opus6"], eval_set, out, metrics=["si_snr"], quiet=True)
    assert doc["categories"]["music"]["opus-6kbps"]["n_items"] == 1
    assert doc["categories"]["music"]["opus-6kbps"]["metrics"]["si_snr"]["n"] == 1
    assert doc["meta"]["codec_failures"] == [{"category": "music", "item_id": "b",
                                              "system": "opus-6kbps", "error": "BaselineError: boom"}]
    report = (out / "report.md").read_text()
    assert "**Codec failures**: 1" in report and "## Codec failures" in report
    assert "opus-6kbps failed on item 'b' of music: BaselineError: boom" in capsys.readouterr().err
    monkeypatch.setattr(BL.OpusCodec, "roundtrip", real)
    again = R.run_eval([], None, ["opus6"], eval_set, out, metrics=["si_snr"], quiet=True)
    assert again["categories"]["music"]["opus-6kbps"]["n_items"] == 2
    assert again["meta"]["codec_failures"] == []
    assert len((out / "results.jsonl").read_text().splitlines()) == 3  # a, b failed, b retried
    assert "Codec failures" not in (out / "report.md").read_text()


# ------------------------------------------------------------------------------------------
# 10. -f (and a narrower rerun) leaves no stale plots
# ------------------------------------------------------------------------------------------
def test_force_replaces_plots(tmp_path):
    eval_set = _write_set(tmp_path / "set", {"music": [("a", _noise(seed=1)), ("b", _noise(seed=2))]})
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old.png").write_bytes(b"x")
    (out / "notes.txt").write_text("k")
    R.run_eval([], None, ["opus6"], eval_set, out, metrics=["si_snr", "mel"], quiet=True, force=True)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["music_mel.png", "music_si_snr.png"]
    assert (out / "notes.txt").read_text() == "k"
    R.run_eval([], None, ["opus6"], eval_set, out, metrics=["si_snr"], quiet=True)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["music_si_snr.png"]


def test_single_item_comparison_says_no_interval():
    def entry(kind, family, visqol):
        return {"kind": kind, "family": family, "nominal_kbps": 6.0,
                "actual_kbps": {"mean": 6.0, "ci95": None, "n": 1},
                "metrics": {"visqol": {"mean": visqol, "ci95": None, "n": 1}}}

    summary = {"music": {"m@6kbps": entry("neural", "m", 3.0), "opus-6kbps": entry("baseline", "opus", 2.0)}}
    text = "\n".join(versus_opus(summary, ["visqol"], {}))
    assert "3.00 vs 2.00: better (no interval: fewer than 2 items)" in text
    assert "intervals overlap" not in text


def test_header_bandwidth_labels():
    meta = {"models": [], "bandwidths": [], "baselines": ["opus6"], "set": "s", "max_items": None,
            "metrics": ["si_snr"], "sample_rate": SR, "channels": 1, "n_rows": 1, "wall_s": 0.0,
            "workers": 1}
    assert _header_lines(meta)[0] == "- Models: –"
    assert _header_lines({**meta, "models": ["m"]})[0] == "- Models: m; bandwidths: each model's own"
    assert _header_lines({**meta, "models": ["m"], "bandwidths": [1.5, 6.0]})[0] == \
        "- Models: m; bandwidths: 1.5, 6 kbps"


def test_result_row_without_kind_is_not_a_result_row(tmp_path):
    path = tmp_path / "results.jsonl"
    row = {"category": "music", "item_id": "a", "system": "opus-6kbps", "family": "opus",
           "kind": "baseline", "nominal_kbps": 6.0}
    path.write_text(json.dumps(row) + "\n" + json.dumps({k: v for k, v in row.items() if k != "kind"})
                    + "\n" + json.dumps(row) + "\n")
    with pytest.raises(EvalReportError, match=r"results\.jsonl:2 is not a result row"):
        repair_results(path)
