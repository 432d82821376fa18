"""``opencodec tokenize``: the note on idle workers (wording and arithmetic), files whose escaped id
is taken, and the advice when an entropy model is given as the codec."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from opencodec.tokens import InputError, list_inputs, TokenDataset, tokenize, TokenizeOptions
from opencodec.tokens.job import workers_note

import test_tokenize
from codec_helpers import _bytes_name, _cli, _tone, LM_FILE


tiny_model_file = test_tokenize.tiny_model_file  # a module-scoped fixture (built again here)


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
