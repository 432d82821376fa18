"""``opencodec serve``: the WebSocket server (``websockets``' asyncio API) and its page.

One port serves both: ``/ws`` is the WebSocket endpoint (protocol in :mod:`.protocol`), every
other path a file of the page in ``static/``. All sessions feed one :class:`.engine.Engine`.

Limits and policy (:class:`ServeLimits`):

* ``max_clients``: a client past the limit is accepted and closed at once with 1013 ("server
  full ... try again later"), so the others keep their capacity: refusal, not collapse;
* ``max_opening`` (:attr:`ServeLimits.opening_limit`) connections not (yet) admitted, and
  ``max_opening_per_address`` of them from one address (an IPv6 /64): one more gets an HTTP
  503 and is closed at once, so half-open connections cannot pile up (:mod:`.limits`);
* ``max_message_bytes``: a bigger message closes that connection with 1009 (the library
  refuses it before reading it into memory);
* ``idle_timeout``: a client that sends nothing for that long (hello included) is closed
  with 1008;
* a slow reader: what the server sends a client waits in a bounded queue (``send_queue``
  messages, one per tick that produced output: ~13 ms of audio each at real-time pace) and a
  bounded kernel send buffer (``socket_send_buffer`` bytes, 256 KiB: ~2.7 s of relayed PCM);
  a client whose queue is full, or that takes no message for ``idle_timeout`` (however few
  wait), is disconnected (1008, "too slow"; its close frame waits ``close_timeout`` at most),
  never waited for: the engine's tick never awaits a socket. Nothing is dropped silently: a
  stream either arrives whole or its connection is closed with a reason;
* a fast writer: at most ``max_backlog_seconds`` of a client's input (PCM frames, or code
  frames in decode mode) waits for the engine; the rest of a message waits as it came (at
  most ``max_message_bytes``: in decode mode one message can carry over an hour of audio;
  its packets are parsed ``PARSE_SLICE`` bytes, 16 KiB, at a time as room frees, never all
  at once) and the client is not read from until it fits (TCP back-pressure slows it down),
  so a client that sends a whole file at once is served at the engine's pace with bounded
  memory: one message, 2 s of frames and the packets of one 16 KiB slice;
* pacing: while two clients or more are live, each stream is served at most at 1.25x real
  time plus a bank of ``max_backlog_seconds`` (it earns 1.25 frames per frame period; a tick
  gives it at most ``max_frames``, 8), so a client that sends faster than real time cannot
  slow the others' frames down; its extra frames wait in its backlog (above). A client
  sending at real time has the credit for its frames, and one held up longer than the bank
  catches up (:mod:`.pacing`); a lone client is not paced;
* bandwidth changes (relay): each applies at the frame where it was sent, in order; at most
  one waits per frame (a change at the same frame as the last one waiting replaces it, one
  that leaves the bandwidth as it is at that frame is dropped), and at most
  ``max_pending_changes`` (64) wait: past that the client is closed with 1008. The engine
  thus never spends more on a client's changes than one per frame of its audio;
* malformed input (bad hello, PCM that is not whole float32 samples or not finite, damaged
  packets, a gap in decode mode, a wrong model, data after the end): 1007, that connection only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import mimetypes
import os
import signal
import socket
import statistics
import time
import typing as tp
from importlib import resources

import numpy as np
import torch
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import OpenCodecError
from ..model import EncodecModel
from ..stream.decoder import check_model_for_stream
from ..stream.format import model_label
from ..stream.parser import Damaged, PacketParser
from ..stream.receiver import CodeFrames, Event, StreamEnd, StreamReceiver, StreamStart
from .aio import _after_serving, _cancel, _ignore_interrupt, _InterruptOnce, _on_sigterm, _outcome, _within
from .decode_input import PARSE_SLICE, SyncWatch  # noqa: F401  (PARSE_SLICE: imported from here)
from .engine import Engine
from .limits import GatedConnection, OpeningGate, ServeLimits
from .session import Output, Session
from .protocol import (CLOSE, ProtocolError, check_after_end, close_reason, loss_reason, message,
                       parse_control, parse_hello, pcm_from_bytes, pcm_to_bytes)

_LOG = logging.getLogger(__name__)
WS_PATH = "/ws"
_STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
           "/capture-worklet.js": "capture-worklet.js"}
_DONE = object()
STATS_INTERVAL = 0.5  # seconds between a session's stats messages


def _static_response(path: str) -> Response:
    name = _STATIC.get(path)
    if name is None:
        return Response(404, "Not Found", Headers([("Content-Type", "text/plain"), ("Content-Length", "10"),
                                                   ("Connection", "close")]), b"not found\n")
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(200, "OK", Headers([("Content-Type", kind), ("Content-Length", str(len(body))),
                                        ("Cache-Control", "no-store"), ("Connection", "close")]), body)


class CodecServer:
    """The server: ``async with CodecServer(model).running(host, port) as server`` (tests), or
    :meth:`serve_forever` (the command). ``batched`` False: every stream in its own batch-1
    step (bit-exact codes, slower)."""

    def __init__(self, model: EncodecModel, limits: ServeLimits = ServeLimits(), batched: bool = True,
                 max_bandwidth: float | None = None, batch_window: float | None = None):
        self.model = model
        # checks the bandwidth; batch_window (s): how long a tick may wait for every stream's
        # frame (default one frame; 0: serve whatever has arrived at once). Each stream is paced
        # (1.25x real time plus at most max_backlog_seconds banked) as soon as two are live.
        self.engine = Engine(model, batched=batched, max_bandwidth=max_bandwidth, batch_window=batch_window,
                             pace_seconds=limits.max_backlog_seconds)
        self.limits = limits
        self.batched = batched
        self.clients = 0
        self.refused = 0
        # connections accepted, not admitted (at most opening_per_address_limit from one address)
        self.opening = OpeningGate(limits.opening_limit, limits.opening_per_address_limit)
        self.closed_early: collections.Counter[int] = collections.Counter()  # close code -> sessions
        self.port: int | None = None

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> tp.AsyncIterator["CodecServer"]:
        """Serve on ``host:port`` (0: any free port, then ``self.port``) inside the block
        (once per server: the engine's worker thread ends with it)."""
        ticker = asyncio.create_task(self.engine.run())
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    # compression=None: no permessage-deflate. PCM and code packets hardly compress,
                    # and deflating every message cost ~10% of the server's CPU at 16 clients (py-spy).
                    server = await stack.enter_async_context(serve(
                        self._handle, host, port, process_request=self._http, compression=None,
                        max_size=self.limits.max_message_bytes, close_timeout=self.limits.close_timeout,
                        create_connection=functools.partial(GatedConnection, gate=self.opening)))
                except socket.gaierror as exc:  # the address does not resolve: say which
                    raise OSError(f"cannot listen on host {host!r} (port {port}): "
                                  f"{exc.strerror or exc}") from None
                except OSError as exc:  # e.g. the port is taken: the reason, without asyncio's wording
                    reason = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise OSError(f"cannot listen on host {host!r} (port {port}): "
                                  f"{reason[:1].lower()}{reason[1:]}") from None
                # on the way out, before websockets closes the server (it waits open_timeout,
                # 10 s, for a connection that never sends its request): those are cut off
                stack.callback(self.opening.abort_unrequested)
                self.port = _bound_port(server)
                yield self
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def serve_forever(self, host: str, port: int, ready: tp.Callable[[str], None] = print) -> None:
        """Serve until Ctrl-C (SIGINT, which ``asyncio.run`` turns into cancelling this task)
        or SIGTERM (``kill``, ``docker stop``, systemd), which returns normally: either way
        the connected clients get close 1001 (going away)."""
        stop = asyncio.get_running_loop().create_future()
        with _on_sigterm(lambda: stop.done() or stop.set_result(None)):
            async with self.running(host, port):
                url = f"[{host}]" if ":" in host else host  # an IPv6 address, as URLs write it
                ready(f"serving {model_label(self.model)} on http://{url}:{self.port}/ "
                      f"(WebSocket {WS_PATH}); Ctrl-C stops")
                await stop

    # -- HTTP and connections ---------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None
        if path == "/info.json":
            body = json.dumps(self.info()).encode()
            return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body))),
                                                ("Connection", "close")]), body)
        return _static_response(path)

    def info(self) -> dict[str, tp.Any]:
        """What the page needs before it connects (served as /info.json)."""
        bandwidths = self.engine.bandwidths
        return {"model": model_label(self.model), "sample_rate": self.model.sample_rate,
                "channels": self.model.channels, "hop_length": self.model.hop_length,
                "bandwidths": bandwidths,
                "default_bandwidth": 6.0 if 6.0 in bandwidths else max(bandwidths),
                "max_clients": self.limits.max_clients}

    async def _handle(self, ws: GatedConnection) -> None:
        if self.clients >= self.limits.max_clients:
            self.refused += 1
            await ws.close(CLOSE["full"], f"server full ({self.limits.max_clients} clients); "
                                          "try again later")
            return
        self.clients += 1
        ws.admitted()  # counted in clients now, not in the opening connections
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:  # bounded: the kernel would otherwise buffer megabytes for a stalled client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.socket_send_buffer)
        try:
            await self._converse(ws)
        except ProtocolError as exc:
            self.closed_early[exc.code] += 1
            await self._close(ws, exc.code, close_reason(str(exc)))
        except OpenCodecError as exc:  # e.g. a packet whose CRC is right but whose format is not
            self.closed_early[CLOSE["invalid_data"]] += 1
            await self._close(ws, CLOSE["invalid_data"], close_reason(str(exc)))
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug: this connection only, said so, and logged
            _LOG.exception("session failed")
            self.closed_early[CLOSE["server_error"]] += 1
            await self._close(ws, CLOSE["server_error"],
                              close_reason(f"server error: {type(exc).__name__}: {exc}"))
        finally:
            self.clients -= 1

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``, or cut off after ``close_timeout`` a client that
        does not read (``ws.close`` would wait without end to write the close frame)."""
        try:
            await _within(self.limits.close_timeout, ws.close(code, reason))
        except asyncio.TimeoutError:
            ws.transport.abort()

    async def _converse(self, ws: ServerConnection) -> None:
        hello = parse_hello(await self._recv(ws, "the hello"), self.engine.bandwidths,
                            self.model.name, self.model.target_bandwidths)
        queue: asyncio.Queue[tp.Any] = asyncio.Queue(self.limits.send_queue)
        halt: list[ProtocolError] = []  # why the server ends this session early
        halted = asyncio.Event()
        # decode mode: the stream header decides the codebooks (0 until it arrives); a bandwidth
        # in the hello does not apply, and ready says so (null, "from": the stream header)
        decode = hello.mode == "decode"
        session = Session(hello, 0 if decode else self.model.num_codebooks(hello.bandwidth),
                          lambda output: self._deliver(session, output, queue, halt, halted))
        await ws.send(message("ready", mode=hello.mode, bandwidth=None if decode else hello.bandwidth,
                              num_codebooks=session.num_codebooks or None,
                              **({"codebooks_from": "the stream header"} if decode else {}),
                              sample_rate=self.model.sample_rate,
                              channels=self.model.channels, hop_length=self.model.hop_length,
                              frames_per_packet=hello.frames_per_packet, model=model_label(self.model),
                              pcm="float32le"))
        self.engine.add(session)
        reader = asyncio.create_task(self._read(ws, session))
        sender = asyncio.create_task(self._send(ws, queue))
        stopper = asyncio.create_task(halted.wait())
        tasks = {reader, sender, stopper}
        try:
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                tasks -= done  # (the reader's normal end: the sender finishes the output)
                # every finished task's outcome, in order: the first error ends the session (a
                # ProtocolError or ConnectionClosed, normally), a bug among the others is logged
                errors = [halt[0]] if stopper in done else []
                errors += [e for t in (reader, sender) if t in done and (e := _outcome(t)) is not None]
                for error in errors[1:]:
                    _log_lost(error)
                if errors:
                    raise errors[0]
                if sender in done:
                    return
        finally:
            session.dropped = not session.finished
            self.engine.notify()
            for task in tasks:  # not looked at: an error it ends with is reported, never dropped
                _cancel(task, _log_lost)

    async def _recv(self, ws: ServerConnection, what: str) -> str | bytes:
        try:
            return await _within(self.limits.idle_timeout, ws.recv())
        except asyncio.TimeoutError:
            raise ProtocolError(f"idle: no message for {self.limits.idle_timeout:g} s "
                                f"(waiting for {what})", CLOSE["policy"]) from None

    async def _read(self, ws: ServerConnection, session: Session) -> None:
        """Client messages -> the session's input until its end (more: refused). At most
        ``max_backlog`` frames wait for the engine: the rest of a message waits (as it came: PCM
        or code packets) and the client is not read from until they fit (TCP back-pressure)."""
        hop, channels = self.model.hop_length, self.model.channels
        max_backlog = max(1, int(self.limits.max_backlog_seconds * self.model.frame_rate))
        rest = np.zeros((channels, 0), dtype=np.float32)
        parser, receiver, watch = PacketParser(), StreamReceiver(), SyncWatch()
        while True:
            await self._room(session, max_backlog)
            data = await self._recv(ws, "audio, packets or {\"type\": \"end\"}")
            if isinstance(data, str):
                kind, bandwidth = parse_control(data, self.engine.bandwidths, self.model.name,
                                                self.model.target_bandwidths)
                if kind == "bandwidth":
                    if session.hello.mode != "relay":
                        raise ProtocolError("the bandwidth changes on the fly in relay mode only; "
                                            "open a new connection for another bandwidth")
                    # from the first frame that starts at or after this point of the input;
                    # queued, so that every change applies at its own frame, in order (at most
                    # one per frame: the last one sent for it)
                    limit = self.limits.max_pending_changes
                    if not session.request_switch(self.model.num_codebooks(bandwidth),
                                                  -(-session.samples_received // hop), limit):
                        raise ProtocolError(f"too many bandwidth changes waiting (over {limit}, at "
                                            "most one per frame)", CLOSE["policy"])
                    self.engine.notify()
                    continue
                if session.hello.mode == "decode":
                    await self._decode_packets(session, receiver, parser.finish(), max_backlog)
                    await self._decode_events(session, receiver.finish(), max_backlog)
                    if not session.ending:
                        session.end_length, session.ending = None, True
                else:
                    session.tail = rest if rest.shape[-1] else None
                    session.ending = True
                self.engine.notify()
                break
            if session.hello.mode == "decode":
                session.packet_bytes += len(data)  # the packets' bytes, as encode mode counts them
                await self._decode_packets(session, receiver, watch.parsed(parser, data), max_backlog)
            else:
                # numpy here: the loop's per-message work (one message per ~13 ms per client)
                # costs a few microseconds per operation instead of a torch call's ~10.
                new = pcm_from_bytes(data, channels)
                session.samples_received += new.shape[-1]
                pcm = np.concatenate([rest, new], axis=-1) if rest.shape[-1] else new
                whole = pcm.shape[-1] - pcm.shape[-1] % hop
                await self._queue(session, session.frames, (pcm[:, i:i + hop] for i in range(0, whole, hop)),
                                  max_backlog)
                rest = pcm[:, whole:]
            self.engine.notify()
            if session.ending:  # decode mode: the end packet came; bytes after it in its
                # message are refused as packets there are (not left unparsed, unseen)
                await self._decode_packets(session, receiver, parser.finish(), max_backlog)
                break
        while True:  # until the output is sent (cancelled then): more is refused, never dropped
            check_after_end(await ws.recv())

    async def _room(self, session: Session, max_backlog: int) -> None:
        """Wait until fewer than ``max_backlog`` input frames of ``session`` wait for the engine."""
        if session.backlog() < max_backlog:
            return
        self.engine.notify()
        while session.backlog() >= max_backlog:
            await asyncio.sleep(self.model.hop_length / self.model.sample_rate)

    async def _queue(self, session: Session, queue: collections.deque, frames: tp.Iterable[tp.Any],
                     max_backlog: int) -> None:
        """Append ``frames`` to the session's ``queue`` (its ``frames`` or ``codes``), never
        more than ``max_backlog`` waiting: a frame that does not fit waits for the engine."""
        for frame in frames:
            if session.backlog() >= max_backlog:
                await self._room(session, max_backlog)
            queue.append(frame)

    async def _decode_packets(self, session: Session, receiver: StreamReceiver, packets: tp.Iterable[tp.Any],
                              max_backlog: int) -> None:
        """Decode mode: parsed packets -> the session's code frames, packet by packet (a
        message of many packets is neither parsed nor turned into code frames at once)."""
        for packet in packets:
            await self._decode_events(session, self._packet_events(receiver, packet), max_backlog)

    @staticmethod
    def _packet_events(receiver: StreamReceiver, packet: tp.Any) -> list[Event]:
        if isinstance(packet, Damaged):
            raise ProtocolError(f"damaged packet data at byte {packet.offset}: {packet.reason}")
        return receiver.handle(packet)

    async def _decode_events(self, session: Session, events: list[Event], max_backlog: int) -> None:
        """Decode mode: one loss-free stream (the WebSocket is reliable); anything else closes."""
        for i, event in enumerate(events):
            if session.ending:
                raise ProtocolError("data after the end of the stream")
            if isinstance(event, StreamStart):
                if session.stream_started:
                    raise ProtocolError("a second stream header: one stream per connection")
                try:
                    check_model_for_stream(self.model, event.info)
                except OpenCodecError as exc:
                    raise ProtocolError(str(exc)) from None
                session.stream_started = True
                session.num_codebooks = event.info.num_codebooks
                session.hop_samples = event.info.hop_length
            elif isinstance(event, CodeFrames):
                codes = event.codes
                session.samples_in += codes.shape[-1] * session.hop_samples  # decode: audio received
                await self._queue(session, session.codes, (codes[:, f:f + 1] for f in range(codes.shape[-1])),
                                  max_backlog)
                self.engine.notify()
            elif isinstance(event, StreamEnd):
                session.end_length, session.ending = event.length, True
                session.samples_in = event.length
            else:  # MissingFrames or a Notice (loss, damage, a duplicate, ...)
                raise ProtocolError(loss_reason(event, events[i + 1:]))

    def _deliver(self, session: Session, output: Output, queue: asyncio.Queue,
                 halt: list[ProtocolError], halted: asyncio.Event) -> None:
        """Engine output -> the client's queue (on the loop; never blocks)."""
        if output.error is not None:
            halt.append(ProtocolError(output.error, CLOSE["server_error"]))
            halted.set()
            return
        items: list[tp.Any] = []
        if output.packets:
            items.append(output.packets)
        if output.pcm:
            items.append(pcm_to_bytes(np.concatenate(output.pcm, axis=-1)))
        now = time.monotonic()
        if output.done or now - session.stats_at >= STATS_INTERVAL:
            session.stats_at = now
            items.append(message("done" if output.done else "stats", **self._stats(session, output.done)))
        if output.done:
            items.append(_DONE)
        if not items:
            return
        try:  # one entry per tick, whatever it holds: a queue of 1 serves a client that keeps up
            queue.put_nowait(items)
        except asyncio.QueueFull:
            halt.append(ProtocolError(f"client too slow: {self.limits.send_queue} ticks of output "
                                      "waiting to be sent; disconnected", CLOSE["policy"]))
            halted.set()

    def _stats(self, session: Session, done: bool) -> dict[str, tp.Any]:
        """A stats message's fields; ``bitrate_kbps``: over the whole stream when ``done``, else
        since the previous stats message (so that a bandwidth change shows at once)."""
        rate = self.model.sample_rate
        samples, data = session.samples_in, session.packet_bytes
        if not done:
            samples, data = samples - session.stats_samples, data - session.stats_bytes
            session.stats_samples, session.stats_bytes = session.samples_in, session.packet_bytes
        steps = list(self.engine.step_seconds)[-200:]
        return {"samples_in": session.samples_in, "samples_out": session.samples_out,
                "packet_bytes": session.packet_bytes, "num_codebooks": session.num_codebooks or None,
                "bandwidth": (self.model.bandwidth_for_codebooks(session.num_codebooks)
                              if session.num_codebooks else None),
                "bitrate_kbps": (8 * data / (samples / rate) / 1000) if samples > 0 else None,
                "step_ms_p50": 1000 * statistics.median(steps) if steps else None,
                "clients": self.clients}

    async def _send(self, ws: ServerConnection, queue: asyncio.Queue) -> None:
        """The session's queue -> the client; a message not taken within ``idle_timeout`` (the
        client stopped reading) ends the session with 1008, however few messages wait."""
        limit = self.limits.idle_timeout
        while True:
            for item in await queue.get():  # a tick's messages
                if item is _DONE:
                    await self._close(ws, CLOSE["normal"], "stream complete")
                    return
                try:
                    await _within(limit, ws.send(item))
                except asyncio.TimeoutError:
                    raise ProtocolError(f"client too slow: it read nothing for {limit:g} s; "
                                        "disconnected", CLOSE["policy"]) from None


def _log_lost(error: BaseException) -> None:
    """An error of a session task that did not end the session: a bug is logged, not lost
    (a ProtocolError or a closed connection beside the one that ended it says nothing new)."""
    if not isinstance(error, (ProtocolError, OpenCodecError, ConnectionClosed)):
        _LOG.error("session task failed: %s: %s", type(error).__name__, error, exc_info=error)


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


def run_server(model: EncodecModel, host: str = "127.0.0.1", port: int = 8765,
               limits: ServeLimits = ServeLimits(), batched: bool = True,
               max_bandwidth: float | None = None, threads: int = 1, batch_window: float | None = None,
               ready: tp.Callable[[str], None] = print, exiting: bool = False) -> None:
    """Serve ``model`` until interrupted (Ctrl-C or SIGTERM returns normally, the clients
    closed with 1001; a second Ctrl-C during that clean-up does nothing; the caller's SIGINT
    handler is back on return, or, with ``exiting`` (``opencodec serve``: the process ends next),
    Ctrl-C does nothing through the exit); ``max_bandwidth`` (kbps):
    the highest a client may ask for (default the model's highest); ``threads``: PyTorch's
    (default 1: the streams are batched, and more threads spin against other work);
    ``batch_window`` (s): see :class:`~.engine.Engine`."""
    from ..streamability import check_streamable

    check_streamable(model.config)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    server = CodecServer(model, limits, batched, max_bandwidth, batch_window)

    previous = signal.getsignal(signal.SIGINT)

    async def serve() -> None:
        interrupts = _InterruptOnce(asyncio.current_task())  # type: ignore[arg-type]
        if previous is signal.default_int_handler:  # as asyncio.run decides (SIG_IGN: a background job)
            with contextlib.suppress(ValueError):  # not the main thread: asyncio.run's handling
                signal.signal(signal.SIGINT, interrupts)
        try:
            await server.serve_forever(host, port, ready)
        except asyncio.CancelledError:
            if not interrupts.count:  # (Ctrl-C before this ran: asyncio.run's own handler's)
                raise
        finally:  # stopping (asyncio.run's own handler would raise inside its clean-up)
            with contextlib.suppress(ValueError, TypeError):  # not the main thread; no Python handler
                if server.port is not None:  # it served (not: the address could not be taken)
                    signal.signal(signal.SIGINT, _ignore_interrupt)
                elif signal.getsignal(signal.SIGINT) is interrupts:
                    signal.signal(signal.SIGINT, previous)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        _after_serving(previous, exiting)
