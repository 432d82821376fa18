"""The trainers' errors: the user's (config, manifest, training audio, checkpoint) are one line
on stderr and exit status 1; an unexpected error of the training loop (a bug) propagates with
its traceback; and ``OPENCODEC_TRACEBACK=1`` adds the traceback to a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import cli
from opencodec.errors import ConfigError, OpenCodecError
from opencodec.train import campaign, lm_config, lm_solver, solver
from opencodec.train.config import load_config
from test_train_solver import _config, _corpus

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
TRACE = "Traceback (most recent call last)"


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str], cfg: dict, *extra: str) -> tuple[int, str]:
    """``opencodec train`` on ``cfg`` (run folder ``tmp_path/run``): exit status and stderr."""
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    status = cli.main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress", *extra])
    return status, capsys.readouterr().err


def _error_lines(err: str, prog: str = "opencodec train") -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]


def test_config_error_is_one_class() -> None:
    assert lm_config.ConfigError is ConfigError and lm_solver.ConfigError is ConfigError
    assert issubclass(ConfigError, OpenCodecError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match="not a campaign state"):
        campaign.expand_state({"model": {}})


@pytest.mark.parametrize("case", ["not_json", "not_an_object", "no_path", "missing_audio", "missing_audio_device",
                                  "missing_audio_workers"])
def test_a_bad_manifest_or_missing_audio_is_one_line(case: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    good = train_m.read_text().splitlines()[0]
    row = json.loads(good)
    bad = tmp_path / "bad.jsonl"
    cfg = _config(bad, valid_m, steps=1)
    if case == "not_json":
        bad.write_text(f"{good}\n\n{{'path': 'x.wav'}}\n")  # line 3 (blank lines count)
        expected = f"{bad}:3: not a JSON object (Expecting property name enclosed in double quotes)"
    elif case == "not_an_object":
        bad.write_text(f"{good}\n[1, 2]\n")
        expected = f'{bad}:2: a manifest row needs a string "path"'
    elif case == "no_path":
        bad.write_text(good + "\n" + json.dumps({k: v for k, v in row.items() if k != "path"}) + "\n")
        expected = f'{bad}:2: a manifest row needs a string "path"'
    else:
        missing = tmp_path / "nowhere.wav"
        bad.write_text(json.dumps({**row, "path": str(missing)}) + "\n")
        if case == "missing_audio_device":
            cfg["data"]["loader"] = "device"  # decoded at set-up, before the run folder
            expected = f"cannot read audio file {missing}: no such file"
        else:  # skipped with a warning while files are left, then the error
            if case == "missing_audio_workers":  # raised in a DataLoader worker process, re-raised here
                cfg["data"]["num_workers"] = 2
            expected = f"no readable audio file left in the manifests: 1 unreadable, the last {missing} ("
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1
    assert TRACE not in err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"opencodec train: error: {expected}"), err
    if not case.startswith("missing_audio") or case == "missing_audio_device":  # found before anything is written
        assert err.splitlines() == lines
        assert not (tmp_path / "run").exists()


def test_a_bad_value_in_the_set_up_is_one_line_and_traceback_on_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that a helper of the set-up refuses with a plain ValueError (``amp`` is checked in
    step.py) is the config's: one line, nothing written; OPENCODEC_TRACEBACK=1 adds where."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["amp"] = "fp16"
    expected = ("opencodec train: error: amp: expected 'none' or 'bf16', got 'fp16' "
                "(while setting up the run; OPENCODEC_TRACEBACK=1 shows where)")
    status, err = _train(tmp_path, capsys, cfg)
    assert (status, err.splitlines()) == (1, [expected])
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("OPENCODEC_TRACEBACK", "0")
    assert _train(tmp_path, capsys, cfg)[1].splitlines() == [expected]
    monkeypatch.setenv("OPENCODEC_TRACEBACK", "1")
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and err.startswith(TRACE)
    assert "ValueError: amp: expected 'none' or 'bf16'" in err and "in autocast_for" in err  # the cause
    assert err.splitlines()[-1] == expected


def test_an_unexpected_error_of_the_loop_propagates(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError raised inside the training loop is a bug: it leaves ``main`` as it is (with its
    traceback) instead of becoming an 'error:' line."""
    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(solver, "generator_step", boom)  # where the loop looks it up
    train_m, valid_m = _corpus(tmp_path / "data")
    with pytest.raises(ValueError, match="^boom$") as exc:
        _train(tmp_path, capsys, _config(train_m, valid_m, steps=2))
    assert type(exc.value) is ValueError
    assert not _error_lines(capsys.readouterr().err)


def test_a_checkpoint_of_another_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    assert _train(tmp_path, capsys, cfg)[0] == 0
    cfg["model"]["n_filters"] = 8  # the same run folder, another model
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and TRACE not in err
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert err.splitlines() == _error_lines(err)
    assert err.strip() == (f"opencodec train: error: {checkpoint} holds a codec of another architecture: "
                           f"n_filters 8 (checkpoint: 4); resume with the checkpoint's model.* values (only "
                           f"model.name and model.target_bandwidths may change) or use another --run-dir")


def test_a_config_that_is_not_yaml_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("name: x\noptim: {steps: 3\nseed: 1\n")
    with pytest.raises(ConfigError, match=rf"^{config}: not a YAML config: .*\(line 3, column \d+\)$"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"^override 'optim.lr=\[1,': the value is not YAML: "):
        load_config(Path(test_train_lm.ROOT) / "configs" / "tiny_24khz.yaml", ["optim.lr=[1,"])
    assert cli.main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2  # a usage error
    err = capsys.readouterr().err
    assert TRACE not in err and f"opencodec train: error: {config}: not a YAML config: " in err


def _lm_args(setup: dict, tmp_path: Path, train_manifest: Path) -> list[str]:
    return ["train-lm", str(test_train_lm.ROOT / "configs" / "lm_tiny.yaml"), f"codec={setup['codec_path']}",
            f"data.train=[{train_manifest}]", "data.valid=[]", f"data.cache_dir={tmp_path / 'cache'}",
            "optim.steps=2", "optim.batch_size=2", "seq_len=16", "threads=1", "report.items=0",
            "log.tensorboard=false", "--run-dir", str(tmp_path / "run"), "--no-progress"]


def test_train_lm_bad_manifest_is_one_line_and_a_loop_error_propagates(
        codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "item0.wav"\n')
    assert cli.main(_lm_args(codec_setup, tmp_path, bad)) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"opencodec train-lm: error: {bad}:1: not a JSON object (Expecting ',' delimiter)"]

    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(lm_solver, "_loss", boom)  # where the loop looks it up
    with pytest.raises(ValueError, match="^boom$") as exc:
        cli.main(_lm_args(codec_setup, tmp_path, codec_setup["train"]))
    assert type(exc.value) is ValueError
    assert not _error_lines(capsys.readouterr().err, "opencodec train-lm")


def test_opencodec_traceback_prints_the_traceback_of_an_expected_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        offline: Path) -> None:
    """cli/main.py's one-line handler: the traceback only with OPENCODEC_TRACEBACK set (not 0)."""
    args = ["compress", str(tmp_path / "nowhere.wav"), str(tmp_path / "out.ecdc")]
    expected = f"opencodec: error: input {tmp_path / 'nowhere.wav'} does not exist"
    for value in (None, "", "0"):
        if value is None:
            monkeypatch.delenv("OPENCODEC_TRACEBACK", raising=False)
        else:
            monkeypatch.setenv("OPENCODEC_TRACEBACK", value)
        assert cli.main(args) == 1
        assert capsys.readouterr().err.splitlines() == [expected]
    monkeypatch.setenv("OPENCODEC_TRACEBACK", "1")
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(TRACE) and "FileNotFoundError: input" in err
    assert err.splitlines()[-1] == expected


@pytest.mark.parametrize("override, expected", [
    ("optim.betas=[x, y]", "config field optim.betas: expected two numbers in [0, 1), got ['x', 'y']"),
    ("optim.lr=-1", "config field optim.lr must be > 0, got -1")])
def test_train_lm_bad_value_is_one_line(override: str, expected: str, codec_setup: dict, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A value the optimiser would refuse is named by the settings parser, in one line."""
    args = _lm_args(codec_setup, tmp_path, codec_setup["train"])
    assert cli.main(args[:2] + [override] + args[2:]) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err, "opencodec train-lm")
    assert lines == [f"opencodec train-lm: error: {expected}"] and TRACE not in err


def test_train_lm_run_folder_of_other_sizes_is_one_line(codec_setup: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = _lm_args(codec_setup, tmp_path, codec_setup["train"])
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args[:2] + ["lm.dim=16"] + args[2:]) == 1
    lines = _error_lines(capsys.readouterr().err, "opencodec train-lm")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert lines == [f"opencodec train-lm: error: {checkpoint} was trained with lm.dim=32, not this config's "
                     f"lm.dim=16: resume with the run's, or use another --run-dir"]  # the field, not a tensor
