"""Coding-layer behaviour that mutation testing found unpinned, now pinned with real values:
the arithmetic encoder's flush of a single pending bit (against the official coder), the
packet parser's data-body bound taken from the stream header, loudness normalisation's peak
limit and gated level's relative gate, and the residual vector quantiser's encode (each
layer quantises what the previous left) and decode (every codebook summed)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import official_ref  # noqa: F401  (registers the torchaudio stand-in before encodec imports)
from encodec.quantization.ac import ArithmeticCoder
from opencodec.data.loudness import gated_rms_db, normalize_loudness
from opencodec.entropy import ArithmeticDecoder, ArithmeticEncoder, build_quantized_cdf
from opencodec.quantization.rvq import ResidualVectorQuantizer
from opencodec.stream import Damaged, DataPacket, HeaderPacket, PacketParser, data_packet
from opencodec.stream.format import StreamInfo, header_packet


# -- arithmetic coder: short, skewed sequences (the flush of exactly one pending bit) ----------
def test_short_skewed_sequences_match_official_coder_bytes_and_round_trip() -> None:
    """1000 sequences of 1 to 6 symbols, drawn uniformly, over sharply skewed 16-bin CDFs: our
    bytes equal the official ``ArithmeticCoder``'s and decode back. A rare bin (2 counts of
    2**24) narrows the interval to a few units, so many of these streams end with exactly one
    pending bit (``max_bit == 0``), which ``flush`` must write (a ``> 0`` test drops it)."""
    gen = torch.Generator().manual_seed(11)
    one_bit_flushes = 0
    for _ in range(1000):
        steps = int(torch.randint(1, 7, (1,), generator=gen))
        pdfs = torch.softmax(torch.randn(steps, 16, generator=gen) * 8, -1)
        cdfs = build_quantized_cdf(pdfs)
        symbols = torch.randint(0, 16, (steps,), generator=gen).tolist()  # rare bins too
        if int(cdfs[:, -1].max()) > 1 << 24:  # a float32 pdf summing past 1: outside both coders'
            continue                          # contract (cdf[-1] <= 2**24); ~0.6% of rows here
        fo = io.BytesIO()
        ref = ArithmeticCoder(fo)
        ours = ArithmeticEncoder()
        for s, cdf in zip(symbols, cdfs):
            ref.push(s, cdf)
            ours.push(s, cdf)
        one_bit_flushes += ours.max_bit == 0
        ref.flush()
        ours.flush()
        assert ours.getvalue() == fo.getvalue(), (symbols, ours.getvalue(), fo.getvalue())
        dec = ArithmeticDecoder(ours.getvalue() + b"\x00\x00\x00\x00")
        assert [dec.pull(row) for row in cdfs.tolist()] == symbols
    assert one_bit_flushes >= 10  # the case this test is about did occur


# -- packet parser: the header's max_data_body bounds a data packet's length field -----------
INFO = StreamInfo(model_name="test", sample_rate=24000, channels=1, num_codebooks=3, bits=6,
                  hop_length=320, frames_per_packet=4)


def test_length_past_the_headers_data_bound_is_damage_not_a_wait() -> None:
    """After a header, a data packet whose length field says 60000 (under the format's
    65535, far over this header's largest data body) is damage at once: the three good data
    packets after it come out of the same ``feed`` call, not held back waiting for 60000 bytes."""
    gen = torch.Generator().manual_seed(3)
    codes = [torch.randint(0, 64, (3, 4), generator=gen) for _ in range(4)]
    bad = bytearray(data_packet(INFO, 0, codes[0]))
    bad[9:11] = (60000).to_bytes(2, "big")  # the body length field (after sync, type, seq)
    good = [data_packet(INFO, i, codes[i]) for i in (1, 2, 3)]
    stream = header_packet(INFO, 0) + bytes(bad) + b"".join(good)
    assert INFO.max_data_body < 60000

    parser = PacketParser()
    packets = parser.feed(stream)
    assert isinstance(packets[0], HeaderPacket)
    data = [p for p in packets if isinstance(p, DataPacket)]
    assert [p.seq for p in data] == [1, 2, 3]
    assert [p.payload for p in data] == [g[12:-4] for g in good]
    damaged = [p for p in packets if isinstance(p, Damaged)]
    assert len(damaged) == 1
    assert damaged[0].offset == len(header_packet(INFO, 0))
    assert damaged[0].reason == (f"implausible body length 60000 for a data packet "
                                 f"(expected 2 to {INFO.max_data_body})")
    assert parser.finish() == []


# -- loudness helpers --------------------------------------------------------------------------
SR = 16000


def test_normalize_loudness_lowers_the_gain_to_respect_the_peak() -> None:
    """Noise at about -40 dBFS with one full-scale impulse, normalised to -20 dBFS: the
    +20 dB gain would put the impulse at 10.0; the gain is lowered so the peak is 0.95."""
    rng = np.random.default_rng(0)
    audio = (0.01 * rng.standard_normal((1, SR))).astype(np.float32)
    audio[0, SR // 2] = 1.0
    assert -40 < gated_rms_db(audio, SR) < -37  # the impulse lifts its 50 ms block
    out = normalize_loudness(audio, SR, target_db=-20.0, peak=0.95)
    assert out.dtype == np.float32 and out.shape == audio.shape
    assert float(np.max(np.abs(out))) <= 0.95 + 1e-6
    assert float(np.max(np.abs(out))) == pytest.approx(0.95, abs=1e-6)
    np.testing.assert_allclose(out, audio * 0.95, rtol=1e-6, atol=1e-8)  # one gain, no clipping


def test_normalize_loudness_reaches_the_target_when_the_peak_allows() -> None:
    rng = np.random.default_rng(1)
    audio = (0.01 * rng.standard_normal((2, SR))).astype(np.float32)
    out = normalize_loudness(audio, SR, target_db=-20.0, peak=0.95)
    assert gated_rms_db(out, SR) == pytest.approx(-20.0, abs=0.01)
    assert float(np.max(np.abs(out))) < 0.95


def test_gated_rms_relative_gate_is_10_db() -> None:
    """1 s of a tone at 0 dBFS RMS, then 1 s of it 15 dB quieter: the relative gate (10 dB
    under the mean block power, -2.87 dB here) drops the quiet second, so the level is the
    loud part's, 0 dB. A 20 dB gate would keep it: -2.87 dB."""
    t = np.arange(SR) / SR
    tone = math.sqrt(2) * np.sin(2 * np.pi * 1000 * t)  # 0 dBFS RMS; 50 whole cycles per 50 ms block
    audio = np.concatenate([tone, tone * 10 ** (-15 / 20)])[None]
    assert gated_rms_db(audio[:, :SR], SR) == pytest.approx(0.0, abs=1e-6)
    assert gated_rms_db(audio, SR) == pytest.approx(0.0, abs=0.1)
    ungated = 10 * math.log10((1 + 10 ** -1.5) / 2)
    assert ungated < -2.8  # what keeping the quiet part would give


# -- residual vector quantiser: hand-set codebooks ---------------------------------------------
def _rvq() -> ResidualVectorQuantizer:
    """Dimension 2, three codebooks of 4 entries, set by hand (no k-means)."""
    rvq = ResidualVectorQuantizer(dimension=2, n_q=3, bins=4, kmeans_init=False)
    books = [[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]],
             [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]],
             [[0.0, 0.0], [0.25, 0.0], [0.0, 0.25], [-0.25, -0.25]]]
    for layer, book in zip(rvq.vq.layers, books):
        layer._codebook.embed.copy_(torch.tensor(book))
    return rvq.eval()


def test_rvq_encode_quantises_each_residual_and_decode_sums_every_codebook() -> None:
    rvq = _rvq()
    cb = [layer.codebook for layer in rvq.vq.layers]
    x = torch.tensor([[[3.8, 0.2, -5.2], [0.8, 5.3, -4.9]]])  # [B=1, D=2, T=3]

    # Nearest neighbour by hand, each layer on what the previous ones left.
    expected = []
    for t in range(x.shape[-1]):
        residual, row = x[0, :, t].clone(), []
        for book in cb:
            c = int(torch.argmin(((book - residual) ** 2).sum(-1)))
            row.append(c)
            residual = residual - book[c]
        expected.append(row)
    expected_codes = torch.tensor(expected).t()[None]  # [1, 3, T]
    # The third layer sees (-0.2, -0.2), (0.2, 0.3), (-0.2, 0.1): not x minus the second
    # layer's vector alone, which would pick entries 1, 2, 3.
    assert expected_codes.tolist() == [[[1, 2, 3], [2, 2, 3], [3, 2, 0]]]

    assert torch.equal(rvq.encode(x), expected_codes)
    assert torch.equal(rvq.encode(x, 2), expected_codes[:, :2])
    codes = torch.tensor([[[1, 2, 3], [2, 1, 3], [1, 3, 2]]])
    want = torch.stack([cb[0][codes[0, 0]] + cb[1][codes[0, 1]] + cb[2][codes[0, 2]]]).transpose(1, 2)
    assert torch.equal(rvq.decode(codes), want)
    assert torch.equal(rvq.decode(codes[:, :2]),
                       torch.stack([cb[0][codes[0, 0]] + cb[1][codes[0, 1]]]).transpose(1, 2))
