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

import contextlib
import json
import math
import typing as tp
from dataclasses import dataclass

import numpy as np

from ..bandwidth import check_bandwidth, format_kbps
from ..errors import OpenCodecError
from ..stream.defaults import DEFAULT_FRAMES_PER_PACKET
from ..stream.receiver import Event, MissingFrames, Notice

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


def _bandwidth(value: tp.Any, bandwidths: tp.Sequence[float], model_name: str,
               model_bandwidths: tp.Sequence[float] | None) -> float:
    """``value`` as one of the server's ``bandwidths``; ``ProtocolError`` naming the choices,
    and the server's cap (not the model) when the model has ``value`` but the server offers
    less (``model_bandwidths``: all of the model's)."""
    try:
        return check_bandwidth(value, bandwidths, model_name)
    except OpenCodecError as exc:
        asked = None
        if model_bandwidths is not None:
            with contextlib.suppress(OpenCodecError):
                asked = check_bandwidth(value, model_bandwidths, model_name)
        if asked is not None:
            choices = ", ".join(format_kbps(float(b)) for b in bandwidths)
            raise ProtocolError(f"{format_kbps(asked)} kbps is more than this server offers (at most "
                                f"{format_kbps(max(bandwidths))} kbps, its -b/--max-bandwidth); "
                                f"choose one of: {choices} kbps") from None
        raise ProtocolError(str(exc)) from None


def parse_hello(message: tp.Any, bandwidths: tp.Sequence[float], model_name: str,
                model_bandwidths: tp.Sequence[float] | None = None) -> Hello:
    """The client's first message (JSON text) -> :class:`Hello`; ``ProtocolError`` naming the
    problem otherwise. A missing bandwidth is the highest in ``bandwidths`` (the server's;
    ``model_bandwidths``: the model's, to say when the server's cap refuses one)."""
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
    bandwidth = _bandwidth(data.get("bandwidth", max(bandwidths)), bandwidths, model_name, model_bandwidths)
    fpp = data.get("frames_per_packet", DEFAULT_FRAMES_PER_PACKET)
    if isinstance(fpp, bool) or not isinstance(fpp, int) or not 1 <= fpp <= 255:
        raise ProtocolError(f"frames_per_packet must be an integer in [1, 255], got {fpp!r}")
    return Hello(mode=mode, bandwidth=bandwidth, frames_per_packet=fpp)


def parse_control(message: str, bandwidths: tp.Sequence[float], model_name: str,
                  model_bandwidths: tp.Sequence[float] | None = None) -> tuple[str, float | None]:
    """A text message after the hello: ``{"type": "end"}`` -> ("end", None), or (relay mode)
    ``{"type": "bandwidth", "bandwidth": 3}`` -> ("bandwidth", 3.0); ``ProtocolError`` else
    (``model_bandwidths`` as for :func:`parse_hello`)."""
    try:
        data = _json(message)
    except ValueError:
        raise ProtocolError("a text message after the hello must be JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "end":
        return "end", None
    if kind == "bandwidth":
        return "bandwidth", _bandwidth(data.get("bandwidth"), bandwidths, model_name, model_bandwidths)
    raise ProtocolError('text messages after the hello are {"type": "end"} and (relay) '
                        '{"type": "bandwidth", "bandwidth": KBPS}')


def check_after_end(message: str | bytes) -> None:
    """A message after the end of the input (the client's ``{"type": "end"}``, or decode
    mode's end packet) while the server sends the rest: another ``{"type": "end"}`` is taken
    (it changes nothing); anything else is ``ProtocolError`` (1007), not dropped unseen."""
    if isinstance(message, bytes):
        raise ProtocolError("data after the end of the stream (in a later message)")
    with contextlib.suppress(ValueError):
        data = _json(message)
        if isinstance(data, dict) and data.get("type") == "end":
            return
    raise ProtocolError('a text message after the end of the stream: only {"type": "end"} may follow it')


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
    """``text`` cut to what a close frame can carry, at a space when there is one (no word
    cut in half), with "..." for what is left out."""
    data = text.encode("utf-8")
    if len(data) <= MAX_REASON:
        return text
    cut = data[:MAX_REASON - 3].decode("utf-8", "ignore")
    head, space, _ = cut.rpartition(" ")
    return (head.rstrip(" ,;:") if space and head else cut) + "..."


def loss_reason(event: Notice | MissingFrames, following: tp.Sequence[Event] = ()) -> str:
    """The close reason when a decode-mode stream is not loss-free: ``event`` is the
    receiver's ``Notice`` (or ``MissingFrames``), ``following`` the events after it. Short
    (a close reason holds at most 123 bytes), and without the receiver's remedy ("replaced
    by silence", "dropped"): the server conceals nothing, it closes."""
    if isinstance(event, MissingFrames):
        what, missing = "frames lost", event
    else:
        what, missing = event.message.split(": ", 1)[0], next(iter(following), None)
    if isinstance(missing, MissingFrames):
        what += f" ({missing.count} frame(s) missing)"
    return f"decode mode takes one loss-free stream: {what}"
