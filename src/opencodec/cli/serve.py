"""``opencodec serve``: parse, run :func:`opencodec.serve.server.run_server`, report."""

from __future__ import annotations

import argparse
import typing as tp

from ..errors import UsageError, advice_for_entropy_model, codec_advice
from ..releases import DEFAULT_MODEL
from .commands import command_help
from .common import (add_model_option, bandwidth_arg, info, non_negative_float, port_arg,
                     positive_float, positive_int)


def add_serve_parser(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``serve`` sub-command."""
    srv = sub.add_parser(
        "serve", parents=[common], help=command_help("serve"),
        description="Serve live encoding, decoding and relaying over WebSocket (ws://HOST:PORT/ws) "
                    "and a page at http://HOST:PORT/ (microphone in, decoded audio out). All streams "
                    "share one batched step per frame. Causal models only. Needs the 'serve' extra.")
    add_model_option(srv, f"model name or weights file (default {DEFAULT_MODEL}); must be causal")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=port_arg, default=8765, help="port (default 8765; 0: any free port)")
    srv.add_argument("--max-clients", type=positive_int, default=16, metavar="N",
                     help="clients served at once; more are refused with close code 1013 (default 16)")
    srv.add_argument("--max-opening", type=positive_int, default=None, metavar="N",
                     help="connections at once that are not (yet) clients: in the HTTP/WebSocket "
                          "handshake (10 s at most each), loading the page, or being refused; more get "
                          "HTTP 503 and are closed at once (default 2 x --max-clients + 16)")
    srv.add_argument("--max-opening-per-address", type=positive_int, default=None, metavar="N",
                     help="of those, at most N from one client address (an IPv6 address's /64), so "
                          "that one address flooding the server cannot shut every other client out; "
                          "more get HTTP 503 (default half of --max-opening, at least 1; behind a "
                          "reverse proxy every connection has the proxy's address: set it to "
                          "--max-opening)")
    srv.add_argument("--max-message", type=positive_int, default=1 << 20, metavar="BYTES",
                     help="largest message a client may send (default 1048576); bigger: close 1009")
    srv.add_argument("--idle-timeout", type=positive_float, default=30.0, metavar="S",
                     help="close a client that sends nothing, or reads nothing the server has for "
                          "it, for S seconds (default 30)")
    srv.add_argument("--send-queue", type=positive_int, default=256, metavar="N",
                     help="messages waiting for a client before it is disconnected as too slow "
                          "(default 256, ~3.4 s of relayed audio)")
    srv.add_argument("-b", "--max-bandwidth", type=bandwidth_arg, metavar="KBPS",
                     help="the highest bandwidth clients may ask for, and the shared encoder's "
                          "(default: the model's highest; lower is cheaper per stream)")
    srv.add_argument("--threads", type=positive_int, default=1, metavar="N",
                     help="PyTorch threads for decoding (default 1; encoding always runs on one thread; "
                          "set OMP_WAIT_POLICY=PASSIVE on a busy machine)")
    srv.add_argument("--batch-window-ms", type=non_negative_float, default=None, metavar="MS",
                     help="how long a step may wait for every live stream's next frame, so that all "
                          "share one batched step (default one frame, 13.3 ms at 24 kHz; 0: no waiting)")
    srv.add_argument("--exact", action="store_true",
                     help="exact kernels, each stream in its own batch-1 step: the streaming encoder's codes "
                          "(those of 'compress' but for rare near-ties, README 'Streamed codes'; much slower "
                          "with many clients). Default: fast mode (README, "
                          "'Fast mode'), all streams batched in one step")
    srv.set_defaults(parser=srv, handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """``opencodec serve``: the WebSocket server (opencodec.serve) until Ctrl-C or SIGTERM
    (both close the clients with 1001 and return 0)."""
    try:
        from ..serve.server import ServeLimits, run_server
    except ImportError as exc:
        raise UsageError(f"opencodec serve needs the 'serve' extra ({exc.name} is missing): "
                         "pip install 'opencodec[serve]'") from None
    try:
        limits = ServeLimits(max_clients=args.max_clients, max_message_bytes=args.max_message,
                             idle_timeout=args.idle_timeout, send_queue=args.send_queue,
                             max_opening=args.max_opening,
                             max_opening_per_address=args.max_opening_per_address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from ..model_cache import load_checked_model

    # causal and the bandwidth checked before any weights load (a known name)
    with advice_for_entropy_model(codec_advice("serve")):
        model = load_checked_model(args.model, args.max_bandwidth, streaming=True)
    model.exact = args.exact  # fast mode unless --exact, as for stream-encode / stream-decode
    run_server(model, args.host, args.port, limits, batched=not args.exact,
               max_bandwidth=args.max_bandwidth, threads=args.threads,
               batch_window=None if args.batch_window_ms is None else args.batch_window_ms / 1000,
               ready=lambda text: info(args, text), exiting=True)
    return 0
