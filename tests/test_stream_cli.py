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

import official_ref
from opencodec import EncodecConfig, EncodecModel, cli, save_model
from opencodec.packets import DataPacket, PacketParser

RATE = 24_000
BANDWIDTH = "1.8"
LSB = 1 / 32768


def tiny_model(name: str, seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    cfg = EncodecConfig(name=name, n_filters=8, dimension=32, n_q=4, bins=64, lstm=1,
                        target_bandwidths=[0.9, 1.8])
    return official_ref.random_codebooks(EncodecModel(cfg), seed)


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
    (["stream-encode", "-m", "MODEL", "-b", "6"], "wav", 2, "bandwidth 6 kbps is not supported"),
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
