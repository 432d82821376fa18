"""``opencodec stream-encode`` / ``stream-decode`` through real pipes (subprocesses), checked
against the file path ``opencodec compress in.wav out.wav`` with the same model and bandwidth.

The model is a small random-weight causal model saved with ``opencodec.save_model``, so each
process starts and runs in about a second; the audio is 1.5 s long.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import struct
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecModel, cli, save_model
from opencodec.pretrained import load_model
from opencodec.stream import CodeFrames, DataPacket, HeaderPacket, PacketParser, StreamReceiver
from stream_models import tiny_stream_model

RATE = 24_000
BANDWIDTH = "1.8"
LSB = 1 / 32768


def tiny_model(name: str, seed: int) -> EncodecModel:
    return tiny_stream_model(name, seed)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model files, a 1.5 s 16-bit WAV, and the file path's outputs (16-bit and float)."""
    folder = tmp_path_factory.mktemp("stream_cli")
    paths = {"model": save_model(tiny_model("tiny_stream", 0), folder / "tiny.safetensors"),
             "other": save_model(tiny_model("tiny_other", 1), folder / "other.safetensors"),
             "wav": folder / "in.wav", "ref16": folder / "ref16.wav", "ref32": folder / "ref32.wav"}
    gen = torch.Generator().manual_seed(0)
    n = int(1.5 * RATE) + 77
    x = (0.3 * torch.randn(n, generator=gen) + 0.3 * torch.sin(2 * torch.pi * 220 * torch.arange(n) / RATE))
    sf.write(str(paths["wav"]), x.clamp(-1, 1).numpy(), RATE, subtype="PCM_16")
    common = [str(paths["wav"]), "-m", str(paths["model"]), "-b", BANDWIDTH, "-q"]
    assert cli.main(["compress", *common[:1], str(paths["ref16"]), *common[1:]]) == 0
    assert cli.main(["compress", *common[:1], str(paths["ref32"]), *common[1:], "--float"]) == 0
    return paths


def opencodec(*args: str) -> list[str]:
    return [sys.executable, "-m", "opencodec.cli", *args]


def env(tmp: Path) -> dict[str, str]:
    """One thread, offline, an empty model cache."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENCODEC_OFFLINE": "1",
            "OPENCODEC_CACHE": str(tmp / "cache"), "TORCH_HOME": str(tmp / "torch")}


def run(args: list[str], tmp: Path, stdin: bytes | Path, stdout: Path | None = None
        ) -> subprocess.CompletedProcess:
    """Run ``opencodec args`` with ``stdin`` (bytes through a pipe, or a file); stdout is
    captured through a pipe, or goes to the file ``stdout``."""
    with open(stdin, "rb") if isinstance(stdin, Path) else contextlib.nullcontext() as fin, \
            open(stdout, "wb") if stdout is not None else contextlib.nullcontext() as fout:
        return subprocess.run(opencodec(*args), input=None if isinstance(stdin, Path) else stdin,
                              stdin=fin, stdout=fout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env(tmp), timeout=300,
                              check=False)


def read_wav(data: bytes) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert rate == RATE
    return audio


@pytest.mark.parametrize("float32", [False, True])
def test_pipe_equals_file_path(files: dict[str, Path], tmp_path: Path, float32: bool) -> None:
    model = str(files["model"])
    with open(files["wav"], "rb") as fin:
        enc = subprocess.Popen(opencodec("stream-encode", "-m", model, "-b", BANDWIDTH, "-q"),
                               stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env(tmp_path))
        extra = ["--float"] if float32 else []
        dec = subprocess.Popen(opencodec("stream-decode", "-m", model, "-q", *extra),
                               stdin=enc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env(tmp_path))
        assert enc.stdout is not None
        enc.stdout.close()  # only the decoder holds the pipe now
        out, dec_err = dec.communicate(timeout=300)
        enc_err = enc.stderr.read() if enc.stderr is not None else b""
        assert enc.wait(timeout=60) == 0, enc_err.decode()
        if enc.stderr is not None:
            enc.stderr.close()
    assert dec.returncode == 0, dec_err.decode()
    assert enc_err == b"" and dec_err == b""  # -q, and nothing to warn about
    assert struct.unpack_from("<I", out, 4)[0] == 0xFFFFFFFF  # a pipe: streaming WAV header
    got = read_wav(out)
    expected, _ = sf.read(str(files["ref32" if float32 else "ref16"]), dtype="float32", always_2d=True)
    assert got.shape == expected.shape == (sf.info(str(files["wav"])).frames, 1)
    assert np.abs(got - expected).max() <= (1e-5 if float32 else LSB)
    assert np.abs(expected).max() > 0.01  # not trivially silent


def test_output_flows_before_the_input_ends(files: dict[str, Path], tmp_path: Path) -> None:
    """A live source: with 0.5 s written and stdin still open, decoded audio already comes out
    at the end of ``stream-encode | stream-decode`` (nothing waits for the end of input)."""
    model = str(files["model"])
    enc = subprocess.Popen(opencodec("stream-encode", "-m", model, "-b", BANDWIDTH, "-q"),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env(tmp_path))
    dec = subprocess.Popen(opencodec("stream-decode", "-m", model, "-q"), stdin=enc.stdout,
                           stdout=subprocess.PIPE, env=env(tmp_path))
    assert enc.stdin is not None and enc.stdout is not None and dec.stdout is not None
    enc.stdout.close()
    try:
        samples, _ = sf.read(str(files["wav"]), dtype="int16")
        header = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt "
                  + struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16)
                  + b"data" + struct.pack("<I", 0xFFFFFFFF))  # a live WAV: length unknown
        enc.stdin.write(header + samples[:RATE // 2].astype("<i2").tobytes())
        enc.stdin.flush()
        got, deadline = b"", time.monotonic() + 120
        while len(got) < 44 + 2 * RATE // 5 and time.monotonic() < deadline:  # 0.2 s of audio
            if select.select([dec.stdout], [], [], 1.0)[0]:
                chunk = os.read(dec.stdout.fileno(), 1 << 16)
                assert chunk, "stream-decode ended early"
                got += chunk
        assert len(got) >= 44 + 2 * RATE // 5, f"only {len(got)} bytes before the input ended"
        assert enc.poll() is None and dec.poll() is None  # both still running
        enc.stdin.write(samples[RATE // 2:].astype("<i2").tobytes())
        enc.stdin.close()
        got += dec.stdout.read()
        assert enc.wait(timeout=120) == 0 and dec.wait(timeout=120) == 0
    finally:
        for proc in (enc, dec):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        dec.stdout.close()
    expected, _ = sf.read(str(files["ref16"]), dtype="float32", always_2d=True)
    assert np.abs(read_wav(got) - expected).max() <= LSB


def test_raw_input_and_file_output(files: dict[str, Path], tmp_path: Path) -> None:
    pcm = tmp_path / "in.raw"
    samples, _ = sf.read(str(files["wav"]), dtype="int16")
    pcm.write_bytes(samples.astype("<i2").tobytes())
    stream, out = tmp_path / "s.ocs", tmp_path / "out.wav"
    model = str(files["model"])
    res = run(["stream-encode", "-m", model, "-b", BANDWIDTH, "--raw", "--rate", str(RATE),
               "--channels", "1", "--format", "s16le", "--frames-per-packet", "2"], tmp_path, pcm, stream)
    assert res.returncode == 0, res.stderr.decode()
    assert b"stream-encode: 1.50 s at 1.8 kbps (tiny_stream, 4 codebooks)" in res.stderr
    res = run(["stream-decode", "-m", model], tmp_path, stream, out)
    assert res.returncode == 0, res.stderr.decode()
    assert b"0 lost" in res.stderr
    data = out.read_bytes()
    assert struct.unpack_from("<I", data, 40)[0] == len(samples) * 2  # sizes written back
    expected, _ = sf.read(str(files["ref16"]), dtype="float32", always_2d=True)
    assert np.abs(read_wav(data) - expected).max() <= LSB


def test_damaged_stream_keeps_its_length(files: dict[str, Path], stream: bytes,
                                         tmp_path: Path) -> None:
    data = stream
    parser = PacketParser()
    data_packets = [p for p in parser.feed(data) + parser.finish() if isinstance(p, DataPacket)]
    lost, hit = data_packets[5], data_packets[12]
    damaged = bytearray(data)
    damaged[hit.offset + 14] ^= 0xFF
    end = data_packets[6].offset
    damaged = damaged[:lost.offset] + damaged[end:]  # data packet 5 is lost
    res = run(["stream-decode", "-m", str(files["model"]), "--raw"], tmp_path, bytes(damaged))
    assert res.returncode == 0, res.stderr.decode()
    err = res.stderr.decode()
    assert "warning: data packet(s) 5-5 lost: 4 frame(s) (0.053 s) missing, replaced by silence" in err
    assert "warning: corrupt data at bytes" in err and "data packet(s) 12-12 lost" in err
    audio = np.frombuffer(res.stdout, "<i2")
    assert audio.shape == (sf.info(str(files["wav"])).frames,)  # raw s16le, same length
    assert not audio[5 * 4 * 320:6 * 4 * 320].any()


@pytest.fixture(scope="module")
def stream(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The packet stream of the test WAV (stream-encode with stdout to a file)."""
    tmp = tmp_path_factory.mktemp("stream")
    res = run(["stream-encode", "-m", str(files["model"]), "-b", BANDWIDTH, "-q"], tmp,
              files["wav"], tmp / "s.ocs")
    assert res.returncode == 0, res.stderr.decode()
    return (tmp / "s.ocs").read_bytes()


@pytest.mark.parametrize("args,stdin,code,message", [
    (["stream-encode", "-m", "encodec_48khz"], "wav", 1,
     "model 'encodec_48khz' cannot be streamed: it is not causal"),
    (["stream-encode", "--raw", "--rate", "24000"], "wav", 2, "--raw needs --rate and --channels"),
    (["stream-encode", "-m", "MODEL", "--rate", "24000"], "wav", 2, "describe raw input: add --raw"),
    (["stream-encode", "-m", "MODEL", "-b", "6"], "wav", 2,
     "model tiny_stream does not support 6 kbps; choose one of: 0.9, 1.8 kbps"),
    (["stream-encode", "-m", "MODEL", "-b", BANDWIDTH], b"RIFX" + bytes(40), 1,
     "stdin: not a WAV stream (big-endian RIFX is not supported)"),
    (["stream-decode", "-m", "MODEL"], b"\x00" * 500, 1, "no stream header found in 500 bytes"),
    (["stream-decode", "-m", "OTHER"], "stream", 1,
     "the stream was written by model 'tiny_stream' with weights hash "),
    (["stream-decode"], "stream", 1, "written by model 'tiny_stream' with weights hash "),
])
def test_errors(files: dict[str, Path], stream: bytes, offline: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str], args: list[str], stdin: tp.Any, code: int,
                message: str) -> None:
    """In-process (no pipes needed): the exit status, a one-line message, nothing on stdout."""
    args = [str(files["model"]) if a == "MODEL" else str(files["other"]) if a == "OTHER" else a
            for a in args]
    data = {"wav": files["wav"].read_bytes() if stdin == "wav" else b"", "stream": stream}.get(stdin, stdin)
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    assert cli.main(args) == code
    err = capsys.readouterr().err
    assert message in err
    if code == 1:
        assert err.count("\n") == 1 and err.startswith("opencodec: error: ")
    assert out.getvalue() == b""  # nothing written on failure


def test_header_every_sets_the_join_points(files: dict[str, Path], stream: bytes, tmp_path: Path) -> None:
    """``--header-every 3``: a header before data packets 0, 3, 6, ...; a receiver that joins
    inside data packet 4 starts at packet 6 (frame 24), and its audio is the offline decoding
    of the frames from there on (a fresh decoder, as the receiver documents)."""
    res = run(["stream-encode", "-m", str(files["model"]), "-b", BANDWIDTH, "--header-every", "3"],
              tmp_path, files["wav"])
    assert res.returncode == 0, res.stderr.decode()
    data = res.stdout
    parser = PacketParser()
    packets = parser.feed(data) + parser.finish()
    headers = [p.seq for p in packets if isinstance(p, HeaderPacket)]
    data_packets = [p for p in packets if isinstance(p, DataPacket)]
    assert headers == list(range(0, len(data_packets), 3))
    default = PacketParser()
    assert [p.seq for p in default.feed(stream) + default.finish()
            if isinstance(p, HeaderPacket)] == list(range(0, len(data_packets), 16))
    # the same codes either way: only the headers differ
    assert [p.payload for p in data_packets] == [
        p.payload for p in PacketParser().feed(stream) if isinstance(p, DataPacket)]

    res = run(["stream-decode", "-m", str(files["model"]), "--raw", "--float"], tmp_path,
              data[data_packets[4].offset + 5:])
    assert res.returncode == 0, res.stderr.decode()
    err = res.stderr.decode()
    assert "warning: joined mid-stream" in err and err.count("warning:") == 1
    got = np.frombuffer(res.stdout, "<f4")
    total = sf.info(str(files["wav"])).frames
    start = 6 * 4 * 320  # data packet 6 = frame 24
    assert got.shape == (total - start,)
    model = load_model(str(files["model"]))
    joined = _offline_decode_from(model, stream, 24)[:total - start]
    np.testing.assert_allclose(got, joined, atol=1e-5, rtol=0)
    assert np.abs(got).max() > 0.01


def _offline_decode_from(model: EncodecModel, stream: bytes, frame: int) -> np.ndarray:
    """Offline ``model.decode`` of the stream's code frames from ``frame`` on, channel 0."""
    parser, receiver = PacketParser(), StreamReceiver()
    frames = []
    for packet in parser.feed(stream) + parser.finish():
        frames += [e.codes for e in receiver.handle(packet) if isinstance(e, CodeFrames)]
    codes = torch.cat(frames, dim=1)[None, :, frame:]
    with torch.inference_mode():
        return model.decode([(codes, None)])[0, 0].numpy()


def test_raw_float_input_gives_the_same_stream(files: dict[str, Path], stream: bytes,
                                               tmp_path: Path) -> None:
    """``--raw --format f32le``: the WAV's samples as headerless float32 give the same packet
    stream byte for byte (16-bit samples are exact in float32); any other value gives other codes."""
    samples, _ = sf.read(str(files["wav"]), dtype="float32")
    args = ["stream-encode", "-m", str(files["model"]), "-b", BANDWIDTH, "--raw", "--rate",
            str(RATE), "--channels", "1", "--format", "f32le"]
    res = run(args, tmp_path, samples.astype("<f4").tobytes())
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == stream
    res = run(args, tmp_path, (samples * 0.5).astype("<f4").tobytes())
    assert res.returncode == 0 and res.stdout != stream  # the samples are read, not ignored
    assert len(res.stdout) == len(stream)


def test_raw_float_output(files: dict[str, Path], stream: bytes, tmp_path: Path) -> None:
    """``stream-decode --raw --float``: headerless little-endian float32, the values of the
    file path's ``--float`` output (within 1e-5), not clipped; ``--raw`` alone is s16le."""
    res = run(["stream-decode", "-m", str(files["model"]), "--raw", "--float"], tmp_path, stream)
    assert res.returncode == 0, res.stderr.decode()
    got = np.frombuffer(res.stdout, "<f4")
    expected, _ = sf.read(str(files["ref32"]), dtype="float32")
    assert got.shape == expected.shape == (sf.info(str(files["wav"])).frames,)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    res16 = run(["stream-decode", "-m", str(files["model"]), "--raw"], tmp_path, stream)
    assert res16.returncode == 0, res16.stderr.decode()
    got16 = np.frombuffer(res16.stdout, "<i2")
    np.testing.assert_array_equal(got16, np.clip(np.rint(got.astype(np.float64) * 32768), -32768, 32767))


def test_first_data_packet_lost(files: dict[str, Path], stream: bytes, tmp_path: Path) -> None:
    """The loss that used to crash ``stream-decode`` (IndexError): the first data packet
    after the header. Its 4 frames are silence, the rest is a fresh decoding of the frames
    that follow, and the length is kept."""
    parser = PacketParser()
    first = [p for p in parser.feed(stream) + parser.finish() if isinstance(p, DataPacket)][:2]
    damaged = stream[:first[0].offset] + stream[first[1].offset:]
    res = run(["stream-decode", "-m", str(files["model"]), "--raw", "--float"], tmp_path, damaged)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr.decode().splitlines()[0] == (
        "opencodec: warning: data packet(s) 0-0 lost: 4 frame(s) (0.053 s) missing, replaced by silence")
    got = np.frombuffer(res.stdout, "<f4")
    total = sf.info(str(files["wav"])).frames
    assert got.shape == (total,) and not got[:4 * 320].any()
    model = load_model(str(files["model"]))
    np.testing.assert_allclose(got[4 * 320:], _offline_decode_from(model, stream, 4)[:total - 4 * 320],
                               atol=1e-5, rtol=0)
