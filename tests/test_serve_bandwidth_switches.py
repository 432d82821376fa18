"""``opencodec serve`` bandwidth switches and parsing: thousands of changes keep one per frame,
too many waiting close with 1008, ``request_switch`` rules, and decode messages parsed a slice at a
time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import numpy as np
import pytest
import torch
import typing as tp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import opencodec.serve.server as server_module
from opencodec.serve.client import run_client
from opencodec.serve.protocol import Hello, pcm_from_bytes, pcm_to_bytes
from opencodec.serve.server import PARSE_SLICE, ServeLimits
from opencodec.serve.session import Session
from opencodec.stream import PacketParser, PacketWriter
from opencodec.stream.format import StreamInfo

from serve_helpers import chirp, hold_ticks_until_input_ends, MaxDeque, record_sessions, server_thread
from stream_models import tiny_stream_model


SR, HOP = 24000, 320


WAIT = 60.0  # generous: a busy 2-core machine; no assertion depends on how fast anything runs


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_review_fixes", 5)


def _recording_switches(session: tp.Any) -> None:
    """A ``switches`` queue that remembers how many changes ever waited."""
    session.switches = MaxDeque()


def _changes(count: int, last: float) -> list[str]:
    """``count`` bandwidth messages alternating 0.9 and 1.8 kbps, the last one ``last``."""
    other = 1.8 if last == 0.9 else 0.9
    return [json.dumps({"type": "bandwidth", "bandwidth": last if (count - 1 - i) % 2 == 0 else other})
            for i in range(count)]


async def _relay(uri: str, messages: list[tp.Any]) -> tuple[np.ndarray, dict, int | None]:
    """Relay at 1.8 kbps: send ``messages`` then the end; (PCM, the done message, close code)."""
    pieces, texts = [], []
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
        assert json.loads(await ws.recv())["type"] == "ready"

        async def read() -> None:
            async for msg in ws:
                (texts if isinstance(msg, str) else pieces).append(msg)
        reader = asyncio.create_task(read())
        for m in messages:
            await ws.send(m)
        await ws.send(json.dumps({"type": "end"}))
        await reader
        pcm = np.concatenate([pcm_from_bytes(p, 1) for p in pieces], axis=-1)
        return pcm, json.loads(texts[-1]), ws.close_code


def test_thousands_of_bandwidth_messages_between_frames_keep_one_change_per_frame(model):
    """Relay at 1.8 kbps; before frames 30, 50 and 70, 2000 alternating 0.9/1.8 kbps
    changes each (the last: 0.9, 1.8, 1.8), all read before any frame is
    encoded: the changes waiting are those two, (K 2 from 30) and (K 4 from 50) (the third
    group changes nothing), never more than 3 waited (was 6000), and the audio and packet
    bytes are those of a client that sent only 0.9 at frame 30 and 1.8 at 50, bit for bit."""
    audio = chirp(1.0, seed=3)
    cuts = (9600, 16000, 22400)  # frames 30, 50, 70
    spam = {9600: _changes(2000, 0.9), 16000: _changes(2000, 1.8), 22400: _changes(2000, 1.8)}
    clean = {9600: _changes(1, 0.9), 16000: _changes(1, 1.8)}

    def messages(changes: dict[int, list[str]]) -> list[tp.Any]:
        out: list[tp.Any] = []
        for start, end in zip((0,) + cuts, cuts + (audio.shape[-1],)):
            out += changes.get(start, []) + [pcm_to_bytes(audio[:, start:end])]
        return out

    limits = ServeLimits(max_backlog_seconds=10.0)  # the whole input is read before any tick
    results, pending = [], []
    for changes in (spam, clean):
        with server_thread(model, batched=False, limits=limits) as server:
            sessions = record_sessions(server, _recording_switches)
            hold_ticks_until_input_ends(server, lambda session: pending.append(list(session.switches)), wait=WAIT)
            results.append(asyncio.run(_relay(f"ws://127.0.0.1:{server.port}/ws", messages(changes))))
            results[-1] += (sessions[0].switches.most,)
    (pcm, done, code, most), (clean_pcm, clean_done, clean_code, _) = results
    assert code == clean_code == 1000 and pcm.shape == audio.shape
    assert pending == [[(2, 30), (4, 50)], [(2, 30), (4, 50)]]
    assert most == 3  # (2, 70) waited until 1.8 replaced it; was 6000: every message queued
    assert np.array_equal(pcm, clean_pcm)
    assert done["packet_bytes"] == clean_done["packet_bytes"]


async def _changes_at_distinct_frames(uri: str, count: int) -> tuple[int | None, str, int]:
    """Relay: ``count`` times one frame of audio then a change (alternating 0.9 and 1.8
    kbps), at once; (close code, reason, messages sent before the close was seen)."""
    audio = chirp(count * HOP / SR, seed=4)
    sent = 0
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
        assert json.loads(await ws.recv())["type"] == "ready"
        with contextlib.suppress(ConnectionClosed):
            for i in range(count):
                await ws.send(pcm_to_bytes(audio[:, i * HOP:(i + 1) * HOP]))
                await ws.send(json.dumps({"type": "bandwidth", "bandwidth": 0.9 if i % 2 == 0 else 1.8}))
                sent += 1
            async for _ in ws:
                pass
        return ws.close_code, ws.close_reason, sent


def test_more_bandwidth_changes_waiting_than_the_cap_close_with_1008(model):
    """The engine held: 100 frames each followed by a change (each at its own frame, each a
    real change) wait; the 65th over the cap of 64 closes the client with 1008 and the
    reason, with 64 waiting, and the server serves the next client as usual."""
    gate = threading.Event()
    limits = ServeLimits(max_backlog_seconds=10.0)  # 750 frames: the audio never blocks reading
    assert limits.max_pending_changes == 64
    with server_thread(model, batched=False, limits=limits) as server:
        tick = server.engine._tick

        def held_tick() -> tp.Any:
            assert gate.wait(WAIT), "the test never released the engine"
            return tick()
        server.engine._tick = held_tick
        sessions = record_sessions(server, _recording_switches)
        uri = f"ws://127.0.0.1:{server.port}/ws"
        try:
            code, reason, sent = asyncio.run(_changes_at_distinct_frames(uri, 100))
        finally:
            gate.set()
        assert code == 1008 and reason == "too many bandwidth changes waiting (over 64, at most one per frame)"
        assert sessions[0].switches.most == 64 and sent >= 64  # the 65th was sent (maybe still draining)
        audio = chirp(0.5, seed=5)
        after = asyncio.run(run_client(uri, audio, bandwidth=1.8, chunk=3200, ))
    assert after.close_code == 1000 and after.pcm.shape == audio.shape
    assert server.closed_early[1008] == 1


def test_request_switch_replaces_drops_and_caps():
    """The rules, on a session alone: K 4 in effect; a change at the frame of the last one
    waiting replaces it, one to the K in effect there is dropped, and none past the limit."""
    session = Session(Hello("relay", 1.8), 4, lambda output: None)
    assert session.request_switch(4, 3, limit=2) and list(session.switches) == []  # no change
    assert session.request_switch(2, 3, limit=2) and list(session.switches) == [(2, 3)]
    assert session.request_switch(1, 3, limit=2) and list(session.switches) == [(1, 3)]  # replaced
    assert session.request_switch(4, 3, limit=2) and list(session.switches) == []  # back: nothing left
    assert session.request_switch(2, 5, limit=2) and session.request_switch(2, 6, limit=2)
    assert list(session.switches) == [(2, 5)]  # K 2 is already in effect at frame 6
    assert session.request_switch(4, 6, limit=2) and list(session.switches) == [(2, 5), (4, 6)]
    assert not session.request_switch(2, 7, limit=2) and list(session.switches) == [(2, 5), (4, 6)]
    assert session.request_switch(2, 6, limit=2) and list(session.switches) == [(2, 5)]  # at the cap, a replacement


class _RecordingParser(PacketParser):
    """A parser that remembers the most bytes fed and packets returned by one call."""

    calls: list[tuple[int, int]] = []

    def feed(self, data: tp.Any) -> list[tp.Any]:
        packets = super().feed(data)
        _RecordingParser.calls.append((len(data), len(packets)))
        return packets


def test_a_decode_message_is_parsed_a_slice_at_a_time(model, monkeypatch):
    """Decode mode, 3000 one-frame packets (40 s) in one message: the server parses it
    PARSE_SLICE bytes at a time (was: all 3000 packets at once, ~10x the message in packet
    objects), and the audio is that of the same stream sent in 4 KB messages, bit for bit."""
    info = StreamInfo.from_model(model, 4, 1)
    frames = 3000
    codes = torch.from_numpy(np.random.default_rng(2).integers(0, 64, (4, frames)))
    writer = PacketWriter(info)
    stream = writer.push(codes) + writer.finish(frames * HOP - 7)
    assert len(stream) > 3 * PARSE_SLICE
    monkeypatch.setattr(server_module, "PacketParser", _RecordingParser)
    _RecordingParser.calls = []
    limits = ServeLimits(max_backlog_seconds=0.1)
    with server_thread(model, batched=False, limits=limits) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"

        async def one_message() -> tuple[np.ndarray, int | None]:
            pieces = []
            async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
                await ws.send(json.dumps({"mode": "decode"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                await ws.send(stream)
                await ws.send(json.dumps({"type": "end"}))
                async for msg in ws:
                    if isinstance(msg, bytes):
                        pieces.append(pcm_from_bytes(msg, 1))
                return np.concatenate(pieces, axis=-1), ws.close_code
        pcm, code = asyncio.run(one_message())
        calls = list(_RecordingParser.calls)
        paced = asyncio.run(run_client(uri, stream, mode="decode", chunk=4096))
    assert code == 1000 and pcm.shape == (1, frames * HOP - 7)
    assert paced.close_code == 1000 and np.array_equal(pcm, paced.pcm)
    assert sum(n for _, n in calls) == len(PacketParser().feed(stream))  # every packet, once
    assert max(size for size, _ in calls) == PARSE_SLICE
    one = PacketWriter(info)
    one.push(codes[:, :1])
    packet = len(one.push(codes[:, 1:2]))  # a one-frame data packet's bytes
    assert max(n for _, n in calls) <= PARSE_SLICE // packet + 1 < frames // 3
