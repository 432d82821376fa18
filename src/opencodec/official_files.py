"""Official EnCodec files: the local cache folder, download with hash check, offline mode.

``official_file_path(filename)`` finds ``filename`` (e.g. ``encodec_24khz-d7cc33bc.th``) in
``cache_dir()`` (``$OPENCODEC_CACHE``, default ``~/.cache/opencodec``) or torch hub's
checkpoint folder, checks it against the sha256 prefix in its name, and otherwise downloads
it from :data:`ROOT_URL` (unless ``OPENCODEC_OFFLINE=1``), atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch

from .errors import ModelLoadError

ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"


def cache_dir() -> Path:
    """Folder holding downloaded checkpoints: ``$OPENCODEC_CACHE`` or ``~/.cache/opencodec``."""
    env = os.environ.get("OPENCODEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "opencodec"


def _offline() -> bool:
    return os.environ.get("OPENCODEC_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes, read 1 MiB at a time (``OSError`` if unreadable)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_prefix_ok(path: Path, filename: str | None = None) -> tuple[bool, str, str]:
    """Check a checkpoint against the hash prefix in its name (``name-<sha256 prefix>.ext``).

    Returns (ok, expected prefix, actual prefix).
    """
    stem = Path(filename or path.name).stem
    expected = stem.rsplit("-", 1)[-1]
    actual = file_sha256(path)[: len(expected)]
    return actual == expected, expected, actual


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-", suffix=dest.suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            shutil.copyfileobj(resp, out)
        ok, expected, actual = sha256_prefix_ok(Path(tmp), dest.name)
        if not ok:
            raise ModelLoadError(f"downloaded {url} has sha256 prefix {actual}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def official_file_path(filename: str, what: str | None = None,
                       alternative: str = "pass a weights file path instead") -> Path:
    """Local path of the official file ``filename`` (e.g. ``encodec_24khz-d7cc33bc.th``).

    Looked up in ``cache_dir()`` and in torch hub's checkpoint folder, checked against the
    sha256 prefix in its name, and downloaded from ``ROOT_URL`` into ``cache_dir()`` when
    missing (unless ``OPENCODEC_OFFLINE`` is set). ``what`` names the thing in the error
    message (default: the file), ``alternative`` is the last hint of that message.
    Raises ``ModelLoadError`` for a corrupt file, or a missing one that cannot be downloaded.
    """
    what = what or f"file {filename!r}"
    folders = [cache_dir(), Path(torch.hub.get_dir()) / "checkpoints"]
    for folder in folders:
        path = folder / filename
        if path.is_file():
            ok, expected, actual = sha256_prefix_ok(path)
            if not ok:
                raise ModelLoadError(
                    f"{path} is corrupt: its sha256 starts with {actual}, expected {expected}. "
                    f"Delete it and put the official {filename} there.")
            return path
    dest = cache_dir() / filename
    url = ROOT_URL + filename
    reason = "downloads are disabled (OPENCODEC_OFFLINE is set)"
    if not _offline():
        try:
            _download(url, dest)
            return dest
        except ModelLoadError:
            raise
        except (OSError, ValueError) as exc:  # URLError is an OSError
            reason = f"downloading {url} failed ({exc})"
    raise ModelLoadError(
        f"{what} needs the weights file {filename}, which is not in {' or '.join(map(str, folders))} "
        f"and {reason}. "
        f"Get {filename} from {url} and put it at {dest} "
        f"(or set OPENCODEC_CACHE to the folder that holds it), or {alternative}.")
