"""Audio reading checks: files named ``.mp3`` that hold no MPEG audio are refused without
libmpg123's notes, real MPEG audio of every layer (tagged, free format) passes, and cut WAV/RF64
files with big chunks before ``data`` are found truncated."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.audio import check_mp3_content, find_truncation, header_declared_frames, read_audio, Truncation
from opencodec.errors import AudioIOError

from codec_helpers import tiny_model_file  # noqa: F401, F811 (pytest fixtures)


NOT_MP3 = r"named \.mp3, but it holds no MPEG audio frame or ID3 tag, nor another audio format"


#: The same for a file that starts like MPEG audio (an ID3 tag, a frame header): cut or damaged.
CUT_MP3 = (r"named \.mp3 and it starts as MPEG audio \(an ID3 tag or a frame header\), but it holds no two "
           r"consecutive MPEG audio frames: cut or damaged")


# -- 1. a .mp3 that is no MPEG audio --------------------------------------------------------------------------
def _fake_mp3s(tmp_path: Path) -> list[Path]:
    """Random bytes holding a plausible MPEG-1 Layer III header (0xFF 0xFB 0x90: 128 kbit/s,
    44.1 kHz) with no frame after it; the same after an ``ID3`` start; an ID3v2 tag followed by
    random bytes; two free-format headers; a frame header whose frame ends the file; a real MP3
    cut inside its first frame. The old check passed them all."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 255, 4000, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    header = b"\xff\xfb\x90\x00"
    files = {"header.mp3": noise[:1000] + header + noise[1000:],
             "id3start.mp3": b"ID3" + noise,
             "tagged_noise.mp3": b"ID3\x03\x00\x00\x00\x00\x00\x10" + bytes(16) + noise[:500] + header + noise[500:]}
    free = b"\xff\xfb\x00\xc0"  # free format (bitrate index 0): a second header, no third at that spacing
    files["free_pair.mp3"] = noise[:1000] + free + noise[1000:1500] + free + noise[1500:]
    files["one_frame_at_end.mp3"] = noise[:1000] + header + noise[:413]  # a 417-byte frame ending the file
    sine = 0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)
    sf.write(tmp_path / "whole.mp3", sine.astype(np.float32), 24000, format="MP3")
    files["first_frame_cut.mp3"] = (tmp_path / "whole.mp3").read_bytes()[:150]
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def test_random_bytes_named_mp3_are_refused_without_libmpg123_notes(tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture) -> None:
    from opencodec.tokens.plan import header_duration
    for path in _fake_mp3s(tmp_path):
        starts_mpeg = path.read_bytes()[:3] == b"ID3" or path.read_bytes()[:2] in (b"\xff\xfb", b"\xff\xf3")
        expected = CUT_MP3 if path.name in ("id3start.mp3", "tagged_noise.mp3", "first_frame_cut.mp3") else NOT_MP3
        assert starts_mpeg == (expected == CUT_MP3), path
        with pytest.raises(AudioIOError, match=rf"^cannot read audio file .*{path.name}: not a decodable audio file "
                                               rf"\({expected}\)$"):
            read_audio(path)
        assert header_duration(str(path)) == -1.0, path
        assert capfd.readouterr().err == "", path  # before: "Note: Illegal Audio-MPEG-Header ..." and others


def test_compress_refuses_random_bytes_named_mp3_quietly(tiny_model_file: Path, tmp_path: Path,
                                                         capfd: pytest.CaptureFixture) -> None:
    from opencodec.cli import main
    fake = _fake_mp3s(tmp_path)[0]
    assert main(["compress", str(fake), str(tmp_path / "out.ecdc"), "-m", str(tiny_model_file), "-b", "1.5"]) == 1
    err = capfd.readouterr().err
    assert err == f"opencodec: error: cannot read audio file {fake}: not a decodable audio file (named .mp3, but it " \
                  "holds no MPEG audio frame or ID3 tag, nor another audio format)\n"
    assert not (tmp_path / "out.ecdc").exists()


def _encoded(codec: str, fmt: str, rate: int, channels: int, bit_rate: int | None,
             options: dict[str, str] | None = None) -> bytes:
    """0.3 s of a tone with noise encoded by PyAV's FFmpeg (``libmp3lame``: Layer III, ``mp2``: Layer II)."""
    av = pytest.importorskip("av")
    t = np.arange(int(0.3 * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        if options:
            stream.options = options
        sample_format = stream.codec_context.codec.audio_formats[0].name
        scale = {"s16": (32767, np.int16), "s32": (2**31 * 0.99, np.int32)}.get(sample_format[:3], (1.0, np.float32))
        samples = np.repeat((x * scale[0]).astype(scale[1])[None], channels, 0)
        samples = samples if sample_format.endswith("p") else samples.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=sample_format, layout=stream.layout)
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


#: (name, codec, container, sample rate, channels, bit rate, options): MPEG-1, 2 and 2.5 Layer III
#: (CBR from 8 to 320 kbit/s, VBR), Layer II.
ENCODED = [("mpeg1_l3_320k", "libmp3lame", "mp3", 48000, 2, 320000, None),
           ("mpeg1_l3_32k_mono", "libmp3lame", "mp3", 32000, 1, 32000, None),
           ("mpeg2_l3_64k", "libmp3lame", "mp3", 22050, 2, 64000, None),
           ("mpeg25_l3_8k", "libmp3lame", "mp3", 8000, 1, 8000, None),
           ("mpeg25_l3_vbr", "libmp3lame", "mp3", 11025, 2, None, {"q": "4"}),
           ("mpeg1_l3_vbr", "libmp3lame", "mp3", 44100, 2, None, {"q": "2"}),
           ("mpeg1_l2_384k", "mp2", "mp2", 48000, 2, 384000, None),
           ("mpeg2_l2_32k", "mp2", "mp2", 16000, 1, 32000, None)]


def _frames(header: bytes, size: int, count: int = 30) -> bytes:
    """``count`` all-zero (silent) MPEG audio frames of ``size`` bytes with this 4-byte header."""
    return (header + bytes(size - 4)) * count


#: Streams no encoder here writes: Layer I (MPEG-1 128 kbit/s 44.1 kHz: 136-byte frames; MPEG-2
#: 64 kbit/s 22.05 kHz: 136), free format (bitrate index 0) Layers I, II, III.
CRAFTED = {"mpeg1_l1": (_frames(b"\xff\xff\x40\xc0", 136), 30 * 384),
           "mpeg2_l1": (_frames(b"\xff\xf7\x40\xc0", 136), 30 * 384),
           "free_l1": (_frames(b"\xff\xff\x00\xc0", 200), 30 * 384),
           "free_l2": (_frames(b"\xff\xfd\x04\xc0", 600), 30 * 1152),
           "free_l3": (_frames(b"\xff\xfb\x00\xc0", 500), 30 * 1152)}


def _synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _picture_tag(kib: int) -> bytes:
    """An ID3v2.3 tag with an APIC frame of ``kib`` KiB of random (JPEG-like) bytes, 0xFF included."""
    picture = b"\x00image/jpeg\x00\x03\x00" + np.random.default_rng(1).integers(0, 256, kib * 1024,
                                                                                  dtype=np.uint8).tobytes()
    frame = b"APIC" + struct.pack(">I", len(picture)) + b"\x00\x00" + picture
    return b"ID3\x03\x00\x00" + _synchsafe(len(frame)) + frame


def _footer_tag() -> bytes:
    """An ID3v2.4 tag with a footer (10 more bytes after its size)."""
    body = b"TIT2" + _synchsafe(6) + b"\x00\x00\x03hello"
    return b"ID3\x04\x00\x10" + _synchsafe(len(body)) + body + b"3DI\x04\x00\x10" + _synchsafe(len(body))


@pytest.mark.parametrize("case", ENCODED, ids=[c[0] for c in ENCODED])
def test_real_mpeg_audio_passes_also_tagged(case: tuple, tmp_path: Path) -> None:
    """Every encoded stream passes, also after a 300 KiB ID3v2 picture (past the 64 KiB
    searched), a v2.4 tag with footer, two tags, 100 junk bytes, before an ID3v1 or APE tag,
    and cut to three quarters; the tagged ones decode to the plain one's samples."""
    name, codec, fmt, rate, channels, bit_rate, options = case
    body = _encoded(codec, fmt, rate, channels, bit_rate, options)
    variants = {"plain": body, "picture": _picture_tag(300) + body, "footer": _footer_tag() + body,
                "two_tags": _footer_tag() + _picture_tag(2) + body, "junk": bytes(100) + body,
                "id3v1": body + b"TAG" + bytes(125), "ape": body + b"APETAGEX" + bytes(24),
                "cut": body[: len(body) * 3 // 4]}
    decoded = {}
    for variant, data in variants.items():
        path = tmp_path / f"{variant}.mp3"
        path.write_bytes(data)
        check_mp3_content(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cut file: truncated (its Xing header's count)
            decoded[variant], got_rate = read_audio(path)
        assert got_rate == rate and decoded[variant].shape[0] == channels
    for variant in ("picture", "footer", "two_tags", "junk"):
        assert torch.equal(decoded[variant], decoded["plain"]), variant


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_layer_one_and_free_format_streams_pass(name: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    data, samples = CRAFTED[name]
    path = tmp_path / f"{name}.mp3"
    path.write_bytes(data)
    check_mp3_content(path)
    wav, _ = read_audio(path)
    assert wav.shape == (1, samples) and float(wav.abs().max()) == 0.0
    assert capfd.readouterr().err == ""


# -- 2. a WAV's data chunk past its first 64 KiB --------------------------------------------------------------
def _chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _wav(path: Path, before_data: bytes, frames: int = 8000, data_size: int | None = None) -> Path:
    """16-bit stereo 16 kHz WAV with ``before_data`` chunks between ``fmt `` and ``data``."""
    body = (np.arange(frames * 2) % 200).astype("<i2").tobytes()
    fmt = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 2, 16000, 64000, 4, 16))
    rest = fmt + before_data + b"data" + struct.pack("<I", len(body) if data_size is None else data_size) + body
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(rest)) + b"WAVE" + rest)
    return path


#: A 100 KB LIST chunk; an odd-sized 70001-byte bext chunk (padded) and an odd iXML one.
BIG_CHUNKS = {"list": _chunk(b"LIST", b"INFO" + bytes(100_000)),
              "bext_odd": _chunk(b"bext", bytes(70_001)) + _chunk(b"iXML", b"<x/>" * 5000 + b"a")}


@pytest.mark.parametrize("kind", sorted(BIG_CHUNKS))
def test_a_cut_wav_with_its_data_past_64_kib_is_found_truncated(kind: str, tmp_path: Path) -> None:
    wav = _wav(tmp_path / "a.wav", BIG_CHUNKS[kind])
    assert header_declared_frames(wav) is None and find_truncation(wav) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(wav, refuse_truncated=True)[0].shape == (2, 8000)
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size - 4 * 6000])
    assert header_declared_frames(wav) == 8000 and find_truncation(wav) == Truncation(8000, 2000)
    with pytest.raises(AudioIOError, match=r"truncated: its header says 8000 samples, the file holds 2000$"):
        read_audio(wav, refuse_truncated=True)


@pytest.mark.parametrize("data_size", [0, 0x7FFFFF00, 0x7FFFFFFF, 0xFFFFFFFF])
def test_placeholder_sizes_after_a_big_chunk_are_no_truncation(data_size: int, tmp_path: Path) -> None:
    wav = _wav(tmp_path / "piped.wav", BIG_CHUNKS["list"], data_size=data_size)
    assert header_declared_frames(wav) is None and find_truncation(wav) is None
    if data_size:  # libsndfile reads a 0 as no samples
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert read_audio(wav, refuse_truncated=True)[0].shape == (2, 8000)


def test_a_cut_rf64_is_found_truncated(tmp_path: Path) -> None:
    """RF64 (a ds64 chunk holding the 64-bit sizes, 0xFFFFFFFF in the data chunk's)."""
    rf64 = tmp_path / "a.wav"
    sf.write(rf64, np.zeros((8000, 2), np.float32), 16000, format="RF64", subtype="PCM_16")
    assert rf64.read_bytes()[:4] == b"RF64" and find_truncation(rf64) is None
    rf64.write_bytes(rf64.read_bytes()[: rf64.stat().st_size - 4 * 6000])
    assert find_truncation(rf64) == Truncation(8000, 2000)
