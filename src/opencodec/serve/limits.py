"""The server's limits (:class:`ServeLimits`) and its accept-side bound: at most
:attr:`ServeLimits.opening_limit` TCP connections at once that are not (yet) admitted clients
(:class:`OpeningGate`, kept by :class:`GatedConnection`).

A connection is counted from the moment the server accepts it (before a byte of its request
is read) until it is admitted as a client (then ``max_clients`` bounds it) or closed: while it
sends its HTTP request and WebSocket handshake (``websockets`` gives that 10 s, its
``open_timeout``), while it loads the page or ``/info.json``, and while a client refused past
``max_clients`` is closed (``close_timeout`` at most). One past the limit is answered an HTTP
503 and closed at once, before anything of it is read: so a client that opens thousands of
connections and sends nothing, or half a request, holds at most that many file descriptors
and connection objects of the server, never more.
"""

from __future__ import annotations

import asyncio
import typing as tp
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection


@dataclass(frozen=True)
class ServeLimits:
    """The server's limits (see :mod:`.server`'s doc for what happens at each).
    ``max_opening``: connections at once that are not (yet) admitted clients (None:
    :attr:`opening_limit`'s default, ``2 * max_clients + 16``)."""

    max_clients: int = 16
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 30.0
    send_queue: int = 256
    max_backlog_seconds: float = 2.0
    close_timeout: float = 2.0
    socket_send_buffer: int = 256 << 10
    max_pending_changes: int = 64
    max_opening: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_clients", "max_message_bytes", "send_queue", "socket_send_buffer",
                     "max_pending_changes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_opening is not None and self.max_opening < 1:
            raise ValueError(f"max_opening must be at least 1, got {self.max_opening}")
        for name in ("idle_timeout", "max_backlog_seconds", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def opening_limit(self) -> int:
        """Connections at once not (yet) admitted: ``max_opening``, or by default twice
        ``max_clients`` (each client may be joined by one refused or reconnecting) plus 16 (a
        browser loads the page over a few connections at once)."""
        return self.max_opening if self.max_opening is not None else 2 * self.max_clients + 16


_BUSY_TEXT = b"server busy: too many connections opening at once; try again later\n"
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
                 % (len(_BUSY_TEXT), _BUSY_TEXT))


class OpeningGate:
    """How many connections are open but not admitted (``count``, at most ``limit``), and how
    many were turned away for it (``refused``)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.refused = 0
        self.members: set[GatedConnection] = set()  # the ``count`` connections themselves

    def enter(self) -> bool:
        """Count one more connection; False (nothing counted) when ``limit`` are open already."""
        if self.count >= self.limit:
            self.refused += 1
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1

    def abort_unrequested(self) -> int:
        """Abort every counted connection whose HTTP request has not arrived whole (the server
        is stopping: websockets would wait its ``open_timeout``, 10 s, for each before it
        returns, so Ctrl-C or SIGTERM took 10 s with one idle or half-sent connection open).
        Returns how many were aborted."""
        waiting = [c for c in self.members if not c.request_rcvd.done()]
        for connection in waiting:
            connection.transport.abort()
        return len(waiting)


class GatedConnection(ServerConnection):
    """A server connection counted in ``gate`` from its accept until :meth:`admitted` or its
    end; one that does not fit is sent :data:`BUSY_RESPONSE` and closed at once (its handler
    then sees a connection closed before any request and returns)."""

    def __init__(self, *args: tp.Any, gate: OpeningGate, **kwargs: tp.Any):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.opening = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opening = self.gate.enter()
        if self.opening:
            self.gate.members.add(self)
        else:
            tp.cast(asyncio.Transport, transport).write(BUSY_RESPONSE)  # a fresh socket: never blocks
            transport.close()

    def admitted(self) -> None:
        """This connection is a client now (``max_clients`` bounds it): no longer counted."""
        self._release()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self.opening:
            self.opening = False
            self.gate.members.discard(self)
            self.gate.leave()
