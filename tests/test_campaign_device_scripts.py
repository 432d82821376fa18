"""The GPU campaign's scripts (scripts/device/campaign.sh, next_lease.sh,
tokenize_throughput.py) run on the CPU, so a mistake shows in seconds: the preflight
checks, a failed or overrunning trainer, an interrupted benchmark; the campaign state's
pending metric sums, and what docs/training/campaign.md says about bf16."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.train.campaign import compact_state, expand_state
from opencodec.train.step import MetricAccumulator


ROOT = Path(__file__).resolve().parents[1]


LEASE_OVERRIDES = ["amp=bf16", "optim.batch_size=64", "data.loader=device", "cudnn_benchmark=true"]


def _scratch(tmp_path: Path, corpus: bool = True) -> Path:
    """A folder that looks like the repository root to the scripts, with a 3-file corpus in
    .gpu/corpus (FLAC; unpack_corpus decodes any format soundfile reads)."""
    root = tmp_path / "tree"
    root.mkdir()
    for name in ("scripts", "src", "configs"):
        (root / name).symlink_to(ROOT / name)
    if corpus:
        packed = root / ".gpu" / "corpus"
        t = np.arange(3 * 24000) / 24000
        for split in ("train", "valid", "train_noise"):
            audio = packed / "audio" / split / "0.flac"
            audio.parent.mkdir(parents=True)
            sf.write(str(audio), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
            row = {"path": f"../audio/{split}/0.flac", "duration": 3.0, "sample_rate": 24000, "channels": 1,
                   "category": "noise" if split == "train_noise" else "speech"}
            (packed / "manifests").mkdir(exist_ok=True)
            (packed / "manifests" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    return root


def _campaign(root: Path, args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "SKIP_WHEELS": "1", "DEVICE": "cpu", "WORKERS": "0", "OMP_NUM_THREADS": "1",
                "OUT": str(root / "out"), "WORK": str(root / "work"), **env}
    # its own process group: on a timeout the script's background trainers are stopped with it
    with subprocess.Popen(["bash", "scripts/device/campaign.sh", *args], cwd=root, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_preflight_accepts_the_lease_command_without_training(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    done = _campaign(root, ["1", *LEASE_OVERRIDES], 120, CHECK_ONLY="1", VARIANTS="a b c")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "preflight ok: a b c with configs/opencodec_cpu_24khz.yaml" in done.stdout
    assert not (root / "work").exists() and not list((root / "out").iterdir())  # nothing unpacked, trained, packed


def test_preflight_refuses_a_typo_in_an_override(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    done = _campaign(root, ["1", "amp=bf16", "optim.batch_sise=64"], 120, CHECK_ONLY="1", VARIANTS="a")
    assert done.returncode == 2
    assert "no key optim.batch_sise in the config (did you mean optim.batch_size?)" in done.stderr
    assert "preflight: variant a refused" in done.stdout
    assert not (root / "work").exists()


def test_preflight_makes_the_resume_architecture_check(tmp_path: Path) -> None:
    from opencodec.model import EncodecConfig
    from opencodec.train.campaign import write_parts
    from opencodec.train.config import load_config

    root = _scratch(tmp_path)
    tiny = EncodecConfig.from_dict(load_config(ROOT / "configs" / "tiny_24khz.yaml")["model"]).to_dict()
    for name, causal in (("same", tiny["causal"]), ("other", not tiny["causal"])):
        state = root / "state" / name / "main"  # what a previous lease left (only what the check reads)
        write_parts({"model": {}, "disc": {}, "step": 7, "config": {"model": {**tiny, "causal": causal}}}, state)
        (state / "state.json").write_text("{}")
    same = _campaign(root, ["1"], 120, CHECK_ONLY="1", CONFIG="configs/tiny_24khz.yaml", STATE="state/same")
    assert same.returncode == 0, same.stdout + same.stderr
    other = _campaign(root, ["1"], 120, CHECK_ONLY="1", CONFIG="configs/tiny_24khz.yaml", STATE="state/other")
    assert other.returncode == 2
    assert ("state/other/main/state.pt.partNN holds a codec of another architecture: causal True "
            "(checkpoint: False)") in other.stderr
    assert "preflight: variant main refused" in other.stdout


def test_preflight_names_a_missing_corpus_and_init_from_without_python(tmp_path: Path) -> None:
    root = _scratch(tmp_path, corpus=False)
    done = _campaign(root, ["1"], 30, CHECK_ONLY="1", VARIANTS="a",
                     INIT_FROM="src/opencodec/weights/not_there.safetensors")
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert any(line.startswith("preflight: no corpus: .gpu/corpus.tar") for line in lines)
    assert ("preflight: a has no state in docs/training/campaign/state/a and INIT_FROM="
            "src/opencodec/weights/not_there.safetensors is not a file "
            "(slim_tree.sh out without KEEP=not_there.safetensors?)") in lines
    assert "torch" not in done.stdout  # refused before setup.sh starts Python


def test_a_failed_trainer_fails_the_campaign_without_a_traceback(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    done = _campaign(root, ["0.2", "threads=1", "valid.bandwidths=[24]"], 120, CONFIG="configs/tiny_24khz.yaml",
                     INIT_FROM="")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "== main: trainer exit 1" in done.stdout
    assert "FAILED trainers: main (exit 1)" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert list((root / "out").glob("campaign.tar.part*"))  # the logs still come back


def test_a_trainer_past_the_hard_stop_is_stopped_and_the_campaign_ends(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    # a 5-minute budget, but the hard stop 1 s after the start: the trainer is still setting up
    done = _campaign(root, ["5", "threads=1"], 90, CONFIG="configs/tiny_24khz.yaml", INIT_FROM="",
                     HARD_STOP_SECONDS="1")
    assert "== hard stop after 1 s: SIGTERM to the trainers still running" in done.stdout
    assert "== main: trainer exit 143 (hard stop: SIGTERM)" in done.stdout
    assert done.returncode == 1  # stopped before any checkpoint: nothing trained
    assert "FAILED trainers: main (exit 143)" in done.stdout


def _tokenize_benchmark(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its provenance module, as when run as a script
    spec = importlib.util.spec_from_file_location("tokenize_throughput_under_test",
                                                  ROOT / "benchmarks" / "tokenize_throughput.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, spec.name, module)  # its set writers (forked) unpickle functions by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_tokenize_benchmark_interrupted_prints_the_rows_it_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bench = _tokenize_benchmark(monkeypatch)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what timeout's SIGTERM becomes, during the first opencodec row

    monkeypatch.setattr(bench, "run_opencodec", interrupted)
    monkeypatch.setattr(bench, "HFModel", None)  # no transformers row, installed or not
    monkeypatch.setattr(sys, "argv", ["tokenize_throughput.py", "--files", "1", "--cpu-files", "1", "--devices",
                                      "cpu", "--max-seconds", "1.5", "--cpu-processes", "1",
                                      "--work", str(tmp_path / "work")])
    handler = signal.getsignal(signal.SIGTERM)
    try:
        status = bench.main()
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped the benchmark: no table printed")
    assert status == 130
    assert signal.getsignal(signal.SIGTERM) is handler  # left as it was (forked workers inherit it)
    out = capsys.readouterr().out
    assert "PARTIAL: interrupted after 1 row(s)" in out
    table = [line for line in out.splitlines() if line.startswith("| CPU")]
    assert len(table) == 1 and "| fp32 | (a) official, file by file | 1 x 1 | 1 |" in table[0]


# -- 7. the bf16 claim ------------------------------------------------------------------------------
def test_campaign_doc_says_where_bf16_was_measured() -> None:
    """The doc quotes the test's tolerance for the test's synthetic corpus, and the tiny config's
    counter-measurement, not a general promise."""
    from test_train_levers import BF16_MEL_TOLERANCE

    row = next(line for line in (ROOT / "docs" / "training" / "campaign.md").read_text().splitlines()
               if line.startswith("| `amp` |"))
    assert f"within {BF16_MEL_TOLERANCE:.0%}" in row and "synthetic" in row and "test_train_levers.py" in row
    assert "configs/tiny_24khz.yaml" in row and "+25%" in row and "+110%" in row


def test_compact_state_keeps_the_metrics_summed_since_the_last_log() -> None:
    metrics = MetricAccumulator()
    metrics.add({"train/l1": torch.tensor(0.25), "train/mel": torch.tensor(2.5)})
    metrics.add({"train/l1": torch.tensor(0.75), "train/mel": torch.tensor(1.5)})
    ckpt = {"step": 7, "model": {"w": torch.ones(3)}, "disc": {"d": torch.zeros(2)},
            "metrics": metrics.state_dict()}
    compact, left_out = compact_state(ckpt, max_bytes=1)  # over budget: the small fields stay
    assert left_out == [] and compact["step"] == 7
    resumed = MetricAccumulator()
    resumed.load_state_dict(expand_state(compact)["metrics"], torch.device("cpu"))
    means = resumed.means()
    assert means["train/l1"] == pytest.approx(0.5) and means["train/mel"] == pytest.approx(2.0)
