"""Code frames -> packet bytes: :class:`PacketWriter` (grouping, numbering, repeated headers)."""

from __future__ import annotations

import numpy as np
import torch

from .defaults import DEFAULT_HEADER_EVERY
from .format import StreamInfo, data_packet, end_packet, header_packet


class PacketWriter:
    """Code frames -> packet bytes: groups frames by fpp, numbers the data packets and
    repeats the stream header before every ``header_every``-th data packet.

    ``push(codes [K, f])`` returns the bytes of the packets completed (b"" when fewer than
    fpp frames are waiting); ``finish(total_samples)`` sends the last, shorter packet and
    the end packet. Counters: ``packets``, ``data_packets``, ``frames``, ``bytes``.
    """

    def __init__(self, info: StreamInfo, header_every: int = DEFAULT_HEADER_EVERY):
        if isinstance(header_every, bool) or not isinstance(header_every, int) or header_every < 1:
            raise ValueError(f"header_every must be an integer >= 1, got {header_every!r}")
        self.info = info
        self.header_every = header_every
        self._pending: list[np.ndarray] = []
        self._count = 0
        self._header_sent = False
        self.data_packets = 0  # also the number of the next data packet
        self.packets = 0
        self.frames = 0
        self.bytes = 0

    def _emit(self, data: bytes) -> bytes:
        self.packets += 1
        self.bytes += len(data)
        return data

    def _header_if_due(self) -> bytes:
        if self._header_sent and self.data_packets % self.header_every:
            return b""
        self._header_sent = True
        return self._emit(header_packet(self.info, self.data_packets))

    def _data(self, codes: np.ndarray) -> bytes:
        out = self._header_if_due()
        out += self._emit(data_packet(self.info, self.data_packets, codes))
        self.data_packets += 1
        self.frames += codes.shape[1]
        return out

    def push(self, codes: torch.Tensor | np.ndarray) -> bytes:
        """Add code frames [K, f] (f >= 0); returns the packets now complete, as bytes."""
        arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if arr.ndim != 2 or arr.shape[0] != self.info.num_codebooks:
            raise ValueError(f"expected codes [{self.info.num_codebooks}, f], got {list(arr.shape)}")
        if arr.shape[1] == 0:
            return b""
        self._pending.append(arr)
        self._count += arr.shape[1]
        fpp = self.info.frames_per_packet
        if self._count < fpp:
            return b""
        block = np.concatenate(self._pending, axis=1)
        whole = block.shape[1] - block.shape[1] % fpp
        out = b"".join(self._data(block[:, i:i + fpp]) for i in range(0, whole, fpp))
        rest = block[:, whole:]
        self._pending, self._count = ([rest] if rest.shape[1] else []), rest.shape[1]
        return out

    def finish(self, total_samples: int) -> bytes:
        """Send the frames still waiting and the end packet; ``total_samples`` per channel
        must need exactly the frames pushed (``ceil(total / hop)``)."""
        out = b""
        if self._count:
            out += self._data(np.concatenate(self._pending, axis=1))
            self._pending, self._count = [], 0
        expected = self.info.frames_for(total_samples)
        if expected != self.frames:
            raise ValueError(f"{total_samples} samples make {expected} frames, but "
                             f"{self.frames} were pushed")
        if not self._header_sent:
            out += self._header_if_due()
        return out + self._emit(end_packet(self.data_packets, total_samples))
