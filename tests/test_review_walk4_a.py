"""Review of the walk-4 "leftovers" and "live walk 4" commits (helper r5).

* ``tokenize`` with ``--workers 2`` and no torchrun is one process, the whole job, but the
  "one rank prints the job line" rule treated it as one rank of several: a rerun that rewrote a
  deleted shard (``index.json`` already there, with the same content) printed no job line, and
  when every file had failed it exited 1 without its "no file could be tokenised" error.
* ``run_server`` (``opencodec serve``'s entry point, also called in-process by tests) set
  SIGINT to ``SIG_IGN`` when it stopped, also when it could not listen at all; an ignored
  signal stays ignored across ``exec``, so every process started afterwards (the test suite's
  ``opencodec serve`` subprocesses) could not be stopped with Ctrl-C:
  tests/test_live_walk4_fixes.py's Ctrl-C test timed out after test_live_checker_fixes.py's
  port-in-use test in the same run. It is a do-nothing handler now (not inherited), set only
  once the server has served, and the caller's handler is back when ``run_server`` returns
  unless ``exiting`` (the command) says the process ends next.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from official_ref import random_codebooks
from opencodec import EncodecConfig, EncodecModel, save_model
from opencodec.tokens import TokenizeOptions, tokenize


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                           target_bandwidths=[1.5, 3.0])
    return save_model(random_codebooks(EncodecModel(config), 7),
                      tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _two_files(root: Path, good: bool) -> Path:
    """Two 0.5 s WAVs (16 kHz mono), or two ``.wav`` files holding no audio (both fail)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        if good:
            sf.write(root / f"{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        else:
            (root / f"{i}.wav").write_bytes(b"no audio here " * 20)
    return root


def test_workers_2_alone_reports_the_job_after_a_deleted_shard_is_rewritten(tiny_model_file: Path,
                                                                             tmp_path: Path) -> None:
    data = _two_files(tmp_path / "data", good=True)
    out = tmp_path / "out"

    def run() -> bool:
        summary = tokenize(TokenizeOptions([str(data)], out, model=str(tiny_model_file), device="cpu",
                                           shard_rows=1, workers=2))
        assert summary.index is not None and summary.index["rows"] == 2
        return summary.reports_job

    assert run()  # it writes index.json
    assert run()  # nothing to do: the job was finished before
    before = (out / "index.json").read_text()
    sorted(out.glob("shard-*"))[0].unlink()
    assert run()  # one shard rewritten, index.json unchanged: still the one process of the job
    assert (out / "index.json").read_text() == before


def test_workers_2_all_failed_rerun_still_says_so(tiny_model_file: Path, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from opencodec import cli

    data = _two_files(tmp_path / "data", good=False)
    out = tmp_path / "out"
    args = ["tokenize", str(data), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu",
            "--workers", "2", "--shard-rows", "1"]
    assert cli.main(args) == 1
    assert "no file could be tokenised: all 2 failed" in capfd.readouterr().err
    sorted(out.glob("shard-*"))[0].unlink()
    assert cli.main(args) == 1
    err = capfd.readouterr().err
    assert "no file could be tokenised: all 2 failed" in err, err
    assert f"{out}: 2 shards, 0 rows" in err, err


def _child_sigint() -> str:
    """How a Python process started now finds SIGINT: default (Ctrl-C interrupts it) or ignored."""
    code = ("import signal; h = signal.getsignal(signal.SIGINT); "
            "print('default' if h is signal.default_int_handler else 'ignored' if h == signal.SIG_IGN else h)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


@pytest.fixture()
def sigint_kept():
    """The test process's SIGINT handler (and torch's thread count, which run_server sets),
    put back after the test whatever it did."""
    before, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    yield before
    signal.signal(signal.SIGINT, before)
    torch.set_num_threads(threads)


def test_run_server_that_cannot_listen_leaves_sigint_alone(sigint_kept) -> None:
    pytest.importorskip("websockets")
    from opencodec.serve.server import run_server
    from stream_models import tiny_stream_model

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError, match="address already in use"):
            run_server(tiny_stream_model("tiny_r5", 4), port=taken.getsockname()[1], ready=lambda text: None)
    finally:
        taken.close()
    assert signal.getsignal(signal.SIGINT) is sigint_kept
    assert _child_sigint() == "default"


def test_run_server_gives_the_callers_sigint_back(sigint_kept) -> None:
    """Stopped by SIGTERM after it served, ``run_server`` returns with the caller's SIGINT
    handler back (an application embedding it can be stopped with Ctrl-C again), and a process
    started afterwards gets Python's usual SIGINT."""
    pytest.importorskip("websockets")
    from opencodec.serve.server import run_server
    from stream_models import tiny_stream_model

    def ready(text: str) -> None:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

    run_server(tiny_stream_model("tiny_r5", 4), port=0, ready=ready)
    assert signal.getsignal(signal.SIGINT) is sigint_kept
    assert _child_sigint() == "default"


def test_run_server_exiting_ignores_a_later_ctrl_c(sigint_kept) -> None:
    """With ``exiting`` (``opencodec serve``), a Ctrl-C after it stopped does nothing (the
    command is ending), and a process started afterwards still gets Python's usual SIGINT."""
    pytest.importorskip("websockets")
    from opencodec.serve.server import run_server
    from stream_models import tiny_stream_model

    def ready(text: str) -> None:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

    run_server(tiny_stream_model("tiny_r5", 4), port=0, ready=ready, exiting=True)
    assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, sigint_kept)
    signal.raise_signal(signal.SIGINT)  # nothing happens
    assert _child_sigint() == "default"


def test_the_served_command_ignores_ctrl_c_through_its_exit(tmp_path: Path) -> None:
    """Python puts a signal with a Python handler back to its default action late in its exit:
    a second Ctrl-C then killed ``opencodec serve`` (status -2, seen in tests/test_live_walk4_fixes.py's
    Ctrl-C test once the handler was no longer ``SIG_IGN``); at exit it is ``SIG_IGN`` again."""
    pytest.importorskip("websockets")
    script = tmp_path / "serve_then_exit.py"
    script.write_text(
        "import atexit, os, signal, sys, threading\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from stream_models import tiny_stream_model\n"
        "from opencodec.serve.server import run_server\n"
        "atexit.register(lambda: print('at exit', signal.getsignal(signal.SIGINT) == signal.SIG_IGN))\n"
        "ready = lambda text: threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
        "run_server(tiny_stream_model('tiny_r5', 4), port=0, ready=ready, exiting=True)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("at exit True"), done.stdout
