"""``file_jobs.Job`` takes its paths as str or path-like, like the rest of the file API
(``plan_compress``, ``describe_file``), keeps them as ``Path``, and refuses any other type
with a ``TypeError`` naming the field; jobs built from str paths compress and decompress
the same bytes as jobs built from ``Path``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.codec_files import FileCompressor, FileDecompressor, OutputOptions
from opencodec.file_jobs import Job, Plan, run_jobs

from codec_helpers import tiny_files_ckpt  # noqa: F401, F811 (a pytest fixture)

RATE = 24_000


class StrPathLike:
    """A path-like that is not a ``Path`` (as other libraries' path objects are)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


class BytesPathLike:
    """A path-like whose path is bytes, which ``Path`` does not take."""

    def __fspath__(self) -> bytes:
        return b"a.wav"


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def _wav(path: Path, seconds: float = 0.3) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.uniform(-1, 1, int(seconds * RATE))).astype(np.float32), RATE, subtype="PCM_16")
    return path


@pytest.mark.parametrize("make", [str, Path, StrPathLike], ids=["str", "Path", "PathLike"])
def test_paths_of_any_path_type_are_kept_as_path(make: type) -> None:
    job = Job(make("in/a.wav"), make("out/a.ecdc"), conflict=make("in/b.wav"))
    assert (job.src, job.dst, job.conflict) == (Path("in/a.wav"), Path("out/a.ecdc"), Path("in/b.wav"))
    assert all(type(p) is type(Path()) for p in (job.src, job.dst, job.conflict))
    assert job == Job(Path("in/a.wav"), Path("out/a.ecdc"), Path("in/b.wav"))
    assert Job(make("a.wav"), make("a.ecdc")).conflict is None
    again = pickle.loads(pickle.dumps(job))  # as jobs travel to spawned worker processes
    assert again == job and isinstance(again.src, Path)


@pytest.mark.parametrize("field,args,shown", [
    ("src", (7, "a.ecdc"), "got int 7"),
    ("src", (None, "a.ecdc"), "got NoneType None"),
    ("dst", ("a.wav", b"a.ecdc"), "got bytes b'a.ecdc'"),
    ("dst", ("a.wav", ["a.ecdc"]), "got list ['a.ecdc']"),
    ("src", (BytesPathLike(), "a.ecdc"), "got BytesPathLike"),
    ("conflict", ("a.wav", "a.ecdc", 3.5), "got float 3.5"),
])
def test_other_types_are_refused_naming_the_field(field: str, args: tuple[object, ...], shown: str) -> None:
    with pytest.raises(TypeError) as caught:
        Job(*args)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"Job.{field} must be a str or path-like (pathlib.Path), ")
    assert shown in message and "\n" not in message


@pytest.mark.parametrize("field,args", [("src", ("", "a.ecdc")), ("dst", ("a.wav", "")),
                                        ("conflict", ("a.wav", "a.ecdc", ""))])
def test_an_empty_str_is_refused(field: str, args: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=rf"^Job\.{field} is an empty path; give a file name$"):
        Job(*args)


def test_str_jobs_compress_and_decompress_the_same_bytes(tmp_path: Path, tiny_files_ckpt: str) -> None:
    src = _wav(tmp_path / "in.wav")
    compressor = FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())
    by_path = compressor(Job(src, tmp_path / "path.ecdc"))
    by_str = compressor(Job(str(src), str(tmp_path / "str.ecdc")))
    assert by_str.dst == tmp_path / "str.ecdc" and isinstance(by_str.dst, Path)
    assert (tmp_path / "str.ecdc").read_bytes() == (tmp_path / "path.ecdc").read_bytes()
    assert by_str.size_bytes == by_path.size_bytes == (tmp_path / "path.ecdc").stat().st_size

    decompressor = FileDecompressor(tiny_files_ckpt, OutputOptions())
    decompressor(Job(tmp_path / "path.ecdc", tmp_path / "path.wav"))
    decompressor(Job(StrPathLike(os.fspath(tmp_path / "str.ecdc")), str(tmp_path / "str.wav")))
    assert (tmp_path / "str.wav").read_bytes() == (tmp_path / "path.wav").read_bytes()
    assert sf.info(str(tmp_path / "str.wav")).frames == int(0.3 * RATE)


def test_a_str_plan_runs_with_its_conflicts_named(tmp_path: Path) -> None:
    for name in "ab":
        (tmp_path / name).write_text(name)
    plan = Plan([Job(str(tmp_path / "a"), str(tmp_path / "o")),
                 Job(str(tmp_path / "b"), str(tmp_path / "o"), conflict=str(tmp_path / "a")),
                 Job(str(tmp_path / "a"), str(tmp_path / "a"))], folder=True)

    def copy(job: Job, folder: bool) -> str:
        job.dst.write_text(job.src.read_text())
        return job.dst.name

    outcomes = list(run_jobs(plan, copy))
    assert [o.result for o in outcomes] == ["o", None, None]
    assert (tmp_path / "o").read_text() == "a"
    assert str(outcomes[1].error) == (f"output {tmp_path / 'o'} would also be written from {tmp_path / 'a'}; "
                                      "skipped (rename one of them)")
    assert str(outcomes[2].error) == f"output {tmp_path / 'a'} is the input file itself; give another output"


def test_an_empty_path_names_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``Path("")`` is the current folder, so ``compress "$UNSET"`` compressed every audio file
    under it: the command lines and the plan functions refuse an empty path, and write nothing."""
    from opencodec import cli
    from opencodec.codec_files import OutputOptions, plan_compress, plan_decompress
    from opencodec.errors import UsageError

    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "a.wav", np.zeros(2400, dtype=np.float32), 24000)
    for argv in (["compress", ""], ["compress", "a.wav", ""], ["decompress", ""]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            "empty path (''): it names no file; an unset shell variable?")
    for call in (lambda: plan_compress("", None, OutputOptions()), lambda: plan_decompress("", None, OutputOptions()),
                 lambda: plan_compress("a.wav", "", OutputOptions())):
        with pytest.raises(UsageError, match=r"^the (input|output) path is empty \(''\): it names no file"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
