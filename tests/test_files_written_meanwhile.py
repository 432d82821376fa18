"""``compress``/``decompress`` outputs placed atomically: an output another command wrote
meanwhile is kept (unless ``--force``), outputs that are the input or cannot be created are named,
long round trips stream, and file systems without hard links still never overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec import _files, codec_files
from opencodec.codec_files import FileCompressor, FileDecompressor, OutputOptions, plan_compress
from opencodec.errors import OpenCodecError, OutputError
from opencodec.file_jobs import Job, Plan, run_jobs

from codec_helpers import noise_wav, tiny_files_ckpt  # noqa: F401, F811 (a pytest fixture)


RATE = 24_000


OTHER = b"written by another command meanwhile"


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _write_meanwhile(monkeypatch: pytest.MonkeyPatch, name: str, dst: Path) -> None:
    """Make ``codec_files.<name>`` (compress or decompress) write ``dst`` first, as a second
    command into the same folder would, after this command checked that ``dst`` is free."""
    real = getattr(codec_files, name)

    def racing(*args: object, **kwargs: object) -> object:
        dst.write_bytes(OTHER)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec_files, name, racing)


@pytest.mark.parametrize("suffix", [".ecdc", ".wav"])  # a plain .ecdc, and a round trip's audio
def test_compress_keeps_an_output_written_meanwhile(tmp_path: Path, tiny_files_ckpt: str, suffix: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = noise_wav(tmp_path / "in.wav"), tmp_path / f"out{suffix}"
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    _write_meanwhile(monkeypatch, "compress", dst)
    with pytest.raises(OpenCodecError, match=r"out\%s already exists \(use -f/--force" % suffix):
        compressor(Job(src, dst))
    assert dst.read_bytes() == OTHER  # the other command's file, not replaced
    assert _hidden(tmp_path) == []  # no temporary file left


def test_compress_force_still_replaces(tmp_path: Path, tiny_files_ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = noise_wav(tmp_path / "in.wav"), tmp_path / "out.ecdc"
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions(force=True))
    _write_meanwhile(monkeypatch, "compress", dst)
    result = compressor(Job(src, dst))
    assert dst.read_bytes()[:4] == b"ECDC" and dst.stat().st_size == result.size_bytes


def test_decompress_keeps_an_output_written_meanwhile(tmp_path: Path, tiny_files_ckpt: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.ecdc"
    FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())(Job(noise_wav(tmp_path / "in.wav"), src))
    dst = tmp_path / "out.wav"
    decompressor = FileDecompressor(tiny_files_ckpt, OutputOptions())
    _write_meanwhile(monkeypatch, "decompress", dst)
    with pytest.raises(OpenCodecError, match=r"out\.wav already exists \(use -f/--force"):
        decompressor(Job(src, dst))
    assert dst.read_bytes() == OTHER
    assert _hidden(tmp_path) == []


def test_folder_run_reports_the_file_written_meanwhile_and_goes_on(tmp_path: Path, tiny_files_ckpt: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in").mkdir()
    srcs = [noise_wav(tmp_path / "in" / f"{name}.wav") for name in ("a", "b")]
    out = tmp_path / "out"
    out.mkdir()
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    _write_meanwhile(monkeypatch, "compress", out / "a.ecdc")
    plan = Plan([Job(srcs[0], out / "a.ecdc"), Job(srcs[1], out / "b.ecdc")], folder=True)
    outcomes = list(run_jobs(plan, compressor, processes=1))
    assert "already exists" in str(outcomes[0].error)
    assert outcomes[1].error is None  # the other files go on
    assert (out / "a.ecdc").read_bytes() == OTHER
    assert (out / "b.ecdc").read_bytes()[:4] == b"ECDC"


def test_atomic_output_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    _files.write_bytes_atomic(path, b"new", overwrite=False)  # a free path: written
    assert path.read_bytes() == b"new"
    with pytest.raises(OutputError, match="already exists"):
        _files.write_bytes_atomic(path, b"newer", overwrite=False)
    assert path.read_bytes() == b"new" and _hidden(tmp_path) == []
    with _files.keep_existing():  # the default within the block
        with pytest.raises(OutputError, match="already exists"):
            _files.write_bytes_atomic(path, b"newer")
        _files.write_bytes_atomic(path, b"forced", overwrite=True)
    assert path.read_bytes() == b"forced"
    _files.write_bytes_atomic(path, b"plain")  # outside it: replaced, as before
    assert path.read_bytes() == b"plain"


def test_output_that_is_the_input_is_refused_as_such_without_force(tmp_path: Path) -> None:
    src = noise_wav(tmp_path / "in.wav")
    os.symlink(src.name, tmp_path / "alias.wav")
    for out in (src, tmp_path / "alias.wav"):
        with pytest.raises(FileExistsError) as caught:
            plan_compress(src, out, OutputOptions())  # not "use -f/--force": -f is refused too
        assert str(caught.value) == f"output {out} is the input file itself; give another output"


def test_output_folder_that_cannot_be_created_is_named(tmp_path: Path, tiny_files_ckpt: str) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    src = noise_wav(tmp_path / "in" / "sub" / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_bytes(b"a file where the folder would go")
    plan = Plan([Job(src, out / "sub" / "a.ecdc")], folder=True)
    [outcome] = list(run_jobs(plan, FileCompressor(tiny_files_ckpt, 1.5, OutputOptions()), processes=1))
    assert isinstance(outcome.error, OutputError)
    assert str(outcome.error).startswith(f"cannot create output folder {out / 'sub'}: ")


def test_long_round_trip_at_the_models_format_is_streamed(tmp_path: Path, tiny_files_ckpt: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A long round trip (here "long" is lowered to 0.2 s) whose output is at the model's rate and
    channels goes through the bounded-memory path (a 2-minute file took 1.59 GB whole, 383 MB
    streamed), with the whole path's audio to one 16-bit step, the input's length, no temporary
    file left; another output rate still takes the whole path."""
    src = noise_wav(tmp_path / "in.wav", seconds=0.5)
    whole = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())(Job(src, tmp_path / "whole.wav"))
    assert not whole.streamed
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.2)
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    result = compressor(Job(src, tmp_path / "streamed.wav"))
    assert result.streamed and (result.sample_rate, result.channels) == (RATE, 1)
    a, rate_a = sf.read(tmp_path / "whole.wav", dtype="int16")
    b, rate_b = sf.read(tmp_path / "streamed.wav", dtype="int16")
    assert rate_a == rate_b == RATE and a.shape == b.shape == (int(0.5 * RATE),)
    assert np.abs(a.astype(np.int32) - b).max() <= 1
    assert _hidden(tmp_path) == []
    other = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions(rate=16_000))(Job(src, tmp_path / "at16k.wav"))
    assert not other.streamed and sf.info(tmp_path / "at16k.wav").samplerate == 16_000
    with pytest.raises(OpenCodecError, match="already exists"):  # the streamed path keeps outputs too
        _write_meanwhile(monkeypatch, "decompress_file_streaming", tmp_path / "raced.wav")
        compressor(Job(src, tmp_path / "raced.wav"))
    assert (tmp_path / "raced.wav").read_bytes() == OTHER


def test_folder_rerun_says_the_outputs_exist(tmp_path: Path, tiny_files_ckpt: str,
                                             capsys: pytest.CaptureFixture) -> None:
    """A folder run again without --skip-existing: the last line says why they failed and what resumes."""
    from opencodec import cli

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        noise_wav(tmp_path / "in" / f"{name}.wav")
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio")
    args = ["compress", "-q", "-j", "1", "-m", tiny_files_ckpt, "-b", "1.5", str(tmp_path / "in"),
            str(tmp_path / "out")]
    assert cli.main(args) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "opencodec: error: 1 of 3 file(s) failed"
    assert cli.main(args) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "opencodec: error: 3 of 3 file(s) failed (2 because their output exists: --skip-existing leaves "
        "those out, -f overwrites)")
    assert cli.main(args + ["--skip-existing"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "opencodec: error: 1 of 1 file(s) failed"


@pytest.mark.parametrize("refusal", [PermissionError(1, "Operation not permitted"),  # EPERM: Linux's
                                     OSError(22, "Invalid argument"), OSError(13, "Permission denied")])
def test_no_overwrite_where_the_file_system_has_no_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              refusal: OSError) -> None:
    """Whatever a file system without hard links answers (other platforms, network shares),
    the output is placed by a check and a rename, and an existing one is still refused."""
    def no_links(*args: object, **kwargs: object) -> None:
        raise refusal

    monkeypatch.setattr(_files.os, "link", no_links)
    path = tmp_path / "x.bin"
    _files.write_bytes_atomic(path, b"new", overwrite=False)
    assert path.read_bytes() == b"new"
    with pytest.raises(OutputError, match="already exists"):
        _files.write_bytes_atomic(path, b"newer", overwrite=False)
    assert path.read_bytes() == b"new" and _hidden(tmp_path) == []
