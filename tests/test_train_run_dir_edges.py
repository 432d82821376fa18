"""Edges of the trainers' run folders and of a few config values (a user walkthrough of
``opencodec train`` and ``opencodec train-lm``): a folder the trainer did not make is never
written over, a codec run given to train-lm names its export only where there is one, an absurd
``data.segment_seconds`` and empty bandwidth lists are refused by name, and an entropy model
resumed with other sizes names the config fields. Each test checks the exact message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec.errors import ConfigError
from opencodec.train.config_checks import check_codec_config
from opencodec.train.lm_config import parse_settings
from test_lm_train_uncovered import _lm_args, _lm_main
from test_train_solver import _config, _corpus
from test_train_uncovered import _train
from train_helpers import set_dotted

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
TRACE = "Traceback (most recent call last)"
FOREIGN = {"config.json": '{"model_type": "bert", "hidden_size": 768}\n', "metrics.jsonl": '{"epoch": 1}\n'}


def _foreign_folder(run: Path, names: tuple[str, ...]) -> dict[str, str]:
    """A folder of another tool (a model folder's ``config.json``, a ``metrics.jsonl``)."""
    run.mkdir(parents=True)
    for name in names:
        (run / name).write_text(FOREIGN[name])
    return {name: FOREIGN[name] for name in names}


def _contents(run: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in run.iterdir()}


def _refusal(run: Path, names: tuple[str, ...]) -> str:
    return (f"--run-dir {run} is not an opencodec run folder (it holds {', '.join(names)} but no history.jsonl "
            f"or checkpoint.pt) and training would overwrite them; give a new or empty folder as --run-dir")


# -- 1. a folder the trainer did not make ------------------------------------------------------------
@pytest.mark.parametrize("names", [("config.json",), ("metrics.jsonl",), ("config.json", "metrics.jsonl")])
def test_codec_trainer_refuses_a_folder_it_did_not_make(names: tuple[str, ...], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    before = _foreign_folder(tmp_path / "run", names)
    status, err = _train(tmp_path, capsys, _config(train_m, valid_m, steps=1), "--no-progress")
    assert (status, err.strip().splitlines()) == (1, [f"opencodec train: error: {_refusal(tmp_path / 'run', names)}"])
    assert _contents(tmp_path / "run") == before  # nothing written, not even the lock


def test_codec_trainer_writes_into_its_own_folders_and_beside_other_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["log"]["valid_every"] = 1000
    run = tmp_path / "run"
    run.mkdir()
    (run / "slurm.out").write_text("job 1\n")  # a scheduler's log, written before the trainer starts
    assert _train(tmp_path, capsys, cfg, "--no-progress")[0] == 0
    assert (run / "slurm.out").read_text() == "job 1\n" and (run / "checkpoint.pt").is_file()
    # a run killed before its first checkpoint (its lock and start log stay): it starts over
    (run / "checkpoint.pt").unlink()
    (run / "model.safetensors").unlink()
    status, err = _train(tmp_path, capsys, cfg, "--no-progress")
    assert status == 0 and "(it left no checkpoint: the run starts over from step 0)" in err, err
    starts = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert starts == [0, 0] and (run / "checkpoint.pt").is_file()


def test_train_lm_refuses_a_folder_it_did_not_make(codec_setup: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    names = ("config.json", "metrics.jsonl")
    before = _foreign_folder(tmp_path / "run", names)
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    assert (status, err.strip().splitlines()) == (
        1, [f"opencodec train-lm: error: {_refusal(tmp_path / 'run', names)}"]), err
    assert _contents(tmp_path / "run") == before and not (tmp_path / "cache").exists()


# -- 2. a codec's run given to train-lm ----------------------------------------------------------------
def test_a_codec_run_without_an_export_is_not_offered_as_the_codec(codec_setup: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "t1", "model": {"n_filters": 4}}))
    head = (f"opencodec train-lm: error: --run-dir {run} holds a codec's training run (opencodec train), not an "
            f"entropy model's: give train-lm another --run-dir ")
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    assert (status, err.strip().splitlines()) == (1, [
        head + f"(the codec the run trains can be its codec= once the run has exported {run / 'model.safetensors'})"])
    (run / "model.safetensors").write_bytes(Path(codec_setup["codec_path"]).read_bytes())
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    assert (status, err.strip().splitlines()) == (1, [
        head + f"(the codec the run trains, {run / 'model.safetensors'}, can be its codec=)"])


# -- 3. data.segment_seconds -------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e30, "1e30"])
def test_an_absurd_segment_length_is_refused_by_name(value: object, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["data"]["segment_seconds"] = value
    status, err = _train(tmp_path, capsys, cfg, "--no-progress")
    assert (status, err.strip().splitlines()) == (1, [
        "opencodec train: error: config field data.segment_seconds must be a length in seconds in (0, 3600] "
        "(a training segment of an hour at most), got 1e+30"])  # (YAML's string read as the number)
    assert not (tmp_path / "run").exists()


def test_a_segment_of_an_hour_is_the_longest_accepted(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg["data"]["segment_seconds"] = 3600
    check_codec_config(cfg)  # (longer than every file: zero-padded, with a warning, as before)
    cfg["data"]["segment_seconds"] = 3600.5  # (not trained on: a batch of such segments needs gigabytes)
    with pytest.raises(ConfigError, match=r"data.segment_seconds must be a length in seconds in \(0, 3600\] "
                                          r"\(a training segment of an hour at most\), got 3600.5"):
        check_codec_config(cfg)


# -- 4. empty bandwidth lists ------------------------------------------------------------------------
@pytest.mark.parametrize("key, expected", [
    ("bandwidths", "config field bandwidths: an empty list trains no bandwidth; leave it out (or null) to train "
                   "every one of model.target_bandwidths"),
    ("valid.bandwidths", "config field valid.bandwidths: an empty list measures no bandwidth; leave it out (or "
                         "null) for the lowest and highest of model.target_bandwidths, or set valid.items=0 to "
                         "train without validation"),
])
def test_codec_trainer_refuses_an_empty_bandwidth_list(key: str, expected: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    set_dotted(cfg, key, [])
    status, err = _train(tmp_path, capsys, cfg, "--no-progress")
    assert (status, err.strip().splitlines()) == (1, [f"opencodec train: error: {expected}"])
    assert not (tmp_path / "run").exists()
    set_dotted(cfg, key, None)  # null: the defaults, as before
    check_codec_config(cfg)


def test_train_lm_refuses_an_empty_bandwidth_list() -> None:
    cfg = test_train_lm._lm_cfg(1)
    cfg["bandwidths"] = []
    with pytest.raises(ConfigError) as exc:
        parse_settings(cfg)
    assert str(exc.value) == ("config field bandwidths: an empty list trains no bandwidth; leave it out (or null) "
                              "to train every bandwidth of the codec")
    cfg["bandwidths"] = None
    assert parse_settings(cfg).bandwidths is None
    cfg["bandwidths"] = [1.5]
    assert parse_settings(cfg).bandwidths == [1.5]


# -- 5. an entropy model resumed with other sizes -----------------------------------------------------
def test_lm_resume_with_other_sizes_names_the_fields(codec_setup: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path, "lm.dim=32", "optim.steps=1"))
    assert status == 0, err
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path, "lm.dim=64", "lm.num_layers=1"))
    assert (status, err.strip().splitlines()[-1]) == (1, (
        f"opencodec train-lm: error: {checkpoint} was trained with lm.dim=32, lm.num_layers=2, not this config's "
        f"lm.dim=64, lm.num_layers=1: resume with the run's, or use another --run-dir")), err
    # fewer codebooks: the bandwidths, named where no size differs
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path, "lm.dim=32", "bandwidths=[1.5]"))
    assert (status, err.strip().splitlines()[-1]) == (1, (
        f"opencodec train-lm: error: {checkpoint} was trained with bandwidths=null, not this config's "
        f"bandwidths=[1.5]: resume with the run's, or use another --run-dir")), err
    assert checkpoint.read_bytes() == before and TRACE not in err
