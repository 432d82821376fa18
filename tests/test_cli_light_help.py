"""``opencodec --help`` and every command's ``--help`` answer without importing torch (about
2 s): the parser of a command line is built from the light modules only, and the library (with
torch) loads when a command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opencodec.cli import build_parser
from opencodec.cli.commands import COMMANDS

PROBE = """
import contextlib, io, sys
from opencodec.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main({argv!r})
print(status, "torch" in sys.modules, len(out.getvalue()))
"""


def run_probe(argv: list[str]) -> tuple[int, bool, int]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status, torch_loaded, chars = done.stdout.split()
    return int(status), torch_loaded == "True", int(chars)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *[[name, "--help"] for name in COMMANDS]])
def test_help_does_not_import_torch(argv: list[str]) -> None:
    status, torch_loaded, chars = run_probe(argv)
    assert status == 0 and chars >= len("opencodec 0.1.0")
    assert not torch_loaded


def test_a_command_that_runs_loads_its_library() -> None:
    status, torch_loaded, _ = run_probe(["decompress", "/nonexistent/x.ecdc"])
    assert status == 1 and torch_loaded


def test_the_listing_names_every_command_with_its_help() -> None:
    full, light = build_parser(), build_parser(commands=[])
    assert full.format_help() == light.format_help()
    for name, (_, help_line) in COMMANDS.items():
        assert help_line in light.format_help() and name in light.format_help()


@pytest.mark.parametrize("argv", [
    ["compress", "a.wav", "-b", "12", "out.ecdc", "--lm"],
    ["stream-encode", "--raw", "--rate", "16000", "--channels", "1", "--format", "f32le"],
    ["tokenize", "in", "--out", "o", "--shard-rows", "5"],
    ["serve", "--port", "0", "--max-clients", "3"],
    ["info", "x.ecdc", "--json"],
])
def test_one_commands_parser_parses_as_the_full_one(argv: list[str]) -> None:
    one = vars(build_parser(commands=[argv[0]]).parse_args(argv))
    every = vars(build_parser().parse_args(argv))
    assert one.keys() == every.keys()
    assert {k: v for k, v in one.items() if k != "parser"} == {k: v for k, v in every.items() if k != "parser"}


def test_the_stream_package_loads_its_names_on_first_use() -> None:
    code = ("import sys, opencodec.stream as s; light = 'torch' not in sys.modules; "
            "d = s.DEFAULT_FRAMES_PER_PACKET; light2 = 'torch' not in sys.modules; "
            "p = s.PacketParser; pipe = s.pipe.decode_stream is s.decode_stream; "
            "missing = not hasattr(s, 'nothing_here'); print(light, light2, d, pipe, missing, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "4", "True", "True", "True"], done.stderr
