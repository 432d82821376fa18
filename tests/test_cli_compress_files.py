"""``opencodec compress``/``decompress``/``info`` on files, folders and pipes: option limits,
streamed long files, SIGTERM clean-up, ``--`` and ``-`` names, truncated and non-UTF-8 inputs,
loud inputs, FIFO and symlink outputs, and the audio helpers' argument errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import opencodec
from opencodec import _files, audio, cli, codec_files
from opencodec.audio import convert_audio, read_audio, write_audio
from opencodec.cli import codec as cli_codec
from opencodec.cli.main import build_parser
from opencodec.codec_files import FileCompressor, FileResult, OutputOptions, plan_compress
from opencodec.file_jobs import run_jobs
from opencodec.longform import compress_file_streaming

from codec_helpers import TINY_FILES_MODEL, run, tiny_files_ckpt  # noqa: F401, F811 (a pytest fixture)


RATE = 24_000


# the source tree this test imports opencodec from (a scratch copy too), for the child processes
ENV = {**os.environ, "PYTHONPATH": str(Path(opencodec.__file__).parents[1]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def signal_wav(path: Path, seconds: float, peak: float = 0.5, subtype: str = "FLOAT", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    x = np.sin(2 * np.pi * 220 * t) * 0.8 + 0.2 * rng.uniform(-1, 1, len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (peak * x).astype(np.float32), RATE, subtype=subtype)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# -- --channels is bounded -----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["compress", "a.wav", "b.wav"], ["decompress", "a.ecdc"],
                                  ["stream-encode", "--raw", "--rate", "24000"]])
def test_channels_option_has_an_upper_limit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv, "--channels", "100000")
    assert code == 2 and "--channels: must be between 1 and 64 channels, got 100000" in err
    assert build_parser().parse_args([*argv, "--channels", "64"]).channels == 64


# -- long files in a folder take the bounded-memory path -------------------------------------------
def test_folder_long_files_stream_with_the_same_bytes(tmp_path: Path, tiny_files_ckpt: str,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    signal_wav(tmp_path / "in" / "long.wav", 2.5)
    signal_wav(tmp_path / "in" / "short.wav", 0.5, seed=1)
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    calls: list[str] = []
    for name in ("compress_file_streaming", "decompress_file_streaming"):
        real = getattr(codec_files, name)
        monkeypatch.setattr(codec_files, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    assert run(capsys, "compress", tmp_path / "in", tmp_path / "folder", "--model", tiny_files_ckpt, "-q",
               "-j", "1")[0] == 0
    assert calls == ["compress_file_streaming"]  # the long file only
    assert run(capsys, "compress", tmp_path / "in" / "long.wav", tmp_path / "single.ecdc", "--model", tiny_files_ckpt,
               "-q")[0] == 0
    assert (tmp_path / "folder" / "long.ecdc").read_bytes() == (tmp_path / "single.ecdc").read_bytes()

    calls.clear()
    assert run(capsys, "decompress", tmp_path / "folder", "--model", tiny_files_ckpt, "-q", "-j", "1")[0] == 0
    assert calls == ["decompress_file_streaming"]
    assert run(capsys, "decompress", tmp_path / "single.ecdc", "--model", tiny_files_ckpt, "-q")[0] == 0
    assert (tmp_path / "folder" / "long.wav").read_bytes() == (tmp_path / "single.wav").read_bytes()

    # worker processes (-j 2) take it too, with the same bytes
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    plan = plan_compress(tmp_path / "in", tmp_path / "parallel", OutputOptions())
    outcomes = list(run_jobs(plan, compressor, processes=2))
    assert [(o.job.src.name, o.error, o.result.streamed) for o in outcomes] == [  # type: ignore[union-attr]
        ("long.wav", None, True), ("short.wav", None, False)]
    assert (tmp_path / "parallel" / "long.ecdc").read_bytes() == (tmp_path / "single.ecdc").read_bytes()


# -- SIGTERM cleans up like Ctrl-C -------------------------------------------------------------------
def _terminate_self(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("what", ["compress", "decompress", "folder"])
def test_sigterm_leaves_no_temporary_file(what: str, tmp_path: Path, tiny_files_ckpt: str,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = signal_wav(tmp_path / "in" / "a.wav", 0.5)
    assert run(capsys, "compress", src, tmp_path / "a.ecdc", "--model", tiny_files_ckpt, "-q")[0] == 0
    seen: list[int] = []

    def ours(signum: int, frame: object) -> None:  # the embedding program's handler
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        if what == "decompress":  # SIGTERM arrives while the temporary WAV is being written
            real_write = audio.sf.write
            monkeypatch.setattr(audio.sf, "write", lambda *a, **k: (real_write(*a, **k), _terminate_self()))
            argv = ["decompress", tmp_path / "a.ecdc", tmp_path / "out.wav"]
        else:  # SIGTERM arrives while the temporary .ecdc is being written
            monkeypatch.setattr(_files.os, "fsync", _terminate_self)
            argv = (["compress", src, tmp_path / "out.ecdc"] if what == "compress"
                    else ["compress", tmp_path / "in", tmp_path / "out", "-j", "1"])
        code, _, err = run(capsys, *argv, "--model", tiny_files_ckpt, "-q")
        assert signal.getsignal(signal.SIGTERM) is ours  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (code, seen) == (143, []) and err.strip().endswith("error: terminated"), err
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.wav").exists() and not (tmp_path / "out.ecdc").exists()
    assert not (tmp_path / "out" / "a.ecdc").exists()


# -- an .ecdc from a pipe -------------------------------------------------------------------------------
def test_decompress_and_info_read_an_ecdc_from_a_pipe(tmp_path: Path, tiny_files_ckpt: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = signal_wav(tmp_path / "a.wav", 0.5)
    assert run(capsys, "compress", src, tmp_path / "a.ecdc", "--model", tiny_files_ckpt, "-q")[0] == 0
    assert run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "file.wav", "--model", tiny_files_ckpt,
               "-q")[0] == 0
    data = (tmp_path / "a.ecdc").read_bytes()
    child = [sys.executable, "-m", "opencodec"]
    done = subprocess.run([*child, "decompress", "/dev/stdin", str(tmp_path / "pipe.wav"), "--model", tiny_files_ckpt,
                           "-q"], input=data, capture_output=True, timeout=300, env=ENV)
    assert (done.returncode, done.stderr) == (0, b"")
    assert (tmp_path / "pipe.wav").read_bytes() == (tmp_path / "file.wav").read_bytes()
    done = subprocess.run([*child, "info", "/dev/stdin", "--json"], input=data, capture_output=True, timeout=300,
                          env=ENV)
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    assert (fields["model"], fields["size_bytes"], fields["samples"]) == (TINY_FILES_MODEL, len(data), 12000)


# -- --lm-format implies --lm ----------------------------------------------------------------------------
def test_lm_format_implies_lm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    given: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake(*args: object, **kwargs: object) -> None:
        given.update(kwargs)
        raise Stop

    monkeypatch.setattr(codec_files, "FileCompressor", fake)  # imported by the command when it runs
    src = signal_wav(tmp_path / "a.wav", 0.1)
    for extra, expected in (([], (False, "deterministic")), (["--lm-format", "official"], (True, "official")),
                            (["--lm-format", "deterministic"], (True, "deterministic")), (["--lm"], (True, "deterministic"))):
        given.clear()
        with pytest.raises(Stop):
            cli.main(["compress", str(src), str(tmp_path / "a.ecdc"), *extra])
        assert (given["lm"], given["lm_format"]) == expected, extra
    code, out, _ = run(capsys, "compress", "--help")
    assert code == 0 and "(implies --lm)" in " ".join(out.split())


# -- '--' ends the options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,field,value", [
    (["compress", "--", "-lead.wav"], "input", Path("-lead.wav")),
    (["compress", "-b", "3", "--", "-lead.wav", "-out.ecdc"], "output", Path("-out.ecdc")),
    (["compress", "in.wav", "-b", "3", "--", "-out.ecdc"], "output", Path("-out.ecdc")),
    (["decompress", "--", "-lead.ecdc"], "input", Path("-lead.ecdc")),
    (["info", "--json", "--", "-a.ecdc", "-b.ecdc"], "inputs", [Path("-a.ecdc"), Path("-b.ecdc")]),
])
def test_double_dash_ends_options(argv: list[str], field: str, value: object) -> None:
    assert getattr(build_parser().parse_args(argv), field) == value


def test_double_dash_compresses_a_dash_file(tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    signal_wav(tmp_path / "-lead.wav", 0.2)
    assert run(capsys, "compress", "--model", tiny_files_ckpt, "-q", "--", "-lead.wav")[0] == 0
    assert (tmp_path / "-lead.ecdc").is_file()
    code, out, _ = run(capsys, "info", "--", "-lead.ecdc")
    assert code == 0 and TINY_FILES_MODEL in out


# -- broken inputs -----------------------------------------------------------------------------------------
def test_truncated_inputs_are_named(tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    flac = tmp_path / "full.flac"
    sf.write(flac, np.random.default_rng(0).uniform(-0.5, 0.5, RATE * 2).astype(np.float32), RATE)
    whole = flac.read_bytes()
    for cut in (len(whole) // 3, len(whole) // 2, len(whole) - 500):
        (tmp_path / "cut.flac").write_bytes(whole[:cut])
        code, _, err = run(capsys, "compress", tmp_path / "cut.flac", "--model", tiny_files_ckpt, "-f", "-q")
        assert code == 1 and "corrupt or truncated FLAC data" in err, (cut, err)

    wav = signal_wav(tmp_path / "full.wav", 1.0, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(wav.read_bytes()[:44 + 2 * 1000])  # 1000 of 24000 samples
    code, _, err = run(capsys, "compress", tmp_path / "cut.wav", "--model", tiny_files_ckpt, "-q")
    assert code == 0 and "warning:" in err and "truncated: its header says 24000 samples, the file holds 1000" in err
    assert run(capsys, "compress", wav, "--model", tiny_files_ckpt, "-q") == (0, "", "")  # a whole file: no warning


# -- file names that are not UTF-8 -----------------------------------------------------------------------------
def test_non_utf8_file_names(tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = os.fsencode(tmp_path)
    name = os.fsdecode(folder + b"/x\xff\xfe.wav")
    signal_wav(Path(os.fsdecode(folder + b"/plain.wav")), 0.3)
    os.rename(os.fsdecode(folder + b"/plain.wav"), name)
    assert run(capsys, "compress", name, "--model", tiny_files_ckpt, "-q") == (0, "", "")
    ecdc = os.fsdecode(folder + b"/x\xff\xfe.ecdc")
    assert run(capsys, "decompress", ecdc, os.fsdecode(folder + b"/y\xff.wav"), "--model", tiny_files_ckpt,
               "-q") == (0, "", "")
    assert run(capsys, "compress", name, os.fsdecode(folder + b"/z\xff.flac"), "--model", tiny_files_ckpt,
               "-q") == (0, "", "")
    assert read_audio(os.fsdecode(folder + b"/z\xff.flac"))[0].shape == (1, int(0.3 * RATE))


# -- input louder than full scale --------------------------------------------------------------------------
def test_louder_than_full_scale_input_warns(tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    loud = signal_wav(tmp_path / "loud.wav", 0.5, peak=3.0)
    peak = float(np.abs(sf.read(loud)[0]).max())
    code, _, err = run(capsys, "compress", loud, "--model", tiny_files_ckpt, "-q")
    assert code == 0 and f"warning: {loud}: input peak amplitude {peak:.4f} exceeds full scale 1.0" in err
    assert run(capsys, "compress", signal_wav(tmp_path / "ok.wav", 0.5, peak=1.0, subtype="PCM_16"),
               "--model", tiny_files_ckpt, "-q") == (0, "", "")
    # the long-file path: a Python warning from the file-level API, reported the same way
    long = signal_wav(tmp_path / "long.wav", 1.5, peak=2.0)
    model = codec_files.load_model(tiny_files_ckpt)
    with pytest.warns(UserWarning, match=r"input peak amplitude 1\.9\d{3} exceeds full scale 1\.0"):
        compress_file_streaming(model, long, tmp_path / "direct.ecdc", 1.5)
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    code, _, err = run(capsys, "compress", long, "--model", tiny_files_ckpt, "-q")
    assert code == 0 and "warning:" in err and "input peak amplitude 1.9" in err
    # both paths measure what the codec sees (the audio at its rate and channels): a stereo
    # float file whose channels cancel in the mono down-mix warns on neither
    mono = sf.read(signal_wav(tmp_path / "m.wav", 1.5, peak=1.5))[0]
    cancel = tmp_path / "cancel.wav"
    sf.write(cancel, np.stack([mono, -mono], axis=1).astype(np.float32), RATE, subtype="FLOAT")
    for minimum in (1.0, 60.0):  # the long-file path, then the whole-file path
        monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", minimum)
        code, _, err = run(capsys, "compress", cancel, tmp_path / f"c{minimum}.ecdc", "--model", tiny_files_ckpt, "-q")
        assert (code, err) == (0, ""), minimum


# -- a folder's OUT is a folder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command,out", [("compress", "x.wav"), ("compress", "x.ecdc"), ("decompress", "x.flac")])
def test_folder_with_a_file_like_out_is_refused(command: str, out: str, tmp_path: Path, tiny_files_ckpt: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    signal_wav(tmp_path / "in" / "a.wav", 0.2)
    assert run(capsys, "compress", tmp_path / "in", "--model", tiny_files_ckpt, "-q")[0] == 0
    code, _, err = run(capsys, command, tmp_path / "in", tmp_path / out, "--model", tiny_files_ckpt, "-q")
    assert code == 2 and f"but {tmp_path / out} ends in {Path(out).suffix}" in err
    assert not (tmp_path / out).exists()
    (tmp_path / out).mkdir()  # a folder that has that name already is a folder
    assert run(capsys, command, tmp_path / "in", tmp_path / out, "--model", tiny_files_ckpt, "-q")[0] == 0


# -- why an entropy-coded file is larger -------------------------------------------------------------------------
def test_larger_entropy_coded_file_names_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)  # half a second the bundled entropy model codes into fewer bytes than plain
    one = tmp_path / "one.wav"
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE) + 0.05 * rng.standard_normal(RATE // 2)
    sf.write(one, x.astype(np.float32), RATE, subtype="FLOAT")
    code, _, err = run(capsys, "compress", one, "-b", "1.5", "--lm", "-q")  # the bundled codec and entropy model
    assert code == 0 and "is larger than plain coding" in err
    assert "header" in err and "predicts these codes poorly" not in err

    def result(size: int, plain: int, extra: int) -> FileResult:
        return FileResult(Path("a.wav"), Path("a.ecdc"), 1.0, size_bytes=size, plain_bytes=plain, header_extra=extra)

    with warnings.catch_warnings():
        cli_codec._warn_larger([result(5000, 4000, 86)], 1)  # a long input coded into more bytes
    assert "predicts these codes poorly" in capsys.readouterr().err


# -- a round trip to no samples -----------------------------------------------------------------------------------
def test_round_trip_to_no_samples_warns(tmp_path: Path, tiny_files_ckpt: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.1], dtype=np.float32), RATE)
    code, _, err = run(capsys, "compress", one, tmp_path / "one1k.wav", "--rate", "1000", "--model", tiny_files_ckpt,
                       "-q")
    assert code == 0 and "warning:" in err and "the output holds no samples" in err
    assert sf.info(tmp_path / "one1k.wav").frames == 0


# -- '-' points at the stream commands -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,hint", [(["compress", "-", "o.ecdc"], "stream-encode"),
                                       (["compress", "a.wav", "-"], "stream-encode"),
                                       (["decompress", "-", "o.wav"], "stream-decode")])
def test_dash_points_at_the_stream_commands(argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and hint in err and "is not a file" in err
    assert ("/dev/stdin" in err) == (argv[0] == "decompress")


# -- outputs that are not regular files ------------------------------------------------------------------------------
def test_fifo_output_is_refused_and_a_symlink_is_replaced(tmp_path: Path, tiny_files_ckpt: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = signal_wav(tmp_path / "a.wav", 0.2)
    os.mkfifo(tmp_path / "fifo.ecdc")
    code, _, err = run(capsys, "compress", src, tmp_path / "fifo.ecdc", "--model", tiny_files_ckpt, "-q", "-f")
    assert code == 1 and "is not a regular file (a FIFO, socket or device)" in err
    assert (tmp_path / "fifo.ecdc").is_fifo()
    # -f onto a symbolic link replaces the link (atomic rename), as --help says; the target stays
    (tmp_path / "target.ecdc").write_bytes(b"old")
    (tmp_path / "link.ecdc").symlink_to(tmp_path / "target.ecdc")
    assert run(capsys, "compress", src, tmp_path / "link.ecdc", "--model", tiny_files_ckpt, "-q", "-f")[0] == 0
    assert not (tmp_path / "link.ecdc").is_symlink() and (tmp_path / "target.ecdc").read_bytes() == b"old"
    code, out, _ = run(capsys, "compress", "--help")
    assert code == 0 and "symbolic link is replaced" in " ".join(out.split())


# -- audio.py: clear errors for the audio helpers ------------------------------------------------------------------
def test_audio_helpers_name_a_numpy_array_and_a_zero_rate(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"convert_audio expects a torch.Tensor, got numpy.ndarray.*torch.from_numpy"):
        convert_audio(np.zeros((1, 10), dtype=np.float32), 8000, 16000, 1)
    with pytest.raises(TypeError, match=r"write_audio expects a torch.Tensor, got numpy.ndarray"):
        write_audio(tmp_path / "w.wav", np.zeros((1, 10), dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="sample_rate must be a positive whole number of Hz, got 0"):
        write_audio(tmp_path / "w.wav", torch.zeros(1, 10), 0)
    assert list(tmp_path.iterdir()) == []
