"""``opencodec serve``: JSON nested too deeply for Python's parser is malformed input like any
other (1007, no traceback in the server's log), and SIGTERM stops the server as Ctrl-C does
(clients get 1001, the command exits 0)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import websockets  # noqa: F401,E402  (installed by make test: a missing extra fails, never skips)

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from opencodec.serve.protocol import ProtocolError, parse_control, parse_hello  # noqa: E402
from serve_helpers import raw_client, server_thread  # noqa: E402
from stream_models import tiny_stream_model  # noqa: E402

DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB: under the default 1 MiB message limit


_raw = raw_client  # one raw client for the serve tests (serve_helpers)


def test_deeply_nested_json_is_malformed_input() -> None:
    with pytest.raises(ProtocolError, match="the first message is not valid JSON"):
        parse_hello('{"mode": ' + DEEP + "}", [0.9, 1.8], "tiny")
    with pytest.raises(ProtocolError, match="a text message after the hello must be JSON"):
        parse_control(DEEP, [0.9, 1.8], "tiny")


def test_server_closes_deeply_nested_json_with_1007_and_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_stream_model("tiny_serve_json", 3)
    caplog.set_level(logging.ERROR)
    with server_thread(model) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        hello = asyncio.run(_raw(uri, ['{"mode": ' + DEEP + "}"]))
        control = asyncio.run(_raw(uri, [json.dumps({"mode": "relay"}), DEEP]))
        assert server.closed_early == {1007: 2}
    assert hello == (1007, "the first message is not valid JSON")
    assert control == (1007, "a text message after the hello must be JSON")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_sigterm_stops_the_server_like_ctrl_c() -> None:
    """The bundled model served by the real command: a connected client gets close 1001 (not
    an abnormal 1006) and the command exits 0 (it used to die of the signal, status -15)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", "-b", "6"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]

        async def client() -> tuple[int | None, str]:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"mode": "relay", "bandwidth": 6}))
                await ws.recv()  # ready
                await ws.send(np.zeros(3200, "<f4").tobytes())
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                try:
                    async for _ in ws:
                        pass
                except ConnectionClosed:
                    pass
                return ws.close_code, ws.close_reason
        code, _ = asyncio.run(asyncio.wait_for(client(), 60))
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert code == 1001
    assert status == 0


def test_sigterm_handler_of_the_embedding_application_is_restored() -> None:
    """serve's SIGTERM handling lasts only while it runs: the process's own handler comes back."""
    import asyncio
    import signal

    from opencodec.serve.server import _on_sigterm

    def own(signum: int, frame: object) -> None:  # an application's handler
        pass

    before = signal.signal(signal.SIGTERM, own)
    try:
        async def run() -> object:
            with _on_sigterm(lambda: None):
                return signal.getsignal(signal.SIGTERM)

        during = asyncio.run(run())
        assert during is not own and signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)
