"""What the trainers log per step and window: ``--max-minutes`` trains a step per
invocation and logs it once, two processes log the global batch's metrics, a config error
of every rank is said once, a window cut by a stop is logged as the uninterrupted run logs
it, the data-dependent init draws the training rows, ``--quiet`` turns the progress bar off."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from opencodec.errors import ConfigError
from opencodec.train import distributed, lm_solver, solver
from opencodec.train.config_checks import RankConfigError
from opencodec.train.solver import train

import test_train_lm
from test_train_solver import _config, _corpus, _free_port

from train_helpers import _rows, _valid_steps  # noqa: F401


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


def _train_rows(run: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl's training rows by step, without the throughput (a wall-clock figure)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k != "step" and not k.startswith("perf/")}
            for r in rows if "train/l1" in r}


def test_a_window_cut_by_a_stop_is_logged_as_the_uninterrupted_run_logs_it(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    cfg["log"].update(every=3, checkpoint_every=100)
    train(cfg, tmp_path / "a", progress=False)
    # A time stop after the first step (every invocation trains one): a checkpoint of step 1,
    # between two logs; the resumed run's row of step 3 must still average steps 1 to 3.
    train(cfg, tmp_path / "b", progress=False, max_minutes=1e-9)
    assert set(_train_rows(tmp_path / "b")) == set()
    train(cfg, tmp_path / "b", progress=False)
    straight, resumed = _train_rows(tmp_path / "a"), _train_rows(tmp_path / "b")
    assert sorted(straight) == sorted(resumed) == [3, 6]
    assert resumed == straight


@pytest.mark.parametrize("augment, segment, why", [({"pad_short": False}, 5.0, "lasts at least 5 s"),
                                                   ({"categories": ["applause"]}, 0.2, "of categories applause")])
def test_the_data_dependent_init_draws_the_rows_training_draws(augment: dict, segment: float, why: str,
                                                               tmp_path: Path) -> None:
    # Every file lasts under 5 s: with pad_short false (or a category the corpus lacks)
    # training has no row, and the init (minutes of padded segments) must not go on without it.
    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.train.batches import _training_segments

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["data"].update(segment_seconds=segment, augment=augment)
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    with pytest.raises(ConfigError, match=f"no usable rows .*{why}"):
        _training_segments(cfg, model, 2)
    cfg["data"].update(segment_seconds=0.2, augment={**augment, "categories": None})  # the rows exist
    assert _training_segments(cfg, model, 2).shape == (2, 1, 4800)


@pytest.mark.parametrize("argv", [["-q", "train", "c.yaml"], ["--quiet", "train", "c.yaml", "optim.steps=2"],
                                  ["-q", "train", "c.yaml", "--no-progress"]])
def test_quiet_before_train_turns_the_progress_bar_off(argv: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.train.solver as solver
    from opencodec.cli.main import main as opencodec_main

    seen: dict[str, object] = {}

    def fake_train(cfg: dict, run_dir: object, max_steps: object, progress: bool, max_minutes: object) -> Path:
        seen.update(progress=progress, steps=cfg["optim"]["steps"])
        return tmp_path

    config = tmp_path / "c.yaml"
    config.write_text("optim: {steps: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(solver, "train", fake_train)
    assert opencodec_main(argv) == 0
    assert seen == {"progress": False, "steps": 2 if "optim.steps=2" in argv else 1}
    assert opencodec_main(argv[1:]) == 0  # (without -q: the bar, unless --no-progress)
    assert seen["progress"] is ("--no-progress" not in argv)
