"""Following a stream: :class:`StreamReceiver` turns parsed packets into events (starts,
code frames, gaps, ends, notices).

Receiving (``PacketParser`` + ``StreamReceiver``)
-------------------------------------------------
* The parser scans for the sync word, checks the type, a plausible length (a data body
  can be at most ``1 + ceil(K * fpp * bits / 8)`` bytes once a header is known, so a
  damaged length field never makes it wait for more than one packet) and the CRC. A
  failure at any step drops one byte and scans on; the bytes between the last good packet
  and the next good one are reported once as a :class:`Damaged` region.
* The receiver waits for a header (everything before it is reported as skipped), then
  follows the numbering: a jump of ``d`` data packets means ``d * fpp`` frames are
  missing (:class:`MissingFrames`); an older number is a duplicate or out-of-order packet
  and is dropped; a jump of more than ``max_gap_seconds`` (default 30 s) is not concealed
  but starts a new stream (it is taken for a restart of the sender, not for a loss).
* ``PacketAudioDecoder`` conceals missing frames with digital silence of exactly their
  duration: the decoder state is flushed (so the audio before the gap is complete), the
  zeros follow, and decoding restarts fresh after the gap (the causal decoder's warm-up
  of a few frames applies again). The output therefore keeps the stream's timing: it has
  exactly as many samples as a loss-free reception would have.
* The output is trimmed to the length in the end packet. To be able to do that, the last
  ``hop - 1`` samples decoded are held back until more audio (or the end) arrives: one
  code frame of extra latency. A stream that ends without an end packet (truncated,
  interrupted) is written out in full (whole frames) and reported.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch

from ..bitstream import unpack_codes
from .format import _CRC, _END_BODY, _PREFIX, SEQ_MODULO, StreamInfo
from .parser import DataPacket, Damaged, EndPacket, HeaderPacket, Packet


DEFAULT_MAX_GAP_SECONDS = 30.0


@dataclass(frozen=True)
class StreamStart:
    """A stream begins (or is joined) at code frame ``first_frame`` of the sender's stream."""

    info: StreamInfo
    first_frame: int


@dataclass(frozen=True)
class CodeFrames:
    """Codes [K, F] (LongTensor) of frames ``first_frame .. first_frame + F - 1``."""

    first_frame: int
    codes: torch.Tensor


@dataclass(frozen=True)
class MissingFrames:
    """``count`` frames from ``first_frame`` on were lost (to be concealed)."""

    first_frame: int
    count: int


@dataclass(frozen=True)
class StreamEnd:
    """The stream is over; ``length``: samples per channel from its ``StreamStart`` frame on
    (None when unknown: no end packet, or one that does not fit the frames received)."""

    length: int | None


@dataclass(frozen=True)
class Notice:
    """Something the user should hear about (loss, damage, joining mid-stream, ...)."""

    message: str


Event = tp.Union[StreamStart, CodeFrames, MissingFrames, StreamEnd, Notice]


def _seq_distance(seq: int, expected: int) -> int:
    """``seq - expected`` modulo 2**32, read as a signed number in [-2**31, 2**31)."""
    d = (seq - expected) % SEQ_MODULO
    return d - SEQ_MODULO if d >= SEQ_MODULO // 2 else d


@dataclass
class ReceiverStats:
    """Counts kept by :class:`StreamReceiver`."""

    streams: int = 0
    packets: int = 0
    data_packets: int = 0
    lost_packets: int = 0
    missing_frames: int = 0
    damaged_regions: int = 0
    damaged_bytes: int = 0
    dropped_packets: int = 0
    skipped_bytes: int = 0  # before the first header of a stream (joining mid-stream)


class StreamReceiver:
    """Parsed packets -> :data:`Event`\\ s: starts, code frames, gaps, ends and notices.

    Model-free: the codes are unpacked with the header's K and bits. ``max_gap_seconds``:
    a jump in the numbering longer than this is treated as a new stream rather than
    concealed. See the module documentation for the rules.
    """

    def __init__(self, max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS):
        self.max_gap_seconds = float(max_gap_seconds)
        self.stats = ReceiverStats()
        self.info: StreamInfo | None = None
        self._expected = 0  # absolute number of the next data packet
        self._next_frame = 0  # absolute index of the next frame
        self._start_frame = 0
        self._pre_bytes = 0  # skipped while waiting for a header
        self._pre_packets = 0

    @property
    def active(self) -> bool:
        """True inside a stream (after its header, before its end)."""
        return self.info is not None

    def handle(self, packet: Packet) -> list[Event]:
        """Events for one parsed packet."""
        if isinstance(packet, Damaged):
            return self._damaged(packet)
        self.stats.packets += 1
        if isinstance(packet, HeaderPacket):
            return self._header(packet)
        if self.info is None:
            self._pre_packets += 1
            self._skip(_PREFIX.size + _CRC.size + (
                1 + len(packet.payload) if isinstance(packet, DataPacket) else _END_BODY.size))
            return []
        if isinstance(packet, DataPacket):
            return self._data(packet)
        return self._end(packet)

    def finish(self) -> list[Event]:
        """End of input: ends an open stream (as truncated)."""
        events: list[Event] = []
        if self.info is not None:
            events.append(Notice("the stream ended without an end packet (truncated or "
                                 "interrupted): the last frame is written in full, untrimmed"))
            events += self._stop(None)
        elif self._pre_bytes and self.stats.streams:
            events.append(Notice(f"no stream header after the last stream: {self._pre_bytes} "
                                 f"byte(s) ({self._pre_packets} packet(s)) skipped"))
        return events

    def _skip(self, size: int) -> None:
        """Count bytes skipped while waiting for a stream header."""
        self._pre_bytes += size
        self.stats.skipped_bytes += size

    # -- packets -------------------------------------------------------------------------
    def _damaged(self, packet: Damaged) -> list[Event]:
        if self.info is None:
            self._skip(packet.size)
            return []
        self.stats.damaged_regions += 1
        self.stats.damaged_bytes += packet.size
        if packet.truncated:
            return [Notice(f"stream truncated: the last {packet.size} byte(s) (from byte "
                           f"{packet.offset}) are not a complete packet ({packet.reason})")]
        return [Notice(f"corrupt data at bytes {packet.offset}-{packet.offset + packet.size - 1} "
                       f"({packet.size} bytes; {packet.reason}): dropped, resynchronised at byte "
                       f"{packet.offset + packet.size}")]

    def _header(self, packet: HeaderPacket) -> list[Event]:
        events: list[Event] = []
        if self.info is not None:
            if packet.info == self.info and _seq_distance(packet.seq, self._expected % SEQ_MODULO) >= 0:
                return []  # a repeated header; any loss shows at the next data or end packet
            reason = ("its parameters changed" if packet.info != self.info
                      else "its packet numbering went back")
            events.append(Notice(f"new stream header at byte {packet.offset} ({reason}): the "
                                 "previous stream ends here without an end packet"))
            events += self._stop(None)
        if self._pre_bytes:
            events.append(Notice(f"joined mid-stream: skipped {self._pre_bytes} byte(s) "
                                 f"({self._pre_packets} packet(s)) before the stream header at "
                                 f"byte {packet.offset}"))
        self._pre_bytes = self._pre_packets = 0
        self.info = packet.info
        self._expected = packet.seq
        self._start_frame = self._next_frame = packet.seq * packet.info.frames_per_packet
        self.stats.streams += 1
        return events + [StreamStart(packet.info, self._start_frame)]

    def _data(self, packet: DataPacket) -> list[Event]:
        info = self.info
        assert info is not None
        d = _seq_distance(packet.seq, self._expected % SEQ_MODULO)
        if d < 0:
            self.stats.dropped_packets += 1
            return [Notice(f"data packet {packet.seq} at byte {packet.offset} is a duplicate or "
                           f"out of order (expected {self._expected % SEQ_MODULO}): dropped")]
        frames = packet.num_frames
        if not 1 <= frames <= info.frames_per_packet or \
                len(packet.payload) + 1 != info.data_body_size(frames):
            self.stats.dropped_packets += 1
            return [Notice(f"data packet {packet.seq} at byte {packet.offset} does not fit the "
                           f"stream header ({frames} frame(s), {len(packet.payload)} code bytes; "
                           f"expected 1 to {info.frames_per_packet} frames of "
                           f"{info.num_codebooks} x {info.bits}-bit codes): dropped")]
        events: list[Event] = []
        seq = self._expected + d
        first = seq * info.frames_per_packet
        if first > self._next_frame:  # packets lost (or a short packet that was not the last)
            what = (f"data packet(s) {self._expected % SEQ_MODULO}-{(seq - 1) % SEQ_MODULO} lost"
                    if d > 0 else f"frames missing before data packet {packet.seq}")
            events += self._gap(first, d, what)
            if self.info is None:  # the gap was too long: a new stream starts here
                self.info = info
                self._expected = seq
                self._start_frame = self._next_frame = first
                self.stats.streams += 1
                events.append(StreamStart(info, first))
        codes = unpack_codes(packet.payload, info.num_codebooks, frames, info.bits)
        self._expected = seq + 1
        self._next_frame = first + frames
        self.stats.data_packets += 1
        return events + [CodeFrames(first, codes)]

    def _gap(self, first: int, lost_packets: int, what: str) -> list[Event]:
        """Frames ``_next_frame .. first - 1`` are missing: conceal them or, beyond
        ``max_gap_seconds``, end the stream (the caller restarts it)."""
        info = self.info
        assert info is not None
        count = first - self._next_frame
        if count <= 0:
            return []
        seconds = count * info.hop_length / info.sample_rate
        if seconds > self.max_gap_seconds:
            events: list[Event] = [Notice(f"{what}: a jump of {seconds:.1f} s, more than "
                                          f"{self.max_gap_seconds:g} s; not concealed, decoding "
                                          "restarts")]
            return events + self._stop(None)
        self.stats.lost_packets += lost_packets
        self.stats.missing_frames += count
        return [Notice(f"{what}: {count} frame(s) ({seconds:.3f} s) missing, replaced by silence"),
                MissingFrames(self._next_frame, count)]

    def _end(self, packet: EndPacket) -> list[Event]:
        info = self.info
        assert info is not None
        d = _seq_distance(packet.seq, self._expected % SEQ_MODULO)
        if d < 0:
            self.stats.dropped_packets += 1
            return [Notice(f"end packet at byte {packet.offset} is out of order (says "
                           f"{packet.seq} data packets, {self._expected % SEQ_MODULO} already "
                           "received): dropped")]
        total_frames = info.frames_for(packet.total_samples)
        events: list[Event] = []
        if total_frames > self._next_frame:
            lost = max(1, d)
            events += self._gap(total_frames, lost, f"the last {lost} data packet(s) lost")
            if self.info is None:
                return events
        length: int | None = packet.total_samples - self._start_frame * info.hop_length
        if total_frames < self._next_frame:
            events.append(Notice(f"end packet at byte {packet.offset} says {packet.total_samples} "
                                 f"samples, fewer than the {self._next_frame} frames received: "
                                 "output not trimmed"))
            length = None
        return events + self._stop(length)

    def _stop(self, length: int | None) -> list[Event]:
        self.info = None
        return [StreamEnd(length)]
