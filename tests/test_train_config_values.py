"""The trainers' config values: sections that are not mappings, booleans, numbers
written as strings, entropy-model sizes the coder cannot use, values the optimiser refuses,
Adam betas, mel scales, integer fields, codec bandwidths, an unusable validation manifest,
a codec or entropy-model checkpoint in the wrong place; nothing is written on an error."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel, cli
from opencodec.entropy.fixed_scheme import _MAX_DIM
from opencodec.errors import ConfigError, EntropyModelAsCodecError, ModelLoadError
from opencodec.train import lm_solver, solver
from opencodec.train.config import LM_OPTIONAL_KEYS, load_config
from opencodec.train.config_checks import check_codec_config
from opencodec.train.lm_config import parse_settings
from opencodec.train.solver import main, train

import test_train_lm
from test_train_errors import TRACE, _error_lines, _lm_args, _train
from test_train_solver import _config, _corpus

from train_helpers import ROOT, _rows, _valid_steps, set_dotted  # noqa: F401


codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)


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
    set_dotted(cfg, dotted, value)
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


@pytest.mark.parametrize("section, value", [("optim", 5), ("data", 5), ("valid", 5), ("losses", [1]),
                                            ("quantizer", "x"), ("adversarial", None), ("balancer", 0),
                                            ("log", 5), ("model", None), ("data.augment", 5)])
def test_a_section_that_is_not_a_mapping_is_one_line(section: str, value: object, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg["data"]["augment"] = {}
    *parents, leaf = section.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    expected = f"config field {section}: expected a section of key: value settings, got {value!r}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        check_codec_config(cfg)


@pytest.mark.parametrize("section, init_from", [("log", None), ("model", "unit.safetensors")])
def test_a_null_section_the_trainer_reads_as_defaults_is_taken(section: str, init_from: str | None,
                                                                tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg.update({section: None, "init_from": init_from})
    check_codec_config(cfg)  # (log: null, the defaults; model: null under init_from, its model's)


def test_a_scalar_section_override_is_one_line_on_the_command_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"  # JSON is YAML
    config.write_text(json.dumps(_config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)))
    assert main([str(config), "optim=5", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err == "opencodec train: error: config field optim: expected a section of key: value settings, got 5\n"
    assert not (tmp_path / "run").exists()


def test_an_empty_valid_section_is_the_defaults(tmp_path: Path) -> None:
    # `valid:` with nothing under it trained before the section check (validation defaults).
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"] = None
    check_codec_config(cfg)
    run = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "valid/mel_distance/0.6kbps" in r] == [0, 1]  # the default bandwidths


# --------------------------------------------------------------------------- train: config checks
def test_adam_betas_must_be_below_one() -> None:
    """``optim.betas``: each in [0, 1); a beta of exactly 1 never forgets (Adam divides by
    ``1 - beta ** t`` = 0 at every step) and is refused."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import check_betas

    assert check_betas([0.0, 0.999]) == (0.0, 0.999)
    for bad in ([0.9, 1.0], [1.0, 0.9], [-0.1, 0.9]):
        with pytest.raises(ConfigError, match=r"optim.betas: each must be in \[0, 1\)"):
            check_betas(bad)


def test_mel_scales_need_at_least_one_window() -> None:
    """``mel_scales: [lo, hi]`` means windows 2^lo .. 2^(hi-1): ``lo == hi`` is no window at all
    (a mel loss averaged over zero scales) and is refused."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import _check_mel_scales

    _check_mel_scales({"mel_scales": [5, 6]})
    for bad in ([5, 5], [6, 5], [1, 4]):
        with pytest.raises(ConfigError, match="expected 2 <= lo < hi"):
            _check_mel_scales({"mel_scales": bad})


def test_an_integer_config_field_refuses_true() -> None:
    """YAML ``n_q: true`` is not the integer 1: a one-line ConfigError."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import _integer

    _integer({"model": {"n_q": 4}}, "model.n_q", 1)
    with pytest.raises(ConfigError, match="config field model.n_q: expected an integer, got True"):
        _integer({"model": {"n_q": True}}, "model.n_q", 1)


def test_a_codec_bandwidth_of_zero_is_refused() -> None:
    """``model.target_bandwidths`` must be > 0 kbps (0 would mean no codebook at all)."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import check_codec_bandwidths

    model = EncodecModel(EncodecConfig(name="tiny_small", n_filters=4, dimension=16, n_q=4, lstm=1,
                                       target_bandwidths=[0.0, 1.5]))
    with pytest.raises(ConfigError, match="model.target_bandwidths: 0 kbps cannot be coded"):
        check_codec_bandwidths({}, model)


# -- D. one helper for an entropy model given as a codec ---------------------------------------------
def _entropy_model() -> EntropyModelAsCodecError:
    return EntropyModelAsCodecError("lm.safetensors: this is an entropy model, not a codec",
                                    "use --lm-model for an entropy model", joiner=": ")


def test_the_trainers_config_error_is_built_on_the_helper() -> None:
    from opencodec.train.config_checks import codec_field

    with pytest.raises(ConfigError) as caught:
        with codec_field("init_from", "init_from takes a codec's name"):
            raise _entropy_model()
    assert str(caught.value) == ("config field init_from: lm.safetensors: this is an entropy model, not a codec; "
                                 "init_from takes a codec's name")
    assert not isinstance(caught.value, EntropyModelAsCodecError) and caught.value.__suppress_context__
