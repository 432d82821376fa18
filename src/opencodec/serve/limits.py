"""The server's limits (:class:`ServeLimits`) and its accept-side bound: at most
:attr:`ServeLimits.opening_limit` TCP connections at once that are not (yet) admitted clients,
and at most :attr:`ServeLimits.opening_per_address_limit` of them from one address
(:class:`OpeningGate`, kept by :class:`GatedConnection`).

A connection is counted from the moment the server accepts it (before a byte of its request
is read) until it is admitted as a client (then ``max_clients`` bounds it) or closed: while it
sends its HTTP request and WebSocket handshake (``websockets`` gives that 10 s, its
``open_timeout``), while it loads the page or ``/info.json``, and while a client refused past
``max_clients`` is closed (``close_timeout`` at most). One past the limit is answered an HTTP
503 and closed at once, without waiting for its request (what it sent already is dropped
unparsed; see below): so a client that opens thousands of
connections and sends nothing, or half a request, holds at most that many file descriptors
and connection objects of the server, never more. One address (an IPv6 address's /64 network,
which one host usually has whole) may hold at most the per-address limit (default half the
gate), so that a single address flooding the gate does not turn every other client away.
Behind a reverse proxy every connection comes from the proxy's address: set the per-address
limit to the gate's there.

A refused connection is sent the 503 and the end of the stream (FIN) at once, and its socket
closes on the loop's next pass; just before it does, what the client has sent by then (its
request, normally) is read off and dropped, never waited for (at most :data:`DRAIN_LIMIT`
bytes). Closing a socket with unread bytes in it makes Linux send a TCP reset instead of the
FIN: a client that had sent its request saw its connection reset after the 503 (every one on
loopback; some stacks drop the 503 when the reset arrives: benchmarks/serve_refusal_reset.py).
A request that arrives after the close still draws a reset from the kernel (nothing can read it
without holding the connection open), but after the 503 and the FIN, which a client reads first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import typing as tp
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection


@dataclass(frozen=True)
class ServeLimits:
    """The server's limits (see :mod:`.server`'s doc for what happens at each).
    ``max_opening``: connections at once that are not (yet) admitted clients (None:
    :attr:`opening_limit`'s default, ``2 * max_clients + 16``); ``max_opening_per_address``:
    how many of them may come from one address (None: :attr:`opening_per_address_limit`'s
    default, half of :attr:`opening_limit`)."""

    max_clients: int = 16
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 30.0
    send_queue: int = 256
    max_backlog_seconds: float = 2.0
    close_timeout: float = 2.0
    socket_send_buffer: int = 256 << 10
    max_pending_changes: int = 64
    max_opening: int | None = None
    max_opening_per_address: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_clients", "max_message_bytes", "send_queue", "socket_send_buffer",
                     "max_pending_changes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_opening is not None and self.max_opening < 1:
            raise ValueError(f"max_opening must be at least 1, got {self.max_opening}")
        if self.max_opening_per_address is not None and self.max_opening_per_address < 1:
            raise ValueError(f"max_opening_per_address must be at least 1, got {self.max_opening_per_address}")
        for name in ("idle_timeout", "max_backlog_seconds", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def opening_limit(self) -> int:
        """Connections at once not (yet) admitted: ``max_opening``, or by default twice
        ``max_clients`` (each client may be joined by one refused or reconnecting) plus 16 (a
        browser loads the page over a few connections at once)."""
        return self.max_opening if self.max_opening is not None else 2 * self.max_clients + 16

    @property
    def opening_per_address_limit(self) -> int:
        """Of :attr:`opening_limit`, how many may come from one address:
        ``max_opening_per_address`` (at most the gate's limit), or by default half the gate
        (at least 1): one address flooding it leaves the other half to everyone else, and a
        browser (a few connections at once) or several clients behind one NAT address fit."""
        if self.max_opening_per_address is not None:
            return min(self.max_opening_per_address, self.opening_limit)
        return max(1, self.opening_limit // 2)


def _busy(text: bytes) -> bytes:
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(text), text))


BUSY_RESPONSE = _busy(b"server busy: too many connections opening at once; try again later\n")
ADDRESS_BUSY_RESPONSE = _busy(b"server busy: too many connections opening at once from your "
                              b"address; try again later\n")


DRAIN_LIMIT = 64 << 10
"""The most bytes of a refused connection that are read (and dropped) before its socket closes: a
request is a few hundred bytes; a client that floods is closed however much it sent."""


def discard_received(sock: tp.Any, limit: int) -> int:
    """Read and drop what ``sock`` (a non-blocking socket or asyncio's ``TransportSocket``) has
    received already, at most ``limit`` bytes (in reads of 64 KiB at most), never waiting: it
    stops at the first read that would block, at the end of the stream, at an error or at
    ``limit``. Returns the bytes dropped. Does nothing (0) for a blocking socket or off POSIX
    (a Windows socket is no file descriptor ``os.read`` can take)."""
    if sock is None or os.name != "posix" or sock.gettimeout() != 0:
        return 0
    dropped = 0
    while dropped < limit:
        try:
            chunk = os.read(sock.fileno(), min(limit - dropped, 1 << 16))
        except OSError:  # BlockingIOError: nothing more has arrived; or reset, or closed
            break
        if not chunk:
            break
        dropped += len(chunk)
    return dropped


def peer_key(peername: tp.Any) -> str:
    """The address a connection is counted under (``transport.get_extra_info("peername")``):
    an IPv4 address as it is (also written IPv4-mapped, ``::ffff:a.b.c.d``, by a dual-stack
    socket), an IPv6 address's /64 network (one host usually holds a whole /64) with its zone
    if it has one (``fe80::/64%4``: every link has its own fe80::/64, and the scope id, the
    peername's 4th item, or a ``%eth0`` in the host, says which), and ``""`` for anything else
    (a Unix socket, or no address known): those share one count."""
    host = peername[0] if isinstance(peername, tuple) and peername else None
    if not isinstance(host, str):
        return ""
    host, _, zone = host.partition("%")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        scope = peername[3] if len(peername) > 3 else 0
        if not zone and isinstance(scope, int) and scope:
            zone = str(scope)
        network = str(ipaddress.IPv6Network((address, 64), strict=False))
        return f"{network}%{zone}" if zone else network
    return str(address)


class OpeningGate:
    """How many connections are open but not admitted (``count``, at most ``limit``; of them
    ``by_address[a]`` from address ``a``, at most ``per_address``, None: ``limit``), and how
    many were turned away (``refused``; ``refused_by_address`` of them for their address's
    bound while the gate had room)."""

    def __init__(self, limit: int, per_address: int | None = None):
        self.limit = limit
        self.per_address = limit if per_address is None else per_address
        self.count = 0
        self.refused = 0
        self.refused_by_address = 0
        self.by_address: dict[str, int] = {}  # only addresses with a connection counted
        self.members: set[GatedConnection] = set()  # the ``count`` connections themselves

    def enter(self) -> bool:
        """Count one more connection (whatever its address); False (nothing counted) when
        ``limit`` are open already."""
        if self.count >= self.limit:
            self.refused += 1
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1

    def enter_from(self, address: str) -> bool:
        """Count one more connection from ``address`` (see :func:`peer_key`); False (nothing
        counted) when ``limit`` are open already, or ``per_address`` from that address."""
        if self.count < self.limit and self.by_address.get(address, 0) >= self.per_address:
            self.refused += 1
            self.refused_by_address += 1
            return False
        if not self.enter():
            return False
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return True

    def leave_from(self, address: str) -> None:
        """One connection from ``address`` counted by :meth:`enter_from` is no longer counted."""
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]  # the dict holds the addresses counted now, no more
        self.leave()

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
    then sees a connection closed before any request and returns; ``turned_away``): what it
    sent by then is dropped just before its socket closes, so that the close is a FIN, not a
    reset (see the module's doc)."""

    def __init__(self, *args: tp.Any, gate: OpeningGate, **kwargs: tp.Any):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.opening = False
        self.peer = ""
        self.turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = peer_key(transport.get_extra_info("peername"))
        self.opening = self.gate.enter_from(self.peer)
        if self.opening:
            self.gate.members.add(self)
        else:
            full = self.gate.count >= self.gate.limit
            self.turned_away = True
            writer = tp.cast(asyncio.Transport, transport)
            writer.write(BUSY_RESPONSE if full else ADDRESS_BUSY_RESPONSE)  # a fresh socket: never blocks
            with contextlib.suppress(OSError):  # (the client reset it already)
                writer.write_eof()  # the FIN now, after the 503
            transport.close()  # connection_lost on the loop's next pass, then the socket closes

    def admitted(self) -> None:
        """This connection is a client now (``max_clients`` bounds it): no longer counted."""
        self._release()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.turned_away:  # the socket closes right after this: what it holds unread goes first
            discard_received(self.transport.get_extra_info("socket"), DRAIN_LIMIT)
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self.opening:
            self.opening = False
            self.gate.members.discard(self)
            self.gate.leave_from(self.peer)
