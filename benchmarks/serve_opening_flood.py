"""What a flood of connections that never finish their handshake costs ``opencodec serve``.

Starts ``opencodec serve --port 0`` (the bundled model; from ``--src`` when given, e.g. a
worktree of an older commit), opens N raw TCP connections that send nothing (every 4th sends
half a WebSocket request, a slowloris), holds them, and reads the server's open file descriptors
and resident memory from ``/proc`` (Linux): idle, while held (after 1.5 s), the peak, and after
the library's 10 s open timeout. Then tries two real clients while the flood is held: one from
the flood's address (127.0.0.1) and one from ``--client-address`` (default 127.0.0.2: Linux
answers on all of 127.0.0.0/8), which the server's per-address bound
(``--max-opening-per-address``, default half of ``--max-opening``) leaves room for. Prints the
provenance line and one table row per run.

    python benchmarks/serve_opening_flood.py --connections 2000 -- --max-clients 4
    python benchmarks/serve_opening_flood.py --src /tmp/old/src --connections 2000 -- --max-clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

from provenance import provenance_line


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _connect_all(port: int, n: int) -> list[socket.socket]:
    """N non-blocking connects (a full accept queue does not hold this up); every 4th sends
    half a request once connected."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    pending, start = set(range(n)), time.monotonic()
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    while pending and time.monotonic() - start < 30:
        poller = select.poll()
        for i in pending:
            poller.register(socks[i], select.POLLOUT)
        for fd, _ in poller.poll(200):
            i = by_fd[fd]
            pending.discard(i)
            if i % 4 == 3:
                try:
                    socks[i].send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
                except OSError:
                    pass
    return socks


def _answered_busy(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server already answered with an HTTP 503."""
    busy = 0
    for s in socks:
        try:
            if s.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 503"):
                busy += 1
        except (BlockingIOError, ConnectionResetError):
            pass
    return busy


def _real_client(port: int, source: str) -> str:
    """What a relay client connecting from address ``source`` gets: "ready", "503 (...)" with
    the end of the server's reason, or its error. A refused connection is answered at once,
    before the client's request, and closed: its answer is read before anything is sent (once
    the client sent its request, the close could reset the connection before the answer is read)."""
    from websockets.sync.client import connect
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        poller = select.poll()  # not select(): the flood's sockets take the fds below 1024 and more
        poller.register(sock, select.POLLIN)
        if poller.poll(1000):
            answer = sock.recv(4096)
            sock.close()
            if answer.startswith(b"HTTP/1.1 503"):
                reason = answer.split(b"\r\n\r\n", 1)[-1].decode().strip()
                return "503 (" + reason.split(";")[0].removeprefix("server busy: ") + ")"
            return f"closed: {answer[:40]!r}"
        with connect(f"ws://127.0.0.1:{port}/ws", sock=sock, open_timeout=5) as ws:
            ws.send(json.dumps({"mode": "relay"}))
            return str(json.loads(ws.recv(timeout=10))["type"])
    except Exception as exc:  # noqa: BLE001 (what the client saw is the result)
        return type(exc).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--src", default=None, help="the opencodec source folder the server runs from")
    parser.add_argument("--client-address", default="127.0.0.2",
                        help="the address the second real client connects from (default 127.0.0.2)")
    parser.add_argument("serve_args", nargs="*", help="after --: opencodec serve's own options")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if args.src:
        env["PYTHONPATH"] = args.src
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", *args.serve_args],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stderr.readline()).group(1))
        time.sleep(0.5)
        idle = (_fds(proc.pid), _rss_mb(proc.pid))
        peak, stop = [0, 0.0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0], peak[1] = max(peak[0], _fds(proc.pid)), max(peak[1], _rss_mb(proc.pid))
                except OSError:
                    pass
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        start = time.monotonic()
        socks = _connect_all(port, args.connections)
        time.sleep(1.5)
        held, busy = (_fds(proc.pid), _rss_mb(proc.pid)), _answered_busy(socks)
        same, other = _real_client(port, "127.0.0.1"), _real_client(port, args.client_address)
        time.sleep(max(0.0, 11.5 - (time.monotonic() - start)))
        later = _fds(proc.pid)
        stop.set()
        for s in socks:
            s.close()
        source = args.src or "this tree"
        print(provenance_line())
        print("| server source | serve options | connections | fds idle / held / peak / after 11.5 s "
              "| RSS MB idle / held / peak | answered 503 | a real client while held: from 127.0.0.1 "
              f"/ from {args.client_address} |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {source} | {' '.join(args.serve_args) or '(defaults)'} | {args.connections} "
              f"| {idle[0]} / {held[0]} / {peak[0]} / {later} | {idle[1]:.1f} / {held[1]:.1f} / {peak[1]:.1f} "
              f"| {busy} | {same} / {other} |")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
