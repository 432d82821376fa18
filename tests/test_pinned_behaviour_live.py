"""Live-path behaviour that mutation testing found unpinned, now pinned with real values: the
server bounds the input a fast client can make it hold, an exact multi-stream decoder refuses
a change of K during a stream's warm-up (and the stream goes on), and an encoder step's
``finish`` takes only a tail of 1 to hop - 1 samples."""

from __future__ import annotations

import asyncio
import time
import typing as tp

import pytest
import torch

import websockets  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from opencodec.errors import InvalidCodesError
from opencodec.multistream import MultiStreamDecoder
from opencodec.serve.client import run_client
from opencodec.serve.server import ServeLimits
from opencodec.step import EncoderStep
from serve_helpers import MaxDeque, chirp, record_sessions, server_thread
from stream_models import tiny_stream_model

HOP = 320


@pytest.fixture(scope="module")
def tiny():
    model = tiny_stream_model("tiny_live_pins", seed=7)
    model.set_target_bandwidth(1.8)  # 4 codebooks; 0.9 kbps: 2
    return model


# -- serve: a client that sends seconds of audio at once is held to max_backlog_seconds --------
def test_server_holds_at_most_max_backlog_frames_of_a_fast_clients_input(tiny):
    """0.1 s of backlog (int(0.1 * 75) = 7 frames): a client sends 2 s of PCM (150 frames) in
    one message while the engine's ticks are slowed; the frames waiting for the engine never
    exceed 7 (the rest of the message waits unread), and the audio still all comes back."""
    limits = ServeLimits(max_backlog_seconds=0.1)
    bound = max(1, int(limits.max_backlog_seconds * tiny.frame_rate))
    assert bound == 7
    audio = chirp(2.0)
    with server_thread(tiny, limits=limits) as server:
        sessions = record_sessions(server, lambda s: setattr(s, "frames", MaxDeque()))
        tick = server.engine._tick

        def slow_tick() -> tp.Any:
            time.sleep(0.005)  # the reader fills the backlog long before the engine drains it
            return tick()
        server.engine._tick = slow_tick

        async def main() -> tp.Any:
            uri = f"ws://127.0.0.1:{server.port}/ws"
            return await asyncio.wait_for(run_client(uri, audio, chunk=audio.shape[-1]), 30)
        started = time.monotonic()
        result = asyncio.run(main())
        elapsed = time.monotonic() - started
    assert result.close_code == 1000 and result.pcm.shape == audio.shape
    assert len(sessions) == 1
    assert bound // 2 < sessions[0].frames.most <= bound, (sessions[0].frames.most, bound)
    assert elapsed < 30


# -- exact multi-stream decoder: one K during a stream's warm-up -----------------------------
def test_exact_decoder_refuses_another_k_during_warm_up_and_the_stream_goes_on(tiny):
    gen = torch.Generator().manual_seed(5)
    frames = [torch.randint(0, tiny.bins, (4, 1), generator=gen) for _ in range(10)]
    dec = MultiStreamDecoder(tiny, batched=False, exact=True)
    ref = MultiStreamDecoder(tiny, batched=False, exact=True)
    assert dec.warmup_frames == 7
    sid, rid = dec.open(), ref.open()
    got = [dec.push({sid: frames[0]})[sid]]
    want = [ref.push({rid: frames[0]})[rid]]
    with pytest.raises(InvalidCodesError, match=(
            rf"^stream {sid}: got 2 codebooks, but the 1 frame\(s\) of its warm-up so far have 4: in "
            r"exact mode a stream keeps one K for its first 7 frames$")):
        dec.push({sid: torch.randint(0, tiny.bins, (2, 1), generator=gen)})
    assert dec.frames_in[sid] == 1  # the refused frame consumed nothing
    for frame in frames[1:]:
        got.append(dec.push({sid: frame})[sid])
        want.append(ref.push({rid: frame})[rid])
    got.append(dec.close(sid))
    want.append(ref.close(rid))
    audio, expected = torch.cat(got, dim=-1), torch.cat(want, dim=-1)
    assert audio.shape == (1, 10 * HOP)
    assert torch.equal(audio, expected)


# -- encoder step: the tail passed to finish -------------------------------------------------
@pytest.mark.parametrize("length", [0, HOP])
def test_encoder_step_finish_refuses_an_empty_or_whole_frame_tail(tiny, length):
    step = EncoderStep(tiny)
    x = chirp(step.warmup_frames * HOP / 24000)
    _, state = step.start(torch.from_numpy(x)[None])
    with pytest.raises(ValueError, match=rf"^a tail has 1 to {HOP - 1} samples, got {length}$"):
        step.finish(torch.zeros(1, 1, length), state)
    codes = step.finish(torch.zeros(1, 1, 5), state)  # a real tail still works
    assert codes.shape == (1, 4, 1)
