"""``opencodec serve`` connections still opening: the ``max_opening`` bound and option, errors of
the reader and the sender in one pass of a connection loop, and stalled clients cut off."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket

import pytest
import typing as tp
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from opencodec.serve.protocol import ProtocolError
from opencodec.serve.server import CodecServer, ServeLimits

from serve_helpers import chirp, client_that_never_reads, read_all, server_thread, until
from stream_models import tiny_stream_model


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_bounds", 5)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _relay_ready(port: int) -> str:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        await ws.send(json.dumps({"mode": "relay"}))
        return json.loads(await ws.recv())["type"]


async def _refused_status(port: int) -> int:
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_connections_that_never_finish_the_handshake_are_bounded_in_number(model):
    """Only 3 connections at once may be open and not admitted: 3 that send nothing (or half a
    request) are held; 200 more are answered 503 and closed at once, unread, so the process
    holds the 200 client sockets and no server socket for them (before: 200 of each, for 10 s,
    websockets' open_timeout, and 2000 such connections held ~1000 fds of `opencodec serve`).
    A real client is refused 503 while they are held and served once one goes; an admitted
    client is no longer counted as opening."""
    limits = ServeLimits(max_clients=2, max_opening=3, max_opening_per_address=3)
    with server_thread(model, limits=limits) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        held[2].sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # half a request
        extra: list[socket.socket] = []
        try:
            assert until(lambda: server.opening.count == 3), server.opening.count
            before = _open_fds()
            extra = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
            assert until(lambda: server.opening.refused == 200), server.opening.refused
            replies = [read_all(s) for s in extra]
            assert all(r.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") for r in replies), replies[0]
            assert b"too many connections opening" in replies[0]
            assert until(lambda: _open_fds() <= before + 200 + 2), (_open_fds(), before)
            assert server.opening.count == 3
            assert asyncio.run(_refused_status(server.port)) == 503
            held.pop().close()
            assert until(lambda: server.opening.count == 2)
            assert asyncio.run(_relay_ready(server.port)) == "ready"
            assert server.opening.count == 2
        finally:
            for s in held + extra:
                s.close()
        assert until(lambda: server.opening.count == 0 and server.clients == 0)
        assert server.refused == 0  # no client was past max_clients


def test_opening_limit_default_and_checks():
    """2 x max_clients + 16 by default; an explicit limit is taken as it is; below 1 is refused."""
    assert ServeLimits().opening_limit == 48
    assert ServeLimits(max_clients=4).opening_limit == 24
    assert ServeLimits(max_clients=4, max_opening=5).opening_limit == 5
    with pytest.raises(ValueError, match="max_opening must be at least 1, got 0"):
        ServeLimits(max_opening=0)


def test_max_opening_option_reaches_the_server(monkeypatch):
    """``opencodec serve --max-opening N`` gives the server's limits ``max_opening=N``."""
    import opencodec.model_cache
    import opencodec.serve.server
    from opencodec.cli import main

    seen: list[ServeLimits] = []
    monkeypatch.setattr(opencodec.model_cache, "load_checked_model", lambda *a, **k: type("M", (), {})())
    monkeypatch.setattr(opencodec.serve.server, "run_server", lambda model, host, port, limits, **k: seen.append(limits))
    assert main(["serve", "--port", "0", "--max-clients", "3", "--max-opening", "7"]) == 0
    assert seen[0].max_opening == 7 and seen[0].opening_limit == 7 and seen[0].max_clients == 3
    assert main(["serve", "--port", "0", "--max-clients", "3"]) == 0
    assert seen[1].max_opening is None and seen[1].opening_limit == 22


class _FakeConnection:
    """Just enough of a connection for ``_converse``: the hello, then nothing."""

    async def recv(self) -> str:
        return json.dumps({"mode": "relay"})

    async def send(self, message: tp.Any) -> None:
        pass


def _converse_with(model: tp.Any, read: tp.Callable[..., tp.Any], send: tp.Callable[..., tp.Any]
                   ) -> tuple[str, list[str]]:
    """Run one ``_converse`` whose reader and sender are ``read`` and ``send``: (the error that
    ended it, "Type: message", what asyncio reported to the loop's exception handler once every task ended and
    was collected)."""
    server = CodecServer(model)
    server._read = read  # type: ignore[method-assign]
    server._send = send  # type: ignore[method-assign]

    async def main() -> tuple[str, list[str]]:
        reports: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reports.append(context["message"]))
        try:
            await server._converse(_FakeConnection())  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - returned to the test (as text: the exception
            error = f"{type(exc).__name__}: {exc}"  # would keep the session's frame and tasks alive)
        else:
            raise AssertionError("the session did not end with an error")
        for _ in range(5):  # the cancelled tasks unwind
            await asyncio.sleep(0)
        gc.collect()  # a task's unretrieved exception is reported when it is collected
        return error, reports

    return asyncio.run(main())


async def _reader_fails(ws: tp.Any, session: tp.Any) -> None:
    raise ProtocolError("the reader failed")


def test_a_bug_in_the_sender_beside_the_readers_error_is_logged_not_lost(model, caplog):
    """The reader and the sender fail in the same pass of ``_converse``'s loop: the reader's
    error ends the session, as before, and the sender's (here a bug) is logged. It used to
    vanish: ``task.cancel()`` on the finished sender marks its exception retrieved, so not
    even asyncio's "never retrieved" said anything."""
    async def send_fails(ws: tp.Any, queue: tp.Any) -> None:
        raise RuntimeError("a bug in the sender")

    with caplog.at_level("ERROR", logger="opencodec.serve.server"):
        error, reports = _converse_with(model, _reader_fails, send_fails)
    assert error == "ProtocolError: the reader failed"
    assert reports == []
    assert [r.getMessage() for r in caplog.records] == ["session task failed: RuntimeError: a bug in the sender"]


def test_a_second_protocol_error_in_the_same_pass_says_nothing(model, caplog):
    """Two ordinary ends at once (the reader's and the sender's ProtocolError): the reader's
    ends the session, nothing is logged or reported."""
    async def send_fails(ws: tp.Any, queue: tp.Any) -> None:
        raise ProtocolError("the sender failed")

    with caplog.at_level("ERROR", logger="opencodec.serve.server"):
        error, reports = _converse_with(model, _reader_fails, send_fails)
    assert error == "ProtocolError: the reader failed" and reports == [] and caplog.records == []


def test_a_task_that_fails_while_it_is_cancelled_is_retrieved(model, caplog):
    """The session ends (the reader's error) while the sender still runs: it is cancelled and
    fails as it unwinds. Its error used to be left to the garbage collector ("Task exception
    was never retrieved"); now it is retrieved and, a bug, logged."""
    async def send_fails_on_cancel(ws: tp.Any, queue: tp.Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("failed while unwinding") from None

    with caplog.at_level("ERROR", logger="opencodec.serve.server"):
        error, reports = _converse_with(model, _reader_fails, send_fails_on_cancel)
    assert error == "ProtocolError: the reader failed"
    assert reports == []
    assert [r.getMessage() for r in caplog.records] == ["session task failed: RuntimeError: failed while unwinding"]


def test_a_stalled_client_is_cut_off_and_its_slot_is_free_again(model):
    """tests/test_serve.py's stalled client (it stops reading mid-stream): besides the 1008
    close, the server's client count is back to 0 within the close timeout (2 s) plus a tick,
    not when the WebSocket keepalive gives up (40 s or more), and nothing counts as opening."""
    limits = ServeLimits(send_queue=8, max_backlog_seconds=30.0, socket_send_buffer=16 << 10,
                         idle_timeout=3.0)
    with server_thread(model, limits=limits) as server:
        sock = client_that_never_reads(server.port, chirp(12.0))
        try:
            assert until(lambda: server.closed_early[1008] >= 1, 20.0), server.closed_early
            assert server.closed_early == {1008: 1}
            assert until(lambda: server.clients == 0, 8.0), server.clients
            assert server.opening.count == 0
        finally:
            sock.close()
