"""``opencodec._files``: outputs are never clobbered by accident, never left partial, and their
errors name the output the user asked for (not a hidden temporary file)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest

from opencodec._files import atomic_output, check_output
from opencodec.errors import OutputError


def test_a_failed_write_names_the_output_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.ecdc"
    with pytest.raises(OutputError, match=f"cannot write {out}: No space left on device") as info:
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unrelated_error_passes_unchanged(tmp_path: Path) -> None:
    """An OSError that is not about the output (e.g. reading the input) keeps its type."""
    with pytest.raises(FileNotFoundError, match="input.wav"):
        with atomic_output(tmp_path / "x.ecdc"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "input.wav")
    assert list(tmp_path.iterdir()) == []


def test_no_temporary_file_possible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):  # a read-only folder as root still takes files: simulate it
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".x.ecdc.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'x.ecdc'}: Read-only file system$"):
        with atomic_output(tmp_path / "x.ecdc"):
            pass


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "speech.wav").write_bytes(b"RIFF")
    with pytest.raises(NotADirectoryError, match="output folder .*speech.wav is a file, not a folder"):
        check_output(tmp_path / "speech.wav" / "x.ecdc", force=False)
    with pytest.raises(FileNotFoundError, match="output folder .*nowhere does not exist"):
        check_output(tmp_path / "nowhere" / "x.ecdc", force=False)
