"""Robustness of the packet stream reader (``decode_stream``, what ``stream-decode`` runs):
real packet streams of a tiny causal model, each damaged once by a seeded random change,
insertion, deletion or truncation. Every damaged stream must decode to audio with at least
one warning, or fail with a clean ``BitstreamError`` (no stream header left); never another
exception, never a hang (``pytest-timeout``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecModel
from opencodec.errors import BitstreamError
from opencodec.stream import decode_stream, encode_stream, model_label
from stream_models import tiny_stream_model

RATE = 24000
HOP = 320
STREAMS_PER_LAYOUT = 110
LAYOUTS = [  # (frames per packet, header every, seconds): 4 x 110 = 440 damaged streams
    (1, 2, 0.1), (2, 3, 0.2), (4, 16, 0.3), (5, 1, 0.25)]


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    return tiny_stream_model("tiny_fuzz", 0, n_filters=4, dimension=8, n_q=3, bins=16, lstm=0,
                             target_bandwidths=[0.6, 0.9])


def packet_stream(model: EncodecModel, fpp: int, header_every: int, seconds: float) -> bytes:
    """The packet stream of a noisy tone of ``seconds`` s, as ``stream-encode`` writes it."""
    gen = torch.Generator().manual_seed(fpp)
    n = int(seconds * RATE) + 17
    x = 0.3 * torch.randn(n, generator=gen) + 0.2 * torch.sin(torch.arange(n) * 0.07)
    wav = io.BytesIO()
    sf.write(wav, x.clamp(-1, 1).numpy(), RATE, format="WAV", subtype="FLOAT")
    out = io.BytesIO()
    encode_stream(model, io.BytesIO(wav.getvalue()), out, bandwidth=0.9, frames_per_packet=fpp,
                  header_every=header_every)
    return out.getvalue()


def damage(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random change of ``data``: a byte changed, bytes inserted or deleted, or a cut."""
    kind = str(rng.choice(["change", "change", "insert", "delete", "truncate"]))
    i = int(rng.integers(0, len(data)))
    if kind == "change":
        return kind, data[:i] + bytes([data[i] ^ int(rng.integers(1, 256))]) + data[i + 1:]
    if kind == "insert":
        extra = rng.integers(0, 256, int(rng.integers(1, 24)), dtype=np.uint8).tobytes()
        return kind, data[:i] + extra + data[i:]
    if kind == "delete":
        return kind, data[:i] + data[i + int(rng.integers(1, 24)):]
    return kind, data[:i]


def decode(model: EncodecModel, data: bytes) -> tuple[np.ndarray, list[str]]:
    out, warnings = io.BytesIO(), []
    report = decode_stream(io.BytesIO(data), out, lambda info: model, float32=True,
                           warn=warnings.append, read_bytes=97)
    audio, rate = sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)
    assert rate == RATE and audio.shape == (report.samples, 1)
    return audio, warnings


def test_undamaged_streams_decode_without_warnings(tiny: EncodecModel) -> None:
    for fpp, every, seconds in LAYOUTS:
        audio, warnings = decode(tiny, packet_stream(tiny, fpp, every, seconds))
        assert warnings == []
        assert audio.shape[0] == int(seconds * RATE) + 17 and np.abs(audio).max() > 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"fpp{v[0]}-every{v[1]}")
def test_damaged_streams_warn_or_fail_cleanly(tiny: EncodecModel, layout: tuple[int, int, float]) -> None:
    fpp, every, seconds = layout
    data = packet_stream(tiny, fpp, every, seconds)
    full = int(seconds * RATE) + 17
    rng = np.random.default_rng(fpp)
    outcomes: dict[str, int] = {}
    for trial in range(STREAMS_PER_LAYOUT):
        kind, bad = damage(data, rng)
        try:
            audio, warnings = decode(tiny, bad)
        except BitstreamError as error:
            assert "no stream header found" in str(error), (trial, kind, error)
            outcomes["error"] = outcomes.get("error", 0) + 1
            continue
        assert warnings, (trial, kind)  # damage is always reported
        assert np.isfinite(audio).all()
        # never longer than the stream plus one frame of untrimmed tail
        assert audio.shape[0] <= full + HOP, (trial, kind, audio.shape)
        outcomes["audio"] = outcomes.get("audio", 0) + 1
    assert outcomes.get("audio", 0) > STREAMS_PER_LAYOUT // 2  # most damage leaves audio to decode


def test_first_data_packet_lost_is_among_the_damage(tiny: EncodecModel) -> None:
    """The case that crashed before: the bytes of the first data packet deleted."""
    data = packet_stream(tiny, 4, 16, 0.3)
    header_size = 11 + 12 + len(model_label(tiny)) + 4  # the name field carries "#" + weights hash
    data_size = 16 + (3 * 4 * 4 + 7) // 8  # 3 codebooks x 4 frames x 4 bits
    audio, warnings = decode(tiny, data[:header_size] + data[header_size + data_size:])
    assert audio.shape[0] == int(0.3 * RATE) + 17
    assert not audio[:4 * HOP].any() and np.abs(audio[4 * HOP:]).max() > 0
    assert warnings == ["data packet(s) 0-0 lost: 4 frame(s) (0.053 s) missing, replaced by silence"]
