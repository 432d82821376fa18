"""A process killed outright leaves its temporary output behind; the next write into that
folder removes it (``_files.atomic_output``), and nothing that may still be in use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opencodec import _files
from opencodec._files import atomic_output, write_bytes_atomic


def ended_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(autouse=True)
def fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "_SWEPT", set(), raising=False)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from opencodec._files import atomic_output
        with atomic_output({str(tmp_path / 'a.ecdc')!r}) as tmp:
            tmp.write_bytes(b"partial")
            print(tmp, flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    left = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert left.is_file() and left.name.startswith(".a.ecdc.") and f"-{child.pid}." in left.name
    write_bytes_atomic(tmp_path / "b.ecdc", b"new")
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.ecdc"]


def test_temporaries_that_may_be_in_use_are_kept(tmp_path: Path) -> None:
    host = f"{_files._host()}-{_files._pid_namespace()}"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [f".x.wav.{host}-{live.pid}.abcd1234.tmp",           # its writer still runs
                f".x.wav.{host}-{os.getpid()}.abcd1234.tmp",        # this process's own
                f".x.wav.other-{host}-{ended_pid()}.abcd1234.tmp",  # another machine's
                f".x.wav.{_files._host()}-1{_files._pid_namespace()}-{ended_pid()}.abcd1234.tmp",  # another pid namespace's
                f".x.wav.{_files._host()}-{ended_pid()}.abcd1234.tmp",  # no pid namespace recorded
                ".x.wav.abcd1234.tmp",                              # no owner recorded
                "x.wav.tmp"]                                        # not a temporary output
        gone = [f".x.wav.{host}-{ended_pid()}.abcd1234.tmp", f".y.ecdc.{host}-{ended_pid()}.zz_9q.tmp"]
        for name in keep + gone:
            (tmp_path / name).write_bytes(b"x")
        with atomic_output(tmp_path / "z.wav") as tmp:
            tmp.write_bytes(b"done")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["z.wav"])
    finally:
        live.kill()
        live.wait()


def test_a_folder_is_swept_once_per_process(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "a", b"1")
    late = tmp_path / f".q.{_files._host()}-{_files._pid_namespace()}-{ended_pid()}.abcd1234.tmp"
    late.write_bytes(b"x")
    write_bytes_atomic(tmp_path / "b", b"2")
    assert late.exists()  # the folder was swept at the first write only


def test_compress_into_a_folder_removes_a_killed_runs_temporary_file(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "in.wav", np.zeros(2400, dtype=np.float32), 24000)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".in.ecdc.{_files._host()}-{_files._pid_namespace()}-{ended_pid()}.abcd1234.tmp"
    stale.write_bytes(b"partial")
    run = subprocess.run([sys.executable, "-m", "opencodec", "-q", "compress", str(tmp_path / "in.wav"),
                          str(out / "in.ecdc")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["in.ecdc"]
