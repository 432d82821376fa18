"""Round two of a user's walk through the trainers: the campaign state written all or nothing,
``init_items`` bounded, a resumed discriminator's size named by its config field, held-out audio
that is training audio, ``optim.fused`` changed on a resume. Each test failed before its fix."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opencodec import cli
from opencodec.errors import ConfigError, OutputError
from opencodec.train.campaign import pack, read_parts, write_parts
from opencodec.train.config_checks import check_codec_config
from opencodec.train.held_out import shared_files
from opencodec.train.run_state import read_checkpoint
from opencodec.train.solver import train
from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)

ROOT = Path(__file__).resolve().parents[1]


class _Killed(BaseException):
    """A stand-in for SIGKILL at a chosen moment (nothing in the writer catches it)."""


def _fail_on_write(monkeypatch: pytest.MonkeyPatch, call: int, exc: BaseException) -> None:
    """Make the ``call``-th ``Path.write_bytes`` raise ``exc`` (a full disk, a kill)."""
    real, calls = Path.write_bytes, [0]

    def write_bytes(self: Path, data: bytes) -> int:
        calls[0] += 1
        if calls[0] == call:
            raise exc
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)


# -- 1. the campaign state: all or nothing ---------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), _Killed()])
def test_campaign_state_write_that_fails_part_way_keeps_the_earlier_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    state = tmp_path / "state"
    old = {"w": torch.arange(600.0)}
    write_parts(old, state, part_bytes=400)
    before = sorted(p.name for p in state.iterdir())
    assert len(before) > 5
    _fail_on_write(monkeypatch, 2, exc)
    with pytest.raises(OutputError if isinstance(exc, OSError) else _Killed) as info:
        write_parts({"w": torch.arange(10.0)}, state, part_bytes=400)
    if isinstance(exc, OSError):
        assert str(info.value) == f"cannot write {state}: No space left on device; its earlier state is kept"
    monkeypatch.undo()
    assert sorted(p.name for p in state.iterdir() if not p.name.startswith(".")) == before
    assert torch.equal(read_parts(state)["w"], old["w"])


def test_campaign_state_write_killed_by_sigkill_keeps_the_old_state_and_the_next_write_sweeps_its_leftover(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_parts({"w": torch.arange(600.0)}, state, part_bytes=400)
    code = (  # a process that dies (no clean-up: os._exit) in the middle of writing its parts
        "import os, pathlib, torch\n"
        "from opencodec.train.campaign import write_parts\n"
        "real, n = pathlib.Path.write_bytes, [0]\n"
        "def die(self, data):\n"
        "    n[0] += 1\n"
        "    if n[0] == 2: os._exit(9)\n"
        "    return real(self, data)\n"
        "pathlib.Path.write_bytes = die\n"
        f"write_parts({{'w': torch.zeros(5)}}, pathlib.Path({str(state)!r}), part_bytes=400)\n")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 9
    assert any(p.name.startswith(".") for p in state.iterdir())  # its temporary folder, left
    assert torch.equal(read_parts(state)["w"], torch.arange(600.0))
    paths = write_parts({"w": torch.ones(2)}, state, part_bytes=400)
    assert sorted(p.name for p in state.iterdir()) == sorted([*(p.name for p in paths), "state.pt.sha256"])  # swept


def test_campaign_state_killed_while_moving_into_place_reads_the_new_state_and_never_a_mix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    write_parts({"w": torch.arange(600.0)}, state, part_bytes=400)
    new = {"w": torch.arange(100.0) * 2}
    real_replace, calls = os.replace, [0]

    def replace(src: object, dst: object) -> None:
        calls[0] += 1
        if calls[0] == 3:  # 1: the commit, 2: the first part moved into place, 3: killed
            raise _Killed()
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        write_parts(new, state, part_bytes=400)
    monkeypatch.undo()
    assert torch.equal(read_parts(state)["w"], new["w"])  # the complete new state, half moved
    paths = write_parts({"w": torch.ones(3)}, state, part_bytes=400)  # the next one finishes it, then its own
    assert sorted(p.name for p in state.iterdir()) == sorted([*(p.name for p in paths), "state.pt.sha256"])
    assert len(paths) < 10
    assert torch.equal(read_parts(state)["w"], torch.ones(3))


def test_campaign_pack_over_a_bigger_state_leaves_no_old_part_and_a_matching_summary(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_parts({"w": torch.arange(3000.0)}, state, part_bytes=2000)
    (state / "state.json").write_text('{"step": 99}\n')
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    train(cfg, tmp_path / "run", progress=False)
    summary = pack(tmp_path / "run" / "checkpoint.pt", state, part_bytes=10**9)
    assert summary["parts"] == ["state.pt.part00"] and summary["step"] == 1
    assert sorted(p.name for p in state.iterdir()) == ["state.json", "state.pt.part00", "state.pt.sha256"]
    assert json.loads((state / "state.json").read_text()) == summary
    assert summary["bytes"] == (state / "state.pt.part00").stat().st_size
    assert read_parts(state)["step"] == 1


# -- 2. init_items bounded ---------------------------------------------------------------------------
def test_config_init_items_far_over_any_use_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg.update(init="data_dependent", init_items=10**8)
    with pytest.raises(ConfigError, match=r"^config field init_items must be <= 1024, got 100000000: "
                                          r"data-dependent init reads that many"):
        check_codec_config(cfg)
    cfg["init_items"] = 1024
    check_codec_config(cfg)


# -- 3. a resumed discriminator of another size: its config field named --------------------------------
def test_resume_with_changed_adversarial_filters_names_the_config_field(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    train(cfg, tmp_path / "run", progress=False)
    changed = copy.deepcopy(cfg)
    changed["adversarial"]["filters"] = 8
    changed["optim"]["steps"] = 2
    with pytest.raises(ConfigError) as info:
        train(changed, tmp_path / "run", progress=False)
    assert str(info.value) == (f"{tmp_path / 'run' / 'checkpoint.pt'} was trained with adversarial.filters=4, not "
                               f"this config's adversarial.filters=8: resume with the run's, or use another --run-dir")
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1  # nothing written


# -- 4. held-out audio that is training audio ---------------------------------------------------------
def test_shared_files_finds_the_same_path_a_link_and_a_copy_and_not_a_same_sized_other(tmp_path: Path) -> None:
    for name, data in (("a.wav", b"A" * 9000), ("b.wav", b"B" * 9000), ("c.wav", b"C" * 10)):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "link.wav").symlink_to(tmp_path / "a.wav")
    shutil.copy(tmp_path / "b.wav", tmp_path / "copy.wav")
    (tmp_path / "near.wav").write_bytes(b"B" * 4500 + b"x" + b"B" * 4499)  # same size, middle differs
    train_files = [str(tmp_path / n) for n in ("a.wav", "b.wav", "c.wav")]
    held = [os.path.realpath(tmp_path / n) for n in ("link.wav", "copy.wav", "near.wav", "missing.wav")]
    assert shared_files(train_files, held) == [(train_files[0], train_files[0]),
                                               (held[1], train_files[1])]


def test_codec_train_warns_when_data_valid_holds_training_audio(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    train_m, _ = _corpus(tmp_path / "data")
    rows = [json.loads(line) for line in train_m.read_text().splitlines()]
    shutil.copy(rows[2]["path"], tmp_path / "data" / "copy.wav")
    valid_m = tmp_path / "data" / "overlap.jsonl"  # a copy by a relative path, and a training file itself
    valid_m.write_text(json.dumps({**rows[2], "path": "copy.wav"}) + "\n" + json.dumps(rows[0]) + "\n")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    train(cfg, tmp_path / "run", progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "data.valid" in line]
    assert warnings == [f"warning: 2 of the 2 files of data.valid are in data.train too, e.g. "
                        f"{tmp_path / 'data' / 'copy.wav'} (the same bytes as {rows[2]['path']}): its metrics on "
                        f"training audio are optimistic"]


def test_codec_train_with_separate_valid_audio_says_nothing_of_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    train(cfg, tmp_path / "run", progress=False)
    assert "optimistic" not in capsys.readouterr().err


def test_train_lm_warns_before_loading_the_codec_when_data_valid_is_the_training_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, _ = _corpus(tmp_path / "data")
    args = ["train-lm", str(ROOT / "configs" / "lm_tiny.yaml"), f"codec={tmp_path / 'no_codec.safetensors'}",
            f"data.train=[{train_m}]", f"data.valid=[{train_m}]", "report.items=0", "threads=1",
            "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(args) != 0  # (no codec: the run stops there)
    err = capsys.readouterr().err
    assert "warning: 5 of the 5 files of data.valid are in data.train too" in err


# -- 5. optim.fused changed on a resume --------------------------------------------------------------
def test_resume_with_changed_optim_fused_uses_and_saves_the_new_value(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["valid"]["items"] = 0
    cfg["optim"]["fused"] = False
    train(cfg, tmp_path / "run", progress=False)
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["opt_g"]["param_groups"][0]["fused"] is None
    changed = copy.deepcopy(cfg)
    changed["optim"].update(fused=True, steps=2)
    train(changed, tmp_path / "run", progress=False)
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 2
    assert [ckpt[k]["param_groups"][0]["fused"] for k in ("opt_g", "opt_d")] == [True, True]
    moments = [s["exp_avg"] for s in ckpt["opt_g"]["state"].values()]
    assert moments and all(torch.isfinite(m).all() for m in moments)


# -- the review of the all-or-nothing state -------------------------------------------------------
def test_campaign_state_read_that_meets_parts_of_two_packs_says_so(tmp_path: Path) -> None:
    # a read while a pack was writing could join one pack's parts with another's (same sizes):
    # torch.load took the mix, a state of neither pack
    one, two = tmp_path / "one", tmp_path / "two"
    write_parts({"tag": 1, "x": torch.arange(400.0)}, one, part_bytes=600)
    write_parts({"tag": 2, "x": torch.arange(400.0) + 2}, two, part_bytes=600)
    (one / "state.pt.part01").write_bytes((two / "state.pt.part01").read_bytes())
    with pytest.raises(ValueError, match="or parts of two packs"):
        read_parts(one)


def test_campaign_pack_into_a_folder_it_cannot_make_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"^cannot write .*afile/state: "):
        write_parts({"w": torch.ones(2)}, tmp_path / "afile" / "state")


def test_campaign_ready_folder_listing_no_part_is_not_a_commit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_parts({"w": torch.arange(600.0)}, state, part_bytes=400)
    (state / ".state.ready").mkdir()
    (state / ".state.ready" / ".files").write_text("")  # (a power cut before its data reached the disk)
    assert torch.equal(read_parts(state)["w"], torch.arange(600.0))
    write_parts({"w": torch.ones(2)}, state, part_bytes=400)
    assert torch.equal(read_parts(state)["w"], torch.ones(2))


def test_shared_files_compares_whole_files_where_their_samples_agree(tmp_path: Path) -> None:
    # same size, same first/middle/last 4 KiB: only the whole-file digest tells them apart
    base = bytes(range(256)) * 200  # 51200 bytes
    changed = bytearray(base)
    changed[10000] ^= 0xFF  # outside the three samples
    (tmp_path / "t.wav").write_bytes(base)
    (tmp_path / "v.wav").write_bytes(bytes(changed))
    (tmp_path / "copy.wav").write_bytes(base)
    train_files = [str(tmp_path / "t.wav")]
    assert shared_files(train_files, [str(tmp_path / "v.wav")]) == []
    assert shared_files(train_files, [str(tmp_path / "copy.wav")]) == [(str(tmp_path / "copy.wav"), train_files[0])]
