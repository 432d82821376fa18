"""Bytes on disk, header fields and refusals of the ``.ecdc`` format that the broader tests
leave unpinned (each test here fails for a plausible bug in the format code that every
other test lets through)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch

from opencodec import EncodedFrame
from opencodec.bitstream import (EcdcHeader, StreamLayout, encode_ecdc, pack_codes, packed_size,
                                 parse_header, read_ecdc, unpack_codes, write_header)
from opencodec.bitstream.packing import _CHUNK_VALUES
from opencodec.errors import BitstreamError

LAYOUT_24 = StreamLayout(model_name="encodec_24khz", n_q=32, bits=10, hop_length=320, normalize=False)
LAYOUT_48 = StreamLayout(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                         segment_length=48000, segment_stride=47520)


def _header_bytes(meta: dict, version: int = 0) -> bytes:
    raw = json.dumps(meta).encode()
    return struct.pack("!4sBI", b"ECDC", version, len(raw)) + raw


# -- header fields ------------------------------------------------------------------------------
@pytest.mark.parametrize("digest", ["0123456789ABCDEF", "0123456789abcdeg", "0123456789abcde ",
                                    "０123456789abcde"])
@pytest.mark.parametrize("key", ["mh", "lmh"])
def test_weights_hash_must_be_lowercase_hex(key: str, digest: str) -> None:
    """``mh``/``lmh`` are 16 *lowercase hex* digits: any other 16 characters are refused, not
    carried into the identity check (where an uppercase copy of a real hash would not match)."""
    meta = {"m": "mine", "al": 10, "nc": 1, "lm": True, key: digest}
    with pytest.raises(BitstreamError, match=rf"'{key}' .*16 lowercase hex digits, got str"):
        parse_header(_header_bytes(meta))
    good = {**meta, key: "0123456789abcdef"}
    header, _ = parse_header(_header_bytes(good))
    assert (header.model_hash if key == "mh" else header.lm_hash) == "0123456789abcdef"


def test_entropy_model_hash_in_a_plain_file_is_refused() -> None:
    """``lmh`` belongs to an entropy-coded file: in a plain one (``lm`` false) the header is
    damaged, and the error says which field contradicts which."""
    meta = {"m": "mine", "al": 10, "nc": 1, "lm": False, "lmh": "0123456789abcdef"}
    with pytest.raises(BitstreamError, match=r"^ECDC header field 'lmh' \(entropy model weights hash\) "
                                             r"in a file that is not entropy coded \('lm': false\)$"):
        parse_header(_header_bytes(meta))


def test_weights_hashes_survive_a_write_and_read() -> None:
    """``mh`` and ``lmh`` are what the reader checks the models against: they are written
    after ``lm`` in that order and read back into the header, never dropped."""
    header = EcdcHeader("mine", 24000, 8, True, model_hash="00112233445566ff", lm_hash="0123456789abcdef")
    fo = io.BytesIO()
    write_header(fo, header)
    meta = (b'{"m": "mine", "al": 24000, "nc": 8, "lm": true, "mh": "00112233445566ff", '
            b'"lmh": "0123456789abcdef"}')
    assert fo.getvalue() == b"ECDC\x00" + struct.pack(">I", len(meta)) + meta
    got, offset = parse_header(fo.getvalue() + b"body")
    assert got == header and offset == 9 + len(meta)
    assert (got.model_hash, got.lm_hash, got.entropy_model_hash) == (
        "00112233445566ff", "0123456789abcdef", "0123456789abcdef")


@pytest.mark.parametrize("version", [2, 3, 127, 128, 255])
def test_only_versions_0_and_1_are_read(version: int) -> None:
    """The version byte is 0 (official) or 1 (deterministic); any other is refused by name,
    before its JSON is looked at (a future version's fields mean nothing to this reader)."""
    meta = {"m": "encodec_24khz", "al": 10, "nc": 1, "lm": True}
    with pytest.raises(BitstreamError, match=rf"^unsupported ECDC version: expected 0 \(official "
                                             rf"format\) or 1 \(deterministic entropy coding\), "
                                             rf"got {version}$"):
        parse_header(_header_bytes(meta, version))


@pytest.mark.parametrize("key", ["m", "lmn"])
def test_name_length_limit_is_200_characters(key: str) -> None:
    """A model name (``m``) and an entropy-model name (``lmn``) hold at most 200 characters:
    200 are read, 201 refused."""
    meta = {"m": "x", "al": 10, "nc": 1, "lm": True, "lmn": "lm", "lmh": "0123456789abcdef",
            "fx": 1, "cb": 8, "ci": 75}
    header, _ = parse_header(_header_bytes({**meta, key: "n" * 200}, version=1))
    assert (header.model_name if key == "m" else header.deterministic.lm_name) == "n" * 200
    with pytest.raises(BitstreamError, match=rf"'{key}' .*at most 200 characters, got 201"):
        parse_header(_header_bytes({**meta, key: "n" * 201}, version=1))


@pytest.mark.parametrize("bad, shown", [("\t", r"'\\t' \(U\+0009\)"), ("\r", r"'\\r' \(U\+000D\)"),
                                        ("\x1b[2J", r"'\\x1b' \(U\+001B\)"),
                                        ("\u2028", r"'\\u2028' \(U\+2028\)"),
                                        ("\x00", r"'\\x00' \(U\+0000\)")])
@pytest.mark.parametrize("key", ["m", "lmn"])
def test_names_with_control_characters_are_refused(key: str, bad: str, shown: str) -> None:
    """Readers print model names: a tab, carriage return, terminal escape or line separator
    (not only a line feed) could fake what they print, so the header is refused."""
    meta = {"m": "x", "al": 10, "nc": 1, "lm": True, "lmn": "lm", "lmh": "0123456789abcdef",
            "fx": 1, "cb": 8, "ci": 75}
    with pytest.raises(BitstreamError, match=rf"'{key}' .*printable characters only .*got {shown}"):
        parse_header(_header_bytes({**meta, key: f"name{bad}x"}, version=1))
    assert parse_header(_header_bytes({**meta, key: "modèle ünïcode 24 kHz"}, version=1))[0]


@pytest.mark.parametrize("cb, ok", [(0, True), (32, True), (33, False), (-1, False)])
def test_check_bits_field_range(cb: int, ok: bool) -> None:
    meta = {"m": "x", "al": 10, "nc": 1, "lm": True, "lmn": "lm", "lmh": "0123456789abcdef",
            "fx": 1, "cb": cb, "ci": 75}
    if ok:
        assert parse_header(_header_bytes(meta, version=1))[0].deterministic.check_bits == cb
    else:
        with pytest.raises(BitstreamError, match=rf"'cb' \(check bits\): expected an integer in "
                                                 rf"\[0, 32\], got {cb}"):
            parse_header(_header_bytes(meta, version=1))


def test_default_check_interval_rounds_to_nearest() -> None:
    """About one second of frames, rounded to the nearest frame (what a version 1 header's
    ``ci`` holds by default)."""
    from opencodec.bitstream import default_check_interval

    assert [default_check_interval(r) for r in (75.0, 150.0, 74.6, 86.13, 0.2, 1.5)] == [75, 150, 75, 86, 1, 2]


# -- packing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 3, 10, 13])
def test_packing_across_the_internal_block_boundary(bits: int) -> None:
    """More values than one internal numpy block, at widths whose block does not end on a
    byte unless the block size is a multiple of 8: the bytes are those of one continuous
    LSB-first bit string (built value by value, bit by bit), and unpack back."""
    count = _CHUNK_VALUES + 37
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=count)
    data = pack_codes(values[None, :], bits)  # [K=1, F=count]
    bit_string = (values[:, None] >> np.arange(bits)) & 1  # [count, bits], LSB first
    assert data == np.packbits(bit_string.reshape(-1).astype(np.uint8), bitorder="little").tobytes()
    assert len(data) == packed_size(count, bits)
    back = unpack_codes(data, 1, count, bits)
    np.testing.assert_array_equal(back.numpy()[0], values)


def test_unpack_negative_shape_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"negative shape \[1, -1\]"):
        unpack_codes(b"", 1, -1, 10)
    with pytest.raises(ValueError, match=r"negative shape \[-2, 3\]"):
        unpack_codes(b"", -2, 3, 10)


# -- body ---------------------------------------------------------------------------------------
def test_scale_for_a_model_that_does_not_normalise_is_refused() -> None:
    """A model without normalisation writes no scale: a frame that carries one is an error (a
    silently dropped scale would decode to other audio)."""
    header = EcdcHeader("encodec_24khz", 640, 2, False)
    codes = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="segment 0: model does not normalise but a scale was given"):
        encode_ecdc(header, [EncodedFrame(codes, torch.ones(1, 1))], LAYOUT_24)
    assert encode_ecdc(header, [EncodedFrame(codes, None)], LAYOUT_24).endswith(bytes(5))


# -- the deterministic format (version 1) --------------------------------------------------------
def _tiny_fixed_lm():  # -> FixedLM
    """A 2-codebook integer entropy model with weights set by formula (no random numbers)."""
    from opencodec.entropy import EntropyLM, fixed_lm_for

    lm = EntropyLM(n_q=2, card=1024, dim=16, num_heads=2, num_layers=1, past_context=4).eval()
    with torch.no_grad():
        for i, param in enumerate(lm.parameters()):
            grid = torch.arange(param.numel(), dtype=torch.float64) * 0.37 * (i + 1)
            param.copy_(torch.sin(grid).reshape(param.shape))
    return fixed_lm_for(lm)


def test_deterministic_file_bytes_are_pinned() -> None:
    """A version 1 file decodes the same everywhere only if every writer makes the same
    bytes: these are pinned (header byte for byte, body by SHA-256). Two segments of the
    48 kHz layout, so the CRC seed's segment index (uint32 little-endian) and scale bytes
    count. A change here changes the bytes on disk of every deterministic file: it must
    come with a new version byte or scheme number, never silently."""
    import hashlib

    from opencodec.bitstream import DeterministicCoding
    from opencodec.entropy.fixed import SCHEME

    flm = _tiny_fixed_lm()
    assert (SCHEME, flm.weights_hash) == (1, "19e47a8214d043df")
    det = DeterministicCoding(lm_name="tiny", lm_hash=flm.weights_hash, scheme=SCHEME, check_bits=8,
                              check_interval=2)
    header = EcdcHeader("encodec_48khz", 47520 + 640, 2, True, det)  # segments of 150 and 2 frames
    frames = [EncodedFrame((torch.arange(300).reshape(1, 2, 150) * 37) % 1024, torch.tensor([[0.5]])),
              EncodedFrame(torch.tensor([[[5, 1023], [7, 8]]]), torch.tensor([[2.0]]))]
    data = encode_ecdc(header, frames, LAYOUT_48, flm)
    meta = (b'{"m": "encodec_48khz", "al": 48160, "nc": 2, "lm": true, "lmn": "tiny", '
            b'"lmh": "19e47a8214d043df", "fx": 1, "cb": 8, "ci": 2}')
    assert data[:9 + len(meta)] == b"ECDC\x01" + struct.pack(">I", len(meta)) + meta
    body = data[9 + len(meta):]
    assert body[:4] == struct.pack(">f", 0.5)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (
        645, "a4bb1c2bf6aff8b79463b066f4e8ac6f68d40bf2fce8de96f6c6ff6ebeb62858")
    got_header, got = read_ecdc(data, LAYOUT_48, flm)
    assert got_header == header
    assert all(torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale) for a, b in zip(got, frames))


def test_crc_seed_is_the_documented_one() -> None:
    """The check value of segment i starts from CRC-32(header bytes), then i as uint32
    little-endian, then the segment's 4 scale bytes (opencodec.bitstream's docstring)."""
    import zlib

    from opencodec.bitstream.coded_body import _segment_crc_seed

    head, scale = b"ECDC\x01\x00\x00\x00\x02{}", struct.pack(">f", 2.0)
    for index in (0, 1, 258, 2 ** 31):
        want = zlib.crc32(head + index.to_bytes(4, "little") + scale)
        assert _segment_crc_seed(head, index, scale) == want
    assert _segment_crc_seed(head, 3, b"") == zlib.crc32(head + b"\x03\x00\x00\x00")


# -- bandwidth ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [(10 ** 400, "2\\*\\*1328 kbps or more"),
                                          (-(10 ** 400), "-2\\*\\*1328 kbps or less"),
                                          (2 ** 1024, "2\\*\\*1024 kbps or more")])
def test_bandwidth_too_large_for_a_float_is_refused_by_name(value: int, shown: str) -> None:
    """An integer beyond float's range (a JSON request to the server, a config file) is an
    unsupported bandwidth like any other, not an ``OverflowError`` from inside the check."""
    from opencodec.bandwidth import check_bandwidth
    from opencodec.errors import UnsupportedBandwidthError

    with pytest.raises(UnsupportedBandwidthError, match=rf"^model m does not support {shown} \(too large "
                                                        rf"for a float\); choose one of: 1.5, 6 kbps$"):
        check_bandwidth(value, [1.5, 6.0], "m")
    assert check_bandwidth(6, [1.5, 6.0], "m") == 6.0


# -- sizes reported for entropy-coded files ------------------------------------------------------
@pytest.mark.parametrize("frames, check_interval, check_bits, want_bits", [
    (150, 75, 8, 24 + 32 + 8),       # a check after frame 75; frame 150 ends with the CRC only
    (150, 150, 8, 24 + 32),          # the check would fall on the last frame: the CRC replaces it
    (151, 75, 8, 24 + 32 + 2 * 8),   # checks after frames 75 and 150, the CRC after 151
    (1, 1, 32, 24 + 32),
    (10, 1, 3, 24 + 32 + 9 * 3),
])
def test_body_overhead_counts_the_checks_the_format_codes(frames: int, check_interval: int, check_bits: int,
                                                          want_bits: int) -> None:
    """Per segment: the coder's flush (24 bits), the CRC-32 after the last frame, and
    ``check_bits`` after every ``check_interval``-th frame before the last (bits, rounded up)."""
    from opencodec.bitstream import DeterministicCoding
    from opencodec.ecdc_sizes import body_overhead

    det = DeterministicCoding(lm_name="x", lm_hash="0123456789abcdef", scheme=1, check_bits=check_bits,
                              check_interval=check_interval)
    header = EcdcHeader("encodec_24khz", frames * 320, 2, True, det)
    assert body_overhead(header, LAYOUT_24) == -(-want_bits // 8)
    official = EcdcHeader("encodec_24khz", frames * 320, 2, True)
    assert body_overhead(official, LAYOUT_24) == 3  # the flush only


def test_body_overhead_is_per_segment() -> None:
    from opencodec.bitstream import DeterministicCoding
    from opencodec.ecdc_sizes import body_overhead

    det = DeterministicCoding(lm_name="x", lm_hash="0123456789abcdef", scheme=1, check_bits=8,
                              check_interval=150)
    header = EcdcHeader("encodec_48khz", 47520 * 2 + 641, 2, True, det)  # 150, 150 and 3 frames
    assert [LAYOUT_48.num_frames(n) for _, n in LAYOUT_48.segments(header.audio_length)] == [150, 150, 3]
    assert body_overhead(header, LAYOUT_48) == 3 * 7  # (24 + 32) bits = 7 bytes each


def test_plain_size_is_the_size_compress_writes_without_an_entropy_model() -> None:
    """``plain_size`` of an entropy-coded file's header is the length of the plain file of the
    same audio (header ``"lm": false`` without the entropy model's fields, packed body), and
    ``header_extra`` the bytes the entropy-coded header adds over that plain header."""
    import dataclasses

    from opencodec import EncodecConfig, EncodecModel
    from opencodec.bitstream import DeterministicCoding
    from opencodec.compress import compress
    from opencodec.ecdc_sizes import header_extra, plain_size

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny_sizes", n_filters=4, dimension=8, n_q=4, bins=16, lstm=0,
                                       target_bandwidths=[0.6, 1.2]))
    data = compress(model, torch.randn(1, 1001) * 0.1, bandwidth=1.2)
    plain, _ = parse_header(data)
    assert not plain.use_lm and plain.model_hash is not None
    official_lm = dataclasses.replace(plain, use_lm=True, lm_hash="0123456789abcdef")
    det = DeterministicCoding(lm_name="tiny_lm", lm_hash="fedcba9876543210", scheme=1)
    deterministic = dataclasses.replace(plain, use_lm=True, deterministic=det)
    for header, extra in [(official_lm, b', "lmh": "0123456789abcdef"'),
                          (deterministic, b', "lmn": "tiny_lm", "lmh": "fedcba9876543210", "fx": 1, '
                                          b'"cb": 8, "ci": 75')]:
        assert plain_size(header, model) == len(data)
        assert header_extra(header) == len(extra) - 1  # "lm": true is one byte shorter than false


def test_bytes_after_the_last_coded_segment_are_refused() -> None:
    """An entropy-coded body ends where its last segment's coder ends: a byte more is damage
    (or a wrong entropy model), never silently ignored."""
    from opencodec.bitstream import DeterministicCoding
    from opencodec.entropy.fixed import SCHEME

    flm = _tiny_fixed_lm()
    det = DeterministicCoding(lm_name="tiny", lm_hash=flm.weights_hash, scheme=SCHEME)
    header = EcdcHeader("encodec_24khz", 3200, 2, True, det)
    codes = (torch.arange(20).reshape(1, 2, 10) * 101) % 1024
    data = encode_ecdc(header, [EncodedFrame(codes, None)], LAYOUT_24, flm)
    assert torch.equal(read_ecdc(data, LAYOUT_24, flm)[1][0].codes, codes)
    head = parse_header(data)[1]
    with pytest.raises(BitstreamError, match=r"^ECDC body truncated: an entropy-coded body for 3200 samples x 2 "
                                             r"codebooks needs at least 2 bytes, got 0$"):
        read_ecdc(data[:head], LAYOUT_24, flm)  # the CRC-32 alone needs 4 bytes, half of them count
    for extra in (b"\x00", b"\x00\x00\x07"):
        with pytest.raises(BitstreamError, match=rf"^ECDC body has {len(extra)} extra byte\(s\) after the "
                                                 rf"last entropy-coded segment"):
            read_ecdc(data + extra, LAYOUT_24, flm)


@pytest.mark.parametrize("kwargs, message", [
    ({"lm_name": "x"}, r"^lm_name only apply to the deterministic format"),
    ({"check_bits": 8, "check_interval": 10}, r"^check_bits, check_interval only apply to the deterministic"),
    ({"deterministic": True}, r"^deterministic=True needs an entropy model \(lm=\.\.\.\)$"),
])
def test_deterministic_options_are_never_silently_ignored(kwargs: dict, message: str) -> None:
    """Options of the deterministic format given without it (or it without an entropy model)
    are refused, not dropped: the file would otherwise be written in another format than asked."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.compress import InvalidAudioError, compress

    model = EncodecModel(EncodecConfig(name="tiny_opts", n_filters=2, dimension=4, n_q=2, bins=16, lstm=0,
                                       target_bandwidths=[0.6]))
    with pytest.raises(InvalidAudioError, match=message):
        compress(model, torch.zeros(1, 100), **kwargs)


def test_compress_api_edges() -> None:
    """Audio given samples first ([T, C], as soundfile reads it) is refused with a hint to
    transpose; the bytes of a file may come as a memoryview and decode as bytes do."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.compress import InvalidAudioError, compress, decompress

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny_edges", n_filters=2, dimension=4, n_q=2, bins=16, lstm=0,
                                       target_bandwidths=[0.6]))
    with pytest.raises(InvalidAudioError, match=r"expects 1 channel\(s\), got 100; the audio looks "
                                                r"transposed: shape \(100, 1\) reads as \[T, C\].*pass wav\.T"):
        compress(model, torch.zeros(100, 1))
    with pytest.raises(InvalidAudioError, match=r"^model tiny_edges expects 1 channel\(s\), got 63$"):
        compress(model, torch.zeros(63, 1))  # too short a first dimension to read as samples
    data = compress(model, torch.randn(1, 700) * 0.1)
    wav, rate = decompress(memoryview(data), model)
    assert rate == 24000 and torch.equal(wav, decompress(data, model)[0])
