"""Fixes of the fourth eval walkthrough (/tmp/walk/e4.md): a table cell says over how many
items its metric's mean is taken when fewer than the row's n, ``--categories`` given without
a name is refused (``eval`` and ``mushra build``), ``mushra build`` refuses a silent item,
and the "Skipped items" / "Codec failures" tables stay one row per entry whatever an item id,
a file name or a reason holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.eval.cli import run_command
from opencodec.eval.items import NO_CATEGORY_NAMED
from opencodec.eval.mushra import build as B
from opencodec.eval.mushra.spec import MushraError
from opencodec.eval.report import run_eval
from opencodec.eval.report_writer import _failure_lines, _skipped_lines

SR = 24000


def _noise(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * level).astype(np.float32)


def _write_set(folder: Path, category: str, items: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, wav in items.items():
        sf.write(folder / f"{name}.wav", wav, SR)
    (folder / f"eval_{category}.jsonl").write_text(
        "".join(json.dumps({"path": f"{name}.wav"}) + "\n" for name in items))
    return folder


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
    assert rc == 1
    assert err.strip() == f"opencodec eval: error: {NO_CATEGORY_NAMED}"
    assert "no eval_<category>.jsonl manifests" not in err  # the old, wrong reason
    assert not out.exists()


def test_mushra_build_refuses_categories_without_a_name(tmp_path):
    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.0)})
    with pytest.raises(MushraError, match=re.escape(NO_CATEGORY_NAMED)):
        B.build_test(eval_set, tmp_path / "test", categories=[], items_per_category=1, quiet=True)
    assert not (tmp_path / "test").exists()
    B.build_test(eval_set, tmp_path / "test", categories=None, items_per_category=1, quiet=True)
    assert (tmp_path / "test" / "test.json").is_file()


# ------------------------------------------------------------------------------------------
# 3. mushra build refuses a silent item
# ------------------------------------------------------------------------------------------
def test_mushra_build_refuses_a_silent_item(tmp_path):
    silent = {"loud": _noise(1.0, seed=3), "silence": np.zeros(SR, np.float32)}
    eval_set = _write_set(tmp_path / "set", "music", silent)
    with pytest.raises(MushraError, match=r"item 'silence' of music .* silent or nearly so "
                                          r"\(-inf dBFS RMS, below -60 dBFS\)"):
        B.build_test(eval_set, tmp_path / "test", items_per_category=2, quiet=True)
    assert not (tmp_path / "test").exists()
    assert not list(tmp_path.glob(".test.building-*"))
    # -80 dBFS noise is refused too; a quiet but audible item (-50 dBFS) is kept
    quiet = {"faint": _noise(1.0, level=1e-4, seed=4)}
    with pytest.raises(MushraError, match=r"'faint' .* \(-(79\.9|80\.0) dBFS RMS"):
        B.build_test(_write_set(tmp_path / "q", "music", quiet), tmp_path / "t2",
                     items_per_category=1, quiet=True)
    audible = {"soft": _noise(1.0, level=10 ** (-50 / 20), seed=5)}
    test = B.build_test(_write_set(tmp_path / "s", "music", audible), tmp_path / "t3",
                        items_per_category=1, quiet=True)
    assert (tmp_path / "t3" / "test.json").is_file() and test is not None


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


def test_mushra_report_escapes_a_listener_id(tmp_path):
    """A listener id is typed on the rating page (any printable text, ``|`` included); the
    Listeners table of mushra_report.md keeps one row of five cells per listener."""
    from opencodec.eval.mushra import db
    from opencodec.eval.mushra.report import make_report

    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.0, seed=6)})
    test = B.build_test(eval_set, tmp_path / "test", items_per_category=1, quiet=True)
    raw = json.loads((tmp_path / "test" / "test.json").read_text())
    trial = raw["trials"][0]
    for listener in ("alice|bob", "carol"):
        db.store_trial(tmp_path / "test" / "ratings.sqlite", test.test_id, listener,
                       trial["trial_id"], [(c["id"], c["system"], 100.0 if c["system"] ==
                                            "hidden-reference" else 40.0)
                                           for c in trial["conditions"]])
    make_report(tmp_path / "test")
    text = (tmp_path / "test" / "report" / "mushra_report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| alice")]
    assert rows == ["| alice\\|bob | 1 | 0 | 0.0% | yes |"]


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
