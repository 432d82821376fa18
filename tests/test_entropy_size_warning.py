"""Why an entropy-coded file is larger than plain coding: the warning blames the
entropy model when the body alone is larger, the fixed header and checksums otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencodec.cli import codec as cli_codec
from opencodec.codec_files import FileCompressor, FileResult, OutputOptions
from opencodec.file_jobs import Job

from train_helpers import _always_offline, run, tone_noise  # noqa: F401


# -- why an entropy-coded file is larger than plain coding ----------------------------------------------------------
def _result(body_overhead: int) -> FileResult:
    # a 1-step entropy model at 6 kbps: 1365 bytes against 1219 plain
    return FileResult(Path("a.wav"), Path("a.ecdc"), 1.43, size_bytes=1365, plain_bytes=1219, header_extra=92,
                      checksums=True, body_overhead=body_overhead)


def test_warning_blames_the_model_when_the_body_alone_is_larger(capsys: pytest.CaptureFixture[str]) -> None:
    result = _result(8)  # its body codes the codes into 46 bytes more than plain coding's
    assert result.body_extra == 46 and not cli_codec._header_bound(result)
    cli_codec._warn_larger([result], 1)
    err = capsys.readouterr().err
    assert "the entropy model predicts these codes poorly" in err and "header" not in err
    result = _result(60)  # fixed costs of 152 bytes: the body itself is 6 bytes smaller than plain
    assert result.body_extra == -6 and cli_codec._header_bound(result)
    cli_codec._warn_larger([result], 1)
    err = capsys.readouterr().err
    assert ("the entropy-coded format's header (92 bytes more: the entropy model's name and hash) and checksums "
            "outweigh what the entropy model saves (6 bytes on the codes) on so short an input") in err


def test_compress_names_the_right_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled codec and entropy model at 1.5 kbps, deterministic format (86 header bytes
    more, 7 bytes of checks and coder end on a one-segment file): on a tone in noise its body
    is larger than plain coding's (the old heuristic blamed the header, as the 86 extra header
    bytes exceed the 27 extra body bytes); on half a second of another, the body is smaller and
    only the fixed costs make the file larger."""
    poor = tone_noise(tmp_path / "poor.wav", 1.0, 220.0, 0.05)
    compressor = FileCompressor(None, 1.5, OutputOptions(), lm=True)
    result = compressor(Job(poor, tmp_path / "direct.ecdc"))
    assert (result.header_extra, result.body_overhead) == (86, 7)
    assert result.size_bytes - result.plain_bytes == 113 and result.body_extra == 20
    code, _, err = run(capsys, "compress", poor, tmp_path / "poor.ecdc", "-b", "1.5", "--lm", "-q")
    assert code == 0 and err.count("warning:") == 1 and "is larger than plain coding" in err
    assert "the entropy model predicts these codes poorly" in err and "header" not in err

    short = tone_noise(tmp_path / "short.wav", 0.5, 440.0, 0.05)
    code, _, err = run(capsys, "compress", short, tmp_path / "short.ecdc", "-b", "1.5", "--lm", "-q")
    assert code == 0 and err.count("warning:") == 1
    assert "and checksums outweigh what the entropy model saves (13 bytes on the codes) on so short" in err
    assert "predicts" not in err

    official = FileCompressor(None, 1.5, OutputOptions(), lm=True, lm_format="official")
    assert official(Job(poor, tmp_path / "official.ecdc")).body_overhead == 3  # the coder's end only
