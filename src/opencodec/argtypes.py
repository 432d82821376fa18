"""argparse option types shared by every command line (``opencodec`` and its sub-commands,
``opencodec mushra``): each turns a bad value into a one-line usage error naming it."""

from __future__ import annotations

import argparse
import math
import os
import typing as tp
from pathlib import Path

__all__ = ["path_arg", "output_path_arg", "bandwidth_arg", "int_in", "positive_int", "count_arg", "positive_float",
           "non_negative_float", "port_arg", "sample_rate_arg", "channels_arg", "MAX_CHANNELS"]


def _finite_number(text: str, not_number: str, out_of_range: str, zero_allowed: bool = False) -> float:
    """``text`` as a finite number > 0 (>= 0 when ``zero_allowed``), else ``ArgumentTypeError``
    with the message that fits (``{text}`` in a message is replaced by the value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_number.format(text=repr(text))) from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        raise argparse.ArgumentTypeError(out_of_range.format(text=text))
    return value


def path_arg(text: str) -> Path:
    """argparse type: a file or folder path, refusing the empty string (``Path("")`` is the
    current folder, so ``compress "$UNSET"`` would compress every file under it)."""
    if text == "":
        raise argparse.ArgumentTypeError("empty path (''): it names no file; an unset shell variable?")
    return Path(text)


def output_path_arg(text: str) -> Path | str:
    """argparse type of an output path: :func:`path_arg`'s ``Path``, but the str given when it
    ends in a separator (``out/``: a folder is meant), which ``Path`` would drop."""
    path = path_arg(text)
    return text if text.endswith(("/", os.sep)) else path


def bandwidth_arg(text: str) -> float:
    """argparse type: a positive, finite bandwidth in kbps."""
    return _finite_number(text, "invalid bandwidth {text}: expected a number of kbps",
                          "invalid bandwidth '{text}': must be a positive number of kbps")


def int_in(low: int, high: int | None = None) -> tp.Callable[[str], int]:
    """argparse type: a whole number in [low, high] (no upper bound when ``high`` is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


positive_int = int_in(1)
"""argparse type: a whole number >= 1."""

count_arg = int_in(0)
"""argparse type: a whole number >= 0."""


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite_number(text, "not a number: {text}", "must be a positive number, got {text}")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite_number(text, "not a number: {text}", "must be a number >= 0, got {text}", zero_allowed=True)


def port_arg(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535 (0 picks a free one)")
    return value


#: The sample rates (Hz) opencodec takes where a user gives one (``--rate``, a raw or WAV
#: stream's header, a corpus build): a mistyped ``--rate 1`` would otherwise resample by a
#: factor of 24000.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768_000


def sample_rate_arg(text: str) -> int:
    """argparse type: a sample rate in Hz, :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`."""
    return int_in(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)(text)


#: The most channels ``--channels`` takes (an output channel count, or a raw input's): far
#: more than any speaker layout, far below what would exhaust memory (each channel is a
#: whole decoded signal) or what libsndfile's formats take (WAV: 1024, FLAC: 8).
MAX_CHANNELS = 64


def channels_arg(text: str) -> int:
    """argparse type: a channel count, 1 to :data:`MAX_CHANNELS` (``--channels 100000``
    would otherwise run the whole codec and then exhaust memory or fail to write)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_CHANNELS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CHANNELS} channels, got {value}")
    return value
