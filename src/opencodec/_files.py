"""Safe output files: never overwrite by accident, never leave a partial file behind.

Every file opencodec writes goes through ``atomic_output``: the data is written to a
hidden temporary file in the destination folder (same file system, so the final
``os.replace`` is an atomic rename), and the temporary file is removed if anything
fails, including ``KeyboardInterrupt``. A reader of the destination path therefore sees
either the old file (or nothing) or the complete new file. ``staged_files`` does the same
for a set of files written together into one folder (all of them or none), and
``output_folder`` creates an output folder, with a clear error when it cannot be written.

A process killed outright (``kill -9``, a power cut) cannot remove its temporary file. Each
temporary file's name therefore says which process on which machine wrote it
(``.NAME.<host>-<pid namespace>-<pid>.<random>.tmp``), and the first ``atomic_output`` of a
process in a folder removes the ones there whose process has ended: only those of this machine
and this pid namespace (containers sharing a host name and a folder see other pids).
``temporary_path`` names a temporary file of its caller's the same way (``kill -9`` leaves
nothing that is not removed so), and ``record_placements`` lets a worker process record the
identity of each file it places, so that its parent removes only its own outputs when it dies.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import secrets
import shutil
import socket
import tempfile
import typing as tp
from pathlib import Path

from .errors import OutputError

TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
# Folders this process has swept for its predecessors' temporary files (see atomic_output).
_SWEPT: set[str] = set()
# Whether atomic_output may replace an existing file (see keep_existing).
_OVERWRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("opencodec_overwrite", default=True)
# Where this process records the files it places (see record_placements); None: nowhere.
_PLACEMENT_LOG: int | None = None


def _host() -> str:
    """This machine's name as it appears in temporary file names (letters, digits, ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _pid_namespace() -> int:
    """This process's pid namespace (the inode of ``/proc/self/ns/pid``; 0 where there is none)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _owner_tag() -> str:
    """``<host>-<pid namespace>-<pid>``: who writes a temporary file (read again by
    :func:`_remove_dead_temporaries`)."""
    return f"{_host()}-{_pid_namespace()}-{os.getpid()}"


#: The longest file name, in bytes, that common file systems take (Linux's NAME_MAX).
MAX_NAME_BYTES = 255
#: Bytes kept in a temporary file's name for its random part (``mkstemp``'s 8 characters,
#: :func:`temporary_path`'s 12) and :data:`TEMP_SUFFIX`.
_RANDOM_AND_SUFFIX_BYTES = 16


def temporary_name_stem(name: str) -> str:
    """The part of a temporary file's name (``.STEM.<host>-<pid namespace>-<pid>.<random>.tmp``)
    taken from the output's ``name``: the name itself, or for a long one its start, cut so that
    the whole name stays within :data:`MAX_NAME_BYTES` (an output whose own name is legal must
    not fail as "File name too long" because of its temporary file's)."""
    room = MAX_NAME_BYTES - len(f"..{_owner_tag()}.".encode()) - _RANDOM_AND_SUFFIX_BYTES - len(TEMP_SUFFIX)
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return name


def _process_ended(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists
        return False
    return False


def _temporary_owner(name: str) -> tuple[str, int] | None:
    """``(host-pidns, pid)`` of the process that a temporary file's name says wrote it, or None
    when the name is not in the pattern of :func:`atomic_output`'s files."""
    match = re.match(rf"^\..+\.([A-Za-z0-9-]+-\d+)-(\d+)\.[^.]+{re.escape(TEMP_SUFFIX)}$", name)
    return None if match is None else (match.group(1), int(match.group(2)))


def temporary_in_use(path: str | Path) -> bool:
    """Whether the temporary file ``path`` may still be written: its name says that a process of
    another machine or pid namespace wrote it, or one of this one's that still runs (this one
    included). False for names in another pattern (no writer can be told)."""
    owner = _temporary_owner(Path(path).name)
    if owner is None:
        return False
    return owner[0] != f"{_host()}-{_pid_namespace()}" or owner[1] == os.getpid() or not _process_ended(owner[1])


def _remove_dead_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files in ``folder`` that ``atomic_output`` calls (and the folders that
    ``staged_files`` calls) of processes on this machine, in this pid namespace, that have ended
    left behind (``kill -9``); returns them. Those of processes still running, of other machines or pid namespaces (a shared folder) and names
    in another pattern are left alone."""
    removed = []
    with contextlib.suppress(OSError):
        with os.scandir(folder) as entries:
            for entry in entries:
                if _temporary_owner(entry.name) is not None and not temporary_in_use(entry.name):
                    with contextlib.suppress(OSError):
                        if entry.is_file(follow_symlinks=False):
                            os.unlink(entry.path)
                            removed.append(Path(entry.path))
                        elif entry.is_dir(follow_symlinks=False):  # a staged_files folder
                            shutil.rmtree(entry.path)
                            removed.append(Path(entry.path))
    return removed


def remove_dead_temporaries(folder: str | Path) -> list[Path]:
    """Delete now the temporary files in ``folder`` whose writer has ended (see
    :func:`atomic_output`), even if this process swept ``folder`` before; returns them."""
    _SWEPT.add(os.path.abspath(folder))
    return _remove_dead_temporaries(Path(folder))


@contextlib.contextmanager
def temporary_path(path: str | Path) -> tp.Iterator[Path]:
    """Yield a free hidden path next to ``path`` for an intermediate file (a round trip's
    ``.ecdc``), named like :func:`atomic_output`'s temporary files (``.NAME.<host>-<pid
    namespace>-<pid>.<random>.tmp``), and remove whatever is there on leaving the block. One
    that a killed process (``kill -9``) leaves is removed by the next ``atomic_output`` in
    that folder, as theirs are; hidden, it is skipped by a folder walk."""
    path = Path(path)
    folder = os.path.abspath(path.parent)
    if folder not in _SWEPT and path.parent.is_dir():
        _SWEPT.add(folder)
        _remove_dead_temporaries(path.parent)
    tmp = path.parent / f".{temporary_name_stem(path.name)}.{_owner_tag()}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def record_placements(fd: int | None) -> None:
    """From now on, append to the open file ``fd`` (``O_APPEND``) the identity of every file this
    process's :func:`atomic_output` calls place: ``+<device> <inode>`` before it is moved into
    place, ``-<device> <inode>`` when that fails (one line each, one ``write`` each); None
    stops. A worker's parent reads them back (:func:`recorded_placements`) when the worker
    dies, to remove what it placed and nothing another process placed meanwhile."""
    global _PLACEMENT_LOG
    _PLACEMENT_LOG = fd


def recorded_placements(log: bytes) -> set[tuple[int, int]]:
    """The ``(device, inode)`` of the files placed according to the lines of ``log`` (see
    :func:`record_placements`), those whose placement failed left out."""
    placed: set[tuple[int, int]] = set()
    for line in log.decode("ascii", "replace").splitlines():
        fields = line[1:].split()
        if line[:1] not in ("+", "-") or len(fields) != 2 or not all(f.isdigit() for f in fields):
            continue  # a line cut short by a kill
        identity = (int(fields[0]), int(fields[1]))
        (placed.add if line[0] == "+" else placed.discard)(identity)
    return placed


def file_identity(path: str | Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` (not following a symbolic link), None when there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _record(tmp: Path, sign: str) -> None:
    """Record ``tmp``'s identity in the placement log, if any (see :func:`record_placements`)."""
    identity = None if _PLACEMENT_LOG is None else file_identity(tmp)
    if identity is not None:
        with contextlib.suppress(OSError):  # not recorded: the parent keeps the file (safe side)
            os.write(tp.cast(int, _PLACEMENT_LOG), f"{sign}{identity[0]} {identity[1]}\n".encode())


def check_output(path: str | Path, force: bool, *, need_folder: bool = True) -> None:
    """Refuse to clobber: raise ``FileExistsError`` if ``path`` exists and not ``force``.

    Also raises ``IsADirectoryError`` when ``path`` is a folder (never replaced, even with
    ``force``), ``OutputError`` when it is a FIFO, socket or device (``atomic_output`` would
    replace it with a regular file, not write into it) and, with ``need_folder``,
    ``FileNotFoundError`` when the destination folder does not exist (callers that create
    folders pass False). A symbolic link is followed for these checks; ``force`` then
    replaces the link itself (see ``atomic_output``).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a folder, expected a file path")
    if path.exists() and not path.is_file():
        raise OutputError(f"output {path} is not a regular file (a FIFO, socket or device): outputs are "
                          "written to a new file renamed into place, which would replace it; give a file path")
    if path.exists() and not force:
        raise FileExistsError(f"output file {path} already exists (use -f/--force to overwrite)")
    if need_folder and not path.parent.is_dir():
        if path.parent.exists():
            raise NotADirectoryError(f"output folder {path.parent} is a file, not a folder")
        raise FileNotFoundError(f"output folder {path.parent} does not exist")


@contextlib.contextmanager
def keep_existing(keep: bool = True) -> tp.Iterator[None]:
    """Within the block, ``atomic_output`` (without ``overwrite=``) never replaces a file that
    exists when its new file is moved into place: that raises ``OutputError`` ("already
    exists"). A command without ``-f`` checks its outputs first (``check_output``), but
    another process (a second command into the same folder) can write one in between;
    this closes that gap for every file the block writes, those of the long-file writers
    included. ``keep=False`` leaves overwriting allowed (``-f``)."""
    token = _OVERWRITE.set(not keep)
    try:
        yield
    finally:
        _OVERWRITE.reset(token)


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the complete file ``tmp`` onto ``path``: an atomic rename, or with ``overwrite``
    False a hard link that fails when ``path`` exists (atomically: no window in which
    another process's file could be replaced), then ``tmp`` removed. Where the file system has
    no hard links, a check then the rename. Recorded in the placement log, if any (both keep
    ``tmp``'s inode)."""
    _record(tmp, "+")  # before: a process killed right after placing has recorded it
    try:
        _move(tmp, path, overwrite)
    except BaseException:
        _record(tmp, "-")
        raise


def _move(tmp: Path, path: Path, overwrite: bool) -> None:
    """:func:`_place`'s move."""
    if overwrite:
        os.replace(tmp, path)
        return
    exists = OutputError(f"output file {path} already exists (use -f/--force to overwrite)")
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links here (EPERM, ENOSYS, an SMB share's own code...): check, then
        if os.path.lexists(path):  # rename (a small window); a real fault fails the rename too
            raise exists from None
        os.replace(tmp, path)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: str | Path, *, overwrite: bool | None = None) -> tp.Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The caller writes the complete file to the yielded path. If the ``with`` body
    raises, the temporary file is deleted and ``path`` is left untouched; an ``OSError`` about
    the temporary file (a full disk, a read-only folder) becomes ``OutputError`` naming ``path``. The final file
    gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``. A
    ``path`` that is a symbolic link is replaced by the new file (the link's target is left
    unchanged), as ``mv`` would: the rename is what makes the write atomic. ``overwrite``
    False (default: True, or False inside :func:`keep_existing`) never replaces a file that
    exists by then: ``OutputError`` ("already exists"), and the temporary file is removed.
    """
    path = Path(path)
    overwrite = _OVERWRITE.get() if overwrite is None else overwrite
    folder = os.path.abspath(path.parent)
    if folder not in _SWEPT:  # once per folder and process: a folder of many outputs is scanned once
        _SWEPT.add(folder)
        _remove_dead_temporaries(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{temporary_name_stem(path.name)}.{_owner_tag()}.", suffix=TEMP_SUFFIX,
                                        dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {error_reason(exc)}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        _place(tmp, path, overwrite)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError) and str(tmp) in (
                str(exc.filename), str(exc.filename2)):  # name the output, not its temporary file
            raise OutputError(f"cannot write {path}: {error_reason(exc)}") from exc
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, overwrite: bool | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_output``, also for ``overwrite``)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fo:
            fo.write(data)
            fo.flush()
            os.fsync(fo.fileno())


def error_reason(exc: BaseException) -> str:
    """``exc``'s reason in words, without an ``OSError``'s errno and file name (``Read-only
    file system``); the message, or the exception's type when it has none."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def file_in_the_way(path: str | Path) -> Path | None:
    """What keeps ``path`` from being a folder: ``path`` itself when it exists and is not a
    folder, else the nearest existing path above it when that is not a folder (a file, a broken
    link), else None (``path`` is a folder, or can be created as one)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def check_output_folder(folder: str | Path) -> None:
    """``OutputError`` when the output folder ``folder`` cannot be created because it, or a
    folder above it, is a file (:func:`file_in_the_way`); for a caller that creates it later,
    after its work, so that the work is not done for nothing."""
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise OutputError(f"cannot create output folder {folder}: {blocker} is a file")


def output_folder(path: str | Path, what: str = "output") -> Path:
    """Create the folder ``path`` (and its missing parents) and check that it takes new files.

    Raises ``OutputError`` naming ``what`` (``"output"``, ``"--out"``) and ``path`` when it
    exists and is not a folder, or cannot be created or written to (read-only file system,
    no permission); the check creates an anonymous temporary file, and a folder it created
    for a check that fails is removed again.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder")
    existed = path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        if not existed:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise OutputError(f"cannot write to {what} folder {path}: {error_reason(exc)}") from exc
    return path


def make_folder(folder: Path) -> None:
    """Create an output file's folder (and its parents), or ``OutputError`` naming it and why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {error_reason(exc)}") from exc


@contextlib.contextmanager
def staged_files(out: str | Path) -> tp.Iterator[Path]:
    """All-or-nothing output of several files into the folder ``out``.

    Yields a new hidden temporary folder on ``out``'s file system for the caller to write
    every file into: inside ``out`` when it is a folder already (it may be a mount point, a bind
    mount of the same file system included, or a link to a folder on another disk, where renames
    from beside it fail with EXDEV), else next to it. When the body succeeds, ``out`` is created if
    needed and each file is moved onto ``out/<name>`` with an atomic rename (replacing a file
    of that name).
    On any error (including ``KeyboardInterrupt``) the temporary folder is removed and
    ``out`` is left as it was; one that a killed process (``kill -9``) left is named like
    :func:`atomic_output`'s temporary files and removed by the next call there; an ``OSError`` (raised by the body or the moves) becomes
    ``OutputError("cannot write OUT: <reason>")``, naming ``out``, never the temporary path.
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        where = out if out.is_dir() else out.parent  # inside an existing one: it may be a mount point
        _remove_dead_temporaries(where)  # what a killed run (kill -9) left there
        prefix = f".{temporary_name_stem(out.name)}.{_owner_tag()}."
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=where))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {error_reason(exc)}") from exc
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, out / item.name)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {error_reason(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LockHeld(Exception):
    """Another process holds the lock of :func:`exclusive_lock`; ``holder`` is what it wrote
    into the lock file (``pid N on HOST``; empty if nothing)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def exclusive_lock(path: str | Path) -> tuple[tp.IO[str], bool]:
    """Hold an exclusive ``flock`` on ``path`` (created) for as long as the returned handle is
    open (the lock goes with the process, also on ``kill -9``); ``pid N on HOST`` is written
    into it. Returns ``(handle, True)``, or raises :class:`LockHeld` while another process
    holds it. On a file system without locks (NFS without lockd, some FUSE mounts: any other
    error) returns ``(handle, False)``, unlocked: the caller says so and goes on."""
    import fcntl

    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the caller holds it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return handle, False
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise LockHeld(holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle, True
