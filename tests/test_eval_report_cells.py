"""The eval report's cells and summary: the item count a metric's mean is taken over,
escaped listings, each model's weights named, categories without a name, a dead worker,
codec failures counted in the summary, PESQ wide-band only at 16 kHz and above, the
   narrow-band note of the header."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from opencodec.eval.cli import run_command
from opencodec.eval.items import NO_CATEGORY_NAMED
from opencodec.eval.report import run_eval
from opencodec.eval.report_writer import _failure_lines, _skipped_lines

from train_helpers import SR, noise_seconds as _noise, write_category_set as _write_set  # noqa: F401


# ------------------------------------------------------------------------------------------
# 1. A cell whose metric is defined on fewer items than the row's n says so
# ------------------------------------------------------------------------------------------
def test_table_cell_names_the_items_its_metric_is_taken_over(tmp_path):
    """Two speech items, one of 0.3 s (ViSQOL's speech mode needs 0.64 s): the row's n is 2,
    SI-SNR's mean is over both, ViSQOL's over one, and the ViSQOL cell says (n=1)."""
    eval_set = _write_set(tmp_path / "set", "clean_speech",
                          {"long": _noise(1.2, seed=1), "short": _noise(0.3, seed=2)})
    doc = run_eval([], None, ["opus12"], eval_set, tmp_path / "out",
                   metrics=["si_snr", "visqol"], quiet=True)
    stats = doc["categories"]["clean_speech"]["opus-12kbps"]
    assert stats["n_items"] == 2
    assert stats["metrics"]["si_snr"]["n"] == 2 and stats["metrics"]["visqol"]["n"] == 1
    report = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| opus-12kbps | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    si_snr, visqol = cells[4], cells[5]
    assert "(n=" not in si_snr and "±" in si_snr
    assert visqol == f"{stats['metrics']['visqol']['mean']:.2f} (n=1)"
    assert "`(n=K)`" in report  # the header explains the mark


# ------------------------------------------------------------------------------------------
# 2. --categories without a name
# ------------------------------------------------------------------------------------------
def test_eval_refuses_categories_without_a_name(tmp_path, capsys):
    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.0)})
    out = tmp_path / "out"
    rc = run_command(["--baselines", "opus12", "--set", str(eval_set), "--out", str(out),
                      "--categories", "-q"], "opencodec eval", run_eval)
    err = capsys.readouterr().err
    assert rc == 2  # a usage error, as --metrics without a name
    assert err.strip() == f"opencodec eval: error: {NO_CATEGORY_NAMED}"
    assert "no eval_<category>.jsonl manifests" not in err  # the old, wrong reason
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# 4. Listings stay one table row per entry
# ------------------------------------------------------------------------------------------
def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_listings_escape_every_cell():
    skipped = [{"category": "general", "item_id": "a|b", "path": "/x/a|b.wav",
                "error": "first line\nsecond | line"}]
    lines = _skipped_lines(skipped)
    rows = [line for line in lines if line.startswith("| general")]
    assert len(rows) == 1 and _unescaped_pipes(rows[0]) == 5
    assert "a\\|b" in rows[0] and "first line second \\| line" in rows[0]
    failures = [{"category": "music", "item_id": "x|y", "system": "opus-6kbps",
                 "error": "ValueError: bad"}]
    rows = [line for line in _failure_lines(failures) if line.startswith("| music")]
    assert len(rows) == 1 and _unescaped_pipes(rows[0]) == 5 and "x\\|y" in rows[0]


# ------------------------------------------------------------------------------------------
# 5. The report names the weights it scored
# ------------------------------------------------------------------------------------------
def test_report_names_each_models_weights(tmp_path):
    """``--models`` takes an alias or a file name; report.md and summary.json name the
    system each became and its weights hash (as results.jsonl's rows carry it)."""
    import torch

    from opencodec.identity import model_hash
    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.pretrained import save_model

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    path = save_model(model, tmp_path / "weights.safetensors")
    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(0.5, seed=7)})
    doc = run_eval([str(path)], [1.5], ["opus12"], eval_set, tmp_path / "out",
                   metrics=["si_snr"], quiet=True)
    digest = model_hash(model)
    assert doc["meta"]["model_weights"] == {str(path): {"system": "tiny", "weights_sha256": digest}}
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r.get("weights_sha256") for r in rows if r["kind"] == "neural"} == {digest}
    first = (tmp_path / "out" / "report.md").read_text().splitlines()[2]
    assert first == f"- Models: {path} (`tiny`, weights `{digest}`); bandwidths: 1.5 kbps"


# ------------------------------------------------------------------------------------------
# 6. PESQ-WB only on wide-band audio
# ------------------------------------------------------------------------------------------
def test_pesq_wb_is_not_given_below_16_khz():
    """At a scoring rate below 16 kHz (``--sample-rate 8000``) the audio is narrow-band: a
    P.862.2 (wide-band) score would be computed on its upsampled copy and read as wide-band.
    It is left out with the reason; at 16 kHz it is scored as before."""
    from opencodec.eval.metrics import MetricError, pesq_wb
    from opencodec.eval.scoring import score

    rate = 8000
    t = np.arange(rate * 2) / rate
    rng = np.random.default_rng(8)
    ref = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
           + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    est = (ref + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    with pytest.raises(MetricError, match=r"at 8000 Hz the signals hold only 0-4000 Hz"):
        pesq_wb(est, ref, rate)
    values, errors = score(est[None], ref[None], rate, "clean_speech", ["pesq", "si_snr"])
    assert values["pesq"] is None and "wide-band" in errors["pesq"]
    assert values["si_snr"] is not None
    import soxr
    up_ref = soxr.resample(ref, rate, 16000).astype(np.float32)
    up_est = soxr.resample(est, rate, 16000).astype(np.float32)
    assert 1.0 <= pesq_wb(up_est, up_ref, 16000) <= 4.65


# ------------------------------------------------------------------------------------------
# 7. A worker process that dies is one line, not a traceback
# ------------------------------------------------------------------------------------------
def _die(task: dict) -> list[dict]:  # a worker killed while scoring (OOM killer, kill -9)
    import os

    os._exit(9)


def test_a_dead_worker_is_an_eval_error_naming_the_results_file(tmp_path):
    from opencodec.eval.results_file import ResultsFile
    from opencodec.eval.systems import EvalReportError
    from opencodec.eval.workers import run_tasks

    tasks = [{"category": "music", "item_id": f"i{k}"} for k in range(2)]
    results = tmp_path / "out" / "results.jsonl"
    with pytest.raises(EvalReportError, match=r"a worker process stopped abruptly .* item 'i\d' "
                                              r"of music .* kept in .*results\.jsonl: rerun"):
        run_tasks(tasks, ResultsFile(results), (), (), 2, True, _die)


# ------------------------------------------------------------------------------------------
# 8. summary.json counts the codec failures it lists
# ------------------------------------------------------------------------------------------
def test_summary_counts_codec_failures(tmp_path, monkeypatch):
    """The failed (item, system) pairs are left out of the scored rows; ``n_codec_failures``
    of their system used to be counted over those rows, so it said 0 beside
    ``meta.codec_failures`` listing one."""
    from opencodec.eval import baselines as BL

    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.2, seed=6),
                                                      "b": _noise(1.5, seed=7)})
    real = BL.OpusCodec.roundtrip

    def fail_on_b(self, wav, sample_rate):
        if wav.shape[-1] == int(1.5 * SR):
            raise BL.BaselineError("boom")
        return real(self, wav, sample_rate)

    monkeypatch.setattr(BL.OpusCodec, "roundtrip", fail_on_b)
    doc = run_eval([], None, ["opus6", "mp3_64"], eval_set, tmp_path / "out",
                   metrics=["si_snr"], quiet=True)
    assert len(doc["meta"]["codec_failures"]) == 1
    music = doc["categories"]["music"]
    assert (music["opus-6kbps"]["n_items"], music["opus-6kbps"]["n_codec_failures"]) == (1, 1)
    assert (music["mp3-64kbps"]["n_items"], music["mp3-64kbps"]["n_codec_failures"]) == (2, 0)


# ------------------------------------------------------------------------------------------
# 2. summarize(rows, metrics) counts the codec failures among its rows
# ------------------------------------------------------------------------------------------
def _row(item: str, system: str = "opus-6kbps", codec_error: str | None = None) -> dict:
    row = {"category": "music", "item_id": item, "system": system, "family": "opus",
           "kind": "baseline", "nominal_kbps": 6.0, "actual_kbps": 6.1, "rtf": 0.01,
           "metrics": {"si_snr": None if codec_error else 5.0}, "errors": {}}
    if codec_error:
        row["errors"]["codec"] = codec_error
    return row


def test_summarize_counts_the_codec_failures_among_its_rows() -> None:
    """Called with every row of results.jsonl (a failed row among them) and no ``failures``
    argument, ``n_codec_failures`` counts that row (not only the pairs ``failures`` lists,
    which would say 0); a pair listed in ``failures`` and present as a row counts once."""
    from opencodec.eval.summary import summarize

    rows = [_row("a"), _row("b", codec_error="boom")]
    entry = summarize(rows, ["si_snr"])["music"]["opus-6kbps"]
    assert (entry["n_items"], entry["n_codec_failures"]) == (2, 1)
    listed = [{"category": "music", "item_id": "b", "system": "opus-6kbps", "error": "boom"}]
    assert summarize(rows, ["si_snr"], listed)["music"]["opus-6kbps"]["n_codec_failures"] == 1
    entry = summarize(rows[:1], ["si_snr"], listed)["music"]["opus-6kbps"]
    assert (entry["n_items"], entry["n_codec_failures"]) == (1, 1)


# ------------------------------------------------------------------------------------------
# 3. A report scored below 16 kHz says that its audio is narrow-band
# ------------------------------------------------------------------------------------------
def _meta(sample_rate: int) -> dict:
    return {"models": [], "bandwidths": [], "baselines": ["opus6"], "set": "set", "max_items": None,
            "metrics": ["visqol"], "sample_rate": sample_rate, "channels": 1, "n_rows": 1,
            "wall_s": 1.0, "workers": 1}


def test_report_header_says_when_scoring_is_narrow_band() -> None:
    """At ``--sample-rate 8000`` ViSQOL's speech mode (a wide-band model) scores upsampled
    narrow-band audio, and PESQ-WB is left out: the header says both; at 16 kHz or more it
    says nothing of the kind."""
    from opencodec.eval.report_writer import _header_lines

    narrow = [line for line in _header_lines(_meta(8000)) if "Narrow-band" in line]
    assert len(narrow) == 1 and "0-4000 Hz" in narrow[0] and "not comparable" in narrow[0]
    assert "PESQ-WB is not given" in narrow[0]
    for rate in (16000, 24000):
        assert not any("Narrow-band" in line for line in _header_lines(_meta(rate)))
