"""The batcher behind ``opencodec serve``: every live stream advanced by one batched step per
tick, whatever connection it came from.

One :class:`~opencodec.multistream.MultiStreamEncoder` built at the highest bandwidth the
server offers serves every stream: residual quantisation is sequential, so a stream at a lower
bandwidth takes the first K rows of those codes (exactly the codes an encoder at its own
bandwidth gives). One :class:`~opencodec.multistream.MultiStreamDecoder` decodes all streams;
in fast mode one step takes every K (the codes padded with "no codebook"); in exact mode its
step takes one K per call, so a tick runs one decoder step per distinct K among the streams
with a code frame ready.

Pacing (``pace_seconds``, set by the server; :mod:`.pacing`): with two live streams or more, a
stream takes at most 1.25x real time plus what it has banked: it earns 1.25 frames of credit
per frame period, at most ``pace_seconds`` of it (it starts with that much), each frame it takes
costs one, and a tick gives it at most ``max_frames`` frames. A client that sends faster than
real time (a whole file at once) is thus served at 1.25x real time once its bank is spent, its
other frames waiting in its bounded backlog, and cannot slow the other streams' ticks down; a
client that sends at real time has the credit for its frames, and one whose audio was held up
(a stall longer than the bank) catches up at a quarter of real time. A lone stream is not
paced: there is nobody to share with. Pacing changes when frames are taken, never
which: each stream's output is what it would be alone.

Threads: the network I/O stays on the asyncio loop; the steps run on one worker thread
(``run_in_executor``), so a tick never waits for a socket and the loop keeps reading while a
step runs. A :class:`Session`'s input deques are filled on the loop and emptied on the worker
(``deque`` append/popleft are atomic), and so are its pending bandwidth changes (relay), under
its ``switch_lock``; everything else of a session is touched on one side only. A step takes
every frame a stream has waiting (at most ``max_frames``), the streams with as many frames
sharing one batched step; a tick runs at most ``max_steps`` steps, then
hands the output back to the loop (:meth:`Session.deliver`, set by the server, must not block).

Batching: one step of N streams costs far less than N steps of one (the weights are read once),
so a tick waits, at most ``batch_window`` (one frame) after the oldest input it would serve,
until every live stream has input; it takes only the input waiting when it began (what arrives
meanwhile waits for the next tick, with the others), and every stream in a step takes as many
frames as the one with the fewest. Frames left after a tick's first step get more steps in
that tick only if at least half the streams have some (or a stream is ending); otherwise they
wait for the next tick's step of all streams. Without this, clients whose frames arrive at different
moments of a frame period were served in several small steps per period, which cost more
than the core had at 16 clients (``benchmarks/serve_load.py``, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
import typing as tp
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..model import EncodecModel
from ..multistream import MultiStreamDecoder, MultiStreamEncoder
from ..stream.format import StreamInfo
from ..stream.writer import PacketWriter
from .pacing import Pacer, stream_input
from .session import Output, Session


def _joined(frames: list[np.ndarray] | list[torch.Tensor]) -> torch.Tensor:
    """Frames [C, hop] each (arrays, as the server's reader gives them, or tensors) -> one
    tensor [C, n * hop]."""
    if isinstance(frames[0], np.ndarray):
        return torch.from_numpy(frames[0] if len(frames) == 1 else np.concatenate(frames, axis=-1))
    return frames[0] if len(frames) == 1 else torch.cat(frames, dim=-1)


class Engine:
    """All live streams, one batched encoder and decoder step per tick (see the module doc).

    ``model``: a streamable model; its target bandwidth is set to ``max_bandwidth`` (kbps,
    default its highest), the encoder's, and no stream may ask for more. ``batched`` False
    runs each stream in its own batch-1 step (bit-exact, slower). A step takes up to
    ``max_frames`` waiting frames of each stream at once: a server that fell behind catches up
    with steps that cost far less per frame than one frame per step. Unbatched (``--exact``)
    it keeps one frame per step, as before. ``batch_window`` (seconds, batched only): how long
    a tick may wait for every live stream's input (default one frame; 0: no waiting).
    ``pace_seconds`` (seconds of audio, None: no pacing): the most credit a stream banks when
    it is paced (see the module doc); ``clock``: the engine's clock in seconds (tests).
    """

    def __init__(self, model: EncodecModel, batched: bool = True, max_steps: int = 8,
                 max_bandwidth: float | None = None, max_frames: int = 8,
                 batch_window: float | None = None, pace_seconds: float | None = None,
                 clock: tp.Callable[[], float] = time.monotonic):
        model.set_target_bandwidth(max(model.target_bandwidths) if max_bandwidth is None else max_bandwidth)
        self.bandwidths = [float(b) for b in model.target_bandwidths if b <= model.bandwidth]
        self.model = model
        self.batched = batched
        self.max_steps = max_steps
        # Unbatched (exact) mode keeps one frame per stream per step, as before catching up
        # existed: several code frames in one decoder step round differently (~1e-6) from one
        # at a time, and its purpose is the streaming encoder's and decoder's output, not load.
        self.max_frames = max_frames if batched else 1
        self.encoder = MultiStreamEncoder(model, batched=batched)
        self.decoder = MultiStreamDecoder(model, batched=batched)
        self.hop = model.hop_length
        self.sessions: list[Session] = []  # the worker's; sessions join through _joining
        self._joining: collections.deque[Session] = collections.deque()
        self.step_seconds: collections.deque[float] = collections.deque(maxlen=2000)
        self.ticks = 0
        # Batched, a tick waits (at most this long after the first input it would serve) until
        # every live stream has input: one step of all streams costs far less than several
        # steps of a few each (default: one frame's duration).
        if batch_window is not None and not (math.isfinite(batch_window) and batch_window >= 0):
            raise ValueError(f"batch_window must be a finite number of seconds >= 0, got {batch_window}")
        self.batch_window = (model.hop_length / model.sample_rate if batch_window is None
                             else batch_window) if batched else 0.0
        if pace_seconds is not None and not (math.isfinite(pace_seconds) and pace_seconds > 0):
            raise ValueError(f"pace_seconds must be a finite number of seconds > 0, got {pace_seconds}")
        rate = model.sample_rate / model.hop_length
        # the most credit a paced stream banks: pace_seconds, at least one tick's worth
        self.pacer = None if pace_seconds is None else Pacer(
            max(float(self.max_frames), pace_seconds * rate), rate, self.max_frames, clock)
        self._credit_timer: asyncio.TimerHandle | None = None
        self._input_since: float | None = None  # loop clock: the oldest input no tick has taken
        self._waiter: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="opencodec-serve")

    def add(self, session: Session) -> None:
        if session.encodes:
            session.info = StreamInfo.from_model(self.model, session.num_codebooks,
                                                 session.hello.frames_per_packet)
            session.writer = PacketWriter(session.info)
        if session.hello.mode == "decode":
            session.hold = self.hop - 1
        self._joining.append(session)
        self._wake.set()  # a tick takes it in; not input, so the batch window is not started

    def notify(self) -> None:
        """Input arrived (or a session ended): run a tick soon (on the loop)."""
        if self._input_since is None:
            self._input_since = time.monotonic()
        self._wake.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _someone_missing(self) -> bool:
        """A live stream that has sent input before has none waiting (loop side, between
        ticks). A client that has not sent anything yet is not waited for."""
        for s in itertools.chain(self.sessions, self._joining):
            if s.dropped or s.finished or s.ending:
                continue
            if s.encodes and s.samples_received and not s.frames:
                return True
            if not s.encodes and s.stream_started and not s.codes:
                return True
        return False

    async def _gather(self) -> None:
        """Wait until every live stream has input, or ``batch_window`` after the oldest input."""
        if self.batch_window <= 0 or self._input_since is None:
            return
        loop = asyncio.get_running_loop()
        while self._someone_missing():
            left = self._input_since + self.batch_window - time.monotonic()
            if left <= 0:
                return
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(left, lambda: waiter.done() or waiter.set_result(None))
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    async def run(self) -> None:
        """Tick until cancelled (then the worker thread ends: run once)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                await self._gather()
                self._wake.clear()
                self._input_since = None
                try:
                    outputs = await loop.run_in_executor(self._pool, self._tick)
                except Exception as exc:  # noqa: BLE001 - every live session is told, then a fresh start
                    outputs = self._fail(exc)
                for session, output in outputs:
                    if not session.dropped:
                        session.deliver(output)
                if self._joining or any(self._has_work(s) for s in self.sessions):
                    self._wake.set()
                elif self.pacer is not None and self.pacer.credit_in is not None:
                    self._wake_later(loop, self.pacer.credit_in)  # a held stream earns a frame
        finally:
            if self._credit_timer is not None:
                self._credit_timer.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _wake_later(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Run a tick in ``delay`` seconds (one timer at a time: the latest replaces it)."""
        if self._credit_timer is not None:
            self._credit_timer.cancel()
        self._credit_timer = loop.call_later(max(delay, 1e-3), self._wake.set)

    def _fail(self, exc: Exception) -> list[tuple[Session, Output]]:
        """A step raised: the streams' states cannot be trusted; end every session with the
        reason and start over with empty encoder and decoder."""
        while self._joining:
            self.sessions.append(self._joining.popleft())
        failed = [(s, Output(error=f"server error: {type(exc).__name__}: {exc}")) for s in self.sessions]
        self.sessions = []
        if self.pacer is not None:
            self.pacer.reset()
        self.encoder = MultiStreamEncoder(self.model, batched=self.batched)
        self.decoder = MultiStreamDecoder(self.model, batched=self.batched)
        return failed

    # -- worker thread --------------------------------------------------------------------
    def _has_work(self, s: Session) -> bool:
        """Something a tick can do for ``s`` now (a paced stream without credit waits)."""
        if s.dropped or (s.hello.mode == "relay" and s.codes):
            return True
        if self.pacer is not None and id(s) in self.pacer.held:
            return False
        return bool(s.frames or s.codes or (s.ending and not s.finished))

    def _tick(self) -> list[tuple[Session, Output]]:
        self.ticks += 1
        out: dict[int, Output] = {}
        while self._joining:
            self.sessions.append(self._joining.popleft())
        by_id = {id(s): s for s in self.sessions}
        self._drop_gone()
        for s in self.sessions:  # input that arrives during this tick waits for the next one
            s.quota = len(stream_input(s))
        if self.pacer is not None:
            self.pacer.quotas(self.sessions)
        taken = {id(s): s.quota for s in self.sessions}
        for i in range(self.max_steps):
            if not self._step(out, first=i == 0):
                break
        if self.pacer is not None:
            self.pacer.charge(self.sessions, taken)
        for s in self.sessions:
            if s.ending and not s.finished and not s.frames and not s.codes:
                self._finish(s, out.setdefault(id(s), Output()))
        self._drop_gone()  # also those that left during this tick
        self.sessions = [s for s in self.sessions if not s.finished]
        return [(by_id[key], o) for key, o in out.items()]

    def _drop_gone(self) -> None:
        """Close the streams of sessions whose client has gone, and forget them."""
        for s in self.sessions:
            if s.dropped and not s.finished:
                self._drop(s)
                s.finished = True

    def _step(self, out: dict[int, Output], first: bool = True) -> bool:
        """One encoder step, then one decoder step (one per K in exact mode); False when no
        stream had input."""
        started = time.perf_counter()
        enc_in = {}
        # Every stream takes as many frames (the fewest any has waiting): one batched step.
        feeding = [s for s in self.sessions if s.encodes and s.quota]
        if not first and self.batched and not any(s.ending for s in feeding):
            # The frames left after the first step: a step for a few streams costs almost what
            # one for all costs, so they wait for the next tick unless half the streams have some.
            live = sum(1 for s in self.sessions if s.encodes and not s.finished)
            if 2 * len(feeding) < live:
                feeding = []
        count = min([self.max_frames] + [s.quota for s in feeding])
        for s in feeding:
            s.quota -= count
            if s.enc_id is None:
                s.enc_id = self.encoder.open()
            enc_in[s.enc_id] = (s, _joined([s.frames.popleft() for _ in range(count)]))
        if enc_in:
            codes = self.encoder.push({sid: frame for sid, (_, frame) in enc_in.items()})
            for sid, (s, frame) in enc_in.items():
                s.samples_in += frame.shape[-1]
                self._codes_out(s, codes[sid], out)
        # decoder group (K, or 0: one group for every K) -> (stream, its next frames with one K)
        runs: dict[int, list[tuple[Session, int]]] = {}
        for s in self.sessions:
            # decode mode: the code frames of this tick's quota; relay: those just encoded
            limit = min(len(s.codes), self.max_frames)
            if s.hello.mode == "decode":
                limit = min(limit, s.quota)
            if s.decodes and limit:
                if s.dec_id is None:
                    s.dec_id = self.decoder.open()
                k, n = s.codes[0].shape[0], 1
                while n < limit and s.codes[n].shape[0] == k:
                    n += 1
                # a fast decoder takes every K in one step (codes padded): one group
                runs.setdefault(0 if self.decoder.mixed_bandwidths else k, []).append((s, n))
        groups: dict[int, dict[int, tuple[Session, torch.Tensor]]] = {}
        for k, streams in runs.items():
            count = min(n for _, n in streams)
            for s, _ in streams:
                if s.hello.mode == "decode":
                    s.quota -= count
                take = [s.codes.popleft() for _ in range(count)]
                groups.setdefault(k, {})[s.dec_id] = (s, take[0] if count == 1 else torch.cat(take, dim=-1))
        for group in groups.values():
            audio = self.decoder.push({sid: frame for sid, (_, frame) in group.items()})
            for sid, (s, _) in group.items():
                self._pcm_out(s, audio[sid], out)
        if enc_in or groups:
            self.step_seconds.append(time.perf_counter() - started)
            return True
        return False

    def _codes_out(self, s: Session, codes: torch.Tensor, out: dict[int, Output]) -> None:
        """A stream's new code frames [K_max, f]: cut to its K (each bandwidth change applies
        from its own frame on, in the order sent), packed, and (relay) queued for the decoder."""
        while codes.shape[-1]:
            n = codes.shape[-1]
            with s.switch_lock:  # the loop may be replacing the last change
                head = s.switches[0] if s.switches else None
            if head is not None:
                k, frame = head
                # the decoder's warm-up concatenates its first frames: they keep one K
                at = max(frame, self.decoder.warmup_frames)
                if s.code_frames >= at:
                    self._switch_bandwidth(s, k)  # before it is removed: see request_switch
                    with s.switch_lock:
                        s.switches.popleft()
                    continue
                n = min(n, at - s.code_frames)
            self._pack(s, codes[:s.num_codebooks, :n], out)
            codes = codes[:, n:]

    def _pack(self, s: Session, mine: torch.Tensor, out: dict[int, Output]) -> None:
        s.code_frames += mine.shape[-1]
        assert s.writer is not None
        data = s.writer.push(mine)
        s.packet_bytes += len(data)
        if s.hello.mode == "encode":
            out.setdefault(id(s), Output()).packets += data
        else:
            s.codes.extend(mine[:, i:i + 1] for i in range(mine.shape[-1]))

    def _switch_bandwidth(self, s: Session, k: int) -> None:
        """Relay: from now on K = ``k``. The packet stream the bit rate is measured on ends and
        a new one starts, as a sender would do (a new header)."""
        if k == s.num_codebooks:
            return
        assert s.writer is not None and s.info is not None
        s.packet_bytes += len(s.writer.finish((s.code_frames - s.writer_start) * self.hop))
        s.info = StreamInfo.from_model(self.model, k, s.info.frames_per_packet)
        s.writer = PacketWriter(s.info)
        s.writer_start = s.code_frames
        s.num_codebooks = k

    def _pcm_out(self, s: Session, audio: torch.Tensor, out: dict[int, Output], final: bool = False
                 ) -> None:
        """Release decoded audio [C, m], trimmed to ``end_length``; in decode mode the last
        ``hop - 1`` samples wait until more audio or the end packet (the stream's length)."""
        held = torch.cat([s.held, audio], dim=-1) if s.held is not None else audio
        n = held.shape[-1] if final else held.shape[-1] - s.hold
        if s.end_length is not None:
            n = min(n, s.end_length - s.samples_out)
        n = max(0, n)
        s.held = None if final else held[:, n:]
        if n:
            s.samples_out += n
            out.setdefault(id(s), Output()).pcm.append(held[:, :n].numpy().astype(np.float32))

    def _finish(self, s: Session, output: Output) -> None:
        """The input is over and drained: close the encoder (tail), then the decoder."""
        if s.encodes and not s.enc_closed:
            s.enc_closed = True
            tail = None if s.tail is None else torch.as_tensor(s.tail)
            if s.enc_id is None:
                s.enc_id = self.encoder.open()
            if tail is not None:
                s.samples_in += tail.shape[-1]
            codes = self.encoder.close(s.enc_id, tail=tail)
            s.enc_id = None
            out = {id(s): output}
            self._codes_out(s, codes, out)
            assert s.writer is not None
            data = s.writer.finish(s.samples_in - s.writer_start * self.hop)  # last packet, end packet
            s.packet_bytes += len(data)
            if s.hello.mode == "encode":
                output.packets += data
            else:
                s.end_length = s.samples_in
                if s.codes:
                    return  # decode the last frames first (later steps of this or the next tick)
        if s.decodes and s.dec_id is not None:
            self._pcm_out(s, self.decoder.close(s.dec_id), {id(s): output}, final=True)
            s.dec_id = None
        elif s.decodes:
            self._pcm_out(s, torch.zeros(self.model.channels, 0), {id(s): output}, final=True)
        s.finished = True
        output.done = True

    def _drop(self, s: Session) -> None:
        if s.enc_id is not None:
            self.encoder.close(s.enc_id)
        if s.dec_id is not None:
            self.decoder.close(s.dec_id)
        s.enc_id = s.dec_id = None
        s.frames.clear()
        s.codes.clear()
        s.ending = False
