"""The eval tool's name and its warnings on stderr (shown also with ``-q``)."""

from __future__ import annotations

import sys

__all__ = ["PROG", "warn"]

PROG = "opencodec eval"


def warn(message: str) -> None:
    """Print ``opencodec eval: warning: MESSAGE`` on stderr (also with ``-q``, which hides the
    progress bar only), above a progress bar that may be showing."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)
