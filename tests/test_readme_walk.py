"""The README run as a newcomer runs it (walkthrough "readme"): what its commands print where
that was not what it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec_helpers import with_header_key
from test_tokenize import tiny_model_file  # noqa: F401 (pytest fixture)


def test_tokenize_rerun_of_a_finished_job_prints_no_empty_bar(tiny_model_file: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """README, Tokenising: the bar "ends at its total (100%) when the work is done". Rerunning
    a finished job (nothing left to encode) printed a bar stuck at ``0%| | 0/0 s``; it now
    prints no bar, only the summary lines (as a compress folder run that skips every file)."""
    from opencodec.cli import main
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "a.wav", (0.1 * np.random.default_rng(3).standard_normal(7200)).astype(np.float32), 24000)
    command = ["tokenize", str(data), "--out", str(tmp_path / "out"), "-m", str(tiny_model_file), "--device", "cpu",
               "--workers", "1"]
    assert main(command) == 0
    first = capsys.readouterr().err
    assert "tokenize: 100%|" in first  # the first run shows its bar, ending full
    assert main(command) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("tokenize:")] == []  # was "tokenize:   0%|  | 0/0 s"
    assert len(lines) == 2, lines
    assert re.fullmatch(r"0 files, 0 s of audio, 0 errors, [0-9.]+ s; shards written 0, already done 1", lines[0])
    assert lines[1] == f"{tmp_path / 'out'}: 1 shard, 1 row, 0.3 s of audio, 0 errors"


def test_tokenize_bar_with_no_work_up_front_appears_when_work_comes(capsys: pytest.CaptureFixture[str]) -> None:
    """A job whose headers give 0 s to do makes no bar at the start; should any audio come
    after all (a header that said less than the file holds), the bar appears then and grows."""
    from opencodec.cli.tokens import _Progress
    progress = _Progress(False, "tokenize")
    update = progress.start(0.0)
    assert progress.bar is None
    progress.finish()
    update(0.5, 1, 0)
    assert progress.bar is not None and (progress.bar.n, progress.bar.total) == (0.5, 0.5)
    progress.close()
    assert "0.5/0.5 s" in capsys.readouterr().err


def test_a_streamed_decode_gives_the_clipping_hint_to_clipping_warnings_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """README, Command line: "unknown header keys are ignored with a warning", and "clipping is
    reported (or avoided with --rescale)". A long file (decoded streamed) whose header has an
    unknown key printed that warning with the clipping advice appended, "[-r/--rescale scales
    down, --float keeps the peaks]", which has nothing to do with it; a clipped output still
    gets it. (STREAMING_MIN_SECONDS lowered: a 2 s file takes the long-file path.)"""
    from opencodec import codec_files
    from opencodec.cli import main
    from opencodec.cli.codec import CLIP_HINT
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    t = np.arange(48000) / 24000
    sf.write(tmp_path / "loud.wav", (0.999 * np.sign(np.sin(2 * np.pi * 200 * t))).astype(np.float32), 24000,
             subtype="FLOAT")  # a full-scale square wave: decoded, it peaks above 1
    assert main(["-q", "compress", str(tmp_path / "loud.wav"), str(tmp_path / "loud.ecdc")]) == 0
    odd = with_header_key(tmp_path / "loud.ecdc", tmp_path / "odd.ecdc", "zz")
    capsys.readouterr()
    assert main(["-q", "decompress", str(odd), str(tmp_path / "odd.wav")]) == 0
    lines = capsys.readouterr().err.splitlines()
    header_lines = [line for line in lines if "unknown key(s) 'zz' ignored" in line]
    clip_lines = [line for line in lines if "exceeds full scale 1.0; clipped" in line]
    assert header_lines and not [line for line in header_lines if CLIP_HINT in line], lines
    assert len(clip_lines) == 1 and clip_lines[0].endswith(CLIP_HINT), lines


@pytest.mark.parametrize(("argv", "module", "expected"), [
    (["-q", "eval", "--models", "m", "--set", "s", "--out", "o"], "opencodec.eval.report",
     ["--models", "m", "--set", "s", "--out", "o", "-q"]),
    (["--quiet", "eval", "--help"], "opencodec.eval.report", ["--help", "-q"]),
    (["-q", "train", "--run-dir", "r", "c.yaml"], "opencodec.train.solver", ["--run-dir", "r", "c.yaml", "--no-progress"]),
    (["-q", "train-lm", "--max-steps", "1", "c.yaml"], "opencodec.train.lm_solver",
     ["--max-steps", "1", "c.yaml", "--no-progress"]),
    (["-q", "mushra", "build", "--set", "s"], "opencodec.eval.mushra.cli", ["build", "--set", "s", "-q"]),
    (["-q", "-q", "eval", "--set", "s"], "opencodec.eval.report", ["--set", "s", "-q"]),
])
def test_global_quiet_before_a_wrapped_tool_whose_arguments_start_with_an_option(
        argv: list[str], module: str, expected: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """README, Evaluation and Training: `opencodec -q eval ...` hides the bar and `opencodec -q train
    ...` trains without it. Every eval command line starts with an option (`--models`, `--set`),
    and argparse's REMAINDER took none as the tool's: `opencodec -q eval --models ...` was
    "opencodec: error: unrecognized arguments: --models" (also `-q train --run-dir R CONFIG`,
    `-q eval --help`). The arguments now reach the tool as given, with its quiet flag."""
    import importlib

    from opencodec.cli.main import main as opencodec_main

    seen: list[list[str]] = []
    monkeypatch.setattr(importlib.import_module(module), "main", lambda args: seen.append(list(args)) or 0)
    assert opencodec_main(argv) == 0, capsys.readouterr().err
    assert seen == [expected]


def test_global_options_other_than_quiet_before_a_wrapped_tool_stay_the_main_parsers() -> None:
    """`opencodec --version train` and `opencodec -h eval` are the command's own --version and
    --help, as before (only -q/--quiet may come between `opencodec` and a wrapped tool)."""
    from opencodec.cli.main import main as opencodec_main
    assert opencodec_main(["--version", "train"]) == 0
    assert opencodec_main(["-h", "eval"]) == 0
