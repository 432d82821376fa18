"""The packet stream container (``opencodec.stream``): byte layout, parsing, loss,
damage, joining mid-stream, truncation, and the model-level encode/decode chain.

Most tests are model-free (random codes through ``PacketWriter`` -> bytes ->
``PacketParser`` -> ``StreamReceiver``); the chain tests use a small random-weight causal
model and compare with offline ``model.encode``/``model.decode``.
"""

from __future__ import annotations

import io
import struct
import typing as tp
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.audio import convert_audio
from opencodec.errors import AudioIOError, BitstreamError, OpenCodecError
from opencodec.stream import (
    PACKET_OVERHEAD, SYNC, AudioSink, CodeFrames, Damaged, DataPacket, EndPacket, HeaderPacket,
    MissingFrames, Notice, PacketParser, PacketWriter, PcmFormat, PcmStreamReader, StreamEnd,
    StreamInfo, StreamReceiver, StreamStart, check_model_for_stream, data_packet, decode_stream,
    encode_stream, end_packet, header_packet)
from stream_models import tiny_stream_model

HOP = 320
INFO = StreamInfo(model_name="test", sample_rate=24000, channels=1, num_codebooks=3, bits=6,
                  hop_length=HOP, frames_per_packet=4)


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
def random_codes(k: int, frames: int, bits: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, (k, frames), generator=gen)


def write_stream(codes: torch.Tensor, total: int, info: StreamInfo = INFO, header_every: int = 3,
                 pushes: tp.Sequence[int] = (5, 1, 9)) -> bytes:
    """Packets for ``codes`` [K, F], pushed in uneven pieces."""
    writer = PacketWriter(info, header_every)
    out, pos, i = b"", 0, 0
    while pos < codes.shape[1]:
        n = pushes[i % len(pushes)]
        out += writer.push(codes[:, pos:pos + n])
        pos, i = pos + n, i + 1
    return out + writer.finish(total)


def split_packets(data: bytes) -> list[tuple[int, int, tp.Any]]:
    """(offset, size, packet) of every packet of a clean stream."""
    parser = PacketParser()
    packets = parser.feed(data) + parser.finish()
    assert not any(isinstance(p, Damaged) for p in packets)
    ends = [p.offset for p in packets[1:]] + [len(data)]
    return [(p.offset, end - p.offset, p) for p, end in zip(packets, ends)]


def receive(data: bytes, chunk: int = 1 << 20, max_gap_seconds: float = 30.0) -> list[tp.Any]:
    """All receiver events for ``data`` fed ``chunk`` bytes at a time."""
    parser, receiver = PacketParser(), StreamReceiver(max_gap_seconds)
    events: list[tp.Any] = []
    for start in range(0, len(data), chunk):
        for packet in parser.feed(data[start:start + chunk]):
            events += receiver.handle(packet)
    for packet in parser.finish():
        events += receiver.handle(packet)
    return events + receiver.finish()


def of(events: list[tp.Any], kind: type) -> list[tp.Any]:
    return [e for e in events if isinstance(e, kind)]


def frames_by_index(events: list[tp.Any]) -> dict[int, torch.Tensor]:
    """Received code frames keyed by absolute frame index: {index: codes [K]}."""
    out: dict[int, torch.Tensor] = {}
    for e in of(events, CodeFrames):
        for j in range(e.codes.shape[1]):
            assert e.first_frame + j not in out
            out[e.first_frame + j] = e.codes[:, j]
    return out


def nth_data(data: bytes, n: int) -> tuple[int, int, DataPacket]:
    return [p for p in split_packets(data) if isinstance(p[2], DataPacket)][n]


# ------------------------------------------------------------------------------------------
# Byte layout
# ------------------------------------------------------------------------------------------
def with_crc(prefix: bytes) -> bytes:
    return prefix + struct.pack(">I", zlib.crc32(prefix))


def test_header_packet_layout_is_byte_exact() -> None:
    info = StreamInfo(model_name="ab", sample_rate=24000, channels=1, num_codebooks=2, bits=10,
                      hop_length=320, frames_per_packet=4)
    expected = with_crc(bytes.fromhex(
        "4f435350"      # sync "OCSP"
        "48"            # type 'H'
        "00000010"      # seq 16 (the next data packet)
        "000e"          # body length 14 = 12 + len("ab")
        "01"            # version 1
        "00005dc0"      # 24000 Hz
        "01" "02" "0a"  # 1 channel, 2 codebooks, 10 bits
        "0140"          # hop 320
        "04"            # 4 frames per packet
        "02") + b"ab")  # name length 2, name
    assert header_packet(info, 16) == expected
    assert len(expected) == 27 + 2
    (packet,) = PacketParser().feed(expected)
    assert packet == HeaderPacket(offset=0, seq=16, info=info)


def test_data_and_end_packet_layout_is_byte_exact() -> None:
    info = StreamInfo(model_name="ab", sample_rate=24000, channels=1, num_codebooks=2, bits=10,
                      hop_length=320, frames_per_packet=4)
    codes = torch.tensor([[1, 1023], [2, 5]])  # [K=2, F=2]; time-major values 1, 2, 1023, 5
    data = data_packet(info, 7, codes)
    # 10-bit LSB-first packing of 1, 2, 1023, 5 (40 bits): 01 08 f0 7f 01
    assert data == with_crc(bytes.fromhex("4f435350" "44" "00000007" "0006" "02" "0108f07f01"))
    assert len(data) == PACKET_OVERHEAD + 5
    end = end_packet(8, 2500)
    assert end == with_crc(bytes.fromhex("4f435350" "45" "00000008" "0008" "00000000000009c4"))
    packets = PacketParser().feed(data + end)
    assert packets[0] == DataPacket(offset=0, seq=7, num_frames=2, payload=bytes.fromhex("0108f07f01"))
    assert packets[1] == EndPacket(offset=len(data), seq=8, total_samples=2500)


def test_writer_groups_frames_and_repeats_headers() -> None:
    codes = random_codes(3, 37, 6, seed=1)  # 9 full packets of 4 frames + 1 of 1 frame
    data = write_stream(codes, total=37 * HOP - 5, header_every=3)
    kinds = [type(p).__name__[0] + str(p.seq) for _, _, p in split_packets(data)]
    assert kinds == ["H0", "D0", "D1", "D2", "H3", "D3", "D4", "D5", "H6", "D6", "D7", "D8",
                     "H9", "D9", "E10"]
    sizes = [p.num_frames for _, _, p in split_packets(data) if isinstance(p, DataPacket)]
    assert sizes == [4] * 9 + [1]
    with pytest.raises(ValueError, match="frames"):
        PacketWriter(INFO).finish(HOP + 1)  # two frames' worth of samples, none pushed


def test_info_validation_names_the_field() -> None:
    with pytest.raises(BitstreamError, match="'bits'"):
        StreamInfo("m", 24000, 1, 2, 0, 320, 4)
    with pytest.raises(BitstreamError, match="fewer frames per packet"):
        StreamInfo("m", 24000, 1, 255, 32, 320, 255)  # a packet would exceed 65535 bytes


def test_crc_valid_header_of_unknown_version_is_an_error() -> None:
    packet = bytearray(header_packet(INFO, 0))
    packet[11] = 2  # version
    body_end = len(packet) - 4
    packet[body_end:] = struct.pack(">I", zlib.crc32(bytes(packet[:body_end])))
    with pytest.raises(BitstreamError, match="version 2 is not supported"):
        PacketParser().feed(bytes(packet))


# ------------------------------------------------------------------------------------------
# Receiving: round trip, damage, loss, joining, truncation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_round_trip_any_chunking(chunk: int) -> None:
    codes = random_codes(3, 37, 6, seed=2)
    total = 37 * HOP - 5
    events = receive(write_stream(codes, total), chunk)
    assert of(events, Notice) == [] and of(events, MissingFrames) == []
    assert of(events, StreamStart) == [StreamStart(INFO, 0)]
    got = torch.cat([e.codes for e in of(events, CodeFrames)], dim=1)
    assert torch.equal(got, codes)
    assert [e.first_frame for e in of(events, CodeFrames)] == list(range(0, 37, 4))
    assert events[-1] == StreamEnd(total)


@pytest.mark.parametrize("where", ["sync", "type", "seq", "length", "frames", "payload", "crc"])
def test_corrupt_byte_drops_that_packet_only(where: str) -> None:
    codes = random_codes(3, 37, 6, seed=3)
    total = 37 * HOP
    data = write_stream(codes, total)
    offset, size, _ = nth_data(data, 4)
    index = offset + {"sync": 1, "type": 4, "seq": 8, "length": 10, "frames": 11,
                      "payload": 14, "crc": size - 1}[where]
    bad = bytearray(data)
    bad[index] ^= 0x5A
    for chunk in (1 << 20, 5):
        events = receive(bytes(bad), chunk)
        notices = [n.message for n in of(events, Notice)]
        assert f"corrupt data at bytes {offset}-" in notices[0]
        assert any("data packet(s) 4-4 lost" in n for n in notices)
        assert of(events, MissingFrames) == [MissingFrames(16, 4)]
        got = frames_by_index(events)
        assert sorted(got) == [i for i in range(37) if not 16 <= i < 20]
        assert all(torch.equal(got[i], codes[:, i]) for i in got)
        assert events[-1] == StreamEnd(total)


def test_garbage_between_packets_is_skipped() -> None:
    codes = random_codes(3, 20, 6, seed=4)
    data = write_stream(codes, 20 * HOP)
    offset, _, _ = nth_data(data, 2)
    noisy = data[:offset] + b"\x00OCS\xffjunk" + SYNC + data[offset:]
    events = receive(noisy, 3)
    assert len(of(events, Notice)) == 1 and "corrupt data" in of(events, Notice)[0].message
    assert of(events, MissingFrames) == []
    assert torch.equal(torch.cat([e.codes for e in of(events, CodeFrames)], 1), codes)


@pytest.mark.parametrize("dropped", [[0], [4], [4, 5], [9]])
def test_dropped_packets_are_reported_as_missing_frames(dropped: list[int]) -> None:
    codes = random_codes(3, 37, 6, seed=5)  # data packets 0-8 hold 4 frames, packet 9 holds 1
    total = 37 * HOP - 100
    data = write_stream(codes, total, header_every=100)  # one header only, before packet 0
    cut = data
    for n in sorted(dropped, reverse=True):
        offset, size, _ = nth_data(data, n)
        cut = cut[:offset] + cut[offset + size:]
    events = receive(cut)
    missing = [i for n in dropped for i in range(4 * n, min(4 * n + 4, 37))]
    assert sum(m.count for m in of(events, MissingFrames)) == len(missing)
    assert of(events, MissingFrames)[0].first_frame == missing[0]
    got = frames_by_index(events)
    assert sorted(got) == [i for i in range(37) if i not in missing]
    assert all(torch.equal(got[i], codes[:, i]) for i in got)
    assert events[-1] == StreamEnd(total)  # the length survives the loss of the last packet
    assert len(of(events, Notice)) == 1 and "missing, replaced by silence" in of(events, Notice)[0].message


def test_lost_header_or_duplicate_costs_nothing() -> None:
    codes = random_codes(3, 37, 6, seed=6)
    data = write_stream(codes, 37 * HOP, header_every=3)
    headers = [(o, s) for o, s, p in split_packets(data) if isinstance(p, HeaderPacket)]
    o, s = headers[1]
    events = receive(data[:o] + data[o + s:])
    assert of(events, Notice) == [] and of(events, MissingFrames) == []
    o, s, _ = nth_data(data, 3)
    events = receive(data[:o + s] + data[o:])  # data packet 3 twice
    assert [n.message for n in of(events, Notice)] == [
        f"data packet 3 at byte {o + s} is a duplicate or out of order (expected 4): dropped"]
    assert torch.equal(torch.cat([e.codes for e in of(events, CodeFrames)], 1), codes)


@pytest.mark.parametrize("cut_in", [0, 1, 4, 6])
def test_joining_mid_stream_starts_at_the_next_header(cut_in: int) -> None:
    codes = random_codes(3, 37, 6, seed=7)
    total = 37 * HOP - 7
    data = write_stream(codes, total, header_every=3)
    offset, size, _ = nth_data(data, cut_in)
    start = offset + size // 2  # in the middle of data packet `cut_in`
    events = receive(data[start:], 11)
    next_header = (cut_in // 3 + 1) * 3  # headers precede data packets 0, 3, 6, 9
    assert isinstance(events[0], Notice) and events[0].message.startswith("joined mid-stream")
    assert of(events, StreamStart) == [StreamStart(INFO, next_header * 4)]
    got = frames_by_index(events)
    assert sorted(got) == list(range(next_header * 4, 37))
    assert all(torch.equal(got[i], codes[:, i]) for i in got)
    assert of(events, MissingFrames) == []
    assert events[-1] == StreamEnd(total - next_header * 4 * HOP)


def test_truncated_stream_ends_untrimmed() -> None:
    codes = random_codes(3, 37, 6, seed=8)
    data = write_stream(codes, 37 * HOP)
    offset, size, _ = nth_data(data, 7)
    events = receive(data[:offset + size - 3])
    notices = [n.message for n in of(events, Notice)]
    assert notices[0].startswith(f"stream truncated: the last {size - 3} byte(s) (from byte {offset})")
    assert "without an end packet" in notices[1]
    assert sorted(frames_by_index(events)) == list(range(28))
    assert events[-1] == StreamEnd(None)


def test_concatenated_streams_and_restarts() -> None:
    a, b = random_codes(3, 9, 6, seed=9), random_codes(3, 6, 6, seed=10)
    events = receive(write_stream(a, 9 * HOP) + write_stream(b, 6 * HOP - 1))
    assert [type(e).__name__ for e in events if not isinstance(e, CodeFrames)] == [
        "StreamStart", "StreamEnd", "StreamStart", "StreamEnd"]
    assert of(events, Notice) == []
    # the sender restarts without an end packet: numbering goes back -> new stream
    first = write_stream(a, 9 * HOP)
    cut = first[:split_packets(first)[-1][0]]  # without its end packet
    events = receive(cut + write_stream(b, 6 * HOP))
    assert "numbering went back" in of(events, Notice)[0].message
    assert of(events, StreamEnd) == [StreamEnd(None), StreamEnd(6 * HOP)]


def test_long_gap_restarts_instead_of_concealing() -> None:
    codes = random_codes(3, 40, 6, seed=11)
    data = write_stream(codes, 40 * HOP, header_every=100)
    o1, _, _ = nth_data(data, 1)
    o2, _, _ = nth_data(data, 8)
    events = receive(data[:o1] + data[o2:], max_gap_seconds=0.05)  # 7 packets = 0.37 s lost
    assert of(events, MissingFrames) == []
    assert "not concealed" in of(events, Notice)[0].message
    assert of(events, StreamStart) == [StreamStart(INFO, 0), StreamStart(INFO, 32)]
    assert of(events, StreamEnd) == [StreamEnd(None), StreamEnd(40 * HOP - 32 * HOP)]


def test_random_damage_never_yields_wrong_codes() -> None:
    """Flipped, deleted and inserted bytes anywhere: every frame that comes out is the frame
    sent at that position, and the frames out plus the frames reported missing never
    exceed the stream (a property of the CRC and the numbering, over 150 seeded trials);
    and the receiver resynchronises: the good packets after a damaged one still come out."""
    codes = random_codes(3, 37, 6, seed=12)
    data = write_stream(codes, 37 * HOP, header_every=2)
    rng = np.random.default_rng(0)
    recovered = []
    for _ in range(150):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(0, len(bad)))
            action = rng.integers(0, 3)
            if action == 0:
                bad[i] ^= int(rng.integers(1, 256))
            elif action == 1:
                del bad[i:i + int(rng.integers(1, 30))]
            else:
                bad[i:i] = rng.integers(0, 256, int(rng.integers(1, 30)), dtype=np.uint8).tobytes()
        events = receive(bytes(bad), int(rng.integers(1, 200)))
        got = frames_by_index(events)
        assert all(torch.equal(got[i], codes[:, i]) for i in got)
        assert len(got) + sum(m.count for m in of(events, MissingFrames)) <= 37
        recovered.append(len(got))
    # Measured: 4200 of the 150 * 37 = 5550 frames came out (76%), at least 9 in every trial.
    assert sum(recovered) >= 3500 and min(recovered) >= 4, (sum(recovered), min(recovered))


# ------------------------------------------------------------------------------------------
# PCM in, WAV out
# ------------------------------------------------------------------------------------------
class NoSeek(io.BytesIO):
    """A pipe-like stream: not seekable, returns at most 100 bytes per read."""

    def seekable(self) -> bool:
        return False

    def read1(self, size: int = -1) -> bytes:
        return super().read1(min(100, size if size >= 0 else 100))


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_24", 2), ("PCM_32", 1),
                                              ("PCM_U8", 1), ("FLOAT", 2), ("DOUBLE", 1)])
def test_wav_reader_matches_soundfile(subtype: str, channels: int) -> None:
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((1001, channels)) * 0.3, -1, 1)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype=subtype)
    expected, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)
    reader = PcmStreamReader(NoSeek(buf.getvalue()))
    assert (reader.format.sample_rate, reader.format.channels) == (16000, channels)
    blocks = []
    while (block := reader.read(64)) is not None:
        blocks.append(block)
    assert len(blocks) > 5
    np.testing.assert_array_equal(np.concatenate(blocks), expected)


def test_wav_reader_unknown_length_and_errors() -> None:
    x = (np.arange(500, dtype=np.int16) * 37).reshape(-1, 1)
    head = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"LIST" + struct.pack("<I", 3)
            + b"abc\x00" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))
    reader = PcmStreamReader(io.BytesIO(head + x.tobytes() + b"\x01"))  # + half a sample
    blocks = []
    while (block := reader.read(1 << 10)) is not None:
        blocks.append(block)
    got = np.concatenate(blocks)
    np.testing.assert_array_equal(got, x / 32768.0)
    with pytest.raises(AudioIOError, match="stdin: not a WAV stream.*--raw"):
        PcmStreamReader(io.BytesIO(b"ID3\x04" + bytes(100)))
    with pytest.raises(AudioIOError, match="unsupported WAV sample format"):
        PcmStreamReader(io.BytesIO(head.replace(struct.pack("<HH", 1, 1), struct.pack("<HH", 2, 1), 1)))


@pytest.mark.parametrize("float32", [False, True])
@pytest.mark.parametrize("seekable", [False, True])
def test_streaming_wav_sink_is_readable(float32: bool, seekable: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    audio = (torch.randn(2, 3000, generator=gen) * 0.4).clamp(-1.2, 1.2)
    out = io.BytesIO() if seekable else NoSeek()
    sink = AudioSink(out, 24000, 2, float32=float32)
    for start in range(0, 3000, 700):
        sink.write(audio[:, start:start + 700])
    sink.close()
    data = out.getvalue()
    riff = struct.unpack_from("<I", data, 4)[0]
    size = struct.unpack_from("<I", data, data.index(b"data") + 4)[0]
    if seekable:
        assert size == 3000 * 2 * (4 if float32 else 2) and riff == len(data) - 8
    else:
        assert riff == size == 0xFFFFFFFF
    got, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == 24000 and got.shape == (3000, 2)
    if float32:
        np.testing.assert_array_equal(got.T, audio.numpy())
    else:
        expected = np.clip(np.rint(audio.numpy().clip(-1, 1) * 32768), -32768, 32767) / 32768
        np.testing.assert_array_equal(got.T, expected.astype(np.float32))
        assert sink.peak == pytest.approx(float(audio.abs().max()))


# ------------------------------------------------------------------------------------------
# The model-level chain
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    return tiny_stream_model("tiny_stream", 0)


def signal(length: int, channels: int = 1, rate: int = 24000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / rate
    return (0.3 * torch.randn(channels, length, generator=gen)
            + 0.25 * torch.sin(2 * torch.pi * 330 * t)).clamp(-1, 1)


def wav_bytes(x: torch.Tensor, rate: int, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.numpy().T, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def offline(model: EncodecModel, x: torch.Tensor, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [K, F] and decoded audio [C, T] of the whole signal x [C, T]."""
    model.set_target_bandwidth(bandwidth)
    try:
        with torch.inference_mode():
            codes = model.encode(x[None])[0].codes
            audio = model.decode([(codes, None)])[0, :, :x.shape[-1]]
    finally:
        model.bandwidth = None
    return codes[0], audio


def decode_bytes(model: EncodecModel, data: bytes, **kw: tp.Any) -> tuple[np.ndarray, list[str]]:
    out, warnings = io.BytesIO(), []
    decode_stream(NoSeek(data), out, lambda info: model, float32=True, warn=warnings.append, **kw)
    audio, rate = sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)
    assert rate == model.sample_rate
    return audio.T, warnings


@pytest.mark.parametrize("fpp", [1, 5])
def test_chain_equals_offline(tiny: EncodecModel, fpp: int) -> None:
    x = signal(24000 + 123)
    codes, ref = offline(tiny, x, 1.8)
    out = io.BytesIO()
    report = encode_stream(tiny, NoSeek(wav_bytes(x, 24000)), out, bandwidth=1.8, frames_per_packet=fpp)
    data = out.getvalue()
    assert tiny.bandwidth is None  # restored
    assert (report.samples, report.frames, report.num_codebooks) == (x.shape[-1], codes.shape[-1], 4)
    assert report.bytes == len(data)
    events = receive(data)
    assert torch.equal(torch.cat([e.codes for e in of(events, CodeFrames)], 1), codes)
    audio, warnings = decode_bytes(tiny, data)
    assert warnings == []
    assert audio.shape == tuple(ref.shape)
    np.testing.assert_allclose(audio, ref.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("length", [1, HOP - 1, HOP, 1000, 7 * HOP - 1])
def test_chain_of_a_stream_shorter_than_the_warm_up(tiny: EncodecModel, exact: bool, length: int) -> None:
    """A stream shorter than the encoder's 7-frame warm-up gets the offline codes at the
    stream's bandwidth in both modes, although the model's own bandwidth is restored as soon
    as the encoder is built (fast mode once encoded such a stream at the model's bandwidth:
    its codebooks in a stream of fewer, and stream-encode failed)."""
    x = signal(length, seed=5)
    codes, ref = offline(tiny, x, 0.9)  # below the model's default (largest) bandwidth
    tiny.exact = exact
    try:
        out = io.BytesIO()
        report = encode_stream(tiny, NoSeek(wav_bytes(x, 24000)), out, bandwidth=0.9, frames_per_packet=4)
    finally:
        tiny.exact = True
    assert tiny.bandwidth is None and report.num_codebooks == 2
    got = torch.cat([e.codes for e in of(receive(out.getvalue()), CodeFrames)], 1)
    assert torch.equal(got, codes)
    audio, warnings = decode_bytes(tiny, out.getvalue())
    assert warnings == [] and audio.shape == tuple(ref.shape)


def test_chain_resamples_and_remixes_like_convert_audio(tiny: EncodecModel) -> None:
    x = signal(16000 + 7, channels=2, rate=16000, seed=1)
    expected_codes, _ = offline(tiny, convert_audio(x, 16000, 24000, 1), 0.9)
    out = io.BytesIO()
    encode_stream(tiny, NoSeek(wav_bytes(x, 16000)), out, bandwidth=0.9)
    got = torch.cat([e.codes for e in of(receive(out.getvalue()), CodeFrames)], 1)
    assert torch.equal(got, expected_codes)
    raw = PcmFormat(16000, 2, "s16")  # the same signal as headerless s16le
    pcm = np.clip(np.rint(x.numpy().T * 32768), -32768, 32767).astype("<i2").tobytes()
    out16 = io.BytesIO()
    encode_stream(tiny, NoSeek(pcm), out16, bandwidth=0.9, raw=raw)
    x16 = torch.from_numpy(np.frombuffer(pcm, "<i2").reshape(-1, 2).T / 32768.0).float()
    expected16, _ = offline(tiny, convert_audio(x16, 16000, 24000, 1), 0.9)
    got16 = torch.cat([e.codes for e in of(receive(out16.getvalue()), CodeFrames)], 1)
    assert torch.equal(got16, expected16)


def test_chain_conceals_a_lost_packet_with_silence(tiny: EncodecModel) -> None:
    x = signal(24000, seed=2)
    _, ref = offline(tiny, x, 1.8)
    out = io.BytesIO()
    encode_stream(tiny, io.BytesIO(wav_bytes(x, 24000)), out, bandwidth=1.8, frames_per_packet=4)
    data = out.getvalue()
    offset, size, _ = nth_data(data, 10)  # frames 40-43 = samples 12800-14079
    audio, warnings = decode_bytes(tiny, data[:offset] + data[offset + size:])
    assert audio.shape == tuple(ref.shape)  # the timing is kept
    assert len(warnings) == 1 and "4 frame(s) (0.053 s) missing" in warnings[0]
    np.testing.assert_allclose(audio[:, :12800], ref.numpy()[:, :12800], atol=1e-5, rtol=0)
    assert not audio[:, 12800:14080].any()
    assert np.abs(audio[:, 14080 + 7 * HOP:]).max() > 0.0  # decoding resumes after the warm-up


@pytest.mark.parametrize("lost", [[0], [0, 1], [5], "all"])
def test_chain_lost_first_or_last_packets(tiny: EncodecModel, lost: tp.Any) -> None:
    """The first data packet after the header lost (a late joiner, a dropped first packet),
    the last one lost, or every one: silence for the lost frames, fresh decoding after them
    (equal to the offline decoding of the frames that follow), never a crash."""
    x = signal(24 * HOP - 50, seed=4)  # 24 frames = data packets 0-5 of 4 frames
    codes, ref = offline(tiny, x, 1.8)
    out = io.BytesIO()
    encode_stream(tiny, io.BytesIO(wav_bytes(x, 24000)), out, bandwidth=1.8, frames_per_packet=4)
    data = out.getvalue()
    lost = list(range(6)) if lost == "all" else lost
    cut = data
    for n in sorted(lost, reverse=True):
        offset, size, _ = nth_data(data, n)
        cut = cut[:offset] + cut[offset + size:]
    audio, warnings = decode_bytes(tiny, cut)
    assert audio.shape == tuple(ref.shape)  # the end packet keeps the length
    assert len(warnings) == 1 and "replaced by silence" in warnings[0]
    first_kept = 4 * (max(lost) + 1) if lost[0] == 0 else 0
    silent = range(4 * min(lost) * HOP, min(4 * (max(lost) + 1) * HOP, x.shape[-1]))
    assert not audio[:, silent.start:silent.stop].any()
    if lost[0] == 0 and first_kept < 24:  # decoding starts fresh at the first frame received
        with torch.inference_mode():
            after = tiny.decode([(codes[None, :, first_kept:], None)])[0]
        start = first_kept * HOP
        np.testing.assert_allclose(audio[:, start:], after.numpy()[:, :x.shape[-1] - start],
                                   atol=1e-5, rtol=0)
        assert np.abs(audio[:, start:]).max() > 0.01
    elif lost == [5]:  # everything before the lost last packet is the offline decoding
        np.testing.assert_allclose(audio[:, :silent.start], ref.numpy()[:, :silent.start],
                                   atol=1e-5, rtol=0)


def test_chain_joined_mid_stream_and_damaged(tiny: EncodecModel) -> None:
    """Joining mid-stream gives the offline decoding of the frames from the next header on;
    a damaged packet gives silence for exactly its frames, the offline decoding before it
    and a fresh decoding of the frames after it (the documented concealment)."""
    x = signal(24000, seed=3)
    codes, ref = offline(tiny, x, 0.9)
    out = io.BytesIO()
    encode_stream(tiny, io.BytesIO(wav_bytes(x, 24000)), out, bandwidth=0.9, frames_per_packet=2,
                  header_every=8)
    data = out.getvalue()

    def decoded_from(frame: int) -> np.ndarray:
        """Offline decoding of frames ``frame ..``, trimmed to the rest of the signal."""
        with torch.inference_mode():
            return tiny.decode([(codes[None, :, frame:], None)])[0, :, :24000 - frame * HOP].numpy()

    offset, _, _ = nth_data(data, 5)
    audio, warnings = decode_bytes(tiny, data[offset + 3:])  # joins at data packet 8 = frame 16
    assert audio.shape == (1, 24000 - 16 * HOP)
    assert len(warnings) == 1 and warnings[0].startswith("joined mid-stream")
    np.testing.assert_allclose(audio, decoded_from(16), atol=1e-5, rtol=0)
    assert np.abs(audio).max() > 0.01

    bad = bytearray(data)
    offset, _, _ = nth_data(data, 20)  # frames 40-41 = samples 12800-13439
    bad[offset + 13] ^= 1
    audio, warnings = decode_bytes(tiny, bytes(bad))
    assert audio.shape == (1, 24000)
    assert len(warnings) == 2
    assert "corrupt data" in warnings[0] and "data packet(s) 20-20 lost: 2 frame(s)" in warnings[1]
    np.testing.assert_allclose(audio[:, :40 * HOP], ref.numpy()[:, :40 * HOP], atol=1e-5, rtol=0)
    assert not audio[:, 40 * HOP:42 * HOP].any()
    np.testing.assert_allclose(audio[:, 42 * HOP:], decoded_from(42), atol=1e-5, rtol=0)
    assert np.abs(audio[:, 42 * HOP:]).max() > 0.01


def test_chain_errors(tiny: EncodecModel) -> None:
    x = wav_bytes(signal(4000), 24000)
    noncausal = EncodecModel(EncodecConfig(name="nc", n_filters=4, dimension=8, n_q=2, bins=16,
                                           lstm=0, causal=False, target_bandwidths=[0.3]))
    with pytest.raises(OpenCodecError, match="'nc' cannot be streamed: it is not causal"):
        encode_stream(noncausal, io.BytesIO(x), io.BytesIO())
    out = io.BytesIO()
    with pytest.raises(AudioIOError, match="no audio samples"):
        encode_stream(tiny, io.BytesIO(x[:x.index(b"data") + 8]), out, bandwidth=0.9)
    assert out.getvalue() == b""  # nothing written for an empty input
    info = StreamInfo.from_model(tiny, 2)
    check_model_for_stream(tiny, info)
    for change, message in ((dict(model_name="other"), "written by model 'other'"),
                            (dict(sample_rate=16000), "'sample rate' is 16000"),
                            (dict(bits=10), "'bits per code' is 10"),
                            (dict(num_codebooks=5), "at most 4")):
        bad = StreamInfo(**{**info.__dict__, **change})
        with pytest.raises(BitstreamError, match=message):
            check_model_for_stream(tiny, bad)
    with pytest.raises(BitstreamError, match="no stream header found in 300 bytes"):
        decode_stream(io.BytesIO(bytes(300)), io.BytesIO(), lambda info: tiny)
