"""Progress bars (``opencodec.progress``): tqdm's redraws on a terminal, plain lines in a log."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tqdm import std as tqdm_std
from tqdm import tqdm

from opencodec import cli
from opencodec.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain_lines(text: str) -> list[str]:
    """The lines of a log's text, checked to be whole, non-empty lines without redraws."""
    assert text.endswith("\n") and "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    return lines


def test_a_log_gets_a_line_per_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODEC_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    assert list(progress_bar(range(5), desc="items", file=out, colour="green")) == list(range(5))
    lines = _plain_lines(out.getvalue())
    assert len(lines) == 6  # the start, each item, and no repeat of 5/5 at the close
    for i, line in enumerate(lines):
        assert line.startswith("items: ") and f" {i}/5 " in line


def test_messages_and_postfixes_between_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODEC_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    bar = progress_bar(total=3, desc="files", unit="file", file=out)
    bar.update(1)
    tqdm.write("a warning", file=out)  # clears and redraws the bars on that file
    bar.set_postfix(errors=0)
    bar.update(2)
    bar.close()
    bar.close()
    lines = _plain_lines(out.getvalue())
    assert len(lines) == 5 and lines[2] == "a warning"
    assert " 1/3 " in lines[1] and " 1/3 " in lines[3] and "errors=0" in lines[3]
    assert " 3/3 " in lines[4] and "errors=0" in lines[4]


def test_a_line_every_30_seconds_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODEC_PROGRESS_SECONDS", raising=False)
    now = [1000.0]
    monkeypatch.setattr(tqdm_std, "time", lambda: now[0])  # the bar's clock (tqdm's _time)
    out = io.StringIO()
    bar = progress_bar(total=100, desc="steps", file=out)
    for _ in range(100):  # one step a second
        now[0] += 1.0
        bar.update(1)
    bar.close()
    lines = _plain_lines(out.getvalue())
    assert [re.search(r" (\d+/100) ", line)[1] for line in lines] == [
        "0/100", "30/100", "60/100", "90/100", "100/100"]


def test_a_short_loop_gets_a_first_and_a_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODEC_PROGRESS_SECONDS", raising=False)
    out = io.StringIO()
    for _ in progress_bar(range(2000), desc="fast", file=out):
        pass
    lines = _plain_lines(out.getvalue())
    assert len(lines) == 2 and " 0/2000 " in lines[0] and " 2000/2000 " in lines[1]


@pytest.mark.parametrize("seconds", ["0", "30"])
def test_a_terminal_gets_tqdm_redraws(monkeypatch: pytest.MonkeyPatch, seconds: str) -> None:
    monkeypatch.setenv("OPENCODEC_PROGRESS_SECONDS", seconds)
    out = _Terminal()
    bar = progress_bar(range(5), desc="items", file=out, mininterval=0)
    assert type(bar) is tqdm
    list(bar)
    text = out.getvalue()
    assert text.startswith("\r") and text.count("\r") >= 6 and "5/5" in text and text.endswith("\n")


@pytest.mark.parametrize("file", [io.StringIO, _Terminal])
def test_disable_writes_nothing(monkeypatch: pytest.MonkeyPatch, file: type[io.StringIO]) -> None:
    monkeypatch.setenv("OPENCODEC_PROGRESS_SECONDS", "0")
    out = file()
    bar = progress_bar(range(3), desc="items", file=out, disable=True)
    assert list(bar) == [0, 1, 2]
    bar.close()
    assert out.getvalue() == ""


def test_compress_of_a_folder_logs_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODEC_PROGRESS_SECONDS", raising=False)
    src = tmp_path / "in"
    src.mkdir()
    t = np.arange(2400) / 24_000
    for i in range(3):
        sf.write(src / f"s{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 24_000)
    assert cli.main(["compress", str(src), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err  # not a terminal
    assert "\r" not in err and "\x1b" not in err
    bars = [line for line in err.splitlines() if line.startswith("compress: ") and "|" in line]
    assert len(bars) == 2 and " 0/3 " in bars[0] and " 3/3 " in bars[-1]
