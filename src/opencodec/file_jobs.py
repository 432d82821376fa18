"""Which files go where: the input/output plan of a command that takes a file or a folder tree.

A single input file maps to one output (OUT, OUT/<name> when OUT is a folder, or the input
with a new suffix). A folder is walked recursively (sorted, hidden entries and symlinked
folders skipped) and its tree is mirrored under OUT. :func:`run_jobs` applies one function to
every job with the error policy of the command line: a single file stops at its error, a
folder reports every failing file and still processes the others, in one process or in
several (``processes``).
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing as mp
import os
import pickle
import reprlib
import signal
import tempfile
import typing as tp
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from ._process import exit_with_parent
from ._files import (TEMP_SUFFIX, file_identity, file_in_the_way, record_placements, recorded_placements,
                     remove_dead_temporaries, temporary_in_use)
from .errors import EXPECTED_ERRORS, UsageError

R = tp.TypeVar("R")


def _job_path(value: object, field_name: str) -> Path:
    """``value`` (a str or path-like) as a ``Path``: ``TypeError`` naming ``Job.<field_name>``
    for any other type (bytes, a number, a path-like whose path is bytes), ``ValueError`` for
    an empty str (which ``Path`` would read as the current folder)."""
    if isinstance(value, (str, os.PathLike)):
        if isinstance(value, str) and not value:
            raise ValueError(f"Job.{field_name} is an empty path; give a file name")
        try:
            return Path(value)
        except TypeError:  # os.PathLike whose __fspath__ gives bytes
            pass
    raise TypeError(f"Job.{field_name} must be a str or path-like (pathlib.Path), got "
                    f"{type(value).__name__} {reprlib.repr(value)}")


@dataclass(init=False)
class Job:
    """One input file and the output it produces; ``conflict`` names an earlier input
    that maps to the same output (the job then fails instead of overwriting it).

    The paths are given as str or path-like (``pathlib.Path``, ``os.PathLike[str]``) and
    kept as ``Path``: ``TypeError`` naming the field for any other type, ``ValueError`` for
    an empty str."""

    src: Path
    dst: Path
    conflict: Path | None = None

    def __init__(self, src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 conflict: str | os.PathLike[str] | None = None) -> None:
        self.src = _job_path(src, "src")
        self.dst = _job_path(dst, "dst")
        self.conflict = None if conflict is None else _job_path(conflict, "conflict")


@dataclass
class Plan:
    """The jobs of one invocation; ``folder``: the input was a folder (batch mode);
    ``skipped``: jobs left out because their output exists (``--skip-existing``)."""

    jobs: list[Job] = field(default_factory=list)
    folder: bool = False
    skipped: list[Job] = field(default_factory=list)

    def skip_existing(self) -> "Plan":
        """This plan without the jobs whose output already exists (a file: outputs are written
        atomically, so one that exists is complete); those go to ``skipped``. A job whose
        output another input maps to (``conflict``) is kept: that output is the other input's,
        and the job fails again saying so, instead of passing as done."""
        exists = [job.dst.is_file() and job.conflict is None for job in self.jobs]
        return Plan([job for job, done in zip(self.jobs, exists) if not done], self.folder,
                    self.skipped + [job for job, done in zip(self.jobs, exists) if done])


@dataclass
class Outcome(tp.Generic[R]):
    """What became of one job: ``result`` on success, else the ``error`` it raised."""

    job: Job
    result: R | None = None
    error: BaseException | None = None


def _unreadable_folder(exc: OSError) -> None:
    """``os.walk``'s ``onerror``: a folder that cannot be listed (no permission) is an error
    naming it, of the same type, not a folder silently left out of a run that then says it did
    every file."""
    raise type(exc)(f"cannot read folder {exc.filename}: {exc.strerror or exc}") from exc


def walk_files(root: Path, accept: tp.Callable[[Path], bool]) -> list[Path]:
    """Files under ``root`` (recursive, sorted, symlinked folders not followed) that
    ``accept`` takes; hidden files and folders (name starting with ``.``) are skipped. A
    folder that cannot be listed raises its ``OSError`` ("cannot read folder PATH: reason")."""
    found = []
    for folder, dirs, files in os.walk(root, onerror=_unreadable_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if not f.startswith(".") and accept(Path(f))]
    return found


def find_files(inputs: tp.Iterable[Path], accept: tp.Callable[[Path], bool]) -> list[Path]:
    """``inputs`` with every folder replaced by the accepted files under it (:func:`walk_files`);
    files named directly are kept as they are, in order."""
    files: list[Path] = []
    for path in inputs:
        files += walk_files(path, accept) if path.is_dir() else [path]
    return files


def check_input(src: Path) -> None:
    """``FileNotFoundError`` when the input does not exist."""
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")


def plan_folder(src: Path, out: Path | None, accept: tp.Callable[[Path], bool], out_suffix: str,
                what: str) -> list[Job]:
    """Jobs for a folder ``src``: every accepted file, mirrored under ``out`` (default: next to
    the inputs) with ``out_suffix``. ``what`` names the accepted files in the error for none."""
    root = src if out is None else out
    blocker = file_in_the_way(root)  # OUT, or a path above it, that is no folder: before any file's work
    if blocker is not None:
        above = "" if blocker == root else f" (above OUT {root})"
        raise UsageError(f"input {src} is a folder, so OUT must be a folder, but {blocker} is a file{above}")
    files = walk_files(src, accept)
    if not files:
        raise FileNotFoundError(f"no {what} found under {src}")
    jobs: list[Job] = []
    first_src: dict[Path, Path] = {}
    for f in files:  # e.g. song.wav and song.flac would both become song.ecdc
        dst = root / f.relative_to(src).with_suffix(out_suffix)
        jobs.append(Job(f, dst, first_src.get(dst)))
        first_src.setdefault(dst, f)
    return jobs


def single_output(src: Path, out: Path | None, default_suffix: str, allowed: tp.Sequence[str],
                  folder: bool = False) -> Path:
    """Output path of a single-file job: OUT, OUT/<name> when OUT is a folder, or IN + suffix.
    ``folder``: OUT was given ending in '/', a folder, which must exist (``FileNotFoundError``,
    or ``NotADirectoryError`` for a file, naming it; never taken as a file name).

    The name is derived from IN only for a regular file: for a pipe or device (``/dev/stdin``,
    ``/dev/fd/N``, a FIFO) it would be a file in ``/dev`` or named after a descriptor, so
    without an OUT file name that is a :class:`~opencodec.errors.UsageError`."""
    if (out is None or out.is_dir() or folder) and src.exists() and not src.is_file():
        where = "OUT is a folder" if out is not None else "no OUT is given"
        raise UsageError(f"input {src} is not a regular file (a pipe or device), and {where}: there is "
                         f"no file name to derive the output's from; give OUT, the output file "
                         f"(e.g. out{default_suffix})")
    if out is None:
        return src.with_suffix(default_suffix)
    if out.is_dir():
        return out / src.with_suffix(default_suffix).name
    if folder:  # as for OUT/name.ecdc, a missing folder is not created for a single file
        if out.exists():
            raise NotADirectoryError(f"output folder {out}/ is a file, not a folder")
        raise FileNotFoundError(f"output folder {out}/ does not exist (OUT ending in '/' names a folder, to "
                                f"write {src.with_suffix(default_suffix).name} into): create it first")
    if out.suffix.lower() not in allowed:
        raise UsageError(f"output {out} must end in {', '.join(allowed)}")
    return out


def is_same_file(src: Path, dst: Path) -> bool:
    """Whether ``dst`` exists and is ``src`` (the same file under any name or link)."""
    try:
        return dst.exists() and os.path.samefile(src, dst)
    except OSError:
        return False


def run_jobs(plan: Plan, work: tp.Callable[[Job, bool], R], processes: int = 1) -> tp.Iterator[Outcome[R]]:
    """Call ``work(job, plan.folder)`` on each job and yield its :class:`Outcome`, in the
    plan's order.

    A single file: an expected error (:data:`~opencodec.errors.EXPECTED_ERRORS`) becomes the
    outcome's ``error``, any other propagates. A folder: any error of one file (even an
    unexpected one, but not ``KeyboardInterrupt``) becomes its outcome and the other files are
    still processed; a job whose output another input also maps to, or whose output is its
    input file, fails with ``FileExistsError`` without running.

    ``processes`` > 1 (a folder of several files): the jobs run in that many worker processes,
    each on one PyTorch thread, with a copy of ``work`` (forked, so a model it has already
    loaded is shared until written; where fork is unavailable ``work`` is pickled). Encoded outputs are the
    same as one process's (encoding runs on one thread anyway); decoded audio is computed on
    one thread instead of the caller's count, so it can differ in its last bits, as it does
    between thread counts.
    """
    caught: tuple[type[BaseException], ...] = (Exception,) if plan.folder else EXPECTED_ERRORS
    if processes > 1 and plan.folder and len(plan.jobs) > 1:
        yield from _run_in_processes(plan, work, min(processes, len(plan.jobs)))
        return
    for job in plan.jobs:
        yield _run_one(job, work, plan.folder, caught)


def _run_one(job: Job, work: tp.Callable[[Job, bool], R], folder: bool,
             caught: tuple[type[BaseException], ...]) -> Outcome[R]:
    try:
        if job.conflict is not None:
            raise FileExistsError(f"output {job.dst} would also be written from "
                                  f"{job.conflict}; skipped (rename one of them)")
        if is_same_file(job.src, job.dst):  # even with --force: the input would be lost
            raise FileExistsError(f"output {job.dst} is the input file itself; give another output")
        return Outcome(job, result=work(job, folder))
    except KeyboardInterrupt:
        raise
    except caught as exc:
        return Outcome(job, error=exc)


# -- worker processes ------------------------------------------------------------------------------
_WORK: tp.Callable[[Job, bool], tp.Any] | None = None
_BUSY = False


_STOPPING = False


def _on_interrupt(signum: int, frame: tp.Any) -> None:
    """Ctrl-C (or the parent or the pool stopping a worker) in a worker: stop its file, whose
    temporary output is then removed, or, idle, leave at once and quietly. A second signal
    (Ctrl-C reaches the worker and its parent, which then stops it too) is ignored, so that it
    cannot cut that clean-up short."""
    global _STOPPING
    if _STOPPING:
        return
    _STOPPING = True
    if _BUSY:
        raise KeyboardInterrupt
    os._exit(130)


def _start_worker(work: tp.Callable[[Job, bool], tp.Any], log: int | str) -> None:
    """A worker's set-up; ``log``: the placement log (see :class:`_PlacementLog`), its inherited
    descriptor (fork) or its path."""
    global _WORK
    import torch  # only here: planning files needs no torch

    exit_with_parent()
    record_placements(log if isinstance(log, int) else os.open(log, os.O_WRONLY | os.O_APPEND))
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores Ctrl-C
        signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_interrupt)  # the pool stops the others when one dies
    torch.set_num_threads(1)  # the processes share the cores
    _WORK = work


def _run_in_worker(job: Job, folder: bool) -> Outcome[tp.Any]:
    global _BUSY
    assert _WORK is not None
    _BUSY = True
    try:
        outcome = _run_one(job, _WORK, folder, (Exception,))
    except KeyboardInterrupt:
        os._exit(130)  # the parent stops the job; files not started are not started here
    finally:
        _BUSY = False
    if outcome.error is not None:
        try:
            pickle.loads(pickle.dumps(outcome.error))
        except Exception:  # noqa: BLE001  (an error that cannot travel back: its type and message do)
            outcome.error = RuntimeError(f"{type(outcome.error).__name__}: {outcome.error}")
    return outcome


def _remove_temporaries(dst: Path) -> None:
    """The temporary outputs a stopped or killed worker left for ``dst`` (see ``atomic_output``):
    in its folder, those whose writer has ended, and those for ``dst`` that name no writer;
    another run's, whose writer still runs, are kept."""
    remove_dead_temporaries(dst.parent)
    for path in dst.parent.glob(f".{glob.escape(dst.name)}.*{TEMP_SUFFIX}"):
        if not temporary_in_use(path) and path.is_file():
            path.unlink(missing_ok=True)


class _PlacementLog:
    """The file the workers of one run record the outputs they place in (``+<device> <inode>``
    lines, see :func:`opencodec._files.record_placements`), read when a worker dies: a lost
    job's output is removed only when one of this run's workers placed it, never when another
    run (a second command into the same folder) did. Forked workers inherit its descriptor (a
    file without a name: nothing is left behind by a kill); others open it by its path."""

    def __init__(self, fork: bool):
        if fork:
            self._file: tp.BinaryIO | None = tempfile.TemporaryFile(prefix="opencodec-placed-")
            self.fd, self._path = self._file.fileno(), None
            import fcntl  # POSIX, as fork is

            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_APPEND)
        else:
            self._file = None
            self.fd, self._path = tempfile.mkstemp(prefix="opencodec-placed-", suffix=".log")

    @property
    def target(self) -> int | str:
        """What a worker records into: the descriptor (fork) or the path."""
        return self.fd if self._path is None else self._path

    def placed(self) -> set[tuple[int, int]]:
        """The identities of the files this run's workers have placed."""
        os.lseek(self.fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(self.fd, 1 << 16):
            data += chunk
        return recorded_placements(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        else:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(tp.cast(str, self._path))


def _run_in_processes(plan: Plan, work: tp.Callable[[Job, bool], R], processes: int) -> tp.Iterator[Outcome[R]]:
    """The jobs in a pool of worker processes, outcomes in the plan's order.

    At most two jobs a worker are submitted at a time. A worker that dies (killed, out of
    memory) breaks the pool, which stops the others (their files are dropped like at Ctrl-C).
    The outcomes that came in are kept; the jobs that were in flight run again one at a time
    in a fresh single worker, so that only a job that kills its worker again is reported as
    failed (an output one of them had already placed is removed first: only one that this
    run's workers placed, never a file another run placed meanwhile, see :class:`_PlacementLog`);
    then the rest go on with ``processes`` workers again.
    """
    fork = "fork" in mp.get_all_start_methods()
    log = _PlacementLog(fork)
    try:
        yield from _run_pools(plan, work, processes, mp.get_context("fork" if fork else "spawn"), log)
    finally:
        log.close()


def _run_pools(plan: Plan, work: tp.Callable[[Job, bool], R], processes: int, context: tp.Any,
               log: _PlacementLog) -> tp.Iterator[Outcome[R]]:
    """:func:`_run_in_processes`, with its start method's ``context`` and placement ``log``."""
    finished: dict[int, Outcome[R]] = {}
    pending, suspects = deque(range(len(plan.jobs))), deque[int]()
    following = 0

    def ready() -> tp.Iterator[Outcome[R]]:
        nonlocal following
        while following in finished:
            yield finished.pop(following)
            following += 1

    while pending or suspects:
        alone = bool(suspects)
        source, workers = (suspects, 1) if alone else (pending, processes)
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(work, log.target))
        in_flight: dict[int, Future[Outcome[R]]] = {}  # in submission order
        broken = False
        try:
            while (source or in_flight) and not broken:
                while source and len(in_flight) < 2 * workers:
                    try:
                        in_flight[source[0]] = pool.submit(_run_in_worker, plan.jobs[source[0]], plan.folder)
                    except BrokenProcessPool:
                        broken = True
                        break
                    source.popleft()
                if broken:
                    break
                done, _ = wait(list(in_flight.values()), return_when=FIRST_COMPLETED)
                for i in [i for i, future in in_flight.items() if future in done]:
                    try:
                        finished[i] = in_flight[i].result()
                    except BrokenProcessPool:
                        broken = True
                        break
                    del in_flight[i]
                yield from ready()
        except BaseException:  # Ctrl-C (perhaps the parent's alone), or the caller stopped early
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)  # handled even where SIGINT is ignored
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        lost = []
        for i, future in in_flight.items():  # outcomes that came in before the pool broke
            if future.done() and not future.cancelled() and future.exception() is None:
                finished[i] = future.result()
            else:
                lost.append(i)
        placed = log.placed() if lost else set()
        for i in lost:
            dst = plan.jobs[i].dst
            if file_identity(dst) in placed:  # placed by this run before its outcome was lost: run it again
                dst.unlink(missing_ok=True)
            _remove_temporaries(dst)
        if alone and lost:  # one worker, jobs in order: the oldest in flight is the one it died on
            finished[lost[0]] = Outcome(plan.jobs[lost[0]], error=RuntimeError(
                "its worker process died (killed, or out of memory); the other files went on"))
            lost = lost[1:]
        suspects.extendleft(reversed(lost))
        yield from ready()
    yield from ready()
