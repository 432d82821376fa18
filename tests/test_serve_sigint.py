"""``run_server`` and ``opencodec serve`` with SIGINT: the caller's handler is left alone or given
back, and a Ctrl-C during or after the exit is ignored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch


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
    a second Ctrl-C then killed ``opencodec serve`` (status -2, seen in tests/test_stream_server_edges.py's
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
