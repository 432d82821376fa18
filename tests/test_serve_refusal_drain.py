"""``opencodec serve``'s opening gate refuses a connection with an HTTP 503 and closes it at once.
Closing a socket whose received bytes were never read makes Linux send a TCP reset instead of
the FIN: a client that had sent its request (every client does, at once) saw its connection
reset after the 503 (on loopback each time; some stacks drop the 503 then). The refusal now
sends the 503 and the FIN, and just before the socket closes (the loop's next pass) drops what
has arrived by then, never waiting and at most ``DRAIN_LIMIT`` bytes: the 503 ends in a clean
end of stream, no reset, and a client that floods is closed as promptly as before.

The server's loop is held in a callback (or in the refusal) while the clients connect and
send, so that each request is in the server's socket exactly when the test means it to be."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
import threading
import time
import typing as tp

import pytest

from opencodec.serve import limits
from opencodec.serve.limits import BUSY_RESPONSE, DRAIN_LIMIT, discard_received
from opencodec.serve.server import ServeLimits

from serve_helpers import server_thread, until
from stream_models import tiny_stream_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"),
                                reason="Linux's reset on a close with unread bytes; counts files in /proc")

REQUEST = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_drain", 5)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fds_before() -> int:
    """The open file descriptors now, after a collection: a socket an earlier test left to
    the garbage collector must not close while a test counts."""
    gc.collect()
    return _fds()


@contextlib.contextmanager
def _full_gate(model: tp.Any) -> tp.Iterator[tuple[tp.Any, tp.Any]]:
    """A server whose gate (1 place) is taken by a connection that sends nothing: yields the
    server and its event loop; every other connection is refused."""
    one_place = ServeLimits(max_clients=1, max_opening=1, max_opening_per_address=1)
    with server_thread(model, limits=one_place) as server:
        held = socket.create_connection(("127.0.0.1", server.port))
        try:
            assert until(lambda: server.opening.count == 1), server.opening.count
            yield server, next(iter(server.opening.members)).loop
        finally:
            held.close()


@contextlib.contextmanager
def _loop_held(loop: tp.Any) -> tp.Iterator[None]:
    """The server's loop stays in a callback inside the block: connections made meanwhile wait
    in the kernel's accept queue, with what they sent."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    loop.call_soon_threadsafe(hold)
    assert holding.wait(10)
    try:
        yield
    finally:
        release.set()


def _read_to_end(sock: socket.socket) -> tuple[bytes, str]:
    """What ``sock`` receives until its end, and how it ended: "eof" or "reset"."""
    sock.settimeout(5)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    return data, "eof"


def _reset_after(sock: socket.socket) -> int:
    """The error a reset that reached ``sock`` after its end of stream left (EPIPE in
    CLOSE_WAIT), 0 if none came."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def test_refused_clients_that_sent_their_request_read_the_503_and_a_clean_end(model):
    """40 clients connect and send a whole handshake request while the gate is full (and the
    server's loop held, so every request is there before the refusal): each reads exactly the
    503 and a clean end of stream, and no reset follows once the server has closed its 40
    sockets. Without the drain each was reset right after the 503 (the close found the
    request unread)."""
    with _full_gate(model) as (server, loop):
        before = _fds_before()
        with _loop_held(loop):
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
            for client in clients:
                client.sendall(REQUEST)
        try:
            ends = [_read_to_end(c) for c in clients]
            # (refused first: once it is 40, the server had accepted all 40; then they are closed)
            assert until(lambda: server.opening.refused == 40 and _fds() == before + 40), (_fds(), before)
            time.sleep(0.05)
            assert server.opening.refused == 40 and server.opening.count == 1
            assert [end for _, end in ends] == ["eof"] * 40
            assert all(data == BUSY_RESPONSE for data, _ in ends), ends[0][0]
            assert [_reset_after(c) for c in clients] == [0] * 40
        finally:
            for client in clients:
                client.close()


def test_a_request_that_arrives_after_the_refusal_is_dropped_before_the_close(model, monkeypatch):
    """The request reaches the server after the refusal sent the 503 and the FIN but before the
    socket closes (the loop's next pass): the drain just before the close takes it, so the close
    is clean (5 times). Without it the reset followed the 503 and the end of stream."""
    original = limits.GatedConnection.connection_made
    steps: dict[str, threading.Event] = {}

    def refused_then_held(self: tp.Any, transport: tp.Any) -> None:
        original(self, transport)
        if not self.opening:
            steps["refused"].set()
            steps["release"].wait(10)

    with _full_gate(model) as (server, _):
        monkeypatch.setattr(limits.GatedConnection, "connection_made", refused_then_held)
        for _ in range(5):
            steps.update(refused=threading.Event(), release=threading.Event())
            before = _fds_before()
            with socket.create_connection(("127.0.0.1", server.port)) as client:
                try:
                    assert steps["refused"].wait(10)
                    client.sendall(REQUEST)
                    time.sleep(0.02)  # in the server's socket (loopback delivers it at once)
                finally:
                    steps["release"].set()
                data, end = _read_to_end(client)
                assert until(lambda: _fds() == before + 1), (_fds(), before)
                time.sleep(0.05)
                assert (data, end, _reset_after(client)) == (BUSY_RESPONSE, "eof", 0)
        assert server.opening.refused == 5 and server.opening.count == 1


def test_a_client_that_floods_is_closed_at_once_after_at_most_the_drain_limit(model, monkeypatch):
    """A refused client that has sent megabytes (all the kernel would take while the loop was
    held): the server drops DRAIN_LIMIT bytes of them (in one call), no more, and
    closes the socket at once (its file descriptor is gone within a second): the client reads
    the 503 and the end of stream, then the reset that the unread rest makes of the close (as it
    must: reading it all would hold the server). The gate's count is untouched."""
    dropped: list[int] = []

    def counted(sock: tp.Any, limit: int) -> int:
        dropped.append(discard_received(sock, limit))
        return dropped[-1]

    monkeypatch.setattr(limits, "discard_received", counted)
    with _full_gate(model) as (server, loop):
        before = _fds_before()
        flood = None
        try:
            with _loop_held(loop):  # connected while the loop is held: not refused before it floods
                flood = socket.create_connection(("127.0.0.1", server.port))
                flood.setblocking(False)
                sent, chunk = 0, b"x" * 65536
                with contextlib.suppress(BlockingIOError):
                    while sent < 64 << 20:
                        sent += flood.send(chunk)
                released = time.monotonic()
            assert sent > 2 * DRAIN_LIMIT, sent
            assert until(lambda: server.opening.refused == 1 and _fds() == before + 1, 5.0), (_fds(), before)
            assert time.monotonic() - released < 1.0
            assert dropped == [DRAIN_LIMIT], dropped
            flood.setblocking(True)
            data, end = _read_to_end(flood)
            assert (data, end) == (BUSY_RESPONSE, "eof") and _reset_after(flood) != 0  # 503, FIN, reset
            assert server.opening.refused == 1 and server.opening.count == 1
        finally:
            if flood is not None:
                flood.close()


def test_discard_received_takes_what_is_there_up_to_the_limit_and_never_waits():
    """On a non-blocking socket: at most ``limit`` bytes, the rest left for later; what is
    left, then nothing (at once, not waiting); nothing at the end of the stream. A blocking
    socket (it could wait) and no socket are left alone (0)."""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while sent < 1 << 20:
                sent += a.send(b"y" * 4096)
        assert sent > 5000, sent
        b.setblocking(True)  # blocking: not touched (it would wait once it had read all; checked
        seen: list[int] = []  # in a thread, so that waiting fails the test instead of hanging it)
        reader = threading.Thread(target=lambda: seen.append(discard_received(b, 10**9)), daemon=True)
        reader.start()
        reader.join(2.0)
        assert seen == [0]
        b.setblocking(False)
        assert discard_received(b, 1000) == 1000
        assert discard_received(b, 10**9) == sent - 1000
        start = time.monotonic()
        assert discard_received(b, 10**9) == 0 and time.monotonic() - start < 0.5
        a.sendall(b"z" * 10)
        a.shutdown(socket.SHUT_WR)
        assert discard_received(b, 10**9) == 10
        assert discard_received(b, 10**9) == 0  # the end of the stream
    assert discard_received(None, 100) == 0
