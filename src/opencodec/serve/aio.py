"""asyncio helpers of the server: a bounded wait (:func:`_within`), a task's outcome always
retrieved (:func:`_outcome`, :func:`_cancel`), SIGTERM handling for
the time it serves (:func:`_on_sigterm`), Ctrl-C that stops it once (:class:`_InterruptOnce`)
and a Ctrl-C that does nothing once it stops (:func:`_ignore_interrupt`)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import typing as tp

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _within(seconds: float, awaitable: tp.Awaitable[tp.Any]) -> tp.Any:
    """``await awaitable``; ``asyncio.TimeoutError`` after ``seconds``."""
    if _timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):  # no task per call, unlike wait_for
        return await awaitable


def _outcome(task: asyncio.Future[tp.Any]) -> BaseException | None:
    """A done task's exception, retrieved (asyncio never logs it as "never retrieved"); None
    when it returned or was cancelled."""
    return None if task.cancelled() else task.exception()


def _cancel(task: asyncio.Future[tp.Any], report: tp.Callable[[BaseException], None]) -> None:
    """Cancel ``task`` without waiting for it; if it ends with an exception other than its
    cancellation (it may finish first, or fail while it unwinds), ``report`` gets it."""
    def ended(done: asyncio.Future[tp.Any]) -> None:
        error = _outcome(done)
        if error is not None:
            report(error)

    task.add_done_callback(ended)  # (called soon when it is done already)
    task.cancel()


@contextlib.contextmanager
def _on_sigterm(callback: tp.Callable[[], object]) -> tp.Iterator[None]:
    """Call ``callback`` on the running loop when the process gets SIGTERM, inside the block
    (where the loop cannot take signal handlers, e.g. outside the main thread or on Windows,
    SIGTERM keeps its action). The handler the process had before is restored afterwards
    (an embedding application's own, not the default)."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # this resets it to the default action
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _InterruptOnce:
    """A SIGINT handler for the time the server runs, in place of ``asyncio.run``'s: the first
    Ctrl-C cancels ``task`` as that one does; any later one does nothing. asyncio.run's raises
    ``KeyboardInterrupt`` at a second Ctrl-C, wherever the main thread is: inside a task of the
    clean-up it ended that task ("Task exception was never retrieved", tracebacks)."""

    def __init__(self, task: asyncio.Task[tp.Any]) -> None:
        self.task, self.loop, self.count = task, asyncio.get_running_loop(), 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            self.loop.call_soon_threadsafe(self.task.cancel)


def _ignore_interrupt(signum: int, frame: object) -> None:
    """SIGINT once the server stops: nothing. Not ``SIG_IGN``, which processes started later
    would inherit (Ctrl-C could not stop them); that only at exit, where Python puts the default
    action back for a signal with a Python handler (:func:`_ignore_interrupt_at_exit`)."""


def _ignore_interrupt_at_exit() -> None:
    """(atexit) SIGINT ignored for the rest of the exit when it is still :func:`_ignore_interrupt`."""
    if signal.getsignal(signal.SIGINT) is _ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _after_serving(previous: tp.Any, exiting: bool) -> None:
    """SIGINT once the server has stopped: ``previous`` (the caller's handler) back, or, when
    ``exiting`` (the process ends next), :func:`_ignore_interrupt` kept through the exit. Nothing
    when the server did not set :func:`_ignore_interrupt` (it never served)."""
    if signal.getsignal(signal.SIGINT) is not _ignore_interrupt:
        return
    if exiting:
        atexit.unregister(_ignore_interrupt_at_exit)  # once per process
        atexit.register(_ignore_interrupt_at_exit)
    elif previous is not None:
        signal.signal(signal.SIGINT, previous)
