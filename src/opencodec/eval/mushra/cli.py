"""``opencodec mushra build|serve|report`` (also ``python -m opencodec.eval.mushra``).

Exit status: 0 success, 1 failure (one line ``opencodec mushra ACTION: error: ...``), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...argtypes import int_in, port_arg, positive_float, positive_int
from ...errors import OpenCodecError
from ..cli import EVAL_RATE_RANGE, check_format_options
from ..systems import EvalReportError
from .build import DEFAULT_ANCHOR_HZ, DEFAULT_MAX_SECONDS


def build_parser(prog: str = "opencodec mushra") -> argparse.ArgumentParser:
    """The parser of ``opencodec mushra`` with its ``build``, ``serve`` and ``report`` commands."""
    p = argparse.ArgumentParser(prog=prog, description="MUSHRA listening test: build a test, "
                                "serve the rating page, report screened results.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    b = sub.add_parser("build", help="prepare a test folder (WAV files + test.json)",
                       description="Pick items per category from the evaluation manifests and make "
                                   "the conditions: hidden reference, 3.5 kHz low-pass anchor, "
                                   "models at bandwidths, Opus/MP3 baselines.")
    b.add_argument("--set", dest="eval_set", required=True, type=Path, metavar="DIR",
                   help="folder with eval_<category>.jsonl manifests (as for opencodec eval)")
    b.add_argument("--out", required=True, type=Path, metavar="DIR", help="test folder to create")
    b.add_argument("--models", nargs="*", default=[], metavar="NAME_OR_PATH",
                   help="neural models (names or weight files); none is needed")
    b.add_argument("--bandwidths", nargs="*", type=positive_float, default=None, metavar="KBPS",
                   help="bandwidths for every model (default: each model's own)")
    b.add_argument("--baselines", nargs="*", default=[], metavar="SPEC",
                   help="baselines as opencodec eval names them: opusN, mp3_N (e.g. opus6 opus12 "
                        "mp3_64); Opus at most 256 kbit/s per channel, MP3 a bitrate LAME codes "
                        "at the test's rate (8..160 in its steps at 16-24 kHz), else refused")
    b.add_argument("--categories", nargs="*", default=None,
                   help="categories (default: every eval_*.jsonl found)")
    b.add_argument("-n", "--items-per-category", type=positive_int, default=3, metavar="N",
                   help="items drawn per category (default 3)")
    b.add_argument("--seed", type=int, default=0, help="seed of the item draw (default 0)")
    b.add_argument("--max-seconds", type=positive_float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help=f"cut every item to its first S seconds (default {DEFAULT_MAX_SECONDS:g})")
    b.add_argument("--sample-rate", type=int_in(*EVAL_RATE_RANGE), default=None, metavar="HZ",
                   help=f"rate of the test, {EVAL_RATE_RANGE[0]}..{EVAL_RATE_RANGE[1]} Hz, without "
                        "--models only (default 24000; models use their own)")
    b.add_argument("--channels", type=positive_int, default=None,
                   help="channels, without --models only (default 1)")
    b.add_argument("--anchor-hz", type=positive_float, default=DEFAULT_ANCHOR_HZ, metavar="HZ",
                   help=f"low-pass anchor cut-off (default {DEFAULT_ANCHOR_HZ:g})")
    b.add_argument("--test-id", default=None, help="test id (default: folder name + random suffix)")
    b.add_argument("--title", default=None, help="title shown on the page")
    b.add_argument("-f", "--force", action="store_true",
                   help="replace an existing test folder (never one holding ratings)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("serve", help="run the rating page on a local web server",
                       description="Serve the test's rating page; ratings go to a SQLite database. A "
                                   "connection silent for 10 s is dropped, and at most 32 are "
                                   "served at once (more get HTTP 503).")
    s.add_argument("test_dir", type=Path, metavar="TEST_DIR")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=port_arg, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="ratings database (default TEST_DIR/ratings.sqlite)")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")

    r = sub.add_parser("report", help="post-screening, means with 95%% CIs, table and plot",
                       description="Screen listeners (hidden reference < 90 in more than 15% of "
                                   "their trials) and report per-system means with 95% CIs.")
    r.add_argument("test_dir", type=Path, metavar="TEST_DIR")
    r.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="ratings database (default TEST_DIR/ratings.sqlite)")
    r.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default TEST_DIR/report)")
    r.add_argument("-f", "--force", action="store_true", help="overwrite existing report files")
    return p


def _build(args: argparse.Namespace) -> int:
    import torch

    from .build import build_test

    torch.set_num_threads(1)
    try:
        check_format_options(args.models, args.sample_rate, args.channels)
    except EvalReportError as exc:
        print(f"opencodec mushra build: error: {exc}", file=sys.stderr)
        return 2
    test = build_test(args.eval_set, args.out, models=args.models, bandwidths=args.bandwidths,
                      baselines=args.baselines, categories=args.categories,
                      items_per_category=args.items_per_category, seed=args.seed,
                      max_seconds=args.max_seconds, sample_rate=args.sample_rate or 24000,
                      channels=args.channels or 1, anchor_hz=args.anchor_hz, test_id=args.test_id,
                      title=args.title, force=args.force, quiet=args.quiet)
    print(f"built MUSHRA test {test.test_id} in {args.out}: {len(test.trials)} trials x "
          f"{len(test.systems)} conditions ({', '.join(test.systems)}) at {test.sample_rate} Hz")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import make_server

    server = make_server(args.test_dir, args.host, args.port, args.db, log=args.verbose)
    print(f"MUSHRA test {server.test.test_id}: open {server.url} (ratings -> {server.db_path}); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import ALL, make_report

    summary = make_report(args.test_dir, args.db, args.out, args.force)
    print(f"listeners kept: {len(summary['kept'])}, excluded: {len(summary['excluded'])}"
          + (f" ({', '.join(summary['excluded'])})" if summary["excluded"] else ""))
    for system, s in summary["groups"][ALL].items():
        mean = "–" if s["mean"] is None else f"{s['mean']:.1f}"
        ci = "" if s["ci95"] is None else f" ± {s['ci95']:.1f}"
        print(f"  {system:28s} {mean}{ci}  (n={s['n']})")
    print(f"wrote {Path(summary['out']) / 'mushra_report.md'}")
    return 0


def main(argv: list[str] | None = None, prog: str = "opencodec mushra") -> int:
    """Run ``opencodec mushra ...`` with ``argv``; returns the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    if args.action is None:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: an action is required (build, serve or report)", file=sys.stderr)
        return 2
    try:
        return {"build": _build, "serve": _serve, "report": _report}[args.action](args)
    except (OpenCodecError, OSError) as exc:
        print(f"{prog} {args.action}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(prog="python -m opencodec.eval.mushra"))
