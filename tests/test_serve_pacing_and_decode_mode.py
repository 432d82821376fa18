"""``opencodec serve`` pacing and decode mode, and the streaming API's argument checks: streams ahead
of real time are paced while another is live, late streams catch up, a flooding client is served at
real time; decode mode's ready/done messages and bytes without a packet; model, push and
``frames_per_call`` types; a codebook change in the exact decoder's warm-up; ports in use; and the
``stream-*`` commands' help and closed pipes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from opencodec import save_model
from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.serve.engine import Engine
from opencodec.serve.pacing import CATCH_UP
from opencodec.serve.protocol import Hello, pcm_from_bytes, pcm_to_bytes
from opencodec.serve.server import run_server, ServeLimits
from opencodec.serve.session import Session
from opencodec.stream import PacketWriter
from opencodec.stream.format import StreamInfo
from opencodec.streaming import StreamingDecoder, StreamingEncoder

from serve_helpers import chirp, file_path_codes, raw_client, server_thread
from stream_models import tiny_stream_model


SR, HOP = 24000, 320


WAIT = 60.0  # generous: a busy 2-core machine


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_checker_fixes", 7)


# -- 1. pacing ------------------------------------------------------------------------------
class _Clock:
    """A clock the test moves (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _relay(model, engine: Engine, audio: np.ndarray, frames: int) -> tuple[Session, list[np.ndarray]]:
    """A relay session at 1.8 kbps with the first ``frames`` frames of ``audio`` waiting."""
    pcm: list[np.ndarray] = []
    session = Session(Hello("relay", 1.8), model.num_codebooks(1.8), deliver=lambda o: None)
    engine.add(session)
    session.frames.extend(audio[:, j * HOP:(j + 1) * HOP] for j in range(frames))
    return session, pcm


def _tick(engine: Engine, outputs: dict[int, list[np.ndarray]]) -> None:
    for s, out in engine._tick():
        outputs.setdefault(id(s), []).extend(out.pcm)


def test_a_stream_ahead_of_real_time_is_paced_while_another_is_live(model):
    """Bank 0.2 s (15 frames at 75 frames/s): a flooder with 60 frames waiting takes 8 (one
    tick's most), then 7 (the rest of its bank), then nothing until the clock gives it credit,
    then one frame per frame period; the other stream takes its frame in every tick. Held
    without credit, the flooder is not "work" (no busy loop of empty ticks): the loop is told
    when it earns its next frame."""
    clock = _Clock()
    flood_audio, other_audio = chirp(60 * HOP / SR, seed=1), chirp(60 * HOP / SR, seed=2)
    engine = Engine(model, max_frames=8, pace_seconds=0.2, clock=clock)
    flood, _ = _relay(model, engine, flood_audio, 60)
    other, _ = _relay(model, engine, other_audio, 0)
    outputs: dict[int, list[np.ndarray]] = {}
    taken = []
    for tick in range(6):
        other.frames.append(other_audio[:, tick * HOP:(tick + 1) * HOP])
        before = len(flood.frames)
        _tick(engine, outputs)
        taken.append(before - len(flood.frames))
        assert not other.frames
    assert taken == [8, 7, 0, 0, 0, 0]
    assert id(flood) in engine.pacer.held and not engine._has_work(flood) and engine._has_work(other) is False
    assert engine.pacer.credit_in == pytest.approx(1 / (75 * CATCH_UP))
    for _ in range(3):  # one frame period: one frame
        clock.now += 1 / 75
        before = len(flood.frames)
        _tick(engine, outputs)
        assert before - len(flood.frames) == 1
    clock.now += 1.0  # a second later the bank is full (15 frames, not 75): a tick gives 8, then 7
    counts = []
    for _ in range(3):
        before = len(flood.frames)
        _tick(engine, outputs)
        counts.append(before - len(flood.frames))
    assert counts == [8, 7, 0]


def test_a_late_real_time_stream_catches_up_beside_another(model):
    """Bank 0.2 s (15 frames): a real-time stream whose audio was held up 40 frames (a stall
    longer than its bank) while another stream is live, then gets one frame per frame period:
    it takes its bank at once, then earns 1.25 frames a period, so its backlog drains (earning
    exactly real time, 25 frames would wait for good)."""
    clock = _Clock()
    late_audio, other_audio = chirp(300 * HOP / SR, seed=1), chirp(300 * HOP / SR, seed=2)
    engine = Engine(model, max_frames=8, pace_seconds=0.2, clock=clock)
    late, _ = _relay(model, engine, late_audio, 40)
    other, _ = _relay(model, engine, other_audio, 0)
    outputs: dict[int, list[np.ndarray]] = {}
    backlog = []
    for tick in range(200):
        late.frames.append(late_audio[:, (40 + tick) * HOP:(41 + tick) * HOP])
        other.frames.append(other_audio[:, tick * HOP:(tick + 1) * HOP])
        _tick(engine, outputs)
        backlog.append(len(late.frames))
        clock.now += 1 / 75
    assert backlog[2] >= 20  # paced: the stall is not taken at once beyond the bank
    assert max(backlog[150:]) <= 1  # and yet it caught up
    assert not other.frames


def test_a_lone_stream_left_with_input_is_never_held(model):
    """One tick takes at most max_frames x max_steps frames; a lone stream left with input
    and spent credit is still work (no wait for credit: it is not paced)."""
    clock = _Clock()
    engine = Engine(model, max_frames=8, max_steps=1, pace_seconds=0.2, clock=clock)
    lone, _ = _relay(model, engine, chirp(60 * HOP / SR), 60)
    for _ in range(4):
        engine._tick()
    assert len(lone.frames) == 60 - 4 * 8 and lone.credit < 1
    assert not engine.pacer.held and engine.pacer.credit_in is None and engine._has_work(lone)


def test_pacing_changes_when_frames_are_taken_not_the_audio(model):
    """Exact engine (one frame per step and per tick), bank 0.1 s: a flooder paced beside a
    real-time stream, then alone; its audio equals its audio alone, bit for bit."""
    clock = _Clock()
    flood_audio, other_audio = chirp(40 * HOP / SR, seed=1), chirp(40 * HOP / SR, seed=2)
    engine = Engine(model, batched=False, pace_seconds=0.1, clock=clock)
    flood, _ = _relay(model, engine, flood_audio, 40)
    other, _ = _relay(model, engine, other_audio, 0)
    outputs: dict[int, list[np.ndarray]] = {}
    for tick in range(20):  # both take a frame per tick (unbatched: at most one per tick)
        other.frames.append(other_audio[:, tick * HOP:(tick + 1) * HOP])
        _tick(engine, outputs)
        clock.now += 1 / 75
    assert len(flood.frames) == 20
    other.ending = flood.ending = True
    for _ in range(60):
        _tick(engine, outputs)
        clock.now += 1 / 75
    assert flood.finished and other.finished
    paced = np.concatenate(outputs[id(flood)], axis=-1)
    alone = Engine(model, batched=False)
    solo, _ = _relay(model, alone, flood_audio, 40)
    solo.ending = True
    solo_out: dict[int, list[np.ndarray]] = {}
    for _ in range(60):
        _tick(alone, solo_out)
    reference = np.concatenate(solo_out[id(solo)], axis=-1)
    assert paced.shape == reference.shape == (1, 40 * HOP)
    assert np.array_equal(paced, reference)


def test_a_lone_stream_is_not_paced_and_bad_pacing_is_refused(model):
    clock = _Clock()
    engine = Engine(model, max_frames=8, max_steps=64, pace_seconds=0.2, clock=clock)
    flood, _ = _relay(model, engine, chirp(40 * HOP / SR), 40)
    engine._tick()
    assert not flood.frames and flood.credit == 0.0 and not engine.pacer.held
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="pace_seconds must be a finite number of seconds > 0"):
            Engine(model, pace_seconds=bad)


async def _flood_beside_idle(uri: str, audio: np.ndarray, idle_for: float) -> tuple[float, np.ndarray, int | None]:
    """An idle relay client connects; a second one sends ``audio`` at once and reads; the idle
    one leaves after ``idle_for`` seconds. Returns (seconds of audio the flooder had received
    when the idle one left, the flooder's whole output, its close code)."""
    async with connect(uri, open_timeout=WAIT) as idle:
        await idle.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
        assert json.loads(await idle.recv())["type"] == "ready"
        async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
            assert json.loads(await ws.recv())["type"] == "ready"
            pieces: list[bytes] = []

            async def read() -> None:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        pieces.append(msg)
            reader = asyncio.create_task(read())
            for i in range(0, audio.shape[-1], 4800):
                await ws.send(pcm_to_bytes(audio[:, i:i + 4800]))
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.sleep(idle_for)
            got = sum(len(p) for p in pieces) / 4 / SR
            await idle.close()
            await asyncio.wait_for(reader, WAIT)
            return got, pcm_from_bytes(b"".join(pieces), 1), ws.close_code


def test_a_flooding_client_is_served_at_real_time_while_another_is_connected(model):
    """Exact mode, bank 0.25 s: a client sending 3 s at once beside a connected one has at most
    (time connected + 0.25 s) of audio back after 0.6 s (without pacing the tiny model serves
    all of it at once); once alone it gets the rest, bit for bit its output alone."""
    audio = chirp(3.0, seed=4)
    limits = ServeLimits(max_backlog_seconds=0.25)
    with server_thread(model, batched=False, limits=limits) as server:
        started = time.monotonic()
        got, pcm, code = asyncio.run(_flood_beside_idle(f"ws://127.0.0.1:{server.port}/ws", audio, 0.6))
        elapsed = time.monotonic() - started
    with server_thread(model, batched=False, limits=limits) as server:
        _, alone, alone_code = asyncio.run(_flood_beside_idle_alone(f"ws://127.0.0.1:{server.port}/ws", audio))
    assert code == alone_code == 1000 and pcm.shape == alone.shape == audio.shape
    assert np.array_equal(pcm, alone)
    # real time since the session began (< elapsed) plus the bank
    assert got <= elapsed + 0.25 + 2 * HOP / SR, (got, elapsed)
    assert got < 2.5


async def _flood_beside_idle_alone(uri: str, audio: np.ndarray) -> tuple[float, np.ndarray, int | None]:
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
        await ws.recv()
        for i in range(0, audio.shape[-1], 4800):
            await ws.send(pcm_to_bytes(audio[:, i:i + 4800]))
        await ws.send(json.dumps({"type": "end"}))
        pieces = [m async for m in ws if isinstance(m, bytes)]
        return 0.0, pcm_from_bytes(b"".join(pieces), 1), ws.close_code


# -- 2. and 6. decode mode --------------------------------------------------------------------
def _packets(model, audio: np.ndarray, bandwidth: float) -> bytes:
    codes = file_path_codes(model, audio, bandwidth)
    writer = PacketWriter(StreamInfo.from_model(model, codes.shape[0]))
    return writer.push(codes) + writer.finish(audio.shape[-1])


async def _decode(uri: str, hello: dict, data: bytes) -> tuple[dict, list[dict], np.ndarray, int | None]:
    texts, pieces = [], []
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps(hello))
        ready = json.loads(await ws.recv())
        await ws.send(data)
        await ws.send(json.dumps({"type": "end"}))
        async for msg in ws:
            (texts if isinstance(msg, str) else pieces).append(msg)
        return ready, [json.loads(t) for t in texts], pcm_from_bytes(b"".join(pieces), 1), ws.close_code


def test_decode_mode_ready_and_done_tell_the_truth(model):
    """A decode hello asking 0.9 kbps (K 2) for a stream of K 4 (1.8 kbps): ready claims no
    bandwidth and no codebook count (the stream header decides); done says K 4 and 1.8 kbps,
    the stream's packet bytes and its bit rate."""
    audio = chirp(0.5, seed=5)
    data = _packets(model, audio, 1.8)
    with server_thread(model) as server:
        ready, texts, pcm, code = asyncio.run(_decode(f"ws://127.0.0.1:{server.port}/ws",
                                                     {"mode": "decode", "bandwidth": 0.9}, data))
    assert code == 1000 and pcm.shape == audio.shape
    assert ready["bandwidth"] is None and ready["num_codebooks"] is None
    assert ready["codebooks_from"] == "the stream header"
    done = texts[-1]
    assert done["type"] == "done" and done["num_codebooks"] == 4 and done["bandwidth"] == 1.8
    assert done["packet_bytes"] == len(data) and done["samples_in"] == audio.shape[-1]
    assert done["bitrate_kbps"] == pytest.approx(8 * len(data) / 0.5 / 1000)


def test_decode_mode_closes_on_bytes_without_a_packet_at_once(model):
    """1024 bytes without a sync word and no end message: 1007 in well under the idle timeout."""
    limits = ServeLimits(idle_timeout=30.0)

    async def run(uri: str) -> tuple[int | None, str, float]:
        async with connect(uri, open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"mode": "decode"}))
            await ws.recv()
            started = time.monotonic()
            await ws.send(bytes(range(256)) * 4)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason, time.monotonic() - started

    with server_thread(model, limits=limits) as server:
        code, reason, seconds = asyncio.run(run(f"ws://127.0.0.1:{server.port}/ws"))
    assert code == 1007 and seconds < 5
    assert reason.startswith("damaged packet data: 1024 bytes without a whole packet"), reason


def test_a_good_stream_in_small_messages_is_not_mistaken_for_garbage(model):
    """The same bound never closes a good stream, however it is cut (messages of 7 bytes)."""
    audio = chirp(0.4, seed=6)
    data = _packets(model, audio, 1.8)

    async def run(uri: str) -> tuple[int | None, int]:
        async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"mode": "decode"}))
            await ws.recv()
            for i in range(0, len(data), 7):
                await ws.send(data[i:i + 7])
            await ws.send(json.dumps({"type": "end"}))
            got = sum(len(m) for m in [m async for m in ws] if isinstance(m, bytes))
            return ws.close_code, got // 4

    with server_thread(model) as server:
        assert asyncio.run(run(f"ws://127.0.0.1:{server.port}/ws")) == (1000, audio.shape[-1])


def test_garbage_then_end_still_closes_with_1007(model):
    with server_thread(model) as server:
        code, reason = asyncio.run(raw_client(f"ws://127.0.0.1:{server.port}/ws",
                                              [json.dumps({"mode": "decode"}), b"x" * 100, '{"type": "end"}']))
    assert code == 1007 and "bytes without a sync word" in reason


# -- 3., 4. and 5. the Python API --------------------------------------------------------------
@pytest.mark.parametrize("make, name", [
    (lambda: StreamingEncoder("opencodec_24khz"), "StreamingEncoder: model must be an EncodecModel, got str 'opencodec_24khz'"),
    (lambda: StreamingDecoder(None), "StreamingDecoder: model must be an EncodecModel, got NoneType"),
    (lambda: MultiStreamEncoder("opencodec_24khz"), "MultiStreamEncoder: model must be an EncodecModel, got str"),
    (lambda: MultiStreamDecoder(Path("m.safetensors")), "MultiStreamDecoder: model must be an EncodecModel, got PosixPath"),
])
def test_a_name_or_none_for_the_model_is_a_type_error(make, name):
    with pytest.raises(TypeError) as failed:
        make()
    assert str(failed.value).startswith(name) and "load_model(NAME_OR_PATH)" in str(failed.value)


def test_a_push_that_is_not_a_dict_is_a_short_type_error(model):
    encoder, decoder = MultiStreamEncoder(model), MultiStreamDecoder(model)
    sid = encoder.open()
    frame = torch.zeros(1, HOP)
    for bad, expected in (([frame], "push takes a dict {stream id: frames [1, n * 320]}, got a list"),
                          ({frame: frame}, "stream ids are the ints open() returns, got a torch.Tensor"),
                          ({"0": frame}, "stream ids are the ints open() returns, got a str")):
        with pytest.raises(TypeError) as failed:
            encoder.push(bad)
        assert str(failed.value) == expected and "tensor(" not in str(failed.value)
    with pytest.raises(TypeError, match=r"push takes a dict \{stream id: code frames \[K, n\]\}, got a tuple"):
        decoder.push((torch.zeros(4, 1, dtype=torch.long),))
    assert encoder.push({np.int64(sid): torch.zeros(1, HOP)})[sid].shape[0] == 4  # numpy ints are ids


@pytest.mark.parametrize("bad, error, text", [
    (0, ValueError, "got 0"), (-1, ValueError, "got -1"), (2.5, TypeError, "got float 2.5"),
    (True, TypeError, "got bool True"), ("4", TypeError, "got str '4'")])
def test_frames_per_call_must_be_a_positive_int(model, bad, error, text):
    with pytest.raises(error, match="frames_per_call must be a positive int") as failed:
        StreamingEncoder(model, exact=False, frames_per_call=bad)
    assert str(failed.value).endswith(text)
    assert StreamingEncoder(model, exact=False, frames_per_call=5).push(torch.zeros(1, 1, 8000)).shape[-1] == 25
    assert StreamingEncoder(model, exact=False, frames_per_call=np.int64(5)).push(  # a numpy int is an int
        torch.zeros(1, 1, 8000)).shape[-1] == 25


def test_exact_single_stream_decoder_takes_a_codebook_change_in_its_warm_up_as_offline(model):
    """3 frames of K 4 then 4 of K 2 (inside the 7-frame warm-up): the audio equals the offline
    decoder on those frames' embeddings (each frame's codebooks summed), to float rounding; the
    exact multistream decoder refuses the change instead (its warm-up is one tensor)."""
    gen = torch.Generator().manual_seed(0)
    high = torch.randint(0, model.bins, (1, 4, 3), generator=gen)
    low = torch.randint(0, model.bins, (1, 2, 4), generator=gen)
    decoder = StreamingDecoder(model, exact=True)
    audio = torch.cat([decoder.push(high), decoder.push(low), decoder.flush()], dim=-1)
    with torch.inference_mode():
        offline = model.decoder(torch.cat([model.quantizer.decode(high), model.quantizer.decode(low)], dim=-1))
    assert audio.shape == offline.shape == (1, 1, 7 * HOP)
    assert float((audio - offline).abs().max()) < 1e-6 * max(1.0, float(offline.abs().max()))
    multi = MultiStreamDecoder(model, batched=False, exact=True)
    sid = multi.open()
    multi.push({sid: high[0]})
    with pytest.raises(ValueError, match="in exact mode a stream keeps one K for its first 7 frames"):
        multi.push({sid: low[0]})


# -- 8. and 9. the commands --------------------------------------------------------------------
def test_a_port_in_use_is_named_like_a_bad_host(model):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError) as failed:
            run_server(model, host="127.0.0.1", port=port, ready=lambda text: None)
    finally:
        taken.close()
    assert str(failed.value) == f"cannot listen on host '127.0.0.1' (port {port}): address already in use"


def test_stream_encode_help_gives_the_header_every_range(capsys):
    from opencodec import cli

    assert cli.main(["stream-encode", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "repeat the stream header every N data packets, 1-255 (default" in text


def test_stream_decode_into_a_closed_pipe_exits_quietly_with_141(model, tmp_path):
    weights = save_model(model, tmp_path / "tiny.safetensors")
    stream = tmp_path / "s.ocs"
    stream.write_bytes(_packets(model, chirp(3.0, seed=8), 1.8))  # 144000 bytes of raw PCM out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCODEC_OFFLINE": "1",
           "OPENCODEC_CACHE": str(tmp_path / "cache")}
    with open(stream, "rb") as fin:
        proc = subprocess.Popen([sys.executable, "-m", "opencodec.cli", "stream-decode", "-q", "--raw",
                                 "-m", str(weights)], stdin=fin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(100)) == 100
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 141
    assert err == b""
