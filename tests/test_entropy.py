"""Entropy coding: bit-exact agreement with the official EnCodec LM, CDF, coder and `.ecdc` bodies."""

from __future__ import annotations

import io
import json
import struct

import official_ref
import pytest
import torch
from encodec.model import LMModel
from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf
from encodec.quantization.ac import ArithmeticDecoder as OfficialDecoder

from opencodec.entropy import (ArithmeticDecoder, ArithmeticEncoder, EntropyLM, build_quantized_cdf,
                               decode_segment_with_lm, encode_segment_with_lm, load_lm)
from opencodec.errors import BitstreamError, ModelLoadError

official_compress = official_ref.official_compress_module


def _official_lm(n_q: int, frame_rate: int, seed: int) -> LMModel:
    torch.manual_seed(seed)
    return LMModel(n_q, 1024, num_layers=5, dim=200, past_context=int(3.5 * frame_rate)).eval()


def _pdfs(rows: int, gen: torch.Generator) -> torch.Tensor:
    flat = torch.softmax(torch.randn(rows, 1024, generator=gen), -1)
    peaky = torch.softmax(torch.randn(rows, 1024, generator=gen) * 25, -1)
    onehot = torch.zeros(rows, 1024)
    onehot[torch.arange(rows), torch.randint(0, 1024, (rows,), generator=gen)] = 1.0
    return torch.cat([flat, peaky, onehot])


def test_cdf_matches_official_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    pdfs = _pdfs(40, gen)
    ours = build_quantized_cdf(pdfs)
    ref = torch.stack([build_stable_quantized_cdf(p, 24, check=False) for p in pdfs])
    assert ours.dtype == torch.long
    assert torch.equal(ours, ref)
    # Strided rows (the LM's layout) give the same integers.
    assert torch.equal(build_quantized_cdf(pdfs.t().contiguous().t()), ref)
    # Small alphabets too.
    p = torch.softmax(torch.randn(7, 5, generator=gen), -1)
    assert torch.equal(build_quantized_cdf(p), torch.stack([build_stable_quantized_cdf(r, 24) for r in p]))


@pytest.mark.parametrize("card,scale", [(1024, 1.0), (1024, 20.0), (3, 2.0), (2000, 4.0)])
def test_coder_bytes_match_official_and_round_trip(card: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(card)
    steps = 600
    pdfs = torch.softmax(torch.randn(steps, card, generator=gen) * scale, -1)
    cdfs = build_quantized_cdf(pdfs)
    symbols = torch.multinomial(pdfs, 1, generator=gen).view(-1).tolist()
    symbols[:3] = [0, card - 1, 0]  # first and last bins
    fo = io.BytesIO()
    ref = ArithmeticCoder(fo)
    ours = ArithmeticEncoder()
    for s, cdf in zip(symbols, cdfs):
        ref.push(s, cdf)
        ours.push(s, cdf)
    ref.flush()
    ours.flush()
    assert ours.getvalue() == fo.getvalue()
    rows = cdfs.tolist()
    dec = ArithmeticDecoder(fo.getvalue() + b"\xff\x00")
    assert [dec.pull(r) for r in rows] == symbols
    assert dec.bytes_read == len(fo.getvalue())
    stream = io.BytesIO(fo.getvalue() + b"NEXT")
    dec = ArithmeticDecoder(stream)
    assert [dec.pull(r) for r in rows] == symbols
    assert stream.read() == b"NEXT"


def test_lm_state_dict_and_load(tmp_path) -> None:
    ref = _official_lm(32, 75, seed=3)
    lm = EntropyLM()
    sd = lm.state_dict()
    assert list(sd) == list(ref.state_dict())
    assert len(sd) == 158
    assert sum(p.numel() for p in lm.parameters()) == 15_559_768
    assert sd["transformer.layers.0.self_attn.in_proj_weight"].shape == (600, 200)
    assert sd["emb.0.weight"].shape == (1025, 200)
    path = tmp_path / "lm.th"
    torch.save(ref.state_dict(), path)
    loaded = load_lm(path, 32, frame_rate=75)
    assert loaded.past_context == 262
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ref.state_dict().values()))
    bad = dict(ref.state_dict())
    bad.pop("linears.3.bias")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelLoadError, match="linears.3.bias") as info:
        load_lm(bad, 32)
    assert "extra.weight" in str(info.value)
    with pytest.raises(ModelLoadError):
        load_lm(ref.state_dict(), 16)
    with pytest.raises(ModelLoadError):
        load_lm(tmp_path / "missing.th", 32)


def test_lm_steps_equal_official_past_the_window() -> None:
    """320 streaming steps (past the 262-step window) give bit-identical probabilities."""
    n_q = 8
    ref = _official_lm(n_q, 75, seed=5)
    lm = load_lm(ref.state_dict(), n_q, frame_rate=75)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.zeros(n_q, dtype=torch.long)]
    inputs += [torch.randint(1, 1025, (n_q,), generator=gen) for _ in range(319)]
    states, offset, ours_state = None, 0, None
    worst = 0.0
    identical = 0
    with torch.no_grad():
        for idx in inputs:
            probs_ref, states, offset = ref(idx.view(1, n_q, 1), states, offset)
            expect = probs_ref[0, :, :, 0].t()
            probs, ours_state = lm.step(idx, ours_state)
            assert probs.shape == (n_q, 1024)
            worst = max(worst, (probs - expect).abs().max().item())
            identical += torch.equal(probs, expect)
    assert ours_state.offset == 320
    assert ours_state.past[0].shape == (1, 262, 200)
    assert worst <= 1e-6
    assert identical == len(inputs)  # bit-identical, which the byte-exact coding relies on


def _official_file(name: str, seed: int, bandwidth: float, seconds: float):
    model = official_ref.make_official_model(name, seed)
    model.set_target_bandwidth(bandwidth)
    ref_lm = _official_lm(model.quantizer.n_q, model.frame_rate, seed=seed + 10)
    model.get_lm_model = lambda: ref_lm  # the official writer would download the LM
    gen = torch.Generator().manual_seed(seed)
    wav = torch.randn(model.channels, int(seconds * model.sample_rate), generator=gen) * 0.1
    data = official_compress.compress(model, wav, use_lm=True)
    with torch.no_grad():
        frames = model.encode(wav[None])
    lm = load_lm(ref_lm.state_dict(), model.quantizer.n_q, frame_rate=model.frame_rate)
    return data, frames, lm


@pytest.mark.parametrize("name,bandwidth,seconds", [
    ("encodec_24khz", 1.5, 1.0),
    ("encodec_24khz", 6.0, 0.5),
    ("encodec_48khz", 3.0, 1.2),
    ("encodec_48khz", 6.0, 1.05),
])
def test_segments_match_official_ecdc(name: str, bandwidth: float, seconds: float) -> None:
    data, frames, lm = _official_file(name, seed=2, bandwidth=bandwidth, seconds=seconds)
    header_len = 9 + struct.unpack("!I", data[5:9])[0]
    meta = json.loads(data[9:header_len])
    assert meta["lm"] is True
    body = b""
    for codes, scale in frames:
        if scale is not None:
            body += struct.pack("!f", scale.item())
        body += encode_segment_with_lm(lm, codes[0])
    assert data[header_len:] == body
    if name == "encodec_48khz":
        assert len(frames) == 2

    # Decode the official bytes from the file object, segment by segment (scale, then codes).
    fo = io.BytesIO(data)
    fo.seek(header_len)
    for codes, scale in frames:
        if scale is not None:
            assert struct.unpack("!f", fo.read(4))[0] == pytest.approx(scale.item())
        got = decode_segment_with_lm(lm, fo, meta["nc"], codes.shape[-1])
        assert torch.equal(got, codes[0])
    assert fo.read() == b""


def test_official_decoder_reads_our_bytes() -> None:
    """The official decompress (codes part) accepts a file built from our segments."""
    model = official_ref.make_official_model("encodec_48khz", 1)
    model.set_target_bandwidth(3.0)
    ref_lm = _official_lm(model.quantizer.n_q, model.frame_rate, seed=7)
    model.get_lm_model = lambda: ref_lm
    lm = load_lm(ref_lm.state_dict(), model.quantizer.n_q, frame_rate=model.frame_rate)
    wav = torch.randn(2, int(1.02 * model.sample_rate)) * 0.1
    with torch.no_grad():
        frames = model.encode(wav[None])
    fo = io.BytesIO()
    meta = {"m": model.name, "al": wav.shape[-1], "nc": frames[0][0].shape[1], "lm": True}
    official_ref.encodec.binary.write_ecdc_header(fo, meta)
    for codes, scale in frames:
        fo.write(struct.pack("!f", scale.item()))
        fo.write(encode_segment_with_lm(lm, codes[0]))
    captured = []
    orig_decode = model.decode
    model.decode = lambda fr: (captured.extend(fr), orig_decode(fr))[1]
    with official_ref.patched_official_models({model.name: model}):
        official_compress.decompress(fo.getvalue())
    assert len(captured) == len(frames)
    for (got, _), (codes, _) in zip(captured, frames):
        assert torch.equal(got, codes)


@pytest.mark.timeout(120, method="thread")  # garbage input must never hang the decoder
def test_round_trip_consumed_and_errors() -> None:
    torch.manual_seed(0)
    lm = EntropyLM(n_q=4, card=1024, num_layers=2, past_context=10).eval()
    codes = torch.randint(0, 1024, (3, 25))
    codes[:, 4] = 0
    codes[:, 5] = 1023
    data = encode_segment_with_lm(lm, codes)
    got, used = decode_segment_with_lm(lm, data + b"\x12\x34", 3, 25, return_consumed=True)
    assert torch.equal(got, codes) and used == len(data)
    assert encode_segment_with_lm(lm, codes[:, :0]) == b""
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        with pytest.raises(BitstreamError):
            decode_segment_with_lm(lm, data[:cut], 3, 25)
        with pytest.raises(BitstreamError):
            decode_segment_with_lm(lm, io.BytesIO(data[:cut]), 3, 25)
    # Garbage never hangs: it either decodes to something or raises BitstreamError.
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        junk = bytes(torch.randint(0, 256, (len(data),), generator=gen).tolist())
        try:
            got = decode_segment_with_lm(lm, junk, 3, 25)
        except BitstreamError:
            continue
        assert got.shape == (3, 25) and 0 <= int(got.min()) and int(got.max()) < lm.card
    with pytest.raises(BitstreamError):  # all ones: past the last bin's range
        decode_segment_with_lm(lm, b"\xff" * 64, 3, 25)
    with pytest.raises(ValueError):
        encode_segment_with_lm(lm, torch.full((3, 2), 1024))
    with pytest.raises(ValueError):
        encode_segment_with_lm(lm, torch.zeros(5, 2, dtype=torch.long))


# -- values between two symbols' intervals, and empty intervals, against the official coder ----
def _bits_to_bytes(bits: list[int]) -> bytes:
    """Pack bits least significant first in each byte (the official ``BitPacker(bits=1)``)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        out[i // 8] |= bit << (i % 8)
    return bytes(out)


def _msb_first(value: int, n: int) -> list[int]:
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


@pytest.mark.parametrize("first", [2, 4])
def test_decoder_values_outside_every_symbol_agree_with_official(first: int) -> None:
    """Once the range ``delta`` is not a power of two, the integer intervals of neighbouring
    symbols ``[ceil(c_lo delta / 2^B), floor((c_hi - 1) delta / 2^B)]`` can leave an integer
    between them, and the last one can end below ``delta``: a stream whose value lands there
    is not a valid code. The official decoder's bisection fails ("Binary search failed") on
    such a value; ours must raise BitstreamError, and decode every other value to the same
    symbol as the official one.

    Construction (official coder rules, B = 24): the first pull reads 24 bits ``X1`` with
    ``delta = 2^24`` and decodes symbol ``first`` (``X1`` in ``[c_lo, c_hi)``); the second pull
    doubles the range ``R = c_hi - c_lo`` ``n = 25 - bitlen(R)`` times, reading ``n`` bits,
    so its value relative to ``low`` is ``v = (X1 - c_lo) * 2^n + bits``: any ``v`` in
    ``[0, R 2^n)`` can be written. The values tried surround every symbol boundary and cover
    the end of the range."""
    B = 24
    pdf = torch.tensor([0.31, 0.07, 0.2, 0.013, 0.25, 0.001, 0.156])
    cdf = build_stable_quantized_cdf(pdf, B, check=False)
    rows = cdf.tolist()
    assert rows[-1] < 2 ** B  # room past the last symbol too
    c_lo, c_hi = rows[first - 1], rows[first]
    n = B + 1 - (c_hi - c_lo).bit_length()
    delta = (c_hi - c_lo) << n
    assert 2 ** B < delta < 2 ** (B + 1)
    values: set[int] = set()
    for c in [0] + rows:
        edge = (c * delta) >> B
        values.update(range(max(0, edge - 3), min(delta, edge + 4)))
    values.update(range(((rows[-1] - 1) * delta >> B) - 2, delta))
    outside = 0
    for v in sorted(values):
        bits = _msb_first(c_lo + (v >> n), B) + _msb_first(v & ((1 << n) - 1), n)
        data = _bits_to_bytes(bits) + bytes(8)
        ref = OfficialDecoder(io.BytesIO(data), B)
        assert ref.pull(cdf) == first
        try:
            want = ref.pull(cdf)
        except RuntimeError as exc:
            assert "Binary search failed" in str(exc)
            want = None
        dec = ArithmeticDecoder(data, B)
        assert dec.pull(rows) == first
        if want is None:
            outside += 1
            with pytest.raises(BitstreamError, match="corrupt arithmetic-coded data"):
                dec.pull(rows)
        else:
            assert dec.pull(rows) == want, v
    assert outside >= 8  # the construction really reaches values between intervals


def test_encoder_empty_intervals_agree_with_official() -> None:
    """A symbol of one count (or none) can map to an empty integer interval
    (``ceil(c_lo delta / 2^B) > floor((c_hi - 1) delta / 2^B)``); the official coder's
    assertion refuses it, ours raises ValueError; every non-empty one gives the official bytes.
    The first symbol (1174406 counts) makes the next ``delta`` not a power of two."""
    B = 24
    first = (5200934, 6375340)
    intervals = ([(5, 5), (5, 6), (0, 1), (2 ** 24 - 1, 2 ** 24)]
                 + [(c, c + 1) for c in range(1000, 1040)] + [(c, c) for c in range(3000, 3006)])
    empty = fine = 0
    for prefix in ([], [first]):
        for c_lo, c_hi in intervals:
            fo = io.BytesIO()
            ref, ours = ArithmeticCoder(fo, B), ArithmeticEncoder(B)
            for lo, hi in prefix:
                ref.push(1, torch.tensor([lo, hi]))
                ours.encode(lo, hi)
            try:
                ref.push(1, torch.tensor([c_lo, c_hi]))
            except AssertionError:
                empty += 1
                with pytest.raises(ValueError, match="empty symbol interval"):
                    ours.encode(c_lo, c_hi)
                continue
            fine += 1
            ref.flush()
            ours.encode(c_lo, c_hi)
            ours.flush()
            assert ours.getvalue() == fo.getvalue(), (prefix, c_lo, c_hi)
    assert empty >= 10 and fine >= 10  # both cases are exercised
