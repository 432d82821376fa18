"""Fixes from the fourth walk through ``opencodec train`` as a user training their own codec:
a config section given as a scalar is one line, and the training metrics of a window cut by a
stop (Ctrl-C, SIGTERM, ``--max-minutes``) or a crash after a checkpoint are logged, after the
resume, exactly as the uninterrupted run logs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from opencodec.errors import ConfigError
from opencodec.train.config_checks import check_codec_config
from opencodec.train.solver import main, train
from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)


@pytest.mark.parametrize("section, value", [("optim", 5), ("data", 5), ("valid", 5), ("losses", [1]),
                                            ("quantizer", "x"), ("adversarial", None), ("balancer", 0),
                                            ("log", 5), ("model", None), ("data.augment", 5)])
def test_a_section_that_is_not_a_mapping_is_one_line(section: str, value: object, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg["data"]["augment"] = {}
    *parents, leaf = section.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    expected = f"config field {section}: expected a section of key: value settings, got {value!r}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        check_codec_config(cfg)


@pytest.mark.parametrize("section, init_from", [("log", None), ("model", "unit.safetensors")])
def test_a_null_section_the_trainer_reads_as_defaults_is_taken(section: str, init_from: str | None,
                                                                tmp_path: Path) -> None:
    cfg = _config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)
    cfg.update({section: None, "init_from": init_from})
    check_codec_config(cfg)  # (log: null, the defaults; model: null under init_from, its model's)


def test_a_scalar_section_override_is_one_line_on_the_command_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"  # JSON is YAML
    config.write_text(json.dumps(_config(tmp_path / "t.jsonl", tmp_path / "v.jsonl", steps=1)))
    assert main([str(config), "optim=5", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err == "opencodec train: error: config field optim: expected a section of key: value settings, got 5\n"
    assert not (tmp_path / "run").exists()


def _train_rows(run: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl's training rows by step, without the throughput (a wall-clock figure)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k != "step" and not k.startswith("perf/")}
            for r in rows if "train/l1" in r}


def test_a_window_cut_by_a_stop_is_logged_as_the_uninterrupted_run_logs_it(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    cfg["log"].update(every=3, checkpoint_every=100)
    train(cfg, tmp_path / "a", progress=False)
    # A time stop after the first step (every invocation trains one): a checkpoint of step 1,
    # between two logs; the resumed run's row of step 3 must still average steps 1 to 3.
    train(cfg, tmp_path / "b", progress=False, max_minutes=1e-9)
    assert set(_train_rows(tmp_path / "b")) == set()
    train(cfg, tmp_path / "b", progress=False)
    straight, resumed = _train_rows(tmp_path / "a"), _train_rows(tmp_path / "b")
    assert sorted(straight) == sorted(resumed) == [3, 6]
    assert resumed == straight


@pytest.mark.parametrize("augment, segment, why", [({"pad_short": False}, 5.0, "lasts at least 5 s"),
                                                   ({"categories": ["applause"]}, 0.2, "of categories applause")])
def test_the_data_dependent_init_draws_the_rows_training_draws(augment: dict, segment: float, why: str,
                                                               tmp_path: Path) -> None:
    # Every file lasts under 5 s: with pad_short false (or a category the corpus lacks)
    # training has no row, and the init (minutes of padded segments) must not go on without it.
    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.train.batches import _training_segments

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["data"].update(segment_seconds=segment, augment=augment)
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    with pytest.raises(ConfigError, match=f"no usable rows .*{why}"):
        _training_segments(cfg, model, 2)
    cfg["data"].update(segment_seconds=0.2, augment={**augment, "categories": None})  # the rows exist
    assert _training_segments(cfg, model, 2).shape == (2, 1, 4800)


@pytest.mark.parametrize("argv", [["-q", "train", "c.yaml"], ["--quiet", "train", "c.yaml", "optim.steps=2"],
                                  ["-q", "train", "c.yaml", "--no-progress"]])
def test_quiet_before_train_turns_the_progress_bar_off(argv: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.train.solver as solver
    from opencodec.cli.main import main as opencodec_main

    seen: dict[str, object] = {}

    def fake_train(cfg: dict, run_dir: object, max_steps: object, progress: bool, max_minutes: object) -> Path:
        seen.update(progress=progress, steps=cfg["optim"]["steps"])
        return tmp_path

    config = tmp_path / "c.yaml"
    config.write_text("optim: {steps: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(solver, "train", fake_train)
    assert opencodec_main(argv) == 0
    assert seen == {"progress": False, "steps": 2 if "optim.steps=2" in argv else 1}
    assert opencodec_main(argv[1:]) == 0  # (without -q: the bar, unless --no-progress)
    assert seen["progress"] is ("--no-progress" not in argv)
