"""Safe output files: never overwrite by accident, never leave a partial file behind.

Every file opencodec writes goes through ``atomic_output``: the data is written to a
hidden temporary file in the destination folder (same file system, so the final
``os.replace`` is an atomic rename), and the temporary file is removed if anything
fails, including ``KeyboardInterrupt``. A reader of the destination path therefore sees
either the old file (or nothing) or the complete new file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing as tp
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def check_output(path: str | Path, force: bool, *, need_folder: bool = True) -> None:
    """Refuse to clobber: raise ``FileExistsError`` if ``path`` exists and not ``force``.

    Also raises ``IsADirectoryError`` when ``path`` is a folder (never replaced, even with
    ``force``) and, with ``need_folder``, ``FileNotFoundError`` when the destination
    folder does not exist (callers that create folders pass False).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a folder, expected a file path")
    if path.exists() and not force:
        raise FileExistsError(f"output file {path} already exists (use -f/--force to overwrite)")
    if need_folder and not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> tp.Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The caller writes the complete file to the yielded path. If the ``with`` body
    raises, the temporary file is deleted and ``path`` is left untouched. The final file
    gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_output``)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fo:
            fo.write(data)
            fo.flush()
            os.fsync(fo.fileno())
