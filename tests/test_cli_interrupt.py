"""Ctrl-C in ``opencodec train``, ``train-lm``, ``eval`` and ``mushra``: one line
(``error: interrupted``), exit status 130, no traceback; the trainers first save a checkpoint
of the last whole step and say how to resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import opencodec
import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import cli
from opencodec.cli.wrappers import WRAPPED
from test_train_errors import _lm_args
from test_train_solver import _config, _corpus

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
# the source tree this test imports opencodec from (a scratch copy too), for the child processes
ENV = {**os.environ, "PYTHONPATH": str(Path(opencodec.__file__).parents[1])}
START = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv = ['opencodec'] + sys.argv[1:]; from opencodec.cli import main; sys.exit(main())")


def _interrupt_after_steps(args: list[str], metrics: Path, steps: int = 2) -> tuple[int, str]:
    """Run ``opencodec ARGS`` in a child with Python's Ctrl-C handler (a background shell may
    have SIGINT ignored); send SIGINT to its process group, as Ctrl-C does, once ``metrics``
    logs ``steps`` training steps. Returns its exit status and stderr."""
    proc = subprocess.Popen([sys.executable, "-c", START, *args], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=ENV)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        rows = metrics.read_text().splitlines() if metrics.exists() else []
        if sum('"train/' in row for row in rows) >= steps:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _check_interrupted(status: int, err: str, prog: str, run: Path) -> int:
    """The one line of an interrupted trainer, and its checkpoint: returns the step saved."""
    assert status == 130 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"{prog}: error: interrupted at step (\d+) of 100000; {re.escape(str(run))}/checkpoint.pt "
                         rf"holds step (\d+); rerun the same command to resume", line)
    assert match and match[1] == match[2], line
    step = int(match[1])
    assert step >= 2 and torch.load(run / "checkpoint.pt", weights_only=True)["step"] == step
    return step


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_in_train_saves_a_checkpoint_and_says_how_to_resume(workers: int, tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=100000)
    cfg["data"]["num_workers"] = workers
    cfg["log"].update(every=1, valid_every=100000, checkpoint_every=100000)
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    args = ["train", str(config), "--run-dir", str(run), "--no-progress"]
    step = _check_interrupted(*_interrupt_after_steps(args, run / "metrics.jsonl"), "opencodec train", run)
    assert (run / "model.safetensors").is_file()
    rerun = subprocess.run([sys.executable, "-c", START, *args, "--max-steps", "1"], capture_output=True,
                           text=True, timeout=240, env=ENV)
    assert rerun.returncode == 0 and f"resumed from {run / 'checkpoint.pt'} at step {step}" in rerun.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train/lr" in row] == list(range(1, step + 2))


def test_ctrl_c_in_train_lm_saves_a_checkpoint(codec_setup: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = _lm_args(codec_setup, tmp_path, codec_setup["train"]) + [
        "optim.steps=100000", "log.every=1", "log.valid_every=100000", "log.checkpoint_every=100000"]
    _check_interrupted(*_interrupt_after_steps(args, run / "metrics.jsonl"), "opencodec train-lm", run)
    assert (run / "lm.safetensors").is_file()


@pytest.mark.parametrize("command", ["eval", "mushra", "train", "train-lm"])
def test_ctrl_c_that_a_tool_leaves_is_one_line(command: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(WRAPPED, command, interrupted)  # the dict cli/main.py dispatches from
    try:
        status = cli.main([command, "x"])
    except KeyboardInterrupt:  # (it would stop pytest)
        pytest.fail("the KeyboardInterrupt left cli.main")
    assert status == 130
    assert capsys.readouterr().err == f"opencodec {command}: error: interrupted\n"


class _SigintProbe(torch.utils.data.Dataset):
    """Items that say whether the process reading them ignores SIGINT."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)])


def test_loader_workers_ignore_ctrl_c() -> None:
    """A terminal's Ctrl-C reaches the DataLoader workers too: they must ignore it, or the
    trainer, waiting for a batch, fails with 'worker exited unexpectedly' instead of saving."""
    import types

    from opencodec.train.batches import _batches

    base = types.SimpleNamespace(set_epoch=lambda epoch: None)
    batches = _batches(base, _SigintProbe(), 2, 4, 0, num_workers=1)
    try:
        assert float(next(batches).min()) == 1.0
    finally:
        batches.close()
