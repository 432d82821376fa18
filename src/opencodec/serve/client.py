"""A Python client for ``opencodec serve`` (the tests and ``benchmarks/serve_load.py`` use it).

    result = asyncio.run(run_client("ws://127.0.0.1:8765/ws", audio, mode="relay", bandwidth=6))
    result.pcm            # [C, n] float32, decoded (decode and relay modes)
    result.packets        # bytes in the packet stream format (encode mode)
    result.latencies      # seconds from sending a chunk's last sample to hearing it (relay)
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import typing as tp
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .protocol import pcm_from_bytes, pcm_to_bytes


@dataclass
class ClientResult:
    """What a client got back: ``ready`` (the server's first message), ``pcm`` [C, n],
    ``packets``, ``stats`` (the stats/done messages), ``latencies`` (s, relay mode: one per
    chunk sent), ``close_code``/``close_reason``."""

    ready: dict[str, tp.Any] = field(default_factory=dict)
    pcm: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.float32))
    packets: bytes = b""
    stats: list[dict[str, tp.Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


async def run_client(uri: str, data: np.ndarray | bytes, *, mode: str = "relay",
                     bandwidth: float | None = None, chunk: int = 320, realtime: bool = False,
                     stall: float = 0.0, max_size: int | None = 1 << 24, max_queue: int = 16,
                     controls: dict[int, dict[str, tp.Any]] | None = None,
                     **connect_args: tp.Any) -> ClientResult:
    """Stream ``data`` (PCM [C, n] float32 for encode/relay, packet bytes for decode) in pieces
    of ``chunk`` samples (or bytes), paced at the model's rate when ``realtime``; then
    ``{"type": "end"}``; collect everything until the server closes. ``stall`` > 0: read
    nothing for that many seconds after the hello (a stalled client). ``controls``: JSON
    messages to send before the chunk at that position (e.g. ``{12000: {"type":
    "bandwidth", "bandwidth": 3}}``; positions are multiples of ``chunk``). ``connect_args`` go to
    ``websockets.asyncio.client.connect`` (e.g. ``sock``). ``ValueError`` for a control that
    would never be sent (before connecting) and for PCM whose channels are not the server's
    (once its ready message says them)."""
    total = data.shape[-1] if isinstance(data, np.ndarray) else len(data)
    never = sorted(pos for pos in controls or {} if pos not in range(0, total, chunk))
    if never:
        raise ValueError(f"controls at position(s) {', '.join(map(str, never))}: positions are multiples "
                         f"of chunk ({chunk}) below the data's length ({total})")
    hello: dict[str, tp.Any] = {"mode": mode}
    if bandwidth is not None:
        hello["bandwidth"] = bandwidth
    result = ClientResult()
    pieces: list[np.ndarray] = []
    sent_at: list[tuple[int, float]] = []  # (end sample, time sent), increasing
    async with connect(uri, max_size=max_size, max_queue=max_queue, open_timeout=10, **connect_args) as ws:
        try:
            await ws.send(json.dumps(hello))
            first = await ws.recv()
        except ConnectionClosed:
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
            return result
        if isinstance(first, str) and json.loads(first).get("type") == "ready":
            result.ready = json.loads(first)
        rate = int(result.ready.get("sample_rate", 24000))
        channels = int(result.ready.get("channels", 1))
        if isinstance(data, np.ndarray) and (data.ndim != 2 or data.shape[0] != channels):
            raise ValueError(f"PCM data must be [{channels}, n] (the server's model takes {channels} "
                             f"channel(s)), got shape {list(data.shape)}")

        async def send() -> None:
            start = time.monotonic()
            for pos in range(0, total, chunk):
                if realtime:
                    await asyncio.sleep(max(0.0, start + pos / rate - time.monotonic()))
                if controls and pos in controls:
                    await ws.send(json.dumps(controls[pos]))
                if isinstance(data, np.ndarray):
                    piece = data[:, pos:pos + chunk]
                    sent_at.append((pos + piece.shape[-1], time.monotonic()))
                    await ws.send(pcm_to_bytes(piece))
                else:
                    await ws.send(data[pos:pos + chunk])
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send()) if result.ready else None
        if stall:
            await asyncio.sleep(stall)
        received = 0
        try:
            async for msg in ws:
                now = time.monotonic()
                if isinstance(msg, str):
                    result.stats.append(json.loads(msg))
                elif mode == "encode":
                    result.packets += msg
                else:
                    piece = pcm_from_bytes(msg, channels)
                    pieces.append(piece)
                    before, received = received, received + piece.shape[-1]
                    i = bisect.bisect_right(sent_at, (before, float("inf")))
                    while i < len(sent_at) and sent_at[i][0] <= received:
                        result.latencies.append(now - sent_at[i][1])
                        i += 1
        except ConnectionClosed:
            pass
        if sender is not None:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass
        if ws.close_code is None:
            await ws.wait_closed()
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
    if pieces:
        result.pcm = np.concatenate(pieces, axis=-1)
    return result
