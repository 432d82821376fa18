"""The lines that no other test ran (the uncovered-lines audit) in the live modules: the stream
packet writer, format and audio sink, the progress line, signals, serve.aio, the server's
limits, threads and decode mode's end of input. Each test asserts the value or the one-line
error a user sees."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import struct
import threading
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch

from opencodec import EncodecModel
from opencodec.errors import AudioIOError, BitstreamError


# ------------------------------------------------------------------------------------------
# stream: writer, format, sink
# ------------------------------------------------------------------------------------------
def _info(**fields: object):
    from opencodec.stream.format import StreamInfo

    values = dict(model_name="tiny", sample_rate=24000, channels=1, num_codebooks=4, bits=6,
                  hop_length=320, frames_per_packet=4)
    values.update(fields)
    return StreamInfo(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "2"])
def test_packet_writer_refuses_a_bad_header_interval(every: object) -> None:
    from opencodec.stream import PacketWriter

    with pytest.raises(ValueError, match=rf"^header_every must be an integer >= 1, got {every!r}$"):
        PacketWriter(_info(), header_every=every)  # type: ignore[arg-type]


def test_packet_writer_refuses_codes_of_another_shape() -> None:
    from opencodec.stream import PacketWriter

    writer = PacketWriter(_info())
    with pytest.raises(ValueError, match=r"^expected codes \[4, f\], got \[2, 3\]$"):
        writer.push(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^expected codes \[4, f\], got \[12\]$"):
        writer.push(np.zeros(12, dtype=np.int64))
    assert writer.packets == 0 and writer.bytes == 0


@pytest.mark.parametrize("name", ["", "x" * 256, "é" * 128, None])
def test_stream_info_refuses_a_model_name_that_does_not_fit(name: object) -> None:
    with pytest.raises(BitstreamError, match=r"^stream header field 'model name': expected 1 to 255 "
                                             r"bytes of UTF-8, got "):
        _info(model_name=name)


def test_data_packet_refuses_codes_of_another_shape() -> None:
    from opencodec.stream.format import data_packet

    info = _info()
    for shape in [(4, 0), (4, 5), (3, 2), (4,)]:
        with pytest.raises(ValueError, match="^" + re.escape(f"data packet codes must have shape [4, F] "
                                                             f"with 1 <= F <= 4, got {list(shape)}") + "$"):
            data_packet(info, 0, np.zeros(shape, dtype=np.int64))


def test_stream_header_with_a_model_name_that_is_not_utf8() -> None:
    """A header packet whose CRC is right but whose name bytes are not UTF-8: one BitstreamError
    naming the byte offset (the server closes with it: 1007)."""
    from opencodec.stream.format import _HEADER_FIXED, TYPE_HEADER, VERSION, _packet
    from opencodec.stream.parser import PacketParser

    name = b"caf\xe9"
    packet = _packet(TYPE_HEADER, 0, _HEADER_FIXED.pack(VERSION, 24000, 1, 4, 6, 320, 4, len(name)) + name)
    with pytest.raises(BitstreamError, match=r"^stream header at byte 7: model name is not UTF-8$"):
        PacketParser().feed(b"garbage" + packet)


def _wav_sizes(data: bytes) -> tuple[int, int]:
    """The RIFF and data chunk sizes of a 16-bit PCM WAV header at the start of ``data``."""
    return struct.unpack_from("<I", data, 4)[0], struct.unpack_from("<I", data, 40)[0]


def test_audio_sink_skips_empty_chunks_and_refuses_nan(tmp_path: Path) -> None:
    from opencodec.stream.sink import AudioSink

    out = io.BytesIO()
    sink = AudioSink(out, 24000, 1)
    sink.write(torch.zeros(1, 0))
    sink.write(torch.full((1, 3), 0.5))
    with pytest.raises(AudioIOError, match=r"^the decoded audio holds NaN or infinite samples$"):
        sink.write(torch.tensor([[0.1, float("nan")]]))
    sink.close()
    data = out.getvalue()
    assert sink.frames == 3 and len(data) == 44 + 6
    assert _wav_sizes(data) == (36 + 6, 6)
    assert np.frombuffer(data[44:], "<i2").tolist() == [16384] * 3


def test_audio_sink_on_a_file_opened_for_appending_leaves_the_sizes_unknown(tmp_path: Path) -> None:
    """In append mode every write lands at the end: the header cannot be rewritten in place
    (it would be appended a second time), so its sizes stay "unknown" (0xFFFFFFFF)."""
    from opencodec.stream.sink import AudioSink

    path = tmp_path / "out.wav"
    with open(path, "ab") as fo:
        sink = AudioSink(fo, 24000, 1)
        sink.write(torch.full((1, 4), -0.25))
        sink.close()
    data = path.read_bytes()
    assert len(data) == 44 + 8 and _wav_sizes(data) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert np.frombuffer(data[44:], "<i2").tolist() == [-8192] * 4


def test_audio_sink_on_a_stream_without_a_position_leaves_the_sizes_unknown() -> None:
    """A seekable-looking output with no file descriptor whose ``tell`` fails (a wrapped pipe)."""
    from opencodec.stream.sink import AudioSink

    class NoTell(io.BytesIO):
        def fileno(self) -> int:
            raise io.UnsupportedOperation("fileno")

        def tell(self) -> int:
            raise OSError(29, "Illegal seek")

    out = NoTell()
    sink = AudioSink(out, 24000, 1)
    sink.write(torch.zeros(1, 2))
    sink.close()  # no seek back
    assert _wav_sizes(out.getvalue()) == (0xFFFFFFFF, 0xFFFFFFFF) and len(out.getvalue()) == 48


# ------------------------------------------------------------------------------------------
# progress, signals, serve.aio
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [("abc", 30.0), ("", 30.0), ("-1", 30.0), ("0", 0.0), ("2.5", 2.5)])
def test_progress_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                                expected: float) -> None:
    from opencodec.progress import ENV_SECONDS, _seconds

    monkeypatch.setenv(ENV_SECONDS, value)
    assert _seconds() == expected


def test_progress_bar_to_a_file_without_isatty_or_closed_writes_lines() -> None:
    from opencodec.progress import _is_terminal, progress_bar

    class Lines:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    closed = io.StringIO()
    closed.close()
    assert _is_terminal(closed) is False
    out = Lines()  # no isatty at all
    with progress_bar(total=3, desc="rest", file=out) as bar:
        bar.update(3)
    assert "\r" not in out.text and out.text.endswith("\n")
    assert out.text.splitlines()[-1].startswith("rest: 100%") and "3/3" in out.text.splitlines()[-1]


def test_sigterm_as_interrupt_changes_nothing_outside_the_main_thread_or_when_ignored() -> None:
    from opencodec.signals import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def in_thread() -> None:
        with sigterm_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert seen == [before]
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_on_sigterm_in_a_loop_outside_the_main_thread_keeps_sigterms_action() -> None:
    """A server run in another thread's loop (an embedding application): the loop cannot take
    a signal handler; the block runs, SIGTERM's handler is left as it was, and none is added."""
    from opencodec.serve.aio import _on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    result: list[object] = []

    async def main() -> None:
        with _on_sigterm(lambda: result.append("called")):
            result.append(signal.getsignal(signal.SIGTERM))
        result.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    thread.join(10)
    assert result == [before, before]


# ------------------------------------------------------------------------------------------
# serve: limits, run_server's threads, decode mode's end of input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("max_clients", 0, r"^max_clients must be at least 1, got 0$"),
    ("send_queue", -3, r"^send_queue must be at least 1, got -3$"),
    ("idle_timeout", 0, r"^idle_timeout must be positive, got 0$"),
    ("close_timeout", -1.0, r"^close_timeout must be positive, got -1\.0$"),
    ("max_backlog_seconds", float("nan"), r"^max_backlog_seconds must be positive, got nan$"),
])
def test_serve_limits_refuse_impossible_values(field: str, value: object, message: str) -> None:
    from opencodec.serve.limits import ServeLimits

    with pytest.raises(ValueError, match=message):
        ServeLimits(**{field: value})


@pytest.fixture(scope="module")
def stream_model() -> EncodecModel:
    from stream_models import tiny_stream_model

    return tiny_stream_model("tiny_rest_serve", 3)


def test_run_server_refuses_zero_threads_before_serving(stream_model: EncodecModel) -> None:
    from opencodec.serve.server import run_server

    ready: list[str] = []
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"^threads must be at least 1, got 0$"):
        run_server(stream_model, port=0, threads=0, ready=ready.append)
    assert ready == [] and torch.get_num_threads() == threads


async def _decode_session(uri: str, messages: list[tp.Any]) -> tuple[int | None, str, list[dict], int]:
    """A decode-mode client: hello, ``messages``, then read until the close: (close code,
    reason, the text messages after ready, PCM bytes received)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    texts: list[dict] = []
    pcm = 0
    async with connect(uri, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"mode": "decode"}))
        await ws.recv()  # ready
        for message in messages:
            await ws.send(message)

        async def read() -> None:
            nonlocal pcm
            async for msg in ws:
                if isinstance(msg, str):
                    texts.append(json.loads(msg))
                else:
                    pcm += len(msg)

        try:
            await asyncio.wait_for(read(), 30)  # a session that never ends fails, not hangs
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason, texts, pcm


def test_decode_mode_end_of_input_without_an_end_packet_or_after_it(stream_model: EncodecModel) -> None:
    """{"type": "end"} with no stream at all: done, nothing decoded (1000); after packets without
    the end packet: 1007 naming the cut stream; packets after the end packet: 1007."""
    from opencodec.stream.format import StreamInfo, data_packet, end_packet, header_packet

    from serve_helpers import server_thread

    info = StreamInfo.from_model(stream_model, 4)
    codes = torch.randint(0, 64, (4, 4), generator=torch.Generator().manual_seed(0))
    start = header_packet(info, 0) + data_packet(info, 0, codes)
    end = '{"type": "end"}'
    with server_thread(stream_model) as server:
        uri = f"ws://127.0.0.1:{server.port}/ws"
        code, reason, texts, pcm = asyncio.run(_decode_session(uri, [end]))
        assert (code, reason, pcm) == (1000, "stream complete", 0)
        assert [(t["type"], t["samples_in"], t["samples_out"], t["num_codebooks"]) for t in texts] \
            == [("done", 0, 0, None)]
        code, reason, _, _ = asyncio.run(_decode_session(uri, [start, end]))
        assert (code, reason) == (1007, "decode mode takes one loss-free stream: the stream ended without "
                                        "an end packet (truncated or interrupted)")
        later = header_packet(info, 1) + data_packet(info, 1, codes)
        code, reason, _, _ = asyncio.run(_decode_session(uri, [start + end_packet(1, 4 * 320) + later, end]))
        assert (code, reason) == (1007, "data after the end of the stream")
