"""``opencodec compress``/``decompress`` and their file API on edge inputs a user can give:
output names near the longest a file system takes, FLAC outputs that the format cannot hold
(more than 8 channels, a rate above 655350 Hz, no samples), a folder resumed with
``--skip-existing`` whose inputs clash on an output name, a folder with a subfolder that
cannot be read, output folders that are files, an infinite ``block_seconds``, and a cut WAV
and a DOUBLE WAV beyond float32's range on the long-file path."""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import _files, codec_files
from opencodec.audio import write_audio
from opencodec.codec_files import FileCompressor, OutputOptions
from opencodec.compress import decompress
from opencodec.errors import AudioIOError
from opencodec.file_jobs import Job
from opencodec.pretrained import load_model

from codec_helpers import run, tiny_files_ckpt  # noqa: F401, F811 (a pytest fixture)


RATE = 24_000


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def tone(path: Path, samples: int = 2400, rate: int = RATE, channels: int = 1) -> Path:
    t = np.arange(samples) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] * np.ones((1, channels))
    sf.write(path, x.astype(np.float32), rate)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- output names near NAME_MAX (255 bytes) ------------------------------------------------------
@pytest.mark.parametrize("stem", ["a" * 245, "é" * 122], ids=["ascii-250-bytes", "utf8-249-bytes"])
def test_compress_writes_an_output_whose_long_name_is_legal(tmp_path: Path, tiny_files_ckpt: str, stem: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A legal output name (up to 255 bytes) is written: its temporary file's name, which adds the
    writer's tag, must not make it fail as "File name too long"."""
    src = tone(tmp_path / "in.wav")
    dst = tmp_path / f"{stem}.ecdc"
    assert len(os.fsencode(dst.name)) <= 255
    code, _, err = run(capsys, "compress", src, dst, "-m", tiny_files_ckpt, "-q")
    assert code == 0, err
    assert dst.read_bytes()[:4] == b"ECDC"
    code, _, err = run(capsys, "decompress", dst, tmp_path / f"{stem}.wav", "-m", tiny_files_ckpt, "-q")
    assert code == 0, err
    assert sf.info(str(tmp_path / f"{stem}.wav")).frames == 2400
    assert leftovers(tmp_path) == []


def test_long_round_trip_to_a_long_name_streams_through_its_hidden_ecdc(
        tmp_path: Path, tiny_files_ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round trip long enough to stream keeps its ``.ecdc`` in a hidden temporary file beside
    the output (``temporary_path``): a long output name must fit there too."""
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.05)
    src = tone(tmp_path / "in.wav", samples=4800)
    dst = tmp_path / ("b" * 250 + ".wav")
    result = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())(Job(src, dst))
    assert result.streamed
    assert sf.info(str(dst)).frames == 4800
    assert leftovers(tmp_path) == []


def test_temporary_names_stay_within_255_bytes(tmp_path: Path) -> None:
    name = "ü" * 126 + ".ecdc"  # 257 bytes: too long itself; its stem is cut all the same
    stem = _files.temporary_name_stem(name)
    with _files.temporary_path(tmp_path / name) as tmp:
        assert len(os.fsencode(tmp.name)) <= _files.MAX_NAME_BYTES
        assert tmp.name.startswith(f".{stem}.") and name.startswith(stem)
        tmp.write_bytes(b"x")  # creatable
    assert _files.temporary_name_stem("short.wav") == "short.wav"  # short names are kept whole


# -- FLAC outputs the format cannot hold ---------------------------------------------------------
@pytest.mark.parametrize("option, value, words", [("--channels", "9", "FLAC holds at most 8 channels, got 9"),
                                                  ("--rate", "700000", "FLAC holds sample rates up to 655350 Hz")])
def test_round_trip_to_flac_the_format_cannot_hold_is_a_usage_error(
        tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str],
        option: str, value: str, words: str) -> None:
    """``--channels`` takes 1-64 and ``--rate`` up to 768000 Hz, but a FLAC file holds at most 8
    channels at up to 655350 Hz: refused before any work with a line that says so (libsndfile's
    own message, after encoding and decoding, was "Format not recognised.")."""
    src = tone(tmp_path / "in.wav")
    code, _, err = run(capsys, "compress", src, tmp_path / "out.flac", "-m", tiny_files_ckpt, option, value)
    assert code == 2 and words in err and "write a .wav file instead" in err
    assert not (tmp_path / "out.flac").exists() and leftovers(tmp_path) == []
    code, _, _ = run(capsys, "compress", src, tmp_path / "out.wav", "-m", tiny_files_ckpt, option, value, "-q")
    assert code == 0  # WAV holds it


def test_decompress_to_flac_with_nine_channels_is_a_usage_error(tmp_path: Path, tiny_files_ckpt: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tone(tmp_path / "in.wav")
    assert run(capsys, "compress", src, tmp_path / "in.ecdc", "-m", tiny_files_ckpt, "-q")[0] == 0
    code, _, err = run(capsys, "decompress", tmp_path / "in.ecdc", tmp_path / "out.flac", "-m", tiny_files_ckpt,
                       "--channels", "9")
    assert code == 2 and "FLAC holds at most 8 channels, got 9" in err
    assert not (tmp_path / "out.flac").exists()


@pytest.mark.parametrize("channels, out, words", [
    (10, "ten.flac", "FLAC holds at most 8 channels, got 10; write a .wav file instead"),
    (65, "many.wav", "an output holds at most 64 channels, got 65")])
def test_round_trip_keeping_more_channels_than_the_output_holds_fails_before_encoding(
        tmp_path: Path, tiny_files_ckpt: str, monkeypatch: pytest.MonkeyPatch,
        channels: int, out: str, words: str) -> None:
    """A round trip keeps the input's channel count: 10 channels cannot go to FLAC, 65 to any
    output, which the compressor says before encoding (nothing is computed for an output that
    cannot be written; 65 failed after the work as "expected audio [C, T] with at most 64
    channels, got shape (65, 2400)")."""
    src = tone(tmp_path / "in.wav", channels=channels)
    calls: list[int] = []
    monkeypatch.setattr(codec_files, "compress", lambda *a, **k: calls.append(1))
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    with pytest.raises(AudioIOError, match=words):
        compressor(Job(src, tmp_path / out))
    assert calls == [] and not (tmp_path / out).exists()


def test_write_audio_names_the_flac_limits(tmp_path: Path) -> None:
    with pytest.raises(AudioIOError, match=r"out\.flac: FLAC holds at most 8 channels, got 9"):
        write_audio(tmp_path / "out.flac", torch.zeros(9, 100), RATE)
    with pytest.raises(AudioIOError, match="FLAC holds sample rates up to 655350 Hz, got 700000"):
        write_audio(tmp_path / "out.flac", torch.zeros(1, 100), 700_000)
    write_audio(tmp_path / "out.flac", torch.zeros(8, 100), 655_350)  # the limits themselves are taken
    assert sf.info(str(tmp_path / "out.flac")).channels == 8
    assert leftovers(tmp_path) == []


def test_file_decompressor_refuses_a_flac_it_cannot_write_before_decoding(
        tmp_path: Path, tiny_files_ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file API without the command's planning: checked before the (long) decoding too."""
    ecdc = tmp_path / "in.ecdc"
    FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())(Job(tone(tmp_path / "in.wav"), ecdc))
    calls: list[int] = []
    monkeypatch.setattr(codec_files, "decompress", lambda *a, **k: calls.append(1))
    decompressor = codec_files.FileDecompressor(tiny_files_ckpt, OutputOptions(channels=9))
    with pytest.raises(AudioIOError, match="FLAC holds at most 8 channels, got 9"):
        decompressor(Job(ecdc, tmp_path / "out.flac"))
    assert calls == [] and not (tmp_path / "out.flac").exists()


# -- --skip-existing and inputs that map to one output -------------------------------------------
def test_skip_existing_does_not_pass_off_a_clashing_input_as_done(tmp_path: Path, tiny_files_ckpt: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """a.flac and a.wav both map to a.ecdc: the first run writes a.flac's and fails a.wav's. A
    resume with --skip-existing must fail a.wav again, not count it as "skipped, their output
    exists" (that output is a.flac's) and exit 0 with a.wav never compressed."""
    src = tmp_path / "in"
    src.mkdir()
    tone(src / "a.flac", samples=1200)
    tone(src / "a.wav")
    tone(src / "b.wav")
    out = tmp_path / "out"
    code, _, err = run(capsys, "compress", src, out, "-m", tiny_files_ckpt, "-j", "1")
    assert code == 1 and "a.wav: output" in err and "would also be written from" in err
    code, _, err = run(capsys, "compress", src, out, "-m", tiny_files_ckpt, "-j", "1", "--skip-existing")
    assert code == 1, err
    assert "2 file(s) skipped" in err and "would also be written from" in err and "1 of 1 file(s) failed" in err
    wav, _ = decompress((out / "a.ecdc").read_bytes(), load_model(tiny_files_ckpt))
    assert wav.shape[-1] == 1200  # a.flac's, kept


def test_round_trip_to_flac_of_no_samples_leaves_no_empty_file(tmp_path: Path, tiny_files_ckpt: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """One sample at 24 kHz is 0 samples at 1000 Hz: a WAV of no samples is a valid file (with a
    warning), but libsndfile writes a FLAC of none as a 0-byte file that nothing reads back."""
    src = tone(tmp_path / "one.wav", samples=1)
    code, _, err = run(capsys, "compress", src, tmp_path / "z.flac", "-m", tiny_files_ckpt, "--rate", "1000", "-q")
    assert code == 1 and "holds no samples" in err and "write a .wav file instead" in err
    assert not (tmp_path / "z.flac").exists() and leftovers(tmp_path) == []
    code, _, err = run(capsys, "compress", src, tmp_path / "z.wav", "-m", tiny_files_ckpt, "--rate", "1000", "-q")
    assert code == 0 and "the output holds no samples" in err
    assert sf.info(str(tmp_path / "z.wav")).frames == 0  # a valid, empty WAV


# -- a subfolder that cannot be listed -----------------------------------------------------------
@pytest.mark.parametrize("command", ["compress", "info"])
def test_an_unreadable_subfolder_is_an_error_not_left_out(tmp_path: Path, tiny_files_ckpt: str, command: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A subfolder without read permission (simulated: the tests may run as root) was skipped
    silently by the folder walk, so ``compress in/ out/`` said "1 file(s) done" and exited 0
    with the files under it never compressed; now the run stops first, naming the folder."""
    src = tmp_path / "in"
    (src / "ok").mkdir(parents=True)
    (src / "secret").mkdir()
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    for audio in (src / "ok" / "a.wav", src / "secret" / "b.wav"):  # audio for compress, .ecdc for info
        compressor(Job(tone(audio), audio.with_suffix(".ecdc")))
    scandir = os.scandir

    def refusing(path: tp.Any = ".") -> tp.Any:
        if os.fspath(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    args = [src, tmp_path / "out", "-m", tiny_files_ckpt, "-j", "1"] if command == "compress" else [src]
    code, _, err = run(capsys, command, *args)
    assert code == 1
    assert f"cannot read folder {src / 'secret'}: Permission denied" in err
    assert not (tmp_path / "out").exists()  # nothing done: the run stops before its first file


# -- an output folder that is a file -------------------------------------------------------------
def test_folder_out_below_a_file_is_a_usage_error_before_any_work(tmp_path: Path, tiny_files_ckpt: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``compress in/ x.wav/sub``: x.wav is a file, so no output folder can be made under it; this
    was found per file, after encoding each ("cannot create output folder ...: Not a directory")."""
    src = tmp_path / "in"
    src.mkdir()
    tone(src / "a.wav")
    tone(src / "b.wav")
    afile = tone(tmp_path / "x.wav")
    code, _, err = run(capsys, "compress", src, afile / "sub", "-m", tiny_files_ckpt, "-j", "1")
    assert code == 2
    assert f"but {afile} is a file (above OUT {afile / 'sub'})" in err
    assert err.count("error:") == 1


def test_a_mirrored_subfolder_that_is_a_file_fails_its_files_before_their_work(
        tmp_path: Path, tiny_files_ckpt: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    out.mkdir()
    (out / "sub").write_text("")  # where in/sub's outputs would go
    tone(src / "a.wav")
    tone(src / "sub" / "b.wav")
    encoded: list[int] = []
    real = codec_files.compress
    monkeypatch.setattr(codec_files, "compress", lambda *a, **k: encoded.append(1) or real(*a, **k))
    code, _, err = run(capsys, "compress", src, out, "-m", tiny_files_ckpt, "-j", "1")
    assert code == 1 and f"cannot create output folder {out / 'sub'}: {out / 'sub'} is a file" in err
    assert encoded == [1]  # a.wav only: sub/b.wav failed before its encoding
    assert (out / "a.ecdc").is_file()


# -- the long-file API's block size --------------------------------------------------------------
def test_long_file_block_seconds_must_be_finite(tmp_path: Path, tiny_files_ckpt: str) -> None:
    """``block_seconds=inf`` failed deep inside as "OverflowError: cannot convert float infinity
    to integer"; it is a ValueError naming the argument, before any output."""
    from opencodec.longform import compress_file_streaming, encode_file_streaming

    model = load_model(tiny_files_ckpt)
    src = tone(tmp_path / "in.wav")
    with pytest.raises(ValueError, match=r"^block_seconds must be a finite number > 0, got inf$"):
        compress_file_streaming(model, src, tmp_path / "o.ecdc", 1.5, block_seconds=float("inf"))
    with pytest.raises(ValueError, match=r"^block_seconds must be a finite number > 0, got inf$"):
        encode_file_streaming(model, src, block_seconds=float("inf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# -- a cut input on the long-file path -----------------------------------------------------------
@pytest.mark.parametrize("out", ["cut.ecdc", "cut.rt.wav"])
def test_a_cut_long_input_is_reported_as_on_the_whole_file_path(tmp_path: Path, tiny_files_ckpt: str, out: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A WAV cut short (its header says 12000 samples, 7200 are there) is encoded as it is with
    the warning read_audio gives; over STREAMING_MIN_SECONDS it went through the long-file path,
    which said nothing (a 122 s WAV cut to 70 s: "70.00 s ..., streamed" and no warning)."""
    whole = tone(tmp_path / "whole.wav", samples=12000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:44 + 2 * 7200])  # 16-bit mono: a 44-byte header, 2 bytes a sample
    expected = f"{cut}: truncated: its header says 12000 samples, the file holds 7200 (the 7200 there are used)"
    code, _, err = run(capsys, "compress", cut, tmp_path / "whole_path.ecdc", "-m", tiny_files_ckpt)
    assert code == 0 and expected in err and "streamed" not in err
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.05)
    code, _, err = run(capsys, "compress", cut, tmp_path / out, "-m", tiny_files_ckpt)
    assert code == 0 and "streamed" in err
    assert expected in err
    if out.endswith(".ecdc"):  # the same bytes as the whole-file path's
        assert (tmp_path / out).read_bytes() == (tmp_path / "whole_path.ecdc").read_bytes()


def test_a_long_double_wav_beyond_float32s_range_is_named_as_such(tmp_path: Path, tiny_files_ckpt: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The whole-file path names finite DOUBLE samples beyond float32's range; the long-file
    path (over STREAMING_MIN_SECONDS) called them "NaN or infinite". It names them too, with
    the block they are in (only that block is read again); a real inf stays NaN or infinite."""
    path = tmp_path / "big64.wav"
    x = np.full(12000, 0.1)
    x[7000:7004] = [1e39, -2e39, 0.2, 5e38]
    sf.write(path, x, RATE, subtype="DOUBLE")
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.05)
    code, _, err = run(capsys, "compress", path, tmp_path / "b.ecdc", "-m", tiny_files_ckpt, "-q")
    block_start = 0.0  # the default block holds the whole 0.5 s
    assert (code, err) == (1, f"opencodec: error: cannot read audio file {path}: it holds 3 sample(s) beyond "
                              f"float32's range in its block from {block_start:.1f} s (peak 2e+39, float32 "
                              f"reaches 3.4e+38), in which audio is read and coded; full scale is 1.0\n")
    from opencodec.longform import encode_file_streaming
    with pytest.raises(AudioIOError, match=r"beyond float32's range in its block from 0\.2 s \(peak 2e\+39"):
        list(encode_file_streaming(load_model(tiny_files_ckpt), path, block_seconds=0.1))
    x[7000] = np.inf
    sf.write(path, x, RATE, subtype="DOUBLE")
    code, _, err = run(capsys, "compress", path, tmp_path / "b.ecdc", "-m", tiny_files_ckpt, "-q")
    assert (code, err) == (1, f"opencodec: error: cannot read audio file {path}: it holds NaN or infinite "
                              "samples\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big64.wav"]


def _memory_capped() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GiB: the old reading ran into it


def test_decompress_of_an_endless_device_is_refused_at_its_first_bytes(tmp_path: Path) -> None:
    """``opencodec decompress /dev/zero out.wav`` read the whole device into memory before its
    header was parsed (a MemoryError after 2.5 GB under a 3 GB cap; with none, the machine's
    memory). The header of a pipe or device is read and checked first now; nothing is written."""
    import subprocess
    import sys

    import opencodec

    env = {**os.environ, "PYTHONPATH": str(Path(opencodec.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "opencodec", "decompress", "/dev/zero", str(tmp_path / "o.wav")],
                          capture_output=True, timeout=120, env=env, preexec_fn=_memory_capped)
    assert (done.returncode, done.stdout, sorted(tmp_path.iterdir())) == (1, b"", [])
    assert done.stderr == (b"opencodec: error: /dev/zero: not an ECDC file: magic expected b'ECDC', got "
                           b"b'\\x00\\x00\\x00\\x00'\n")


def test_decompress_reads_a_pipe_whole_after_its_header(tmp_path: Path, tiny_files_ckpt: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A pipe (a FIFO here) still decodes as the file does: its header, then all of its bytes."""
    import threading

    src = tone(tmp_path / "in.wav", samples=4800)
    assert run(capsys, "compress", src, tmp_path / "a.ecdc", "-m", tiny_files_ckpt, "-q")[0] == 0
    data = (tmp_path / "a.ecdc").read_bytes()
    fifo = tmp_path / "pipe.ecdc"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    code, _, err = run(capsys, "decompress", fifo, tmp_path / "from_pipe.wav", "-m", tiny_files_ckpt, "-q")
    writer.join()
    assert code == 0, err
    assert run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "from_file.wav", "-m", tiny_files_ckpt,
               "-q")[0] == 0
    assert (tmp_path / "from_pipe.wav").read_bytes() == (tmp_path / "from_file.wav").read_bytes()
