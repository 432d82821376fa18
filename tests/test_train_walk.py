"""A researcher's walk through the codec trainer: resuming with a changed config, killed runs,
the campaign state. Each test pins a behaviour that was wrong before its fix."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opencodec.errors import ConfigError
from opencodec.train import solver
from opencodec.train.campaign import read_parts, write_parts
from opencodec.train.run_state import load_optimizer_state, read_checkpoint
from opencodec.train.solver import train
from test_train_solver import _config, _corpus, _state  # tests/ is on sys.path (conftest.py)


def test_load_optimizer_state_keeps_the_configured_betas_and_restores_the_moments() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3))
    old = torch.optim.Adam([weight], lr=1e-3, betas=(0.5, 0.9))
    weight.grad = torch.ones(3)
    old.step()
    new = torch.optim.Adam([weight], lr=2e-3, betas=(0.0, 0.99), eps=1e-6)
    load_optimizer_state(new, old.state_dict())
    group = new.param_groups[0]
    assert (group["betas"], group["eps"], group["lr"]) == ((0.0, 0.99), 1e-6, 2e-3)
    assert torch.equal(new.state[weight]["exp_avg"], old.state[weight]["exp_avg"])
    assert float(new.state[weight]["step"]) == 1.0


def test_resume_with_changed_betas_trains_with_the_new_betas(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["valid"]["items"] = 0
    cfg["log"]["checkpoint_every"] = 2
    changed = copy.deepcopy(cfg)
    changed["optim"]["betas"] = [0.0, 0.99]
    train(cfg, tmp_path / "same", max_steps=2, progress=False)
    _, same, _ = train(cfg, tmp_path / "same", progress=False, return_models=True)
    train(cfg, tmp_path / "changed", max_steps=2, progress=False)
    _, resumed, _ = train(changed, tmp_path / "changed", progress=False, return_models=True)
    # The warning names optim.betas as changed; the steps after the resume must use them (the
    # checkpoint's optimiser state held the old ones, which load_state_dict put back).
    ckpt = read_checkpoint(tmp_path / "changed" / "checkpoint.pt")
    assert ckpt["opt_g"]["param_groups"][0]["betas"] == (0.0, 0.99)
    assert ckpt["opt_d"]["param_groups"][0]["betas"] == (0.0, 0.99)
    a, b = _state(same), _state(resumed)
    assert any(not torch.equal(a[key], b[key]) for key in a if a[key].is_floating_point())


class _Killed(BaseException):
    """A stand-in for SIGKILL at a chosen moment (nothing in the trainer catches it)."""


def test_rerun_of_a_run_killed_before_its_last_export_exports_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    cfg["valid"]["items"] = 0
    cfg["log"]["checkpoint_every"] = 2
    real, calls = solver.save_model, []

    def killed_at_the_second_export(model: torch.nn.Module, path: Path) -> Path:
        calls.append(path)
        if len(calls) == 2:  # step 4's checkpoint is written, its export not yet
            raise _Killed
        return real(model, path)

    monkeypatch.setattr(solver, "save_model", killed_at_the_second_export)
    with pytest.raises(_Killed):
        train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(solver, "save_model", real)
    train(cfg, tmp_path / "run", progress=False)  # "nothing to train": the checkpoint is at step 4
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    exported = load_file(tmp_path / "run" / "model.safetensors")
    assert ckpt["step"] == 4
    assert ckpt["ema"].keys() & exported.keys()
    assert all(torch.equal(ckpt["ema"][key], exported[key]) for key in ckpt["ema"].keys() & exported.keys())


def test_campaign_state_of_more_than_a_hundred_parts_reads_back(tmp_path: Path) -> None:
    obj = {"weights": torch.arange(2000, dtype=torch.float32)}
    paths = write_parts(obj, tmp_path / "state", part_bytes=64)
    assert len(paths) > 101 and (tmp_path / "state" / "state.pt.part100").exists()
    assert torch.equal(read_parts(tmp_path / "state")["weights"], obj["weights"])


def test_campaign_pack_into_parts_under_one_byte_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        write_parts({"step": 1}, tmp_path / "state", part_bytes=0)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("value", [float("nan"), -3, "abc", 0])
def test_config_max_minutes_that_is_no_budget_is_refused_before_writing(tmp_path: Path, value: object) -> None:
    # --max-minutes refuses these; the config key (a campaign's) took nan as no budget at all,
    # -3 as "stop after one step", and "abc" as a float() error that named no field.
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    cfg["max_minutes"] = value
    with pytest.raises(ConfigError, match=r"config field max_minutes"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_diverged_run_is_stopped_and_keeps_its_last_finite_checkpoint(tmp_path: Path) -> None:
    # optim.lr=1e30 passes the checks (finite) and turns the weights to NaN within a few steps: the
    # run went on, wrote NaN over the good checkpoint and exported a model that decodes to NaN.
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    cfg["valid"]["items"] = 0
    cfg["log"]["checkpoint_every"] = 1
    train(cfg, tmp_path / "run", max_steps=1, progress=False)
    too_fast = copy.deepcopy(cfg)
    too_fast["optim"]["lr"] = 1e30
    with pytest.raises(ConfigError, match=r"training diverged by step (\d+): .* holds NaN or inf; .*checkpoint\.pt "
                                          r"keeps step (\d+); lower optim\.lr") as refused:
        train(too_fast, tmp_path / "run", progress=False)
    diverged, kept = map(int, re.search(r"by step (\d+):.* keeps step (\d+)", str(refused.value)).groups())
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert 1 <= ckpt["step"] == kept == diverged - 1 < 4
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values() if v.is_floating_point())
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["disc"].values() if v.is_floating_point())
    exported = load_file(tmp_path / "run" / "model.safetensors")
    assert all(bool(torch.isfinite(v).all()) for v in exported.values() if v.is_floating_point())


# -- the entropy-model trainer: the same two resume problems -------------------------------------

def test_lm_resume_with_changed_betas_and_weight_decay_uses_them(tmp_path: Path) -> None:
    from opencodec.train import lm_solver
    from test_train_lm import _lm_cfg, _synthetic_data

    data = _synthetic_data()
    changed = _lm_cfg(5)
    changed["optim"] = {**changed["optim"], "betas": [0.0, 0.5], "weight_decay": 0.5}
    lm_solver.train(_lm_cfg(5), tmp_path / "run", max_steps=2, progress=False, data=data)
    lm_solver.train(changed, tmp_path / "run", progress=False, data=data)
    group = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["optim"]["param_groups"][0]
    assert (tuple(group["betas"]), group["weight_decay"]) == ((0.0, 0.5), 0.5)


def test_lm_rerun_of_a_run_killed_before_its_last_export_exports_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.train import lm_solver
    from test_train_lm import _lm_cfg, _synthetic_data

    data = _synthetic_data()
    cfg = _lm_cfg(4, valid={"max_items": 0})  # no lm_best export: the exports are the checkpoints'
    cfg["log"] = {**cfg["log"], "checkpoint_every": 2}
    real, calls = lm_solver.export_lm, []

    def killed_at_the_second_export(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 2:  # step 4's checkpoint is written, its export not yet
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_solver, "export_lm", killed_at_the_second_export)
    with pytest.raises(_Killed):
        lm_solver.train(cfg, tmp_path / "run", progress=False, data=data)
    monkeypatch.setattr(lm_solver, "export_lm", real)
    assert lm_solver.read_lm_info(tmp_path / "run" / "lm.safetensors")["step"] == 2
    lm_solver.train(cfg, tmp_path / "run", progress=False, data=data)  # "nothing to train"
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    exported = load_file(tmp_path / "run" / "lm.safetensors")
    assert ckpt["step"] == 4 and lm_solver.read_lm_info(tmp_path / "run" / "lm.safetensors")["step"] == 4
    assert all(torch.equal(ckpt["model"][key], exported[key]) for key in ckpt["model"].keys() & exported.keys())
    assert ckpt["model"].keys() & exported.keys()


# -- the review of the walk's fixes ---------------------------------------------------------------

def test_a_non_finite_codebook_buffer_is_divergence_too() -> None:
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.train.step import first_non_finite

    model = EncodecModel(EncodecConfig(n_filters=4, dimension=16, ratios=[4, 2], n_q=2, bins=16,
                                       target_bandwidths=[1.5], lstm=0))
    assert first_non_finite({"model": model}) is None
    model.quantizer.vq.layers[1]._codebook.embed[3, 0] = float("nan")
    assert first_non_finite({"model": model}) == "model.quantizer.vq.layers.1._codebook.embed"


def test_lm_diverged_run_is_stopped_before_its_checkpoint(tmp_path: Path) -> None:
    from opencodec.train import lm_solver
    from test_train_lm import _lm_cfg, _synthetic_data

    data = _synthetic_data()
    cfg = _lm_cfg(2, valid={"max_items": 0})
    cfg["log"] = {**cfg["log"], "checkpoint_every": 1}
    lm_solver.train(cfg, tmp_path / "run", progress=False, data=data)
    good = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    longer = _lm_cfg(4, valid={"max_items": 0})
    longer["log"] = {**longer["log"], "checkpoint_every": 1}
    import unittest.mock as mock
    real_step = torch.optim.AdamW.step  # step 3 turns a weight to NaN, as a learning rate far too high

    def poisoned(self: torch.optim.Optimizer, *a: object, **k: object) -> object:
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    with mock.patch.object(torch.optim.AdamW, "step", poisoned):
        with pytest.raises(ConfigError, match=r"training diverged by step 3: lm\..* holds NaN or inf; not saved"):
            lm_solver.train(longer, tmp_path / "run", progress=False, data=data)
    kept = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert kept["step"] == 2 and all(torch.equal(kept["model"][k], good[k]) for k in good)


def test_a_finished_run_rerun_leaves_its_export_alone(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    cfg["valid"]["items"] = 0
    train(cfg, tmp_path / "run", progress=False)
    export = tmp_path / "run" / "model.safetensors"
    before = export.stat().st_mtime_ns
    train(cfg, tmp_path / "run", progress=False)  # nothing to train; its export is the checkpoint's
    assert export.stat().st_mtime_ns == before


def test_a_finished_run_resumed_without_its_ema_keeps_the_ema_export(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # a compact campaign state may leave the EMA out: the rerun's EMA is then a copy of the
    # generator, and exporting it would replace the run's EMA export with the raw generator
    import os
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    cfg["valid"]["items"] = 0
    cfg["ema"] = 0.5
    train(cfg, tmp_path / "run", progress=False)
    ckpt_path, export = tmp_path / "run" / "checkpoint.pt", tmp_path / "run" / "model.safetensors"
    ckpt = read_checkpoint(ckpt_path)
    del ckpt["ema"]
    torch.save(ckpt, ckpt_path)
    os.utime(export, ns=(1, 1))  # older than the checkpoint: otherwise it would be exported again
    before = export.read_bytes()
    train(cfg, tmp_path / "run", progress=False)
    assert export.read_bytes() == before
    assert f"warning: {export} is older than {ckpt_path}, whose EMA was left out: kept" in capsys.readouterr().err


def test_lm_resume_with_another_optimizer_name_uses_it(tmp_path: Path) -> None:
    from opencodec.train import lm_solver
    from test_train_lm import _lm_cfg, _synthetic_data

    data = _synthetic_data()
    adam = _lm_cfg(4)
    adam["optim"] = {**adam["optim"], "name": "adam"}
    lm_solver.train(_lm_cfg(4), tmp_path / "run", max_steps=2, progress=False, data=data)  # adamw
    lm_solver.train(adam, tmp_path / "run", progress=False, data=data)
    group = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["optim"]["param_groups"][0]
    assert group["decoupled_weight_decay"] is False
