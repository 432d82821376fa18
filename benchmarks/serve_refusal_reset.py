"""Does a client refused at ``opencodec serve``'s opening gate read the whole HTTP 503 and a clean
end of stream, or does its connection end in a TCP reset?

Starts ``opencodec serve --port 0 --max-clients 1 --max-opening 1`` (the bundled model; from
``--src`` when given, e.g. a copy of an older tree), fills the gate with one connection that
sends nothing, then makes ``--attempts`` connections one after another for each kind of client:
raw sockets that send a whole WebSocket handshake request at once (as every client does) or
``--late-ms`` after connecting (the request reaches the server after it closed the connection),
and read until the end of the stream; and the ``websockets`` library's asyncio client (it
reads the 503 as ``InvalidStatus``: "503 + clean EOF" in the table). Counts what each
saw, and how many TCP resets the kernel sent meanwhile (``OutRsts`` in /proc/net/snmp, Linux:
for the whole network namespace, so run it where nothing else uses the network, e.g.
``unshare -n`` as root with ``ip link set lo up``, or read it as an upper bound). Prints the
provenance line, the CPU load and one table row per kind of client.

    python benchmarks/serve_refusal_reset.py --attempts 200
    python benchmarks/serve_refusal_reset.py --src /tmp/old/src --attempts 200
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import socket
import subprocess
import sys
import time
import typing as tp

from provenance import provenance_line

REQUEST = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"User-Agent: serve_refusal_reset\r\n\r\n")
OUTCOMES = ("503 + clean EOF", "503 then reset", "reset before the whole 503", "other")


def _whole_503(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"Content-Length: (\d+)", head)
    return (head.startswith(b"HTTP/1.1 503 ") and bool(sep) and length is not None
            and len(body) == int(length.group(1)))


def raw_attempt(port: int, late_s: float) -> str:
    """One raw connection: its request ``late_s`` after connecting, then read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if late_s:
            time.sleep(late_s)
        data = b""
        try:
            sock.sendall(REQUEST)
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            return "503 then reset" if _whole_503(data) else "reset before the whole 503"
        except OSError as exc:
            return f"other ({type(exc).__name__})"
        return "503 + clean EOF" if _whole_503(data) else f"other (EOF after {len(data)} B)"


def library_attempt(port: int) -> str:
    """One client of the ``websockets`` library (its asyncio client, as ``opencodec``'s own
    client): the 503 as ``InvalidStatus``, or the error it got instead."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def attempt() -> str:
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
                return "other (admitted)"
        except InvalidStatus as exc:
            return "503 + clean EOF" if exc.response.status_code == 503 else f"other ({exc})"
        except ConnectionResetError:
            return "reset before the whole 503"
        except Exception as exc:  # noqa: BLE001 - what the client saw is the result
            if isinstance(exc.__cause__ or exc.__context__, ConnectionResetError):
                return "reset before the whole 503"
            return f"other ({type(exc).__name__}: {exc})"

    return asyncio.run(attempt())


def out_resets() -> int:
    """TCP resets this network namespace has sent (Linux), -1 where unknown."""
    try:
        with open("/proc/net/snmp") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("OutRsts")])
    except (OSError, ValueError, IndexError):
        return -1


def run(port: int, attempts: int, kind: str, attempt: tp.Callable[[], str]) -> str:
    before = out_resets()
    seen = collections.Counter(attempt() for _ in range(attempts))
    time.sleep(0.2)  # the last resets
    resets = out_resets() - before if before >= 0 else "?"
    other = sum(n for outcome, n in seen.items() if outcome not in OUTCOMES[:3])
    kinds = ", ".join(sorted(o for o in seen if o not in OUTCOMES[:3]))
    cells = [str(seen[o]) for o in OUTCOMES[:3]] + [f"{other}{f' ({kinds})' if other else ''}"]
    return f"| {kind} | {attempts} | {' | '.join(cells)} | {resets} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=200, help="connections per kind of client")
    parser.add_argument("--late-ms", type=float, default=2.0,
                        help="the late client's wait between connecting and sending its request")
    parser.add_argument("--src", default=None, help="the opencodec source folder the server runs from")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if args.src:
        env["PYTHONPATH"] = args.src
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "serve", "--port", "0", "--max-clients", "1",
                             "--max-opening", "1"], stderr=subprocess.PIPE, text=True, env=env)
    held = None
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            raise SystemExit(f"the server did not start: {line.strip()!r}")
        port = int(found.group(1))
        held = socket.create_connection(("127.0.0.1", port))  # takes the gate's one place
        time.sleep(0.5)
        rows = [run(port, args.attempts, "raw, request at once", lambda: raw_attempt(port, 0.0)),
                run(port, args.attempts, f"raw, request {args.late_ms:g} ms after connecting",
                    lambda: raw_attempt(port, args.late_ms / 1000)),
                run(port, args.attempts, "websockets asyncio client (InvalidStatus 503 counted as clean)",
                    lambda: library_attempt(port))]
        print(provenance_line())
        print(f"server source: {args.src or 'this tree'}; load average {os.getloadavg()[0]:.2f}")
        print(f"| client | attempts | {' | '.join(OUTCOMES)} | TCP resets sent (OutRsts) |")
        print("|---" * (len(OUTCOMES) + 3) + "|")
        print("\n".join(rows))
    finally:
        if held is not None:
            held.close()
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
