"""Truncated and broken inputs of ``opencodec tokenize`` and ``read_audio``: a file holding fewer
samples than its header says (WAV, AIFF, an MP3 with a Xing header; batched and streamed), a
``.mp3`` holding no MPEG audio (no libmpg123 notes on stderr), a broken symbolic link, a channel
conversion refused for a tensor (a ValueError); the torchrun summary lines of a rank without
work; the progress bar ending at its total."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.audio import (ChannelConversionError, Truncation, check_mp3_content, convert_audio,
                             find_truncation, header_declared_frames, read_audio)
from opencodec.errors import AudioIOError, InvalidAudioError
from opencodec.tokens import InputError, list_inputs


from test_tokenize import tiny_model_file  # noqa: E402, F401 (pytest fixture)


def _noise(seconds: float, rate: int, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def _cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _mp3(path: Path, seconds: float, rate: int = 24000) -> Path:
    sf.write(path, np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32) * 0.3,
             rate, format="MP3", subtype="MPEG_LAYER_III")
    return path


# -- the header's count: one helper for read_audio and tokenize --------------------------------------
def test_find_truncation_of_wav_and_aiff(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, _noise(0.5, 8000), 8000, subtype="PCM_16")
    aiff = tmp_path / "a.aiff"
    sf.write(aiff, _noise(0.5, 8000), 8000, subtype="PCM_16")
    assert header_declared_frames(wav) is None and header_declared_frames(aiff) == 4000  # a WAV's data all there
    assert find_truncation(wav) is None and find_truncation(aiff) is None
    _cut(wav, 44 + 2 * 1000)
    _cut(aiff, aiff.stat().st_size - 2 * 3000)
    assert header_declared_frames(wav) == 4000 and find_truncation(wav) == Truncation(4000, 1000)
    assert find_truncation(aiff) == Truncation(4000, 1000)
    assert find_truncation(wav).reason == "truncated: its header says 4000 samples, the file holds 1000"
    assert find_truncation(wav, held=4000, claimed=1000) is None  # all 4000 the header declares decoded
    assert find_truncation(tmp_path / "a.wav", held=999, claimed=1000) == Truncation(4000, 999)
    flac = tmp_path / "a.flac"
    sf.write(flac, _noise(0.1, 8000), 8000)
    assert header_declared_frames(flac) is None
    assert find_truncation(flac, held=700, claimed=800) == Truncation(800, 700)  # libsndfile's count (an MP3's)


def _wav_with(path: Path, frames: int, channels: int, *, data_size: int | None = None,
              block_align: int | None = None) -> Path:
    """A 16-bit PCM WAV of ``frames`` frames whose header may say another ``data_size`` (bytes)
    or ``block_align`` than the samples it holds (what some writers put there)."""
    import struct
    body = (np.arange(frames * channels) % 200).astype("<i2").tobytes()
    align = block_align if block_align is not None else 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, 16000, 16000 * 2 * channels, align, 16)
    size = len(body) if data_size is None else data_size
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
                     + fmt + b"data" + struct.pack("<I", size) + body)
    return path


@pytest.mark.parametrize("data_size", [0x7FFFFF00, 0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF])
def test_a_streaming_writers_placeholder_length_is_no_truncation(tmp_path: Path, data_size: int) -> None:
    """``arecord`` into a pipe leaves 0x7FFFFF00 as the data size, others 0x7FFFFFFF or
    0xFFFFFFFF: unknown lengths, read whole by libsndfile, never "truncated"."""
    wav = _wav_with(tmp_path / "piped.wav", 8000, 2, data_size=data_size)
    assert header_declared_frames(wav) is None and find_truncation(wav) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(wav, refuse_truncated=True)[0].shape == (2, 8000)


def test_a_wrong_block_align_neither_hides_nor_invents_a_truncation(tmp_path: Path) -> None:
    """libsndfile sizes PCM frames from channels and bits, whatever the fmt chunk's block align
    says; so does the header's count: a whole file with block align 2 for 16-bit stereo is whole,
    and the same file cut to a quarter is 8000 declared, 2000 held."""
    wav = _wav_with(tmp_path / "align.wav", 8000, 2, block_align=2)
    assert find_truncation(wav) is None and read_audio(wav, refuse_truncated=True)[0].shape == (2, 8000)
    _cut(wav, 44 + 2 * 2 * 2000)
    assert find_truncation(wav) == Truncation(8000, 2000)


def test_read_audio_warns_or_refuses_a_truncated_file(tmp_path: Path) -> None:
    """compress's behaviour (warn, use what is there) stays read_audio's default; tokenize's
    ``refuse_truncated=True`` makes it an AudioIOError with the reason."""
    aiff = tmp_path / "cut.aiff"
    sf.write(aiff, _noise(0.5, 8000), 8000, subtype="PCM_16")
    _cut(aiff, aiff.stat().st_size - 2 * 3000)
    with pytest.warns(UserWarning, match=r"cut\.aiff: truncated: its header says 4000 samples, the file holds "
                                         r"1000 \(the 1000 there are used\)$"):
        wav, rate = read_audio(aiff)
    assert wav.shape == (1, 1000) and rate == 8000
    with pytest.raises(AudioIOError, match=r"^cannot read audio file .*cut\.aiff: truncated: its header says 4000 "
                                           r"samples, the file holds 1000$"):
        read_audio(aiff, refuse_truncated=True)
    whole = tmp_path / "whole.wav"
    sf.write(whole, _noise(0.1, 8000), 8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_audio(whole, refuse_truncated=True)[0].shape == (1, 800)


def test_a_streamed_truncated_mp3_is_an_error_without_a_row(tiny_model_file: Path, tmp_path: Path) -> None:
    """An MP3 whose Xing header counts more frames than it holds, over --max-seconds (streamed):
    found from libsndfile's count once read, before its shard is written; no row for it."""
    from opencodec.tokens import TokenizeOptions, tokenize
    data = tmp_path / "data"
    data.mkdir()
    whole = _mp3(tmp_path / "whole.mp3", 2.0, 16000)
    (data / "cut.mp3").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    sf.write(data / "fine.wav", _noise(0.3, 24000), 24000)
    assert sf.info(str(data / "cut.mp3")).frames == 32000  # the header's count: over --max-seconds 1
    summary = tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu",
                                       max_seconds=1.0, workers=1))
    assert summary.index is not None and (summary.index["rows"], summary.index["errors"]) == (1, 1)
    [error] = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["id"] == "cut.mp3"
    assert error["error"].startswith(f"cannot read audio file {data / 'cut.mp3'}: truncated: its header says "
                                     "32000 samples, the file holds about ")
    held = int(error["error"].rsplit(" ", 1)[1])
    assert 10000 < held < 20000


# -- a .mp3 that holds no MPEG audio --------------------------------------------------------------------
def test_a_non_mp3_named_mp3_is_refused_without_libmpg123_notes(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"<html>not found</html>\n" * 200)
    with pytest.raises(AudioIOError, match=r"^cannot read audio file .*fake\.mp3: not a decodable audio file "
                                           r"\(named \.mp3, but it holds no MPEG audio frame or ID3 tag"):
        read_audio(fake)
    from opencodec.tokens.plan import header_duration
    assert header_duration(str(fake)) == -1.0
    assert capfd.readouterr().err == ""  # before: "Note: Illegal Audio-MPEG-Header ..." from libmpg123


def test_real_mp3s_still_read(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """An MP3 as libsndfile writes it (frame sync first), with an ID3v2 tag before it, after
    some junk bytes, and a WAV named .mp3: all read as before."""
    plain = _mp3(tmp_path / "plain.mp3", 0.5)
    body = plain.read_bytes()
    assert body[0] == 0xFF and body[1] & 0xE0 == 0xE0  # an MPEG frame's sync bits first
    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10) + body)  # a 10-byte ID3v2 tag
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(bytes(100) + body)
    wav_named = tmp_path / "wav.mp3"
    sf.write(wav_named, _noise(0.2, 8000), 8000, format="WAV")
    expected = read_audio(plain)[0]
    for path in (plain, tagged, junk):
        check_mp3_content(path)
        got = read_audio(path)[0]
        assert got.shape == expected.shape and torch.equal(got, expected), path
    assert read_audio(wav_named)[0].shape == (1, 1600)
    capfd.readouterr()


# -- channel conversion of a tensor ----------------------------------------------------------------------
def test_convert_audio_three_to_two_channels_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^cannot convert 3 channels to 2: only mono down-mix and mono up-mix "
                                         r"are supported") as caught:
        convert_audio(torch.zeros(3, 10), 8000, 8000, 2)
    assert isinstance(caught.value, InvalidAudioError) and isinstance(caught.value, ChannelConversionError)
    assert isinstance(caught.value, AudioIOError)  # callers that skip such files by this class still do


# -- broken symbolic links ---------------------------------------------------------------------------------
def test_a_broken_link_is_named_as_such(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "fine.wav", _noise(0.1, 8000), 8000)
    os.symlink(tmp_path / "gone.wav", data / "broken.wav")
    items = {item.id: item for item in list_inputs([data])}
    assert items["fine.wav"].error == ""
    assert items["broken.wav"].error == (f"cannot read audio file {data / 'broken.wav'}: broken symbolic link "
                                         f"(points to {tmp_path / 'gone.wav'})")
    (tmp_path / "list.txt").write_text("data/fine.wav\ndata/broken.wav\n")
    listed = {item.id: item.error for item in list_inputs([tmp_path / "list.txt"])}
    assert "broken symbolic link (points to" in listed["data/broken.wav"]
    with pytest.raises(InputError, match=r"^input .*broken\.wav is a broken symbolic link \(points to "
                                         rf"{tmp_path / 'gone.wav'}\)$"):
        list_inputs([data / "broken.wav"])


# -- torchrun: a rank without work says nothing -------------------------------------------------------------
@pytest.mark.parametrize("first", [0, 1])
def test_a_rank_without_work_prints_nothing(first: int, tiny_model_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """One shard, two ranks: rank 0 has it, rank 1 none. Rank 1 prints no "0 files" line,
    whether it ends first (the job unfinished) or last (the job finished, by rank 0)."""
    from opencodec.cli import main
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "a.wav", _noise(0.3, 24000), 24000)
    monkeypatch.setenv("WORLD_SIZE", "2")
    said = {}
    for rank in (first, 1 - first):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert main(["tokenize", str(data), "--out", str(tmp_path / "out"), "-m", str(tiny_model_file),
                     "--device", "cpu"]) == 0
        said[rank] = capsys.readouterr().err
    assert said[1] == ""
    assert "rank 0/2: 1 file, 0.3 s of audio, 0 errors" in said[0]
    assert f"{tmp_path / 'out'}: 1 shard, 1 row" in said[0]  # rank 0 finished the job either way
    # a rerun: no work anywhere; rank 0 alone gives the job's summary
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert main(["tokenize", str(data), "--out", str(tmp_path / "out"), "-m", str(tiny_model_file),
                     "--device", "cpu"]) == 0
        said[rank] = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                             if not line.startswith("tokenize rank 0/2: "))  # rank 0's (empty) bar
    assert said[1] == "" and said[0] == f"{tmp_path / 'out'}: 1 shard, 1 row, 0.3 s of audio, 0 errors\n"


# -- the progress bar ends at its total ---------------------------------------------------------------------
def test_the_progress_bar_ends_at_its_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """165 files of 0.1 s: the parts add up to 16.499999999999964 of a 16.5 s total."""
    from opencodec.cli import tokens as cli_tokens
    monkeypatch.setenv("OPENCODEC_PROGRESS_SECONDS", "1000")
    out = io.StringIO()
    monkeypatch.setattr(cli_tokens.sys, "stderr", out)
    progress = cli_tokens._Progress(False, "tokenize")
    update = progress.start(16.5)
    for _ in range(165):
        update(0.1, 1, 0)
    assert progress.bar is not None and progress.bar.n < 16.5
    progress.finish()
    assert progress.bar.n == progress.bar.total == 16.5
    progress.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("tokenize: 100%|##########| 16.5/16.5 s"), last  # a full bar (ASCII: not a terminal)
