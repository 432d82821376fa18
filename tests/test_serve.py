"""``opencodec serve`` over the loopback with Python clients: round trips equal the file
path, batching across clients, load (latency, no drops, refusal past capacity), a stalled
client, malformed and oversize input (each closes only its own connection, with a reason)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import typing as tp

import numpy as np
import pytest
import torch

import websockets  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from websockets.asyncio.client import connect  # noqa: E402

from opencodec.serve.client import ClientResult, run_client  # noqa: E402
from opencodec.serve.server import ServeLimits  # noqa: E402
from opencodec.stream import CodeFrames, PacketParser, StreamReceiver, data_packet  # noqa: E402
from opencodec.stream.format import StreamInfo, header_packet  # noqa: E402
from serve_helpers import client_that_never_reads, raw_client, file_path_audio, file_path_codes, rel_l2, server_thread  # noqa: E402
from stream_models import tiny_stream_model  # noqa: E402

SR = 24000


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_serve", 3)


def _signal(seed: int, seconds: float) -> np.ndarray:
    gen = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = 150 + 100 * seed
    x = 0.3 * np.sin(2 * np.pi * (f * t + 300 * t ** 2)) + 0.05 * gen.standard_normal(t.shape)
    return x[None].astype(np.float32)


def _codes(packets: bytes) -> torch.Tensor:
    parser, receiver = PacketParser(), StreamReceiver()
    events = [e for p in parser.feed(packets) + parser.finish() for e in receiver.handle(p)]
    return torch.cat([e.codes for e in events if isinstance(e, CodeFrames)], dim=-1)


async def _sessions_open(server: tp.Any, count: int, timeout: float = 30.0) -> None:
    """Wait until the engine serves ``count`` sessions (a state to poll, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while len(server.engine.sessions) < count:
        assert time.monotonic() < deadline, f"{len(server.engine.sessions)} of {count} sessions opened"
        await asyncio.sleep(0.01)


def _no_streams_left(server: tp.Any) -> bool:
    """Every stream of every gone client closed in the engine (waits up to 5 s for the tick)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        engine = server.engine
        if not (engine.encoder.streams or engine.decoder.streams or engine.sessions):
            return True
        time.sleep(0.02)
    return False


def _clients(port: int, jobs: list[dict[str, tp.Any]]) -> list[ClientResult]:
    async def main() -> list[ClientResult]:
        uri = f"ws://127.0.0.1:{port}/ws"
        return list(await asyncio.gather(*(run_client(uri, **job) for job in jobs)))
    return asyncio.run(main())


def test_round_trip_equals_compress_exact(model):
    """Exact mode (batch-1 steps): the codes are compress's, bit for bit; decode and relay
    give compress -> decompress's audio up to the streaming decoder's float rounding."""
    audio = _signal(0, 1.3)[:, :31_123]  # a partial last frame
    with server_thread(model, batched=False) as server:
        enc, = _clients(server.port, [dict(data=audio, mode="encode", bandwidth=0.9, chunk=1000)])
        dec, relay = _clients(server.port, [dict(data=enc.packets, mode="decode", chunk=777),
                                            dict(data=audio, mode="relay", bandwidth=0.9, chunk=500)])
    assert (enc.close_code, dec.close_code, relay.close_code) == (1000, 1000, 1000)
    assert enc.ready["num_codebooks"] == 2 and enc.stats[-1]["type"] == "done"
    codes = _codes(enc.packets)
    assert torch.equal(codes, file_path_codes(model, audio, 0.9))
    ref = file_path_audio(model, audio, 0.9)
    assert dec.pcm.shape == relay.pcm.shape == audio.shape
    assert np.array_equal(dec.pcm, relay.pcm)  # one decoder path, whichever way the codes came
    assert rel_l2(relay.pcm, ref) < 1e-5
    kbps = relay.stats[-1]["bitrate_kbps"]
    assert kbps == pytest.approx(8 * len(enc.packets) / (audio.shape[-1] / SR) / 1000)


def test_batched_clients_match_their_file_path(model):
    """Six clients at once, mixed bandwidths, batched: each stream's codes against its own
    file path, and its relayed audio. Which streams share a step depends on when their audio
    arrives, and PyTorch rounds a batch of several streams differently from a batch of one
    (README, "Many streams at once"), so a near-tie can flip a code: measured over 4 runs,
    564, 564, 564 and 562 of 564 frames equal, audio ~1e-7 relative L2 where the codes agree."""
    audios = [_signal(i, 1.0 + 0.1 * i) for i in range(6)]
    bws = [0.9, 1.8] * 3
    with server_thread(model) as server:
        enc = _clients(server.port, [dict(data=a, mode="encode", bandwidth=b, chunk=640, realtime=True)
                                     for a, b in zip(audios, bws)])
        relay = _clients(server.port, [dict(data=a, mode="relay", bandwidth=b, chunk=640, realtime=True)
                                       for a, b in zip(audios, bws)])
    frames = equal = 0
    errs = []
    for a, b, e, r in zip(audios, bws, enc, relay):
        assert e.close_code == r.close_code == 1000
        codes, ref = _codes(e.packets), file_path_codes(model, a, b)
        assert codes.shape == ref.shape
        frames += ref.shape[-1]
        equal += int((codes == ref).all(dim=0).sum())
        errs.append(rel_l2(r.pcm, file_path_audio(model, a, b)))
    print(f"batched: {equal} of {frames} code frames equal to the file path; audio relative L2 "
          f"{', '.join(f'{e:.1e}' for e in errs)}")
    assert equal >= 0.99 * frames
    assert sorted(errs)[len(errs) // 2] < 1e-5 and max(errs) < 0.3  # a flipped code: a few % at most


def test_load_latency_no_drops_and_refusal_past_capacity(model):
    """8 real-time relay clients for 3 s (the limit) and a 9th refused: every sample comes
    back, the 9th is told the server is full. Latency p50/p99 printed (not asserted: this
    machine is shared; benchmarks/serve_load.py measures it)."""
    audios = [_signal(i, 3.0) for i in range(8)]
    with server_thread(model, limits=ServeLimits(max_clients=8)) as server:
        async def main() -> list[ClientResult]:
            uri = f"ws://127.0.0.1:{server.port}/ws"
            live = [asyncio.create_task(run_client(uri, a, chunk=320, realtime=True)) for a in audios]
            await _sessions_open(server, 8)
            extra = await run_client(uri, audios[0], chunk=320)
            return [extra] + list(await asyncio.gather(*live))
        extra, *results = asyncio.run(main())
        refused = server.refused
    assert extra.close_code == 1013 and "server full (8 clients)" in extra.close_reason and refused == 1
    latencies = np.concatenate([r.latencies for r in results])
    for a, r in zip(audios, results):
        assert r.close_code == 1000 and r.pcm.shape == a.shape  # nothing dropped
        assert len(r.latencies) == a.shape[-1] // 320
    print(f"8 clients x 3 s: frame latency p50 {1000 * np.median(latencies):.1f} ms, "
          f"p99 {1000 * np.percentile(latencies, 99):.1f} ms, dropped 0")


def test_stalled_client_is_cut_off_and_others_go_on(model):
    """A client that stops reading is disconnected (1008) once its send queue is full, while
    the real-time clients beside it finish, complete and correct: it never reads again, so
    had the server waited for it, they could not have finished."""
    audios = [_signal(i, 1.5) for i in range(3)]
    big = _signal(9, 12.0)  # 1.15 MB of PCM back: far more than the buffers on the way hold
    limits = ServeLimits(send_queue=8, max_backlog_seconds=30.0, socket_send_buffer=16 << 10)
    with server_thread(model, limits=limits) as server:
        stalled = client_that_never_reads(server.port, big)
        try:
            others = _clients(server.port, [dict(data=a, chunk=320, realtime=True) for a in audios])
            deadline = time.monotonic() + 20
            while server.closed_early[1008] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.closed_early == {1008: 1}
            assert _no_streams_left(server)  # the stalled client's streams were closed
        finally:
            stalled.close()
    for a, r in zip(audios, others):
        assert r.close_code == 1000 and r.pcm.shape == a.shape
        assert rel_l2(r.pcm, file_path_audio(model, a, 1.8)) < 1e-5


_raw = raw_client  # one raw client for the serve tests (serve_helpers)


def _header_of_version(version: int) -> bytes:
    """A stream header with a correct CRC but another format version."""
    import zlib

    raw = bytearray(header_packet(StreamInfo("tiny_serve", SR, 1, 2, 6, 320, 4), 0)[:-4])
    raw[11] = version
    return bytes(raw) + zlib.crc32(raw).to_bytes(4, "big")


@pytest.fixture(scope="module")
def strict_server(model):
    """A server with 1 MiB messages and a 0.5 s idle timeout, shared by the bad-input tests."""
    with server_thread(model, limits=ServeLimits(max_message_bytes=1 << 20, idle_timeout=0.5)) as server:
        yield server


BAD_CLOSE_WAIT = 10.0  # seconds a bad client waits for its close (the idle timeout is 0.5 s)


@pytest.mark.parametrize("messages, code, reason", [
    ([b"\x00\x01"], 1007, "the first message must be JSON text"),
    (["{not json"], 1007, "not valid JSON"),
    ([json.dumps({"mode": "shout"})], 1007, "mode must be one of encode, decode, relay"),
    ([json.dumps({"mode": "relay", "bandwidth": 7})], 1007, "does not support 7 kbps; choose one of: 0.9, 1.8"),
    ([json.dumps({"mode": "relay"}), b"\x00" * 6], 1007, "whole samples of float32"),
    ([json.dumps({"mode": "relay"}), np.full(320, np.nan, "<f4").tobytes()], 1007, "NaN"),
    ([json.dumps({"mode": "relay"}), '{"type": "pause"}'], 1007, 'text messages after the hello are'),
    ([json.dumps({"mode": "encode"}), '{"type": "bandwidth", "bandwidth": 0.9}'], 1007, "relay mode only"),
    ([json.dumps({"mode": "relay"}), '{"type": "bandwidth", "bandwidth": 3}'], 1007, "does not support 3 kbps"),
    ([json.dumps({"mode": "decode"}), b"junk, not packets" * 8, '{"type": "end"}'], 1007,
     "damaged packet data at byte 0"),
    ([json.dumps({"mode": "decode"}), _header_of_version(9)], 1007, "format version 9 is not supported"),
    ([json.dumps({"mode": "relay"}), np.zeros(300_000, "<f4").tobytes()], 1009, "exceeds limit of 1048576 bytes"),
    ([json.dumps({"mode": "relay"})], 1008, "idle: no message for 0.5 s"),
])
def test_bad_input_closes_only_that_connection(strict_server, messages, code, reason):
    audio = _signal(1, 0.8)

    async def main() -> tuple[ClientResult, tuple[int | None, str]]:
        uri = f"ws://127.0.0.1:{strict_server.port}/ws"
        good = asyncio.create_task(run_client(uri, audio, chunk=320, realtime=True))
        await _sessions_open(strict_server, 1)
        try:  # the server closes each of these within ~0.5 s; never wait for pytest's timeout
            bad = await asyncio.wait_for(_raw(uri, messages), BAD_CLOSE_WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"the server did not close the connection within {BAD_CLOSE_WAIT:g} s "
                                 f"(expected {code}: {reason!r})") from None
        return await good, bad
    good, (bad_code, bad_reason) = asyncio.run(main())
    assert _no_streams_left(strict_server)
    assert bad_code == code and reason in bad_reason, (bad_code, bad_reason)
    assert good.close_code == 1000 and good.pcm.shape == audio.shape


def test_decode_mode_refuses_a_gap_and_another_model(model):
    """Decode mode takes one loss-free stream of this model: a missing packet or a header
    for another model closes with the reason."""
    audio = _signal(2, 0.5)
    with server_thread(model) as server:
        enc, = _clients(server.port, [dict(data=audio, mode="encode", bandwidth=1.8)])
        info = StreamInfo.from_model(model, 4)
        wrong = StreamInfo("other_model", SR, 1, 4, 6, 320, 4)
        codes = torch.zeros(4, 4, dtype=torch.long)
        gap = header_packet(info, 0) + data_packet(info, 0, codes) + data_packet(info, 2, codes)
        hello = json.dumps({"mode": "decode"})
        uri = f"ws://127.0.0.1:{server.port}/ws"
        gap_close = asyncio.run(_raw(uri, [hello, gap]))
        wrong_close = asyncio.run(_raw(uri, [hello, header_packet(wrong, 0)]))
    assert enc.close_code == 1000
    assert gap_close[0] == 1007 and "loss-free" in gap_close[1] and "missing" in gap_close[1]
    assert wrong_close[0] == 1007 and "other_model" in wrong_close[1]


def test_static_page_and_info(model):
    import urllib.request

    with server_thread(model) as server:
        base = f"http://127.0.0.1:{server.port}"
        page = urllib.request.urlopen(base + "/").read().decode()
        info = json.loads(urllib.request.urlopen(base + "/info.json").read())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nothing")
    assert "app.js" in page and "bandwidth" in page
    assert info["bandwidths"] == [0.9, 1.8] and info["sample_rate"] == SR and info["hop_length"] == 320
    assert missing.value.code == 404


def test_no_per_message_compression(model):
    """A client offering permessage-deflate (websockets' default) gets none: PCM and code
    packets hardly compress, and deflating every message cost the server CPU."""
    async def handshake() -> tuple[str | None, str | None]:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            assert ws.request is not None and ws.response is not None
            return (ws.request.headers.get("Sec-WebSocket-Extensions"),
                    ws.response.headers.get("Sec-WebSocket-Extensions"))

    with server_thread(model) as server:
        offered, accepted = asyncio.run(handshake())
    assert offered is not None and "permessage-deflate" in offered
    assert accepted is None


def test_cli_serve_starts_and_serves(tmp_path):
    """``opencodec serve --port 0`` (the bundled model) announces its address and serves the
    page info; bad limits are a usage error."""
    import os
    import re
    import subprocess
    import sys
    import urllib.request

    env = dict(os.environ, OMP_NUM_THREADS="1")
    bad = subprocess.run([sys.executable, "-m", "opencodec", "serve", "--max-clients", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "argument --max-clients: must be at least 1, got 0" in bad.stderr
    bad_bw = subprocess.run([sys.executable, "-m", "opencodec", "serve", "-b", "5"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert bad_bw.returncode == 2 and "does not support 5 kbps" in bad_bw.stderr  # a usage error, as for compress
    not_causal = subprocess.run([sys.executable, "-m", "opencodec", "serve", "-m", "encodec_48khz"],
                                capture_output=True, text=True, env=env, timeout=60)
    # said before any weights are looked for (they are not here)
    assert not_causal.returncode == 1 and "cannot be streamed: it is not causal" in not_causal.stderr
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", "-b", "6"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/info.json").read())
    finally:
        proc.terminate()
        proc.wait(10)
    assert info["model"].startswith("opencodec_24khz") and info["bandwidths"] == [1.5, 3.0, 6.0]


def test_engine_failure_closes_with_1011_and_recovers(model):
    """A step that raises ends the live sessions with 1011 and the reason; the engine starts
    over, and the next client is served normally."""
    audio = _signal(4, 0.5)
    with server_thread(model) as server:
        def boom(frames):
            raise RuntimeError("boom")
        server.engine.encoder.push = boom
        failed, = _clients(server.port, [dict(data=audio, mode="relay", chunk=3200)])
        after, = _clients(server.port, [dict(data=audio, mode="relay", chunk=3200)])
    assert failed.close_code == 1011 and failed.close_reason == "server error: RuntimeError: boom"
    assert after.close_code == 1000 and after.pcm.shape == audio.shape


def test_max_bandwidth_caps_what_clients_may_ask(model):
    """``max_bandwidth``: the shared encoder runs at it, a client asking for more is refused
    (1007), one at it gets the file path's codes."""
    audio = _signal(5, 0.5)
    with server_thread(model, batched=False, max_bandwidth=0.9) as server:
        ok, over = _clients(server.port, [dict(data=audio, mode="encode", bandwidth=0.9),
                                          dict(data=audio, mode="encode", bandwidth=1.8)])
    assert ok.close_code == 1000 and torch.equal(_codes(ok.packets), file_path_codes(model, audio, 0.9))
    assert over.close_code == 1007 and "choose one of: 0.9 kbps" in over.close_reason


@pytest.mark.parametrize("samples", [0, 1, 319, 2000, 2240, 2300])
def test_short_streams_round_trip(model, samples):
    """Streams around the frame size and the 7-frame warm-up (2240 samples), empty included:
    relay and encode -> decode give the same audio, of the input's length, the file path's
    within 1e-6."""
    audio = (0.2 * np.random.default_rng(samples).standard_normal((1, samples))).astype(np.float32)
    with server_thread(model, batched=False) as server:
        relay, enc = _clients(server.port, [dict(data=audio, mode="relay", bandwidth=1.8, chunk=300),
                                            dict(data=audio, mode="encode", bandwidth=1.8, chunk=300)])
        dec, = _clients(server.port, [dict(data=enc.packets, mode="decode", chunk=50)])
    assert relay.close_code == enc.close_code == dec.close_code == 1000
    assert relay.pcm.shape == dec.pcm.shape == audio.shape and np.array_equal(relay.pcm, dec.pcm)
    if samples:
        assert rel_l2(relay.pcm, file_path_audio(model, audio, 1.8)) < 1e-6


def test_relay_bandwidth_switch_on_the_fly(model):
    """Relay: {"type": "bandwidth"} mid-stream, sent before the chunk at frame 30 (the client
    sends faster than real time, so the server reads it long before it encodes that frame):
    the audio is the decoder's output of the file path's codes cut to 4 codebooks before
    frame 30 and 2 from it, bit for bit (exact mode), and the packet bytes are exactly two
    packet streams split there."""
    from opencodec.multistream import MultiStreamDecoder
    from opencodec.stream import PacketWriter

    audio = _signal(6, 1.0)
    n = audio.shape[-1]
    with server_thread(model, batched=False) as server:
        relay, = _clients(server.port, [dict(data=audio, mode="relay", bandwidth=1.8, chunk=320,
                                             controls={9600: {"type": "bandwidth", "bandwidth": 0.9}})])
    assert relay.close_code == 1000 and relay.pcm.shape == audio.shape
    done = relay.stats[-1]
    assert done["type"] == "done" and done["num_codebooks"] == 2 and done["bandwidth"] == pytest.approx(0.9)
    codes = file_path_codes(model, audio, 1.8)
    frames = codes.shape[-1]

    def decoded(f: int) -> np.ndarray:
        dec = MultiStreamDecoder(model, batched=False)
        sid = dec.open()
        out = [dec.push({sid: codes[:4 if t < f else 2, t:t + 1]})[sid] for t in range(frames)]
        return torch.cat(out + [dec.close(sid)], dim=-1)[:, :n].numpy()

    f = 9600 // 320  # the frame where the client sent the message, whenever the server read it
    assert np.array_equal(decoded(f), relay.pcm)
    # neither as soon as the server read it (after the warm-up) nor never
    assert not np.array_equal(decoded(7), relay.pcm) and not np.array_equal(decoded(frames), relay.pcm)
    first, second = PacketWriter(StreamInfo.from_model(model, 4)), PacketWriter(StreamInfo.from_model(model, 2))
    size = len(first.push(codes[:4, :f]) + first.finish(f * 320))
    size += len(second.push(codes[:2, f:]) + second.finish(n - f * 320))
    assert done["packet_bytes"] == size
    print(f"switched at code frame {f} of {frames}")


def test_engine_catches_up_with_several_frames_per_step(model):
    """A stream with many frames waiting is advanced several frames per step (a server that
    fell behind catches up at a lower cost per frame): 20 waiting frames of 3 relay streams
    take 3 steps in one tick, not 20+, and give the audio of one frame per step (within the
    batched rounding)."""
    from opencodec.serve.engine import Engine
    from opencodec.serve.session import Session
    from opencodec.serve.protocol import Hello

    audio = [torch.from_numpy(_signal(i, 20 * 320 / SR)) for i in range(3)]

    def run(max_frames: int) -> tuple[list[np.ndarray], int]:
        engine = Engine(model, max_frames=max_frames, max_steps=64)
        got: list[list[np.ndarray]] = [[] for _ in audio]
        for i, a in enumerate(audio):
            s = Session(Hello("relay", 1.8), model.num_codebooks(1.8), deliver=lambda o: None)
            engine.add(s)
            s.frames.extend(a[:, j * 320:(j + 1) * 320] for j in range(20))
        outputs = engine._tick()
        for s, out in outputs:
            got[engine.sessions.index(s)].extend(out.pcm)
        return [np.concatenate(g, axis=-1) for g in got], len(engine.step_seconds)

    several, steps = run(max_frames=8)
    one, steps_one = run(max_frames=1)
    assert steps == 3 and steps_one >= 20  # one frame per step: 20 encoder steps at least
    for a, b in zip(several, one):
        assert a.shape == b.shape == (1, 20 * 320)  # every frame decoded within the tick
        assert rel_l2(a, b) < 1e-5


def _relay_sessions(model, engine, count: int, bandwidths: tuple[float, ...] = (1.8,)) -> list:
    """``count`` relay sessions added to ``engine``, session i at ``bandwidths[i % len]``."""
    from opencodec.serve.session import Session
    from opencodec.serve.protocol import Hello

    chosen = [bandwidths[i % len(bandwidths)] for i in range(count)]
    sessions = [Session(Hello("relay", bw), model.num_codebooks(bw), deliver=lambda o: None)
                for bw in chosen]
    for s in sessions:
        engine.add(s)
    return sessions


def _recording_pushes(engine, part: str = "encoder") -> list[list[int]]:
    """Wrap the engine's encoder (frame counts per stream) or decoder (codebooks per stream):
    each push is recorded as that list, sorted."""
    pushes: list[list[int]] = []
    target = getattr(engine, part)
    push = target.push

    def recorded(items):
        pushes.append(sorted(f.shape[-1] // 320 if part == "encoder" else f.shape[0] for f in items.values()))
        return push(items)
    target.push = recorded
    return pushes


def test_engine_steps_take_as_many_frames_from_every_stream(model):
    """Streams with 1, 3 and 3 frames waiting: one step of all three (1 frame each), then one
    of the two with more (2 each); never a step per distinct count."""
    from opencodec.serve.engine import Engine

    engine = Engine(model, max_steps=64)
    sessions = _relay_sessions(model, engine, 3)
    pushes = _recording_pushes(engine)
    audio = torch.from_numpy(_signal(0, 3 * 320 / SR))
    for s, n in zip(sessions, (1, 3, 3)):
        s.frames.extend(audio[:, j * 320:(j + 1) * 320].numpy() for j in range(n))
    engine._tick()
    assert pushes == [[1, 1, 1], [2, 2]]
    assert [s.samples_in for s in sessions] == [320, 960, 960] and not any(s.frames for s in sessions)


def test_engine_leaves_a_few_streams_extra_frames_for_the_next_tick(model):
    """After a tick's first step, the frames left to fewer than half of the streams wait for
    the next tick (a step for a few streams costs nearly what one for all costs)."""
    from opencodec.serve.engine import Engine

    engine = Engine(model, max_steps=64)
    sessions = _relay_sessions(model, engine, 4)
    pushes = _recording_pushes(engine)
    frame = _signal(3, 320 / SR)
    for s, n in zip(sessions, (1, 1, 1, 2)):
        s.frames.extend(frame.copy() for _ in range(n))
    engine._tick()
    assert pushes == [[1, 1, 1, 1]] and len(sessions[3].frames) == 1
    for s in sessions[:3]:
        s.frames.append(frame.copy())
    engine._tick()
    assert pushes == [[1, 1, 1, 1], [1, 1, 1, 1]] and not any(s.frames for s in sessions)


def test_engine_tick_leaves_input_that_arrives_during_it(model):
    """Frames that arrive while a tick runs wait for the next tick (which gathers every stream's
    next frame), instead of a second small step in the same tick."""
    from opencodec.serve.engine import Engine

    engine = Engine(model, max_steps=64)
    sessions = _relay_sessions(model, engine, 2)
    pushes = _recording_pushes(engine)
    frame = _signal(1, 320 / SR)
    push = engine.encoder.push

    def arriving(frames):  # the loop adds a frame to the first stream during the step
        sessions[0].frames.append(frame.copy())
        return push(frames)
    engine.encoder.push = arriving
    for s in sessions:
        s.frames.append(frame.copy())
    engine._tick()
    assert pushes == [[1, 1]]  # one step: the frame that arrived during it was left
    assert len(sessions[0].frames) == 1 and not sessions[1].frames
    engine.encoder.push = push
    sessions[1].frames.append(frame.copy())
    engine._tick()
    assert pushes == [[1, 1], [1, 1]]


def test_engine_gathers_streams_within_the_batch_window(model):
    """Frames of three streams arriving one after another are served by one step of all
    three; a stream that stops sending delays the others until the window has passed (not for
    ever), and one that has not sent anything yet not at all. Robust to a slow machine: the
    window is 10 s where the frames must all arrive within it (the 3 ms gaps may stretch a
    thousandfold under load), and where the window must expire the frames that must share a
    step arrive without yielding to the loop; the only timing bound asserted is the window's
    own lower bound (load only lengthens the wait) and "well before 10 s"."""
    from opencodec.serve.engine import Engine

    async def scenario(window: float, senders: int, streams: int, started: bool = True,
                       gap: float | None = 0.003) -> tuple[list[list[int]], float]:
        engine = Engine(model, batch_window=window)
        sessions = _relay_sessions(model, engine, streams)
        for s in sessions:
            s.samples_received = 320 * started  # as the server's reader counts input
        pushes = _recording_pushes(engine)
        runner = asyncio.create_task(engine.run())
        try:
            await asyncio.sleep(0)  # the engine waits for its first wake-up
            first = time.monotonic()
            for s in sessions[:senders]:
                s.frames.append(_signal(2, 320 / SR))
                engine.notify()
                if gap is not None:  # None: the next frame arrives before the engine can run
                    await asyncio.sleep(gap)
            while not pushes and time.monotonic() < first + 5:
                await asyncio.sleep(0.001)
            return pushes, time.monotonic() - first
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    # all three arrive within the (10 s) window: one step, served once the last arrived
    # (had the engine waited for the whole window, the scenario would give up after 5 s)
    pushes, waited = asyncio.run(scenario(10.0, 3, 3))
    assert pushes == [[1, 1, 1]] and waited < 5
    # the third stream stopped sending: the two are served together once the window passed
    pushes, waited = asyncio.run(scenario(0.05, 2, 3, gap=None))
    assert pushes == [[1, 1]] and waited >= 0.05
    # neither had sent before: served at once; had the engine waited for the 30 s window,
    # the scenario would have given up (after 5 s) with no push at all
    pushes, _ = asyncio.run(scenario(30.0, 1, 2, started=False))
    assert pushes == [[1]]
    # no window: the first frame is served alone, before the others (which have sent before
    # and would be waited for with any window) arrive; they arrive only after the first push
    pushes, _ = asyncio.run(scenario(0.0, 1, 3))
    assert pushes == [[1]]
    assert Engine(model, batch_window=0.0).batch_window == 0.0
    assert Engine(model).batch_window == model.hop_length / model.sample_rate
    for bad in (-0.001, float("nan")):
        with pytest.raises(ValueError, match="batch_window"):
            Engine(model, batch_window=bad)


def test_engine_decodes_every_bandwidth_in_one_step():
    """Fast mode: relay streams at 0.9 and 1.8 kbps are decoded in one decoder step per step
    (codes padded), where exact mode needs one step per bandwidth."""
    from opencodec.serve.engine import Engine

    fast = tiny_stream_model("tiny_serve_fast", 3)
    counts = {}
    for exact in (False, True):
        fast.exact = exact
        engine = Engine(fast, max_steps=64)
        sessions = _relay_sessions(fast, engine, 2, bandwidths=(0.9, 1.8))
        pushes = _recording_pushes(engine, "decoder")
        for t in range(10):
            for i, s in enumerate(sessions):
                s.frames.append(_signal(i, 320 / SR))
            engine._tick()
        assert pushes and all(len(p) == (1 if exact else 2) for p in pushes), pushes
        assert all(s.samples_out > 0 for s in sessions)
        counts[exact] = len(pushes)
    assert counts[True] == 2 * counts[False]  # exact: a decoder step per bandwidth
