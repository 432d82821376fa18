"""``opencodec train``'s checks of a resume and of ``init_from``: another architecture is
refused before anything is written, other bandwidths go on with a warning, the model
trained is recorded, SIGTERM checkpoints as Ctrl-C does, run folders and weights of other
kinds or sizes are one short line, the rows a restart drops are described."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch
import yaml

import opencodec
from opencodec import cli
from opencodec.errors import ConfigError
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model
from opencodec.train.run_folder import _metrics_from
from opencodec.train.run_state import load_run_weights
from opencodec.train.solver import train

from test_train_solver import _config, _corpus


TRACE = "Traceback (most recent call last)"


SRC = Path(opencodec.__file__).resolve().parents[1]  # the source this process tests, for the child


def _cli_train(cfg: dict, run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """``opencodec train`` on ``cfg`` into ``run``: exit status and stderr."""
    folder = next(p for p in run.parents if p.is_dir())
    config = folder / f"{run.name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    status = cli.main(["train", str(config), "--run-dir", str(run), "--no-progress", *extra])
    return status, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` but the lock, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A causal unit codec trained one step of three (checkpoint at step 1), and its data."""
    folder = tmp_path_factory.mktemp("base")
    train_m, valid_m = _corpus(folder / "data")
    cfg = _config(train_m, valid_m, steps=3)
    run = train(cfg, folder / "run", max_steps=1, progress=False)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1
    return {"cfg": cfg, "run": run, "train": train_m, "valid": valid_m}


def _copy_run(base: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    return run


# -- 1. a resume with another architecture -----------------------------------------------------------------
@pytest.mark.parametrize(("change", "named"), [
    ({"causal": False}, ["causal False (checkpoint: True)"]),  # same shapes: used to train on, non-causal
    ({"n_filters": 8, "causal": False}, ["causal False (checkpoint: True)", "n_filters 8 (checkpoint: 4)"]),
])
def test_a_resume_with_another_architecture_is_refused_before_anything_is_written(
        change: dict, named: list[str], base: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(base, tmp_path)
    before = _snapshot(run)
    cfg = json.loads(json.dumps(base["cfg"]))
    cfg["model"].update(change)
    status, err = _cli_train(cfg, run, capsys)
    assert status == 1 and TRACE not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, err
    assert lines[0].startswith(f"opencodec train: error: {run / 'checkpoint.pt'} holds a codec of another "
                               f"architecture: {', '.join(named)}; ")
    assert "size mismatch" not in err and "torch.Size" not in err
    assert _snapshot(run) == before  # nothing written: checkpoint, export, config.json, history, metrics


def test_a_resume_with_other_target_bandwidths_goes_on_with_a_warning(base: dict, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The decision for ``model.target_bandwidths`` (and ``name``): they change no weight and
    nothing encode or decode compute, only which bandwidths the next steps draw and what the
    export offers, so a run may go on at other rates; the warning and history.jsonl say so."""
    run = _copy_run(base, tmp_path)
    cfg = json.loads(json.dumps(base["cfg"]))
    cfg["model"]["target_bandwidths"] = [1.2]
    status, err = _cli_train(cfg, run, capsys, "--max-steps", "1")
    assert status == 0, err
    assert "model.target_bandwidths [0.6, 1.2] -> [1.2]" in err
    assert load_model(run / "model.safetensors").target_bandwidths == [1.2]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["changed"]["model.target_bandwidths"] == {"was": [0.6, 1.2], "now": [1.2]}


# -- 2. init_from and the config's model section -----------------------------------------------------------
def _unit_model_file(tmp_path: Path) -> Path:
    """A fresh unit codec of _config's architecture, saved."""
    config = EncodecConfig(name="unit_24khz", n_filters=4, dimension=16, ratios=[8, 5, 4, 2], lstm=1, n_q=4,
                           bins=16, target_bandwidths=[0.6, 1.2])
    return save_model(EncodecModel(config), tmp_path / "init.safetensors")


def test_init_from_a_model_of_another_architecture_than_the_config_is_refused(base: dict, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    init = _unit_model_file(tmp_path)
    cfg = json.loads(json.dumps(base["cfg"]))
    cfg["init_from"] = str(init)
    cfg["model"].update(n_filters=8, causal=False)
    with pytest.raises(ConfigError) as caught:
        train(cfg, tmp_path / "tuned", progress=False)
    assert str(caught.value) == (
        f"config field init_from: {init} has another architecture than the config's model section: causal False "
        f"(init_from: True), n_filters 8 (init_from: 4); a fine-tune keeps its model's architecture: remove these "
        f"model.* keys or set them to its values (only model.name and model.target_bandwidths may differ)")
    assert not (tmp_path / "tuned").exists()
    status, err = _cli_train(cfg, tmp_path / "tuned", capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1 and not (tmp_path / "tuned").exists()


def test_init_from_records_the_model_trained(base: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The config's model section with the init_from model's architecture, another name and
    bandwidths: the fine-tune trains those, config.json and the checkpoint record the whole
    configuration trained, and the resume sees no change."""
    init = _unit_model_file(tmp_path)
    cfg = json.loads(json.dumps(base["cfg"]))
    cfg["init_from"] = str(init)
    cfg["model"] = {"name": "tuned_unit", "n_filters": 4, "causal": True, "target_bandwidths": [1.2]}
    run = tmp_path / "tuned"
    status, err = _cli_train(cfg, run, capsys, "--max-steps", "1")
    assert status == 0, err
    trained = load_model(run / "model.safetensors").config
    expected = {**load_model(init).config.to_dict(), "name": "tuned_unit", "target_bandwidths": [1.2]}
    assert trained.to_dict() == expected
    assert json.loads((run / "config.json").read_text())["model"] == expected
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["model"] == expected
    status, err = _cli_train(cfg, run, capsys, "--max-steps", "1")  # the same command resumes, unchanged
    assert status == 0 and "changed config" not in err, err

    # A fine-tune checkpointed before this fix recorded the config's section, not the model's:
    # its absent keys say nothing (they were init_from's), so only the keys it has compare.
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["config"]["model"] = dict(cfg["model"])
    ckpt["config"]["optim"]["steps"] = 2
    torch.save(ckpt, run / "checkpoint.pt")
    cfg["optim"]["steps"] = 4
    status, err = _cli_train(cfg, run, capsys, "--max-steps", "1")
    changed = [line for line in err.splitlines() if "changed config" in line]
    assert status == 0 and len(changed) == 1 and "optim.steps 2 -> 4 (config.json" in changed[0], err
    assert "model." not in changed[0]


# -- 3. SIGTERM ------------------------------------------------------------------------------------------
SIGTERM_SCRIPT = """
import json, os, signal, sys
from opencodec.train import solver

config, run, setup_run = sys.argv[1:4]
real_step, real_build = solver.generator_step, solver._build_model
sent = []

def step_then_term(*args, **kwargs):  # SIGTERM twice during the first step: one stop, the repeat ignored
    out = real_step(*args, **kwargs)
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    return out

def build_then_term(cfg):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_build(cfg)

solver._build_model = build_then_term
during_setup = solver.main([config, "--run-dir", setup_run, "--no-progress"])
solver._build_model = real_build
solver.generator_step = step_then_term
during_loop = solver.main([config, "--run-dir", run, "--no-progress"])
after = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
print(json.dumps({"setup": during_setup, "loop": during_loop, "restored": after}))
"""


def test_sigterm_checkpoints_like_ctrl_c_and_exits_143(base: dict, tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(base["cfg"]))
    cfg["optim"]["steps"] = 5
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run, setup_run = tmp_path / "run", tmp_path / "setup_run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), str(config), str(run),
                           str(setup_run)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # (-15 when SIGTERM killed it)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"setup": 143, "loop": 143, "restored": True}
    errors = [line for line in done.stderr.splitlines() if line.startswith("opencodec train: error:")]
    assert errors == ["opencodec train: error: terminated",
                      f"opencodec train: error: terminated at step 1 of 5; {run / 'checkpoint.pt'} holds step 1; "
                      f"rerun the same command to resume"], done.stderr[-2000:]
    assert not setup_run.exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1
    assert load_model(run / "model.safetensors").name == "unit_24khz"


# -- 4. another trainer's folder, other sizes ------------------------------------------------------------
def test_an_entropy_model_run_folder_is_one_short_line(base: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "lm_run"
    run.mkdir()
    lm_state = {f"layers.{i}.weight": torch.zeros(4, 4) for i in range(200)}  # many keys the codec lacks
    torch.save({"model": lm_state, "optim": {}, "step": 7, "rng": {}, "config": {"lm": {"dim": 4}},
                "codec_name": "unit_24khz", "codec_hash": "ab" * 32}, run / "checkpoint.pt")
    before = _snapshot(run)
    status, err = _cli_train(base["cfg"], run, capsys)
    assert status == 1 and TRACE not in err
    assert err.strip() == (f"opencodec train: error: {run} holds an entropy model's run (opencodec train-lm, the "
                           f"entropy model of unit_24khz), not a codec's: continue it with opencodec train-lm, or "
                           f"give this codec another --run-dir")
    assert _snapshot(run) == before


def test_weights_of_other_sizes_are_named_in_a_few_words(tmp_path: Path) -> None:
    """The check of the weights themselves (a checkpoint whose recorded config cannot be
    trusted, and the entropy-model trainer's): the first tensor of another size and how many
    more, or how many tensors are missing or extra, never PyTorch's list of every key."""
    path = tmp_path / "checkpoint.pt"
    small, big = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 3)), torch.nn.Sequential(
        torch.nn.Linear(2, 5), torch.nn.Linear(5, 3))
    with pytest.raises(ConfigError) as caught:
        load_run_weights(path, {"model": small.state_dict()}, {"model": big})
    assert str(caught.value) == (f"{path} does not match the configured model (size mismatch for 0.weight: [3, 2] in "
                                 f"the checkpoint, [5, 2] configured (and 2 more tensors of other sizes)); use "
                                 f"another --run-dir")
    other = {f"x{i}.weight": torch.zeros(1) for i in range(300)}
    with pytest.raises(ConfigError) as caught:
        load_run_weights(path, {"model": other}, {"model": big})
    assert str(caught.value) == (f"{path} does not match the configured model (4 of the model's 4 tensors missing "
                                 f"(e.g. 0.weight); 300 tensors the model does not have (e.g. x0.weight)); use "
                                 f"another --run-dir")


# -- 5. --run-dir naming a file --------------------------------------------------------------------------
def test_a_run_dir_that_is_a_file_is_one_line(base: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    status, err = _cli_train(base["cfg"], afile, capsys)
    assert status == 1 and err.strip() == f"opencodec train: error: --run-dir {afile} exists and is not a folder; " \
                                          f"give a folder's path"
    status, err = _cli_train(base["cfg"], afile / "sub", capsys)
    assert status == 1 and err.strip() == (f"opencodec train: error: --run-dir {afile / 'sub'} cannot be a folder: "
                                           f"{afile} is a file; give a folder's path")
    with pytest.raises(ConfigError, match=f"^config field run_dir {afile} exists and is not a folder"):
        train({**base["cfg"], "run_dir": str(afile)}, progress=False)
    assert afile.read_text() == "x"


# -- 6. metrics.jsonl after a restart ---------------------------------------------------------------------
def _dropped(path: Path, step: int) -> tuple[str, list[int]]:
    err = io.StringIO()
    with redirect_stderr(err):
        _metrics_from(path, step).close()
    return err.getvalue().strip(), [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_the_rows_a_restart_drops_are_described_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "valid/si_snr": 1.0}) + "\n")  # a start that left no checkpoint
    message, kept = _dropped(path, 0)
    assert message == (f"{path}: 1 row of an earlier start dropped (it left no checkpoint: the run starts over "
                       f"from step 0)") and kept == []
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 5, 10, 11, 12)))
    message, kept = _dropped(path, 10)
    assert message == f"{path}: 2 rows logged after step 10 dropped (after the checkpoint the run goes on from)"
    assert kept == [0, 5, 10]
