"""The low-level Python API checks its input before it touches any state: audio that is not a
float32 tensor of finite samples (``InvalidAudioError``), codes that are not integers in
``[0, bins)`` (``InvalidCodesError``), unknown stream ids (``KeyError``). A rejected push
leaves a stream exactly as it was: what comes out afterwards is bit for bit what a stream that
never saw the bad input gives. Also: a multistream step that raises loses no stream, the raw
PCM reader warns about a partial sample frame, the long-file reader says "no such file"."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from opencodec.batching import decode_batch, encode_batch
from opencodec.compress import compress
from opencodec.errors import AudioIOError, InvalidAudioError, InvalidCodesError, UnsupportedBandwidthError
from opencodec.model import EncodecModel, EncodedFrame
from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from stream_models import tiny_stream_model

HOP = 320


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    model = tiny_stream_model("tiny_checks", 5)
    model.set_target_bandwidth(1.8)  # 2 of the 4 codebooks
    return model


def _signal(length: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 24000
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(length, generator=gen))[None, None]


def _with_nan(x: torch.Tensor, at: int) -> torch.Tensor:
    bad = x.clone()
    bad[..., at] = float("nan")
    return bad


# -- StreamingEncoder -----------------------------------------------------------------------
BAD_CHUNKS = {
    "nan": (lambda x: _with_nan(x, 5), "1 non-finite sample"),
    "inf": (lambda x: _with_nan(x, 5).nan_to_num(nan=float("inf")), "1 non-finite sample"),
    "int16": (lambda x: (x * 32767).short(), "float32 torch.Tensor .* got int16"),
    "float64": (lambda x: x.double(), "float32 torch.Tensor .* got float64; convert with .float()"),
    "numpy": (lambda x: x.numpy(), "float32 torch.Tensor .* got a numpy.ndarray"),
}


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("kind", list(BAD_CHUNKS))
@pytest.mark.parametrize("first", [True, False])
def test_streaming_encoder_rejects_bad_chunks_and_goes_on(tiny: EncodecModel, exact: bool, kind: str,
                                                          first: bool) -> None:
    """A chunk with NaN/inf samples or of another type than float32 raises InvalidAudioError
    whether it is the stream's first push or a later one, and changes nothing: the stream's
    codes are those of the same stream without the bad push (a NaN used to make every later
    frame code 0, an int16 chunk was encoded as audio of amplitude 32767)."""
    x = _signal(20 * HOP + 77, seed=1)
    make_bad, message = BAD_CHUNKS[kind]
    cuts = [0, 1500, 3800, x.shape[-1]]
    enc, ref = StreamingEncoder(tiny, exact=exact), StreamingEncoder(tiny, exact=exact)
    got, want = [], []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        if i == (0 if first else 1):
            before = enc.samples_in
            with pytest.raises(InvalidAudioError, match=message):
                enc.push(make_bad(x[..., a:b]))
            assert enc.samples_in == before
        got.append(enc.push(x[..., a:b]))
        want.append(ref.push(x[..., a:b]))
    codes = torch.cat(got + [enc.flush()], dim=-1)
    assert torch.equal(codes, torch.cat(want + [ref.flush()], dim=-1))
    if exact:
        with torch.inference_mode():
            assert torch.equal(codes, tiny.encode(x)[0].codes)


def test_a_rejected_first_push_does_not_fix_the_batch_size(tiny: EncodecModel) -> None:
    """A rejected first push does not fix the stream's batch size."""
    enc = StreamingEncoder(tiny)
    with pytest.raises(InvalidAudioError, match="non-finite"):
        enc.push(_with_nan(torch.zeros(3, 1, 400), 0))
    assert enc.push(torch.zeros(1, 1, 400)).shape[0] == 1


# -- StreamingDecoder -----------------------------------------------------------------------
BAD_CODES = {
    "bins": (lambda c: c.clone().fill_(64), r"codes must be in \[0, 64\); got 64 in codebook 0"),
    "large": (lambda c: torch.cat([c[:, :1], c[:, 1:].clone().fill_(5000)], 1), "got 5000 in codebook 1"),
    "minus_one": (lambda c: c.clone().fill_(-1), "got -1 in codebook 0"),
    "negative": (lambda c: c.clone().fill_(-5), "got -5 in codebook 0"),
    "float": (lambda c: c.float(), "integer torch.Tensor .* got float32"),
    "too_many": (lambda c: torch.zeros(1, 5, c.shape[-1], dtype=torch.long), "1 to 4 codebooks"),
}


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("kind", list(BAD_CODES))
def test_streaming_decoder_rejects_bad_codes_and_goes_on(tiny: EncodecModel, exact: bool, kind: str) -> None:
    """Codes outside [0, bins), non-integer codes or more codebooks than the quantiser has
    raise InvalidCodesError naming the codebook and value, in both modes (fast mode used to
    decode them from another codebook's rows, or as "no codebook"), and the audio of the
    stream is that of the same stream without the bad push."""
    with torch.inference_mode():
        codes = tiny.encode(_signal(12 * HOP, seed=2))[0].codes
    make_bad, message = BAD_CODES[kind]
    dec, ref = StreamingDecoder(tiny, exact=exact), StreamingDecoder(tiny, exact=exact)
    got = [dec.push(codes[..., :3])]
    before = dec.frames_in
    with pytest.raises(InvalidCodesError, match=message):
        dec.push(make_bad(codes[..., 3:5]))
    assert dec.frames_in == before
    got += [dec.push(codes[..., 3:]), dec.flush()]
    want = [ref.push(codes[..., :3]), ref.push(codes[..., 3:]), ref.flush()]
    assert torch.equal(torch.cat(got, dim=-1), torch.cat(want, dim=-1))


def test_fast_streaming_decoder_takes_a_change_of_codebooks_during_its_warm_up(tiny: EncodecModel) -> None:
    """Exact mode decodes each push on its own, so K may change between pushes; fast mode now
    does too during its warm-up (the frames it gathers are padded with "no codebook")."""
    with torch.inference_mode():
        codes = tiny.encode(_signal(12 * HOP, seed=3))[0].codes  # K = 2
    outs = {}
    for exact in (True, False):
        dec = StreamingDecoder(tiny, exact=exact)
        outs[exact] = torch.cat([dec.push(codes[:, :1, :3]), dec.push(codes[..., 3:]), dec.flush()], dim=-1)
    ref = outs[True]
    assert outs[False].shape == ref.shape
    assert float((outs[False] - ref).norm() / ref.norm()) < 1e-4


# -- EncodecModel ---------------------------------------------------------------------------
@pytest.mark.parametrize("make_bad, message", [
    (lambda x: x.double(), "expected audio as a float32 torch.Tensor \\[B, C, T\\], got float64; convert with .float()"),
    (lambda x: x.half(), "got float16"),
    (lambda x: (x * 32767).short(), "got int16; integer PCM must be scaled"),
    (lambda x: x.numpy(), "got a numpy.ndarray"),
    (lambda x: _with_nan(_with_nan(x, 3), 9), "audio contains 2 non-finite sample\\(s\\) \\(NaN or inf\\)"),
])
def test_model_encode_checks_the_audio(tiny: EncodecModel, make_bad, message) -> None:
    with pytest.raises(InvalidAudioError, match=message):
        tiny.encode(make_bad(_signal(4 * HOP, seed=4)))


@pytest.mark.parametrize("exact", [True, False])
def test_model_decode_checks_the_frames(tiny: EncodecModel, exact: bool) -> None:
    with torch.inference_mode():
        codes = tiny.encode(_signal(4 * HOP, seed=5))[0].codes
    tiny.exact = exact
    try:
        with pytest.raises(InvalidCodesError, match="list of EncodedFrame.*got a Tensor"):
            tiny.decode(codes)
        with pytest.raises(InvalidCodesError, match="no code frames to decode"):
            tiny.decode([EncodedFrame(codes[..., :0], None)])
        with pytest.raises(InvalidCodesError, match="got 64 in codebook 1 at frame 2"):
            bad = codes.clone()
            bad[0, 1, 2] = 64
            tiny.decode([EncodedFrame(bad, None)])
        with pytest.raises(InvalidCodesError, match="integer"):
            tiny.decode([EncodedFrame(codes.float(), None)])
        with torch.inference_mode():  # int32 codes still decode, to the same audio
            assert torch.equal(tiny.decode([EncodedFrame(codes.int(), None)]),
                               tiny.decode([EncodedFrame(codes, None)]))
    finally:
        tiny.exact = True


def test_set_target_bandwidth_none_says_what_none_means(tiny: EncodecModel) -> None:
    with pytest.raises(UnsupportedBandwidthError, match=r"one of 0.9, 1.8 kbps, got None.*model.bandwidth = None"):
        tiny.set_target_bandwidth(None)  # type: ignore[arg-type]
    assert tiny.bandwidth == 1.8


def test_model_properties_have_docstrings() -> None:
    for name in ("sample_rate", "channels", "hop_length", "frame_rate", "target_bandwidths", "n_q",
                 "bins", "bits_per_codebook", "normalize"):
        assert getattr(EncodecModel, name).__doc__, name


def test_the_finite_check_says_what_compress_says(tiny: EncodecModel) -> None:
    """compress() and model.encode give one message for non-finite audio (both use input_checks)."""
    x = _with_nan(_signal(2 * HOP, seed=6), 7)
    with pytest.raises(InvalidAudioError) as low:
        tiny.encode(x)
    with pytest.raises(InvalidAudioError) as high:
        compress(tiny, x[0])
    assert str(low.value) == str(high.value) == "audio contains 1 non-finite sample(s) (NaN or inf)"


# -- batching -------------------------------------------------------------------------------
def test_encode_batch_checks_dtype_and_the_valid_samples(tiny: EncodecModel) -> None:
    wav = torch.cat([_signal(6 * HOP, seed=7), _signal(6 * HOP, seed=8)])
    lengths = [6 * HOP, 4 * HOP]
    with pytest.raises(InvalidAudioError, match="got float64"):
        encode_batch(tiny, wav.double(), lengths)
    inside = wav.clone()
    inside[1, 0, 3 * HOP] = float("inf")  # sample 960 of item 1, within its 1280
    with pytest.raises(InvalidAudioError, match="item 1: audio contains 1 non-finite"):
        encode_batch(tiny, inside, lengths)
    padded = wav.clone()
    padded[1, 0, 5 * HOP] = float("nan")  # past item 1's end: padding, which may hold anything
    assert torch.equal(encode_batch(tiny, padded, lengths).codes, encode_batch(tiny, wav, lengths).codes)


def test_decode_batch_checks_the_codes(tiny: EncodecModel) -> None:
    wav = torch.cat([_signal(6 * HOP, seed=9), _signal(6 * HOP, seed=10)])
    encoding = encode_batch(tiny, wav, [6 * HOP, 4 * HOP])
    assert int(encoding.codes[1, 0, -1]) == -1  # padding: decodes
    audio, _ = decode_batch(tiny, encoding)
    # -1 within an item's frames: the batched pass decoded it as code 0 (clamped), silently
    with torch.inference_mode():
        bad = encoding.codes.clone()
        bad[1, 0, 1] = -1
    with pytest.raises(InvalidCodesError, match="item 1: code -1 .* at frame 1, within its 4 frames"):
        decode_batch(tiny, type(encoding)(bad, encoding.frame_lengths, encoding.lengths, None))
    with torch.inference_mode():
        bad = encoding.codes.clone()
        bad[1, 1, 2] = 64
    with pytest.raises(InvalidCodesError, match="got 64 in codebook 1 at frame 2 of item 1"):
        decode_batch(tiny, type(encoding)(bad, encoding.frame_lengths, encoding.lengths, None))
    assert torch.equal(decode_batch(tiny, encoding)[0], audio)


# -- multistream ----------------------------------------------------------------------------
def _frames(x: torch.Tensor, start: int, count: int) -> torch.Tensor:
    return x[0, :, start * HOP:(start + count) * HOP]


@pytest.mark.parametrize("batched", [True, False])
def test_multistream_encoder_checks_the_whole_request_first(tiny: EncodecModel, batched: bool) -> None:
    """An unknown id or a bad frame for one stream consumes nothing of the others' frames
    (the first stream's frame used to be taken before the unknown id was found)."""
    x = _signal(12 * HOP, seed=11)
    ms, ref = MultiStreamEncoder(tiny, batched=batched), MultiStreamEncoder(tiny, batched=batched)
    a, b = ms.open(), ms.open()
    ra, rb = ref.open(), ref.open()
    with pytest.raises(KeyError, match="no open stream 99.*nothing in this push was consumed"):
        ms.push({a: _frames(x, 0, 1), 99: _frames(x, 0, 1)})
    with pytest.raises(InvalidAudioError, match=f"stream {b}: expected audio as a float32 .* got float64"):
        ms.push({a: _frames(x, 0, 1), b: _frames(x, 0, 1).double()})
    with pytest.raises(InvalidAudioError, match=f"stream {b}: audio contains 1 non-finite"):
        ms.push({a: _frames(x, 0, 1), b: _with_nan(x, 50)[0, :, :HOP]})
    assert ms.frames_in == {a: 0, b: 0}
    got: dict[int, list[torch.Tensor]] = {a: [], b: []}
    want: dict[int, list[torch.Tensor]] = {a: [], b: []}
    for f in range(10):
        out, exp = ms.push({a: _frames(x, f, 1), b: _frames(x, f, 1)}), ref.push({ra: _frames(x, f, 1), rb: _frames(x, f, 1)})
        got[a].append(out[a]); got[b].append(out[b])
        want[a].append(exp[ra]); want[b].append(exp[rb])
    with pytest.raises(InvalidAudioError, match="tail"):
        ms.close(a, tail=torch.zeros(1, 5, dtype=torch.float64))
    for sid, rid in ((a, ra), (b, rb)):
        assert torch.equal(torch.cat(got[sid] + [ms.close(sid, tail=x[0, :, 10 * HOP:10 * HOP + 7])], -1),
                           torch.cat(want[sid] + [ref.close(rid, tail=x[0, :, 10 * HOP:10 * HOP + 7])], -1))


@pytest.mark.parametrize("batched", [True, False])
def test_a_multistream_step_that_raises_loses_no_stream(tiny: EncodecModel, batched: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream a is live, b completes its warm-up in the push whose warm-up step raises: both
    streams are as before the push (b's warm-up frames used to be popped and a's state
    advanced, so b was lost and could not even be closed), and pushing again gives exactly
    what a stream that never saw the failure gives."""
    x = _signal(16 * HOP, seed=12)
    ms, ref = MultiStreamEncoder(tiny, batched=batched), MultiStreamEncoder(tiny, batched=batched)
    w = ms.warmup_frames
    pairs = []
    for enc in (ms, ref):
        a, b = enc.open(), enc.open()
        enc.push({a: _frames(x, 0, w)})
        enc.push({b: _frames(x, 0, w - 1)})
        pairs.append((a, b))
    (a, b), (ra, rb) = pairs
    frames_in = dict(ms.frames_in)

    def boom(*args: object) -> None:
        raise RuntimeError("boom")
    monkeypatch.setattr(ms._step, "start", boom)
    with pytest.raises(RuntimeError, match="boom"):
        ms.push({a: _frames(x, w, 1), b: _frames(x, w - 1, 2)})
    monkeypatch.undo()
    assert sorted(ms.streams) == [a, b] and ms.frames_in == frames_in
    out = ms.push({a: _frames(x, w, 1), b: _frames(x, w - 1, 2)})
    exp = ref.push({ra: _frames(x, w, 1), rb: _frames(x, w - 1, 2)})
    assert torch.equal(out[a], exp[ra]) and torch.equal(out[b], exp[rb])
    assert torch.equal(ms.close(a), ref.close(ra)) and torch.equal(ms.close(b), ref.close(rb))


@pytest.mark.parametrize("exact", [True, False])
def test_multistream_decoder_checks_codes_before_anything(tiny: EncodecModel, exact: bool) -> None:
    with torch.inference_mode():
        codes = tiny.encode(_signal(10 * HOP, seed=13))[0].codes[0]  # [2, 10]
    md = MultiStreamDecoder(tiny, exact=exact)
    d, e = md.open(), md.open()
    with pytest.raises(InvalidCodesError, match=f"stream {e}: codes must be in \\[0, 64\\); got 64"):
        md.push({d: codes[:, :2], e: codes[:, :2].clone().fill_(64)})
    with pytest.raises(InvalidCodesError, match=f"stream {e}: .*at most 4 codebooks"):
        md.push({d: codes[:, :2], e: torch.zeros(5, 2, dtype=torch.long)})  # used to wait for the warm-up
    with pytest.raises(KeyError, match="nothing in this push was consumed"):
        md.push({d: codes[:, :2], 99: codes[:, :2]})
    assert md.frames_in == {d: 0, e: 0}
    md.push({d: codes[:, :3]})
    if exact:  # one K during the warm-up (its frames are decoded together)
        with pytest.raises(InvalidCodesError, match=f"stream {d}: got 1 codebooks, but the 3 frame"):
            md.push({d: codes[:1, 3:4]})
    else:  # padded: any K
        md.push({d: codes[:1, 3:4]})


# -- PCM reader, long files ----------------------------------------------------------------
def test_raw_pcm_ending_inside_a_sample_frame_warns() -> None:
    from opencodec.stream.pcm import PcmFormat, PcmStreamReader

    data = np.arange(100, dtype="<i2").tobytes()
    for extra, warned in ((b"", False), (b"\x01", True)):
        reader = PcmStreamReader(io.BytesIO(data + extra), raw=PcmFormat(24000, 1, "s16"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            total = 0
            while (block := reader.read()) is not None:
                total += block.shape[0]
        assert total == 100
        messages = [str(w.message) for w in caught]
        assert bool(messages) == warned, messages
        if warned:
            assert "ended inside a sample frame (1 byte(s) dropped" in messages[0]


def test_long_file_reader_says_no_such_file(tiny: EncodecModel, tmp_path) -> None:
    from opencodec.longform import compress_file_streaming

    with pytest.raises(AudioIOError, match="nope.wav: no such file"):
        compress_file_streaming(tiny, tmp_path / "nope.wav", tmp_path / "out.ecdc", 0.9)
    assert not (tmp_path / "out.ecdc").exists()
