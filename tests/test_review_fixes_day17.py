"""The findings of the review of day 17's commits.

A. ``opencodec tokenize`` gives its ``--workers`` note only when ``--workers`` was given (its
   default, one process per core, is no request), and the note's arithmetic is true: the
   ``--shard-rows`` it names makes the shards it says and lets as many processes work.
B. ``hasattr(opencodec, "x.y")`` is False (the lazy ``__getattr__`` raised ModuleNotFoundError),
   and a submodule that fails to import is an AttributeError caused by its ImportError.
C. A skipped file (a name that is not UTF-8) whose escaped id is another file's real name does
   not refuse the whole job: it is reported in ``errors.jsonl`` and the other file is tokenised.
D. One helper, :func:`opencodec.errors.advice_for_entropy_model`, replaces the seven copies of
   "catch EntropyModelAsCodecError, give it the command's advice"; tokenize's advice is worded
   as every other command's (``opencodec tokenize takes a codec: ...``).
E. ``PROG`` is defined once, in a module that imports no torch.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import opencodec
from opencodec.errors import (ConfigError, EntropyModelAsCodecError, ModelLoadError, advice_for_entropy_model,
                              codec_advice)
from opencodec.tokens import InputError, TokenDataset, TokenizeOptions, list_inputs, tokenize
from opencodec.tokens.job import workers_note
import test_tokenize
from test_tokenize_checker_fixes import LM_FILE, _bytes_name, _cli, _tone

tiny_model_file = test_tokenize.tiny_model_file  # a module-scoped fixture (built again here)

SRC = Path(opencodec.__file__).resolve().parent
SHARD_NOTE = "(the shard size is part of the job: give it a new --out folder)"


# -- A. the --workers note --------------------------------------------------------------------------
def test_workers_note_wording_on_big_machines() -> None:
    """Before: "--shard-rows 4 would make 13 shards for as many processes" for 16 workers, and
    "1 of the 2 processes run"."""
    assert workers_note(16, 50, 1, 1000) == (
        "--workers 16: the job's 50 files fill 1 shard of up to 1000 (--shard-rows), one process's work "
        f"each, so 1 of the 16 processes runs; --shard-rows 4 would make 13 shards and let 13 processes work "
        f"{SHARD_NOTE}")
    assert workers_note(64, 100, 1, 1000) == (
        "--workers 64: the job's 100 files fill 1 shard of up to 1000 (--shard-rows), one process's work "
        f"each, so 1 of the 64 processes runs; --shard-rows 2 would make 50 shards and let 50 processes work "
        f"{SHARD_NOTE}")
    assert workers_note(2, 2, 1, 1000) == (
        "--workers 2: the job's 2 files fill 1 shard of up to 1000 (--shard-rows), one process's work each, "
        f"so 1 of the 2 processes runs; --shard-rows 1 would make 2 shards and let each of the 2 processes "
        f"work {SHARD_NOTE}")
    assert workers_note(4, 1, 1, 1000) == ("--workers 4: the job's 1 file fills 1 shard of up to 1000 "
                                           "(--shard-rows), one process's work each, so 1 of the 4 processes runs")


def test_workers_note_arithmetic_is_true() -> None:
    """For every job of 1..60 files and 2..20 workers on one shard: the advised shard size makes
    the shards the note says, no more than there are processes, each process has at most
    ceil(files / workers) files (no shard size does better), and the note says how many work."""
    pattern = re.compile(r"--shard-rows (\d+) would make (\d+) shards and let (each of the (\d+)|(\d+)) processes work")
    for files in range(1, 61):
        for workers in range(2, 21):
            note = workers_note(workers, files, 1, 1000)
            assert note is not None
            found = pattern.search(note)
            if files == 1:
                assert found is None, note
                continue
            assert found is not None, note
            rows, shards = int(found[1]), int(found[2])
            working = int(found[4]) if found[4] else int(found[5])
            assert shards == math.ceil(files / rows) == working <= workers, note
            assert rows == math.ceil(files / workers), note
            assert (found[4] is not None) == (shards == workers), note


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "c"
    _tone(root / "a.wav", 2400, 24000, seed=1)
    _tone(root / "b.wav", 2400, 24000, seed=2)
    return root


def test_no_workers_note_for_the_default_workers(tiny_model_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a default run on a 4-core machine printed "--workers 4: the job's 2 files fill 1
    shard ...", naming a flag the user never gave."""
    import opencodec.tokens.job as job

    monkeypatch.setattr(job, "default_workers", lambda device: 4)  # a 4-core machine
    args = ["tokenize", str(_corpus(tmp_path)), "-m", str(tiny_model_file), "--device", "cpu"]
    assert _cli(*args, "--out", str(tmp_path / "o1")) == 0
    err = capsys.readouterr().err
    assert "--workers" not in err and "--shard-rows" not in err, err
    assert "2 files" in err  # (the run's summary: not quiet)
    assert _cli(*args, "--workers", "4", "--out", str(tmp_path / "o2")) == 0  # asked for: said
    assert capsys.readouterr().err.count(
        "--workers 4: the job's 2 files fill 1 shard of up to 1000 (--shard-rows), one process's work each, "
        "so 1 of the 4 processes runs; --shard-rows 1 would make 2 shards and let 2 processes work") == 1


# -- B. lazy attributes of the package --------------------------------------------------------------
def test_a_dotted_name_is_no_attribute() -> None:
    """Before: ModuleNotFoundError: No module named 'opencodec.x'."""
    assert not hasattr(opencodec, "x.y")
    assert not hasattr(opencodec, "errors.nope")
    with pytest.raises(AttributeError, match=r"^module 'opencodec' has no attribute 'x\.y'$"):
        getattr(opencodec, "x.y")
    assert hasattr(opencodec, "errors") and opencodec.errors.__name__ == "opencodec.errors"
    assert not hasattr(opencodec, "no_such_module")


def test_a_submodule_that_fails_to_import_is_an_attribute_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_day17.py").write_text("raise ImportError('needs a package that is not installed')\n")
    monkeypatch.setattr(opencodec, "__path__", [*opencodec.__path__, str(tmp_path)])
    assert not hasattr(opencodec, "broken_day17")
    with pytest.raises(AttributeError, match="has no attribute 'broken_day17'") as caught:
        getattr(opencodec, "broken_day17")
    assert isinstance(caught.value.__cause__, ImportError)
    assert str(caught.value.__cause__) == "needs a package that is not installed"
    assert "opencodec.broken_day17" not in sys.modules and "broken_day17" not in vars(opencodec)


# -- C. an escaped id that is another file's name ----------------------------------------------------
def test_a_skipped_file_whose_escaped_id_is_taken_does_not_refuse_the_job(tiny_model_file: Path,
                                                                         tmp_path: Path) -> None:
    """Before: InputError "two files have the id 'b\\\\xe9.wav'" for the whole job."""
    one, two = tmp_path / "one", tmp_path / "two"
    _tone(one / "b\\xe9.wav", 2400, 24000, seed=3)  # a file literally named b, backslash, x, e, 9
    latin1 = [_bytes_name(one, b"b\xe9.wav", seed=4), _bytes_name(two, b"b\xe9.wav", seed=5)]
    items = list_inputs([one, two])
    assert [(i.id, i.error != "") for i in items] == [("b\\xe9.wav", False), ("b\\xe9.wav", True),
                                                      ("b\\xe9.wav", True)]
    out = tmp_path / "out"
    summary = tokenize(TokenizeOptions(inputs=[str(one), str(two)], out=out, model=str(tiny_model_file),
                                       device="cpu"))
    assert summary.index is not None and (summary.index["rows"], summary.index["errors"]) == (1, 2)
    [row] = list(TokenDataset(out))
    assert row["id"] == "b\\xe9.wav"
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text("utf-8").splitlines()]
    assert sorted(e["path"] for e in errors) == [f"{one}/b\\xe9.wav", f"{two}/b\\xe9.wav"]  # told apart
    assert all(e["id"] == "b\\xe9.wav" and "the file name is not valid UTF-8" in e["error"] for e in errors)
    assert all(p.is_file() for p in latin1)


def test_two_readable_files_with_one_id_are_still_refused(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        _tone(tmp_path / folder / "a.wav", 240, 24000)
    with pytest.raises(InputError, match=r"^two files have the id 'a\.wav' "):
        list_inputs([tmp_path / "one", tmp_path / "two"])


# -- D. one helper for an entropy model given as a codec ---------------------------------------------
def _entropy_model() -> EntropyModelAsCodecError:
    return EntropyModelAsCodecError("lm.safetensors: this is an entropy model, not a codec",
                                    "use --lm-model for an entropy model", joiner=": ")


def test_advice_for_entropy_model() -> None:
    advice = codec_advice("info")
    assert advice == "opencodec info takes a codec: pass a codec's name or weights file to -m/--model"
    with pytest.raises(EntropyModelAsCodecError) as caught:
        with advice_for_entropy_model(advice):
            raise _entropy_model()
    assert str(caught.value) == f"lm.safetensors: this is an entropy model, not a codec: {advice}"
    assert caught.value.__suppress_context__ and caught.value.advice == advice
    other = ModelLoadError("no such model")
    with pytest.raises(ModelLoadError) as caught_other:  # any other error passes as it is
        with advice_for_entropy_model(advice):
            raise other
    assert caught_other.value is other
    with pytest.raises(ConfigError) as config_error:  # error=: another type, from the advised error
        with advice_for_entropy_model("init_from takes a codec", lambda e: ConfigError(f"field: {e}")):
            raise _entropy_model()
    assert str(config_error.value) == ("field: lm.safetensors: this is an entropy model, not a codec: "
                                       "init_from takes a codec")


def test_one_copy_of_the_advice_code() -> None:
    """Before: seven ``except EntropyModelAsCodecError ... with_advice`` copies (cli/common,
    cli/tokens, train/config_checks, train/lm_eval, eval/mushra/build, eval/lineup,
    tokens/dataset), and library modules could not use the CLI's."""
    texts = {str(p.relative_to(SRC)): p.read_text("utf-8") for p in SRC.rglob("*.py") if p.name != "errors.py"}
    assert sorted(name for name, text in texts.items() if ".with_advice(" in text) == []
    # the loader, which puts the file's name before the problem and keeps the advice, and no other
    assert sorted(name for name, text in texts.items()
                  if "except EntropyModelAsCodecError as" in text) == ["weights_layout.py"]
    assert "opencodec.errors" in sys.modules
    code = "import opencodec.errors, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC.parent)})
    assert done.stdout == "False\n", done.stderr


def test_tokenize_advice_is_worded_as_the_other_commands() -> None:
    """Before: "tokenize takes a codec: ..." where every other command says "opencodec CMD takes a codec"."""
    from opencodec.cli.tokens import CODEC_ADVICE
    from opencodec.train.lm_eval import REPORT_LM_ADVICE

    assert CODEC_ADVICE == "opencodec tokenize takes a codec: pass a codec's name or weights file to --model"
    assert REPORT_LM_ADVICE == ("opencodec train-lm report takes a codec: pass a codec's name or weights file "
                                "to --codec (the entropy model goes to --lm)")


def test_tokenize_an_entropy_model_as_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _cli("-q", "tokenize", str(_corpus(tmp_path)), "--out", str(out), "-m", str(LM_FILE),
                "--device", "cpu") == 1
    assert capsys.readouterr().err.splitlines() == [
        f"opencodec: error: {LM_FILE}: this is an entropy model, not a codec: opencodec tokenize takes a codec: "
        "pass a codec's name or weights file to --model"]
    assert not out.exists()


def test_the_trainers_config_error_is_built_on_the_helper() -> None:
    from opencodec.train.config_checks import codec_field

    with pytest.raises(ConfigError) as caught:
        with codec_field("init_from", "init_from takes a codec's name"):
            raise _entropy_model()
    assert str(caught.value) == ("config field init_from: lm.safetensors: this is an entropy model, not a codec; "
                                 "init_from takes a codec's name")
    assert not isinstance(caught.value, EntropyModelAsCodecError) and caught.value.__suppress_context__


# -- E. one PROG -------------------------------------------------------------------------------------
def test_prog_is_defined_once() -> None:
    """Before: ``PROG = "opencodec"`` in both cli/main.py and cli/common.py."""
    defining = sorted(p.name for p in (SRC / "cli").glob("*.py")
                      if re.search(r"^PROG\s*=", p.read_text("utf-8"), re.MULTILINE))
    assert defining == ["wrappers.py"]
    from opencodec.cli import common, wrappers

    main = importlib.import_module("opencodec.cli.main")  # (opencodec.cli.main is also its function)
    assert common.PROG == main.PROG == wrappers.PROG == "opencodec"
