"""asyncio helpers of the server: a bounded wait (:func:`_within`) and SIGTERM handling for
the time it serves (:func:`_on_sigterm`)."""

from __future__ import annotations

import asyncio
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
