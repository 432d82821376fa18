"""The ``opencodec eval`` command line: its parser, and one run of it with its exit status.

The driver it runs is passed in (:func:`opencodec.eval.report.main` passes
:func:`opencodec.eval.report.run_eval`), so this module does not import the driver's module,
which re-exports :func:`build_parser` and is the ``python -m opencodec.eval.report`` entry.
"""

from __future__ import annotations

import argparse
import sys
import typing as tp
from pathlib import Path

from ..argtypes import bandwidth_arg, int_in, positive_int
from ..errors import OpenCodecError
from .console import PROG
from .items import NO_CATEGORY_NAMED
from .results_file import RESULTS_FILE
from .systems import ALL_METRICS, EvalReportError, parse_baseline

__all__ = ["DESCRIPTION", "EVAL_RATE_RANGE", "NO_METRIC_NAMED", "NO_VALUE_NAMED", "build_parser",
           "check_format_options", "check_values_named", "run_command"]

#: The scoring rates ``--sample-rate`` takes (Hz): PESQ and ViSQOL's speech mode work at 16 kHz
#: and ViSQOL's audio mode at 48 kHz, so rates far outside telephone to studio ones would only
#: be resampled into meaningless scores.
EVAL_RATE_RANGE = (8000, 192000)

#: The error of ``--metrics`` given without a name (it would report no metric at all).
NO_METRIC_NAMED = f"--metrics names no metric; name one or more of: {', '.join(ALL_METRICS)}"

#: The errors of the other list options given without a value, by flag (each was taken as
#: not given, or ran to another error): a usage error naming the flag.
NO_VALUE_NAMED = {
    "--models": "--models names no model; name one or more (names or weights files), or leave the option out",
    "--bandwidths": ("--bandwidths names no bandwidth; give one or more (kbps), or leave the option out "
                     "for each model's own"),
    "--baselines": "--baselines names no baseline; name one or more (e.g. opus6 mp3_64), or leave the option out",
    "--categories": NO_CATEGORY_NAMED,
}

#: The first line of ``opencodec eval --help`` (the protocol is in :mod:`opencodec.eval.report`).
DESCRIPTION = "Rate-quality evaluation report: score neural codecs and classic baselines on eval sets."


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``opencodec eval`` command line."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, metavar="NAME_OR_PATH",
                   help="neural model names or weight files (two checkpoints of one config are "
                        "told apart by NAME#<weights hash>)")
    p.add_argument("--bandwidths", nargs="*", type=bandwidth_arg, default=None, metavar="KBPS",
                   help="bandwidths for the models (default: each model's own; one a model does "
                        "not support is skipped for it with a warning)")
    p.add_argument("--baselines", nargs="*", default=None, metavar="SPEC",
                   help="baselines: opusN (6..256 kbit/s per channel: 256 mono, 510 stereo), mp3_N "
                        "(a bitrate LAME codes at the scoring rate: 8, 16, ..., 160 at 16-24 kHz; "
                        "32, 40, ..., 320 at 32-48 kHz; 8..64 at 8-12 kHz) (e.g. opus6 opus12 "
                        "opus24 mp3_64); another is refused before any work")
    p.add_argument("--set", dest="eval_set", required=True, metavar="DIR",
                   help="folder with eval_<category>.jsonl manifests")
    p.add_argument("--categories", nargs="*", default=None,
                   help="categories (default: all eval_*.jsonl found)")
    p.add_argument("--max-items", type=positive_int, default=None, metavar="N", help="first N items per category")
    p.add_argument("--metrics", nargs="*", default=list(ALL_METRICS), choices=ALL_METRICS,
                   metavar="NAME", help=f"metrics to compute, one or more of "
                                        f"{', '.join(ALL_METRICS)} (default: all)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty, or an earlier eval output (with results.jsonl), "
                        "which is resumed: only missing rows are computed, and the report covers "
                        "exactly this run's items, systems and metrics")
    p.add_argument("-f", "--force", action="store_true",
                   help="write into a non-empty --out folder that is not an eval output "
                        "(its report.md, summary.json and plots/ are replaced)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (1 torch thread each)")
    p.add_argument("--sample-rate", type=int_in(*EVAL_RATE_RANGE), default=None, metavar="HZ",
                   help=f"scoring rate, {EVAL_RATE_RANGE[0]}..{EVAL_RATE_RANGE[1]} Hz, without "
                        "--models only (default 24000; with models, theirs is used and this "
                        "option is refused)")
    p.add_argument("--channels", type=positive_int, default=None,
                   help="scoring channels, without --models only (default 1)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (warnings, such as skipped items or bandwidths, still show)")
    return p


def check_format_options(models: tp.Sequence[str], sample_rate: int | None,
                         channels: int | None) -> None:
    """``EvalReportError`` when ``--sample-rate`` or ``--channels`` is given with ``--models``
    (the models' own rate and channels are the scoring format; the option would be ignored)."""
    given = [opt for opt, value in (("--sample-rate", sample_rate), ("--channels", channels))
             if value is not None]
    if models and given:
        verb, them = ("apply", "them") if len(given) > 1 else ("applies", "it")
        raise EvalReportError(f"{' and '.join(given)} {verb} only without --models (the models' "
                              f"own rate and channels are used); drop {them}")


def check_values_named(args: argparse.Namespace) -> None:
    """``EvalReportError`` (:data:`NO_METRIC_NAMED`, :data:`NO_VALUE_NAMED`) for a list option
    given without a value; then ``--models`` and ``--baselines`` not given are empty lists."""
    if not args.metrics:  # "--metrics" with no name: a table of n, kbps and RTF only
        raise EvalReportError(NO_METRIC_NAMED)
    for flag, message in NO_VALUE_NAMED.items():
        if getattr(args, flag[2:]) == []:
            raise EvalReportError(message)
    args.models, args.baselines = args.models or [], args.baselines or []


def run_command(argv: list[str] | None, prog: str, run_eval: tp.Callable[..., dict]) -> int:
    """Parse ``argv`` and call ``run_eval`` with it. Exit status: 0 success, 1 failure (one
    line ``opencodec eval: error: ...``), 2 usage (including a baseline the encoders do not
    take, and a list option such as ``--metrics`` given without a value), 130 interrupted (the rows written so far are
    kept: rerun the command to resume)."""
    import torch

    torch.set_num_threads(1)
    args = build_parser(prog).parse_args(argv)
    try:
        check_values_named(args)
        for spec in args.baselines:
            parse_baseline(spec)
        check_format_options(args.models, args.sample_rate, args.channels)
    except EvalReportError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        doc = run_eval(args.models, args.bandwidths, args.baselines, args.eval_set, args.out,
                       categories=args.categories, max_items=args.max_items, metrics=args.metrics,
                       workers=args.workers, quiet=args.quiet,
                       sample_rate=args.sample_rate or 24000, channels=args.channels or 1,
                       force=args.force)
    except (EvalReportError, OpenCodecError, OSError) as exc:  # bad input, model, weights: one line
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted (the rows already scored are kept in "
              f"{Path(args.out) / RESULTS_FILE}; rerun the same command to resume)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'report.md'} ({doc['meta']['n_rows']} rows)", file=sys.stderr)
    return 0
