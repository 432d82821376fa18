"""Gaps the last session left (walk 4):

- ``check_mp3_content`` let any ``.mp3`` with a 0xFF byte followed by plausible MPEG header
  bits, or an ``ID3`` start, through to libsndfile, whose libmpg123 printed "Note: Illegal
  Audio-MPEG-Header" / "one-frame stream? Duh..." on stderr before the error: now a stream is
  two consecutive frame headers that agree (ID3v2 tags skipped by their size); real MP3s of
  every MPEG version and layer, VBR, tagged, free format, still read.
- ``find_truncation`` looked for a WAV's ``data`` chunk in its first 64 KiB only: a cut WAV
  with a large ``LIST``/``bext`` chunk before ``data`` (or an RF64) was not found truncated.
- Under torchrun, ranks that found every shard at the same moment each printed the job line.
- ``batching._encode_segmented`` took the codes' width and the segment spans from two helpers.
- ``EncodecModel.train_forward`` failed on float64 audio with torch's dtype error from a conv.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import opencodec.batching as batching
from official_ref import random_codebooks
from opencodec import EncodecConfig, EncodecModel, save_model
from opencodec.audio import Truncation, check_mp3_content, find_truncation, header_declared_frames, read_audio
from opencodec.batching import encode_batch, encode_each
from opencodec.errors import AudioIOError, InvalidAudioError

NOT_MP3 = r"named \.mp3, but it holds no MPEG audio frame or ID3 tag, nor another audio format"
#: The same for a file that starts like MPEG audio (an ID3 tag, a frame header): cut or damaged.
CUT_MP3 = (r"named \.mp3 and it starts as MPEG audio \(an ID3 tag or a frame header\), but it holds no two "
           r"consecutive MPEG audio frames: cut or damaged")


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                           target_bandwidths=[1.5, 3.0])
    return save_model(random_codebooks(EncodecModel(config), 7), tmp_path_factory.mktemp("model") / "tiny.safetensors")


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


# -- 3. torchrun: one rank reports the finished job -----------------------------------------------------------
def test_ranks_that_finish_together_report_the_job_once(tiny_model_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Two shards, two ranks: rank 1 runs all of its job, then rank 0 finalizes, between
    rank 0's shard and its finalize (both find every shard written, as ranks that finish at
    the same moment do). The one whose finalize wrote index.json reports the job."""
    from opencodec.cli import main
    from opencodec.tokens import job
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(7200)).astype(np.float32), 24000)
    argv = ["tokenize", str(data), "--out", str(tmp_path / "out"), "-m", str(tiny_model_file), "--device", "cpu",
            "--shard-rows", "1"]
    real_finalize = job.finalize
    said = {}

    def rank_1_finishes_first(folder: Path, num_shards: int):  # rank 0's finalize
        said[0] = capsys.readouterr().err
        monkeypatch.setattr(job, "finalize", real_finalize)
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert main(argv) == 0
        said[1] = capsys.readouterr().err
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")
        return real_finalize(folder, num_shards)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(job, "finalize", rank_1_finishes_first)
    assert main(argv) == 0
    said[0] += capsys.readouterr().err
    job_line = f"{tmp_path / 'out'}: 2 shards, 2 rows, 0.6 s of audio, 0 errors\n"
    assert "rank 1/2: 1 file, 0.3 s of audio" in said[1] and said[1].endswith(job_line)
    assert "rank 0/2: 1 file, 0.3 s of audio" in said[0] and job_line not in said[0]


def test_finalize_says_which_call_wrote_the_index(tmp_path: Path) -> None:
    from opencodec.tokens.shards import INDEX_FILE, _place_index
    index = {"rows": 1}
    assert _place_index(tmp_path / INDEX_FILE, index) is True
    assert _place_index(tmp_path / INDEX_FILE, index) is False  # the same index: another rank's
    assert _place_index(tmp_path / INDEX_FILE, {"rows": 2}) is True  # a stale one replaced
    assert (tmp_path / INDEX_FILE).read_text() == '{\n  "rows": 2\n}\n'


# -- 4. one layout for a segmented item's codes ---------------------------------------------------------------
def test_segment_spans_and_code_width_come_from_one_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout with a gap (segment 1 one frame late) leaves no frame at -1 silently: the width
    is the spans' frame count, so the late span falls outside it. The real layout's codes are
    encode_each's, bit for bit."""
    model = EncodecModel(dataclasses.replace(EncodecConfig.encodec_48khz(), n_filters=4, dimension=8, n_q=2,
                                             lstm=0))
    wav = 0.1 * torch.randn(2, 2, 96_000, generator=torch.Generator().manual_seed(0))
    lengths = [47_521, 96_000]
    batched, each = encode_batch(model, wav, lengths), encode_each(model, wav, lengths)
    assert torch.equal(batched.codes, each.codes) and torch.equal(batched.frame_lengths, each.frame_lengths)

    def late_layout(model: EncodecModel, length: int) -> list[tuple[int, int]]:
        full = model.num_frames(model.segment_length)
        return [(s * full, model.num_frames(n)) for s, (_, n) in enumerate(model.segments(length))]

    monkeypatch.setattr(batching, "_segment_frame_spans", late_layout)
    with pytest.raises(AssertionError, match=r"segment frames 150:151 outside codes of 150 frames"):
        encode_batch(model, wav[:1], [47_521])


# -- 5. train_forward's dtype ------------------------------------------------------------------------------------
def test_train_forward_names_a_wrong_dtype() -> None:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                                       target_bandwidths=[1.5, 3.0]))
    wav = 0.1 * torch.randn(1, 1, 960, generator=torch.Generator().manual_seed(1))
    with pytest.raises(InvalidAudioError, match=r"^expected audio as a float32 torch\.Tensor \[B, C, T\], got "
                                                r".*float64.*\.float\(\)"):
        model.train_forward(wav.double())
    with pytest.raises(InvalidAudioError, match=r"float32 torch\.Tensor \[B, C, T\], got .*float16"):
        model.train_forward(wav.half())
    out, q = model.train_forward(wav)
    assert out.shape == wav.shape and out.dtype == torch.float32 and q.codes.shape[-1] == 3
