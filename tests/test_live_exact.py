"""Exact values of the live path that other tests leave unpinned:
sequence numbers modulo 2**32 and the half-range rule, the receiver's counts, gap and end
packet edge cases, the parser's data-length bound, WAV stream reading corner cases, the
sink's peak, the decoder's hold-back of ``hop - 1`` samples, and the output's fixed format
across concatenated streams.

Each test here was seen to fail on a plausible one-line bug (listed in its docstring) that
the rest of the suite did not notice.
"""

from __future__ import annotations

import io
import json
import struct
import typing as tp
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.errors import AudioIOError, BitstreamError
from opencodec.stream import (
    AudioSink, CodeFrames, DataPacket, HeaderPacket, MissingFrames, Notice,
    PacketAudioDecoder, PacketParser, PacketWriter, PcmStreamReader, StreamEnd, StreamInfo,
    StreamReceiver, StreamStart, data_packet, decode_stream, encode_stream, end_packet, header_packet,
    split_model_label)
from stream_models import tiny_stream_model

HOP = 320
INFO = StreamInfo(model_name="test", sample_rate=24000, channels=1, num_codebooks=3, bits=6,
                  hop_length=HOP, frames_per_packet=4)


def random_codes(frames: int, seed: int, k: int = 3, bits: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, (k, frames), generator=gen)


def receive(data: bytes, max_gap_seconds: float = 30.0) -> tuple[list[tp.Any], StreamReceiver]:
    """All receiver events for ``data`` (fed whole), and the receiver (for its stats)."""
    parser, receiver = PacketParser(), StreamReceiver(max_gap_seconds)
    events: list[tp.Any] = []
    for packet in parser.feed(data) + parser.finish():
        events += receiver.handle(packet)
    return events + receiver.finish(), receiver


def of(events: list[tp.Any], kind: type) -> list[tp.Any]:
    return [e for e in events if isinstance(e, kind)]


def with_crc(prefix: bytes) -> bytes:
    return prefix + struct.pack(">I", zlib.crc32(prefix))


# ------------------------------------------------------------------------------------------
# Sequence numbers
# ------------------------------------------------------------------------------------------
def test_packet_numbers_are_written_modulo_2_32_and_followed_across_the_wrap() -> None:
    """Mutant: ``_packet`` packs ``seq`` without ``% 2**32`` (struct.error past 2**32)."""
    c = random_codes(13, seed=1)
    assert header_packet(INFO, (1 << 32) + 5) == header_packet(INFO, 5)
    assert data_packet(INFO, (1 << 32) + 1, c[:, :4]) == data_packet(INFO, 1, c[:, :4])
    assert end_packet((1 << 32) + 3, 10) == end_packet(3, 10)
    # a stream whose numbering wraps: data packets 2**32-2, 2**32-1, 0, 1; its end packet says 2
    start = (1 << 32) - 2
    first = start * 4
    total = (first + 13) * HOP - 5
    data = (header_packet(INFO, start) + data_packet(INFO, start, c[:, 0:4])
            + data_packet(INFO, start + 1, c[:, 4:8]) + data_packet(INFO, start + 2, c[:, 8:12])
            + data_packet(INFO, start + 3, c[:, 12:13]) + end_packet(start + 4, total))
    events, receiver = receive(data)
    assert of(events, Notice) == [] and of(events, MissingFrames) == []
    assert of(events, StreamStart) == [StreamStart(INFO, first)]
    assert [e.first_frame for e in of(events, CodeFrames)] == [first, first + 4, first + 8, first + 12]
    assert torch.equal(torch.cat([e.codes for e in of(events, CodeFrames)], 1), c)
    assert events[-1] == StreamEnd(13 * HOP - 5)
    assert receiver.stats.data_packets == 4 and receiver.stats.lost_packets == 0


def test_a_packet_half_the_numbering_away_counts_as_an_old_one() -> None:
    """The distance is read as a signed number in [-2**31, 2**31): exactly 2**31 ahead is
    2**31 behind (an old packet, dropped), 2**31 - 1 ahead a jump (a restart).
    Mutant: ``d > 2**31 // 2`` for ``d >= ...`` in ``_seq_distance``."""
    c = random_codes(4, seed=2)
    base = header_packet(INFO, 0) + data_packet(INFO, 0, c)  # the next expected is 1
    events, receiver = receive(base + data_packet(INFO, 1 + (1 << 31), c))
    assert [n.message for n in of(events, Notice)][0] == (
        f"data packet {1 + (1 << 31)} at byte {len(base)} is a duplicate or out of order "
        "(expected 1): dropped")
    assert len(of(events, StreamStart)) == 1 and receiver.stats.dropped_packets == 1
    events, receiver = receive(base + data_packet(INFO, (1 << 31), c))
    assert "not concealed, decoding restarts" in of(events, Notice)[0].message
    assert len(of(events, StreamStart)) == 2 and receiver.stats.dropped_packets == 0


# ------------------------------------------------------------------------------------------
# The receiver: counts, gaps, end packets, packets that do not fit
# ------------------------------------------------------------------------------------------
def test_receiver_counts_losses_duplicates_and_damage() -> None:
    """Mutant: ``stats.lost_packets += lost_packets`` removed (the command line prints it)."""
    c = random_codes(37, seed=3)
    writer = PacketWriter(INFO, header_every=100)
    packets = [writer.push(c[:, i:i + 4]) for i in range(0, 37, 4)]
    packets.append(writer.finish(37 * HOP))
    # packets 4 and 5 lost, packet 2 twice, one byte of packet 7 damaged
    bad7 = bytearray(packets[7])
    bad7[13] ^= 1
    data = b"".join(packets[:3]) + packets[2] + packets[3] + packets[6] + bytes(bad7) + b"".join(packets[8:])
    events, receiver = receive(data)
    s = receiver.stats
    assert (s.streams, s.data_packets, s.lost_packets, s.missing_frames) == (1, 7, 3, 12)
    assert (s.dropped_packets, s.damaged_regions, s.damaged_bytes) == (1, 1, len(packets[7]))
    assert of(events, MissingFrames) == [MissingFrames(16, 8), MissingFrames(28, 4)]
    assert events[-1] == StreamEnd(37 * HOP)


def test_a_gap_of_exactly_max_gap_seconds_is_concealed() -> None:
    """Mutant: ``seconds >= max_gap_seconds`` restarts at the limit itself."""
    c = random_codes(12, seed=4)
    data = (header_packet(INFO, 0) + data_packet(INFO, 0, c[:, 0:4])
            + data_packet(INFO, 2, c[:, 8:12]) + end_packet(3, 12 * HOP))
    events, _ = receive(data, max_gap_seconds=4 * HOP / 24000)
    assert of(events, MissingFrames) == [MissingFrames(4, 4)]
    assert of(events, StreamEnd) == [StreamEnd(12 * HOP)]
    events, _ = receive(data, max_gap_seconds=4 * HOP / 24000 * 0.999)
    assert of(events, MissingFrames) == [] and len(of(events, StreamStart)) == 2


def test_an_end_packet_saying_more_frames_than_were_numbered_conceals_one_packet() -> None:
    """The end packet's numbering matches (no packet lost by number) but its length needs
    more frames: they are concealed and counted as one lost packet.
    Mutant: ``lost = d`` for ``lost = max(1, d)``."""
    c = random_codes(4, seed=5)
    data = header_packet(INFO, 0) + data_packet(INFO, 0, c) + end_packet(1, 8 * HOP)
    events, receiver = receive(data)
    assert of(events, MissingFrames) == [MissingFrames(4, 4)]
    assert of(events, Notice)[0].message.startswith("the last 1 data packet(s) lost: 4 frame(s)")
    assert receiver.stats.lost_packets == 1 and events[-1] == StreamEnd(8 * HOP)


def test_an_end_packet_one_frame_short_leaves_the_output_untrimmed() -> None:
    """Mutant: ``total_frames < next_frame - 1`` (off by one) trims to a length that does not fit."""
    c = random_codes(4, seed=6)
    data = header_packet(INFO, 0) + data_packet(INFO, 0, c) + end_packet(1, 3 * HOP)
    events, _ = receive(data)
    assert "fewer than the 4 frames received: output not trimmed" in of(events, Notice)[0].message
    assert events[-1] == StreamEnd(None)
    data = header_packet(INFO, 0) + data_packet(INFO, 0, c) + end_packet(1, 3 * HOP + 1)
    assert receive(data)[0][-1] == StreamEnd(3 * HOP + 1)


def test_a_stale_end_packet_is_dropped() -> None:
    """An end packet whose count is behind the data received (a reordered one) is dropped and
    the real one ends the stream. Mutant: ``d < -1`` for ``d < 0`` in ``_end``."""
    c = random_codes(8, seed=7)
    stale = end_packet(1, 4 * HOP)
    base = header_packet(INFO, 0) + data_packet(INFO, 0, c[:, :4]) + data_packet(INFO, 1, c[:, 4:])
    events, receiver = receive(base + stale + end_packet(2, 8 * HOP - 3))
    assert [n.message for n in of(events, Notice)] == [
        f"end packet at byte {len(base)} is out of order (says 1 data packets, 2 already "
        "received): dropped"]
    assert of(events, StreamEnd) == [StreamEnd(8 * HOP - 3)] and receiver.stats.dropped_packets == 1


def test_a_data_packet_whose_code_bytes_do_not_fit_its_frame_count_is_dropped() -> None:
    """A CRC-valid data packet claiming 1 frame but carrying 4 frames' code bytes. Mutant: the
    ``len(payload) + 1 != data_body_size(frames)`` check removed (its codes were decoded)."""
    c = random_codes(8, seed=8)
    full = data_packet(INFO, 1, c[:, 4:8])
    odd = bytearray(full[:-4])
    odd[11] = 1  # F = 1, body unchanged
    data = (header_packet(INFO, 0) + data_packet(INFO, 0, c[:, :4]) + with_crc(bytes(odd))
            + data_packet(INFO, 1, c[:, 4:8]) + end_packet(2, 8 * HOP))
    events, receiver = receive(data)
    assert "does not fit the stream header (1 frame(s), 9 code bytes" in of(events, Notice)[0].message
    assert torch.equal(torch.cat([e.codes for e in of(events, CodeFrames)], 1), c)
    assert receiver.stats.dropped_packets == 1 and of(events, MissingFrames) == []


# ------------------------------------------------------------------------------------------
# Format and parser
# ------------------------------------------------------------------------------------------
def test_stream_info_bounds_are_exact() -> None:
    """Mutant: the bits bound raised from 32 to 64."""
    StreamInfo("m", 24000, 1, 1, 32, 320, 1)
    for fields in ((1, 1, 33, 320, 1), (256, 1, 8, 320, 1), (1, 256, 8, 320, 1),
                   (1, 1, 8, 0x10000, 1), (1, 1, 8, 320, 256), (0, 1, 8, 320, 1)):
        with pytest.raises(BitstreamError, match="stream header field"):
            StreamInfo("m", 24000, *fields)


def test_model_label_hash_suffix_is_exactly_16_hex_digits() -> None:
    """Only ``#`` and 16 lower-case hex digits are a weights hash; anything else is part of
    the name. Mutant: the length check dropped (``name#abc`` read as hash "abc")."""
    digest = "e701927ffb852e18"
    assert split_model_label(f"opencodec_24khz_v5#{digest}") == ("opencodec_24khz_v5", digest)
    assert split_model_label(f"a#b#{digest}") == ("a#b", digest)
    for label in ("name#abc", f"name#{digest}0", f"name#{digest[:-1]}", f"name#{digest.upper()}", "name#"):
        assert split_model_label(label) == (label, None)
    info = StreamInfo("x#abc", 24000, 1, 1, 8, 320, 1)
    assert info.model == ("x#abc", None)


def test_end_packet_refuses_lengths_beyond_64_bits() -> None:
    """Mutant: the range check of ``end_packet`` removed (struct.error, not ValueError)."""
    for total in (-1, 1 << 64):
        with pytest.raises(ValueError, match="total_samples must fit in 64 bits"):
            end_packet(0, total)
    assert end_packet(0, (1 << 64) - 1)[11:19] == b"\xff" * 8


def test_a_header_whose_name_length_field_lies_is_an_error() -> None:
    """Mutant: the name length check of ``parse_header_body`` removed."""
    packet = bytearray(header_packet(INFO, 0)[:-4])
    packet[22] = 5  # the name "test" has 4 bytes
    with pytest.raises(BitstreamError, match="name length field says 5 bytes, the packet holds 4"):
        PacketParser().feed(with_crc(bytes(packet)))


def test_a_damaged_length_field_costs_no_waiting_once_a_header_is_known() -> None:
    """After a header the parser bounds a data body by that header's largest packet, so a
    damaged length field is given up at once: the packets after it come out of ``feed``,
    not only at ``finish``. Mutant: the parser never learns the bound (65535 bytes)."""
    c = random_codes(12, seed=9)
    bad = bytearray(data_packet(INFO, 1, c[:, 4:8]))
    bad[9:11] = struct.pack(">H", 0x7000)
    data = (header_packet(INFO, 0) + data_packet(INFO, 0, c[:, :4]) + bytes(bad)
            + data_packet(INFO, 2, c[:, 8:12]))
    out = PacketParser().feed(data)
    assert [type(p).__name__ for p in out] == ["HeaderPacket", "DataPacket", "Damaged", "DataPacket"]
    assert out[-1].seq == 2


# ------------------------------------------------------------------------------------------
# PCM in (WAV stream corner cases)
# ------------------------------------------------------------------------------------------
def wav_head(fmt_body: bytes, data_size: int, riff: int = 0xFFFFFFFF) -> bytes:
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body))
            + fmt_body + b"data" + struct.pack("<I", data_size))


def read_all(reader: PcmStreamReader, size: int = 1 << 10) -> np.ndarray:
    blocks = []
    while (block := reader.read(size)) is not None:
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, reader.format.channels), np.float32)


PCM16_MONO = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
SAMPLES = (np.arange(100, dtype=np.int16) * 301 - 15000).reshape(-1, 1)


def test_wav_data_size_zero_means_until_the_end() -> None:
    """Mutant: only 0xFFFFFFFF taken for "unknown" (a size of 0 read as no audio)."""
    got = read_all(PcmStreamReader(io.BytesIO(wav_head(PCM16_MONO, 0) + SAMPLES.tobytes())))
    np.testing.assert_array_equal(got, SAMPLES / 32768.0)


def test_wav_reader_stops_at_the_end_of_the_data_chunk() -> None:
    """A chunk after the audio (LIST metadata) is not read as samples.
    Mutant: the ``_remaining`` bound on reads removed."""
    trailer = b"LIST" + struct.pack("<I", 8) + b"INFOabcd"
    data = wav_head(PCM16_MONO, SAMPLES.nbytes) + SAMPLES.tobytes() + trailer
    got = read_all(PcmStreamReader(io.BytesIO(data)), 64)
    np.testing.assert_array_equal(got, SAMPLES / 32768.0)


def test_wav_block_align_must_match_the_format() -> None:
    """Mutant: the block align check removed."""
    bad = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 2, 16)  # 2 channels of 16 bits: align is 4
    with pytest.raises(AudioIOError, match="block align is 2, expected 4"):
        PcmStreamReader(io.BytesIO(wav_head(bad, 0) + bytes(40)))


def test_wav_extensible_float_is_read_by_its_sub_format() -> None:
    """WAVE_FORMAT_EXTENSIBLE: the format is the first two bytes of the sub-format GUID at
    offset 24 of the fmt body. Mutant: read at offset 22 (the channel mask)."""
    x = np.array([[0.5, -0.25], [0.125, -1.0], [0.0, 0.75]], dtype="<f4")
    guid = struct.pack("<H", 3) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, 8000, 64000, 8, 32, 22, 32, 3) + guid
    got = read_all(PcmStreamReader(io.BytesIO(wav_head(fmt, x.nbytes) + x.tobytes())))
    np.testing.assert_array_equal(got, x)


# ------------------------------------------------------------------------------------------
# Audio out
# ------------------------------------------------------------------------------------------
def test_sink_peak_counts_negative_samples() -> None:
    """Mutant: ``peak = max(data)`` (the negative half ignored: no clipping warning)."""
    sink = AudioSink(io.BytesIO(), 24000, 2)
    sink.write(torch.tensor([[0.5, -1.5, 0.25], [0.1, 0.2, -0.3]]))
    assert sink.peak == 1.5
    assert sink.frames == 3


# ------------------------------------------------------------------------------------------
# Model-level: hold-back, concealed samples, output format across streams
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> tp.Any:
    return tiny_stream_model("tiny_exact", 0)


def test_decoder_holds_back_exactly_hop_minus_one_samples(tiny: tp.Any) -> None:
    """After each code frame past the warm-up all audio but the last ``hop - 1`` samples is
    out (one frame of latency, as documented), and the end packet's length releases the
    rest. Mutant: ``hop`` samples held back (latency of a frame and a sample, each push)."""
    info = StreamInfo.from_model(tiny, 2)
    decoder = PacketAudioDecoder(lambda i: tiny)
    decoder.handle(StreamStart(info, 0))
    codes = random_codes(12, seed=10, k=2, bits=6)
    released = []
    for t in range(12):
        released.append(sum(a.shape[-1] for a in decoder.handle(CodeFrames(t, codes[:, t:t + 1]))))
    assert released[:6] == [0] * 6  # the warm-up: 7 frames come out together
    assert released[6:] == [7 * HOP - (HOP - 1)] + [HOP] * 5
    rest = decoder.handle(StreamEnd(12 * HOP - 10))
    assert sum(a.shape[-1] for a in rest) == HOP - 1 - 10
    assert decoder.samples == 12 * HOP - 10


def test_decode_report_counts_concealed_samples(tiny: tp.Any) -> None:
    """Mutant: ``concealed_samples`` never counted (the command line reports it)."""
    gen = torch.Generator().manual_seed(0)
    x = (0.3 * torch.randn(1, 20 * HOP, generator=gen)).clamp(-1, 1)
    wav = io.BytesIO()
    sf.write(wav, x.numpy().T, 24000, format="WAV", subtype="FLOAT")
    out = io.BytesIO()
    encode_stream(tiny, io.BytesIO(wav.getvalue()), out, bandwidth=0.9, frames_per_packet=2)
    data = out.getvalue()
    packets = PacketParser().feed(data)
    i = next(i for i, p in enumerate(packets) if isinstance(p, DataPacket) and p.seq == 3)
    cut = data[:packets[i].offset] + data[packets[i + 1].offset:]  # data packet 3: frames 6-7
    report = decode_stream(io.BytesIO(cut), io.BytesIO(), lambda info: tiny, raw=True)
    assert report.concealed_samples == 2 * HOP
    assert report.samples == 20 * HOP and report.stats.lost_packets == 1


def test_a_later_stream_with_other_channels_is_refused(tiny: tp.Any) -> None:
    """The first stream fixes the output's format; a concatenated stream with other channels
    is an error, not stereo samples written into a mono WAV. Mutant: the check removed."""
    stereo = tiny_stream_model("tiny_exact_stereo", 0, channels=2)
    models = {1: tiny, 2: stereo}
    data = b""
    for model in (tiny, stereo):
        info = StreamInfo.from_model(model, 2)
        writer = PacketWriter(info)
        data += writer.push(random_codes(8, seed=11, k=2)) + writer.finish(8 * HOP)
    with pytest.raises(BitstreamError, match="a new stream at 24000 Hz, 2 channel"):
        decode_stream(io.BytesIO(data), io.BytesIO(), lambda info: models[info.channels])


# ------------------------------------------------------------------------------------------
# opencodec serve: PCM on the wire, close reasons, the hello, decode mode's damage bound,
# the opening gate (model-free units of the server)
# ------------------------------------------------------------------------------------------
def test_wire_pcm_is_interleaved_float32_little_endian() -> None:
    """Mutants: ``pcm_from_bytes`` / ``pcm_to_bytes`` without the transpose (channels read
    or written one after the other: equal for mono, wrong for a stereo model)."""
    from opencodec.serve.protocol import pcm_from_bytes, pcm_to_bytes
    audio = np.array([[0.5, -0.25, 1.0], [0.125, 0.75, -1.0]], dtype=np.float32)  # [C=2, n=3]
    wire = struct.pack("<6f", 0.5, 0.125, -0.25, 0.75, 1.0, -1.0)  # L0 R0 L1 R1 L2 R2
    assert pcm_to_bytes(audio) == wire
    np.testing.assert_array_equal(pcm_from_bytes(wire, 2), audio)


def test_close_reasons_fit_a_close_frame() -> None:
    """A close frame's reason is at most 123 bytes. Mutant: cut at 120 bytes before the
    "..." is added (123 + 3)."""
    from opencodec.serve.protocol import MAX_REASON, close_reason
    for text in ("x" * 300, "word " * 60, "é" * 100):
        reason = close_reason(text)
        assert len(reason.encode("utf-8")) <= MAX_REASON and reason.endswith("...")
    assert close_reason("y" * MAX_REASON) == "y" * MAX_REASON


def test_hello_frames_per_packet_bounds() -> None:
    """Mutant: 0 frames per packet accepted."""
    from opencodec.serve.protocol import ProtocolError, parse_hello
    def hello(fpp: tp.Any) -> str:
        return json.dumps({"mode": "encode", "frames_per_packet": fpp})
    for fpp in (1, 255):
        assert parse_hello(hello(fpp), [1.5, 6.0], "m").frames_per_packet == fpp
    for fpp in (0, 256, 2.0, "4", True):
        with pytest.raises(ProtocolError, match="frames_per_packet must be an integer in"):
            parse_hello(hello(fpp), [1.5, 6.0], "m")


def test_decode_mode_gives_up_after_twice_the_largest_packet_of_garbage() -> None:
    """Before a header the largest packet is a header's (282 bytes): 564 bytes without a
    packet pass, 565 do not. After a header its largest data packet sets the bound.
    Mutants: 3x instead of 2x; the header's data packet size not taken into account."""
    from opencodec.serve.decode_input import SyncWatch
    from opencodec.serve.protocol import ProtocolError
    list(SyncWatch().parsed(PacketParser(), bytes(564)))
    with pytest.raises(ProtocolError, match="565 bytes without a whole packet .the largest is 282"):
        list(SyncWatch().parsed(PacketParser(), bytes(565)))
    big = StreamInfo("big", 24000, 1, 32, 10, 320, 32)  # data packets of 16 + 1280 bytes
    head = header_packet(big, 0)
    watch = SyncWatch()
    packets = list(watch.parsed(PacketParser(), head + bytes(2 * 1296 - len(head))))
    assert isinstance(packets[0], HeaderPacket) and watch.largest == 1296
    with pytest.raises(ProtocolError, match="the largest is 1296 bytes"):
        list(SyncWatch().parsed(PacketParser(), head + bytes(2 * 1296 + 1)))


def test_opening_gate_admits_exactly_its_limit() -> None:
    """Mutant: ``count > limit`` lets one connection more in."""
    from opencodec.serve.limits import OpeningGate
    gate = OpeningGate(2)
    assert [gate.enter() for _ in range(3)] == [True, True, False]
    assert (gate.count, gate.refused) == (2, 1)
    gate.leave()
    assert gate.enter() and not gate.enter() and gate.refused == 2


# ------------------------------------------------------------------------------------------
# Many streams: one stream's state never reaches another
# ------------------------------------------------------------------------------------------
def _alone_codes(model: tp.Any, x: torch.Tensor) -> torch.Tensor:
    from opencodec.streaming import StreamingEncoder
    enc = StreamingEncoder(model)
    parts = [enc.push(x[None, :, i:i + HOP]) for i in range(0, x.shape[-1] - x.shape[-1] % HOP, HOP)]
    tail = x[None, :, x.shape[-1] - x.shape[-1] % HOP:]
    if tail.shape[-1]:
        parts.append(enc.push(tail))
    return torch.cat(parts + [enc.flush()], dim=-1)[0]


def _alone_audio(model: tp.Any, codes: torch.Tensor) -> torch.Tensor:
    from opencodec.streaming import StreamingDecoder
    dec = StreamingDecoder(model)
    parts = [dec.push(codes[None, :, f:f + 1]) for f in range(codes.shape[-1])]
    return torch.cat(parts + [dec.flush()], dim=-1)[0]


def test_multistream_streams_are_isolated_whatever_the_order_and_departures(tiny: tp.Any) -> None:
    """Unbatched (bit for bit): three streams with different signals, pushed in a dict order
    that differs from their row order, the middle row leaving early with a tail, the others
    going on: every stream's codes and audio are those of the stream alone, and
    ``frames_in`` counts each stream's frames. Mutants: ``drop`` removing row 0 instead of the
    stream's; the gather skipped when the ids are the rows in another order; ``close``
    finishing with another stream's state; ``frames_in`` set instead of added to."""
    from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
    tiny.set_target_bandwidth(1.8)
    try:
        gen = torch.Generator().manual_seed(3)
        lengths = [20 * HOP, 10 * HOP + 77, 16 * HOP]
        xs = [(0.3 * torch.randn(1, n, generator=gen) + 0.2 * i).clamp(-1, 1) for i, n in enumerate(lengths)]
        enc = MultiStreamEncoder(tiny, batched=False)
        ids = [enc.open() for _ in xs]
        got: list[list[torch.Tensor]] = [[] for _ in xs]
        for t in range(20):
            live = [i for i in range(3) if ids[i] in enc.frames_in and (t + 1) * HOP <= lengths[i]]
            order = live[::-1] if t % 2 else live  # dict order alternates against the row order
            out = enc.push({ids[i]: xs[i][:, t * HOP:(t + 1) * HOP] for i in order})
            for i in live:
                got[i].append(out[ids[i]])
            if t == 9:  # stream 1 leaves after its 10 whole frames, with its 77-sample tail
                assert enc.frames_in == {ids[0]: 10, ids[1]: 10, ids[2]: 10}
                got[1].append(enc.close(ids[1], xs[1][:, 10 * HOP:]))
        assert enc.frames_in == {ids[0]: 20, ids[2]: 16}
        got[0].append(enc.close(ids[0]))
        got[2].append(enc.close(ids[2]))
        codes = [torch.cat(g, dim=-1) for g in got]
        for x, c in zip(xs, codes):
            assert torch.equal(c, _alone_codes(tiny, x))
        assert not torch.equal(codes[0][:, :10], codes[2][:, :10])  # the streams differ
        dec = MultiStreamDecoder(tiny, batched=False)
        dids = [dec.open() for _ in codes]
        audio: list[list[torch.Tensor]] = [[] for _ in codes]
        for t in range(max(c.shape[-1] for c in codes)):
            live = [i for i in range(3) if dids[i] in dec.frames_in and t < codes[i].shape[-1]]
            order = live[::-1] if t % 2 else live
            out = dec.push({dids[i]: codes[i][:, t:t + 1] for i in order})
            for i in live:
                audio[i].append(out[dids[i]])
            for i in live:
                if t + 1 == codes[i].shape[-1]:
                    audio[i].append(dec.close(dids[i]))
        for c, a in zip(codes, audio):
            assert torch.equal(torch.cat(a, dim=-1), _alone_audio(tiny, c))
    finally:
        tiny.bandwidth = None


def test_decode_warns_once_when_the_decoded_audio_clips(tiny: tp.Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """16-bit output of audio beyond full scale is clipped and said once, with the peak.
    The decoder's output is scaled (a wrapper around the real one) to peak at 1.2.
    Mutant: the warning only above a peak of 1.5."""
    gen = torch.Generator().manual_seed(1)
    x = (0.3 * torch.randn(1, 12 * HOP, generator=gen)).clamp(-1, 1)
    wav = io.BytesIO()
    sf.write(wav, x.numpy().T, 24000, format="WAV", subtype="FLOAT")
    out = io.BytesIO()
    encode_stream(tiny, io.BytesIO(wav.getvalue()), out, bandwidth=0.9)
    plain = io.BytesIO()
    decode_stream(io.BytesIO(out.getvalue()), plain, lambda info: tiny, raw=True, float32=True)
    peak = float(np.abs(np.frombuffer(plain.getvalue(), "<f4")).max())
    assert 0.01 < peak < 1.0
    real = PacketAudioDecoder.handle
    monkeypatch.setattr(PacketAudioDecoder, "handle",
                        lambda self, event: [a * (1.2 / peak) for a in real(self, event)])
    said: list[str] = []
    loud = io.BytesIO()
    decode_stream(io.BytesIO(out.getvalue()), loud, lambda info: tiny, raw=True, warn=said.append)
    assert said == ["peak amplitude 1.2000 exceeds full scale 1.0; clipped (--float keeps the peaks)"]
    pcm = np.frombuffer(loud.getvalue(), "<i2")
    assert pcm.max() == 32767 or pcm.min() == -32768


def test_batched_multistream_gathers_rows_when_the_push_order_differs(tiny: tp.Any) -> None:
    """Batched: the rows are gathered by stream id, not taken in row order, when a push
    lists the streams in another order than their rows. A near-silent stream and a loud one
    pushed in alternating order keep their own codes (>= 95% of frames as alone) and audio
    (1e-4 relative; a swapped state gives ~1). Mutant: the gather skipped whenever the push's
    ids are the rows' ids in any order."""
    from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
    tiny.set_target_bandwidth(1.8)
    try:
        gen = torch.Generator().manual_seed(4)
        t = torch.arange(16 * HOP) / 24000
        loud = 0.5 * torch.sin(2 * torch.pi * 440 * t)[None] + 0.3 * torch.randn(1, 16 * HOP, generator=gen)
        xs = [0.01 * torch.randn(1, 16 * HOP, generator=gen), loud.clamp(-1, 1)]
        enc, dec = MultiStreamEncoder(tiny, batched=True), MultiStreamDecoder(tiny, batched=True)
        eids, dids = [enc.open(), enc.open()], [dec.open(), dec.open()]
        codes: list[list[torch.Tensor]] = [[], []]
        audio: list[list[torch.Tensor]] = [[], []]
        for f in range(16):
            order = [1, 0] if f % 2 else [0, 1]
            out = enc.push({eids[i]: xs[i][:, f * HOP:(f + 1) * HOP] for i in order})
            for i in order:
                codes[i].append(out[eids[i]])
        for i in (0, 1):
            codes[i].append(enc.close(eids[i]))
        got = [torch.cat(c, dim=-1) for c in codes]
        for x, c in zip(xs, got):
            ref = _alone_codes(tiny, x)
            assert c.shape == ref.shape and (c == ref).all(dim=0).float().mean() >= 0.95
        for f in range(16):
            order = [1, 0] if f % 2 else [0, 1]
            out = dec.push({dids[i]: got[i][:, f:f + 1] for i in order})
            for i in order:
                audio[i].append(out[dids[i]])
        for i in (0, 1):
            a = torch.cat(audio[i] + [dec.close(dids[i])], dim=-1)
            ref = _alone_audio(tiny, got[i])
            assert a.shape == ref.shape and ((a - ref).norm() / ref.norm()).item() < 1e-4
    finally:
        tiny.bandwidth = None


def test_batched_streams_starting_together_with_different_extra_frames(tiny: tp.Any) -> None:
    """Three streams complete their 7-frame warm-up in the same push, two of them with
    frames beyond it (1 and 3: two steps over parts of the group): each keeps its own
    state and codes (>= 95% of frames as alone). Mutant: the state rows of a part of the
    group written over every row."""
    from opencodec.multistream import MultiStreamEncoder
    tiny.set_target_bandwidth(1.8)
    try:
        gen = torch.Generator().manual_seed(5)
        xs = [(0.3 * torch.randn(1, 14 * HOP, generator=gen) * (i + 1) / 3 + 0.1 * i).clamp(-1, 1)
              for i in range(3)]
        enc = MultiStreamEncoder(tiny, batched=True)
        ids = [enc.open() for _ in xs]
        first = [8, 10, 7]
        out = enc.push({sid: x[:, :n * HOP] for sid, x, n in zip(ids, xs, first)})
        codes = [[out[sid]] for sid in ids]
        for f in range(min(first), 14):
            live = [i for i in range(3) if f >= first[i]]
            out = enc.push({ids[i]: xs[i][:, f * HOP:(f + 1) * HOP] for i in live})
            for i in live:
                codes[i].append(out[ids[i]])
        for i, sid in enumerate(ids):
            got = torch.cat(codes[i] + [enc.close(sid)], dim=-1)
            ref = _alone_codes(tiny, xs[i])
            assert got.shape == ref.shape and (got == ref).all(dim=0).float().mean() >= 0.95
    finally:
        tiny.bandwidth = None
