"""What the day's walks left to other owners: the campaign state carries the training metrics
summed since the last log (so a resumed run logs that window as an uninterrupted run does), and
``opencodec -q`` before a wrapped command (train, train-lm, eval, mushra build) turns the tool's
progress bar off."""

from __future__ import annotations

import argparse

import pytest
import torch

from opencodec.cli.wrappers import _quieted
from opencodec.train.campaign import compact_state, expand_state
from opencodec.train.step import MetricAccumulator


def test_compact_state_keeps_the_metrics_summed_since_the_last_log() -> None:
    metrics = MetricAccumulator()
    metrics.add({"train/l1": torch.tensor(0.25), "train/mel": torch.tensor(2.5)})
    metrics.add({"train/l1": torch.tensor(0.75), "train/mel": torch.tensor(1.5)})
    ckpt = {"step": 7, "model": {"w": torch.ones(3)}, "disc": {"d": torch.zeros(2)},
            "metrics": metrics.state_dict()}
    compact, left_out = compact_state(ckpt, max_bytes=1)  # over budget: the small fields stay
    assert left_out == [] and compact["step"] == 7
    resumed = MetricAccumulator()
    resumed.load_state_dict(expand_state(compact)["metrics"], torch.device("cpu"))
    means = resumed.means()
    assert means["train/l1"] == pytest.approx(0.5) and means["train/mel"] == pytest.approx(2.0)


def _args(rest: list[str], quiet: bool) -> argparse.Namespace:
    return argparse.Namespace(rest=rest, quiet=quiet)


@pytest.mark.parametrize(("rest", "flag", "already", "expected"), [
    (["c.yaml"], "--no-progress", (), ["c.yaml", "--no-progress"]),
    (["c.yaml", "--no-progress"], "--no-progress", (), ["c.yaml", "--no-progress"]),
    (["report", "--lm", "x"], "--no-progress", (), ["report", "--lm", "x", "--no-progress"]),
    (["--set", "s", "--quiet"], "-q", ("--quiet",), ["--set", "s", "--quiet"]),
    (["--set", "s"], "-q", ("--quiet",), ["--set", "s", "-q"]),
])
def test_global_quiet_adds_the_tools_own_flag_once(rest: list[str], flag: str, already: tuple[str, ...],
                                                    expected: list[str]) -> None:
    assert _quieted(_args(rest, True), flag, *already) == expected
    assert _quieted(_args(rest, False), flag, *already) == rest


@pytest.mark.parametrize(("command", "module", "name", "flag"), [
    ("train-lm", "opencodec.train.lm_solver", "main", "--no-progress"),
    ("eval", "opencodec.eval.report", "main", "-q"),
    ("mushra", "opencodec.eval.mushra.cli", "main", "-q"),
])
def test_opencodec_q_reaches_the_wrapped_tool(command: str, module: str, name: str, flag: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from opencodec.cli.main import main as opencodec_main

    seen: list[list[str]] = []
    monkeypatch.setattr(importlib.import_module(module), name, lambda argv: seen.append(list(argv)) or 0)
    rest = ["build", "--set", "s"] if command == "mushra" else ["x.yaml"]
    assert opencodec_main(["-q", command, *rest]) == 0
    assert opencodec_main([command, *rest]) == 0
    assert seen == [[*rest, flag], rest]
    if command == "mushra":  # only `build` has a progress bar: `report` is passed as given
        assert opencodec_main(["-q", command, "report", "r"]) == 0
        assert seen[-1] == ["report", "r"]
