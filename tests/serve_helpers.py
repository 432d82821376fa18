"""A ``CodecServer`` on the loopback in a background thread (its own asyncio loop), for the
serve tests, and the ``decode(encode(x))`` reference of the file path."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time
import typing as tp

import numpy as np
import torch

from opencodec import EncodecModel
from opencodec.compress import compress, decompress


@contextlib.contextmanager
def server_thread(model: EncodecModel, **kwargs: tp.Any) -> tp.Iterator[tp.Any]:
    """Serve ``model`` (``CodecServer(model, **kwargs)``) on 127.0.0.1; yields the server
    (``.port``), stops it on exit."""
    from opencodec.serve.server import CodecServer

    server = CodecServer(model, **kwargs)
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Future | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = loop.create_future()
        async with server.running("127.0.0.1", 0):
            started.set()
            await stop

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))  # type: ignore[union-attr]
        thread.join(30)
        loop.close()


def chirp(seconds: float, rate: int = 24000, seed: int = 0) -> np.ndarray:
    """[1, n] float32: a 0.3-amplitude chirp from 200 Hz (+500 Hz per second) plus seeded
    N(0, 0.05^2) noise, n = int(seconds * rate)."""
    gen = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 * t + 250 * t ** 2)) + 0.05 * gen.standard_normal(t.shape)
    return x[None].astype(np.float32)


class MaxDeque(collections.deque):
    """A deque that remembers the most items it ever held (``most``)."""

    most = 0

    def append(self, item: tp.Any) -> None:
        super().append(item)
        self.most = max(self.most, len(self))

    def extend(self, items: tp.Iterable[tp.Any]) -> None:
        super().extend(items)
        self.most = max(self.most, len(self))


def record_sessions(server: tp.Any, prepare: tp.Callable[[tp.Any], None]) -> list[tp.Any]:
    """Call ``prepare(session)`` on every session the server's engine gets (e.g. to give it
    recording queues) before it is added; returns the list of those sessions, in order."""
    sessions: list[tp.Any] = []
    add = server.engine.add

    def recording_add(session: tp.Any) -> None:
        prepare(session)
        sessions.append(session)
        add(session)
    server.engine.add = recording_add
    return sessions


def hold_ticks_until_input_ends(server: tp.Any, on_release: tp.Callable[[tp.Any], None] | None = None,
                                wait: float = 60.0) -> None:
    """The engine's worker waits until a session's whole input (its end included) has been
    read, so every message reaches the server before any frame is encoded (a burst);
    ``on_release(session)`` then sees that session as the input left it. Fails after ``wait``
    seconds (generous: no assertion depends on how fast anything runs)."""
    engine, tick = server.engine, server.engine._tick
    released = threading.Event()  # once the input has ended, ticks run as usual

    def held_tick() -> tp.Any:
        deadline = time.monotonic() + wait
        while not released.is_set():
            ending = [s for s in (*engine._joining, *engine.sessions) if s.ending]
            if ending:
                if on_release is not None:
                    on_release(ending[0])
                released.set()
            assert time.monotonic() < deadline, "the input never ended"
            time.sleep(0.005)
        return tick()
    engine._tick = held_tick


def file_path_codes(model: EncodecModel, audio: np.ndarray, bandwidth: float) -> torch.Tensor:
    """The codes [K, T] ``compress`` writes for ``audio`` [C, n] (``model.encode``)."""
    model.set_target_bandwidth(bandwidth)
    with torch.inference_mode():
        return model.encode(torch.from_numpy(audio)[None])[0].codes[0]


def file_path_audio(model: EncodecModel, audio: np.ndarray, bandwidth: float) -> np.ndarray:
    """``decompress(compress(audio))`` [C, n] at ``bandwidth``."""
    wav, _ = decompress(compress(model, torch.from_numpy(audio), bandwidth=bandwidth), model=model)
    return wav.numpy()


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


async def raw_client(uri: str, messages: list[tp.Any], max_size: int | None = None) -> tuple[int | None, str]:
    """Send ``messages`` (the hello first), read until the server closes: (code, reason)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(uri, max_size=max_size) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


def client_that_never_reads(port: int, audio: np.ndarray, end: bool = False) -> socket.socket:
    """A relay client that does the WebSocket handshake, sends the hello and ``audio`` [1, n]
    (and, with ``end``, the end message) and then never reads again (a receive buffer of 4 KiB,
    set before connecting: the kernel can hold little for it). Returns its socket (close it)."""
    import base64
    import json
    import os

    from websockets.frames import Frame, Opcode

    def frame(opcode: Opcode, data: bytes) -> bytes:
        return Frame(opcode, data).serialize(mask=True, extensions=[])

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(frame(Opcode.TEXT, json.dumps({"mode": "relay"}).encode()))
    for pos in range(0, audio.shape[-1], 24000):
        sock.sendall(frame(Opcode.BINARY, audio[0, pos:pos + 24000].astype("<f4").tobytes()))
    if end:
        sock.sendall(frame(Opcode.TEXT, json.dumps({"type": "end"}).encode()))
    return sock


def until(condition: tp.Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_all(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """What the server sends ``sock`` until it closes it (fails if it does not within ``seconds``)."""
    sock.settimeout(seconds)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
