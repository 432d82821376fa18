"""The command lines' shared option types (opencodec.argtypes, re-exported by opencodec.cli.common)
and the commands that use them."""

from __future__ import annotations

import argparse

import pytest

from opencodec.cli import build_parser
from opencodec.argtypes import non_negative_float, port_arg
from opencodec.cli.common import count_arg, int_in, positive_float, positive_int


def test_whole_numbers() -> None:
    assert positive_int("3") == 3 and count_arg("0") == 0 and int_in(1, 255)("255") == 255
    for parse, text, message in [(positive_int, "0", "must be at least 1, got 0"),
                                 (count_arg, "-1", "must be at least 0, got -1"),
                                 (int_in(1, 255), "256", "must be between 1 and 255, got 256"),
                                 (int_in(1, 255), "0", "must be between 1 and 255, got 0"),
                                 (positive_int, "2.5", "not a whole number: '2.5'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "x"])
def test_positive_float_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)
    assert positive_float("0.5") == 0.5


@pytest.mark.parametrize("argv", [
    ["tokenize", "in", "--out", "o", "--shard-rows", "0"],
    ["tokenize", "in", "--out", "o", "--batch-seconds", "nan"],
    ["tokenize", "in", "--out", "o", "--loader-workers", "-1"],
    ["tokenize", "in", "--out", "o", "-b", "0"],
    ["detokenize", "d", "--out", "o", "--rate", "0"],
    ["stream-encode", "--frames-per-packet", "256"],
    ["stream-encode", "--header-every", "0"],
    ["stream-encode", "--rate", "0"],
    ["stream-encode", "--raw", "--channels", "1", "--rate", "1"],
    ["compress", "a.wav", "b.wav", "--rate", "999"],
    ["decompress", "a.ecdc", "b.wav", "--rate", "800000"],
    ["serve", "--port", "70000"],
    ["serve", "--max-clients", "0"],
    ["serve", "--idle-timeout", "nan"],
    ["serve", "--threads", "0"],
    ["serve", "--batch-window-ms", "-1"],
])
def test_commands_refuse_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[-2]}" in capsys.readouterr().err  # the option with the bad value


def test_commands_take_good_values() -> None:
    args = build_parser().parse_args(["tokenize", "in", "--out", "o", "--shard-rows", "5",
                                      "--loader-workers", "0", "--batch-seconds", "30", "-b", "6"])
    assert (args.shard_rows, args.loader_workers, args.batch_seconds, args.bandwidth) == (5, 0, 30.0, 6.0)
    assert build_parser().parse_args(["stream-encode", "--frames-per-packet", "255"]).frames_per_packet == 255


def test_ports() -> None:
    assert port_arg("0") == 0 and port_arg("65535") == 65535
    for text, message in [("65536", "not in 0..65535"), ("-1", "not in 0..65535"), ("http", "invalid port")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            port_arg(text)


@pytest.mark.parametrize("argv", [["serve", "x", "--port", "99999"],
                                  ["build", "--set", "s", "--out", "o", "--max-seconds", "0"],
                                  ["build", "--set", "s", "--out", "o", "--channels", "0"]])
def test_mushra_refuses_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.eval.mushra.cli import build_parser as mushra_parser

    with pytest.raises(SystemExit) as exit_info:
        mushra_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[-2]}" in capsys.readouterr().err


def test_non_negative_float() -> None:
    assert non_negative_float("0") == 0.0 and non_negative_float("2.5") == 2.5
    for text in ("-0.1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            non_negative_float(text)
    assert build_parser().parse_args(["serve", "--batch-window-ms", "0"]).batch_window_ms == 0.0


def test_no_command_lists_every_command(capsys) -> None:
    from opencodec.cli.main import main

    assert main([]) == 2
    listed = capsys.readouterr().err.splitlines()[-1]
    for command in ("compress", "decompress", "info", "stream-encode", "stream-decode", "serve", "tokenize",
                    "detokenize", "export-onnx", "train", "train-lm", "eval", "mushra"):
        assert f" {command}," in listed or f"({command}," in listed or f" {command})" in listed, command
