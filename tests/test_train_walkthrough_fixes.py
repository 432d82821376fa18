"""The training walkthrough's findings (/tmp/walk/train.md), each fixed and checked here:
LM sizes the fixed-point coder cannot use (1), codec config values that ended in a traceback
or were silently accepted (2, 3, 5), train-lm writing before refusing a value (4),
``--max-minutes`` (6), the bf16 claim of docs/training/campaign.md (7), an unusable validation
manifest (8), torchrun's logged metrics and error lines (9), and the advice for a train-lm
checkpoint passed as a codec (10; needs /tmp/walk/fix_train_pretrained.patch)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import cli
from opencodec.entropy.fixed_scheme import _MAX_DIM
from opencodec.errors import ConfigError, ModelLoadError
from opencodec.train import distributed, lm_solver, solver
from opencodec.train.config import LM_OPTIONAL_KEYS, load_config
from opencodec.train.config_checks import RankConfigError, check_codec_config
from opencodec.train.lm_config import parse_settings
from test_train_errors import TRACE, _error_lines, _lm_args, _train
from test_train_solver import _config, _corpus, _free_port

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
ROOT = test_train_lm.ROOT


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _valid_steps(run: Path) -> list[int]:
    return [r["step"] for r in _rows(run) if any(k.startswith("valid/") for k in r)]


# -- 1. LM sizes the fixed-point coder or load_lm_model cannot use --------------------------------
@pytest.mark.parametrize("lm, expected", [
    ({"dim": 32, "hidden_scale": 200}, f"config field lm.hidden_scale is 200: lm.dim 32 x 200 gives a "
                                       f"feed-forward width of 6400, outside the entropy coder's fixed-point "
                                       f"limits (1 to {_MAX_DIM})"),
    ({"dim": 32, "hidden_scale": 0}, "config field lm.hidden_scale is 0: lm.dim 32 x 0 gives a feed-forward "
                                     "width of 0,"),
    ({"dim": 32, "hidden_scale": 0.01}, "config field lm.hidden_scale is 0.01: lm.dim 32 x 0.01 gives a feed-forward "
                                        "width of 0,"),
    ({"dim": 32, "hidden_scale": float("inf")}, "config field lm.hidden_scale is inf: lm.dim 32 x inf gives a "
                                                "feed-forward width of inf,"),
    ({"dim": _MAX_DIM + 8, "hidden_scale": 0.5}, f"config field lm.dim is {_MAX_DIM + 8}, over the entropy "
                                                 f"coder's fixed-point limit of {_MAX_DIM}"),
])
def test_lm_sizes_the_coder_cannot_use_are_config_errors(lm: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(test_train_lm._lm_cfg(1, lm=lm))
    assert str(caught.value).startswith(expected), str(caught.value)
    # the limit is the coder's own (entropy/fixed_scheme.py), and a size within it passes
    assert parse_settings(test_train_lm._lm_cfg(1, lm={"dim": 32, "hidden_scale": _MAX_DIM / 32})).hidden_scale == 128


def test_train_lm_hidden_scale_is_refused_before_any_work(codec_setup: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_lm_args(codec_setup, tmp_path, codec_setup["train"]) + ["lm.hidden_scale=200"]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err, "opencodec train-lm") == [
        "opencodec train-lm: error: config field lm.hidden_scale is 200: lm.dim 32 x 200 gives a feed-forward width "
        f"of 6400, outside the entropy coder's fixed-point limits (1 to {_MAX_DIM})"]
    assert "train codes" not in err and not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# -- 2, 3, 5. codec config values: one line naming the field, nothing written ---------------------
@pytest.mark.parametrize("dotted, value, expected", [
    ("optim.betas", 0.5, "config field optim.betas: expected two numbers in [0, 1), got 0.5"),
    ("optim.betas", [2, 0.9], "config field optim.betas: each must be in [0, 1), got [2.0, 0.9]"),
    ("optim.betas", [0.5], "config field optim.betas: expected two numbers in [0, 1), got [0.5]"),
    ("optim.lr", -1, "config field optim.lr must be > 0, got -1"),
    ("optim.lr", 0, "config field optim.lr must be > 0, got 0"),
    ("optim.lr", "abc", "config field optim.lr: expected a number, got 'abc'"),
    ("optim.lr_disc", -1, "config field optim.lr_disc must be > 0, got -1"),
    ("model.ratios", [0], "config field model.ratios: expected a non-empty list of integers >= 1, got [0]"),
    ("model.ratios", [], "config field model.ratios: expected a non-empty list of integers >= 1, got []"),
    ("model.target_bandwidths", [], "config field model.target_bandwidths: expected a non-empty list of kbps, got []"),
    ("model.dimension", 0, "config field model.dimension must be >= 1, got 0"),
    ("model.channels", 0, "config field model.channels must be >= 1, got 0"),
    ("model.n_filters", -1, "config field model.n_filters must be >= 1, got -1"),
    ("adversarial.filters", 0, "config field adversarial.filters must be >= 1, got 0"),
    ("data.train", 5, "config field data.train: expected a manifest path or a list of them, got 5"),
    ("data.valid", [5], "config field data.valid: expected a manifest path or a list of them, got [5]"),
    ("mel_scales", [12, 5], "config field mel_scales: expected 2 <= lo < hi (windows 2^lo .. 2^(hi-1) samples), "
                            "got [12, 5]"),
    ("mel_scales", [5], "config field mel_scales: expected [lo, hi], two integers, got [5]"),
])
def test_a_bad_codec_value_is_one_line_naming_the_field(dotted: str, value: object, expected: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and TRACE not in err
    assert err.splitlines() == [f"opencodec train: error: {expected}"], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dotted", ["model.causal", "model.true_skip", "adversarial.enabled", "balancer.enabled",
                                    "log.audio", "log.tensorboard", "quantizer.detach_residual", "cudnn_benchmark",
                                    "tf32", "data.augment.pad_short", "data.augment.augment"])
@pytest.mark.parametrize("text", ["maybe", "1", "'true'"])
def test_booleans_accept_only_true_or_false(dotted: str, text: str, tmp_path: Path) -> None:
    """An override's text is YAML: ``true``/``false`` (and YAML's ``yes``/``no``) are booleans,
    any other value (a word, a number, a quoted string) is refused naming the field."""
    train_m, valid_m = _corpus(tmp_path / "data")
    config = tmp_path / "unit.yaml"
    config.write_text(json.dumps(_config(train_m, valid_m, steps=1)))
    for good, meant in (("true", True), ("false", False), ("no", False)):
        cfg = load_config(config, [f"{dotted}={good}"])
        check_codec_config(cfg)
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        assert node is meant
    with pytest.raises(ConfigError) as caught:
        check_codec_config(load_config(config, [f"{dotted}={text}"]))
    got = {"maybe": "'maybe'", "1": "1", "'true'": "'true'"}[text]
    assert str(caught.value) == f"config field {dotted}: expected true or false, got {got}"


def test_a_boolean_override_trains_as_said(tmp_path: Path) -> None:
    """``adversarial.enabled=false`` from the command line turns the adversary off (no
    ``train/disc``, ``train/adv``), and ``model.causal=false`` reaches the exported config."""
    train_m, valid_m = _corpus(tmp_path / "data")
    config = tmp_path / "unit.yaml"
    config.write_text(json.dumps(_config(train_m, valid_m, steps=1)))
    cfg = load_config(config, ["adversarial.enabled=false", "model.causal=false"])
    run, model, _ = solver.train(cfg, tmp_path / "run", progress=False, return_models=True)
    row = next(r for r in _rows(run) if "train/mel" in r)
    assert row["step"] == 1 and row["train/mel"] > 0 and not {"train/disc", "train/adv"} & set(row)
    assert model.config.causal is False
    assert json.loads((run / "config.json").read_text())["model"]["causal"] is False


def test_numbers_written_as_strings_are_recorded_as_numbers(tmp_path: Path) -> None:
    """YAML reads ``5e-4`` as a string: both trainers check it as a number and keep the number."""
    train_m, valid_m = _corpus(tmp_path / "data")
    config = tmp_path / "unit.yaml"
    config.write_text(json.dumps(_config(train_m, valid_m, steps=1)))
    cfg = load_config(config, ["optim.lr=5e-4", "optim.lr_disc=1e-4"])
    assert cfg["optim"]["lr"] == "5e-4"  # as YAML reads it
    check_codec_config(cfg)
    assert cfg["optim"]["lr"] == 5e-4 and cfg["optim"]["lr_disc"] == 1e-4
    assert isinstance(cfg["optim"]["lr"], float)
    lm_cfg = load_config(ROOT / "configs" / "lm_tiny.yaml", ["optim.lr=5e-4", "optim.weight_decay=1e-2"],
                         LM_OPTIONAL_KEYS)
    settings = parse_settings(lm_cfg)
    assert (settings.lr, settings.weight_decay) == (5e-4, 1e-2)
    assert lm_cfg["optim"]["lr"] == 5e-4 and isinstance(lm_cfg["optim"]["lr"], float)
    assert lm_cfg["optim"]["weight_decay"] == 1e-2


# -- 4. train-lm: nothing written for a bad value -----------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("optim.lr=-1", "config field optim.lr must be > 0, got -1"),
    ("optim.lr=0", "config field optim.lr must be > 0, got 0"),
    ("optim.weight_decay=.nan", "config field optim.weight_decay must be >= 0, got nan"),
    ("optim.betas=0.5", "config field optim.betas: expected two numbers in [0, 1), got 0.5"),
])
def test_train_lm_bad_value_writes_nothing(override: str, expected: str, codec_setup: dict, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_lm_args(codec_setup, tmp_path, codec_setup["train"]) + [override]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err, "opencodec train-lm") == [f"opencodec train-lm: error: {expected}"]
    assert "train codes" not in err and not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_train_lm_value_the_optimiser_refuses_writes_nothing(codec_setup: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the settings parser lets through, the optimiser is tried before any work."""
    real = lm_solver.parse_settings
    monkeypatch.setattr(lm_solver, "parse_settings", lambda cfg: dataclasses.replace(real(cfg), lr=-2.0))
    assert cli.main(_lm_args(codec_setup, tmp_path, codec_setup["train"])) == 1
    lines = _error_lines(capsys.readouterr().err, "opencodec train-lm")
    assert len(lines) == 1 and "Invalid learning rate: -2.0" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# -- 6. --max-minutes -----------------------------------------------------------------------------
@pytest.mark.parametrize("valid_every", [1, 100])
def test_max_minutes_trains_a_step_per_invocation_and_logs_each_step_once(valid_every: int, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A budget spent before the first step (here: at once) still trains one step per
    invocation, and the step it stops at is validated once (also when the loop has just
    validated it)."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=5)
    cfg["log"].update(valid_every=valid_every, checkpoint_every=100)
    run = tmp_path / "run"
    for expected in (1, 2):
        solver.train(copy.deepcopy(cfg), run, progress=False, max_minutes=1e-9)
        assert f"stopped at step {expected} of 5; rerun the same command to continue" in capsys.readouterr().err
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == expected
    assert _valid_steps(run) == [0, 1, 2]
    assert [r["step"] for r in _rows(run) if "train/mel" in r] == [1, 2]  # log.every 1: each step once


def test_train_lm_max_minutes_trains_a_step_and_validates_once(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = test_train_lm._lm_cfg(5)
    cfg["log"].update(valid_every=1)
    run = tmp_path / "run"
    for expected in (1, 2):
        lm_solver.train(copy.deepcopy(cfg), run, progress=False, max_minutes=1e-9, data=test_train_lm._synthetic_data())
        assert f"stopped at step {expected} of 5" in capsys.readouterr().err
    assert _valid_steps(run) == [0, 1, 2]
    assert [r["step"] for r in _rows(run) if "train/bits_per_code" in r] == [1, 2]


# -- 7. the bf16 claim ------------------------------------------------------------------------------
def test_campaign_doc_says_where_bf16_was_measured() -> None:
    """The doc quotes the test's tolerance for the test's synthetic corpus, and the tiny config's
    counter-measurement, not a general promise."""
    from test_train_levers import BF16_MEL_TOLERANCE

    row = next(line for line in (ROOT / "docs" / "training" / "campaign.md").read_text().splitlines()
               if line.startswith("| `amp` |"))
    assert f"within {BF16_MEL_TOLERANCE:.0%}" in row and "synthetic" in row and "test_train_levers.py" in row
    assert "configs/tiny_24khz.yaml" in row and "+25%" in row and "+110%" in row


# -- 8. an unusable validation manifest ------------------------------------------------------------
@pytest.mark.parametrize("content, why", [
    ("", "list no files"),
    ('{"path": "nope.wav", "duration": 1.0}\n', "none of the 1 audio file(s) the manifests {valid} list can be "
                                                "read (e.g. {tmp}/nope.wav: no such file)"),
    ('{"path": "short.wav", "duration": 0.01}\n', "no usable rows in the manifests {valid} (1 of 1 readable rows "
                                                  "checked; a validation clip lasts at least 0.106667 s and is not silent)")])
def test_an_unusable_validation_manifest_is_refused(content: str, why: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Each reason in words: no rows, no readable file, or rows too short or silent."""
    train_m, _ = _corpus(tmp_path / "data")
    valid = tmp_path / "valid.jsonl"
    valid.write_text(content.replace("short.wav", str(tmp_path / "short.wav")))
    sf.write(tmp_path / "short.wav", np.zeros(240, dtype=np.float32), 24000)  # 10 ms
    cfg = _config(train_m, valid, steps=1)
    status, err = _train(tmp_path, capsys, cfg)
    (line,) = _error_lines(err)
    assert status == 1 and line.startswith("opencodec train: error: config field data.valid: ") and \
        why.format(valid=valid, tmp=tmp_path) in line and line.endswith(
            "set data.valid=[] or valid.items=0 to train without validation"), err
    assert not (tmp_path / "run").exists()
    cfg["valid"]["items"] = 0  # asked for no validation: the manifest is not read
    assert _train(tmp_path, capsys, cfg)[0] == 0 and _valid_steps(tmp_path / "run") == []


# -- 9. torchrun: the global batch's metrics, one error line ----------------------------------------
def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    solver.train(cfg, Path(out) / "ddp", progress=False)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_log_the_global_batchs_metrics(tmp_path: Path) -> None:
    """Two processes of 2 items log what one process of 4 does: the losses are the global
    batch's means, the balancer's norms those of the global batch's gradient (each rank's
    loss has N times its gradient), and the shares agree closely."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    solver.train(cfg, tmp_path / "single", progress=False)
    mp.start_processes(_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    single, ddp = _rows(tmp_path / "single")[-1], _rows(tmp_path / "ddp")[-1]
    assert single["step"] == ddp["step"] == 1
    exact = [k for k in single if k.startswith(("train/", "balancer/grad_norm/", "balancer/ema_norm/",
                                                "balancer/total_norm"))]
    assert {"train/l1", "train/mel", "train/adv", "balancer/grad_norm/mel", "balancer/ema_norm/l1"} <= set(exact)
    for key in exact:
        assert ddp[key] == pytest.approx(single[key], rel=1e-3, abs=1e-6), key
    for key in (k for k in single if k.startswith("balancer/share/")):
        assert ddp[key] == pytest.approx(single[key], abs=0.02), key


def test_a_config_error_of_every_rank_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (RANK, WORLD_SIZE) a batch that does not divide is said by rank 0 alone;
    an error of one rank's own (its GPU) by that rank."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["optim"]["batch_size"] = 3
    config = tmp_path / "unit.yaml"
    config.write_text(json.dumps(cfg))
    args = [str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    said = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setattr(distributed, "init", lambda device_type, r=rank: distributed.DistInfo(r, 2, r))
        assert solver.main(args) == 1
        said.append(capsys.readouterr().err.splitlines())
    assert said == [["opencodec train: error: optim.batch_size=3 is not divisible by 2 processes"], []]
    assert not (tmp_path / "run").exists()

    def gpu_error(cfg: dict) -> None:
        raise RankConfigError("config field device is cuda, but this machine has 1 CUDA device(s)")

    monkeypatch.setattr(solver, "check_codec_config", gpu_error)
    assert solver.main(args) == 1  # rank 1 (RANK is still 1)
    assert capsys.readouterr().err.splitlines() == [
        "opencodec train: error: config field device is cuda, but this machine has 1 CUDA device(s)"]


# -- 10. a train-lm checkpoint passed as a codec ----------------------------------------------------
def test_a_train_lm_checkpoint_as_codec_points_to_lm_model(tmp_path: Path) -> None:
    from opencodec.pretrained import load_model

    checkpoint = tmp_path / "lmrun" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "optim": {}, "step": 7, "codec_hash": "0" * 64}, checkpoint)
    with pytest.raises(ModelLoadError) as caught:
        load_model(checkpoint)
    export = tmp_path / "lmrun" / "lm.safetensors"
    assert str(caught.value) == (
        f"{checkpoint} is a train-lm training checkpoint (model, optimiser and step 7), not codec weights: "
        f"it holds an entropy model; pass --lm-model {export} (load_lm_model in Python), which the run "
        f"exports next to it at every checkpoint")
