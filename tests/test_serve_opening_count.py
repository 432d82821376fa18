"""``opencodec serve``: the count of connections still opening returns to zero however they end,
also when the server stops, and the server stops at once with sockets that never sent a request."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import pytest
import typing as tp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from opencodec.serve.server import ServeLimits

from serve_helpers import read_all, server_thread, until
from stream_models import tiny_stream_model


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_gate_leak", 7)


def _http(port: int, request: bytes) -> bytes:
    """Send ``request`` raw, return all the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return read_all(sock)


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _reset(port: int, payload: bytes = b"") -> None:
    """Connect, send ``payload``, then close with a TCP reset (SO_LINGER 0)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload:
        sock.sendall(payload)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _session(port: int, hello: tp.Any, then: str = "end") -> str:
    """Open /ws, send ``hello`` and: "end" (send end, read to the close), "drop" (return at
    once: the client closes). Returns "LAST closed CODE" (the last message type, the close
    code the server sent) or "dropped"."""
    last = ""
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, close_timeout=2) as ws:
            await ws.send(hello if isinstance(hello, str) else json.dumps(hello))
            if then == "drop":
                return "dropped"
            while True:
                msg = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(msg, str):
                    last = json.loads(msg)["type"]
                    if last == "ready":
                        await ws.send(json.dumps({"type": "end"}))
    except ConnectionClosed as exc:
        return f"{last} closed {exc.rcvd.code if exc.rcvd else None}"


async def _refused_code(port: int) -> int | None:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None


def _kinds(port: int) -> dict[str, tp.Callable[[], object]]:
    """One connection of each kind that is never admitted or that ends its session, by name:
    the call opens it, makes it end (the client's side) and checks what it was answered."""
    def closed_at_once() -> None:
        socket.create_connection(("127.0.0.1", port)).close()

    def half_request(close: tp.Callable[[socket.socket], None]) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        close(sock)

    def answered(request: bytes, status: bytes) -> tp.Callable[[], None]:
        return lambda: _check((r := _http(port, request)).startswith(status), (request, r))

    return {
        "closed before a byte": closed_at_once,
        "reset before a byte": lambda: _reset(port),
        "half a request, reset": lambda: _reset(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n"),
        "half a request, closed": lambda: half_request(lambda s: s.close()),
        "the page": answered(_get("/"), b"HTTP/1.1 200"),
        "info.json": answered(_get("/info.json"), b"HTTP/1.1 200"),
        "a 404": answered(_get("/nope"), b"HTTP/1.1 404"),
        "/ws without an upgrade": answered(_get("/ws"), b"HTTP/1.1 4"),
        "bytes that are not HTTP": answered(b"NOT HTTP AT ALL\r\n\r\n", b""),
        "a TLS hello, closed": lambda: _reset(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64)),
        "a session to its end": lambda: _check(asyncio.run(_session(port, {"mode": "relay"})) == "done closed 1000"),
        "a bad hello": lambda: _check(asyncio.run(_session(port, "{not json")) == " closed 1007"),
        "a session dropped": lambda: _check(asyncio.run(_session(port, {"mode": "relay"}, then="drop")) == "dropped"),
    }


def _count_accepts(gate: tp.Any) -> list[int]:
    """[connections the gate has seen so far], kept up to date (it wraps ``gate.enter``)."""
    seen = [0]
    enter = gate.enter

    def counted() -> bool:
        seen[0] += 1
        return enter()

    gate.enter = counted
    return seen


def _check(condition: bool, what: object = None) -> None:
    assert condition, what


def test_the_opening_count_returns_to_zero_whatever_way_connections_end(model):
    """Every kind of connection, ten times each, with a gate of 4: a socket closed or reset
    before or during its request; the page, ``/info.json``, a 404; a handshake refused 400 or
    bytes that are no HTTP; sessions ended normally, by a bad hello or dropped by the client;
    clients refused past max_clients (1013); sessions whose handler raises. After each one
    nothing counts as opening (within the close timeout), nothing was refused 503, and a
    client is served at the end: the count cannot creep up until everyone is refused."""
    limits = ServeLimits(max_clients=1, max_opening=4)
    rounds = 10
    with server_thread(model, limits=limits) as server:
        port, accepted = server.port, _count_accepts(server.opening)
        for _ in range(rounds):
            for name, make in _kinds(port).items():
                before = accepted[0]
                make()  # counted once accepted (the server's loop may take it a moment later)
                assert until(lambda: accepted[0] > before and server.opening.count == 0, 5.0), \
                    (name, accepted[0] - before, server.opening.count)
                assert server.clients == 0 or until(lambda: server.clients == 0, 5.0), name
        assert server.opening.refused == 0

        async def held_and_refused() -> list[int | None]:  # one client holds the only slot
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
                await ws.send(json.dumps({"mode": "relay"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                return [await _refused_code(port) for _ in range(rounds)]

        assert asyncio.run(held_and_refused()) == [1013] * rounds
        assert server.refused == rounds
        assert until(lambda: server.opening.count == 0 and server.clients == 0), server.opening.count

        async def raises(ws: tp.Any) -> None:
            raise RuntimeError("a bug in a session")

        server._converse = raises  # type: ignore[method-assign]
        for _ in range(rounds):
            ended = asyncio.run(_session(port, {"mode": "relay"}))
            assert ended == " closed 1011", ended
        assert until(lambda: server.opening.count == 0 and server.clients == 0), server.opening.count
        del server._converse
        assert asyncio.run(_session(port, {"mode": "relay"})) == "done closed 1000"
        assert server.opening.refused == 0
    assert server.opening.count == 0 and server.clients == 0


def _raw_client(port: int, expect: bytes = b'"ready"') -> socket.socket:
    """A relay client by hand: the handshake, then the hello; returns its socket once the
    server sent ``expect`` (default: ready; a refused client gets a close frame, which this
    client never answers). Close it when done."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    sock.sendall(Frame(Opcode.TEXT, json.dumps({"mode": "relay"}).encode()).serialize(mask=True, extensions=[]))
    data = b""
    while expect not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    return sock


def test_the_opening_count_is_zero_once_the_server_stopped_with_connections_open(model):
    """The server stops while a client is in a session and one more is being refused past
    max_clients (it never answers the close frame): both are closed and neither is still
    counted, as client or as opening."""
    limits = ServeLimits(max_clients=1, max_opening=8)
    socks: list[socket.socket] = []
    try:
        with server_thread(model, limits=limits) as server:
            socks.append(_raw_client(server.port))
            socks.append(_raw_client(server.port, b"server full"))  # 1013, left unanswered
            assert (server.opening.count, server.clients, server.refused) == (1, 1, 1)
        assert server.opening.count == 0 and server.clients == 0
    finally:
        for sock in socks:
            sock.close()


def test_the_server_stops_at_once_with_sockets_that_never_sent_their_request(model):
    """Stopping (Ctrl-C, SIGTERM, the end of ``running``) with an idle socket and one that
    sent half a request open: they are cut off (nothing of theirs was being served), so the
    server stops within a second or two, not after websockets' 10 s ``open_timeout`` (which
    ``docker stop`` and systemd, 10 s by default, ended with SIGKILL). A client in a session is
    still closed 1001 as before."""
    socks: list[socket.socket] = []
    try:
        with server_thread(model, limits=ServeLimits(max_clients=2)) as server:
            socks.append(_raw_client(server.port))
            socks.append(socket.create_connection(("127.0.0.1", server.port)))  # sends nothing
            socks.append(socket.create_connection(("127.0.0.1", server.port)))
            socks[-1].sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # half a request
            assert until(lambda: server.opening.count == 2 and server.clients == 1)
            start = time.monotonic()
        took = time.monotonic() - start  # the client never answers the 1001: close_timeout, 2 s
        assert took < 6.0, took
        assert server.opening.count == 0 and server.clients == 0
        for sock in socks[1:]:  # closed by the server, nothing sent
            sock.settimeout(5)
            assert sock.recv(100) == b""
    finally:
        for sock in socks:
            sock.close()
