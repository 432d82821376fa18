"""The GPU lease's deadline (scripts/device/campaign.sh DEADLINE, next_lease.sh LEASE_SECONDS):
the campaign has packed its parts by the deadline even when its trainers ignore SIGTERM and
never end, the unpacking counts against the trainers' budget, the states are packed before
the exports (which are skipped when no time is left), and bad time arguments are refused in
seconds.

The scripts run from a scratch folder that links the repository's scripts/ and configs/ and
holds a copy of src/ made of links, except ``opencodec/train/__main__.py``: a stub trainer
that records its arguments, writes a small checkpoint and export (the tiny config's codec),
and then, with STUB_MODE=hang, ignores SIGTERM and sleeps until killed (a trainer stuck in its
final export). DEVICE=cpu, SKIP_WHEELS=1. Each test waits for its deadline (20-50 s).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]

STUB_TRAINER = '''"""Stand-in for python -m opencodec.train (tests/test_device_deadline.py)."""
import json, os, shutil, signal, sys, time
from pathlib import Path

started = time.time()
args = sys.argv[1:]
run = Path(args[args.index("--run-dir") + 1])
run.mkdir(parents=True, exist_ok=True)
(run / "argv.json").write_text(json.dumps({"argv": args, "started": started}))
files = Path(os.environ["STUB_FILES"])
shutil.copy(files / "checkpoint.pt", run / "checkpoint.pt")
shutil.copy(files / "model.safetensors", run / "model.safetensors")
print("stub trainer: checkpoint and export written", flush=True)
if os.environ.get("STUB_MODE") == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
'''


@pytest.fixture(scope="module")
def stub_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stub trainer's checkpoint.pt and model.safetensors: the tiny config's codec (seed 0)."""
    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.pretrained import save_model
    from opencodec.train.config import load_config

    folder = tmp_path_factory.mktemp("stub_files")
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "tiny_24khz.yaml")
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    save_model(model, folder / "model.safetensors")
    torch.save({"model": model.state_dict(), "disc": {}, "step": 3, "config": cfg}, folder / "checkpoint.pt")
    return folder


def _tree(tmp_path: Path) -> Path:
    """A folder that looks like the repository root to the scripts, with the stub trainer and a
    3-file corpus in .gpu/corpus."""
    root = tmp_path / "tree"
    root.mkdir()
    for name in ("scripts", "configs"):
        (root / name).symlink_to(ROOT / name)
    package = root / "src" / "opencodec"
    for src, dst, own in ((ROOT / "src" / "opencodec", package, "train"),
                          (ROOT / "src" / "opencodec" / "train", package / "train", "__main__.py")):
        dst.mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name not in (own, "__pycache__"):
                (dst / entry.name).symlink_to(entry)
    (package / "train" / "__main__.py").write_text(STUB_TRAINER)
    packed = root / ".gpu" / "corpus"
    t = np.arange(2 * 24000) / 24000
    for split in ("train", "valid", "train_noise"):
        audio = packed / "audio" / split / "0.flac"
        audio.parent.mkdir(parents=True)
        sf.write(str(audio), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
        row = {"path": f"../audio/{split}/0.flac", "duration": 2.0, "sample_rate": 24000, "channels": 1,
               "category": "noise" if split == "train_noise" else "speech"}
        (packed / "manifests").mkdir(exist_ok=True)
        (packed / "manifests" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    return root


def _run(root: Path, script: str, args: list[str], timeout: float, stub_files: Path | None = None,
         **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run scripts/device/SCRIPT; returns its result and the time.time() it ended at. On a
    timeout its whole process group (the stub trainers too) is killed and the test fails."""
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "SKIP_WHEELS": "1", "DEVICE": "cpu", "WORKERS": "0", "OMP_NUM_THREADS": "1",
                "OUT": str(root / "out"), "WORK": str(root / "work"), "STUB_FILES": str(stub_files or ""), **env}
    with subprocess.Popen(["bash", f"scripts/device/{script}", *args], cwd=root, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{script} still running {timeout:.0f} s after its start\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), time.time()


def _members(out: Path) -> list[str]:
    """The names in $OUT/campaign.tar.partNN, joined, in the archive's order."""
    parts = sorted(out.glob("campaign.tar.part*"))
    joined = out.parent / "campaign_joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        return tar.getnames()


def _budget_end(run: Path) -> float:
    """When the stub trainer in RUN would have stopped itself: its start + its max_minutes."""
    record = json.loads((run / "argv.json").read_text())
    minutes = [a.split("=", 1)[1] for a in record["argv"] if a.startswith("max_minutes=")]
    assert len(minutes) == 1, record["argv"]
    return record["started"] + 60 * float(minutes[0])


def test_trainers_that_ignore_sigterm_are_killed_in_time_to_pack_by_the_deadline(tmp_path: Path,
                                                                                 stub_files: Path) -> None:
    root = _tree(tmp_path)
    deadline = int(time.time()) + 40
    # MINUTES 5: a cap the deadline leaves no room for (the trainers get ~10 s)
    done, ended = _run(root, "campaign.sh", ["5"], 75, stub_files, DEADLINE=str(deadline), PACK_SECONDS="20",
                       FINISH_SECONDS="4", VARIANTS="a b", STUB_MODE="hang")
    log = done.stdout + done.stderr
    assert ended <= deadline, f"ended {ended - deadline:.1f} s after DEADLINE\n{log}"
    assert "== hard stop after" in done.stdout and "SIGKILL to the trainers still running" in done.stdout, log
    assert "== a: trainer exit 137 (hard stop: SIGKILL)" in done.stdout
    assert done.returncode == 1 and "FAILED trainers: a (exit 137) b (exit 137)" in done.stdout, log
    # the trainers' budget ran from their start (the corpus unpacked) to DEADLINE - PACK - FINISH; the
    # stub's clock starts once `python -m opencodec.train` has imported the package (seconds, as the trainer's)
    for v in "ab":
        assert -1.0 < _budget_end(root / "work" / f"run_{v}") - (deadline - 20 - 4) < 5.0
    # both states and both exports came back, every state file before the first export
    members = _members(root / "out")
    assert {"./a/state/state.json", "./b/state/state.json", "./a/model.safetensors", "./b/model.safetensors",
            "./a/train.log"} <= set(members), members
    exports = [i for i, name in enumerate(members) if name.endswith("model.safetensors")]
    assert max(i for i, name in enumerate(members) if "/state/" in name) < min(exports)
    assert json.loads((root / "work" / "pack" / "a" / "state" / "state.json").read_text())["step"] == 3


def test_with_no_time_left_after_the_states_the_exports_are_skipped(tmp_path: Path, stub_files: Path) -> None:
    root = _tree(tmp_path)
    deadline = int(time.time()) + 20
    # PACK_SECONDS=0: the trainer is killed at DEADLINE itself, so no export can end before it
    done, _ = _run(root, "campaign.sh", ["auto"], 60, stub_files, DEADLINE=str(deadline), PACK_SECONDS="0",
                   FINISH_SECONDS="4", VARIANTS="a", STUB_MODE="hang")
    assert "a: export skipped" in done.stdout and "its state is packed" in done.stdout, done.stdout + done.stderr
    members = _members(root / "out")
    assert "./a/state/state.json" in members and "./a/model.safetensors" not in members, members


def test_next_lease_ends_the_campaign_within_lease_seconds(tmp_path: Path, stub_files: Path) -> None:
    root = _tree(tmp_path)
    started = time.time()
    done, ended = _run(root, "next_lease.sh", [], 90, stub_files, LEASE_SECONDS="50", BENCH_SECONDS="1",
                       PACK_SECONDS="20", FINISH_SECONDS="4", VARIANTS="a", STUB_MODE="hang")
    log = done.stdout + done.stderr
    assert ended - started <= 50, f"took {ended - started:.1f} s, LEASE_SECONDS=50\n{log}"
    assert "preflight ok: a" in done.stdout and "s left of LEASE_SECONDS=50 for a" in done.stdout, log
    assert "./a/state/state.json" in _members(root / "out")
    # the deadline is the script's start + LEASE_SECONDS, less packing and finishing
    assert -1.0 < _budget_end(root / "work" / "run_a") - (started + 50 - 24) < 5.0


@pytest.mark.parametrize(("minutes", "env", "message"), [
    ("auto", {"CHECK_ONLY": "1"}, "preflight: MINUTES auto needs DEADLINE (epoch seconds: when this script must end)"),
    ("0", {"CHECK_ONLY": "1"}, "preflight: MINUTES must be a positive number of minutes (or auto with DEADLINE), got '0'"),
    ("auto", {"DEADLINE": "soon"}, "preflight: DEADLINE must be epoch seconds (date +%s), got 'soon'"),
    ("auto", {"DEADLINE": "+", "FINISH_SECONDS": "1m"}, "preflight: FINISH_SECONDS must be a whole number of seconds, got '1m'"),
    # a leading zero: bash arithmetic reads octal and fails, which skipped the whole preflight
    ("auto", {"DEADLINE": "+", "PACK_SECONDS": "08"}, "preflight: PACK_SECONDS must be a whole number of seconds, got '08'"),
])
def test_bad_time_arguments_are_refused_before_python(tmp_path: Path, minutes: str, env: dict[str, str],
                                                      message: str) -> None:
    root = _tree(tmp_path)
    if env.get("DEADLINE") == "+":
        env = {**env, "DEADLINE": str(int(time.time()) + 600)}
    done, _ = _run(root, "campaign.sh", [minutes], 30, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stdout.splitlines(), done.stdout
    assert "torch" not in done.stdout and not (root / "work").exists()  # refused before setup.sh and unpacking


def test_a_deadline_that_leaves_no_time_to_train_is_refused_before_unpacking(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    done, _ = _run(root, "campaign.sh", ["auto"], 30, DEADLINE=str(int(time.time()) + 80), VARIANTS="a")
    assert done.returncode == 2, done.stdout + done.stderr
    assert any(line.startswith("preflight: DEADLINE is ") and line.endswith(
        "s away, no more than PACK_SECONDS + FINISH_SECONDS (110 s): no time to train")
        for line in done.stdout.splitlines()), done.stdout
    assert not (root / "work").exists() and not list((root / "out").iterdir())
