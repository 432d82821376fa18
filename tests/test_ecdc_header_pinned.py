"""The ``.ecdc`` header and body, pinned by value: the bit packer after ``flush``, weights and
entropy-model hashes, segment layouts, scales, aliases, the version 1 segment CRC seed and the
deterministic body's lower bound."""

from __future__ import annotations

import pytest
import torch


# --------------------------------------------------------------------------- bitstream.packing
def test_bit_packer_starts_clean_after_flush() -> None:
    """``flush`` writes the partial byte and resets: the next values (the next segment) do
    not carry the previous byte's bits, and equal ``pack_codes`` of each part."""
    import io

    from opencodec.bitstream.packing import BitPacker, pack_codes

    out = io.BytesIO()
    packer = BitPacker(3, out)
    packer.push(7)
    packer.flush()
    for value in (0, 1):
        packer.push(value)
    packer.flush()
    assert out.getvalue() == bytes([7, 8])
    assert out.getvalue() == pack_codes([[7]], 3) + pack_codes([[0, 1]], 3)


# --------------------------------------------------------------------------- bitstream header/layout
def test_a_weights_hash_in_a_header_is_exactly_16_lowercase_hex_digits() -> None:
    from opencodec.bitstream import EcdcHeader
    from opencodec.errors import BitstreamError

    meta = {"m": "my_model", "al": 100, "nc": 2, "lm": False}
    assert EcdcHeader.from_dict({**meta, "mh": "0123456789abcdef"}).model_hash == "0123456789abcdef"
    for bad in ("0123456789abcde", "", "0123456789ABCDEF", "0123456789abcdef0", "0123456789abcdeg"):
        with pytest.raises(BitstreamError, match="16 lowercase hex digits"):
            EcdcHeader.from_dict({**meta, "mh": bad})


def test_an_entropy_model_hash_needs_an_entropy_coded_version_0_header() -> None:
    from opencodec.bitstream import DeterministicCoding, EcdcHeader
    from opencodec.errors import BitstreamError

    digest = "0123456789abcdef"
    assert EcdcHeader("my_model", 100, 2, True, lm_hash=digest).entropy_model_hash == digest
    with pytest.raises(BitstreamError, match="lm_hash is for version 0 entropy-coded files"):
        EcdcHeader("my_model", 100, 2, False, lm_hash=digest)
    det = DeterministicCoding(lm_name="lm", lm_hash=digest, scheme=1)
    with pytest.raises(BitstreamError, match="lm_hash is for version 0 entropy-coded files"):
        EcdcHeader("my_model", 100, 2, True, deterministic=det, lm_hash=digest)


def test_a_layout_has_both_segment_sizes_or_neither() -> None:
    from opencodec.bitstream import StreamLayout

    assert StreamLayout("m", 4, 10, 320, True, 48000, 47520).num_segments(48001) == 2
    for length, stride in ((48000, None), (None, 47520)):
        with pytest.raises(ValueError, match="both be set or both be None"):
            StreamLayout("m", 4, 10, 320, True, length, stride)


def test_writing_a_scale_for_a_model_that_does_not_normalise_is_refused() -> None:
    import io

    from opencodec.bitstream import EcdcHeader, StreamLayout, write_body
    from opencodec.frames import EncodedFrame

    layout = StreamLayout("m", 2, 10, 320, normalize=False)
    header = EcdcHeader("m", 640, 2, False)
    codes = torch.zeros(1, 2, 2, dtype=torch.long)
    assert write_body(io.BytesIO(), header, [EncodedFrame(codes, None)], layout) == 5
    with pytest.raises(ValueError, match="segment 0: model does not normalise but a scale was given"):
        write_body(io.BytesIO(), header, [EncodedFrame(codes, torch.ones(1, 1))], layout)


def test_lmh_in_a_header_that_is_not_entropy_coded_is_named() -> None:
    from opencodec.bitstream import EcdcHeader
    from opencodec.errors import BitstreamError

    meta = {"m": "my_model", "al": 100, "nc": 2, "lm": False, "lmh": "0123456789abcdef"}
    with pytest.raises(BitstreamError, match=r"'lmh' \(entropy model weights hash\) in a file that is "
                                             r"not entropy coded"):
        EcdcHeader.from_dict(meta)


# --------------------------------------------------------------------------- releases
def test_the_entropy_model_alias_in_a_header_needs_a_weights_hash() -> None:
    """Only the bare codec alias may lack a hash (legacy files); the entropy model's alias, a
    release and an entropy-model release were never written without one; official and custom
    names may have none."""
    from opencodec.releases import CODEC_ALIAS, CURRENT_CODEC, CURRENT_LM, LM_ALIAS, needs_weights_hash

    assert needs_weights_hash(LM_ALIAS) and needs_weights_hash(CURRENT_CODEC) and needs_weights_hash(CURRENT_LM)
    assert not needs_weights_hash(CODEC_ALIAS)
    assert not needs_weights_hash("encodec_24khz") and not needs_weights_hash("my_model")


def test_version_1_segment_crc_seed_is_pinned() -> None:
    """The CRC-32 of a deterministic segment starts from the header's bytes, the segment's index
    (uint32 LE) and its scale bytes: part of the file format, so pinned by value (a swapped,
    repeated or re-scaled segment, or another header, fails its checks)."""
    import struct

    from opencodec.bitstream.coded_body import _segment_crc_seed

    scale = struct.pack("!f", 0.5)
    assert _segment_crc_seed(b"ECDC-header", 0, b"") == 148974892
    assert _segment_crc_seed(b"ECDC-header", 1, b"") == 2958903881
    assert _segment_crc_seed(b"ECDC-header", 1, scale) == 3597252831
    assert _segment_crc_seed(b"other", 1, scale) == 1725253649


# --------------------------------------------------------------------------- bitstream: lower bound
def test_the_deterministic_body_lower_bound_counts_half_of_each_segment_crc() -> None:
    """A version 1 body's lower bound adds 2 bytes per segment (half of its CRC-32), so a body
    cut to nothing is refused before decoding."""
    from opencodec.bitstream import DeterministicCoding, EcdcHeader, StreamLayout
    from opencodec.bitstream.layout import min_lm_body_size

    layout = StreamLayout("m", 4, 10, 320, True, 48000, 47520)
    det = DeterministicCoding(lm_name="lm", lm_hash="0123456789abcdef", scheme=1)
    v0 = EcdcHeader("m", 96000, 4, True)
    v1 = EcdcHeader("m", 96000, 4, True, deterministic=det)
    segments = layout.num_segments(96000)
    assert segments == 3
    assert min_lm_body_size(v1, layout, 1024) - min_lm_body_size(v0, layout, 1024) == 2 * segments
    assert min_lm_body_size(EcdcHeader("m", 1, 1, True, deterministic=det), layout, 1 << 23) >= 2
