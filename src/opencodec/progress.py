"""Progress bars that stay readable in log files.

tqdm redraws its bar in place with a carriage return every 0.1 s. On a terminal that is what
one wants; when stderr goes to a file (``2> log``, a cluster job's log, CI) the file gets one
enormous line of thousands of ``\\r``-separated redraws. :func:`progress_bar` returns a plain
tqdm bar on a terminal, and otherwise a bar that writes tqdm's own line (same counts, rate,
ETA and postfix) as a plain text line ending in ``\\n``: one when it starts, then at most one
every ``OPENCODEC_PROGRESS_SECONDS`` seconds (default 30; ``0``: at every update), and a final
one when it closes (unless ``leave=False``). A line never repeats the last one's count, total
and postfix. No ``\\r``, no cursor moves, no colours.
"""

from __future__ import annotations

import os
import sys
import typing as tp

from tqdm import tqdm

__all__ = ["progress_bar", "Update", "ProgressFactory"]

Update = tp.Callable[[int, int], None]
"""A progress callback: ``update(done, total)``."""
ProgressFactory = tp.Callable[[str, str, bool], tp.ContextManager[Update]]
"""``factory(desc, unit, lazy)``: a context manager giving an :data:`Update` (a bar, or nothing)."""

ENV_SECONDS = "OPENCODEC_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0


def _seconds() -> float:
    """The interval between two lines in a log; a bad or negative value means the default."""
    try:
        seconds = float(os.environ.get(ENV_SECONDS, DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return seconds if seconds >= 0 else DEFAULT_SECONDS


def _is_terminal(file: tp.Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


class _LogBar(tqdm):
    """A tqdm bar writing whole lines, at most one every ``interval`` seconds (tqdm's
    ``display`` is its one drawing hook; ``clear`` and ``close`` also write to the file)."""

    def __init__(self, *args: tp.Any, interval: float, **kwargs: tp.Any) -> None:
        self._interval = interval
        self._last_state: tuple | None = None  # of the last line written
        self._last_time = 0.0
        super().__init__(*args, **kwargs)  # draws the first line (unless delay or disable)

    def _write_line(self, force: bool) -> None:
        now = self._time()
        if not force and self._last_state is not None and now - self._last_time < self._interval:
            return
        state = (self.n, self.total, self.desc, self.postfix)
        if state != self._last_state:  # no line repeating the last one but for time and rate
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
            self._last_state, self._last_time = state, now

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # tqdm clearing the line (msg ''): a log keeps its lines
            return False
        self._write_line(force=False)
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: lines are never redrawn (``tqdm.write`` calls this)."""

    def close(self) -> None:
        if getattr(self, "disable", True):  # disabled, closed, or a failed __init__
            return
        leave = abs(self.pos) == 0 if self.leave is None else self.leave
        if leave and self.last_print_t >= self.start_t + self.delay:  # as tqdm: it was shown
            with self._lock:
                self._ema_dt = lambda: None  # the final line shows the overall rate, as tqdm's
                self._write_line(force=True)
        self.leave = False  # tqdm's close then only "clears" the bar: no bare "\n" after it
        super().close()


def progress_bar(iterable: tp.Iterable[tp.Any] | None = None, **tqdm_kwargs: tp.Any) -> tqdm:
    """``tqdm(iterable, **tqdm_kwargs)``, or, when the bar's file (``file``, default stderr)
    is not a terminal, a bar printing a plain line at most every
    ``$OPENCODEC_PROGRESS_SECONDS`` seconds (default 30) and one when it closes."""
    file = tqdm_kwargs.get("file") or sys.stderr
    if tqdm_kwargs.get("disable") or _is_terminal(file):
        return tqdm(iterable, **tqdm_kwargs)
    interval = _seconds()
    tqdm_kwargs.pop("colour", None)  # no escape codes in a log
    tqdm_kwargs.setdefault("mininterval", min(interval, 0.1))  # 0: a line at every update
    return _LogBar(iterable, interval=interval, **tqdm_kwargs)
