"""Explicit-state steps (``opencodec.step``) and many streams at once (``opencodec.multistream``).

References: :class:`StreamingEncoder` and :class:`StreamingDecoder` pushed one frame at a
time, each stream alone (and for the 24 kHz architecture ``model.encode``, which the streaming
encoder equals there bit for bit). Streams join and
leave at various frames, with tails of various lengths and streams shorter than the warm-up.
``batched=False`` must match bit for bit; ``batched=True`` is measured against the same
references (PyTorch's convolutions round a batch differently from a batch of one).
"""

from __future__ import annotations

import pytest
import torch

import official_ref
from opencodec import EncodecConfig, EncodecModel
from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.step import DecoderStep, EncoderStep
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from stream_models import codebooks_from_latents, tiny_stream_model

HOP = 320


@pytest.fixture(scope="module")
def m24() -> EncodecModel:
    model = official_ref.ours_from(official_ref.make_official_model("encodec_24khz", seed=3), "encodec_24khz")
    model.set_target_bandwidth(6.0)
    return codebooks_from_latents(model, seed=3)  # codes that follow the audio


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    model = tiny_stream_model("tiny_ms", seed=7)
    model.set_target_bandwidth(1.8)
    return model


def _signal(length: int, seed: int, channels: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    tone = torch.sin(2 * torch.pi * (200.0 + 50 * seed) * t) / 4
    return (0.3 * torch.randn(channels, length, generator=gen) + tone).clamp(-1, 1)


# (join frame, length in samples): joins before, at and after others' warm-up; leaves with and
# without a tail; two streams shorter than the 7-frame warm-up; one that never gets a frame.
PLAN = [(0, 40 * HOP), (0, 23 * HOP + 5), (3, 9 * HOP + 319), (3, 7 * HOP), (5, 6 * HOP + 100),
        (11, 2 * HOP), (12, 30 * HOP + 1), (20, 0), (25, 7 * HOP + 64)]


def _run_encoder(model: EncodecModel, batched: bool, plan: list[tuple[int, int]] = PLAN
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every stream of ``plan`` through one MultiStreamEncoder; (audio, codes) per stream."""
    audio = [_signal(n, seed=i) for i, (_, n) in enumerate(plan)]
    enc = MultiStreamEncoder(model, batched=batched)
    ids: dict[int, int] = {}
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(plan))}
    for t in range(max(j + n // HOP for j, n in plan) + 2):
        for i, (join, n) in enumerate(plan):
            if t == join:
                ids[i] = enc.open()
        frames = {}
        for i, (join, n) in enumerate(plan):
            if i in ids and t >= join and (t - join + 1) * HOP <= n:
                frames[ids[i]] = audio[i][:, (t - join) * HOP:(t - join + 1) * HOP]
        out = enc.push(frames)
        assert set(out) == set(frames)
        back = {sid: i for i, sid in ids.items()}
        for sid, codes in out.items():
            got[back[sid]].append(codes)
        for i, (join, n) in enumerate(plan):  # leave after the last whole frame
            if i in ids and t == join + n // HOP - (1 if n % HOP == 0 and n else 0) \
                    or (i in ids and n < HOP and t == join):
                tail = audio[i][:, (n // HOP) * HOP:]
                got[i].append(enc.close(ids.pop(i), tail))
    assert not ids and not enc.streams
    return audio, [torch.cat(c, dim=-1) for c in got.values()]


def _offline_codes(model: EncodecModel, x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] == 0:
        return torch.empty(model.num_codebooks(), 0, dtype=torch.long)
    with torch.inference_mode():
        return model.encode(x[None])[0].codes[0]


def _stream_codes(model: EncodecModel, x: torch.Tensor) -> torch.Tensor:
    """StreamingEncoder pushed one frame at a time (bit-exact with model.encode on the 24 kHz
    architecture; ~1e-7 off in the latent on the tiny model, where a near-tie can flip a code)."""
    if x.shape[-1] == 0:
        return _offline_codes(model, x)
    enc = StreamingEncoder(model)
    parts = [enc.push(x[None, :, i:i + HOP]) for i in range(0, x.shape[-1], HOP)]
    return torch.cat(parts + [enc.flush()], dim=-1)[0]


def _stream_decode(model: EncodecModel, codes: torch.Tensor) -> torch.Tensor:
    dec = StreamingDecoder(model)
    parts = [dec.push(codes[None, :, f:f + 1]) for f in range(codes.shape[-1])]
    return torch.cat(parts + [dec.flush()], dim=-1)[0]


def _run_decoder(model: EncodecModel, codes: list[torch.Tensor], joins: list[int], batched: bool
                 ) -> list[torch.Tensor]:
    dec = MultiStreamDecoder(model, batched=batched)
    ids: dict[int, int] = {}
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(codes))}
    for t in range(max(j + c.shape[-1] for j, c in zip(joins, codes)) + 1):
        for i, join in enumerate(joins):
            if t == join:
                ids[i] = dec.open()
        frames = {ids[i]: codes[i][:, t - joins[i]:t - joins[i] + 1] for i in ids
                  if t - joins[i] < codes[i].shape[-1]}
        back = {sid: i for i, sid in ids.items()}
        for sid, audio in dec.push(frames).items():
            got[back[sid]].append(audio)
        for i in list(ids):
            if t - joins[i] + 1 >= codes[i].shape[-1]:
                got[i].append(dec.close(ids.pop(i)))
    return [torch.cat(a, dim=-1) for a in got.values()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


# -- the step with explicit state -------------------------------------------------------------
def test_step_state_specs_and_warmup(m24: EncodecModel) -> None:
    enc, dec = EncoderStep(m24), DecoderStep(m24)
    assert enc.warmup_frames == dec.warmup_frames == 7
    specs = enc.state_specs()
    names = [s.name for s in specs]
    assert len(set(names)) == len(names) == 12  # 10 convs with left context + LSTM h, c
    assert specs[0].shape == (1, 6) and ("encoder.13.h", (2, 512)) in specs
    _, state = enc.start(_signal(7 * HOP, 0)[None].expand(3, -1, -1))
    assert [tuple(s.shape) for s in state] == [(3, *s.shape) for s in specs]
    with pytest.raises(ValueError, match="7 frame"):
        enc.start(torch.zeros(1, 1, 6 * HOP))
    with pytest.raises(ValueError, match="state tensors"):
        enc(torch.zeros(1, 1, HOP), *state[:-1])


@pytest.mark.parametrize("tail", [1, 100, 319])
def test_step_is_exact_at_batch_one(m24: EncodecModel, tail: int) -> None:
    """start, frame-by-frame steps and finish: codes equal model.encode bit for bit; the
    decoder step equals StreamingDecoder bit for bit."""
    x = _signal(12 * HOP + tail, seed=tail)
    ref = _offline_codes(m24, x)
    enc = EncoderStep(m24)
    with torch.inference_mode():
        codes, state = enc.start(x[None, :, :7 * HOP])
        parts = [codes]
        for t in range(7, 12):
            codes, *state = enc(x[None, :, t * HOP:(t + 1) * HOP], *state)
            parts.append(codes)
        parts.append(enc.finish(x[None, :, 12 * HOP:], state))
    got = torch.cat(parts, dim=-1)[0]
    assert len(torch.unique(ref)) > 20
    assert torch.equal(got, ref)
    dec = DecoderStep(m24)
    with torch.inference_mode():
        audio, state = dec.start(ref[None, :, :7])
        parts = [audio]
        for t in range(7, ref.shape[-1]):
            audio, *state = dec(ref[None, :, t:t + 1], *state)
            parts.append(audio)
    assert torch.equal(torch.cat(parts, dim=-1)[0], _stream_decode(m24, ref))


# -- many streams -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "m24"])
def test_unbatched_streams_are_exact(request: pytest.FixtureRequest, name: str) -> None:
    """batched=False: every stream's codes equal StreamingEncoder's for its audio alone (and
    model.encode's on the 24 kHz architecture), its audio StreamingDecoder's, bit for bit,
    whatever joins and leaves around it."""
    model = request.getfixturevalue(name)
    plan = PLAN if name == "tiny" else [(0, 12 * HOP + 7), (2, 9 * HOP), (4, 3 * HOP + 5), (5, 8 * HOP + 200)]
    audio, codes = _run_encoder(model, batched=False, plan=plan)
    for x, got in zip(audio, codes):
        assert torch.equal(got, _stream_codes(model, x))
        if name == "m24":
            assert torch.equal(got, _offline_codes(model, x))
    used = [c for c in codes if c.shape[-1]]
    out = _run_decoder(model, used, joins=[3 * i for i in range(len(used))], batched=False)
    for c, got in zip(used, out):
        assert torch.equal(got, _stream_decode(model, c))


@pytest.mark.parametrize("name", ["tiny", "m24"])
def test_batched_streams(request: pytest.FixtureRequest, name: str) -> None:
    """batched=True: codes as StreamingEncoder's on >= 99% of frames, audio within 1e-5
    relative of StreamingDecoder's."""
    model = request.getfixturevalue(name)
    plan = PLAN if name == "tiny" else [(0, 14 * HOP + 7), (0, 12 * HOP), (2, 9 * HOP), (4, 10 * HOP + 5)]
    audio, codes = _run_encoder(model, batched=True, plan=plan)
    same = total = 0
    for x, got in zip(audio, codes):
        ref = _stream_codes(model, x)
        assert got.shape == ref.shape
        same += int((got == ref).all(dim=0).sum())
        total += ref.shape[-1]
    assert same >= 0.99 * total
    used = [c for c in codes if c.shape[-1]]
    out = _run_decoder(model, used, joins=[0, 0, 1] + [4] * (len(used) - 3), batched=True)
    for c, got in zip(used, out):
        ref_audio = _stream_decode(model, c)
        assert got.shape == ref_audio.shape
        assert _rel(got, ref_audio) < 1e-5


def _chunks(total: int, seed: int, most: int = 4) -> list[int]:
    """Random chunk sizes 1..most summing to total (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = []
    while total > 0:
        sizes.append(min(total, int(torch.randint(1, most + 1, (1,), generator=gen))))
        total -= sizes[-1]
    return sizes


@pytest.mark.parametrize("batched", [False, True])
def test_several_frames_per_push(m24: EncodecModel, batched: bool) -> None:
    """Streams given 1-4 frames per push (a warm-up may end inside one, streams with different
    counts in the same call): codes as model.encode's (bit for bit unbatched, >= 99% of frames
    batched); audio within 1e-5 of one frame per push (several frames at once run the
    decoder's kernels over longer inputs, which round differently: ~1e-6 measured)."""
    lengths = [17 * HOP, 12 * HOP + 50, 9 * HOP]
    audio = [_signal(n, seed=10 + i) for i, n in enumerate(lengths)]
    enc, dec = MultiStreamEncoder(m24, batched=batched), MultiStreamDecoder(m24, batched=batched)
    plans = [_chunks(n // HOP, seed=i) for i, n in enumerate(lengths)]
    ids = [enc.open() for _ in lengths]
    codes: list[list[torch.Tensor]] = [[] for _ in lengths]
    pos = [0] * len(lengths)
    calls_with_mixed_counts = 0
    for t in range(max(len(p) for p in plans)):
        frames = {}
        for i, plan in enumerate(plans):
            if t < len(plan):
                frames[ids[i]] = audio[i][:, pos[i] * HOP:(pos[i] + plan[t]) * HOP]
                pos[i] += plan[t]
        calls_with_mixed_counts += len({f.shape[-1] for f in frames.values()}) > 1
        out = enc.push(frames)
        for i, sid in enumerate(ids):
            if sid in frames:
                codes[i].append(out[sid])
    assert calls_with_mixed_counts >= 2
    got = [torch.cat(c + [enc.close(sid, a[:, (a.shape[-1] // HOP) * HOP:])], dim=-1)
           for c, sid, a in zip(codes, ids, audio)]
    same = total = 0
    for x, g in zip(audio, got):
        ref = _offline_codes(m24, x)
        assert g.shape == ref.shape
        if not batched:
            assert torch.equal(g, ref)
        same += int((g == ref).all(dim=0).sum())
        total += ref.shape[-1]
    assert same >= 0.99 * total
    # the decoder, 1-3 code frames per push
    dids = [dec.open() for _ in got]
    out_audio: list[list[torch.Tensor]] = [[] for _ in got]
    plans = [_chunks(g.shape[-1], seed=20 + i, most=3) for i, g in enumerate(got)]
    pos = [0] * len(got)
    for t in range(max(len(p) for p in plans)):
        step = {}
        for i, plan in enumerate(plans):
            if t < len(plan):
                step[dids[i]] = got[i][:, pos[i]:pos[i] + plan[t]]
                pos[i] += plan[t]
        back = dec.push(step)
        for i, sid in enumerate(dids):
            if sid in step:
                out_audio[i].append(back[sid])
    for i, (g, sid) in enumerate(zip(got, dids)):
        decoded = torch.cat(out_audio[i] + [dec.close(sid)], dim=-1)
        ref = _stream_decode(m24, g)  # one frame per push
        assert decoded.shape == ref.shape and 0 <= _rel(decoded, ref) < 1e-5


def test_errors(tiny: EncodecModel) -> None:
    enc = MultiStreamEncoder(tiny)
    sid = enc.open()
    with pytest.raises(ValueError, match="expected whole frames"):
        enc.push({sid: torch.zeros(1, HOP - 1)})
    with pytest.raises(ValueError, match="expected whole frames"):
        enc.push({sid: torch.zeros(1, 2 * HOP + 1)})
    with pytest.raises(KeyError, match="no open stream"):
        enc.push({sid + 1: torch.zeros(1, HOP)})
    with pytest.raises(ValueError, match="tail"):
        enc.close(sid, torch.zeros(1, HOP))
    assert enc.close(sid).shape == (tiny.num_codebooks(), 0)
    dec = MultiStreamDecoder(tiny)
    a, b = dec.open(), dec.open()
    with pytest.raises(ValueError, match="expected code frames"):
        dec.push({a: torch.zeros(4, 0, dtype=torch.long)})
    with pytest.raises(ValueError, match="the same K"):
        dec.push({a: torch.zeros(4, 1, dtype=torch.long), b: torch.zeros(2, 1, dtype=torch.long)})
    non_causal = EncodecModel(EncodecConfig(name="nc", causal=False, n_filters=4, dimension=8, n_q=2,
                                            ratios=[2], lstm=0))
    with pytest.raises(ValueError, match="not causal"):
        MultiStreamEncoder(non_causal)


def test_fast_decoder_takes_streams_at_different_bandwidths_in_one_step(m24: EncodecModel) -> None:
    """Fast mode: streams at 1.5, 3 and 6 kbps (K = 2, 4, 8) pushed together share one batched
    step per push (their codes padded with -1, "no codebook"), and each stream's audio is its
    own fast streaming decode within 1e-5; exact mode still takes one K per push."""
    codes = _offline_codes(m24, _signal(15 * HOP, seed=31))
    ks = [2, 4, 8]
    dec = MultiStreamDecoder(m24, exact=False)
    assert dec.mixed_bandwidths and dec.max_codebooks == 32  # the quantiser's, beyond 6 kbps's 8
    steps = []
    step_live = dec._step_live
    dec._step_live = lambda sids, items, out: (steps.append(len(sids)), step_live(sids, items, out))
    ids = [dec.open() for _ in ks]
    parts: list[list[torch.Tensor]] = [[] for _ in ks]
    for f in range(codes.shape[-1]):
        back = dec.push({sid: codes[:k, f:f + 1] for sid, k in zip(ids, ks)})
        for i, sid in enumerate(ids):
            parts[i].append(back[sid])
    assert steps and all(n == len(ks) for n in steps)  # every live step held all three
    for i, (sid, k) in enumerate(zip(ids, ks)):
        alone = StreamingDecoder(m24, exact=False)
        ref = torch.cat([alone.push(codes[None, :k, f:f + 1]) for f in range(codes.shape[-1])]
                        + [alone.flush()], dim=-1)[0]
        got = torch.cat(parts[i] + [dec.close(sid)], dim=-1)
        assert got.shape == ref.shape and _rel(got, ref) < 1e-5
    with pytest.raises(ValueError, match="at most 32 codebooks"):
        dec.push({dec.open(): torch.zeros(33, 1, dtype=torch.long)})
    exact = MultiStreamDecoder(m24, exact=True)
    assert not exact.mixed_bandwidths
    with pytest.raises(ValueError, match="the same K"):
        exact.push({exact.open(): codes[:2, :1], exact.open(): codes[:4, :1]})
