"""Folders in several processes: ``compress``/``decompress -j N`` and ``file_jobs.run_jobs``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import cli, file_jobs
from opencodec._files import write_bytes_atomic
from opencodec.file_jobs import Job, Plan, run_jobs


def _write(path: Path, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(24_000 * seconds)) / 24_000
    x = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.03 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), 24_000)


def _run(capsys: pytest.CaptureFixture[str], *argv: tp.Any) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in argv])
    return code, sorted(capsys.readouterr().err.splitlines())


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_jobs_give_the_same_files_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[int] = []
    in_processes = file_jobs._run_in_processes

    def counted(plan: Plan, work: tp.Any, processes: int) -> tp.Iterator[tp.Any]:
        pools.append(processes)
        return in_processes(plan, work, processes)

    monkeypatch.setattr(file_jobs, "_run_in_processes", counted)
    src = tmp_path / "in"
    for i, seconds in enumerate([0.3, 0.5, 0.2, 0.4]):
        _write(src / ("sub" if i == 3 else "") / f"s{i}.wav", seconds, i)
    (src / "y").mkdir()
    (src / "y" / "b.wav").write_bytes(b"RIFF not really")
    code1, err1 = _run(capsys, "compress", src, tmp_path / "e1", "-q", "-j", "1")
    code2, err2 = _run(capsys, "compress", src, tmp_path / "e2", "-q", "-j", "2")
    assert code1 == code2 == 1 and err1 == err2 and any("b.wav" in line for line in err2)
    assert pools == [2]
    assert _files(tmp_path / "e2") == _files(tmp_path / "e1") == [Path("s0.ecdc"), Path("s1.ecdc"),
                                                                  Path("s2.ecdc"), Path("sub/s3.ecdc")]
    for name in _files(tmp_path / "e1"):
        assert (tmp_path / "e2" / name).read_bytes() == (tmp_path / "e1" / name).read_bytes()
    assert _run(capsys, "decompress", tmp_path / "e1", tmp_path / "w1", "-q", "-j", "1")[0] == 0
    assert _run(capsys, "decompress", tmp_path / "e1", tmp_path / "w3", "-q", "-j", "3")[0] == 0
    assert _files(tmp_path / "w3") == _files(tmp_path / "w1") and pools == [2, 3]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 7}, raising=False)
    assert _run(capsys, "compress", src, tmp_path / "e4", "-q")[0] == 1  # default: one per core
    assert pools == [2, 3, 3] and _files(tmp_path / "e4") == _files(tmp_path / "e1")
    for name in _files(tmp_path / "w1"):  # one thread in the workers: the last bit may differ
        a, b = (sf.read(tmp_path / d / name, dtype="int16")[0].astype(int) for d in ("w1", "w3"))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1


class _Unpicklable(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.callback = lambda: None  # a lambda cannot be pickled


class _TwoArgs(Exception):
    def __init__(self, first: str, second: str):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{first} and {second}")


class _WhereAmI:
    def __call__(self, job: Job, folder: bool) -> tuple[str, int, int]:
        if job.src.name == "bad":
            raise _Unpicklable("cannot travel")
        if job.src.name == "die":  # killed half-way through writing its output
            (job.dst.parent / f".{job.dst.name}.half.tmp").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        if job.src.name == "writes-then-waits":  # its output is complete when the other worker dies
            if job.dst.exists():
                raise FileExistsError(f"output {job.dst} already exists")
            write_bytes_atomic(job.dst, b"complete", overwrite=False)  # as real jobs place outputs
            time.sleep(1.0)
        if job.src.name == "dies-soon":
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)
        if job.src.name == "two-args":
            raise _TwoArgs("a", "b")
        if job.src.name == "missing":
            raise FileNotFoundError(2, "No such file or directory", str(job.src))
        return job.src.name, os.getpid(), torch.get_num_threads()


def test_run_jobs_in_processes(tmp_path: Path) -> None:
    names = ["a", "bad", "c", "missing", "e", "f"]
    plan = Plan([Job(tmp_path / n, tmp_path / f"{n}.out") for n in names], folder=True)
    plan.jobs[4].conflict = tmp_path / "a"
    outcomes = list(run_jobs(plan, _WhereAmI(), processes=2))
    assert [o.job.src.name for o in outcomes] == names  # the plan's order
    done = [o.result for o in outcomes if o.result is not None]
    assert [r[0] for r in done] == ["a", "c", "f"]
    assert all(pid != os.getpid() and threads == 1 for _, pid, threads in done)  # in workers, one thread
    errors = {o.job.src.name: o.error for o in outcomes if o.error is not None}
    assert isinstance(errors["bad"], RuntimeError) and str(errors["bad"]) == "_Unpicklable: cannot travel"
    assert isinstance(errors["missing"], FileNotFoundError) and errors["missing"].filename == str(tmp_path / "missing")
    assert isinstance(errors["e"], FileExistsError) and "would also be written" in str(errors["e"])


def test_a_dying_worker_fails_only_its_own_file(tmp_path: Path) -> None:
    """A worker killed (out of memory, say) breaks the pool; the files not finished run again
    one at a time, so that only the file that kills its worker again fails, and no temporary
    output is left behind."""
    names = ["a", "b", "die", "c", "two-args", "d", "e", "f"]
    plan = Plan([Job(tmp_path / n, tmp_path / f"{n}.out") for n in names], folder=True)
    outcomes = list(run_jobs(plan, _WhereAmI(), processes=2))
    assert [o.job.src.name for o in outcomes] == names
    failed = {o.job.src.name: o.error for o in outcomes if o.error is not None}
    assert sorted(failed) == ["die", "two-args"]
    assert isinstance(failed["die"], RuntimeError) and "worker process died" in str(failed["die"])
    assert str(failed["two-args"]) == "_TwoArgs: a and b"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_job_whose_outcome_was_lost_runs_again_cleanly(tmp_path: Path) -> None:
    """A job that had written its output when another worker died: its outcome is lost with
    the pool, so it runs again, and the output this run wrote is removed first."""
    names = ["writes-then-waits", "dies-soon", "g", "h"]
    plan = Plan([Job(tmp_path / n, tmp_path / f"{n}.out") for n in names], folder=True)
    outcomes = list(run_jobs(plan, _WhereAmI(), processes=2))
    assert [o.job.src.name for o in outcomes] == names
    assert [o.job.src.name for o in outcomes if o.error is not None] == ["dies-soon"]
    assert (tmp_path / "writes-then-waits.out").read_bytes() == b"complete"


def test_one_file_or_one_process_runs_here(tmp_path: Path) -> None:
    single = Plan([Job(tmp_path / "a", tmp_path / "a.out")], folder=False)
    (outcome,) = run_jobs(single, _WhereAmI(), processes=4)
    assert outcome.result is not None and outcome.result[1] == os.getpid()
    folder = Plan([Job(tmp_path / n, tmp_path / f"{n}.out") for n in "ab"], folder=True)
    assert {o.result[1] for o in run_jobs(folder, _WhereAmI()) if o.result} == {os.getpid()}


def _compress_until_one_is_written(tmp_path: Path, files: int, sigint: str) -> tuple[subprocess.Popen, Path]:
    """``compress -j 2`` of ``files`` 30 s files in a child process (its own process group)
    whose SIGINT handler is ``sigint``, returned once its first output exists."""
    src = tmp_path / "in"
    for i in range(files):
        _write(src / f"s{i}.wav", 30.0, i)
    out = tmp_path / "out"
    start = (f"import signal, sys; signal.signal(signal.SIGINT, {sigint}); "
             "sys.argv = ['opencodec'] + sys.argv[1:]; from opencodec.cli import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", start, "compress", str(src), str(out), "-j", "2", "-q"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.ecdc"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, out


def test_ctrl_c_stops_every_process_at_once(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) during ``compress -j 2``: exit 130 within seconds,
    no process left, no temporary file, and the files not started are not written."""
    # Python's Ctrl-C handler in the child (a background shell may have SIGINT ignored)
    proc, out = _compress_until_one_is_written(tmp_path, 8, "signal.default_int_handler")
    started = len(list(out.glob("*.ecdc")))
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 30  # the workers are gone too (polled: a busy machine is slow)
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    written = [p.name for p in out.iterdir()]
    assert all(name.endswith(".ecdc") and not name.startswith(".") for name in written)
    # the files being encoded at the signal are dropped, and the one queued next never starts
    # (at most one more may have finished between the look and the signal)
    assert started <= len(written) <= started + 1


def test_a_background_job_ignoring_ctrl_c_goes_on(tmp_path: Path) -> None:
    """A parent that ignores SIGINT (a background job of a script): its workers do too."""
    proc, out = _compress_until_one_is_written(tmp_path, 4, "signal.SIG_IGN")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == ""
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}.ecdc" for i in range(4)]
