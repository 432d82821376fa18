"""``opencodec eval`` on bad or changing inputs: unreadable items, reruns into the same
``--out`` with another request, impossible baselines, foreign output folders, a cut
``results.jsonl``, empty manifests, skipped bandwidths, two checkpoints of one config, the
Opus headline, and Ctrl-C. Baselines and SI-SNR only (plus a tiny model where a model is
needed), on 1.2 s items, so every test runs in about a second."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import matplotlib  # noqa: F401  (installed by make test: a missing extra fails, never skips)
import av  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from opencodec.eval import report as R  # noqa: E402
from opencodec.model import EncodecConfig, EncodecModel  # noqa: E402
from opencodec.pretrained import save_model  # noqa: E402

SR = 24000


def _tone(seed: int, seconds: float = 1.2) -> np.ndarray:
    """A mono test signal [T] (a few sines, the first depending on ``seed``)."""
    t = np.arange(int(seconds * SR)) / SR
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0 * (seed + 1), 330.0, 440.0)).astype(np.float32)


def _make_set(folder, items: dict[str, list[tuple[str, int | None]]]) -> None:
    """Write ``folder/eval_<category>.jsonl`` for ``{category: [(item id, seed or None)]}``;
    a seed writes a WAV of ``_tone(seed)``, ``None`` lists a file that does not exist."""
    folder.mkdir(parents=True, exist_ok=True)
    for cat, entries in items.items():
        lines = []
        for item_id, seed in entries:
            if seed is not None:
                sf.write(folder / f"{item_id}.wav", _tone(seed), SR)
            lines.append(json.dumps({"category": cat, "item_id": item_id, "path": f"{item_id}.wav"}))
        (folder / f"eval_{cat}.jsonl").write_text("".join(line + "\n" for line in lines))


def _tiny_model(path, seed: int) -> str:
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    save_model(model, path)
    return str(path)


def _opus(eval_set, out, **kw):
    kw.setdefault("metrics", ["si_snr"])
    return R.run_eval([], None, ["opus12"], eval_set, out, quiet=True, **kw)


# ------------------------------------------------------------------------------------------
# H1: unreadable items
# ------------------------------------------------------------------------------------------
def test_unreadable_items_are_skipped_warned_and_reported(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("gone", None), ("good", 0), ("junk", 1)]})
    (eval_set / "junk.wav").write_bytes(b"not audio at all")  # opens, but does not decode
    out = tmp_path / "out"
    assert R.main(["--baselines", "opus12", "--set", str(eval_set), "--metrics", "si_snr",
                   "--out", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"opencodec eval: warning: skipping item 'gone' of music: cannot read {eval_set / 'gone.wav'}" in err
    assert "skipping item 'junk' of music: cannot read" in err
    assert {r["item_id"] for r in R.read_results(out / "results.jsonl")} == {"good"}
    doc = json.loads((out / "summary.json").read_text())
    skipped = {s["item_id"]: s for s in doc["meta"]["skipped"]}
    assert set(skipped) == {"gone", "junk"}
    assert skipped["gone"]["error"] == "No such file or directory"
    assert doc["categories"]["music"]["opus-12kbps"]["n_items"] == 1
    md = (out / "report.md").read_text()
    assert "## Skipped items" in md and "| music | gone |" in md and "| music | junk |" in md


def test_every_item_unreadable_is_one_error_and_no_output(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("gone", None), ("gone2", None)]})
    out = tmp_path / "out"
    assert R.main(["--baselines", "opus12", "--set", str(eval_set), "--metrics", "si_snr",
                   "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("opencodec eval: error: no item of ")
    assert "all 2 were skipped" in err and "Traceback" not in err
    assert not out.exists()


def test_item_read_error_survives_a_worker_process():
    """The error a worker raises for an unreadable item pickles back with its fields."""
    exc = pickle.loads(pickle.dumps(R.ItemReadError("/x/a.wav", "Format not recognised.")))
    assert (exc.path, exc.reason) == ("/x/a.wav", "Format not recognised.")
    assert str(exc) == "cannot read /x/a.wav: Format not recognised."


# ------------------------------------------------------------------------------------------
# H2: the report covers exactly this run's request
# ------------------------------------------------------------------------------------------
def test_rerun_with_fewer_items_reports_only_those(tmp_path):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0), ("b", 1), ("c", 2)]})
    out = tmp_path / "out"
    _opus(eval_set, out)
    doc = _opus(eval_set, out, max_items=1)
    assert doc["categories"]["music"]["opus-12kbps"]["n_items"] == 1
    assert doc["meta"]["n_rows"] == 1
    assert len(R.read_results(out / "results.jsonl")) == 3  # the other rows stay


def test_other_set_with_the_same_item_ids_is_scored_again_not_mixed(tmp_path):
    """Item ids are not enough to resume: another set's item of the same id (other audio) is
    scored again, and the report holds only this set's items, as a fresh run would."""
    set_a, set_b = tmp_path / "a", tmp_path / "b"
    _make_set(set_a, {"music": [("x0", 0), ("x1", 1)]})
    _make_set(set_b, {"music": [("x0", 3), ("x9", 4)]})
    out = tmp_path / "out"
    _opus(set_a, out)
    doc = _opus(set_b, out)
    fresh = _opus(set_b, tmp_path / "fresh")
    assert doc["categories"]["music"]["opus-12kbps"]["n_items"] == 2
    assert doc["categories"]["music"] == fresh["categories"]["music"]
    assert len(R.read_results(out / "results.jsonl")) == 4


def test_new_metric_is_computed_for_existing_rows(tmp_path, monkeypatch):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0), ("b", 1)]})
    out = tmp_path / "out"
    _opus(eval_set, out)
    doc = _opus(eval_set, out, metrics=["si_snr", "mel"])
    stats = doc["categories"]["music"]["opus-12kbps"]["metrics"]
    assert stats["mel"]["n"] == 2 and stats["si_snr"]["n"] == 2
    assert "Mel distance" in (out / "report.md").read_text()
    # a run asking for a subset of what the rows hold computes nothing
    calls = []
    monkeypatch.setattr(R, "evaluate_item", lambda task: calls.append(task) or [])
    _opus(eval_set, out, metrics=["mel"])
    assert calls == []


def test_rows_without_an_item_hash_are_stale(tmp_path, monkeypatch):
    """Rows written before the item's file hash was recorded match no item: scored again."""
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0)]})
    out = tmp_path / "out"
    _opus(eval_set, out)
    rows = R.read_results(out / "results.jsonl")
    (out / "results.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != R.ITEM_KEY}) + "\n" for r in rows))
    _opus(eval_set, out)
    rows = R.read_results(out / "results.jsonl")
    assert len(rows) == 2 and rows[-1].get(R.ITEM_KEY)


# ------------------------------------------------------------------------------------------
# M5: baselines the encoders do not take
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ("opus3", "baseline 'opus3': Opus bitrate must be 6..510 kbit/s, got 3.0"),
    ("mp3_7", "baseline 'mp3_7': MP3 bitrate must be 8..320 kbit/s, got 7.0"),
    ("opus600", "baseline 'opus600': Opus bitrate must be 6..510 kbit/s, got 600.0"),
])
def test_impossible_baseline_bitrate_is_a_usage_error(tmp_path, capsys, spec, message):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0)]})
    out = tmp_path / "out"
    assert R.main(["--baselines", spec, "--set", str(eval_set), "--out", str(out), "-q"]) == 2
    assert capsys.readouterr().err == f"opencodec eval: error: {message}\n"
    assert not out.exists()
    with pytest.raises(R.EvalReportError, match="bitrate must be"):
        R.parse_baseline(spec)


# ------------------------------------------------------------------------------------------
# M6: --out must be new, empty, an eval output, or forced
# ------------------------------------------------------------------------------------------
def test_out_folder_that_is_not_an_eval_output_needs_force(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0)]})
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.md").write_text("train-lm's own report\n")
    args = ["--baselines", "opus12", "--set", str(eval_set), "--metrics", "si_snr", "--out", str(out), "-q"]
    assert R.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"opencodec eval: error: --out {out} is not empty and holds no eval results")
    assert "-f/--force" in err and err.count("\n") == 1
    assert (out / "report.md").read_text() == "train-lm's own report\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert R.main(args + ["--force"]) == 0
    assert "# opencodec evaluation report" in (out / "report.md").read_text()
    assert R.main(args) == 0  # now an eval output folder: resumed without -f


# ------------------------------------------------------------------------------------------
# M7: a cut last line of results.jsonl
# ------------------------------------------------------------------------------------------
def test_cut_last_line_is_dropped_and_its_row_scored_again(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0), ("b", 1), ("c", 2)]})
    out = tmp_path / "out"
    _opus(eval_set, out)
    path = out / "results.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last row cut, as by a kill or a full disk
    capsys.readouterr()
    doc = _opus(eval_set, out)
    assert "warning: dropped the incomplete last line (3)" in capsys.readouterr().err
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert doc["categories"]["music"]["opus-12kbps"]["n_items"] == 3


def test_a_foreign_line_inside_results_is_an_error_and_left_alone(tmp_path):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0), ("b", 1)]})
    out = tmp_path / "out"
    _opus(eval_set, out, max_items=1)
    path = out / "results.jsonl"
    text = "garbage\n" + path.read_text()
    path.write_text(text)
    with pytest.raises(R.EvalReportError, match=r"results\.jsonl:1 is not a result row"):
        _opus(eval_set, out)
    assert path.read_text() == text


# ------------------------------------------------------------------------------------------
# M8: empty manifests
# ------------------------------------------------------------------------------------------
def test_empty_manifests_are_an_error(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [], "general": [("a", 0)]})
    out = tmp_path / "out"
    assert R.main(["--baselines", "opus12", "--set", str(eval_set), "--categories", "music",
                   "--metrics", "si_snr", "--out", str(out), "-q"]) == 1
    assert capsys.readouterr().err == (f"opencodec eval: error: {eval_set / 'eval_music.jsonl'} lists "
                                       "no items (category 'music')\n")
    assert not out.exists()
    # by default an empty category is skipped with a note; all of them empty is an error
    doc = _opus(eval_set, out)
    assert list(doc["categories"]) == ["general"]
    assert f"note: {eval_set / 'eval_music.jsonl'} is empty" in capsys.readouterr().err
    (eval_set / "eval_general.jsonl").write_text("")
    with pytest.raises(R.EvalReportError, match="every eval_<category>.jsonl manifest under .* is empty"):
        _opus(eval_set, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------
# L3, L4, L8: models
# ------------------------------------------------------------------------------------------
def test_skipped_bandwidth_is_warned_with_quiet_and_stated_in_the_report(tmp_path, capsys):
    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0)]})
    model = _tiny_model(tmp_path / "tiny.safetensors", 0)
    out = tmp_path / "out"
    assert R.main(["--models", model, "--bandwidths", "1.5", "6", "--baselines", "opus12",
                   "--set", str(eval_set), "--metrics", "si_snr", "--out", str(out), "-q"]) == 0
    assert ("opencodec eval: warning: tiny does not support 6 kbps (supports 1.5, 3); skipped"
            in capsys.readouterr().err)
    md = (out / "report.md").read_text()
    assert "- **Not evaluated**: tiny does not support 6 kbps (supports 1.5, 3); skipped" in md
    # L8: how each kind of system's bitrate is measured
    assert "counts the whole `.ecdc` file, its header included" in md
    assert "counts the codec packets only (payload)" in md


def test_two_checkpoints_of_one_config_get_distinct_names(tmp_path):
    from opencodec.identity import model_hash
    from opencodec.pretrained import load_model

    eval_set = tmp_path / "set"
    _make_set(eval_set, {"music": [("a", 0)]})
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    m1 = _tiny_model(tmp_path / "r1" / "model.safetensors", 0)
    m2 = _tiny_model(tmp_path / "r2" / "model.safetensors", 1)
    h1, h2 = model_hash(load_model(m1))[:8], model_hash(load_model(m2))[:8]
    doc = R.run_eval([m1, m2], [1.5], [], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert set(doc["categories"]["music"]) == {f"tiny#{h1}@1.5kbps", f"tiny#{h2}@1.5kbps"}
    with pytest.raises(R.EvalReportError, match=r"duplicate systems \['tiny@1.5kbps'\]: the same model"):
        R.run_eval([m1, m1], [1.5], [], eval_set, tmp_path / "out2", metrics=["si_snr"], quiet=True)


# ------------------------------------------------------------------------------------------
# L7: the headline against Opus counts established results only
# ------------------------------------------------------------------------------------------
def test_headline_counts_only_established_results():
    def entry(family, kind, visqol, ci):
        return {"family": family, "kind": kind, "nominal_kbps": 6.0,
                "metrics": {"visqol": {"mean": visqol, "ci95": ci, "n": 2}}}

    summary = {cat: {"m@6kbps": entry("m", "neural", 3.0, 0.5),
                     "opus-6kbps": entry("opus", "baseline", 2.96, 0.5)}
               for cat in ("clean_speech", "music")}
    paired = {cat: {"m@6kbps": {"opus": "opus-6kbps",
                                "visqol": {"mean": 0.04, "ci95": 0.54, "n": 2, "wins": 1}}}
              for cat in ("clean_speech", "music")}
    text = "\n".join(R.versus_opus(summary, ["visqol"], paired))
    assert ("**m@6kbps**: ViSQOL established above Opus in 0 of 2 categories; not established in "
            "clean_speech (point estimate above), music (point estimate above).") in text


# ------------------------------------------------------------------------------------------
# H3 (eval's part): Ctrl-C
# ------------------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "run_eval", interrupted)
    out = tmp_path / "out"
    try:
        status = R.main(["--baselines", "opus12", "--set", str(tmp_path), "--out", str(out)])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped from main")
    assert status == 130
    err = capsys.readouterr().err
    assert err.startswith("opencodec eval: error: interrupted") and err.count("\n") == 1


def _sleep_long(seconds: float, marker: str) -> float:
    import time as _time

    Path(marker).write_text("started")  # the item is in progress from here on
    _time.sleep(seconds)
    return seconds


def test_stop_pool_terminates_workers_in_progress(tmp_path: Path) -> None:
    """Ctrl-C's pool stop kills the workers busy on an item (shutdown alone waits for them)."""
    import multiprocessing
    import signal
    import time as _time
    from concurrent.futures import ProcessPoolExecutor

    from opencodec.eval.workers import stop_pool

    marker = tmp_path / "started"
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    future = pool.submit(_sleep_long, 60.0, str(marker))
    deadline = _time.monotonic() + 30  # a bound for a hang only: wait for the worker to start the item
    while not marker.exists() and not future.done() and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert marker.exists() and not future.done(), "the worker never started the item"
    processes = list(pool._processes.values())
    assert len(processes) == 1 and processes[0].is_alive()
    stop_pool(pool)
    # The pool's manager thread also reaps its workers (waitpid) once it sees them die. A
    # join() here races it: the loser's waitpid fails with ECHILD, which multiprocessing reads
    # as "still running", so is_alive() could be True for a dead worker. exitcode is set by
    # whichever thread reaps it, so wait for that instead.
    deadline = _time.monotonic() + 30  # a bound for a hang only: a live worker would sleep for 60 s
    for process in processes:
        while process.exitcode is None and _time.monotonic() < deadline:
            _time.sleep(0.01)
        assert process.exitcode == -signal.SIGTERM  # terminated, not finished
