"""Pieces every ``opencodec`` sub-command shares: messages, option types, progress bars."""

from __future__ import annotations

import argparse
import contextlib
import sys
import typing as tp
from pathlib import Path

from tqdm import tqdm

from ..argtypes import (bandwidth_arg, channels_arg, count_arg, int_in, non_negative_float, port_arg,
                        positive_float, positive_int)
from ..bandwidth import format_kbps as fmt_kbps  # the one formatter, under the CLI's name
from ..errors import UsageError
from ..progress import ProgressFactory, Update, progress_bar
from ..signals import Terminated, sigterm_as_interrupt  # (the commands import them from here)
from .wrappers import PROG

__all__ = ["PROG", "UsageError", "error", "warn", "info", "describe", "bandwidth_arg", "channels_arg", "positive_int",
           "positive_float", "count_arg", "int_in", "port_arg", "non_negative_float",
           "add_model_option", "progress_bars", "fmt_kbps", "Terminated", "sigterm_as_interrupt"]


def error(message: str) -> None:
    """Print ``opencodec: error: message`` to stderr (above any progress bar)."""
    tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """Print ``opencodec: warning: message`` to stderr."""
    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


def info(args: argparse.Namespace, message: str) -> None:
    """Print an informational line to stderr unless ``--quiet``."""
    if not args.quiet:
        tqdm.write(message, file=sys.stderr)


def describe(exc: BaseException, path: Path) -> str:
    """The error message, prefixed with ``path`` unless it already names it."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    return message if str(path) in message else f"{path}: {message}"


def add_mode_options(parser: argparse.ArgumentParser, fast_default: bool) -> None:
    """--exact / --fast (see the README, "Fast mode"): exact runs the plain computation (files:
    the official package's bit for bit; streams: the same layers on the pieces, see README "Live
    streaming"); fast equals it up to float rounding (measured differences in the README)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--exact", dest="fast", action="store_false",
                       help="the plain computation (files: official-identical output)"
                            + ("" if fast_default else "; the default"))
    group.add_argument("--fast", dest="fast", action="store_true",
                       help="fast mode: fewer, fused kernels, equal up to float rounding"
                            + ("; the default" if fast_default else ""))
    parser.set_defaults(fast=fast_default)


def add_model_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-m", "--model", metavar="NAME_OR_PATH", help=help_text)


# ------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _tqdm_progress(desc: str, unit: str, lazy: bool = False) -> tp.Iterator[Update]:
    """An ``update(done, total)`` callback driving a tqdm bar on stderr; ``lazy``: the bar
    appears at the first call only (a stage that may not happen)."""
    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(total=0, unit=unit, desc=desc, file=sys.stderr))
        bar = bars[0]
        bar.total = total
        bar.update(done - bar.n)

    if not lazy:
        update(0, 0)
    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def progress_bars(args: argparse.Namespace) -> ProgressFactory | None:
    """The progress factory of the library calls: tqdm bars, or none with ``--quiet``."""
    return None if args.quiet else _tqdm_progress
