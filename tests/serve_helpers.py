"""A ``CodecServer`` on the loopback in a background thread (its own asyncio loop), for the
serve tests, and the ``decode(encode(x))`` reference of the file path."""

from __future__ import annotations

import asyncio
import contextlib
import threading
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
