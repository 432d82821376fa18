"""Pacing for the serve engine: with two live streams or more, a stream takes at most
``CATCH_UP`` times real time plus what it has banked, so that a client sending faster than
real time cannot take the other streams' share of a tick (see :mod:`.engine`'s module doc).

A stream earns ``CATCH_UP`` input frames of credit per frame period, banks at most ``bank``
frames (it starts with a full bank), and each frame it takes costs one; a tick gives it at most
``max_frames``. Earning a little faster than real time is what lets a real-time client whose
audio was held up (a network stall longer than the bank) catch up: earning at exactly real
time, it would keep the delay beyond the bank for good. A lone stream is not paced (its
credit still runs, never below 0, and it is never held).
"""

from __future__ import annotations

import collections
import typing as tp

CATCH_UP = 1.25
"""Credit a paced stream earns per frame period, in frames: a late real-time client catches up
at a quarter of real time; a client sending faster is served at most at 1.25x real time."""


def stream_input(s: tp.Any) -> collections.deque:
    """A session's input queue: PCM frames (encode, relay) or code frames (decode)."""
    return s.frames if s.encodes else s.codes


class Pacer:
    """The credit of an engine's sessions (their ``credit``, ``credit_at`` and ``quota``
    fields), on the engine's worker thread. ``bank`` (frames): the most a stream banks;
    ``frame_rate`` (frames/s): how fast it earns; ``clock``: seconds.

    After each tick, ``held`` holds the ids of the sessions left with input waiting and no
    credit (the loop does not wake for them) and ``credit_in`` the seconds until the first of
    them earns a frame (None: none is held); the loop reads both between ticks."""

    def __init__(self, bank: float, frame_rate: float, max_frames: int, clock: tp.Callable[[], float]):
        self.bank = bank
        self.frame_rate = frame_rate
        self.max_frames = max_frames
        self.clock = clock
        self.held: set[int] = set()
        self.credit_in: float | None = None
        self.paced = False  # whether the last tick's quotas were capped (two live streams or more)

    def quotas(self, sessions: tp.Sequence[tp.Any]) -> None:
        """Bring every session's credit up to date and cap its ``quota`` (the input waiting
        when the tick began) by it and ``max_frames`` when two sessions or more are live."""
        self.paced = sum(1 for s in sessions if not (s.dropped or s.finished)) > 1
        now = self.clock()
        for s in sessions:
            if s.credit_at is None:  # a new stream starts with a full bank
                s.credit = self.bank
            else:
                s.credit = min(self.bank, s.credit + (now - s.credit_at) * self.frame_rate * CATCH_UP)
            s.credit_at = now
            if self.paced:
                s.quota = min(s.quota, int(s.credit), self.max_frames)

    def charge(self, sessions: tp.Sequence[tp.Any], taken: tp.Mapping[int, int]) -> None:
        """After a tick: each session pays for the input frames it took (``taken``: id -> its
        quota when the tick began; what is left of it was not taken); note who is held."""
        self.reset()
        for s in sessions:
            s.credit = max(0.0, s.credit - (taken[id(s)] - s.quota))
            if self.paced and not s.finished and stream_input(s) and s.credit < 1:
                self.held.add(id(s))
                wait = (1 - s.credit) / (self.frame_rate * CATCH_UP)
                self.credit_in = wait if self.credit_in is None else min(self.credit_in, wait)

    def reset(self) -> None:
        """Nobody held (the engine starts over)."""
        self.held.clear()
        self.credit_in = None
