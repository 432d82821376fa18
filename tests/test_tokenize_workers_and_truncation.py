"""``opencodec tokenize`` processes and bad inputs: SIGTERM, killed workers, one file under one id
given twice, warnings from rank 0 only, truncated files (also in loader processes) and the help."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import opencodec
from opencodec.tokens import InputError, job, list_inputs, tokenize, TokenizeOptions
from opencodec.tokens.plan import WorkerPlace


SRC = Path(opencodec.__file__).resolve().parents[1]  # the package under test, also in subprocesses


#: Runs one command with the library call replaced by one that SIGTERMs its own process.
_SIGTERM_SELF = """
import os, signal, sys, time
import opencodec.tokens as tokens
def stop(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    raise SystemExit("SIGTERM was not turned into an interrupt")
tokens.tokenize = tokens.detokenize = stop
from opencodec.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["tokenize", "in", "--out", "tok"], ["detokenize", "tok", "--out", "audio"]])
def test_sigterm_exits_143_with_one_line(command: list[str], tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _SIGTERM_SELF, *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, (done.returncode, done.stderr)
    assert done.stderr.strip() == "opencodec: error: terminated"


def _die(options: TokenizeOptions, plan: object, model: object, place: WorkerPlace, device: object,
         report: object) -> None:
    """run_worker of the forked workers below: rank 1 is killed as the OOM killer would, rank 0
    writes its pid and works on (for 15 s)."""
    if place.rank == 1:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    (Path(options.out) / "rank0.pid").write_text(str(os.getpid()))
    for _ in range(150):
        report(0.0, 0, 0)  # keeps the parent's queue busy, as a working worker does
        time.sleep(0.1)


def test_a_killed_worker_is_named_and_the_others_stop_at_once(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "run_worker", _die)
    options = TokenizeOptions(inputs=[], out=tmp_path, device="cpu", workers=2)
    start = time.monotonic()
    with pytest.raises(job.OpenCodecError, match=r"^a tokenize worker process was killed by SIGKILL "
                       r"\(out of memory\?\); the shards finished so far are kept: run the same command "
                       r"again to finish the job$"):
        job._run_processes(options, None, [WorkerPlace(0, 2), WorkerPlace(1, 2)], object(), lambda *a: None)
    assert time.monotonic() - start < 4.5  # it waited for the busy worker (or 5 s for it) before
    pid = int((tmp_path / "rank0.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped


def test_worker_death_words() -> None:
    assert job.worker_death(-signal.SIGTERM).startswith("a tokenize worker process was killed by SIGTERM; ")
    assert job.worker_death(3).startswith("a tokenize worker process exited with status 3; ")


def _wav(path: Path, seconds: float = 0.2, rate: int = 24000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate)
    return path


@pytest.mark.parametrize("how", ["folder twice", "file twice", "manifest row twice", "list line twice"])
def test_one_file_given_twice_under_one_id_is_named(how: str, tmp_path: Path) -> None:
    audio = _wav(tmp_path / "data" / "a.wav")
    if how == "folder twice":
        inputs, source = [tmp_path / "data", tmp_path / "data"], f"folder {tmp_path / 'data'}"
    elif how == "file twice":
        inputs, source = [audio, audio], f"audio file {audio}"
    elif how == "manifest row twice":
        (tmp_path / "m.jsonl").write_text('{"path": "data/a.wav"}\n{"path": "data/a.wav"}\n')
        inputs, source = [tmp_path / "m.jsonl"], f"manifest {tmp_path / 'm.jsonl'}"
    else:
        (tmp_path / "l.txt").write_text("data/a.wav\n\ndata/a.wav\n")
        inputs, source = [tmp_path / "l.txt"], f"list {tmp_path / 'l.txt'}"
    with pytest.raises(InputError) as caught:
        list_inputs(inputs)
    message = str(caught.value)
    assert " is listed twice with the id " in message and f"(from {source})" in message, message
    assert message.endswith("list each file once")


def test_two_files_with_one_id_keep_their_message(tmp_path: Path) -> None:
    _wav(tmp_path / "x" / "a.wav")
    _wav(tmp_path / "y" / "a.wav")
    (tmp_path / "m.csv").write_text("path,id\nx/a.wav,same\ny/a.wav,same\n")
    with pytest.raises(InputError, match=r"two files have the id 'same' .*fix the manifest's 'id' values"):
        list_inputs([tmp_path / "m.csv"])


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_warns_about_the_inputs(rank: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every torchrun rank lists the same inputs: one warning for the job, not one per rank."""
    data = tmp_path / "data"
    _wav(data / "sub" / "a.wav")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a folder and a file inside it: one file under two ids ("sub/a.wav", "a.wav"), a warning
        tokenize(TokenizeOptions([str(data), str(data / "sub" / "a.wav")], tmp_path / "out", model=None, device="cpu",
                                 dtype="bf16"))
    said = [str(w.message) for w in caught]
    listed = [m for m in said if "listed under more than one id" in m]
    bf16 = [m for m in said if m.startswith("--dtype bf16 on the CPU")]
    assert (len(listed), len(bf16)) == ((1, 1) if rank == 0 else (0, 0)), said


# -- a truncated file (its header promises more samples than it holds) ---------------------------
from test_tokenize import tiny_model_file  # noqa: E402, F401 (pytest fixture)


def _truncated_wav(path: Path, seconds: float, kept: float, rate: int = 24000) -> Path:
    """A 16-bit WAV whose header declares ``seconds`` of audio and that holds ``kept`` seconds."""
    noise = 0.1 * np.random.default_rng(1).standard_normal(int(seconds * rate))
    sf.write(path, noise.astype(np.float32), rate, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 2 * int(kept * rate)])
    return path


def test_truncated_files_are_skipped_and_listed_in_errors_jsonl(tiny_model_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """A truncated WAV is a bad file for tokenize: no row, listed in errors.jsonl with the
    reason, batched (short) and streamed (over --max-seconds) alike; there is no warnings.jsonl."""
    import json
    import pyarrow.parquet as pq
    from opencodec.cli import main
    data = tmp_path / "data"
    data.mkdir()
    _wav(data / "fine.wav", 0.3)
    _truncated_wav(data / "short.wav", 0.5, 0.25)
    _truncated_wav(data / "long.wav", 2.0, 1.2)  # over --max-seconds 1: streamed
    out = tmp_path / "out"
    assert main(["-q", "tokenize", str(data), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu",
                 "--max-seconds", "1"]) == 0
    failed = {e["id"]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert failed == {
        "short.wav": {"id": "short.wav", "path": str(data / "short.wav"), "error": f"cannot read audio file "
                      f"{data / 'short.wav'}: truncated: its header says 12000 samples, the file holds 6000"},
        "long.wav": {"id": "long.wav", "path": str(data / "long.wav"), "error": f"cannot read audio file "
                     f"{data / 'long.wav'}: truncated: its header says 48000 samples, the file holds 28800"}}
    index = json.loads((out / "index.json").read_text())
    assert (index["rows"], index["errors"], "warnings" in index) == (1, 2, False)
    assert not (out / "warnings.jsonl").exists()
    assert pq.read_table(sorted(out.glob("shard-*.parquet"))).column("id").to_pylist() == ["fine.wav"]
    err = capsys.readouterr().err
    assert err == f"opencodec: warning: 2 of 3 files could not be tokenised (reasons in {out / 'errors.jsonl'})\n"


def test_a_truncated_file_read_in_a_loader_process_is_an_error(tiny_model_file: Path, tmp_path: Path) -> None:
    """Read in a DataLoader worker process (--loader-workers 1), the truncated file comes back
    as the batch's error (no warning printed by the worker, none by the job)."""
    data = tmp_path / "data"
    data.mkdir()
    _truncated_wav(data / "short.wav", 0.5, 0.25)
    _wav(data / "fine.wav", 0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu",
                                           loader_workers=1, workers=1))
    assert not [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert summary.index is not None and (summary.index["rows"], summary.index["errors"]) == (1, 1)
    assert "truncated: its header says 12000 samples" in (tmp_path / "out" / "errors.jsonl").read_text()


def test_help_names_the_default_model(capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main
    from opencodec.releases import DEFAULT_MODEL
    assert main(["tokenize", "--help"]) == 0
    assert f"(default {DEFAULT_MODEL}, the current release)" in " ".join(capsys.readouterr().out.split())


def test_a_worker_stopped_while_reporting_its_interrupt_exits_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches every process; the parent, stopping the job, then SIGTERMs the workers
    still there. A worker caught by that while it reports its own interrupt ends quietly
    (before, the Terminated escaped and multiprocessing printed its traceback)."""
    class Messages:
        def put(self, message: tuple) -> None:
            if message[0] == "failed":
                raise KeyboardInterrupt  # the parent's SIGTERM, as Terminated, during the report

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "exit_with_parent", lambda: None)
    monkeypatch.setattr(job, "run_worker", interrupted)
    monkeypatch.setattr(job.torch, "set_num_threads", lambda n: None)
    try:
        job._worker_main(TokenizeOptions(inputs=[], out=Path("."), device="cpu"), None, WorkerPlace(0, 2), 1,
                         Messages(), object())  # returns, raising nothing
    except KeyboardInterrupt:
        pytest.fail("the worker let the interrupt escape while reporting (a traceback in the real run)")
