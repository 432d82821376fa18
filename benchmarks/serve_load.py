"""Load test of ``opencodec serve`` on the loopback: N real-time relay clients for T seconds.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py [--clients 16] [--seconds 60]
        [--model opencodec_24khz] [--bandwidth 6 [3 ...]] [--exact] [--server-cpu 0]
        [--audio demo/sample_speech_fr.flac] [--batch-window-ms MS] [--flooders N]

The server is the real command (``python -m opencodec serve --port 0 --max-clients N``) in its
own process (one thread; ``--server-cpu`` pins it to one core); the clients run here, each
sending speech at real-time pace in 13.3 ms chunks and timing every chunk from its send to
the moment its last sample comes back decoded. Once the N clients are streaming, one more
client connects: past capacity it must be refused (close 1013), not slow the others down.
With ``--flooders N``, N more clients (the server admits them) each send the same length of
speech at once (1 s messages, no pause), as fast as the server reads it, and read what comes back: the table's
latencies stay those of the real-time clients, and a line says how fast the flooders were served
(the server's pacing holds each stream to 1.25x real time plus its 2 s bank once two stream).

Prints the provenance line and a table: frame latency p50/p90/p99/max over all clients'
chunks (the first 0.5 s of each stream, the codec's warm-up, reported apart), frames sent and
frames that did not come back (dropped), whether the extra client was refused, and the
server's own step time (p50, from its last stats message).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from opencodec.audio import convert_audio, read_audio
from opencodec.pretrained import load_model
from opencodec.serve.client import ClientResult, run_client
from provenance import provenance_line

REPO = Path(__file__).resolve().parent.parent


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    """``opencodec serve`` in a subprocess on a free port; returns (process, port)."""
    cmd = [sys.executable, "-m", "opencodec", "serve", "--port", "0", "-m", args.model,
           "--max-clients", str(args.clients + args.flooders), "--threads", str(args.threads)] + (["--exact"] if args.exact else []) \
        + ([] if args.batch_window_ms is None else ["--batch-window-ms", str(args.batch_window_ms)])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cpu = args.server_cpu
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"http://[^:]+:(\d+)/", line)
        if found:
            return proc, int(found.group(1))
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def speech(path: Path, rate: int, seconds: float, offset: int) -> np.ndarray:
    """``seconds`` of the file at ``rate`` (looped), starting ``offset`` samples in: [1, n]."""
    wav, sr = read_audio(path)
    wav = convert_audio(wav, sr, rate, 1)[0].numpy()
    need = int(seconds * rate)
    looped = np.tile(wav, -(-(need + offset) // len(wav)))
    return looped[None, offset:offset + need].astype(np.float32)


async def _timed(client: tp.Awaitable[ClientResult]) -> tuple[ClientResult, float]:
    started = time.monotonic()
    result = await client
    return result, time.monotonic() - started


async def load(port: int, audios: list[np.ndarray], bandwidths: list[float], floods: list[np.ndarray]
               ) -> tuple[list[ClientResult], ClientResult, list[tuple[ClientResult, float]]]:
    """The clients (client i at ``bandwidths[i % len(bandwidths)]``) and the flooders (all their
    audio at once; each with its seconds to the end), then one more client."""
    uri = f"ws://127.0.0.1:{port}/ws"
    live = [asyncio.create_task(run_client(uri, a, bandwidth=bandwidths[i % len(bandwidths)], chunk=320,
                                           realtime=True))
            for i, a in enumerate(audios)]
    flooding = [asyncio.create_task(_timed(run_client(uri, a, bandwidth=bandwidths[0], chunk=24000)))
                for a in floods]
    await asyncio.sleep(1.0)
    extra = await run_client(uri, audios[0][:, :24000], bandwidth=bandwidths[0], chunk=320)
    return list(await asyncio.gather(*live)), extra, list(await asyncio.gather(*flooding))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="opencodec_24khz")
    parser.add_argument("--bandwidth", type=float, nargs="+", default=[6.0],
                        help="kbps; several: the clients take them in turn (mixed bandwidths)")
    parser.add_argument("--exact", action="store_true", help="the server's batch-1 exact mode")
    parser.add_argument("--threads", type=int, default=1, help="server threads (default 1)")
    parser.add_argument("--server-cpu", type=int, default=None, help="pin the server to this CPU")
    parser.add_argument("--batch-window-ms", type=float, default=None,
                        help="the server's --batch-window-ms (default: its own, one frame)")
    parser.add_argument("--audio", type=Path, default=REPO / "demo" / "sample_speech_fr.flac")
    parser.add_argument("--flooders", type=int, default=0,
                        help="clients that send their --seconds of speech all at once (default 0)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # so that the provenance line states the server's threads

    model = load_model(args.model)
    rate = model.sample_rate
    audios = [speech(args.audio, rate, args.seconds, i * rate // 7) for i in range(args.clients)]
    floods = [speech(args.audio, rate, args.seconds, (i + 1) * rate // 5) for i in range(args.flooders)]
    proc, port = start_server(args)
    try:
        started = time.monotonic()
        results, extra, flooded = asyncio.run(load(port, audios, args.bandwidth, floods))
        wall = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(10)

    warm = int(0.5 * rate) // 320
    steady = np.concatenate([r.latencies[warm:] for r in results]) * 1000
    first = np.concatenate([r.latencies[:warm] for r in results]) * 1000
    sent = sum(a.shape[-1] // 320 for a in audios)
    back = sum(r.pcm.shape[-1] // 320 for r in results)
    closed_ok = sum(r.close_code == 1000 for r in results)
    steps = [r.stats[-1].get("step_ms_p50") for r in results if r.stats]
    step = np.median([s for s in steps if s is not None]) if any(s is not None for s in steps) else float("nan")
    print(provenance_line({args.model: model}))
    window = "" if args.batch_window_ms is None else f" --batch-window-ms {args.batch_window_ms:g}"
    print(f"server: opencodec serve -m {args.model} --max-clients {args.clients}"
          f"{' --exact' if args.exact else ''}{window}, {args.threads} thread(s)"
          f"{f', pinned to CPU {args.server_cpu}' if args.server_cpu is not None else ''}; "
          f"clients: relay at {'/'.join(f'{b:g}' for b in args.bandwidth)} kbps, {args.seconds:g} s of {args.audio.name} each, "
          f"real time, 320-sample chunks; wall {wall:.1f} s")
    print()
    print("| clients | s each | frames sent | dropped | closed normally | latency p50 | p90 | p99 | max "
          "| first 0.5 s p50 | server step p50 | client N+1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    refusal = f"refused ({extra.close_code}: {extra.close_reason})" if extra.close_code == 1013 \
        else f"NOT refused (close {extra.close_code})"
    pct = (lambda x, q: f"{np.percentile(x, q):.1f} ms" if len(x) else "-")
    print(f"| {args.clients} | {args.seconds:g} | {sent} | {sent - back} | {closed_ok}/{len(results)} "
          f"| {pct(steady, 50)} | {pct(steady, 90)} | {pct(steady, 99)} | {pct(steady, 100)} "
          f"| {pct(first, 50)} | {step:.2f} ms | {refusal} |")
    if flooded:
        print()
        print(f"flooders: {len(flooded)} client(s) sending {args.seconds:g} s at once; served in "
              + ", ".join(f"{seconds:.1f} s ({args.seconds / seconds:.2f}x real time, "
                          f"{result.pcm.shape[-1] / rate:.1f} s back, close {result.close_code})"
                          for result, seconds in flooded))


if __name__ == "__main__":
    main()
