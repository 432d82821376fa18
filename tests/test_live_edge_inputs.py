"""Edge inputs of the live paths (a demanding user's tries): the multi-stream encoder after the
model's bandwidth changed, the server's decode mode with bytes after the stream's end, the
Python client's PCM channels and controls, a send queue of one, an RF64 stream's ds64 size,
and an empty ONNX export path."""

from __future__ import annotations

import asyncio
import typing as tp

import numpy as np
import pytest
import torch

from opencodec.multistream import MultiStreamEncoder
from opencodec.serve.server import ServeLimits

from serve_helpers import chirp, server_thread
from stream_models import tiny_stream_model
from test_stream_serve_uncovered import _decode_session  # (close code, reason, texts, PCM bytes)


def _model():
    return tiny_stream_model("tiny_live_edges", 4)


def test_multistream_close_of_a_short_stream_keeps_the_encoders_codebooks_after_a_bandwidth_change():
    """K is fixed when the encoder is built: a stream closed during its warm-up (encoded
    offline) must get that K too, not the model's bandwidth of the moment."""
    model = _model()
    model.set_target_bandwidth(1.8)  # 4 codebooks
    enc = MultiStreamEncoder(model)
    model.set_target_bandwidth(0.9)  # the model used for something else meanwhile: 2 codebooks
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, 320 * 10, generator=gen)
    short, long = enc.open(), enc.open()
    assert enc.push({short: x[:, :640]})[short].shape == (4, 0)
    codes = enc.close(short, tail=x[:, 640:700])
    assert codes.shape == (4, 3)
    model.set_target_bandwidth(1.8)
    assert torch.equal(codes, model.encode(x[None, :, :700])[0].codes[0])
    assert model.bandwidth == 1.8  # the model's bandwidth is left as it was
    model.set_target_bandwidth(0.9)
    assert enc.push({long: x})[long].shape == (4, 10)
    assert enc.close(long, tail=x[:, :100]).shape == (4, 1)
    assert model.bandwidth == 0.9


def test_decode_mode_refuses_bytes_that_are_no_packet_after_the_end_packet_in_its_message():
    """Packets after the stream's end packet in its message were refused (1007, "data after
    the end of the stream"), but bytes that are no packet there were left unparsed: the
    session completed (1000) as if they were not there, and its done message counted them in
    ``packet_bytes``. A stream that ends cleanly, in one message or several, still completes."""
    from opencodec.stream.format import StreamInfo, data_packet, end_packet, header_packet

    model = _model()
    info = StreamInfo.from_model(model, 4)
    codes = torch.randint(0, 64, (4, 4), generator=torch.Generator().manual_seed(0))
    stream = header_packet(info, 0) + data_packet(info, 0, codes) + end_packet(1, 4 * 320)
    later = header_packet(info, 1) + data_packet(info, 1, codes)
    end = '{"type": "end"}'
    with server_thread(model) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        assert asyncio.run(_decode_session(uri, [stream + later, end]))[:2] == \
            (1007, "data after the end of the stream")  # as before
        for junk in (b"not a packet", later[:20]):  # no sync word; a packet cut short
            code, reason, _, _ = asyncio.run(_decode_session(uri, [stream + junk, end]))
            assert code == 1007 and reason.startswith(f"damaged packet data at byte {len(stream)}: ")
        for messages in ([stream, end], [stream[:7], stream[7:], end], [stream]):
            code, reason, _, pcm = asyncio.run(_decode_session(uri, messages))
            assert (code, reason, pcm) == (1000, "stream complete", 4 * 4 * 320)


def test_python_client_refuses_audio_whose_channels_are_not_the_servers():
    """A stereo array sent to a mono server was interleaved into one channel of twice the
    length and came back as a normal, complete stream: silently wrong audio."""
    from opencodec.serve.client import run_client

    model = _model()
    x = chirp(0.2)
    with server_thread(model) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        with pytest.raises(ValueError, match=r"^PCM data must be \[1, n\] \(the server's model takes 1 "
                                             r"channel\(s\)\), got shape \[2, 4800\]$"):
            asyncio.run(run_client(uri, np.concatenate([x, -x])))
        with pytest.raises(ValueError, match=r"^PCM data must be \[1, n\] .*, got shape \[4800\]$"):
            asyncio.run(run_client(uri, x[0]))  # [n]: no channel axis
        assert asyncio.run(run_client(uri, x)).pcm.shape == x.shape  # the server still serves


def test_python_client_refuses_controls_it_would_never_send():
    """A control at a position that is not a multiple of ``chunk`` (or past the data) was
    silently never sent: the stream went on at the old bandwidth."""
    from opencodec.serve.client import run_client

    x = chirp(0.2)
    for controls, bad in (({1000: {"type": "end"}}, "1000"), ({320: {}, 4800: {}, 99999: {}}, "4800, 99999")):
        with pytest.raises(ValueError, match=rf"^controls at position\(s\) {bad}: positions are multiples of "
                                             rf"chunk \(320\) below the data's length \(4800\)$"):
            asyncio.run(run_client("ws://127.0.0.1:9/ws", x, controls=controls))  # before connecting


def test_rf64_stream_stops_at_the_data_size_of_its_ds64_chunk(tmp_path):
    """An RF64 file's data chunk says 0xFFFFFFFF, its real size being in the ds64 chunk:
    read "until the end", libsndfile's metadata after the audio (a LIST chunk) became 22
    samples of noise at the end of the stream."""
    import io

    import soundfile as sf

    from opencodec.stream.pcm import PcmStreamReader

    gen = np.random.default_rng(0)
    x = (0.3 * gen.standard_normal((1000, 2))).astype(np.float32)
    path = tmp_path / "a.rf64"
    with sf.SoundFile(path, "w", 16000, 2, "PCM_16", format="RF64") as f:
        f.write(x)
        f.comment = "metadata after the audio"
    data = path.read_bytes()
    assert data[:4] == b"RF64" and b"LIST" in data[-60:]
    reader = PcmStreamReader(io.BytesIO(data))
    blocks = []
    while (block := reader.read(333)) is not None:
        blocks.append(block)
    got = np.concatenate(blocks)
    assert got.shape == (1000, 2) and reader.frames_read == 1000
    np.testing.assert_array_equal(got, sf.read(path, dtype="float32")[0])


def test_a_send_queue_of_one_serves_a_client_that_reads_everything_at_once():
    """``--send-queue N``: the output of N ticks waits for a client. A tick queued up to
    three items (audio or packets, a stats or done message, the close), so with a queue of 1
    or 2 a client reading everything at once was cut off as "client too slow" (1008), at
    once (1) or instead of its done message (2)."""
    from opencodec.serve.client import run_client

    model = _model()
    x = chirp(0.5)
    with server_thread(model, limits=ServeLimits(send_queue=1)) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        relay = asyncio.run(run_client(uri, x, realtime=True))
        encode = asyncio.run(run_client(uri, x, mode="encode", realtime=True))
    assert (relay.close_code, relay.close_reason) == (1000, "stream complete")
    assert relay.pcm.shape == x.shape and relay.stats[-1]["type"] == "done"
    assert (encode.close_code, encode.close_reason) == (1000, "stream complete")
    assert encode.stats[-1]["type"] == "done" and len(encode.packets) == encode.stats[-1]["packet_bytes"]


def test_export_onnx_refuses_an_empty_output_path_instead_of_filling_the_current_folder(tmp_path, monkeypatch):
    """``opencodec export-onnx MODEL "$UNSET"`` wrote its seven files (48 MB for the bundled
    model) into the current folder: ``Path("")`` is ".". ``compress`` refuses an empty path."""
    from opencodec.export.onnx import export_onnx

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^empty output path \(''\): it names no folder; an unset shell variable\?$"):
        export_onnx(_model(), "")
    assert list(tmp_path.iterdir()) == []


def test_a_message_after_the_end_of_the_input_closes_with_1007_instead_of_being_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After decode mode's end packet, packets in a *later* message were dropped unseen (the
    session completed, 1000), and so was PCM or a control sent after relay's ``{"type": "end"}``.
    Now anything but another ``{"type": "end"}`` sent while the server sends the rest is refused;
    a stream that ends cleanly (one end message or two) still completes. The engine's ticks wait
    until the server has read the message after the end (else, on a busy machine, the session can
    finish before that message arrives: then it is not read at all, as the README says)."""
    import json
    import threading

    from opencodec.serve import server as server_module
    from opencodec.stream.format import StreamInfo, data_packet, end_packet, header_packet

    from serve_helpers import raw_client

    read_after_end = threading.Event()
    check = server_module.check_after_end

    def seen(message: tp.Any) -> None:
        read_after_end.set()
        check(message)
    monkeypatch.setattr(server_module, "check_after_end", seen)

    def run(messages: list[tp.Any], session: tp.Callable[..., tp.Any]) -> tp.Any:
        read_after_end.clear()
        return asyncio.run(session(uri, messages))

    model = _model()
    info = StreamInfo.from_model(model, 4)
    codes = torch.randint(0, 64, (4, 4), generator=torch.Generator().manual_seed(0))
    stream = header_packet(info, 0) + data_packet(info, 0, codes) + end_packet(1, 4 * 320)
    later = header_packet(info, 1) + data_packet(info, 1, codes)
    end, switch = '{"type": "end"}', '{"type": "bandwidth", "bandwidth": 1.8}'
    pcm = (0.1 * np.sin(np.arange(320 * 6, dtype=np.float32) / 7)).astype("<f4").tobytes()
    with server_thread(model) as server:
        tick = server.engine._tick

        def held_tick() -> tp.Any:
            assert read_after_end.wait(60), "the message after the end was never read"
            return tick()
        server.engine._tick = held_tick
        uri = f"ws://127.0.0.1:{server.port}/ws"
        assert run([stream, later], _decode_session)[:2] == \
            (1007, "data after the end of the stream (in a later message)")
        assert run([stream, switch], _decode_session)[:2] == \
            (1007, 'a text message after the end of the stream: only {"type": "end"} may follow it')
        code, reason, texts, out = run([stream, end], _decode_session)
        assert (code, reason, out, texts[-1]["type"]) == (1000, "stream complete", 4 * 4 * 320, "done")
        hello = json.dumps({"mode": "relay", "bandwidth": 1.8})
        assert run([hello, pcm, end, pcm], raw_client) == \
            (1007, "data after the end of the stream (in a later message)")
        assert run([hello, pcm, end, "{"], raw_client) == \
            (1007, 'a text message after the end of the stream: only {"type": "end"} may follow it')
        assert run([hello, pcm, end, end], raw_client) == (1000, "stream complete")
