"""Edge cases of the pipes and the server: a client that never reads after its end, a second
``fmt `` chunk, the step decoder's code range, a second Ctrl-C while the server stops, and IPv6
hosts in the ready line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from opencodec.errors import AudioIOError
from opencodec.serve.server import ServeLimits
from opencodec.stream.pcm import PcmStreamReader

from serve_helpers import chirp, client_that_never_reads, server_thread
from stream_models import tiny_stream_model


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_server_edges", 4)


def test_a_client_that_never_reads_after_its_end_is_closed_within_the_idle_timeout(model):
    """6 s of relayed PCM back (576 KB) is far more than the buffers on the way hold, but
    fewer messages than the send queue: only a bound on each send's time frees the slot."""
    limits = ServeLimits(idle_timeout=1.0, socket_send_buffer=4 << 10)
    with server_thread(model, limits=limits) as server:
        sock = client_that_never_reads(server.port, chirp(6.0), end=True)
        try:
            deadline = time.monotonic() + 15  # the keepalive would take 40 s or more
            while (server.closed_early[1008] < 1 or server.clients) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.closed_early == {1008: 1}
            assert server.clients == 0
        finally:
            sock.close()


def _wav(chunks: list[bytes]) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def test_a_second_fmt_chunk_is_refused_not_obeyed():
    mono = struct.pack("<HHIIHH", 1, 1, 24000, 48000, 2, 16)
    stereo = struct.pack("<HHIIHH", 1, 2, 48000, 192000, 4, 16)
    pcm = np.arange(2400, dtype="<i2").tobytes()
    one = PcmStreamReader(io.BytesIO(_wav([_chunk(b"fmt ", mono), _chunk(b"data", pcm)])))
    assert (one.format.sample_rate, one.format.channels) == (24000, 1)
    assert one.read().shape == (2400, 1)
    with pytest.raises(AudioIOError, match="second 'fmt ' chunk"):
        PcmStreamReader(io.BytesIO(_wav([_chunk(b"fmt ", mono), _chunk(b"fmt ", stereo),
                                         _chunk(b"data", pcm)])))


@pytest.mark.parametrize("exact", [True, False])
def test_step_decoder_refuses_codes_out_of_range_instead_of_another_codebooks_entry(model, exact):
    """Fast mode decodes through one table of every codebook stacked: code ``bins`` in
    codebook 0 was codebook 1's entry 0, decoded silently. -1 stays fast mode's "no codebook"
    (the multistream decoder's padding), and only there."""
    from opencodec.errors import InvalidCodesError
    from opencodec.step import DecoderStep

    dec = DecoderStep(model, exact=exact)
    bins, warm = model.quantizer.bins, dec.warmup_frames
    codes = torch.randint(0, bins, (1, 4, warm + 1), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        _, state = dec.start(codes[..., :warm])
        good = dec(codes[..., warm:], *state)[0]
        assert good.shape == (1, 1, 320)
        bad = codes[..., warm:].clone()
        bad[0, 0, 0] = bins
        with pytest.raises(InvalidCodesError, match=rf"in \[0, {bins}\).*got {bins} in codebook 0"):
            dec(bad, *state)
        with pytest.raises(InvalidCodesError, match=f"got {bins} in codebook 0"):
            dec.start(torch.cat([bad, codes[..., 1:warm]], dim=-1))
        padded = codes[..., warm:].clone()
        padded[0, 3, 0] = -1
        if exact:
            with pytest.raises(InvalidCodesError, match="got -1 in codebook 3"):
                dec(padded, *state)
        else:  # -1: codebook 3 adds nothing, as decoding 3 codebooks
            np.testing.assert_array_equal(dec(padded, *state)[0].numpy(),
                                          dec(codes[:, :3, warm:], *state)[0].numpy())


def test_a_second_ctrl_c_while_the_server_stops_is_no_traceback():
    """The real command with a relay client connected, and Ctrl-C twice, 10 ms apart: the
    second used to raise KeyboardInterrupt inside whatever ran then ("Task exception was
    never retrieved", "Task was destroyed but it is pending!", an atexit callback, with
    tracebacks on stderr, in 4 runs of 4); now it is ignored while the command ends."""
    from websockets.sync.client import connect as sync_connect

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", "-b", "6"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]
        with sync_connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"mode": "relay"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            status = proc.wait(30)
        rest = proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert status == 0
    assert "Traceback" not in rest and "Task" not in rest, rest


def test_ctrl_c_twice_at_once_stops_the_server_once_and_raises_nowhere(model):
    """The test above sends its second Ctrl-C 10 ms after the first; on a busy machine it
    failed once ("Task exception was never retrieved ... KeyboardInterrupt"): asyncio.run's
    SIGINT handler raises KeyboardInterrupt at a second Ctrl-C in whatever the main thread runs,
    there a task of the clean-up. Here both come at once, from inside the server (its ready
    callback): the second must raise nothing, the first stops the server (run_server returns),
    and Ctrl-C does nothing after (``exiting``), as before."""
    from opencodec.serve.server import run_server

    raised: list[BaseException] = []

    def ready(line: str) -> None:
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        for _ in range(2):  # two Ctrl-C in a row, while serving
            try:
                handler(signal.SIGINT, None)
            except BaseException as exc:  # noqa: B902 - KeyboardInterrupt is the bug
                raised.append(exc)
                raise

    previous = signal.getsignal(signal.SIGINT)
    try:
        run_server(model, port=0, ready=ready, exiting=False)
        assert raised == []
        assert signal.getsignal(signal.SIGINT) is previous  # the caller's handler is back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_server_started_with_ctrl_c_ignored_keeps_serving_after_one():
    """A background job of a non-interactive shell (``opencodec serve &`` in a script) starts with
    SIGINT ignored; a Ctrl-C aimed at the script must not stop it (the server's own SIGINT handler
    is installed only where asyncio.run would install its own: over Python's default). SIGTERM
    still stops it cleanly."""
    from websockets.sync.client import connect as sync_connect

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", "-b", "6"],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        with sync_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:  # still serving
            ws.send(json.dumps({"mode": "relay"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_ready_line_writes_an_ipv6_host_in_brackets(model):
    """``--host ::1`` printed http://::1:PORT/, which no browser or client takes; the URL it
    prints now serves the page's /info.json."""
    import urllib.request

    from opencodec.serve.server import CodecServer

    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    finally:
        probe.close()
    lines: list[str] = []

    async def main() -> tuple[str, int, dict]:
        server = CodecServer(model)
        task = asyncio.ensure_future(server.serve_forever("::1", 0, lines.append))
        try:
            while not lines:
                await asyncio.sleep(0.01)
            url = re.search(r" on (\S+) ", lines[0]).group(1)  # type: ignore[union-attr]
            with await asyncio.to_thread(urllib.request.urlopen, url + "info.json", timeout=10) as reply:
                return url, server.port, json.loads(reply.read())
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    url, port, info = asyncio.run(main())
    assert url == f"http://[::1]:{port}/"
    assert info["sample_rate"] == 24000
