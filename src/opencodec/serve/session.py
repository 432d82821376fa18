"""One client's stream as :class:`~opencodec.serve.engine.Engine` holds it (:class:`Session`),
and what a tick gives it back (:class:`Output`); which fields the asyncio loop and which the
engine's worker thread touch is said in the engine's module doc."""

from __future__ import annotations

import collections
import threading
import typing as tp
from dataclasses import dataclass, field

import numpy as np
import torch

from ..stream.format import StreamInfo
from ..stream.writer import PacketWriter
from .protocol import Hello


@dataclass
class Output:
    """What one tick produced for a session: ``packets`` (bytes, encode mode), ``pcm``
    ([C, n] float32 pieces, decode and relay), ``done`` once the stream is over."""

    packets: bytes = b""
    pcm: list[np.ndarray] = field(default_factory=list)
    done: bool = False
    error: str | None = None  # the engine failed: the session is over


@dataclass(eq=False)
class Session:
    """One client's stream in the engine.

    Loop side: ``frames`` (encoder input, [C, hop] float32 arrays or tensors), ``codes`` (decoder input, [K, 1],
    decode mode), ``tail`` and ``ending`` (set together when the input is over), ``end_length``
    (decode mode: samples in the stream, from its end packet), ``dropped`` (gone: discard).
    ``deliver(output)`` is called on the loop after each tick that produced something.
    """

    hello: Hello
    num_codebooks: int
    deliver: tp.Callable[[Output], None]
    info: StreamInfo | None = None  # the packets' layout (encode, relay)
    frames: collections.deque = field(default_factory=collections.deque)
    codes: collections.deque = field(default_factory=collections.deque)
    tail: np.ndarray | torch.Tensor | None = None
    ending: bool = False
    end_length: int | None = None
    dropped: bool = False
    stream_started: bool = False  # decode mode: the stream header has arrived
    hop_samples: int = 0  # decode mode: samples per code frame (from the stream header)
    stats_at: float = 0.0  # when the last stats message was queued (loop clock)
    stats_samples: int = 0  # samples_in and packet_bytes at the last stats message
    stats_bytes: int = 0
    samples_received: int = 0  # loop side: PCM samples received so far
    # worker side
    writer: PacketWriter | None = None
    # relay: the bandwidth changes not applied yet, (K, from code frame) in the order sent, at
    # most one per frame (see :meth:`request_switch`; changed on the loop, applied and removed
    # on the worker, both under ``switch_lock``)
    switches: collections.deque = field(default_factory=collections.deque)
    switch_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    code_frames: int = 0  # code frames produced so far
    writer_start: int = 0  # the code frame the current packet stream started at
    enc_id: int | None = None
    dec_id: int | None = None
    samples_in: int = 0
    samples_out: int = 0
    enc_closed: bool = False
    finished: bool = False
    packet_bytes: int = 0
    quota: int = 0  # input frames this tick may still take (those waiting when it began)
    held: torch.Tensor | None = None
    credit: float = 0.0  # pacing: input frames the stream may still take (worker side)
    credit_at: float | None = None  # engine clock when the credit was last brought up to date
    hold: int = 0  # samples held back (decode mode: hop - 1, until the end packet gives the length)

    @property
    def encodes(self) -> bool:
        return self.hello.mode in ("encode", "relay")

    @property
    def decodes(self) -> bool:
        return self.hello.mode in ("decode", "relay")

    def backlog(self) -> int:
        """Input frames waiting for the encoder or the decoder."""
        return len(self.frames) + len(self.codes)

    def request_switch(self, k: int, frame: int, limit: int) -> bool:
        """Relay (loop side): K = ``k`` from code frame ``frame`` on (after every change
        queued before it). A change at the same frame as the last one queued replaces it, and
        one that leaves K as it is at that frame is dropped, so at most one change waits per
        frame whatever the client sends; False (nothing queued) when ``limit`` changes
        already wait.

        The last change queued can be replaced safely: ``frame`` only grows with the audio
        received, and a change applies only once the encoder has produced its frame, which
        needs audio after it; so a change at ``frame`` has not been applied yet."""
        with self.switch_lock:
            switches = self.switches
            if switches and switches[-1][1] == frame:
                switches.pop()
            # the worker applies a change before it removes it: with none left, num_codebooks
            # is the K in effect
            if k == (switches[-1][0] if switches else self.num_codebooks):
                return True
            if len(switches) >= limit:
                return False
            switches.append((k, frame))
            return True
