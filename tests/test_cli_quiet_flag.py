"""``opencodec -q`` on the commands that wrap another tool: the tool's own quiet flag is added once
and reaches the wrapped tool."""

from __future__ import annotations

import argparse

import pytest

from opencodec.cli.wrappers import _quieted


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
