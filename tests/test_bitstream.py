"""The `.ecdc` format without a network: code packing, header and body parsing, errors."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import warnings

import numpy as np
import pytest
import torch

import official_ref  # noqa: F401  (installs the torchaudio stand-in before `encodec` imports)
from encodec import binary as official_binary

from opencodec import EncodecConfig, EncodecModel, EncodedFrame
from opencodec.bitstream import (
    HEADER_STRUCT, MAX_HEADER_JSON_BYTES, BitPacker, BitUnpacker, EcdcHeader, StreamLayout,
    body_size, encode_ecdc, pack_codes, packed_size, parse_header, read_body, read_ecdc,
    read_header, unpack_codes, write_header,
)
from opencodec.errors import BitstreamError

LAYOUT_24 = StreamLayout(model_name="encodec_24khz", n_q=32, bits=10, hop_length=320, normalize=False)
LAYOUT_48 = StreamLayout(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                         segment_length=48000, segment_stride=47520)


def _official_pack(values: list[int], bits: int) -> bytes:
    fo = io.BytesIO()
    packer = official_binary.BitPacker(bits, fo)
    for value in values:
        packer.push(value)
    packer.flush()
    return fo.getvalue()


def _header_bytes(meta: object, *, magic: bytes = b"ECDC", version: int = 0,
                  length: int | None = None) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack("!4sBI", magic, version, len(raw) if length is None else length) + raw


def _random_frames(layout: StreamLayout, header: EcdcHeader, seed: int = 0) -> list[EncodedFrame]:
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for _, length in layout.segments(header.audio_length):
        codes = torch.randint(0, 1 << layout.bits, (1, header.num_codebooks, layout.num_frames(length)),
                              generator=gen)
        scale = torch.rand(1, 1, generator=gen) + 0.01 if layout.normalize else None
        frames.append(EncodedFrame(codes, scale))
    return frames


# -- packing --------------------------------------------------------------------------------
def test_known_vector() -> None:
    assert pack_codes(torch.tensor([[1], [2], [1023]]), 10) == bytes.fromhex("0108f03f")
    assert pack_codes(np.array([[1, 2, 1023]]).T, 10) == _official_pack([1, 2, 1023], 10)
    codes = unpack_codes(bytes.fromhex("0108f03f"), 3, 1, 10)
    assert codes.dtype == torch.long and codes[:, 0].tolist() == [1, 2, 1023]


def test_time_major_order() -> None:
    codes = torch.tensor([[1, 2], [3, 4]])  # [K=2, F=2]: written 1, 3, 2, 4
    assert pack_codes(codes, 8) == bytes([1, 3, 2, 4])
    assert unpack_codes(bytes([1, 3, 2, 4]), 2, 2, 8).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 7, 8, 9, 10, 11, 13, 15, 16, 17, 24, 31, 32])
def test_pack_roundtrip_matches_official(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for num_codebooks, num_frames in [(1, 1), (3, 5), (7, 13), (2, 301)]:
        codes = rng.integers(0, 1 << bits, size=(num_codebooks, num_frames), dtype=np.int64)
        codes[0, 0] = (1 << bits) - 1  # the extremes always appear
        codes[-1, -1] = 0
        data = pack_codes(codes, bits)
        assert len(data) == packed_size(codes.size, bits)
        assert data == _official_pack(codes.T.reshape(-1).tolist(), bits)
        back = unpack_codes(data, num_codebooks, num_frames, bits)
        assert back.dtype == torch.long and back.shape == (num_codebooks, num_frames)
        np.testing.assert_array_equal(back.numpy(), codes)


def test_pack_large_crosses_chunks() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, size=(3, 200_001))  # > one internal block of values
    data = pack_codes(codes, 10)
    assert len(data) == packed_size(codes.size, 10)
    np.testing.assert_array_equal(unpack_codes(data, 3, 200_001, 10).numpy(), codes)
    head = codes[:, :1000]
    assert data[:packed_size(head.size, 10)] == _official_pack(head.T.reshape(-1).tolist(), 10)


def test_padding_bits_are_zero_and_ignored() -> None:
    data = pack_codes([[7]], 3)
    assert data == bytes([7])
    assert unpack_codes(bytes([0xFF]), 1, 1, 3).tolist() == [[7]]


def test_streaming_packer_matches_vectorised() -> None:
    rng = np.random.default_rng(1)
    for bits in (3, 10, 16):
        values = rng.integers(0, 1 << bits, size=101).tolist()
        fo = io.BytesIO()
        packer = BitPacker(bits, fo)
        for value in values:
            packer.push(value)
        packer.flush()
        assert fo.getvalue() == pack_codes(np.array([values]), bits)
        fo.seek(0)
        unpacker = BitUnpacker(bits, fo)
        assert [unpacker.pull() for _ in values] == values
    with pytest.raises(BitstreamError, match="ended"):
        BitUnpacker(10, io.BytesIO(b"\x01")).pull()
    with pytest.raises(BitstreamError, match="out of range"):
        BitPacker(10, io.BytesIO()).push(1024)


@pytest.mark.parametrize("bad", [[[-1]], [[1024]], [[0, 5000]]])
def test_pack_out_of_range(bad: list) -> None:
    with pytest.raises(BitstreamError, match="out of range for 10-bit"):
        pack_codes(torch.tensor(bad), 10)


def test_pack_argument_errors() -> None:
    with pytest.raises(ValueError, match="integers"):
        pack_codes(torch.zeros(2, 2), 10)
    with pytest.raises(ValueError, match=r"shape \[K, F\]"):
        pack_codes(torch.zeros(4, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(torch.zeros(1, 1, dtype=torch.long), 0)


def test_unpack_wrong_size() -> None:
    data = pack_codes(torch.zeros(4, 3, dtype=torch.long), 10)  # 120 bits = 15 bytes
    with pytest.raises(BitstreamError, match="expected 15 bytes .* got 14"):
        unpack_codes(data[:-1], 4, 3, 10)
    with pytest.raises(BitstreamError, match="expected 15 bytes .* got 16"):
        unpack_codes(data + b"\0", 4, 3, 10)


# -- header -----------------------------------------------------------------------------------
@pytest.mark.parametrize("meta", [
    {"m": "encodec_24khz", "al": 24017, "nc": 8, "lm": False},
    {"m": "encodec_48khz", "al": 1, "nc": 16, "lm": True},
    {"m": "modèle ünïcode", "al": 2 ** 40, "nc": 1, "lm": False},
])
def test_header_matches_official(meta: dict) -> None:
    header = EcdcHeader(meta["m"], meta["al"], meta["nc"], meta["lm"])
    ours, theirs = io.BytesIO(), io.BytesIO()
    written = write_header(ours, header)
    official_binary.write_ecdc_header(theirs, meta)
    assert ours.getvalue() == theirs.getvalue()
    assert written == len(ours.getvalue())
    assert header.to_json() == json.dumps(meta).encode()
    ours.write(b"body")
    ours.seek(0)
    assert read_header(ours) == header
    assert ours.read() == b"body"  # left at the body
    assert parse_header(theirs.getvalue()) == (header, len(theirs.getvalue()))
    assert official_binary.read_ecdc_header(io.BytesIO(theirs.getvalue())) == meta
    assert EcdcHeader.from_json(header.to_json()) == header


def test_header_extra_keys_ignored() -> None:
    data = _header_bytes({"m": "x", "al": 5, "nc": 2, "lm": False, "future": [1, 2]})
    with pytest.warns(UserWarning, match=r"^ECDC header: unknown key\(s\) 'future' ignored \(known: m, al, "
                                         r"nc, lm, mh, lmh\)"):
        assert parse_header(data)[0] == EcdcHeader("x", 5, 2, False)


GOOD = {"m": "encodec_24khz", "al": 100, "nc": 2, "lm": False}


@pytest.mark.parametrize("data, pattern", [
    (b"", r"truncated: expected 9 bytes .* got 0"),
    (b"ECD", r"truncated: expected 9 bytes .* got 3"),
    (b"ECDC\x00\x00\x00", r"truncated: expected 9 bytes .* got 7"),
    (b"RIFF\x00\x00\x00\x00", r"magic expected b'ECDC', got b'RIFF'"),
    (_header_bytes(GOOD, magic=b"ecdc"), r"magic expected b'ECDC', got b'ecdc'"),
    (_header_bytes(GOOD, version=1), r"version 1 \(deterministic entropy coding\) header: field 'lm' must be true"),
    (_header_bytes(GOOD, version=255), r"version: expected 0 \(official format\) or 1 .*got 255"),
    (_header_bytes(GOOD)[:-1], r"JSON length field says \d+ bytes, only \d+ available"),
    (_header_bytes(GOOD, length=0xFFFFFFFF), r"says 4294967295 bytes, only \d+ available"),
    (_header_bytes(b"\xff\xfe{}"), r"not valid UTF-8"),
    (_header_bytes(b'{"m": "x", "al": 1'), r"invalid JSON"),
    (_header_bytes(b""), r"invalid JSON"),
    (_header_bytes(b"[" * 50_000), r"invalid JSON"),  # nesting deeper than the recursion limit
    (_header_bytes([1, 2]), r"expected a JSON object, got list"),
    (_header_bytes(3), r"expected a JSON object, got int"),
    (_header_bytes({"m": "x", "al": 1, "nc": 1}), r"missing key\(s\) 'lm'"),
    (_header_bytes({}), r"missing key\(s\) 'm', 'al', 'nc', 'lm'"),
    (_header_bytes({**GOOD, "m": ""}), r"'m' \(model name\): expected a non-empty string, got str ''"),
    (_header_bytes({**GOOD, "m": 24}), r"'m' .*got int 24"),
    (_header_bytes({**GOOD, "al": True}), r"'al' \(audio length\): expected an integer >= 1, got bool True"),
    (_header_bytes({**GOOD, "al": 100.0}), r"'al' .*got float 100.0"),
    (_header_bytes({**GOOD, "al": "100"}), r"'al' .*got str '100'"),
    (_header_bytes({**GOOD, "al": 0}), r"'al' .*>= 1, got 0"),
    (_header_bytes({**GOOD, "al": -5}), r"'al' .*>= 1, got -5"),
    (_header_bytes({**GOOD, "al": None}), r"'al' .*got NoneType"),
    (_header_bytes({**GOOD, "nc": False}), r"'nc' \(number of codebooks\): .*got bool False"),
    (_header_bytes({**GOOD, "nc": 0}), r"'nc' .*got 0"),
    (_header_bytes({**GOOD, "nc": 1.5}), r"'nc' .*got float 1.5"),
    (_header_bytes({**GOOD, "lm": 0}), r"'lm' \(entropy coded\): expected true or false, got int 0"),
    (_header_bytes({**GOOD, "lm": "false"}), r"'lm' .*got str 'false'"),
    (_header_bytes(b'{"m": "x", "al": NaN, "nc": 1, "lm": false}'), r"'al' .*got float nan"),
    (_header_bytes(b'{"m": "x", "al": ' + b"9" * 5000 + b', "nc": 1, "lm": false}'), r"invalid JSON"),
])
def test_header_errors(data: bytes, pattern: str) -> None:
    with pytest.raises(BitstreamError, match=pattern):
        parse_header(data)


def test_header_json_limit_never_reads_gigabytes() -> None:
    class EndlessZeros(io.RawIOBase):
        """A stream that never ends; fails if asked for more than a few MiB at once."""

        def __init__(self, prefix: bytes):
            self.prefix = prefix
            self.served = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            assert 0 <= size <= (1 << 20), f"asked for {size} bytes"
            self.served += size
            if self.prefix:
                out, self.prefix = self.prefix[:size], self.prefix[size:]
                return out
            return bytes(size)

    stream = EndlessZeros(struct.pack("!4sBI", b"ECDC", 0, 0xFFFFFFFF))
    with pytest.raises(BitstreamError, match=f"4294967295 bytes, at most {MAX_HEADER_JSON_BYTES} allowed"):
        read_header(stream)  # type: ignore[arg-type]
    assert stream.served < 2 * MAX_HEADER_JSON_BYTES


def test_header_json_limit_is_inclusive() -> None:
    """The documented limit (MAX_HEADER_JSON_BYTES = 2^16, "largest JSON header accepted") is
    inclusive for a reader: a JSON of exactly 65536 bytes is read, one byte more is refused. A
    model name is at most 200 characters, so only another writer's extra key (ignored with a
    warning) makes a header that long. The bytes come from the official writer."""
    assert MAX_HEADER_JSON_BYTES == 65536
    short = {"m": "m", "al": 10, "nc": 2, "lm": False, "pad": ""}
    pad = "p" * (65536 - len(json.dumps(short).encode()))
    meta = {**short, "pad": pad}
    theirs = io.BytesIO()
    official_binary.write_ecdc_header(theirs, meta)
    data = theirs.getvalue()
    assert data[:9] == struct.pack("!4sBI", b"ECDC", 0, 65536) and len(data) == 9 + 65536
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unknown key 'pad'
        assert parse_header(data + b"body") == (EcdcHeader("m", 10, 2, False), 9 + 65536)
        assert read_header(io.BytesIO(data)) == EcdcHeader("m", 10, 2, False)
    theirs = io.BytesIO()
    official_binary.write_ecdc_header(theirs, {**meta, "pad": pad + "p"})
    data = theirs.getvalue()
    assert data[:9] == struct.pack("!4sBI", b"ECDC", 0, 65537)
    with pytest.raises(BitstreamError, match="JSON length field says 65537 bytes, at most 65536 allowed"):
        read_header(io.BytesIO(data))
    with pytest.raises(BitstreamError, match="JSON length field says 65537 bytes, at most 65536 allowed"):
        parse_header(data + b"body")


def test_header_constructor_validates() -> None:
    with pytest.raises(BitstreamError, match="'nc'"):
        EcdcHeader("encodec_24khz", 10, 0, False)
    with pytest.raises(BitstreamError, match="'m'"):
        EcdcHeader("", 10, 1, False)


# -- body -------------------------------------------------------------------------------------
def test_layout_from_models() -> None:
    small = dict(n_filters=2, dimension=4, lstm=0)
    m24 = EncodecModel(EncodecConfig(**{**EncodecConfig.encodec_24khz().to_dict(), **small}))
    m48 = EncodecModel(EncodecConfig(**{**EncodecConfig.encodec_48khz().to_dict(), **small}))
    # an official name on weights not proven official: its files name it <name>_custom
    # (opencodec.identity.header_identity), and so does its layout
    assert StreamLayout.from_model(m24) == dataclasses.replace(LAYOUT_24, model_name="encodec_24khz_custom")
    assert StreamLayout.from_model(m48) == dataclasses.replace(LAYOUT_48, model_name="encodec_48khz_custom")
    assert StreamLayout.from_config(m48.config) == LAYOUT_48
    header = EcdcHeader("encodec_48khz_custom", 50_000, 3, False)
    data = encode_ecdc(header, _random_frames(LAYOUT_48, header), m48)  # a model serves as layout
    assert read_ecdc(data, m48)[0] == header
    for length in (1, 47520, 47521, 48000, 95040, 95041, 480_000):
        assert LAYOUT_48.segments(length) == m48.segments(length)
        assert all(LAYOUT_48.num_frames(n) == m48.num_frames(n) for _, n in m48.segments(length))


@pytest.mark.parametrize("layout", [LAYOUT_24, LAYOUT_48], ids=["24k", "48k"])
@pytest.mark.parametrize("audio_length", [1, 319, 320, 321, 6720, 47520, 47521, 48000, 95041, 100_000])
def test_body_roundtrip(layout: StreamLayout, audio_length: int) -> None:
    header = EcdcHeader(layout.model_name or "x", audio_length, 3, False)
    frames = _random_frames(layout, header, seed=audio_length)
    data = encode_ecdc(header, frames, layout)
    assert len(data) == HEADER_STRUCT.size + len(header.to_json()) + body_size(header, layout)
    got_header, got = read_ecdc(data, layout)
    assert got_header == header
    assert len(got) == len(layout.segments(audio_length)) == len(frames)
    for (codes, scale), (ref_codes, ref_scale) in zip(got, frames):
        assert codes.dtype == torch.long
        assert torch.equal(codes, ref_codes)
        if layout.normalize:
            assert scale is not None and scale.shape == (1, 1) and scale.dtype == torch.float32
            assert torch.equal(scale, ref_scale)
        else:
            assert scale is None and ref_scale is None


def test_body_layout_48k_bytes() -> None:
    """Hand-check: per segment a big-endian float32 scale, then the packed codes."""
    header = EcdcHeader("encodec_48khz", 47521, 2, False)  # segments of 47521 and 1 samples
    frames = [EncodedFrame(torch.full((1, 2, 149), 5), torch.tensor([[0.5]])),
              EncodedFrame(torch.tensor([[[1], [1023]]]), torch.tensor([[2.0]]))]
    body = encode_ecdc(header, frames, LAYOUT_48)[HEADER_STRUCT.size + len(header.to_json()):]
    assert body[:4] == struct.pack("!f", 0.5)
    assert body[4:4 + 373] == pack_codes(torch.full((2, 149), 5), 10)  # 2 * 149 * 10 bits
    assert body[377:] == struct.pack("!f", 2.0) + bytes.fromhex("01fc0f")


def test_body_size_closed_form() -> None:
    rng = np.random.default_rng(5)
    tiny = StreamLayout(model_name="t", n_q=4, bits=3, hop_length=8, normalize=True,
                        segment_length=40, segment_stride=30)
    dense = StreamLayout(model_name="t", n_q=4, bits=3, hop_length=8, normalize=True,
                         segment_length=40, segment_stride=1)
    for layout in (LAYOUT_24, LAYOUT_48, tiny, dense):
        for audio_length in [1, 2, 29, 30, 31, 39, 40, 41, 70, 71, *rng.integers(1, 300_000, 20).tolist()]:
            header = EcdcHeader("t", audio_length, 3, False)
            expected = sum(layout.segment_size(n, 3) for _, n in layout.segments(audio_length))
            assert body_size(header, layout) == expected


def test_huge_audio_length_fails_fast() -> None:
    header = EcdcHeader("encodec_48khz", 10 ** 15, 16, False)
    expected = body_size(header, LAYOUT_48)
    assert expected > 10 ** 12
    fo = io.BytesIO()
    write_header(fo, header)
    data = fo.getvalue() + bytes(3004)  # the body of a one-frame file
    body = len(data) - parse_header(data)[1]
    with pytest.raises(BitstreamError, match=f"got {body} \\({expected - body} missing\\)"):
        read_ecdc(data, LAYOUT_48)


def _valid_file(layout: StreamLayout = LAYOUT_48, audio_length: int = 50_000, nc: int = 4) -> bytes:
    header = EcdcHeader(layout.model_name or "x", audio_length, nc, False)
    return encode_ecdc(header, _random_frames(layout, header), layout)


def test_body_truncated_and_extra() -> None:
    data = _valid_file()
    for cut in (1, 7, 600):
        with pytest.raises(BitstreamError, match=rf"truncated: expected \d+ bytes .*\({cut} missing\)"):
            read_ecdc(data[:-cut], LAYOUT_48)
    for extra in (1, 5):
        with pytest.raises(BitstreamError, match=rf"{extra} extra byte\(s\) after the last segment"):
            read_ecdc(data + bytes(extra), LAYOUT_48)
    header_end = parse_header(data)[1]
    with pytest.raises(BitstreamError, match="missing"):
        read_ecdc(data[:header_end], LAYOUT_48)


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, -math.inf, math.nan])
def test_bad_scale(value: float) -> None:
    data = bytearray(_valid_file())
    header_end = parse_header(bytes(data))[1]
    # the second segment's scale sits after the first segment's record
    second = header_end + LAYOUT_48.segment_size(48000, 4)
    data[second:second + 4] = struct.pack("!f", value)
    with pytest.raises(BitstreamError, match=r"segment 1 \(sample 47520\): scale must be finite and > 0"):
        read_ecdc(bytes(data), LAYOUT_48)


def _with_header(data: bytes, header: EcdcHeader) -> bytes:
    """``data`` with its header replaced by ``header`` (same body)."""
    fo = io.BytesIO()
    write_header(fo, header)
    return fo.getvalue() + data[parse_header(data)[1]:]


def test_header_body_mismatch_errors() -> None:
    data = _valid_file(LAYOUT_24, 1000, nc=32)
    assert read_ecdc(data, LAYOUT_24)[0].num_codebooks == 32
    with pytest.raises(BitstreamError, match="'nc' .*at most 16, got 32"):
        read_ecdc(data.replace(b"encodec_24khz", b"encodec_48khz"), LAYOUT_48)
    with pytest.raises(BitstreamError,
                       match="written by model 'encodec_24khz'.*read with model 'encodec_48khz'"):
        read_ecdc(data, LAYOUT_48)
    lm = _with_header(data, EcdcHeader("encodec_24khz", 1000, 32, True))
    with pytest.raises(BitstreamError, match=r"entropy model .*can only be read with that entropy model"):
        read_ecdc(lm, LAYOUT_24)  # without the entropy model (lm=...) its body cannot be parsed
    anonymous = StreamLayout(model_name=None, n_q=32, bits=10, hop_length=320, normalize=False)
    other = _with_header(data, EcdcHeader("other", 1000, 32, False))
    assert read_ecdc(other, anonymous)[0].model_name == "other"


def test_read_body_direct() -> None:
    header = EcdcHeader("encodec_24khz", 641, 2, False)
    codes = torch.arange(6).reshape(1, 2, 3)
    body = pack_codes(codes[0], 10)
    frames = read_body(body, header, LAYOUT_24)
    assert len(frames) == 1 and torch.equal(frames[0].codes, codes) and frames[0].scale is None


def test_write_checks_frames() -> None:
    header = EcdcHeader("encodec_48khz", 50_000, 2, False)
    frames = _random_frames(LAYOUT_48, header)
    with pytest.raises(ValueError, match="expected 2 segment"):
        encode_ecdc(header, frames[:1], LAYOUT_48)
    with pytest.raises(ValueError, match="shape"):
        encode_ecdc(header, [frames[0], EncodedFrame(frames[1].codes[:, :1], frames[1].scale)], LAYOUT_48)
    with pytest.raises(ValueError, match="scale"):
        encode_ecdc(header, [EncodedFrame(f.codes, None) for f in frames], LAYOUT_48)
