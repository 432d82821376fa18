"""``opencodec tokenize`` / ``detokenize`` / ``TokenDataset`` on inputs and runs a demanding user
tries: option combinations, signals to the whole process group, damaged shards."""

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

from official_ref import random_codebooks
import opencodec
from opencodec import EncodecConfig, EncodecModel, save_model
from opencodec.tokens import TokenDataset, TokenizeOptions, tokenize

SRC = Path(opencodec.__file__).resolve().parents[1]  # the package under test, also in subprocesses


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                           target_bandwidths=[1.5, 3.0])
    return save_model(random_codebooks(EncodecModel(config), 7), tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _wavs(root: Path, count: int, samples: int = 7200, rate: int = 24000) -> Path:
    """``count`` noise WAVs (mono, 16-bit) named ``f00.wav`` ..."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        sf.write(root / f"f{i:02d}.wav", (0.1 * rng.standard_normal(samples)).astype(np.float32), rate)
    return root


def _rows(folder: Path) -> dict[str, list[list[int]]]:
    ds = TokenDataset(folder)
    return {ds[i]["id"]: ds[i]["codes"].tolist() for i in range(len(ds))}


def test_workers_2_with_loader_workers_gives_the_rows_of_one_process(tiny_model_file: Path, tmp_path: Path) -> None:
    """--workers 2 --loader-workers 1: each tokenize process reads through its own DataLoader
    process (was: "a tokenize worker failed: AssertionError: daemonic processes are not allowed
    to have children")."""
    data = _wavs(tmp_path / "data", 4)
    base = dict(model=str(tiny_model_file), device="cpu", shard_rows=2)
    tokenize(TokenizeOptions([str(data)], tmp_path / "one", workers=1, **base))
    summary = tokenize(TokenizeOptions([str(data)], tmp_path / "two", workers=2, loader_workers=1, **base))
    assert summary.index is not None and summary.index["rows"] == 4 and summary.index["errors"] == 0
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")


@pytest.mark.skipif(sys.platform != "linux", reason="process groups, fork")
def test_sigterm_to_the_process_group_with_loader_workers_is_one_line(tiny_model_file: Path, tmp_path: Path) -> None:
    """``timeout``, Slurm's ``scancel`` and ``kill -TERM -PGID`` signal every process of the job,
    the DataLoader processes of --loader-workers too (a GPU job has them by default): the command
    stops with its one line and status 143 (was: torch's 20-line "Exception ignored in ...
    DataLoader worker (pid N) is killed by signal: Terminated" traceback first)."""
    data = _wavs(tmp_path / "data", 40, samples=3 * 24000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "tokenize", str(data), "--out", str(out),
                             "-m", str(tiny_model_file), "--device", "cpu", "-q", "--workers", "1",
                             "--loader-workers", "2", "--shard-rows", "5"],
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("shard-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (143, "opencodec: error: terminated\n")
    assert not (out / "index.json").exists()  # stopped part way: the test killed a running job


def _forked_child(pid: int) -> int:
    """A child process of ``pid`` forked from it (its command line), not a helper it started."""
    own = Path(f"/proc/{pid}/cmdline").read_bytes()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return next(int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == own)


@pytest.mark.skipif(sys.platform != "linux", reason="finds the loader process in /proc")
def test_a_loader_process_killed_on_its_own_stops_the_job_in_one_line(tiny_model_file: Path, tmp_path: Path) -> None:
    """A --loader-workers process killed alone (the out-of-memory killer: SIGKILL) stops the job
    with one line that says what happened and that the same command finishes it, as for a tokenize
    worker process (was: torch's 50-line traceback ending "RuntimeError: DataLoader worker (pid N)
    is killed by signal: Killed."); the rerun finishes the job."""
    data = _wavs(tmp_path / "data", 40, samples=3 * 24000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "opencodec", "tokenize", str(data), "--out", str(out), "-m", str(tiny_model_file),
            "--device", "cpu", "-q", "--workers", "1", "--shard-rows", "5"]
    proc = subprocess.Popen(argv + ["--loader-workers", "1"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not list(out.glob("shard-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(_forked_child(proc.pid), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith("opencodec: error: a tokenize decoding process (--loader-workers) was killed by SIGKILL "
                          "(out of memory?)"), err
    assert err.endswith("the shards finished so far are kept: run the same command again to finish the job\n")
    assert not (out / "index.json").exists()
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    assert len(_rows(out)) == 40


def test_a_job_with_no_shard_written_yet_does_not_advise_partial(tiny_model_file: Path, tmp_path: Path) -> None:
    """A run stopped before its first shard leaves job.json alone: TokenDataset(partial=True)
    has nothing to read, and the error does not advise the very partial=True it was given (nor
    does it without partial: there is no finished shard to read)."""
    from opencodec.tokens import TokenizeError
    from opencodec.tokens.shards import JOB_FILE
    data = _wavs(tmp_path / "data", 2)
    done = tmp_path / "done"
    tokenize(TokenizeOptions([str(data)], done, model=str(tiny_model_file), device="cpu", shard_rows=1))
    started = tmp_path / "started"
    started.mkdir()
    (started / JOB_FILE).write_text((done / JOB_FILE).read_text())
    for partial in (True, False):
        with pytest.raises(TokenizeError) as caught:
            TokenDataset(started, partial=partial)
        assert str(caught.value) == (f"token folder {started}: job incomplete: 0 of 2 shards written (no index.json "
                                     "yet); rerun the tokenize command to finish it")


@pytest.mark.parametrize("damage", ["empty", "cut"])
def test_a_damaged_shard_is_named_when_the_job_is_finished_again(tiny_model_file: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture, damage: str) -> None:
    """A shard damaged after it was written (a disk error, a copy cut short) with index.json gone:
    the rerun skips the shard (it exists) and its index fails on it, in one line that names the
    shard and what to do (was: pyarrow's "Parquet file size is 0 bytes" or "Parquet magic bytes
    not found in footer ...", naming no file)."""
    from opencodec.cli import main
    data = _wavs(tmp_path / "data", 2)
    out = tmp_path / "out"
    argv = ["tokenize", str(data), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu", "-q"]
    assert main(argv) == 0
    (out / "index.json").unlink()
    shard = out / "shard-00000-of-00001.parquet"
    shard.write_bytes(b"" if damage == "empty" else shard.read_bytes()[:100])
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"opencodec: error: {shard} is not a readable Parquet file (") and err.count("\n") == 1
    assert err.endswith("): delete it and run the tokenize command again to write it again\n")


def test_a_pipe_given_as_input_is_not_said_to_be_missing(tmp_path: Path) -> None:
    """``opencodec tokenize <(find ...)`` or ``/dev/stdin``: the input exists, as a pipe, which
    tokenize does not read (relative paths in a list are relative to its folder); the error says
    so, not "does not exist"."""
    from opencodec.tokens.inputs import InputError, list_inputs
    fifo = tmp_path / "list"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as caught:
        list_inputs([str(fifo)])
    assert str(caught.value) == (f"input {fifo} is not a regular file or a folder (a pipe such as <(...) or "
                                 "/dev/stdin, or a device): save the list of paths to a file and give that")


def test_a_sub_folder_that_cannot_be_listed_is_refused_not_left_out(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A sub-folder tokenize may not list (no read permission: another user's folder on a shared
    disk) would leave its files out of the job without a word (os.walk skips it): the input is
    refused, naming the folder. (Simulated: the tests may run as root, whom permissions do not stop.)"""
    from opencodec.tokens.inputs import InputError, list_inputs
    data = _wavs(tmp_path / "data", 1)
    _wavs(data / "locked", 1)
    real_scandir = os.scandir

    def scandir(path: tp.Any = ".") -> tp.Any:
        if Path(path) == data / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError) as caught:
        list_inputs([str(data)])
    assert str(caught.value) == (f"cannot list the folder {data / 'locked'} (Permission denied): its audio files "
                                 "would be left out of the job; make it readable, or give the other folders as inputs")


def test_no_more_loader_processes_than_batches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--loader-workers 100000 on a job of 2 batches started 100000 processes (the command sat
    forking them for minutes): a loader process reads whole batches, so one per batch at most
    (checked with 8, which also ran, slowly, before)."""
    from opencodec.tokens import reader
    from opencodec.tokens.plan import Batch, PlannedItem
    data = _wavs(tmp_path / "data", 2)
    items = {0: [PlannedItem(f"f0{i}.wav", str(data / f"f0{i}.wav"), 0.3) for i in range(2)]}
    dataset = reader.BatchAudio(items, [(0, Batch((0,))), (0, Batch((1,)))], 24000, 1)
    asked = []
    real = reader.DataLoader

    def spy(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        asked.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, "DataLoader", spy)
    loaded = list(reader.batch_loader(dataset, 8))
    assert asked == [2] and [b.rows for b in loaded] == [[0], [1]]


@pytest.mark.parametrize("text", ['{"shards": [', "{}", '{"shards": [{"rows": 2}]}', "[]"])
def test_a_damaged_index_is_named_and_the_rerun_rewrites_it(tiny_model_file: Path, tmp_path: Path, text: str) -> None:
    """index.json damaged after it was written (cut short, emptied by hand): TokenDataset names it
    and says how to mend it (was: "Expecting value: line 2 column 1 (char 13)", or a KeyError
    traceback from the command), and rerunning the tokenize command writes it again."""
    from opencodec.tokens import TokenizeError
    data = _wavs(tmp_path / "data", 2)
    options = TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu")
    tokenize(options)
    index = tmp_path / "out" / "index.json"
    index.write_text(text)
    with pytest.raises(TokenizeError) as caught:
        TokenDataset(tmp_path / "out")
    assert str(caught.value).startswith(f"{index} is not a readable index of token shards (")
    assert str(caught.value).endswith("): run the tokenize command again to write it again")
    tokenize(options)
    assert len(_rows(tmp_path / "out")) == 2


def test_two_jobs_started_together_into_one_folder_do_not_both_claim_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two commands with different settings started at the same moment into one new --out: the
    other one writes its job.json after this one found none. This one must not replace it (each
    would then read back its own job.json and both would write shards, of two settings, into one
    folder): it reads the other's and refuses."""
    from opencodec.tokens import shards
    folder = tmp_path / "out"
    folder.mkdir()
    mine = {"bandwidth": 3.0, "num_files": 2}
    other = {"bandwidth": 1.5, "num_files": 2}
    real = shards.atomic_output

    def the_other_job_first(path: Path, **kwargs: tp.Any) -> tp.Any:
        if path.name == shards.JOB_FILE and not path.exists():
            path.write_text(shards._json_text(other))
        return real(path, **kwargs)

    monkeypatch.setattr(shards, "atomic_output", the_other_job_first)
    with pytest.raises(shards.TokenizeError, match="holds the tokens of another job: --bandwidth: 1.5 then, 3.0 now"):
        shards.claim_folder(folder, mine)
    assert (folder / shards.JOB_FILE).read_text() == shards._json_text(other)
    shards.claim_folder(folder, other)  # ranks of one job, all at once: the same content, accepted


def test_a_loader_death_during_a_long_file_is_not_that_files_error(tiny_model_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch raises its "DataLoader worker ... is killed by signal" error in the main process
    wherever that is: during a long file's streamed encoding it is no fault of that file (no
    errors.jsonl row, no shard written as if the file were bad): the job stops, saying what ended."""
    from opencodec.errors import OpenCodecError
    from opencodec.tokens import job
    data = _wavs(tmp_path / "data", 2)

    def killed(*args: tp.Any) -> tp.Any:
        raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Killed. ")

    monkeypatch.setattr(job, "_streamed_row", killed)
    with pytest.raises(OpenCodecError, match=r"^a tokenize decoding process \(--loader-workers\) was killed by "
                                             r"SIGKILL \(out of memory\?\); the shards finished so far are kept"):
        tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu",
                                 max_seconds=0.1))
    assert not list((tmp_path / "out").glob("shard-*"))


def test_a_worker_process_that_cannot_start_leaves_none_running(tiny_model_file: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers 2 where the second process cannot start (fork fails: no memory, a process
    limit): the error comes back and the first worker, already started, is stopped rather than
    left to run the job (the worker processes are not daemonic, so that they may start
    --loader-workers processes: nothing else would stop it)."""
    import multiprocessing as mp
    from opencodec.tokens import job
    data = _wavs(tmp_path / "data", 4)
    real_context = mp.get_context

    def context(method: str | None = None) -> tp.Any:
        ctx = real_context(method)

        class Refused(ctx.Process):  # type: ignore[misc, name-defined]
            started = 0

            def start(self) -> None:
                Refused.started += 1
                if Refused.started == 2:
                    raise OSError(11, "Resource temporarily unavailable")
                super().start()

        class Context:
            Queue = ctx.Queue
            Process = Refused
        return Context()

    monkeypatch.setattr(job.mp, "get_context", context)
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu",
                                 shard_rows=1, workers=2))
    assert mp.active_children() == []
