"""An entropy model (its weights file, its registered name, or a train-lm training checkpoint)
given where a trainer's config expects a codec (``opencodec train``'s ``init_from``,
``opencodec train-lm``'s ``codec``) is a one-line :class:`ConfigError` naming the config field,
raised before the run folder is made, whose advice is the config's, not the loader's
``--lm-model`` (an option neither trainer has). ``opencodec train-lm report --codec`` names its
own options (``--codec``, ``--lm``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from opencodec import cli
from opencodec.errors import ConfigError, EntropyModelAsCodecError, ModelLoadError
from opencodec.pretrained import load_model
from opencodec.train import lm_solver, solver
from test_lm_as_codec_error import LM_FILE, lm_checkpoint  # tests/ is on sys.path (conftest.py)
from test_train_errors import TRACE, _error_lines, _lm_args
from test_train_solver import _config, _corpus

_ = lm_checkpoint  # a fixture (imported so that pytest finds it here)
LM_NAME = "opencodec_lm_24khz"
INIT_FROM_ADVICE = ("init_from takes a codec's name or weights file to fine-tune; entropy models are trained "
                    "with opencodec train-lm, whose runs resume from the checkpoint.pt in their --run-dir")
CODEC_ADVICE = ("codec takes the codec whose codes the entropy model learns (a codec's name or weights "
                "file); a train-lm run resumes from the checkpoint.pt in its --run-dir")
REPORT_ADVICE = ("opencodec train-lm report takes a codec: pass a codec's name or weights file to --codec "
                 "(the entropy model goes to --lm)")


def _source(kind: str, checkpoint: Path) -> str:
    return {"file": str(LM_FILE), "name": LM_NAME, "checkpoint": str(checkpoint)}[kind]


def _problem(source: str) -> str:
    """The loader's own statement of what ``source`` is (without its ``--lm-model`` advice)."""
    with pytest.raises(EntropyModelAsCodecError) as caught:
        load_model(source)
    return caught.value.problem


def _codec_cfg(tmp_path: Path, source: str) -> dict:
    train_m, valid_m = _corpus(tmp_path / "data")
    return {**_config(train_m, valid_m, steps=1), "init_from": source}


def _lm_cfg(tmp_path: Path, source: str) -> dict:
    train_m, _ = _corpus(tmp_path / "data")
    return {"name": "unit_lm", "codec": source, "data": {"train": [str(train_m)], "cache_dir": str(tmp_path / "c")},
            "seq_len": 16, "threads": 1, "device": "cpu", "report": {"items": 0},
            "optim": {"steps": 1, "batch_size": 2}, "log": {"tensorboard": False}}


@pytest.mark.parametrize("kind", ["file", "name", "checkpoint"])
def test_codec_trainer_init_from_an_entropy_model_is_a_config_error(
        kind: str, tmp_path: Path, lm_checkpoint: Path) -> None:
    source = _source(kind, lm_checkpoint)
    with pytest.raises(ConfigError) as caught:
        solver.train(_codec_cfg(tmp_path, source), tmp_path / "run", progress=False)
    assert str(caught.value) == f"config field init_from: {_problem(source)}; {INIT_FROM_ADVICE}"
    assert source in str(caught.value) and "--lm-model" not in str(caught.value)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("kind", ["file", "name", "checkpoint"])
def test_lm_trainer_codec_an_entropy_model_is_a_config_error(
        kind: str, tmp_path: Path, lm_checkpoint: Path) -> None:
    source = _source(kind, lm_checkpoint)
    with pytest.raises(ConfigError) as caught:
        lm_solver.train(_lm_cfg(tmp_path, source), tmp_path / "run", progress=False)
    assert str(caught.value) == f"config field codec: {_problem(source)}; {CODEC_ADVICE}"
    assert source in str(caught.value) and "--lm-model" not in str(caught.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()


def test_codec_trainer_command_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(_codec_cfg(tmp_path, LM_NAME)))
    capsys.readouterr()
    status = cli.main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and TRACE not in err
    assert err.splitlines() == [f"opencodec train: error: config field init_from: {LM_NAME} is an entropy "
                                f"model, not a codec; {INIT_FROM_ADVICE}"]
    assert not (tmp_path / "run").exists()


def test_lm_trainer_command_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, _ = _corpus(tmp_path / "data")
    capsys.readouterr()
    assert cli.main(_lm_args({"codec_path": LM_FILE}, tmp_path, train_m)) == 1
    err = capsys.readouterr().err
    assert TRACE not in err
    assert err.splitlines() == _error_lines(err, "opencodec train-lm") == [
        f"opencodec train-lm: error: config field codec: {LM_FILE}: this is an entropy model, not a codec; "
        f"{CODEC_ADVICE}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_codec_that_cannot_be_loaded_keeps_the_loaders_error(tmp_path: Path) -> None:
    """Only an entropy model is re-worded: a missing codec stays the loader's ModelLoadError."""
    missing = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(ModelLoadError, match="no model named") as caught:
        solver.train(_codec_cfg(tmp_path, missing), tmp_path / "run", progress=False)
    assert not isinstance(caught.value, ConfigError)
    with pytest.raises(ModelLoadError, match="no model named") as caught:
        lm_solver.train(_lm_cfg(tmp_path, missing), tmp_path / "run", progress=False)
    assert not isinstance(caught.value, ConfigError)
    assert not (tmp_path / "run").exists()


def test_report_codec_an_entropy_model_names_reports_options(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    train_m, _ = _corpus(tmp_path / "data")
    out = tmp_path / "report"
    capsys.readouterr()
    status = cli.main(["train-lm", "report", "--lm", str(LM_FILE), "--codec", LM_NAME, "--manifest", str(train_m),
                       "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and TRACE not in err
    assert err.splitlines() == [f"opencodec train-lm report: error: {LM_NAME} is an entropy model, not a codec: "
                                f"{REPORT_ADVICE}"]
    assert not out.exists()
