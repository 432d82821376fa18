"""Bounded-memory file compression (``opencodec.longform``) against the whole-signal path.

Streaming compression must write exactly the bytes of ``compress`` of the whole (converted)
signal; streaming decompression must match ``decompress`` + ``write_audio``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import official_ref
from signals import tones_and_noise
from stream_models import tiny_random_model
from opencodec import EncodecConfig, EncodecModel
from opencodec.audio import convert_audio, read_audio, write_audio
from opencodec.compress import compress, decompress
from opencodec.errors import BitstreamError
from official_ref import random_codebooks
from opencodec.longform import compress_file_streaming, decompress_file_streaming, supports_streaming


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    return tiny_random_model()


@pytest.fixture(scope="module")
def m24() -> EncodecModel:
    return official_ref.ours_from(official_ref.make_official_model("encodec_24khz", seed=3), "encodec_24khz").eval()


def _write(path: Path, data: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def _reference_bytes(model: EncodecModel, path: Path, bandwidth: float) -> bytes:
    wav, rate = read_audio(path)
    wav = convert_audio(wav, rate, model.sample_rate, model.channels)
    return compress(model, wav, bandwidth)


@pytest.mark.parametrize("block_seconds", [0.0137, 0.5, 10.0])
def test_compress_identical_at_model_rate(tiny, tmp_path, block_seconds):
    src = _write(tmp_path / "in.wav", tones_and_noise(3.21, 24000), 24000)
    out = tmp_path / "out.ecdc"
    seen = []
    size = compress_file_streaming(tiny, src, out, 3.0, block_seconds=block_seconds,
                                   progress=lambda done, total: seen.append((done, total)))
    data = out.read_bytes()
    assert size == len(data)
    assert data == _reference_bytes(tiny, src, 3.0)
    assert seen[-1] == (77040, 77040)
    assert tiny.bandwidth is None  # the bandwidth was only used for the call


def test_compress_identical_with_downmix_and_pcm(tiny, tmp_path):
    src = _write(tmp_path / "in.wav", tones_and_noise(2.0, 24000, channels=2), 24000, subtype="PCM_16")
    out = tmp_path / "out.ecdc"
    compress_file_streaming(tiny, src, out, 1.5, block_seconds=0.3)
    assert out.read_bytes() == _reference_bytes(tiny, src, 1.5)


def test_compress_resampled_matches(tiny, tmp_path):
    # Equality is only guaranteed without resampling; python-soxr's stream resampler has
    # so far been sample-identical to its one-shot resampler, which this checks.
    src = _write(tmp_path / "in.wav", tones_and_noise(2.345, 44100, channels=2), 44100)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(tiny, src, out, 3.0, block_seconds=0.21)
    assert out.read_bytes() == _reference_bytes(tiny, src, 3.0)


def test_decompress_matches(tiny, tmp_path):
    tiny = copy.deepcopy(tiny)
    last_conv = [m for m in tiny.decoder.modules() if type(m).__name__ == "StreamableConv1d"][-1].conv.conv
    with torch.no_grad():
        last_conv.bias += 0.9  # loud output: exercises clipping
    wav = torch.from_numpy(tones_and_noise(2.7, 24000).T.copy())
    data = compress(tiny, wav, 3.0)
    src = tmp_path / "x.ecdc"
    src.write_bytes(data)
    ref, rate = decompress(data, tiny)
    # float output: close to the whole-signal decoder
    n = decompress_file_streaming(src, tmp_path / "f.wav", tiny, block_frames=13, bits=32)
    got, got_rate = sf.read(str(tmp_path / "f.wav"), dtype="float32", always_2d=True)
    assert n == ref.shape[-1] == got.shape[0] and got_rate == rate
    np.testing.assert_allclose(got.T, ref.numpy(), atol=1e-5, rtol=0)
    # 16-bit PCM: same samples as write_audio of the whole signal (same rounding/clipping)
    with pytest.warns(UserWarning, match="exceeds full scale") as rec:
        decompress_file_streaming(src, tmp_path / "p.wav", tiny, block_frames=5)
    assert len(rec) == 1
    with pytest.warns(UserWarning):
        write_audio(tmp_path / "r.wav", ref, rate)
    a, _ = sf.read(str(tmp_path / "p.wav"), dtype="int16")
    b, _ = sf.read(str(tmp_path / "r.wav"), dtype="int16")
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a == b).mean() > 0.999


def test_truncated_raises_and_leaves_nothing(tiny, tmp_path):
    data = compress(tiny, torch.from_numpy(tones_and_noise(1.0, 24000).T.copy()), 1.5)
    for name, bad in (("short.ecdc", data[:-3]), ("long.ecdc", data + b"\0"),
                      ("header.ecdc", data[:7])):
        src = tmp_path / name
        src.write_bytes(bad)
        out = tmp_path / "sub" / "o.wav"
        out.parent.mkdir(exist_ok=True)
        with pytest.raises(BitstreamError):
            decompress_file_streaming(src, out, tiny)
        assert list(out.parent.iterdir()) == []


def test_bad_input_leaves_nothing(tiny, tmp_path):
    from opencodec.errors import AudioIOError
    src = tmp_path / "nan.wav"
    sig = tones_and_noise(1.0, 24000)
    sig[20000] = np.nan
    _write(src, sig, 24000)
    out = tmp_path / "sub" / "o.ecdc"
    out.parent.mkdir()
    with pytest.raises(AudioIOError, match="NaN"):
        compress_file_streaming(tiny, src, out, 1.5, block_seconds=0.1)
    assert list(out.parent.iterdir()) == []


def test_rejects_non_streamable_model(tmp_path):
    model = EncodecModel(EncodecConfig(name="nc", n_filters=4, dimension=16, lstm=1, n_q=4,
                                       causal=False, norm="time_group_norm",
                                       target_bandwidths=[1.5]))
    assert not supports_streaming(model)
    src = _write(tmp_path / "in.wav", tones_and_noise(0.5, 24000), 24000)
    with pytest.raises(ValueError, match="cannot be streamed"):
        compress_file_streaming(model, src, tmp_path / "o.ecdc", 1.5)


def test_official_architecture_20s(m24, tmp_path):
    src = _write(tmp_path / "in.wav", tones_and_noise(20.0, 24000, seed=5), 24000)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(m24, src, out, 6.0, block_seconds=1.7)
    data = out.read_bytes()
    assert data == _reference_bytes(m24, src, 6.0)
    ref, _ = decompress(data, m24)
    decompress_file_streaming(out, tmp_path / "o.wav", m24, block_frames=100, bits=32)
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    np.testing.assert_allclose(got.T, ref.numpy(), atol=1e-5, rtol=0)


def test_cli_uses_streaming_for_long_inputs(tiny, tmp_path, monkeypatch, offline):
    from opencodec import cli, codec_files
    from opencodec.pretrained import save_model

    ckpt = save_model(tiny, tmp_path / "tiny.safetensors")
    src = _write(tmp_path / "in.wav", tones_and_noise(2.5, 24000), 24000)
    calls: list[str] = []

    def spy(name: str, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(codec_files, "compress_file_streaming", spy("compress", codec_files.compress_file_streaming))
    monkeypatch.setattr(codec_files, "decompress_file_streaming",
                        spy("decompress", codec_files.decompress_file_streaming))
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    assert cli.main(["compress", str(src), str(tmp_path / "s.ecdc"), "--model", str(ckpt), "-b", "3"]) == 0
    assert cli.main(["decompress", str(tmp_path / "s.ecdc"), str(tmp_path / "s.wav"), "--model", str(ckpt)]) == 0
    assert calls == ["compress", "decompress"]  # the streaming path, both ways
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1e9)
    assert cli.main(["compress", str(src), str(tmp_path / "w.ecdc"), "--model", str(ckpt), "-b", "3"]) == 0
    assert cli.main(["decompress", str(tmp_path / "w.ecdc"), str(tmp_path / "w.wav"), "--model", str(ckpt)]) == 0
    assert calls == ["compress", "decompress"]  # the whole-file path this time
    assert (tmp_path / "s.ecdc").read_bytes() == (tmp_path / "w.ecdc").read_bytes()
    a, _ = sf.read(str(tmp_path / "s.wav"), dtype="int16")
    b, _ = sf.read(str(tmp_path / "w.wav"), dtype="int16")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("seconds", [1.0, 1.5])
def test_compress_whole_number_of_blocks_other_channels_and_rate(tiny, tmp_path, seconds):
    """44.1 kHz stereo for a mono 24 kHz model, 2 or 3 blocks exactly: the empty read at the
    end must reach the resampler with the model's channel count (was "Channel num mismatch").
    The blocks hold convert_audio's samples; the file compresses to the right length."""
    from opencodec.longform.blocks import _ConvertedBlocks

    src = _write(tmp_path / "in.wav", tones_and_noise(seconds, 44100, channels=2), 44100)
    blocks = _ConvertedBlocks(src, 24000, 1, 0.5)
    got = np.concatenate(list(blocks))
    wav, rate = read_audio(src)
    np.testing.assert_array_equal(got.T, convert_audio(wav, rate, 24000, 1).numpy())
    assert blocks.length == round(seconds * 24000)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(tiny, src, out, 3.0, block_seconds=0.5)
    assert decompress(out.read_bytes(), tiny)[0].shape == (1, round(seconds * 24000))


def test_cli_compress_of_a_long_file_of_whole_blocks(tiny, tmp_path, monkeypatch, offline):
    """`opencodec compress` streams long files in 10 s blocks: a 10 s 44.1 kHz stereo file
    (one block exactly) is compressed, not refused."""
    from opencodec import cli, codec_files
    from opencodec.pretrained import save_model

    ckpt = save_model(tiny, tmp_path / "tiny.safetensors")
    src = _write(tmp_path / "in.wav", tones_and_noise(10.0, 44100, channels=2), 44100)
    calls: list[int] = []
    stream = codec_files.compress_file_streaming
    monkeypatch.setattr(codec_files, "compress_file_streaming", lambda *a, **k: calls.append(1) or stream(*a, **k))
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    assert cli.main(["compress", str(src), str(tmp_path / "s.ecdc"), "--model", str(ckpt), "-b", "3"]) == 0
    assert calls == [1]
    assert decompress((tmp_path / "s.ecdc").read_bytes(), tiny)[0].shape == (1, 240000)


def test_compress_mp3_blocks_read_like_the_whole_file(tiny, tmp_path):
    """Block reads of an MP3 give read_audio's samples (libsndfile is called without the seek
    python-soundfile makes after each read, which restarted the MP3 decoder without its bit
    reservoir): streaming the MP3 writes the bytes of streaming a float WAV of those samples."""
    t = np.arange(3 * 24000) / 24000
    sig = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    sig = sig + 0.02 * np.random.default_rng(1).standard_normal(t.size)
    src = tmp_path / "in.mp3"
    sf.write(str(src), sig.astype(np.float32), 24000, format="MP3")
    wav, rate = read_audio(src)
    same = _write(tmp_path / "same.wav", wav.numpy().T, rate)
    for block_seconds in (0.17, 1.0):
        compress_file_streaming(tiny, src, tmp_path / "mp3.ecdc", 3.0, block_seconds=block_seconds)
        compress_file_streaming(tiny, same, tmp_path / "wav.ecdc", 3.0, block_seconds=block_seconds)
        assert (tmp_path / "mp3.ecdc").read_bytes() == (tmp_path / "wav.ecdc").read_bytes(), block_seconds


# -- segmenting models (the 48 kHz architecture): one segment at a time ----------------------
@pytest.fixture(scope="module")
def seg() -> EncodecModel:
    """A tiny segmenting, renormalising, non-causal stereo model (0.25 s segments)."""
    torch.manual_seed(1)
    cfg = EncodecConfig(name="tiny_seg", channels=2, n_filters=4, dimension=16, lstm=1, n_q=4,
                        causal=False, norm="time_group_norm", normalize=True, segment=0.25,
                        target_bandwidths=[1.5, 3.0])
    return random_codebooks(EncodecModel(cfg), 1).eval()


@pytest.mark.parametrize("seconds,block_seconds", [(2.345, 0.1), (1.0, 0.37), (0.2, 10.0), (0.9976, 0.05)])
def test_segmenting_compress_identical(seg, tmp_path, seconds, block_seconds):
    assert supports_streaming(seg)
    src = _write(tmp_path / "in.wav", tones_and_noise(seconds, 24000, channels=2, seed=3), 24000)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(seg, src, out, 3.0, block_seconds=block_seconds)
    data = out.read_bytes()
    assert data == _reference_bytes(seg, src, 3.0)
    ref, _ = decompress(data, seg)
    decompress_file_streaming(out, tmp_path / "o.wav", seg, bits=32)
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    assert got.shape == (ref.shape[-1], 2)
    np.testing.assert_array_equal(got.T, ref.numpy())  # same operations in the same order


def test_segmenting_truncated(seg, tmp_path):
    data = compress(seg, torch.from_numpy(tones_and_noise(1.3, 24000, channels=2).T.copy()), 1.5)
    src = tmp_path / "short.ecdc"
    src.write_bytes(data[:-2])
    out = tmp_path / "sub" / "o.wav"
    out.parent.mkdir()
    with pytest.raises(BitstreamError):
        decompress_file_streaming(src, out, seg)
    assert list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_official_48khz_architecture(tmp_path):
    ref_model = official_ref.make_official_model("encodec_48khz", seed=4)
    model = official_ref.ours_from(ref_model, "encodec_48khz").eval()
    # 95300 samples: the last segment ends before the previous decoded one (see linear_overlap_add)
    src = _write(tmp_path / "in.wav", tones_and_noise(95300 / 48000, 48000, channels=2, seed=6), 48000)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(model, src, out, 6.0, block_seconds=0.3)
    data = out.read_bytes()
    assert data == _reference_bytes(model, src, 6.0)
    ref, _ = decompress(data, model)
    decompress_file_streaming(out, tmp_path / "o.wav", model, bits=32)
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(got.T, ref.numpy())


# -- entropy-coded files: audio streamed, codes kept in memory and coded at the end ------------
@pytest.fixture(scope="module")
def small_lm():
    from opencodec.entropy import EntropyLM

    torch.manual_seed(5)
    return EntropyLM(n_q=4, card=1024, dim=32, num_heads=8, num_layers=1, past_context=262).eval()


@pytest.mark.parametrize("deterministic", [False, True])
def test_lm_compress_and_decompress_match_whole_file(tiny, small_lm, tmp_path, deterministic):
    src = _write(tmp_path / "in.wav", tones_and_noise(2.6, 24000, seed=8), 24000)
    out = tmp_path / "out.ecdc"
    coded: list[tuple[int, int]] = []
    compress_file_streaming(tiny, src, out, 3.0, block_seconds=0.7, lm=small_lm,
                            deterministic=deterministic, lm_progress=lambda *a: coded.append(a))
    frames = -(-sf.info(str(src)).frames // tiny.hop_length)  # code frames of the input
    assert coded[-1] == (frames, frames) and coded == sorted(coded)
    wav, rate = read_audio(src)
    wav = convert_audio(wav, rate, tiny.sample_rate, tiny.channels)
    data = out.read_bytes()
    assert data == compress(tiny, wav, 3.0, lm=small_lm, deterministic=deterministic)
    ref, _ = decompress(data, tiny, lm=small_lm)
    decoded: list[tuple[int, int]] = []
    n = decompress_file_streaming(out, tmp_path / "o.wav", tiny, block_frames=11, bits=32,
                                  lm=small_lm, lm_progress=lambda *a: decoded.append(a))
    assert decoded[-1] == (frames, frames) and len(decoded) >= frames // 64
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    assert n == ref.shape[-1] == got.shape[0]
    np.testing.assert_allclose(got.T, ref.numpy(), atol=1e-5, rtol=0)
    # a corrupt entropy-coded body is an error, and no output is left
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(data[:-3])
    with pytest.raises(BitstreamError):
        decompress_file_streaming(bad, tmp_path / "bad.wav", tiny, lm=small_lm)
    assert not (tmp_path / "bad.wav").exists()


@pytest.mark.parametrize("deterministic", [False, True])
def test_lm_segmenting_identical(seg, tmp_path, deterministic):
    from opencodec.entropy import EntropyLM

    torch.manual_seed(6)
    lm = EntropyLM(n_q=4, card=1024, dim=32, num_heads=8, num_layers=1, past_context=20).eval()
    src = _write(tmp_path / "in.wav", tones_and_noise(1.3, 24000, channels=2, seed=9), 24000)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(seg, src, out, 3.0, block_seconds=0.2, lm=lm, deterministic=deterministic)
    wav, rate = read_audio(src)
    wav = convert_audio(wav, rate, seg.sample_rate, seg.channels)
    data = out.read_bytes()
    assert data == compress(seg, wav, 3.0, lm=lm, deterministic=deterministic)
    ref, _ = decompress(data, seg, lm=lm)
    decompress_file_streaming(out, tmp_path / "o.wav", seg, bits=32, lm=lm)
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(got.T, ref.numpy())


def test_lm_rejected_before_reading(tiny, tmp_path):
    from opencodec.compress import InvalidAudioError
    from opencodec.entropy import EntropyLM

    src = _write(tmp_path / "in.wav", tones_and_noise(0.5, 24000), 24000)
    wrong = EntropyLM(n_q=2, card=1024, dim=16, num_heads=8, num_layers=1).eval()
    with pytest.raises(InvalidAudioError, match="covers 2 codebooks"):
        compress_file_streaming(tiny, src, tmp_path / "o.ecdc", 3.0, lm=wrong)
    with pytest.raises(InvalidAudioError, match="needs an entropy model"):
        compress_file_streaming(tiny, src, tmp_path / "o.ecdc", 3.0, deterministic=True)
    assert not (tmp_path / "o.ecdc").exists()


def test_cli_streams_entropy_coded_long_inputs(tiny, small_lm, tmp_path, monkeypatch, offline, capsys):
    from opencodec import cli, codec_files
    from opencodec.pretrained import save_model

    ckpt = save_model(tiny, tmp_path / "tiny.safetensors")
    lm_path = tmp_path / "lm.th"
    torch.save(small_lm.state_dict(), lm_path)
    src = _write(tmp_path / "in.wav", tones_and_noise(2.5, 24000), 24000)
    common = ["--model", str(ckpt), "--lm-model", str(lm_path)]
    for fmt in ("deterministic", "official"):
        monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
        assert cli.main(["compress", str(src), str(tmp_path / f"s{fmt}.ecdc"), "-b", "3",
                         "--lm-format", fmt, *common]) == 0
        assert cli.main(["decompress", str(tmp_path / f"s{fmt}.ecdc"), str(tmp_path / f"s{fmt}.wav"),
                         *common]) == 0
        captured = capsys.readouterr()
        assert (captured.out + captured.err).count("streamed") == 2   # both went the streaming way
        monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1e9)
        assert cli.main(["compress", str(src), str(tmp_path / f"w{fmt}.ecdc"), "-b", "3",
                         "--lm-format", fmt, *common]) == 0
        assert cli.main(["decompress", str(tmp_path / f"w{fmt}.ecdc"), str(tmp_path / f"w{fmt}.wav"),
                         *common]) == 0
        assert (tmp_path / f"s{fmt}.ecdc").read_bytes() == (tmp_path / f"w{fmt}.ecdc").read_bytes()
        a, _ = sf.read(str(tmp_path / f"s{fmt}.wav"), dtype="int16")
        b, _ = sf.read(str(tmp_path / f"w{fmt}.wav"), dtype="int16")
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_block_reader_stops_at_the_header_frame_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The long-file reader reads at most the frames the header announces, as ``read_audio``
    (``soundfile.read``) does, even from a decoder that would yield more (simulated here by a
    block reader that always returns a full block)."""
    from opencodec.longform import blocks

    path = _write(tmp_path / "x.wav", tones_and_noise(2.3, 24000), 24000)
    real, calls = blocks._read_block, []

    def generous(sfile, frames):
        calls.append(frames)
        if len(calls) > 50:
            raise AssertionError("the reader never stopped")
        data = real(sfile, frames)
        return np.concatenate([data, np.zeros((frames - data.shape[0], data.shape[1]), np.float32)])

    monkeypatch.setattr(blocks, "_read_block", generous)
    reader = blocks._ConvertedBlocks(path, 24000, 1, block_seconds=1.0)
    audio = np.concatenate(list(reader))
    expected, _ = read_audio(path)
    assert reader.length == audio.shape[0] == expected.shape[-1]
    np.testing.assert_array_equal(audio[:, 0], expected[0].numpy())
