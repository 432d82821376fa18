"""``opencodec corpus build --out``: a file where a folder is expected (the root, a
folder under it or above it) is one clear line and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencodec.data import corpus

from train_helpers import _always_offline  # noqa: F401


# -- 4c: corpus build --out FILE -----------------------------------------------------------------------------------
def test_corpus_build_out_a_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(afile)]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"error: --out {afile} is a file; give a folder (the corpus root, e.g. data/)\n")
    assert "Errno" not in err and afile.read_text() == "x"
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "tiny_24k").write_text("")  # the preset's folder is a file
    assert corpus.main(["build", "--preset", "tiny", "--out", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"error: {tmp_path / 'root' / 'tiny_24k'} is a file, not a folder "
                        f"(under --out {tmp_path / 'root'})\n")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(afile / "sub")]) == 1
    assert capsys.readouterr().err.endswith(f"error: {afile} is a file, not a folder (above --out {afile / 'sub'})\n")


def test_corpus_out_folder_blocker_is_said_under_or_above(tmp_path: Path) -> None:
    from opencodec.data.corpus import check_out_folder

    out = tmp_path / "data"
    (out / "work").mkdir(parents=True)
    (out / "work" / "audio").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"audio is a file, not a folder \(under --out"):
        check_out_folder(out, out / "work" / "audio" / "x")
    above = tmp_path / "file"
    above.write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder \(above --out"):
        check_out_folder(above / "data", above / "data" / "work")
