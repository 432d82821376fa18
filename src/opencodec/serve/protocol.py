"""The ``opencodec serve`` WebSocket protocol: the client's hello, the server's JSON messages,
PCM on the wire and the close codes.

A session, as the client sees it::

    client -> {"mode": "relay", "bandwidth": 6}            # text, the first message
    server -> {"type": "ready", "sample_rate": 24000, ...}  # text
    client -> PCM (binary: float32 little-endian, channels interleaved, at the model's rate)
    server -> PCM (binary, same layout)   + {"type": "stats", ...} (text, about twice a second)
    client -> {"type": "bandwidth", "bandwidth": 3}        # text, relay: switch on the fly
    client -> {"type": "end"}                              # text: no more input
    server -> the rest, then {"type": "done", ...} and a normal close (1000)

Modes: ``encode`` (PCM in, packet bytes out in the :mod:`opencodec.stream` format),
``decode`` (packet bytes in, PCM out) and ``relay`` (PCM in, decoded PCM out, with the bit
rate of the packets the stream would take). Errors close only the offending connection,
with a WebSocket close code and a reason that says what was wrong (see :data:`CLOSE`).
"""

from __future__ import annotations

import json
import math
import typing as tp
from dataclasses import dataclass

import numpy as np

from ..bandwidth import check_bandwidth
from ..errors import OpenCodecError
from ..stream.format import DEFAULT_FRAMES_PER_PACKET

MODES = ("encode", "decode", "relay")

CLOSE = {
    "normal": 1000,        # the stream ended
    "invalid_data": 1007,  # malformed hello, PCM or packets
    "policy": 1008,        # idle too long, or too slow to read what the server sends
    "too_big": 1009,       # a message over the size limit (sent by the websockets library)
    "server_error": 1011,
    "full": 1013,          # maximum clients reached: try again later
}
"""WebSocket close codes the server uses."""

MAX_REASON = 120  # a close reason must fit in a 125-byte control frame


class ProtocolError(OpenCodecError):
    """A client broke the protocol; ``code`` is the WebSocket close code to send."""

    def __init__(self, message: str, code: int = CLOSE["invalid_data"]):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Hello:
    """What a client asked for: ``mode``, ``bandwidth`` (kbps; for ``decode`` the stream's
    own header decides), ``frames_per_packet`` of the packets it is sent or measured by."""

    mode: str
    bandwidth: float
    frames_per_packet: int = DEFAULT_FRAMES_PER_PACKET


def _json(text: str) -> tp.Any:
    """``json.loads(text)``; ``ValueError`` for malformed JSON, including JSON nested too deeply
    for Python's parser (its ``RecursionError``, e.g. 100000 opening brackets)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_hello(message: tp.Any, bandwidths: tp.Sequence[float], model_name: str) -> Hello:
    """The client's first message (JSON text) -> :class:`Hello`; ``ProtocolError`` naming the
    problem otherwise. A missing bandwidth is the highest in ``bandwidths``."""
    if not isinstance(message, str):
        raise ProtocolError("the first message must be JSON text such as "
                            '{"mode": "relay", "bandwidth": 6}, got binary data')
    try:
        data = _json(message)
    except ValueError:
        raise ProtocolError("the first message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("the first message must be a JSON object")
    unknown = set(data) - {"mode", "bandwidth", "frames_per_packet"}
    if unknown:
        raise ProtocolError(f"unknown hello field(s): {', '.join(sorted(unknown))}")
    mode = data.get("mode")
    if mode not in MODES:
        raise ProtocolError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        bandwidth = check_bandwidth(data.get("bandwidth", max(bandwidths)), bandwidths, model_name)
    except OpenCodecError as exc:
        raise ProtocolError(str(exc)) from None
    fpp = data.get("frames_per_packet", DEFAULT_FRAMES_PER_PACKET)
    if isinstance(fpp, bool) or not isinstance(fpp, int) or not 1 <= fpp <= 255:
        raise ProtocolError(f"frames_per_packet must be an integer in [1, 255], got {fpp!r}")
    return Hello(mode=mode, bandwidth=bandwidth, frames_per_packet=fpp)


def parse_control(message: str, bandwidths: tp.Sequence[float], model_name: str
                  ) -> tuple[str, float | None]:
    """A text message after the hello: ``{"type": "end"}`` -> ("end", None), or (relay mode)
    ``{"type": "bandwidth", "bandwidth": 3}`` -> ("bandwidth", 3.0); ``ProtocolError`` else."""
    try:
        data = _json(message)
    except ValueError:
        raise ProtocolError("a text message after the hello must be JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "end":
        return "end", None
    if kind == "bandwidth":
        try:
            return "bandwidth", check_bandwidth(data.get("bandwidth"), bandwidths, model_name)
        except OpenCodecError as exc:
            raise ProtocolError(str(exc)) from None
    raise ProtocolError('text messages after the hello are {"type": "end"} and (relay) '
                        '{"type": "bandwidth", "bandwidth": KBPS}')


def pcm_from_bytes(data: bytes, channels: int) -> np.ndarray:
    """Binary PCM (float32 LE, interleaved) -> [C, n] float32; ``ProtocolError`` when the
    length is not whole samples or a value is not finite."""
    width = 4 * channels
    if len(data) % width:
        raise ProtocolError(f"PCM messages hold whole samples of float32 x {channels} channel(s) "
                            f"({width} bytes); got {len(data)} bytes")
    pcm = np.frombuffer(data, dtype="<f4").reshape(-1, channels).T
    if not np.isfinite(pcm).all():
        raise ProtocolError("PCM holds NaN or infinite samples")
    return np.array(pcm, dtype=np.float32, order="C")  # a writable copy


def pcm_to_bytes(audio: np.ndarray) -> bytes:
    """[C, n] float -> binary PCM (float32 LE, interleaved)."""
    return np.ascontiguousarray(np.asarray(audio, dtype="<f4").T).tobytes()


def message(kind: str, **fields: tp.Any) -> str:
    """A server text message: ``{"type": kind, **fields}`` (non-finite floats as null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
    return json.dumps({"type": kind, **clean})


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry."""
    data = text.encode("utf-8")
    if len(data) <= MAX_REASON:
        return text
    return data[:MAX_REASON - 3].decode("utf-8", "ignore") + "..."
