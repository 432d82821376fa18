"""SIGTERM as a stop a command can clean up after, like Ctrl-C.

Inside :func:`sigterm_as_interrupt`, the first SIGTERM raises
:class:`~opencodec.errors.Terminated` (a ``KeyboardInterrupt``) in the main thread, so that a
command unwinds as for Ctrl-C: ``atomic_output`` removes its temporary file, worker processes
are stopped, a trainer's set-up ends. Later SIGTERMs are ignored, so that they cannot cut that
clean-up short (SIGKILL is the hard stop). A trainer's loop takes SIGTERM over with its own
handler, to stop at a step boundary with a checkpoint (``opencodec.train.run_folder.StopRequests``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import typing as tp

from .errors import Terminated

__all__ = ["Terminated", "sigterm_as_interrupt", "is_interrupting_handler"]


class _TerminateOnce:
    """A SIGTERM handler that raises :class:`Terminated` the first time and ignores the rest."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: tp.Any) -> None:
        if not self.raised:
            self.raised = True
            raise Terminated("terminated")


def is_interrupting_handler(handler: tp.Any) -> bool:
    """Whether ``handler`` (``signal.getsignal(SIGTERM)``) is :func:`sigterm_as_interrupt`'s."""
    return isinstance(handler, _TerminateOnce)


@contextlib.contextmanager
def sigterm_as_interrupt() -> tp.Iterator[None]:
    """Inside the block, the first SIGTERM raises :class:`Terminated` in the main thread; later
    ones are ignored. The handler the process had before is restored afterwards (an embedding
    application's own, or the default); where SIGTERM is ignored, or outside the main thread,
    nothing changes."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _TerminateOnce())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
