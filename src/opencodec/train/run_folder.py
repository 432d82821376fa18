"""A training run's folder, as both trainers write it, and how an invocation of a run stops.

- :class:`RunFolder`: the folder is locked while a trainer writes it (``.lock``: a second
  training into the same folder is refused); ``config.json`` is the run's first config, written
  when the run starts from step 0 and never replaced; every start (fresh or resumed) appends a
  row to ``history.jsonl`` (time, step, command line, opencodec version and source commit,
  torch version, and the config keys changed since the checkpoint, each also said on stderr);
  on resume ``metrics.jsonl`` and TensorBoard drop what was logged after the checkpoint's step
  (a run killed between two checkpoints logs those steps again).
- :func:`save_checkpoint_file` and :func:`saving`: a checkpoint or an export that cannot be
  written (a full disk) is an ``OutputError`` naming the file, in one line.
- :class:`StopRequests`: Ctrl-C (SIGINT), SIGTERM (``kill``, ``timeout``, a scheduler; for
  the trainers that ask for it) or the wall-clock budget stops the loop at a step boundary, so
  that the trainer saves a checkpoint of a whole step before it exits; outside the loop,
  :func:`opencodec.signals.sigterm_as_interrupt` makes SIGTERM a ``KeyboardInterrupt`` too
  (:class:`~opencodec.errors.Terminated`).
- :func:`check_run_folder`: a run folder path that cannot be a folder (a file is there), or a
  folder no trainer made that holds a file training would overwrite (a model folder's
  ``config.json``), is a one-line ``ConfigError`` before anything is built.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import torch

from .._files import LockHeld, exclusive_lock, file_in_the_way, write_bytes_atomic
from ..errors import ConfigError, OutputError
from ..signals import is_interrupting_handler
from .config_checks import config_changes

LOCK = ".lock"
HISTORY = "history.jsonl"
METRICS = "metrics.jsonl"


# -- writing files -----------------------------------------------------------------------------------
def _os_error_in(exc: BaseException) -> str | None:
    """The operating system's reason inside a library's error (safetensors: ``(os error 28)``)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    match = re.search(r"os error (\d+)", str(exc))
    return os.strerror(int(match[1])) if match else None


@contextlib.contextmanager
def saving(path: Path) -> tp.Iterator[None]:
    """``with saving(path): ...``: an error of the operating system while writing ``path`` (a
    full disk, a read-only folder), also one that a library wraps in its own type, leaves as an
    ``OutputError`` naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        reason = _os_error_in(exc)
        if reason is None:
            raise
        raise OutputError(f"writing {path}: {reason[:1].lower() + reason[1:]}") from exc


def save_checkpoint_file(state: dict[str, tp.Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically, with the usual file permissions. The
    state is serialised in memory first: PyTorch's file writer reports a full disk as an
    ``unexpected pos`` RuntimeError, a plain write as ``No space left on device``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with saving(path):
        write_bytes_atomic(path, buffer.getbuffer())


def set_usual_permissions(path: Path) -> None:
    """Give a file written through ``mkstemp`` (mode 0600) the permissions of any other new
    file (0666 minus the umask), so that colleagues can read an exported model."""
    from .._files import _UMASK

    os.chmod(path, 0o666 & ~_UMASK)


# -- provenance --------------------------------------------------------------------------------------
def _source_commit() -> str | None:
    """``git describe --always --dirty`` of the opencodec source when it is a git checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, tp.Any]:
    """What made this invocation: the time, command line, opencodec version and source
    commit, and the torch and Python versions."""
    from .. import __version__

    return {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": list(sys.argv), "opencodec": __version__, "commit": _source_commit(),
            "torch": torch.__version__, "python": sys.version.split()[0]}


# -- the run folder ----------------------------------------------------------------------------------
def run_folder_path(run_dir: str | os.PathLike[str] | None, cfg: dict, name: str) -> tuple[Path, str]:
    """A trainer's run folder, ``run_dir`` (``--run-dir``), else config field ``run_dir``, else
    ``runs/<name>``, and where its path came from, as errors name it. A config field
    ``run_dir`` that is not a path (``run_dir: 2024``, a list) is a ``ConfigError``."""
    if run_dir:
        return Path(run_dir), "--run-dir"
    if cfg.get("run_dir"):
        value = cfg["run_dir"]
        if not isinstance(value, str):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            raise ConfigError(f"config field run_dir: expected a folder path, got {value!r}"
                              + (f' (quote a number: run_dir: "{value}")' if number else ""))
        return Path(value), "config field run_dir"
    return Path(f"runs/{name}"), "run folder"


#: Files that show a trainer made the folder: the lock and start log its first start writes, or a
#: checkpoint (read and checked on resume; the only mark of runs of versions before the lock).
RUN_MARKS = (LOCK, HISTORY, "checkpoint.pt")
#: Files a trainer writes over or cuts in its run folder (both trainers' logs and exports).
RUN_OUTPUTS = ("config.json", METRICS, "model.safetensors", "lm.safetensors", "lm_best.safetensors",
               "report.json", "report.md")


def check_run_folder(path: Path, what: str = "--run-dir") -> None:
    """Refuse, as a one-line ``ConfigError`` naming ``what`` (where the path came from: the
    option, ``config field run_dir``), a run folder path that exists and is not a folder, or
    below a file, or a folder that a trainer did not make (none of :data:`RUN_MARKS`) holding a
    file a trainer would write over (:data:`RUN_OUTPUTS`: a model folder's ``config.json``,
    another tool's ``metrics.jsonl``): the trainers check it before building anything."""
    blocker = file_in_the_way(path)
    if blocker == path:
        raise ConfigError(f"{what} {path} exists and is not a folder; give a folder's path")
    if blocker is not None:
        raise ConfigError(f"{what} {path} cannot be a folder: {blocker} is a file; give a folder's path")
    if path.is_dir() and not any((path / mark).exists() for mark in RUN_MARKS):
        foreign = [name for name in RUN_OUTPUTS if (path / name).exists()]
        if foreign:
            raise ConfigError(f"{what} {path} is not an opencodec run folder (it holds {', '.join(foreign)} but no "
                              f"{HISTORY} or checkpoint.pt) and training would overwrite them; give a new or "
                              f"empty folder as --run-dir")


class RunFolder:
    """The folder of a run, locked from ``__enter__`` to ``__exit__`` (only ``main``, rank 0
    under torchrun, touches it; the other ranks' instance does nothing)."""

    def __init__(self, path: Path, main: bool = True):
        self.path, self.main = Path(path), main
        self._lock: tp.IO[str] | None = None
        self.metrics: tp.IO[str] | None = None
        self.writer: tp.Any = None

    def __enter__(self) -> RunFolder:
        if self.main:
            check_run_folder(self.path, "run folder")
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(self.path / LOCK)
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock (the file stays: removing it would race)

    def start(self, cfg: dict, step: int, previous: dict | None, tensorboard: bool) -> None:
        """Record this invocation, from ``step`` (0: a fresh run; else the checkpoint's, whose
        config was ``previous``), and open the logs for the steps after ``step``."""
        if not self.main:
            return
        row = {"step": step, **provenance()}
        config_file = self.path / "config.json"
        if step == 0 or not config_file.exists():
            # a fresh run's config (a run that never checkpointed starts over), or the
            # checkpoint's own for a folder that lacks it (a campaign resumes into a new folder)
            first = cfg if step == 0 or previous is None else previous
            with saving(config_file):
                write_bytes_atomic(config_file, json.dumps(first, indent=2).encode())
        if step and previous is not None:
            changed = config_changes(previous, cfg)
            row["changed"] = {key: {"was": old, "now": new} for key, (old, new) in changed.items()}
            if changed:
                print(f"warning: resuming {self.path} at step {step} with a changed config: "
                      + "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
                      + f" (config.json keeps the run's first config; {HISTORY} records each start)",
                      file=sys.stderr)
        with saving(self.path / HISTORY), open(self.path / HISTORY, "a", encoding="utf-8") as history:
            history.write(json.dumps(row, default=str) + "\n")
        self.metrics = _metrics_from(self.path / METRICS, step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the events of earlier files at steps >= purge_step
            self.writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=step + 1 if step else 0)

    def log(self, values: dict[str, float], at: int) -> None:
        """Log scalars at step ``at`` to ``metrics.jsonl`` and TensorBoard (rank 0 only)."""
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, at)
        if self.metrics is not None:
            self.metrics.write(json.dumps({"step": at, **values}) + "\n")
            self.metrics.flush()


def _lock(path: Path) -> tp.IO[str]:
    """Hold an exclusive lock on ``path`` (created), or refuse: another process trains here."""
    try:
        handle, locked = exclusive_lock(path)
    except LockHeld as held:
        raise ConfigError(f"{path.parent} is in use by another training ({held.holder or 'see ' + str(path)}); "
                          f"wait for it to end or use another --run-dir") from None
    if not locked:  # a file system without locks (NFS without lockd, some FUSE mounts): train unlocked
        print(f"warning: cannot lock {path}; a second training into {path.parent} would not be refused",
              file=sys.stderr)
    return handle


def _metrics_from(path: Path, step: int) -> tp.IO[str]:
    """``metrics.jsonl`` opened for appending the steps after ``step``: rows logged after
    ``step`` by an earlier invocation (killed between checkpoints) are dropped, and so is a
    partial last row."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if step and isinstance(row, dict) and int(row.get("step", 0)) <= step:
                kept.append(line)
        if len(kept) < len(lines):
            print(f"{path}: {_dropped_rows(len(lines) - len(kept), step)}", file=sys.stderr)
            with saving(path):
                write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())
    with saving(path):
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by RunFolder.__exit__


def _dropped_rows(count: int, step: int) -> str:
    """What :func:`_metrics_from` says of the ``count`` rows it dropped before logging after ``step``."""
    rows = f"{count} row{'' if count == 1 else 's'}"
    if step == 0:  # no checkpoint: every row of the earlier start goes, step 0's included
        return f"{rows} of an earlier start dropped (it left no checkpoint: the run starts over from step 0)"
    return f"{rows} logged after step {step} dropped (after the checkpoint the run goes on from)"


# -- stopping ----------------------------------------------------------------------------------------
class StopRequests:
    """Why the loop should stop before its next step: ``"interrupted"`` (Ctrl-C),
    ``"terminated"`` (SIGTERM, with ``sigterm=True``) or ``"time"``
    (past ``max_minutes`` since ``started``, the invocation's start: set-up included, so that
    ``--max-minutes`` bounds the whole command, as a GPU lease needs), else None. The budget
    never stops the loop before the first step it is asked about: every invocation trains at
    least one step, so that rerunning a command whose set-up outlasts its budget still makes
    progress (and a stop never repeats the step a run resumed from). While active (``with``),
    the first SIGINT or SIGTERM only asks the loop to stop at the next step boundary, where the
    trainer saves a checkpoint; a second SIGINT stops at once (a single process), a second
    SIGTERM is ignored (it would cut that checkpoint short; SIGKILL is the hard stop). Under
    torchrun, rank 0's answer is every rank's, asked every ``every`` steps (a collective), and
    repeated signals (torchrun forwards one) are ignored.

    A signal the process ignores stays ignored: in a shell script, a background job
    (``opencodec train ... &``) starts with SIGINT ignored (POSIX, so that Ctrl-C at the
    terminal reaches only the foreground job), as under ``nohup``-like launchers; such a run is
    stopped with SIGTERM (``kill PID``). A handler someone else installed (an application
    embedding the trainer) is left in place too."""

    def __init__(self, max_minutes: float | None, every: int = 1, distributed: bool = False,
                 started: float | None = None, sigterm: bool = False):
        self.max_minutes, self.every, self.distributed = max_minutes, every, distributed
        self.started = time.monotonic() if started is None else started
        self.sigterm = sigterm
        self.signalled: str | None = None  # "interrupted" or "terminated": the first stop signal
        self._first_step: int | None = None  # the step of the first question: no time stop there
        self._previous: dict[int, tp.Any] = {}

    @property
    def interrupted(self) -> bool:
        """Whether a stop signal (SIGINT, or SIGTERM when handled) has come."""
        return self.signalled is not None

    def _on_sigint(self, signum: int, frame: tp.Any) -> None:
        if self.signalled is not None and not self.distributed:
            raise KeyboardInterrupt
        self.signalled = self.signalled or "interrupted"

    def _on_sigterm(self, signum: int, frame: tp.Any) -> None:
        self.signalled = self.signalled or "terminated"  # a repeated one: ignored

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Python's Ctrl-C (not ignored)
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            if self.sigterm and (signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
                                or is_interrupting_handler(signal.getsignal(signal.SIGTERM))):
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def reason(self, step: int) -> str | None:
        """``"interrupted"``, ``"terminated"``, ``"time"`` (never at the first step asked about) or
        None, before ``step``."""
        if self._first_step is None:
            self._first_step = step
        if self.distributed and step % self.every:
            return None
        out_of_time = (self.max_minutes is not None and step > self._first_step
                       and time.monotonic() - self.started > 60 * self.max_minutes)
        why = self.signalled or ("time" if out_of_time else None)
        if self.distributed:
            from .distributed import broadcast_object

            why = tp.cast("str | None", broadcast_object(why))
        return why


def stopped_message(why: str | None, step: int, total: int, checkpoint: Path) -> str | None:
    """What to tell the user when the loop ended at ``step`` of ``total`` for ``why``."""
    if why in ("interrupted", "terminated"):
        saved = f"{checkpoint} holds step {step}" if checkpoint.exists() else "nothing saved"
        return f"{why} at step {step} of {total}; {saved}; rerun the same command to resume"
    if step < total:
        return f"stopped at step {step} of {total}; rerun the same command to continue"
    return None
