"""Property-based robustness of the `.ecdc` reader: damaged files parse to a structurally
valid result or raise `BitstreamError`, never another exception, never a hang."""

from __future__ import annotations

import io
import json
import math
import struct
import typing as tp

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from opencodec import EncodecConfig, EncodecModel, EncodedFrame
from opencodec.bitstream import (
    HEADER_STRUCT, EcdcHeader, StreamLayout, body_size, encode_ecdc, parse_header, read_ecdc,
    write_header,
)
from opencodec.compress import decompress
from opencodec.errors import BitstreamError

LAYOUTS = {
    "24k": StreamLayout(model_name="encodec_24khz", n_q=32, bits=10, hop_length=320, normalize=False),
    "48k": StreamLayout(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                        segment_length=48000, segment_stride=47520),
    # many short segments, 3-bit codes: exercises segment boundaries and odd bit widths
    "tiny": StreamLayout(model_name="tiny", n_q=4, bits=3, hop_length=8, normalize=True,
                         segment_length=40, segment_stride=30),
}
MAX_LENGTH = {"24k": 3000, "48k": 100_000, "tiny": 400}
# "never a hang": each test here takes seconds (8 s the longest, one idle core). The thread
# method ends the run: hypothesis would catch a signal's failure and retry the hanging input.
pytestmark = pytest.mark.timeout(120, method="thread")


def fuzz_settings(examples: int) -> tp.Callable[[tp.Callable], tp.Callable]:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _make_file(layout: StreamLayout, audio_length: int, num_codebooks: int, seed: int) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    header = EcdcHeader(layout.model_name or "x", audio_length, num_codebooks, False)
    frames = []
    for _, length in layout.segments(audio_length):
        shape = (1, num_codebooks, layout.num_frames(length))
        codes = torch.randint(0, 1 << layout.bits, shape, generator=gen)
        scale = torch.rand(1, 1, generator=gen) * 2 + 1e-3 if layout.normalize else None
        frames.append(EncodedFrame(codes, scale))
    return encode_ecdc(header, frames, layout)


@st.composite
def valid_files(draw: st.DrawFn, layouts: tp.Sequence[str] = tuple(LAYOUTS)) -> tuple[str, bytes]:
    key = draw(st.sampled_from(layouts))
    layout = LAYOUTS[key]
    audio_length = draw(st.integers(1, MAX_LENGTH[key]))
    num_codebooks = draw(st.integers(1, layout.n_q))
    return key, _make_file(layout, audio_length, num_codebooks, draw(st.integers(0, 2 ** 16)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.integers(-3, 200_000)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: (st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=3), children, max_size=3)),
    max_leaves=6,
)


def _rewrite_json(data: bytes, meta_json: bytes, keep_length_field: bool) -> bytes:
    _, version, old_len = HEADER_STRUCT.unpack_from(data)
    start = HEADER_STRUCT.size
    length = old_len if keep_length_field else len(meta_json)
    return HEADER_STRUCT.pack(b"ECDC", version, length) + meta_json + data[start + old_len:]


@st.composite
def position(draw: st.DrawFn, data: bytes, end: bool = False) -> int:
    """A byte offset in ``data`` (``len(data)`` too when ``end``), spread over the fixed
    header, the JSON, the body and its last bytes rather than clustered at 0."""
    n = len(data) + int(end)
    json_end = min(n, HEADER_STRUCT.size + max(0, int.from_bytes(data[5:9], "big")))
    regions = {"fixed": (0, min(n, HEADER_STRUCT.size)), "json": (HEADER_STRUCT.size, json_end),
               "body": (json_end, n), "tail": (max(0, n - 16), n)}
    low, high = regions[draw(st.sampled_from(["fixed", "json", "body", "body", "body", "tail", "tail"]))]
    if high <= low:
        low, high = 0, n
    return draw(st.integers(low, high - 1))


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """One random damage to ``data``."""
    kind = draw(st.sampled_from(["flip", "flip", "set", "set", "truncate", "insert", "append", "delete",
                                 "json_field", "json_key", "length_field", "header_byte"]))
    n = len(data)
    if n == 0:
        return draw(st.binary(min_size=1, max_size=16))
    if kind.startswith("json"):
        try:
            header, _ = parse_header(data)
        except BitstreamError:  # an earlier mutation broke the header: damage it further
            kind = "set"
    if kind == "flip":
        pos = draw(position(data))
        bit = draw(st.integers(0, 7))
        return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1:]
    if kind == "set":
        pos = draw(position(data))
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    if kind == "truncate":
        return data[:draw(position(data))]
    if kind == "insert":
        pos = draw(position(data, end=True))
        return data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if kind == "delete":
        pos = draw(position(data))
        return data[:pos] + data[pos + draw(st.integers(1, 16)):]
    if kind == "header_byte":  # damage within the fixed part and the JSON only
        pos = draw(st.integers(0, min(n, 80) - 1))
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    if kind == "length_field":
        length = draw(st.one_of(st.integers(0, 200), st.integers(0, 2 ** 32 - 1)))
        return data[:5] + struct.pack("!I", length) + data[9:]
    meta: dict[str, tp.Any] = header.to_dict()
    if kind == "json_field":
        key = draw(st.sampled_from(["m", "al", "nc", "lm"]))
        meta[key] = draw(st.one_of(json_values, st.sampled_from(
            [0, 1, -1, True, False, "", "tiny", "encodec_24khz", "encodec_48khz",
             meta["al"] + 1, meta["al"] - 1, meta["al"] + 400, meta["nc"] + 1, meta["nc"] - 1, 2 ** 32])))
    else:  # json_key: drop or add a key
        if draw(st.booleans()):
            del meta[draw(st.sampled_from(sorted(meta)))]
        else:
            meta[draw(st.text(max_size=4))] = draw(json_values)
    encoded = json.dumps(meta).encode()
    return _rewrite_json(data, encoded, keep_length_field=draw(st.booleans()))


def check_parse(data: bytes, layout: StreamLayout, record: bool = True) -> None:
    """Parse ``data``: a BitstreamError, or a result consistent with its header.
    ``record``: count the outcome in Hypothesis' statistics (inside a test only)."""
    try:
        header, frames = read_ecdc(data, layout)
    except BitstreamError as exc:
        assert str(exc)  # always says something
        if record:
            event("rejected: " + str(exc).split(":")[0][:40])
        return
    if record:
        event("parsed")
    assert isinstance(header.model_name, str) and header.model_name == layout.model_name
    for value in (header.audio_length, header.num_codebooks):
        assert type(value) is int and value >= 1
    assert header.num_codebooks <= layout.n_q and header.use_lm is False
    segments = layout.segments(header.audio_length)
    assert len(frames) == len(segments)
    for (codes, scale), (_, length) in zip(frames, segments):
        assert codes.dtype == torch.long
        assert codes.shape == (1, header.num_codebooks, layout.num_frames(length))
        assert int(codes.min()) >= 0 and int(codes.max()) < 2 ** layout.bits
        if layout.normalize:
            assert scale is not None and scale.shape == (1, 1) and scale.dtype == torch.float32
            assert math.isfinite(float(scale)) and float(scale) > 0
        else:
            assert scale is None
    assert len(data) == parse_header(data)[1] + body_size(header, layout)


@fuzz_settings(1200)
@given(st.data())
def test_mutated_files(data: st.DataObject) -> None:
    key, original = data.draw(valid_files())
    damaged = original
    for _ in range(data.draw(st.integers(1, 3))):
        damaged = data.draw(mutation(damaged))
    check_parse(damaged, LAYOUTS[key])


@fuzz_settings(600)
@given(valid_files(), st.data())
def test_json_edits(file: tuple[str, bytes], data: st.DataObject) -> None:
    key, original = file
    header, _ = parse_header(original)
    meta = header.to_dict()
    for _ in range(data.draw(st.integers(1, 2))):
        field = data.draw(st.sampled_from(["m", "al", "nc", "lm"]))
        meta[field] = data.draw(st.one_of(json_values, st.integers(-2, 2 * header.audio_length + 50)))
    damaged = _rewrite_json(original, json.dumps(meta).encode(), keep_length_field=False)
    check_parse(damaged, LAYOUTS[key])


@fuzz_settings(600)
@given(st.sampled_from(sorted(LAYOUTS)), st.binary(max_size=300), st.data())
def test_random_bytes(key: str, payload: bytes, data: st.DataObject) -> None:
    fo = io.BytesIO()
    write_header(fo, EcdcHeader(LAYOUTS[key].model_name or "x", data.draw(st.integers(1, 500)),
                                data.draw(st.integers(1, 4)), False))
    prefix = data.draw(st.sampled_from([b"", b"ECDC", b"ECDC\x00", b"ECDC\x00\x00\x00\x00", fo.getvalue()]))
    check_parse(prefix + payload, LAYOUTS[key])


@fuzz_settings(400)
@given(st.sampled_from(sorted(LAYOUTS)), json_values, st.binary(max_size=200))
def test_random_headers(key: str, meta: tp.Any, body: bytes) -> None:
    raw = json.dumps(meta).encode()
    check_parse(HEADER_STRUCT.pack(b"ECDC", 0, len(raw)) + raw + body, LAYOUTS[key])


@fuzz_settings(300)
@given(st.sampled_from(sorted(LAYOUTS)), st.integers(1, 2 ** 63), st.integers(1, 40),
       st.booleans(), st.binary(max_size=64))
def test_header_sizes_never_hang(key: str, audio_length: int, num_codebooks: int, lm: bool,
                                 body: bytes) -> None:
    """Any length in the header is checked against the body arithmetically, fast."""
    layout = LAYOUTS[key]
    fo = io.BytesIO()
    write_header(fo, EcdcHeader(layout.model_name or "x", audio_length, num_codebooks, lm))
    check_parse(fo.getvalue() + body, layout)


def test_unmodified_files_parse() -> None:
    for key, layout in LAYOUTS.items():
        for audio_length in (1, 41, 333, MAX_LENGTH[key]):
            data = _make_file(layout, audio_length, layout.n_q, seed=audio_length)
            header, frames = read_ecdc(data, layout)
            assert header.audio_length == audio_length and len(frames) == len(layout.segments(audio_length))
            check_parse(data, layout, record=False)


# -- the whole decompress path, with tiny networks -----------------------------------------------
TINY_CONFIGS = {
    "tiny_mono": EncodecConfig(name="tiny_mono", sample_rate=8000, channels=1, n_filters=2, dimension=4,
                               ratios=[4, 2], lstm=0, n_q=4, bins=1024, target_bandwidths=[10.0, 40.0]),
    "tiny_stereo": EncodecConfig(name="tiny_stereo", sample_rate=8000, channels=2, causal=False,
                                 norm="time_group_norm", normalize=True, segment=0.01, n_filters=2,
                                 dimension=4, ratios=[4, 2], lstm=1, n_q=4, bins=16,
                                 target_bandwidths=[4.0, 16.0]),
}


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, EncodecModel]:
    torch.manual_seed(0)
    models = {name: EncodecModel(cfg) for name, cfg in TINY_CONFIGS.items()}
    for model in models.values():
        with torch.no_grad():
            for layer in model.quantizer.vq.layers:
                layer._codebook.embed.copy_(torch.randn_like(layer._codebook.embed))
                layer._codebook.inited.fill_(1.0)
    return models


def test_tiny_models_roundtrip(tiny_models: dict[str, EncodecModel]) -> None:
    from opencodec.compress import compress
    for model in tiny_models.values():
        wav = torch.randn(model.channels, 333) * 0.1
        data = compress(model, wav, bandwidth=model.target_bandwidths[-1])
        out, rate = decompress(data, model)
        assert rate == 8000 and out.shape == (model.channels, 333) and bool(torch.isfinite(out).all())
        # the file carries exactly the model's codes and scales, and decodes to its own decode
        model.set_target_bandwidth(model.target_bandwidths[-1])
        with torch.no_grad():
            expected_frames = model.encode(wav[None])
            expected = model.decode(expected_frames)[0, :, :333]
        _, frames = read_ecdc(data, StreamLayout.from_model(model))
        assert len(frames) == len(expected_frames) == len(model.segments(333))
        for (codes, scale), want in zip(frames, expected_frames):
            assert torch.equal(codes, want.codes)
            assert (scale is None) == (want.scale is None)
            if scale is not None:
                assert torch.equal(scale, want.scale)
        assert torch.equal(out, expected)
        assert float(out.abs().max()) > 0


@fuzz_settings(80)
@given(st.sampled_from(sorted(TINY_CONFIGS)), st.integers(1, 300), st.data())
def test_decompress_mutated(tiny_models: dict[str, EncodecModel], name: str, audio_length: int,
                            data: st.DataObject) -> None:
    model = tiny_models[name]
    layout = StreamLayout.from_model(model)
    num_codebooks = data.draw(st.integers(1, model.n_q))
    damaged = _make_file(layout, audio_length, num_codebooks, seed=audio_length)
    mutated = data.draw(st.booleans())
    if mutated:
        damaged = data.draw(mutation(damaged))
    try:
        wav, rate = decompress(damaged, model)
    except BitstreamError:
        assert mutated, "an undamaged file must decode"
        return
    header, _ = parse_header(damaged)
    assert rate == model.sample_rate
    assert wav.shape == (model.channels, header.audio_length)
