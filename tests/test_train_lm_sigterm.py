"""SIGTERM stops ``opencodec train-lm`` as Ctrl-C does (a checkpoint of the last whole step, one
line), with ``terminated`` and exit status 143, as ``opencodec train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import opencodec
from opencodec.train import lm_solver
from opencodec.errors import Terminated

TESTS = Path(__file__).resolve().parent
SRC = Path(opencodec.__file__).resolve().parent.parent  # the opencodec this test imports

SCRIPT = """
import json, os, signal, sys
from opencodec.train import lm_solver
from opencodec.errors import Terminated
from test_train_lm import _lm_cfg, _synthetic_data

run = sys.argv[1]
real, sent = lm_solver._loss, []

def loss_then_term(*args, **kwargs):  # SIGTERM twice during the first step: one stop, the repeat ignored
    out = real(*args, **kwargs)
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    return out

lm_solver._loss = loss_then_term
try:  # the loop's own handler (the command adds one for the set-up: tested below)
    lm_solver.train(_lm_cfg(5), run, progress=False, data=_synthetic_data())
    print(json.dumps({"finished": True}))
except Terminated as exc:
    print(json.dumps({"terminated": str(exc), "restored": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL}))
"""


def test_sigterm_in_the_loop_checkpoints_the_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(run)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # (-15: SIGTERM killed it)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"terminated": f"terminated at step 1 of 5; {run / 'checkpoint.pt'} holds step 1; "
                                    f"rerun the same command to resume", "restored": True}
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1


def test_the_command_exits_143_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def terminated(*args: object, **kwargs: object) -> None:
        raise Terminated("terminated at step 3 of 9; x holds step 3; rerun the same command to resume")

    monkeypatch.setattr(lm_solver, "train", terminated)
    config = tmp_path / "lm.yaml"
    config.write_text("name: x\n")
    assert lm_solver.main([str(config)]) == 143
    assert capsys.readouterr().err.strip() == (
        "opencodec train-lm: error: terminated at step 3 of 9; x holds step 3; rerun the same command to resume")
