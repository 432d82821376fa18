"""``opencodec mushra``: the rating server's read timeout, connection cap and request
checks; ``mushra build``'s refusals (bitrates, NaN items, sets, manifests, sample rates,
missing files)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.eval.mushra import build as B
from opencodec.eval.mushra.cli import main as mushra_main
from opencodec.eval.mushra.server import make_server, serve_in_thread
from opencodec.eval.mushra.spec import MushraError


SR = 24000


def _set(folder: Path, waves: dict[str, np.ndarray], subtype: str = "PCM_16") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, wav in waves.items():
        sf.write(folder / f"{name}.wav", wav, SR, subtype=subtype)
    (folder / "eval_music.jsonl").write_text("".join(json.dumps({"path": f"{n}.wav"}) + "\n"
                                                     for n in waves))
    return folder


def _noise(seed: int = 0, seconds: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


@pytest.fixture()
def test_dir(tmp_path):
    out = tmp_path / "test"
    B.build_test(_set(tmp_path / "set", {"a": _noise()}), out, items_per_category=1, quiet=True)
    return out


def _held(server, n: int) -> list[socket.socket]:
    """``n`` connections that send half a request and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(server.server_address[:2], timeout=5)
        s.sendall(b"POST /api/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n12345")
        socks.append(s)
    return socks


def _get_when_free(url: str, deadline_s: float = 20.0) -> int:
    """GET ``url`` until a connection slot is free (a slot is released by the handler thread
    after it closes its socket, so the first try may still meet 503 on a busy machine)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            if err.code != 503 or time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_server_read_timeout_and_connection_cap(test_dir):
    # a read timeout long enough that the held clients are still held when the extra one
    # arrives, even on a busy machine; the test waits for events, never for a fixed time
    server = make_server(test_dir, port=0, read_timeout=3.0, max_connections=2)
    serve_in_thread(server)
    try:
        held = _held(server, 2)
        extra = socket.create_connection(server.server_address[:2], timeout=10)
        extra.sendall(b"GET /api/test HTTP/1.0\r\n\r\n")
        reply = extra.recv(4096)
        assert reply.startswith(b"HTTP/1.0 503") and b"too many connections" in reply
        extra.close()
        t0 = time.monotonic()
        for s in held:  # the server gives up on the silent clients and closes them
            s.settimeout(30)
            assert s.recv(4096) == b""
            s.close()
        assert time.monotonic() - t0 < 25
        assert _get_when_free(server.url + "api/test") == 200  # the slots are free again
    finally:
        server.shutdown()
        server.server_close()


def test_server_defaults_are_bounded(test_dir):
    server = make_server(test_dir, port=0)
    try:
        assert server.read_timeout == 10.0 and server.max_connections == 32
    finally:
        server.server_close()
    with pytest.raises(MushraError):
        make_server(test_dir, port=0, read_timeout=0)


def test_negative_content_length_is_400(test_dir):
    server = make_server(test_dir, port=0)
    serve_in_thread(server)
    try:
        s = socket.create_connection(server.server_address[:2], timeout=5)
        s.sendall(b"POST /api/submit HTTP/1.0\r\nContent-Length: -5\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        s.close()
        assert reply.startswith(b"HTTP/1.0 400") and b"invalid Content-Length -5" in reply
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("spec, allowed", [("mp3_320", "144, 160"), ("opus300", "6..256")])
def test_build_refuses_bitrate_the_encoder_would_not_code(tmp_path, spec, allowed):
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    with pytest.raises(MushraError, match=allowed):
        B.build_test(eval_set, tmp_path / "out", baselines=[spec], items_per_category=1, quiet=True)
    assert not (tmp_path / "out").exists()


def test_build_names_a_nan_item(tmp_path):
    bad = _noise()
    bad[10] = np.nan
    eval_set = _set(tmp_path / "set", {"bad": bad}, subtype="FLOAT")
    with pytest.raises(MushraError, match=r"cannot read item 'bad' of music: .*bad\.wav: the audio "
                                          r"holds 1 non-finite sample"):
        B.build_test(eval_set, tmp_path / "out", items_per_category=1, quiet=True)


def test_build_set_and_manifest_errors(tmp_path):
    with pytest.raises(MushraError, match="does not exist"):
        B.build_test(tmp_path / "nosuch", tmp_path / "out", quiet=True)
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    with pytest.raises(MushraError, match="is a file; pass the folder"):
        B.build_test(eval_set / "eval_music.jsonl", tmp_path / "out", quiet=True)
    (eval_set / "eval_general.jsonl").write_bytes(b"\xff\xfe garbage\n")
    with pytest.raises(MushraError, match="is not UTF-8 text"):
        B.build_test(eval_set, tmp_path / "out", quiet=True)
    with pytest.raises(MushraError, match="is not UTF-8 text"):
        B.build_test(eval_set, tmp_path / "out", categories=["general"], quiet=True)


def test_build_sample_rate_options(tmp_path, capsys):
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    base = ["build", "--set", str(eval_set), "--out", str(tmp_path / "out"), "-n", "1", "-q"]
    assert mushra_main(base + ["--sample-rate", "1"]) == 2
    assert "must be between 8000 and 192000" in capsys.readouterr().err
    assert mushra_main(base + ["--models", "m", "--channels", "2"]) == 2
    assert "--channels applies only without --models" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_build_names_the_os_reason_for_a_missing_item(tmp_path):
    eval_set = _set(tmp_path / "set", {"a": _noise()})
    (eval_set / "a.wav").unlink()
    with pytest.raises(MushraError, match=r"cannot read item 'a' of music: .*a\.wav: No such file "
                                          r"or directory$"):
        B.build_test(eval_set, tmp_path / "out", items_per_category=1, quiet=True)
