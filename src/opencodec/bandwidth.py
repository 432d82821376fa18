"""The one check of a bandwidth against the bandwidths a model supports.

Every place that takes a bandwidth from a user (``EncodecModel.set_target_bandwidth``,
``compress``, the streaming and long-file paths, the command line, the entropy-model
trainer, the listening-test builder) calls :func:`check_bandwidth`, so that the rule and
the error message are the same everywhere.
"""

from __future__ import annotations

import math
import numbers
import typing as tp

from .errors import UnsupportedBandwidthError

__all__ = ["BANDWIDTH_TOLERANCE", "DEFAULT_BANDWIDTH", "check_bandwidth", "exact_kbps", "format_kbps"]

DEFAULT_BANDWIDTH = 6.0
"""kbps: the bandwidth the command line and ``compress`` use when none is given."""

BANDWIDTH_TOLERANCE = 1e-9
"""kbps: a bandwidth this close to a supported one is that one (computed bandwidths such as
``n * bits * frame_rate / 1000`` need not be exactly the decimal a user types)."""


def format_kbps(kbps: float) -> str:
    """``6.0`` -> ``'6'``, ``1.5`` -> ``'1.5'``."""
    return f"{kbps:g}"


def exact_kbps(kbps: float) -> str:
    """``kbps`` with every digit it needs to be told apart from its neighbours: ``'6'``,
    ``'6.0000001'`` (``format_kbps`` would print ``'6'``), ``'nan'``."""
    short = format_kbps(kbps)
    return short if not math.isfinite(kbps) or float(short) == kbps else repr(kbps)


def check_bandwidth(bandwidth: tp.Any, supported: tp.Sequence[float], model_name: str) -> float:
    """The supported bandwidth (kbps, a float taken from ``supported``) that ``bandwidth``
    names, or ``UnsupportedBandwidthError`` naming the model and the choices.

    ``bandwidth`` must be a finite real number (not a bool or a string: "bandwidth must be a
    number") within :data:`BANDWIDTH_TOLERANCE` of one of ``supported``. The value is shown
    with all its digits (``6.0000001``), so a near miss does not read as a supported value.
    """
    choices = ", ".join(format_kbps(float(b)) for b in supported)
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real):
        raise UnsupportedBandwidthError(f"bandwidth must be a number, got {bandwidth!r:.60} "
                                        f"({type(bandwidth).__name__}); choose one of: {choices} "
                                        f"kbps (model {model_name})")
    try:
        asked = float(bandwidth)
    except OverflowError:  # an int beyond float's range (a JSON request, a config file)
        power = abs(int(bandwidth)).bit_length() - 1
        beyond = f"-2**{power} kbps or less" if bandwidth < 0 else f"2**{power} kbps or more"
        raise UnsupportedBandwidthError(f"model {model_name} does not support {beyond} (too large "
                                        f"for a float); choose one of: {choices} kbps") from None
    if math.isfinite(asked):
        for value in supported:
            if abs(asked - float(value)) <= BANDWIDTH_TOLERANCE:
                return float(value)
    raise UnsupportedBandwidthError(f"model {model_name} does not support "
                                    f"{exact_kbps(asked)} kbps; choose one of: {choices} kbps")
