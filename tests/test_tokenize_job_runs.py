"""``opencodec tokenize`` jobs that end together or rerun: ranks that finish together report the job
once, ``finalize`` names the call that wrote the index, and ``--workers 2`` reports a job whose deleted
shard was rewritten or whose files all failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.tokens import tokenize, TokenizeOptions

from codec_helpers import tiny_model_file  # noqa: F401, F811 (pytest fixtures)


# -- 3. torchrun: one rank reports the finished job -----------------------------------------------------------
def test_ranks_that_finish_together_report_the_job_once(tiny_model_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """Two shards, two ranks: rank 1 runs all of its job, then rank 0 finalizes, between
    rank 0's shard and its finalize (both find every shard written, as ranks that finish at
    the same moment do). The one whose finalize wrote index.json reports the job."""
    from opencodec.cli import main
    from opencodec.tokens import job
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(7200)).astype(np.float32), 24000)
    argv = ["tokenize", str(data), "--out", str(tmp_path / "out"), "-m", str(tiny_model_file), "--device", "cpu",
            "--shard-rows", "1"]
    real_finalize = job.finalize
    said = {}

    def rank_1_finishes_first(folder: Path, num_shards: int):  # rank 0's finalize
        said[0] = capsys.readouterr().err
        monkeypatch.setattr(job, "finalize", real_finalize)
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert main(argv) == 0
        said[1] = capsys.readouterr().err
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")
        return real_finalize(folder, num_shards)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(job, "finalize", rank_1_finishes_first)
    assert main(argv) == 0
    said[0] += capsys.readouterr().err
    job_line = f"{tmp_path / 'out'}: 2 shards, 2 rows, 0.6 s of audio, 0 errors\n"
    assert "rank 1/2: 1 file, 0.3 s of audio" in said[1] and said[1].endswith(job_line)
    assert "rank 0/2: 1 file, 0.3 s of audio" in said[0] and job_line not in said[0]


def test_finalize_says_which_call_wrote_the_index(tmp_path: Path) -> None:
    from opencodec.tokens.shards import INDEX_FILE, _place_index
    index = {"rows": 1}
    assert _place_index(tmp_path / INDEX_FILE, index) is True
    assert _place_index(tmp_path / INDEX_FILE, index) is False  # the same index: another rank's
    assert _place_index(tmp_path / INDEX_FILE, {"rows": 2}) is True  # a stale one replaced
    assert (tmp_path / INDEX_FILE).read_text() == '{\n  "rows": 2\n}\n'


def _two_files(root: Path, good: bool) -> Path:
    """Two 0.5 s WAVs (16 kHz mono), or two ``.wav`` files holding no audio (both fail)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        if good:
            sf.write(root / f"{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        else:
            (root / f"{i}.wav").write_bytes(b"no audio here " * 20)
    return root


def test_workers_2_alone_reports_the_job_after_a_deleted_shard_is_rewritten(tiny_model_file: Path,
                                                                             tmp_path: Path) -> None:
    data = _two_files(tmp_path / "data", good=True)
    out = tmp_path / "out"

    def run() -> bool:
        summary = tokenize(TokenizeOptions([str(data)], out, model=str(tiny_model_file), device="cpu",
                                           shard_rows=1, workers=2))
        assert summary.index is not None and summary.index["rows"] == 2
        return summary.reports_job

    assert run()  # it writes index.json
    assert run()  # nothing to do: the job was finished before
    before = (out / "index.json").read_text()
    sorted(out.glob("shard-*"))[0].unlink()
    assert run()  # one shard rewritten, index.json unchanged: still the one process of the job
    assert (out / "index.json").read_text() == before


def test_workers_2_all_failed_rerun_still_says_so(tiny_model_file: Path, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from opencodec import cli

    data = _two_files(tmp_path / "data", good=False)
    out = tmp_path / "out"
    args = ["tokenize", str(data), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu",
            "--workers", "2", "--shard-rows", "1"]
    assert cli.main(args) == 1
    assert "no file could be tokenised: all 2 failed" in capfd.readouterr().err
    sorted(out.glob("shard-*"))[0].unlink()
    assert cli.main(args) == 1
    err = capfd.readouterr().err
    assert "no file could be tokenised: all 2 failed" in err, err
    assert f"{out}: 2 shards, 0 rows" in err, err
