"""Edges of the live stream paths that no other test pins:
decode mode's hold-back in the serve engine, the server's input backlog bound, and the
stream decoder's model checks."""

from __future__ import annotations

import pytest
import torch

from opencodec.serve.engine import Engine
from opencodec.serve.protocol import Hello
from opencodec.serve.session import Output, Session
from stream_models import tiny_stream_model


def _decode_session(model, engine: Engine, k: int) -> tuple[Session, list[Output]]:
    outputs: list[Output] = []
    s = Session(Hello("decode", model.bandwidth_for_codebooks(k)), k, deliver=outputs.append)
    engine.add(s)
    s.stream_started = True
    return s, outputs


@pytest.mark.parametrize("short", [1, 0])
def test_decode_mode_holds_back_exactly_hop_minus_one_samples_until_the_end_packet(short):
    """Decode mode: after n code frames the engine releases all the decoded audio but its
    last ``hop - 1`` samples (the stream's length, from its end packet, is more than
    ``(n - 1) * hop``: those may be past it); the end packet then releases the rest up to the
    length: ``(n - 1) * hop + 1`` (the shortest length n frames carry) or ``n * hop`` (the
    longest). Holding ``hop`` samples would be safe too, but adds latency for nothing."""
    model = tiny_stream_model("tiny_edges_hold", 3)
    hop, k, frames = model.hop_length, 4, 12
    engine = Engine(model, max_steps=64)
    s, _ = _decode_session(model, engine, k)
    assert s.hold == hop - 1
    decoded: list[int] = []
    push = engine.decoder.push

    def recorded(items):
        audio = push(items)
        decoded.extend(a.shape[-1] for a in audio.values())
        return audio
    engine.decoder.push = recorded
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, model.bins, (k, frames), generator=gen)
    released = 0
    for t in range(frames):
        s.codes.append(codes[:, t:t + 1])
        for _, out in engine._tick():
            released += sum(p.shape[-1] for p in out.pcm)
        assert s.samples_out == released == max(0, sum(decoded) - (hop - 1)), (t, decoded)
    assert sum(decoded) > hop  # the decoder gave audio: the check above is not vacuous
    length = frames * hop - short * (hop - 1)
    s.end_length, s.ending = length, True
    results = engine._tick()
    for _, out in results:
        released += sum(p.shape[-1] for p in out.pcm)
        assert out.done
    assert len(results) == 1 and released == s.samples_out == length


@pytest.mark.parametrize("field_name, changes", [
    ("sample rate", dict(sample_rate=16000)), ("channels", dict(channels=2)),
    ("hop length", dict(hop_length=321)), ("bits per code", dict(bits=7))])
def test_check_model_for_stream_refuses_more_codebooks_than_the_model_and_other_fields(field_name, changes):
    """All of the model's codebooks are accepted; one more is refused (by the file check it
    shares with .ecdc files: the stream decoder's own n_q check could never be reached and
    was removed); each layout field that differs is named."""
    import dataclasses

    from opencodec.errors import BitstreamError
    from opencodec.stream.decoder import check_model_for_stream
    from opencodec.stream.format import StreamInfo

    model = tiny_stream_model("tiny_edges_check", 3)
    info = StreamInfo.from_model(model, model.n_q)
    check_model_for_stream(model, info)  # every codebook: fine
    with pytest.raises(BitstreamError) as caught:
        check_model_for_stream(model, dataclasses.replace(info, num_codebooks=model.n_q + 1))
    assert str(caught.value) == (f"the stream uses {model.n_q + 1} codebooks, but model "
                                 f"'tiny_edges_check' has at most {model.n_q}: it is not the model "
                                 "that wrote it")
    with pytest.raises(BitstreamError, match=rf"^stream header field '{field_name}' is "):
        check_model_for_stream(model, dataclasses.replace(info, **changes))


# -- tokens/inputs.py: a CSV manifest's id of spaces only is refused, as in JSON lines ------------
def test_csv_and_jsonl_manifests_agree_on_an_id_of_spaces(tmp_path):
    """An id of spaces only is "empty" in both manifest kinds (JSON lines refused it, CSV took
    it as the id "   "); an empty CSV cell still means the path, as JSON null does."""
    import json

    from opencodec.tokens.inputs import InputError, list_inputs

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")  # only listed: manifests are read, never decoded, here
    for name, text in (("m.jsonl", json.dumps({"path": "a.wav", "id": "   "}) + "\n"),
                       ("m.csv", "path,id\na.wav,   \n"), ("m.tsv", "path\tid\na.wav\t \n")):
        manifest = tmp_path / name
        manifest.write_text(text)
        with pytest.raises(InputError) as caught:
            list_inputs([manifest])
        line = 1 if name == "m.jsonl" else 2  # a CSV's first line is its header
        assert str(caught.value) == (f'{manifest}:{line}: empty "id" (leave it out, or null, to use '
                                     "the path as the id)")
    manifest = tmp_path / "ok.csv"
    manifest.write_text("path,id\na.wav,\n")
    assert [(i.id, i.path) for i in list_inputs([manifest])] == [("a.wav", str(audio))]
    manifest.write_text("path,id\na.wav, x \n")  # an id with other characters is kept as written
    assert [i.id for i in list_inputs([manifest])] == [" x "]
    # where an id came from (named when two rows clash): the path for an empty cell
    manifest.write_text("path,id\na.wav,\na.wav,\n")
    with pytest.raises(InputError, match=rf"with the id 'a.wav' \(from manifest {manifest}\): "):
        list_inputs([manifest])
    manifest.write_text("path,id\na.wav,u\na.wav,u\n")
    with pytest.raises(InputError, match=rf"with the id 'u' \(from the 'id' column of {manifest}\): "):
        list_inputs([manifest])


# -- serve engine, decode mode: the batch window and the tick's quota --------------------------
def _recorded_decoder(engine: Engine) -> list[list[int]]:
    """Each decoder push, as the sorted code frames per stream it took."""
    pushes: list[list[int]] = []
    push = engine.decoder.push

    def recorded(items):
        pushes.append(sorted(f.shape[-1] for f in items.values()))
        return push(items)
    engine.decoder.push = recorded
    return pushes


def test_decode_streams_are_gathered_within_the_batch_window():
    """Two decode streams that have started: code frames of the first wait (10 s window,
    nothing served after 0.2 s, whatever the load) until the second's arrive, then both are
    decoded in one step; without waiting, the first would be decoded alone."""
    import asyncio
    import contextlib
    import time

    model = tiny_stream_model("tiny_edges_gather", 3)
    gen = torch.Generator().manual_seed(4)

    async def scenario() -> tuple[list[list[int]], list[list[int]]]:
        engine = Engine(model, batch_window=10.0)
        sessions = [_decode_session(model, engine, 4)[0] for _ in range(2)]
        pushes = _recorded_decoder(engine)
        runner = asyncio.create_task(engine.run())
        try:
            await asyncio.sleep(0)
            sessions[0].codes.append(torch.randint(0, model.bins, (4, 1), generator=gen))
            engine.notify()
            await asyncio.sleep(0.2)
            early = list(pushes)
            sessions[1].codes.append(torch.randint(0, model.bins, (4, 1), generator=gen))
            engine.notify()
            deadline = time.monotonic() + 5
            while not pushes and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            return early, pushes
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    early, pushes = asyncio.run(scenario())
    assert early == [] and pushes == [[1, 1]]


def test_decode_code_frames_arriving_during_a_tick_wait_for_the_next():
    """Decode mode: a tick takes only the code frames waiting when it began; one that arrives
    during its decoder step waits for the next tick (with the other streams' frames), instead
    of a second small decoder step in the same tick."""
    model = tiny_stream_model("tiny_edges_quota", 3)
    engine = Engine(model, max_steps=64)
    sessions = [_decode_session(model, engine, 4)[0] for _ in range(2)]
    pushes = _recorded_decoder(engine)
    gen = torch.Generator().manual_seed(6)
    frame = torch.randint(0, model.bins, (4, 1), generator=gen)
    push = engine.decoder.push

    def arriving(items):  # the loop adds a code frame to the first stream during the step
        sessions[0].codes.append(frame.clone())
        return push(items)
    engine.decoder.push = arriving
    for s in sessions:
        s.codes.append(frame.clone())
    engine._tick()
    assert pushes == [[1, 1]] and len(sessions[0].codes) == 1 and not sessions[1].codes
    engine.decoder.push = push
    sessions[1].codes.append(frame.clone())
    engine._tick()
    assert pushes == [[1, 1], [1, 1]]


def test_a_decode_stream_without_its_header_yet_is_not_waited_for():
    """A decode stream whose header has not arrived (it has not started) does not hold the
    other streams' frames for the window: the first stream's code frame is decoded at once
    (with the 30 s window, waiting would leave nothing decoded when the scenario gives up)."""
    import asyncio
    import contextlib
    import time

    model = tiny_stream_model("tiny_edges_gather", 3)

    async def scenario() -> list[list[int]]:
        engine = Engine(model, batch_window=30.0)
        first, _ = _decode_session(model, engine, 4)
        second, _ = _decode_session(model, engine, 4)
        second.stream_started = False
        pushes = _recorded_decoder(engine)
        runner = asyncio.create_task(engine.run())
        try:
            await asyncio.sleep(0)
            first.codes.append(torch.zeros(4, 1, dtype=torch.long))
            engine.notify()
            deadline = time.monotonic() + 5
            while not pushes and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            return pushes
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    assert asyncio.run(scenario()) == [[1]]


# -- serve pacing: the charge and who is held, at the edges -----------------------------------
def _paced_sessions(count: int) -> list[Session]:
    return [Session(Hello("relay", 1.8), 4, deliver=lambda o: None) for _ in range(count)]


def test_pacer_charges_only_the_frames_taken_and_holds_below_one_frame_of_credit():
    """Bank 8 frames, two live streams with 8 frames waiting each: the first takes 7 (credit
    left exactly 1: one more frame may go next tick, so it is not held), the second takes 5 of
    its quota of 8 (3 left untaken: charged 5, credit 3). With no time passing, a stream at
    0.5 credit is held and told when a whole frame is earned."""
    import numpy as np

    from opencodec.serve.pacing import CATCH_UP, Pacer

    now = [100.0]
    pacer = Pacer(8.0, 75.0, 8, lambda: now[0])
    a, b = _paced_sessions(2)
    for s in (a, b):
        s.frames.extend(np.zeros((1, 320), np.float32) for _ in range(10))
        s.quota = 10
    pacer.quotas([a, b])
    assert pacer.paced and (a.quota, b.quota) == (8, 8) and a.credit == b.credit == 8.0
    taken = {id(a): a.quota, id(b): b.quota}
    for _ in range(7):
        a.frames.popleft()
    for _ in range(5):
        b.frames.popleft()
    a.quota, b.quota = 1, 3  # what each left of its quota
    pacer.charge([a, b], taken)
    assert (a.credit, b.credit) == (1.0, 3.0)
    assert pacer.held == set() and pacer.credit_in is None  # exactly one frame: not held
    a.credit_at = b.credit_at = now[0]
    a.quota, b.quota = len(a.frames), len(b.frames)
    pacer.quotas([a, b])
    assert (a.quota, b.quota) == (1, 3)
    a.frames.popleft()
    a.quota, a.credit = 0, 1.5  # took its frame, as if it had 1.5: 0.5 left
    pacer.charge([a, b], {id(a): 1, id(b): b.quota})
    assert a.credit == 0.5 and pacer.held == {id(a)}
    assert pacer.credit_in == 0.5 / (75.0 * CATCH_UP)
