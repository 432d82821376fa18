"""``opencodec serve`` backlog and bandwidth, and ``stream-encode``/``stream-decode`` inputs: long
messages are held within the backlog, bandwidth changes in a burst apply at their frame, the
server's cap is named, lost packets and close reasons, hosts that do not resolve, float WAV input
beyond full scale, the WAV header's rate range, and a named model checked against the stream header."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import struct
import time
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import typing as tp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from opencodec.errors import AudioIOError, BitstreamError
from opencodec.serve.client import run_client
from opencodec.serve.protocol import close_reason, parse_control, parse_hello, pcm_from_bytes, pcm_to_bytes
from opencodec.serve.server import run_server, ServeLimits
from opencodec.stream import CodeFrames, encode_stream, PacketParser, PacketWriter, PcmStreamReader, StreamReceiver
from opencodec.stream.format import data_packet, header_packet, StreamInfo

from serve_helpers import chirp, hold_ticks_until_input_ends, MaxDeque, record_sessions, server_thread
from stream_models import tiny_stream_model


SR, HOP = 24000, 320


WAIT = 60.0  # generous: a busy 2-core machine; no assertion depends on how fast anything runs


@pytest.fixture(scope="module")
def model():
    return tiny_stream_model("tiny_live_fixes", 5)


def _recording_queues(session: tp.Any) -> None:
    """Input queues that remember how many frames (and code frames) they ever held."""
    session.codes, session.frames = MaxDeque(), MaxDeque()


async def _decode_one_message(uri: str, stream: bytes) -> tuple[np.ndarray, int | None, str]:
    """Decode mode, the whole stream in one binary message: (PCM, close code, reason)."""
    pieces = []
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"mode": "decode"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(stream)
        await ws.send(json.dumps({"type": "end"}))
        with contextlib.suppress(ConnectionClosed):
            async for msg in ws:
                if isinstance(msg, bytes):
                    pieces.append(pcm_from_bytes(msg, 1))
        pcm = np.concatenate(pieces, axis=-1) if pieces else np.zeros((1, 0), np.float32)
        return pcm, ws.close_code, ws.close_reason


# -- 1. decode mode: bounded per client, whatever the message carries ------------------------
def test_decode_message_of_many_seconds_is_held_within_the_backlog(model):
    """One 2 KB message of 8 s of code frames (255 per packet) with a 0.1 s lead (7 frames):
    never more than 7 code frames wait in the server, and the audio is the same as that of
    the stream sent in 40-byte messages (exact mode: one frame per step either way)."""
    info = StreamInfo.from_model(model, 4, 255)
    codes = torch.from_numpy(np.random.default_rng(1).integers(0, 64, (4, 600)))
    writer = PacketWriter(info)
    stream = writer.push(codes) + writer.finish(600 * HOP - 100)
    limits = ServeLimits(max_backlog_seconds=0.1)
    with server_thread(model, batched=False, limits=limits) as server:
        sessions = record_sessions(server, _recording_queues)
        uri = f"ws://127.0.0.1:{server.port}/ws"
        pcm, code, reason = asyncio.run(_decode_one_message(uri, stream))
        paced = asyncio.run(run_client(uri, stream, mode="decode", chunk=40))
    assert (code, reason) == (1000, "stream complete")
    assert len(stream) < 2000 and pcm.shape == (1, 600 * HOP - 100)
    assert sessions[0].codes.most == 7  # max(1, int(0.1 s * 75 frames/s)); was 600
    assert paced.close_code == 1000 and np.array_equal(pcm, paced.pcm)


def test_pcm_message_of_many_seconds_is_held_within_the_backlog(model):
    """Relay, 3 s of PCM in one message with a 0.1 s lead: at most 7 frames wait, and all
    of the audio comes back."""
    audio = chirp(3.0)
    with server_thread(model, batched=False, limits=ServeLimits(max_backlog_seconds=0.1)) as server:
        sessions = record_sessions(server, _recording_queues)
        result = asyncio.run(run_client(f"ws://127.0.0.1:{server.port}/ws", audio, chunk=audio.shape[-1]))
    assert result.close_code == 1000 and result.pcm.shape == audio.shape
    assert sessions[0].frames.most == 7  # was 225


# -- 2. relay: bandwidth changes in a burst ------------------------------------------------
CHANGES = {9600: {"type": "bandwidth", "bandwidth": 0.9}, 16000: {"type": "bandwidth", "bandwidth": 1.8}}


async def _lockstep_relay(uri: str, sessions: list[tp.Any], audio: np.ndarray, chunk: int
                          ) -> tuple[np.ndarray, dict]:
    """Relay, each chunk sent only once the server has encoded every frame before it (so each
    bandwidth change reaches it before the next): (PCM, the done message)."""
    pieces, texts = [], []
    async with connect(uri, max_size=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"mode": "relay", "bandwidth": 1.8}))
        assert json.loads(await ws.recv())["type"] == "ready"

        async def read() -> None:
            async for msg in ws:
                (texts if isinstance(msg, str) else pieces).append(msg)
        reader = asyncio.create_task(read())
        for pos in range(0, audio.shape[-1], chunk):
            deadline = time.monotonic() + WAIT
            while pos and (not sessions or sessions[0].code_frames < pos // HOP):
                assert time.monotonic() < deadline, "the server did not encode the frames sent"
                await asyncio.sleep(0.005)
            if pos in CHANGES:
                await ws.send(json.dumps(CHANGES[pos]))
            await ws.send(pcm_to_bytes(audio[:, pos:pos + chunk]))
        await ws.send(json.dumps({"type": "end"}))
        await reader
    return np.concatenate([pcm_from_bytes(p, 1) for p in pieces], axis=-1), json.loads(texts[-1])


def test_relay_bandwidth_changes_in_a_burst_each_apply_at_their_frame(model):
    """1.8 kbps, 0.9 from frame 30, 1.8 again from frame 50: sent in one burst (the engine
    held until every message is read, so the second change arrives before the first
    applies) or in lockstep, the audio is the same, bit for bit: the decoder's output of the
    server's own codes (encode mode) cut to 4, 2 then 4 codebooks at those frames (exact
    mode); the packet bytes are those of three packet streams split there."""
    from opencodec.multistream import MultiStreamDecoder

    audio = chirp(1.0, seed=3)
    n = audio.shape[-1]
    limits = ServeLimits(max_backlog_seconds=10.0)  # the burst is read whole
    with server_thread(model, batched=False, limits=limits) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        encoded = asyncio.run(run_client(uri, audio, mode="encode", bandwidth=1.8, chunk=3200))
        hold_ticks_until_input_ends(server, wait=WAIT)
        burst = asyncio.run(run_client(uri, audio, bandwidth=1.8, chunk=3200, controls=CHANGES))
    with server_thread(model, batched=False, limits=limits) as server:
        sessions = record_sessions(server, _recording_queues)
        paced, done = asyncio.run(_lockstep_relay(f"ws://127.0.0.1:{server.port}/ws", sessions, audio, 3200))
    codes = _codes(encoded.packets)
    dec = MultiStreamDecoder(model, batched=False)
    sid = dec.open()
    out = [dec.push({sid: codes[:2 if 30 <= t < 50 else 4, t:t + 1]})[sid] for t in range(codes.shape[-1])]
    expected = torch.cat(out + [dec.close(sid)], dim=-1)[:, :n].numpy()
    assert burst.close_code == 1000 and burst.pcm.shape == (1, n)
    assert np.array_equal(burst.pcm, paced) and np.array_equal(paced, expected)
    size = 0
    for k, start, end in ((4, 0, 30), (2, 30, 50), (4, 50, 75)):
        writer = PacketWriter(StreamInfo.from_model(model, k))
        size += len(writer.push(codes[:k, start:end]) + writer.finish((end - start) * HOP))
    assert burst.stats[-1]["packet_bytes"] == done["packet_bytes"] == size


def _codes(packets: bytes) -> torch.Tensor:
    """The code frames [K, T] of a packet stream."""
    parser, receiver = PacketParser(), StreamReceiver()
    events = [e for p in parser.feed(packets) + parser.finish() for e in receiver.handle(p)]
    return torch.cat([e.codes for e in events if isinstance(e, CodeFrames)], dim=-1)


# -- 3. messages -----------------------------------------------------------------------------
def test_a_bandwidth_over_the_servers_cap_names_the_cap_not_the_model():
    """The model has 6 kbps, the server (-b 3) does not: the reason says so; a bandwidth
    the model lacks still says the model does not support it."""
    offered, model_has = [1.5, 3.0], [1.5, 3.0, 6.0, 12.0, 24.0]
    with pytest.raises(Exception) as capped:
        parse_hello('{"mode": "relay", "bandwidth": 6}', offered, "m", model_has)
    assert str(capped.value) == ("6 kbps is more than this server offers (at most 3 kbps, its "
                                 "-b/--max-bandwidth); choose one of: 1.5, 3 kbps")
    with pytest.raises(Exception) as switch:
        parse_control('{"type": "bandwidth", "bandwidth": 12}', offered, "m", model_has)
    assert str(switch.value).startswith("12 kbps is more than this server offers (at most 3 kbps")
    with pytest.raises(Exception) as unknown:
        parse_hello('{"mode": "relay", "bandwidth": 5}', offered, "m", model_has)
    assert str(unknown.value) == "model m does not support 5 kbps; choose one of: 1.5, 3 kbps"


def test_a_lost_packet_closes_with_a_short_reason(model):
    """Decode mode, data packet 1 missing: a reason that says what was lost, without the
    command line's "replaced by silence" (nothing is), whole (no cut)."""
    info = StreamInfo.from_model(model, 4)
    frames = torch.zeros(4, 4, dtype=torch.long)
    gap = header_packet(info, 0) + data_packet(info, 0, frames) + data_packet(info, 2, frames)
    with server_thread(model) as server:
        pcm, code, reason = asyncio.run(_decode_one_message(f"ws://127.0.0.1:{server.port}/ws", gap))
    assert code == 1007
    assert reason == "decode mode takes one loss-free stream: data packet(s) 1-1 lost (4 frame(s) missing)"


def test_close_reasons_are_cut_between_words():
    text = "decode mode takes one loss-free stream: " + "supercalifragilistic words " * 8
    reason = close_reason(text)
    assert len(reason.encode()) <= 120 and reason.endswith("supercalifragilistic...")
    assert text.startswith(reason[:-3]) and close_reason("short") == "short"


def test_a_host_that_does_not_resolve_is_named(model, monkeypatch):
    """``serve --host 256.1.1.1``: the error names the host (name resolution faked: no DNS)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        if host == "256.1.1.1":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(OSError) as failed:
        run_server(model, host="256.1.1.1", port=0, ready=lambda text: None)
    assert str(failed.value) == "cannot listen on host '256.1.1.1' (port 0): Name or service not known"


# -- 4. stream-encode input, stream-decode -m ------------------------------------------------
def _wav(audio: np.ndarray, subtype: str, rate: int = SR) -> bytes:
    out = io.BytesIO()
    sf.write(out, audio.T, rate, subtype=subtype, format="WAV")
    return out.getvalue()


def test_stream_encode_warns_on_float_input_beyond_full_scale(model):
    loud = chirp(0.5) / np.float32(0.3) * np.float32(1.28)  # peak 1.28 in the first block
    peak = float(np.abs(loud[:, :4096]).max())
    with pytest.warns(UserWarning) as caught:
        encode_stream(model, io.BytesIO(_wav(loud, "FLOAT")), io.BytesIO(), name="loud.wav", read_bytes=16384)
    texts = [str(w.message) for w in caught if "full scale" in str(w.message)]
    assert texts == [f"loud.wav: input peak amplitude {peak:.4f} exceeds full scale 1.0; the codec "
                     "expects audio within [-1, 1] and distorts louder input: scale it down first"]
    assert peak > 1.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within full scale: nothing said
        encode_stream(model, io.BytesIO(_wav(loud / 2, "FLOAT")), io.BytesIO(), name="ok.wav")


@pytest.mark.parametrize("rate, ok", [(1, False), (999, False), (1000, True), (768000, True),
                                      (768001, False), (0xFFFFFFFF, False)])
def test_wav_header_rate_must_be_in_the_range_rate_takes(rate, ok):
    data = bytearray(_wav(np.zeros((1, 100), np.float32), "PCM_16", 8000))
    assert data[12:16] == b"fmt "
    data[24:28] = struct.pack("<I", rate)
    if ok:
        assert PcmStreamReader(io.BytesIO(bytes(data))).format.sample_rate == rate
        return
    with pytest.raises(AudioIOError) as refused:
        PcmStreamReader(io.BytesIO(bytes(data)), name="in.wav")
    assert str(refused.value) == (f"in.wav: WAV header sample rate {rate} Hz is not supported: must be "
                                  f"between 1000 and 768000, got {rate}")


V5 = StreamInfo("opencodec_24khz_v5#e701927ffb852e18", SR, 1, 8, 10, HOP, 4)


def _spy_on_model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The names ``CodecModels`` loads from now on (each still loaded for real)."""
    import opencodec.model_cache as model_cache

    loaded: list[str | None] = []
    real = model_cache.load_model

    def spy(name: str | None) -> tp.Any:
        loaded.append(name)
        return real(name)
    monkeypatch.setattr(model_cache, "load_model", spy)
    return loaded


def test_named_model_checked_against_the_header_before_loading(monkeypatch):
    """``stream-decode -m NAME`` on a v5 stream: another model's name is refused at the
    header with the model never loaded (so never downloaded); a name that fits loads then."""
    from opencodec.cli.stream import _stream_models
    from opencodec.identity import model_hash
    from opencodec.model_cache import check_named_model

    loaded = _spy_on_model_loads(monkeypatch)
    with pytest.raises(BitstreamError) as official:
        _stream_models("encodec_24khz", exact=False)(V5)
    assert "written by model 'opencodec_24khz_v5'" in str(official.value)
    assert "'encodec_24khz'" in str(official.value)
    with pytest.raises(BitstreamError, match="'opencodec_24khz_v4', whose weights are others"):
        _stream_models("opencodec_24khz_v4", exact=False)(V5)
    assert loaded == []
    for name in ("opencodec_24khz_v5", "opencodec_24khz"):  # the same weights; the alias: v5
        model = _stream_models(name, exact=False)(V5)
        assert model_hash(model) == "e701927ffb852e18" and not model.exact
    assert loaded == ["opencodec_24khz_v5", "opencodec_24khz"]
    check_named_model("encodec_24khz", "encodec_24khz", None, 8, "the stream")  # its own stream
