"""Folder runs with worker processes and their outputs: the sizes module, dead and killed
workers (placement log, temporary files, another run's outputs), round trips that cannot write,
paths given for files, transposed audio and files named ``.mp3`` that are not MP3."""

from __future__ import annotations

import importlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import multiprocessing as mp
import numpy as np
import pytest
import soundfile as sf
import torch
import typing as tp

import opencodec
from opencodec import _files, codec_files
from opencodec._files import write_bytes_atomic
from opencodec.codec_files import FileCompressor, OutputOptions
from opencodec.compress import compress, compress_to_file, decompress, decompress_from_file
from opencodec.errors import InvalidAudioError, OutputError
from opencodec.file_jobs import Job, Plan, run_jobs
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import save_model

from official_ref import random_codebooks


RATE = 24_000


OTHER = b"placed by another run meanwhile"


SRC = str(Path(opencodec.__file__).parents[1])  # the package under test, for child interpreters


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


@pytest.fixture(autouse=True)
def _fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "_SWEPT", set())


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    """A tiny causal 24 kHz mono codec."""
    torch.manual_seed(0)
    return random_codebooks(EncodecModel(EncodecConfig(name="tiny_workers", n_filters=4, dimension=16, lstm=1,
                                                       n_q=4, target_bandwidths=[1.5, 3.0])), 0).eval()


@pytest.fixture(scope="module")
def tiny_ckpt(tiny: EncodecModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_model(tiny, tmp_path_factory.mktemp("tiny") / "tiny.safetensors"))


def _wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.uniform(-1, 1, int(seconds * RATE))).astype(np.float32), RATE, subtype="PCM_16")
    return path


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _tag(pid: int) -> str:
    return f"{_files._host()}-{_files._pid_namespace()}-{pid}"


# -- 1: the sizes of entropy-coded files in their own module ------------------------------------------
def test_sizes_have_their_own_module_and_stay_importable_from_codec_files() -> None:
    from opencodec import ecdc_sizes
    from opencodec.codec_files import body_overhead, header_extra, plain_size

    assert (plain_size, header_extra, body_overhead) == (ecdc_sizes.plain_size, ecdc_sizes.header_extra,
                                                         ecdc_sizes.body_overhead)
    assert len(Path(codec_files.__file__).read_text(encoding="utf-8").splitlines()) < 500


# -- 2: a dead worker's lost jobs: only this run's outputs are removed --------------------------------
class _Racing:
    """Jobs of a folder run. ``raced``: a second run places the output (a real placement, in
    another process), then this worker is killed; run again, it finds the output there, as a
    compressor without -f does. ``placed-then-dies``: places its own output, then is killed;
    run again, it places it anew (only possible when the first one was removed). ``dies``: is
    killed. Each job runs its dying part once (a mark file)."""

    def __init__(self, marks: Path):
        self.marks = marks

    def __call__(self, job: Job, folder: bool) -> str:
        mark = self.marks / job.src.name
        first = not mark.exists()
        mark.touch()
        if job.src.name == "raced" and first:
            subprocess.run([sys.executable, "-c", "import sys; from opencodec._files import write_bytes_atomic; "
                            "write_bytes_atomic(sys.argv[1], sys.argv[2].encode(), overwrite=False)",
                            str(job.dst), OTHER.decode()], check=True, env={**os.environ, "PYTHONPATH": SRC})
            os.kill(os.getpid(), signal.SIGKILL)
        if job.src.name == "placed-then-dies" and first:
            write_bytes_atomic(job.dst, b"first", overwrite=False)
            os.kill(os.getpid(), signal.SIGKILL)
        if job.src.name == "dies" and first:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        write_bytes_atomic(job.dst, f"mine {job.src.name}".encode(), overwrite=False)  # "already exists"
        return job.src.name


def _plan(tmp_path: Path, names: list[str]) -> Plan:
    (tmp_path / "out").mkdir()
    return Plan([Job(tmp_path / n, tmp_path / "out" / f"{n}.out") for n in names], folder=True)


def test_a_dead_workers_job_keeps_the_file_another_run_placed_meanwhile(tmp_path: Path) -> None:
    """The output did not exist at the start; a second run placed it before the worker died. It
    is that run's file: kept, and the job run again reports it as existing (was: deleted)."""
    (tmp_path / "marks").mkdir()
    plan = _plan(tmp_path, ["a", "raced", "b"])
    outcomes = {o.job.src.name: o for o in run_jobs(plan, _Racing(tmp_path / "marks"), processes=2)}
    out = tmp_path / "out"
    assert (out / "raced.out").read_bytes() == OTHER
    assert "already exists" in str(outcomes["raced"].error)
    assert [outcomes[n].result for n in ("a", "b")] == ["a", "b"]
    assert (out / "a.out").read_bytes() == b"mine a" and (out / "b.out").read_bytes() == b"mine b"
    assert _hidden(out) == []


def test_a_dead_workers_own_placed_output_is_removed_and_written_again(tmp_path: Path) -> None:
    """What this run's worker placed before it died is recorded (the placement log) and removed,
    so that the job runs again cleanly."""
    (tmp_path / "marks").mkdir()
    plan = _plan(tmp_path, ["placed-then-dies", "c"])
    outcomes = {o.job.src.name: o for o in run_jobs(plan, _Racing(tmp_path / "marks"), processes=2)}
    assert outcomes["placed-then-dies"].error is None and outcomes["c"].error is None
    assert (tmp_path / "out" / "placed-then-dies.out").read_bytes() == b"mine placed-then-dies"
    assert _hidden(tmp_path / "out") == []


def test_a_dead_workers_clean_up_keeps_another_runs_temporary_file(tmp_path: Path) -> None:
    """After a worker's death the temporary files of its lost jobs go, but not the temporary
    file of the same output that a second run, still running, is writing (was: removed, so that
    run's output could not be placed); one of a run that has ended goes too."""
    (tmp_path / "marks").mkdir()
    plan = _plan(tmp_path, ["dies", "d"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / "out" / f".dies.out.{_tag(other.pid)}.abcd1234.tmp"
        dead = tmp_path / "out" / f".dies.out.{_tag(_ended_pid())}.abcd1234.tmp"
        for path in (live, dead):
            path.write_bytes(b"partial")
        outcomes = {o.job.src.name: o for o in run_jobs(plan, _Racing(tmp_path / "marks"), processes=2)}
        assert outcomes["dies"].error is None and outcomes["d"].error is None
        assert live.read_bytes() == b"partial" and not dead.exists()
        assert _hidden(tmp_path / "out") == [live.name]
    finally:
        other.kill()
        other.wait()


def test_the_placement_log_reads_back_what_was_placed(tmp_path: Path) -> None:
    """``+`` then ``-`` (a placement that failed) cancels; a line cut short by a kill is skipped."""
    log = tmp_path / "log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        _files.record_placements(fd)
        write_bytes_atomic(tmp_path / "a", b"a", overwrite=False)
        with pytest.raises(OutputError, match="already exists"):
            write_bytes_atomic(tmp_path / "a", b"again", overwrite=False)
    finally:
        _files.record_placements(None)
        os.close(fd)
    data = log.read_bytes()
    assert len(data.splitlines()) == 3  # +a, then + and - of the failed one
    assert _files.recorded_placements(data + b"+12") == {_files.file_identity(tmp_path / "a")}


# -- 3: a long round trip's temporary .ecdc --------------------------------------------------------
def _round_trip_then_killed(ckpt: str, src: Path, dst: Path, tmpdir: Path) -> None:
    """In a child process: a long round trip killed (``kill -9``) while it decodes its .ecdc."""
    tempfile.tempdir = str(tmpdir)
    codec_files.STREAMING_MIN_SECONDS = 0.2
    codec_files.decompress_file_streaming = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    FileCompressor(ckpt, 1.5, OutputOptions())(Job(src, dst))


def test_a_killed_round_trip_leaves_nothing_in_tmp_and_the_next_write_removes_its_ecdc(
        tmp_path: Path, tiny_ckpt: str) -> None:
    src, out, tmpdir = _wav(tmp_path / "in.wav"), tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmpdir.mkdir()
    child = mp.get_context("fork").Process(target=_round_trip_then_killed,
                                           args=(tiny_ckpt, src, out / "rt.wav", tmpdir))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    assert list(tmpdir.iterdir()) == []  # was: /tmp/opencodec-round-trip-*/coded.ecdc, never removed
    [left] = _hidden(out)
    assert re.fullmatch(rf"\.rt\.wav\.{re.escape(_tag(child.pid))}\.[^.]+\.tmp", left)
    assert (out / left).read_bytes()[:4] == b"ECDC"  # the round trip's .ecdc, complete
    write_bytes_atomic(out / "next.bin", b"x")  # the next write into that folder removes it
    assert sorted(p.name for p in out.iterdir()) == ["next.bin"]


def test_a_worker_killed_in_a_round_trip_leaves_no_temporary_file(tmp_path: Path, tiny_ckpt: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``-j 2``: the worker killed while decoding a long round trip's .ecdc; its parent removes
    that .ecdc (a dead writer's temporary file) and the file runs again; nothing in /tmp."""
    srcs = [_wav(tmp_path / "in" / f"{n}.wav") for n in ("a", "b")]
    out, tmpdir, mark = tmp_path / "out", tmp_path / "tmp", tmp_path / "killed-once"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.2)
    real = codec_files.decompress_file_streaming

    def killed_once(*args: tp.Any, **kwargs: tp.Any) -> int:
        if not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec_files, "decompress_file_streaming", killed_once)
    plan = Plan([Job(src, out / f"{src.stem}.wav") for src in srcs], folder=True)
    outcomes = list(run_jobs(plan, FileCompressor(tiny_ckpt, 1.5, OutputOptions()), processes=2))
    assert [o.error for o in outcomes] == [None, None] and all(o.result.streamed for o in outcomes)
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav"]
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("opencodec-round-trip")] == []


def test_a_round_trip_that_cannot_write_names_the_output(tmp_path: Path, tiny_ckpt: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An error writing the temporary .ecdc names the output, not the hidden temporary path."""
    def full(model: tp.Any, src: Path, dst: Path, *args: tp.Any, **kwargs: tp.Any) -> int:
        raise OutputError(f"cannot write {dst}: No space left on device")

    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.2)
    monkeypatch.setattr(codec_files, "compress_file_streaming", full)
    dst = tmp_path / "rt.wav"
    with pytest.raises(OutputError) as caught:
        FileCompressor(tiny_ckpt, 1.5, OutputOptions())(Job(_wav(tmp_path / "in.wav"), dst))
    assert str(caught.value) == f"cannot write {dst}: No space left on device"
    assert _hidden(tmp_path) == [] and not dst.exists()


def test_temporary_path_is_in_the_stale_temporary_scheme(tmp_path: Path) -> None:
    with _files.temporary_path(tmp_path / "x.wav") as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        assert re.fullmatch(rf"\.x\.wav\.{re.escape(_tag(os.getpid()))}\.[^.]+\.tmp", tmp.name)
        tmp.write_bytes(b"coded")
        assert _files.temporary_in_use(tmp)  # this process's: kept by a sweep
    assert not tmp.exists()


# -- 4: the Python API ------------------------------------------------------------------------------
def test_decompress_from_file_names_a_path_given_for_a_file(tmp_path: Path, tiny: EncodecModel) -> None:
    from opencodec.model_registry import shown  # a long path cut with its length

    path = tmp_path / "x.ecdc"
    path.write_bytes(compress(tiny, torch.zeros(1, 2400), 1.5))
    for given in (str(path), path):
        with pytest.raises(TypeError) as caught:
            decompress_from_file(given)  # type: ignore[arg-type]
        assert str(caught.value) == (f"expected a binary file object open for reading, got "
                                     f"{type(given).__name__} {shown(given)}: a path is not opened here; "
                                     f"pass open(path, 'rb')")
    with pytest.raises(TypeError, match=r"to decode the bytes of a \.ecdc file, use decompress\(data\)"):
        decompress_from_file(path.read_bytes())  # type: ignore[arg-type]
    with open(path, encoding="latin-1") as text, pytest.raises(TypeError, match=r"text-mode file .*open\(path, 'rb'\)"):
        decompress_from_file(text)  # type: ignore[arg-type]
    with open(tmp_path / "w.bin", "wb") as fo, pytest.raises(TypeError, match="not open for reading"):
        decompress_from_file(fo)  # type: ignore[arg-type]
    with open(path, "rb") as fi:  # the right call still works
        assert decompress_from_file(fi, tiny)[0].shape == (1, 2400)


def test_compress_to_file_names_a_path_given_for_a_file(tmp_path: Path, tiny: EncodecModel) -> None:
    path = tmp_path / "y.ecdc"
    with pytest.raises(TypeError, match=r"open for writing, got str .*: a path is not opened here; "
                                        r"pass open\(path, 'wb'\)"):
        compress_to_file(tiny, torch.zeros(1, 2400), str(path), 1.5)  # type: ignore[arg-type]
    with open(tmp_path / "t.txt", "w") as text, pytest.raises(TypeError, match=r"text-mode .*open\(path, 'wb'\)"):
        compress_to_file(tiny, torch.zeros(1, 2400), text, 1.5)  # type: ignore[arg-type]
    (tmp_path / "r.bin").write_bytes(b"")
    with open(tmp_path / "r.bin", "rb") as fi, pytest.raises(TypeError, match="not open for writing"):
        compress_to_file(tiny, torch.zeros(1, 2400), fi, 1.5)
    assert not path.exists()
    fo = io.BytesIO()
    assert compress_to_file(tiny, torch.zeros(1, 2400), fo, 1.5) == len(fo.getvalue()) > 0


def test_transposed_audio_is_named_as_such(tiny: EncodecModel) -> None:
    with pytest.raises(InvalidAudioError) as caught:
        compress(tiny, torch.zeros(24_000, 1), 1.5)
    assert str(caught.value) == ("model tiny_workers expects 1 channel(s), got 24000; the audio looks transposed: "
                                 "shape (24000, 1) reads as [T, C] (samples first), but [C, T] (channels, "
                                 "samples) is expected: pass wav.T")
    with pytest.raises(InvalidAudioError) as caught:  # two samples of stereo: not a transposition
        compress(tiny, torch.zeros(2, 1), 1.5)
    assert str(caught.value) == "model tiny_workers expects 1 channel(s), got 2"


def test_other_mix_ups_say_what_to_do(tmp_path: Path, tiny: EncodecModel) -> None:
    with pytest.raises(InvalidAudioError, match=r"got str; to compress a file, read it first: .*read_audio\(path\)"):
        compress(tiny, str(tmp_path / "in.wav"), 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match=r"got ndarray; convert it with torch\.from_numpy"):
        compress(tiny, np.zeros((1, 2400), np.float32), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a tensor is audio: the model comes first, compress\(model, wav"):
        compress(torch.zeros(1, 2400), tiny, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"decompress_from_file\(open\(path, 'rb'\)\)"):
        decompress(str(tmp_path / "x.ecdc"))  # type: ignore[arg-type]


def test_docstrings_define_the_shapes() -> None:
    compress_module = importlib.import_module("opencodec.compress")  # (the package's name is the function)
    for function in (compress_module.compress, compress_module.compress_to_file, compress_module.decompress,
                     compress_module.decompress_from_file):
        doc = function.__doc__ or ""
        assert "[C, al]" not in doc and "[C, T]" in doc and "Hz" in doc, function.__name__
    assert "T = the header's audio length in samples" in (compress_module.decompress_from_file.__doc__ or "")


def test_compress_of_a_non_mp3_named_mp3_says_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """libsndfile hands a ``.mp3`` it cannot place to libmpg123, which printed "Note: Illegal
    Audio-MPEG-Header" / "Trying to resync" on stderr from compress's header probes; now only
    our one-line error is said, and nothing is written."""
    from opencodec import cli

    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"this is no audio at all " * 200)
    assert cli.main(["compress", str(fake), str(tmp_path / "out.ecdc")]) == 1
    err = capfd.readouterr().err
    assert err == (f"opencodec: error: cannot read audio file {fake}: not a decodable audio file (named .mp3, "
                   "but it holds no MPEG audio frame or ID3 tag, nor another audio format)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mp3"]
