"""``_files.file_in_the_way``: what keeps a path from being a folder (the run folders, report and
corpus outputs word their errors from it)."""

from __future__ import annotations

from pathlib import Path

from opencodec._files import file_in_the_way


def test_what_keeps_a_path_from_being_a_folder(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    assert file_in_the_way(tmp_path / "dir") is None                      # a folder
    assert file_in_the_way(tmp_path / "dir" / "new" / "deeper") is None   # can be created
    assert file_in_the_way(tmp_path / "afile") == tmp_path / "afile"      # itself a file
    assert file_in_the_way(tmp_path / "afile" / "sub" / "x") == tmp_path / "afile"  # a file above
    assert file_in_the_way(tmp_path / "broken" / "x") == tmp_path / "broken"  # a broken link above
    assert file_in_the_way(str(tmp_path / "afile")) == tmp_path / "afile"  # a str path too
