"""``opencodec compress`` and ``opencodec decompress``: parse, call :mod:`opencodec.codec_files`, report."""

from __future__ import annotations

import argparse
import sys
import typing as tp

from tqdm import tqdm

from .._process import usable_cores
from ..argtypes import MAX_CHANNELS, channels_arg, output_path_arg, path_arg, sample_rate_arg
from ..bandwidth import DEFAULT_BANDWIDTH
from ..file_jobs import Job, Plan, run_jobs
from ..progress import progress_bar
from ..releases import DEFAULT_MODEL
from .commands import command_help
from .common import (add_mode_options, add_model_option, bandwidth_arg, describe, error, fmt_kbps, info, positive_int,
                     progress_bars, sigterm_as_interrupt, warn)

if tp.TYPE_CHECKING:  # the command's library (and torch) load when it runs, not for --help
    from ..codec_files import FileResult, OutputOptions

CLIP_HINT = "[-r/--rescale scales down, --float keeps the peaks]"
CLIPPED = "exceeds full scale 1.0; clipped"  # what the writers' clipping warnings say (opencodec.audio, .longform)
EXISTS = "already exists (use -f/--force to overwrite)"  # the error of an output that exists


def add_codec_parsers(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``compress`` and ``decompress`` sub-commands."""
    comp = sub.add_parser(
        "compress", parents=[common], help=command_help("compress"),
        description="Compress audio (any format soundfile reads: WAV, FLAC, Ogg, Opus, MP3, ...) "
                    "to .ecdc. The audio is converted to the model's sample rate and channels. "
                    "If OUT ends in .wav or .flac, compress and decompress into that audio file.")
    comp.add_argument("input", type=path_arg, metavar="IN", help="audio file, or folder (recursive)")
    comp.add_argument("output", type=output_path_arg, nargs="?", metavar="OUT",
                      help="output .ecdc (or .wav/.flac for a round trip), or folder; "
                           "default: IN with .ecdc")
    comp.add_argument("-b", "--bandwidth", type=bandwidth_arg, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                      help=f"target bandwidth in kbps (default {DEFAULT_BANDWIDTH:g}); "
                           "the model decides which are supported")
    add_model_option(comp, f"model name or weights file (default {DEFAULT_MODEL}, the current "
                           f"release; files record the release's versioned name and weights hash)")
    comp.add_argument("--lm", action="store_true",
                      help="entropy-code the codes with the codec's language model (smaller files, "
                           "slower compression and decompression)")
    comp.add_argument("--lm-model", metavar="NAME_OR_PATH",
                      help="entropy model name or weights file (implies --lm; default: the one "
                           "belonging to the model: the bundled entropy model for the bundled "
                           "codec, encodec_lm_24khz or encodec_lm_48khz for the official ones)")
    comp.add_argument("--lm-format", choices=("deterministic", "official"), default=None,
                      help="entropy-coded format (implies --lm): 'deterministic' (default; version 1: its "
                           "codes decode identically on any machine and thread count (the audio "
                           "may differ in the last bit with the decoder's thread count), and "
                           "checksums make damage an error) or 'official' (version 0, readable "
                           "by the official encodec package, but its decoding depends on the "
                           "machine's float arithmetic, and like plain files it carries no "
                           "integrity check: damage can decode silently to wrong audio)")
    add_mode_options(comp, fast_default=False)
    _add_output_options(comp)
    _add_rate_channels_options(comp, "round trip (OUT .wav/.flac): output sample rate in Hz "
                                     "(default: the input's)", "round trip: output channels "
                                     "(default: the input's)")
    comp.set_defaults(parser=comp, handler=cmd_compress)

    dec = sub.add_parser("decompress", parents=[common], help=command_help("decompress"),
                         description="Decode .ecdc files to WAV (or FLAC) audio.")
    dec.add_argument("input", type=path_arg, metavar="IN", help=".ecdc file, or folder (recursive)")
    dec.add_argument("output", type=output_path_arg, nargs="?", metavar="OUT",
                     help="output .wav/.flac, or folder; default: IN with .wav")
    add_model_option(dec, "model name or weights file (default: the model named in each file); "
                          "its weights hash must be the file's. For a file written before "
                          "versioned names (header 'opencodec_24khz'), the release that wrote it, "
                          "e.g. opencodec_24khz_v4")
    dec.add_argument("--lm-model", metavar="NAME_OR_PATH",
                     help="entropy model name or weights file for entropy-coded files (default: "
                          "the one each file's header names, else its model's own)")
    dec.add_argument("--lm", action="store_true",
                     help="accepted for symmetry with compress, and not needed: entropy-coded files "
                          "are recognised from their header and decoded with the entropy model it "
                          "names (--lm-model chooses another)")
    add_mode_options(dec, fast_default=False)
    _add_output_options(dec)
    _add_rate_channels_options(dec, "output sample rate in Hz (default: the model's)",
                               "output channels, 1 = mono down-mix (default: the model's)")
    dec.set_defaults(parser=dec, handler=cmd_decompress)


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true",
                        help="overwrite existing outputs (a new file is renamed into place: an output "
                             "that is a symbolic link is replaced by the file, its target left as it was; "
                             "a FIFO or device is refused)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave out inputs whose output exists (outputs are written atomically, "
                             "so this resumes an interrupted folder)")
    parser.add_argument("-r", "--rescale", action="store_true",
                        help="scale decoded audio down to a 0.99 peak instead of clipping")
    parser.add_argument("--float", dest="float32", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")
    parser.add_argument("-j", "--jobs", type=positive_int, default=None, metavar="N",
                        help="folders: files processed at once, in N processes of one thread each "
                             "(default: one per core). .ecdc outputs are the same for any N; decoded "
                             "audio can differ in its last bit, as it does between thread counts")


def _add_rate_channels_options(parser: argparse.ArgumentParser, rate_help: str, channels_help: str) -> None:
    parser.add_argument("--rate", type=sample_rate_arg, metavar="HZ", help=rate_help)
    parser.add_argument("--channels", type=channels_arg, metavar="N", help=f"{channels_help}; 1-{MAX_CHANNELS}")


def _output_options(args: argparse.Namespace) -> OutputOptions:
    from ..codec_files import OutputOptions

    return OutputOptions(force=args.force, skip_existing=args.skip_existing, rescale=args.rescale,
                         float32=args.float32, rate=args.rate, channels=args.channels)


def _processes(args: argparse.Namespace) -> int:
    """``-j``: given, or one per core."""
    return args.jobs if args.jobs is not None else usable_cores()


def _report_all(args: argparse.Namespace, plan: Plan, work: tp.Callable[[Job, bool], FileResult],
                verb: str, line: tp.Callable[[FileResult], str]) -> int:
    """Run the plan's jobs and report each (one line for a single file; a progress bar over the
    files and every failure for a folder); returns the exit status (1 if any failed)."""
    if plan.skipped:
        info(args, f"{verb}: {len(plan.skipped)} file(s) skipped, their output exists"
                   + (f" ({plan.skipped[0].dst})" if len(plan.skipped) == 1 else ""))
    outcomes = run_jobs(plan, work, processes=_processes(args))
    if plan.folder and plan.jobs:  # every file skipped (--skip-existing): no empty "0file" bar
        outcomes = progress_bar(outcomes, total=len(plan.jobs), unit="file", desc=verb,
                                disable=args.quiet, file=sys.stderr)
    failed = existing = 0  # existing: failed because their output exists
    larger: list[FileResult] = []  # entropy coded, yet larger than plain coding
    try:
        for outcome in outcomes:
            if outcome.error is not None:
                failed += 1
                existing += EXISTS in str(outcome.error)
                error(describe(outcome.error, outcome.job.src))
                continue
            assert outcome.result is not None
            for message in outcome.result.notices:
                warn(message)
            for message in outcome.result.warnings:  # clipping, and whatever else the streamed paths caught
                warn(f"{message} {CLIP_HINT}" if CLIPPED in message else message)
            result = outcome.result
            if result.plain_bytes is not None and result.size_bytes is not None \
                    and result.size_bytes > result.plain_bytes:
                larger.append(result)
            if not plan.folder:
                info(args, line(result))
    finally:
        if isinstance(outcomes, tqdm):
            outcomes.close()
    _warn_larger(larger, len(plan.jobs))
    if not plan.folder:
        return 1 if failed else 0
    if failed:
        hint = (f" ({'all' if existing == failed else existing} because their output exists: --skip-existing "
                f"leaves those out, -f overwrites)" if existing else "")
        error(f"{failed} of {len(plan.jobs)} file(s) failed{hint}")
        return 1
    info(args, f"{verb}: {len(plan.jobs)} file(s) done"
               + (f", {len(plan.skipped)} skipped" if plan.skipped else ""))
    return 0


def _header_bound(r: FileResult) -> bool:
    """Whether an entropy-coded file is larger than plain coding only because of its fixed
    costs (the header's extra fields, the checksums, the coder's end: a short input): its
    body codes the codes into fewer bytes than plain coding (``FileResult.body_extra`` < 0).
    When the body is no smaller, the entropy model predicts the codes poorly."""
    return r.body_extra is not None and r.body_extra < 0


def _warn_larger(larger: list[FileResult], jobs: int) -> None:
    """One ``warning:`` line when the entropy model made output(s) larger than plain coding,
    with the reason: the entropy-coded format's larger header (and the deterministic
    format's checksums) on short inputs, when the body alone is smaller than plain coding's,
    or else codes the entropy model predicts poorly (its body is no smaller)."""
    if not larger:
        return
    from ..ecdc_info import ECDC_SUFFIX

    plain = "plain coding (no --lm/--lm-model) is smaller"
    checksums = any(r.checksums for r in larger)  # the official format (version 0) has none
    one = len(larger) == 1 and jobs == 1
    if all(_header_bound(r) for r in larger):
        most = max(tp.cast(int, r.header_extra) for r in larger)
        fields, outweigh = (("the entropy model's name and hash", "and checksums outweigh") if checksums
                            else ("the entropy model's hash", "outweighs"))
        saved = f" ({-tp.cast(int, larger[0].body_extra)} bytes on the codes)" if one else ""
        hint = (f"the entropy-coded format's header ({most} bytes more: {fields}) {outweigh} what the "
                f"entropy model saves{saved} on so short an input; {plain}")
    elif any(_header_bound(r) for r in larger):
        costs = "larger header and checksums" if checksums else "larger header"
        hint = (f"the entropy-coded format's {costs} (short inputs), or codes the "
                f"entropy model predicts poorly; {plain}")
    else:
        hint = f"the entropy model predicts these codes poorly; {plain}"
    if one:
        r = larger[0]
        assert r.size_bytes is not None and r.plain_bytes is not None
        # a round trip (OUT .wav/.flac) keeps no .ecdc file: name its input and say so
        what = (f"{r.dst}: the entropy-coded file ({r.size_bytes} bytes)" if r.dst.suffix.lower() == ECDC_SUFFIX
                else f"{r.src}: the round trip's entropy-coded data ({r.size_bytes} bytes, written to no file)")
        warn(f"{what} is larger than plain coding ({r.plain_bytes} bytes): {hint}")
        return
    extra = sum(tp.cast(int, r.size_bytes) - tp.cast(int, r.plain_bytes) for r in larger)
    warn(f"{len(larger)} of {jobs} entropy-coded file(s) are larger than plain coding ({extra} bytes "
         f"more in all, e.g. {larger[0].dst}): {hint}")


def cmd_compress(args: argparse.Namespace) -> int:
    """``opencodec compress``: audio file(s) -> .ecdc (or a round trip to .wav/.flac)."""
    with sigterm_as_interrupt():  # SIGTERM cleans up like Ctrl-C (no temporary file left)
        return _compress(args)


def _compress(args: argparse.Namespace) -> int:
    from ..codec_files import FileCompressor, plan_compress

    options = _output_options(args)
    plan = plan_compress(args.input, args.output, options)
    compressor = FileCompressor(args.model, args.bandwidth, options, lm=args.lm or args.lm_format is not None,
                                lm_model=args.lm_model, lm_format=args.lm_format or "deterministic",
                                progress=progress_bars(args), exact=not args.fast)

    def line(r: FileResult) -> str:
        assert r.size_bytes is not None
        how = f"{compressor.model.name}, streamed" if r.streamed else compressor.model.name
        return (f"{r.src} -> {r.dst}: {r.seconds:.2f} s at {fmt_kbps(args.bandwidth)} kbps ({how}), "
                f"{r.size_bytes} bytes, {r.size_bytes * 8 / r.seconds / 1000:.2f} kbps")

    return _report_all(args, plan, compressor, "compress", line)


def cmd_decompress(args: argparse.Namespace) -> int:
    """``opencodec decompress``: .ecdc file(s) -> WAV/FLAC."""
    with sigterm_as_interrupt():  # SIGTERM cleans up like Ctrl-C (no temporary file left)
        return _decompress(args)


def _decompress(args: argparse.Namespace) -> int:
    from ..codec_files import FileDecompressor, plan_decompress

    options = _output_options(args)
    plan = plan_decompress(args.input, args.output, options)
    decompressor = FileDecompressor(args.model, options, lm_model=args.lm_model, progress=progress_bars(args),
                                    exact=not args.fast)

    def line(r: FileResult) -> str:
        return (f"{r.src} -> {r.dst}: {r.seconds:.2f} s, {r.channels} channel(s) at {r.sample_rate} Hz"
                + (" (streamed)" if r.streamed else ""))

    if plan.folder and len(plan.jobs) > 1 and _processes(args) > 1:
        decompressor.preload(job.src for job in plan.jobs)  # once, shared by the forked workers
    return _report_all(args, plan, decompressor, "decompress", line)
