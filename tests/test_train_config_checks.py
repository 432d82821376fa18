"""The trainers' config and run-folder checks: a bad value is one line naming the field, found
before anything is written; unknown keys of the YAML file are refused; overrides may follow
options; a resume keeps config.json and names the changed keys; a second training into the
same folder is refused; logs hold each step once after a resume; a full disk is one line;
exports and checkpoints get the usual permissions; the run folder records its provenance."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import cli
from opencodec._files import write_bytes_atomic
from opencodec.train import run_folder, solver
from test_train_errors import TRACE, _error_lines, _lm_args, _train
from test_train_solver import _config, _corpus

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("change, expected", [
    ({"optim": {"batch_size": 0}}, "config field optim.batch_size must be >= 1, got 0"),
    ({"optim": {"steps": 0}}, "config field optim.steps must be >= 1, got 0"),
    ({"optim": {"steps": "abc"}}, "config field optim.steps: expected an integer, got 'abc'"),
    ({"log": {"every": 0}}, "config field log.every must be >= 1, got 0"),
    ({"data": {"segment_seconds": -1}}, "config field data.segment_seconds must be > 0, got -1"),
    ({"data": {"segment_seconds": 0}}, "config field data.segment_seconds must be > 0, got 0"),
    ({"adversarial": {"disc_prob": 2}}, "config field adversarial.disc_prob must be in [0, 1], got 2"),
    ({"device": "gpu"}, "config field device: 'gpu' is not a device"),
    pytest.param({"device": "cuda"}, "config field device is cuda, but CUDA is not available",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ({"bandwidths": [5.0]}, "config field bandwidths: model unit_24khz does not support 5 kbps"),
    ({"valid": {"bandwidths": [24.0]}}, "config field valid.bandwidths: model unit_24khz does not support 24 kbps"),
    ({"model": {"target_bandwidths": [0.6, 48.0]}},
     "config field model.target_bandwidths: 48 kbps cannot be coded by 4 codebooks of 16 entries at 75 Hz "
     "(at most 1.2 kbps)"),
])
def test_a_bad_value_is_one_line_before_anything_is_written(change: dict, expected: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    for section, value in change.items():
        if isinstance(value, dict):
            cfg[section].update(value)
        else:
            cfg[section] = value
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and TRACE not in err
    assert err.splitlines() == _error_lines(err) and err.startswith(f"opencodec train: error: {expected}"), err
    assert not (tmp_path / "run").exists()


def test_unknown_keys_of_the_file_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["optim"]["stepz"] = 5
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 2 and TRACE not in err
    assert f"opencodec train: error: {tmp_path / 'unit.yaml'}: unknown key optim.stepz (did you mean optim.steps?)" in err
    lm_yaml = tmp_path / "lm.yaml"
    lm_yaml.write_text((test_train_lm.ROOT / "configs" / "lm_tiny.yaml").read_text() + "seq_lenn: 3\n")
    assert cli.main(["train-lm", str(lm_yaml), "--run-dir", str(tmp_path / "lm")]) == 2
    assert "unknown key seq_lenn (did you mean seq_len?)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "lm").exists()


def test_overrides_may_follow_options_and_max_steps_0_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    status, err = _train(tmp_path, capsys, cfg, "optim.steps=2", "--max-steps", "1", "log.every=1")
    assert status == 0, err
    assert "stopped at step 1 of 2; rerun the same command to continue" in err
    assert f"exported generator: {tmp_path / 'run' / 'model.safetensors'}" in err
    status, err = _train(tmp_path, capsys, cfg, "--max-steps", "0")
    assert status == 2 and "--max-steps" in err and TRACE not in err


def test_resume_keeps_config_json_and_names_the_changed_keys(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    assert _train(tmp_path, capsys, cfg)[0] == 0
    run = tmp_path / "run"
    first = (run / "config.json").read_text()
    cfg["model"]["n_filters"] = 8  # another architecture: refused, config.json untouched
    assert _train(tmp_path, capsys, cfg)[0] == 1
    assert (run / "config.json").read_text() == first
    cfg["model"]["n_filters"] = 4
    cfg["optim"].update(lr=1e-3, steps=3)
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 0, err
    assert (f"warning: resuming {run} at step 2 with a changed config: optim.lr 0.0003 -> 0.001; "
            f"optim.steps 2 -> 3 (config.json keeps the run's first config") in err
    assert (run / "config.json").read_text() == first
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2]  # the refused resume is not a start
    assert history[1]["changed"] == {"optim.lr": {"was": 3e-4, "now": 1e-3}, "optim.steps": {"was": 2, "now": 3}}
    import opencodec
    assert history[0]["opencodec"] == opencodec.__version__ and "commit" in history[0] and history[0]["command"]
    cfg["optim"]["steps"] = 2  # already past it
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 0 and f"{run} is at step 3, optim.steps is 2: nothing to train" in err


def test_a_second_training_into_the_same_folder_is_refused(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    with run_folder.RunFolder(tmp_path / "run"):  # another training holds the folder
        status, err = _train(tmp_path, capsys, _config(train_m, valid_m, steps=1))
    assert status == 1 and err.splitlines() == [
        f"opencodec train: error: {tmp_path / 'run'} is in use by another training (pid {os.getpid()} on "
        f"{os.uname().nodename}); wait for it to end or use another --run-dir"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]
    assert _train(tmp_path, capsys, _config(train_m, valid_m, steps=1))[0] == 0  # released


def test_resume_logs_each_step_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=5)
    assert _train(tmp_path, capsys, cfg, "--max-steps", "3")[0] == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    with metrics.open("a") as f:  # a run killed after step 4, between two checkpoints, mid-row
        f.write(json.dumps({"step": 4, "train/lr": 1.0}) + '\n{"step": 5, "tr')
    writers = []
    monkeypatch.setattr("torch.utils.tensorboard.SummaryWriter",
                        lambda *a, **kw: writers.append(kw) or pytest.fail("only its arguments are checked"))
    cfg["log"]["tensorboard"] = True
    with pytest.raises(BaseException, match="only its arguments"):
        _train(tmp_path, capsys, cfg)
    assert writers == [{"purge_step": 4}]
    cfg["log"]["tensorboard"] = False
    assert _train(tmp_path, capsys, cfg)[0] == 0
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows if "train/lr" in r] == [1, 2, 3, 4, 5]


def test_a_full_disk_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)

    def full(path: Path, data: bytes) -> None:  # the checkpoint's write fails as a full disk's
        if path.name == "checkpoint.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_bytes_atomic(path, data)

    monkeypatch.setattr(run_folder, "write_bytes_atomic", full)
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and TRACE not in err
    assert _error_lines(err) == [f"opencodec train: error: writing {tmp_path / 'run' / 'checkpoint.pt'}: "
                                 f"no space left on device"]
    monkeypatch.undo()

    def safetensors_full(*args: object, **kwargs: object) -> None:  # safetensors' own error type
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(solver, "save_model", safetensors_full)
    status, err = _train(tmp_path, capsys, cfg, "--run-dir", str(tmp_path / "run2"))
    assert status == 1 and _error_lines(err) == [
        f"opencodec train: error: writing {tmp_path / 'run2' / 'model.safetensors'}: no space left on device"]


def test_outputs_have_the_usual_permissions_and_short_files_are_said(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["data"]["segment_seconds"] = 5.0  # every file lasts 1.5-2.7 s
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 0
    assert ("warning: every training file is shorter than data.segment_seconds=5 s (the longest lasts 2.7 s): "
            "each segment is zero-padded to 5 s") in err
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "model.safetensors", "config.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_manifest_row_without_duration_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    row = json.loads(train_m.read_text().splitlines()[0])
    del row["duration"]
    bad = tmp_path / "nodur.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    status, err = _train(tmp_path, capsys, _config(bad, valid_m, steps=1))
    assert status == 1 and _error_lines(err) == [
        f'opencodec train: error: manifest {bad}: the row of {row["path"]} has no "duration" (seconds; a '
        f'training row needs it, see docs/DATA_PIPELINE.md)']


@pytest.mark.parametrize("override, expected", [
    ("seq_len=100000", "config field seq_len is 100000 frames, over 8 attention windows (8 x 262 frames"),
    pytest.param("device=cuda", "config field device is cuda, but CUDA is not available",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ("optim.min_lr_ratio=2", "config field optim.min_lr_ratio must be in [0, 1], got 2.0"),
])
def test_train_lm_bad_value_before_anything_is_written(override: str, expected: str, codec_setup: dict,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _lm_args(codec_setup, tmp_path, codec_setup["train"])
    assert cli.main(args + [override]) == 1  # (after the options, and after _lm_args's seq_len=16)
    err = capsys.readouterr().err
    lines = _error_lines(err, "opencodec train-lm")
    assert len(lines) == 1 and lines[0].startswith(f"opencodec train-lm: error: {expected}") and TRACE not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_train_lm_says_where_it_stopped_and_report_errors_name_report(
        codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _lm_args(codec_setup, tmp_path, codec_setup["train"])
    assert cli.main(args + ["--max-steps", "1"]) == 0
    assert "stopped at step 1 of 2; rerun the same command to continue" in capsys.readouterr().err
    assert cli.main(["train-lm", "report", "--lm", str(tmp_path / "nope.safetensors"), "--codec",
                     str(codec_setup["codec_path"]), "--manifest", str(codec_setup["valid"])]) != 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("opencodec train-lm report: error:"), lines


def test_the_config_yaml_helper_loads_the_shipped_codec_configs() -> None:
    for name in ("tiny_24khz", "opencodec_24khz", "opencodec_cpu_24khz", "encodec_24khz", "encodec_48khz"):
        path = test_train_lm.ROOT / "configs" / f"{name}.yaml"
        cfg = solver.load_config(path)
        assert isinstance(yaml.safe_dump(cfg), str)
        # no overrides: the helper returns the file's mapping unchanged
        assert cfg == yaml.safe_load(path.read_text())
        model = cfg["model"]
        assert model["sample_rate"] in (24000, 48000) and model["bins"] == 1024
        # the spec's rule n_q = int(1000 * max_bw // (frame_rate * 10)), frame rate = sr / hop
        frame_rate = model["sample_rate"] / math.prod(model["ratios"])
        assert model["n_q"] == int(1000 * max(model["target_bandwidths"]) // (frame_rate * 10))
        # an override changes that key only
        changed = solver.load_config(path, ["optim.steps=7"])
        assert changed["optim"]["steps"] == 7
        changed["optim"]["steps"] = cfg["optim"]["steps"]
        assert changed == cfg
    # the paper's two models (spec section 1 table)
    paper24 = solver.load_config(test_train_lm.ROOT / "configs" / "encodec_24khz.yaml")["model"]
    assert (paper24["sample_rate"], paper24["channels"], paper24["causal"], paper24["n_q"]) == (
        24000, 1, True, 32)
    assert paper24["target_bandwidths"] == [1.5, 3.0, 6.0, 12.0, 24.0]
    paper48 = solver.load_config(test_train_lm.ROOT / "configs" / "encodec_48khz.yaml")["model"]
    assert (paper48["sample_rate"], paper48["channels"], paper48["causal"], paper48["n_q"]) == (
        48000, 2, False, 16)
    assert paper48["target_bandwidths"] == [3.0, 6.0, 12.0, 24.0]


def test_resume_into_a_folder_without_config_json_records_the_checkpoints(tmp_path) -> None:
    """A campaign resumes into a new folder that holds only the unpacked checkpoint: the
    folder gets the checkpoint's config (the run's), and the change is still reported."""
    import json as _json

    from opencodec.train.run_folder import RunFolder

    before, now = {"optim": {"lr": 1e-3}}, {"optim": {"lr": 5e-4}}
    with RunFolder(tmp_path / "run") as folder:
        folder.start(now, 5, before, tensorboard=False)
    assert _json.loads((tmp_path / "run" / "config.json").read_text()) == before
    history = [_json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["changed"] == {"optim.lr": {"was": 1e-3, "now": 5e-4}}


def test_a_file_system_without_locks_trains_unlocked(tmp_path, monkeypatch, capsys) -> None:
    import errno as _errno
    import fcntl

    from opencodec.train.run_folder import RunFolder

    def no_locks(handle, flags) -> None:
        raise OSError(_errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunFolder(tmp_path / "run") as folder:
        folder.start({"a": 1}, 0, None, tensorboard=False)
    assert "cannot lock" in capsys.readouterr().err
    assert (tmp_path / "run" / "config.json").exists()
