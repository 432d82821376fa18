"""``opencodec tokenize`` and ``opencodec detokenize``: parsing, one library call, report.

::

    opencodec tokenize INPUT... --out DIR [-m NAME_OR_PATH] [-b KBPS] [--device cpu|cuda|auto]
                       [--batch-seconds S] [--shard-rows N] [--max-seconds S] [--workers N]
                       [--loader-workers N] [--dtype fp32|bf16]
    torchrun --nproc_per_node N -m opencodec tokenize ...      (one process per GPU)
    opencodec detokenize DIR --out AUDIO_DIR [--ids ID ...] [-m NAME_OR_PATH] [--rate HZ]
                         [--channels N] [--rescale] [-f]

See :mod:`opencodec.tokens` for the output layout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing as tp
from pathlib import Path

from tqdm import tqdm

from ..progress import progress_bar
from ..argtypes import sample_rate_arg
from ..errors import advice_for_entropy_model, codec_advice
from ..releases import DEFAULT_MODEL
from .commands import command_help
from .common import (bandwidth_arg, channels_arg, count_arg, error, info,
                     positive_float, positive_int, sigterm_as_interrupt, warn)

#: The advice for an entropy model given to ``tokenize --model`` (the loader's names
#: ``--lm-model``, an option tokenize does not have; ``detokenize`` gives its own, naming the
#: shards' model).
CODEC_ADVICE = codec_advice("tokenize", "to --model")


def add_token_parsers(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``tokenize`` and ``detokenize`` sub-commands."""
    tok = sub.add_parser(
        "tokenize", parents=[common], help=command_help("tokenize"),
        description="Encode audio files into Parquet shards: every audio file of folders (recursive, "
                    "linked sub-folders followed), single audio files (id: the file name), "
                    "JSON-lines/CSV manifests with a 'path' column (and optional 'id'), or UTF-8 text "
                    "files of paths (relative paths in manifests and lists are relative to their own "
                    "folder). One row per file: id, codes [K][F] int16, num_codebooks, num_frames, "
                    "sample_rate, duration, channels (of the source file), num_samples (its length at "
                    "the model's rate), and scales for models that normalise (48 kHz). Rerun the same "
                    "command to resume; run it under torchrun to split the work across GPUs and nodes.")
    tok.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="folder, audio file, manifest (.jsonl/.csv/.tsv) or text list of paths")
    tok.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    tok.add_argument("-m", "--model", metavar="NAME_OR_PATH",
                     help=f"model name or weights file (default {DEFAULT_MODEL}, the current release)")
    tok.add_argument("-b", "--bandwidth", type=bandwidth_arg, metavar="KBPS",
                     help="bandwidth in kbps (default: the model's largest)")
    tok.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                     help="where to encode (default auto: CUDA when available)")
    tok.add_argument("--batch-seconds", type=positive_float, default=120.0, metavar="S",
                     help="padded audio per batch, in seconds (default 120)")
    tok.add_argument("--shard-rows", type=positive_int, default=1000, metavar="N",
                     help="files per shard (default 1000)")
    tok.add_argument("--max-seconds", type=positive_float, default=300.0, metavar="S",
                     help="files longer than this are encoded alone, in bounded memory (default 300)")
    tok.add_argument("--workers", type=positive_int, default=None, metavar="N",
                     help="CPU processes (default: one per core on the CPU, as encoding runs on one "
                          "thread; 1 on a GPU: for several GPUs use torchrun)")
    tok.add_argument("--loader-workers", type=count_arg, default=None, metavar="N",
                     help="processes decoding and resampling per GPU process (default: the node's cores "
                          "shared among its GPUs, at most 8; 0 on the CPU)")
    tok.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                     help="fp32 (default: codes equal file-by-file encoding) or bf16 autocast "
                          "(faster on GPUs, some codes differ; on the CPU most differ: a warning says so)")
    tok.set_defaults(parser=tok, handler=cmd_tokenize)

    det = sub.add_parser(
        "detokenize", parents=[common], help=command_help("detokenize"),
        description="Decode rows of a token folder to WAV files (at the source file's rate and "
                    "channel count unless --rate/--channels say otherwise).")
    det.add_argument("folder", type=Path, metavar="DIR", help="token folder (opencodec tokenize --out)")
    det.add_argument("--out", type=Path, required=True, metavar="AUDIO_DIR", help="output folder")
    det.add_argument("--ids", nargs="+", metavar="ID", help="rows to decode (default: all)")
    det.add_argument("-m", "--model", metavar="NAME_OR_PATH",
                     help="model weights (default: the model the shards name)")
    det.add_argument("--rate", type=sample_rate_arg, metavar="HZ", help="output sample rate")
    det.add_argument("--channels", type=channels_arg, metavar="N", help="output channels (1-64)")
    det.add_argument("--rescale", action="store_true",
                     help="scale a file louder than full scale down to a 0.99 peak (default: clip, with a "
                          "warning)")
    det.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    det.set_defaults(parser=det, handler=cmd_detokenize)


def _duration(seconds: float) -> str:
    """Seconds of audio or time, readable at any size: ``0.00421 s``, ``12.3 s``, ``4.5 min``,
    ``2.25 h``."""
    if seconds < 1:
        return f"{seconds:.3g} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _bar_unit(total_seconds: float) -> tuple[float, str]:
    """(seconds per unit, unit) of the progress bar: seconds, minutes or hours of audio."""
    if total_seconds < 120:
        return 1.0, "s"
    if total_seconds < 7200:
        return 60.0, "min"
    return 3600.0, "h"


class _Progress:
    """tqdm bar in seconds, minutes or hours of audio (by the job's size), with the speed in
    times real time, the files and errors so far, and the ETA."""

    def __init__(self, quiet: bool, label: str):
        self.quiet, self.label = quiet, label
        self.bar: tqdm | None = None

    def start(self, total_seconds: float) -> tp.Callable[[float, int, int], None]:
        """The bar of a job with ``total_seconds`` to do, and its ``update(seconds, files,
        errors)``. With nothing to do (a rerun of a finished job) no bar is shown, rather than
        one stuck at ``0/0``; should audio come after all, the bar appears with it."""
        scale, unit = _bar_unit(total_seconds)
        spec = ".3g" if unit == "s" else ".2f"

        def make_bar() -> tqdm:
            return progress_bar(total=total_seconds / scale, unit=unit, desc=self.label, disable=self.quiet,
                                file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                f"{{n:{spec}}}/{{total:{spec}}} {unit} [{{elapsed}}<{{remaining}}{{postfix}}]",
                                unit_scale=False)

        if total_seconds > 0:
            self.bar = make_bar()
        counts = {"files": 0, "errors": 0}

        def update(seconds: float, files: int, errors: int) -> None:
            if self.bar is None:
                self.bar = make_bar()
            counts["files"] += files
            counts["errors"] += errors
            elapsed = self.bar.format_dict["elapsed"]
            done = self.bar.n + seconds / scale
            speed = done * scale / elapsed if elapsed > 0 else 0.0
            self.bar.set_postfix_str(f"{speed:.3g}x real time, files={counts['files']}, "
                                     f"errors={counts['errors']}", refresh=False)
            if done > self.bar.total:  # decoded lengths can exceed the headers'
                self.bar.total = done
            self.bar.update(seconds / scale)
        return update

    def finish(self) -> None:
        """The job's work here is done: the bar ends at exactly its total. (The seconds reported
        file by file add up to the total in another order, and float sums differ in the last
        bits: 165 files of 0.1 s add up to 16.499999999999964, a bar left short of full.)"""
        if self.bar is not None and self.bar.n < self.bar.total:
            self.bar.n = self.bar.total

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _need_pyarrow() -> None:
    try:
        importlib.import_module("pyarrow")
    except ImportError:
        from ..errors import OpenCodecError
        raise OpenCodecError("token shards are Parquet files and need pyarrow: "
                             "pip install 'opencodec[tokens]' (or pip install pyarrow)") from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def cmd_tokenize(args: argparse.Namespace) -> int:
    """``opencodec tokenize``: see the module docstring. Exit status 1 when not one file could
    be tokenised; files that fail (also truncated ones) beside others that succeed are listed
    in errors.jsonl, with a warning, and do not change the exit status. SIGTERM stops it as
    Ctrl-C does (exit 143, one line; worker processes stopped, no temporary file left)."""
    with sigterm_as_interrupt():
        return _tokenize(args)


def _tokenize(args: argparse.Namespace) -> int:
    _need_pyarrow()
    from ..tokens import TokenizeOptions, tokenize
    from ..tokens.job import default_workers
    from ..tokens.plan import place_from_env

    options = TokenizeOptions(inputs=args.inputs, out=args.out, model=args.model, bandwidth=args.bandwidth,
                              device=args.device, batch_seconds=args.batch_seconds,
                              shard_rows=args.shard_rows, max_seconds=args.max_seconds,
                              workers=args.workers if args.workers is not None else default_workers(args.device),
                              loader_workers=args.loader_workers, dtype=args.dtype)
    place = place_from_env()
    label = "tokenize" if place.world == 1 else f"tokenize rank {place.rank}/{place.world}"
    progress = _Progress(args.quiet or place.rank != 0, label)
    try:
        with advice_for_entropy_model(CODEC_ADVICE):
            summary = tokenize(options, progress.start)
        progress.finish()
    finally:
        progress.close()
    stats = summary.stats
    prefix = "" if place.world == 1 else f"rank {place.rank}/{place.world}: "
    if summary.workers_note is not None and args.workers is not None:  # not for the default, one per core
        info(args, summary.workers_note)
    # Under torchrun a rank speaks for itself when it did some work, and of the job when its
    # finalize wrote the index, or it is rank 0 of a rerun with nothing to do (reports_job): one
    # rank, also when several finish at the same moment.
    worked = stats.files + stats.errors + stats.shards_written > 0
    speaks = place.world == 1 or worked
    if speaks and not args.quiet:
        speed = f", {summary.realtime_factor:.3g}x real time" if stats.seconds > 0 else ""
        print(f"{prefix}{_count(stats.files, 'file')}, {_duration(stats.seconds)} of audio, "
              f"{_count(stats.errors, 'error')}, {_duration(summary.elapsed)}{speed}; shards written "
              f"{stats.shards_written}, already done {stats.shards_skipped}", file=sys.stderr)
    if stats.bf16_checked:  # a warning, also with -q: bf16 changes codes
        warn(f"{prefix}bf16: {100 * stats.bf16_equal / stats.bf16_checked:.2f}% of codes equal fp32 "
             f"encoding ({stats.bf16_checked} codes of the first batch checked)")
    index = summary.index
    if index is None:  # other ranks still at work: the last one to finish reports the job
        return 0
    speaks = summary.reports_job
    if speaks and not args.quiet:
        print(f"{args.out}: {_count(len(index['shards']), 'shard')}, {_count(index['rows'], 'row')}, "
              f"{_duration(index['hours'] * 3600)} of audio, {_count(index['errors'], 'error')}",
              file=sys.stderr)
    reasons = f"reasons in {args.out / 'errors.jsonl'}"
    if summary.all_failed:
        if speaks:
            error(f"no file could be tokenised: all {index['errors']} failed ({reasons})")
        return 1
    if index["errors"] and speaks:
        warn(f"{index['errors']} of {index['rows'] + index['errors']} files could not be tokenised ({reasons})")
    return 0


def cmd_detokenize(args: argparse.Namespace) -> int:
    """``opencodec detokenize``: decode rows back to audio files. SIGTERM stops it as Ctrl-C
    does (exit 143, one line, no partial file)."""
    with sigterm_as_interrupt():
        return _detokenize(args)


def _detokenize(args: argparse.Namespace) -> int:
    _need_pyarrow()
    from ..tokens import TokenizeError, detokenize
    from ..tokens.dataset import PARTIAL_ADVICE

    # an entropy model given as --model: detokenize's own advice names the shards' model
    try:
        paths = detokenize(args.folder, args.out, ids=args.ids, model=args.model, rate=args.rate,
                           channels=args.channels, force=args.force, rescale=args.rescale)
    except TokenizeError as exc:  # an unfinished job: the Python-only partial reading is no advice here
        if not str(exc).endswith(PARTIAL_ADVICE):
            raise
        raise TokenizeError(str(exc).removesuffix(PARTIAL_ADVICE)) from None
    if not args.quiet:
        print(f"{_count(len(paths), 'file')} written to {args.out}", file=sys.stderr)
    return 0
