"""The ``opencodec`` command line: compress, decompress and inspect ``.ecdc`` files.

::

    opencodec compress IN [OUT] [-b KBPS] [--model NAME_OR_PATH] [--lm [--lm-model NAME_OR_PATH]
                       [--lm-format deterministic|official]] [-f] [--rate HZ] [--channels N]
                       (OUT .wav/.flac: a round trip, at the input's rate and channels by default)
    opencodec decompress IN.ecdc [OUT] [--model NAME_OR_PATH] [--lm-model NAME_OR_PATH] [-f]
                         [--rescale] [--float] [--rate HZ] [--channels N]
    opencodec info FILE.ecdc [...] [--json]
    opencodec stream-encode [-m NAME_OR_PATH] [-b KBPS] [--frames-per-packet N] [--header-every N]
                            [--raw --rate HZ --channels C [--format s16le|f32le]]  < in.wav > out.ocs
    opencodec stream-decode [-m NAME_OR_PATH] [--raw] [--float]  < in.ocs > out.wav
                            (packet streams for pipes, see opencodec.stream)
    opencodec eval --models NAME_OR_PATH [...] --set DIR --out DIR [...]  (see opencodec.eval.report)
    opencodec mushra build|serve|report ...  (listening test, see opencodec.eval.mushra)
    opencodec export-onnx MODEL OUT_DIR [-b KBPS] [-f]  (ONNX step graphs, see opencodec.export.onnx)
    opencodec train-lm CONFIG [key=value ...] [--run-dir DIR]  (entropy model, see opencodec.train.lm_solver)
    opencodec tokenize INPUT... --out DIR [...] / detokenize DIR --out AUDIO_DIR  (see opencodec.cli_tokens)

IN may be a folder: it is processed recursively and the tree is kept under OUT (default:
next to the inputs). Exit status: 0 success, 1 failure (the message goes to stderr as
``opencodec: error: ...``; in folder mode every failing file is reported and the others
are still processed), 2 usage error. Outputs are never overwritten without ``-f`` and
never left half-written (temporary file + atomic rename).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import typing as tp
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from ._files import check_output, write_bytes_atomic
from .cli_tokens import add_token_parsers
from .audio import AUDIO_EXTENSIONS, convert_audio, is_audio_file, read_audio, write_audio
from .bandwidth import check_bandwidth
from .bitstream import EcdcHeader, read_header
from .compress import compress, decompress
from .errors import OpenCodecError, UnsupportedBandwidthError
from .identity import (OFFICIAL_NAMES, check_lm_for_file, check_model_for_file, lm_name_for_file,
                       model_for_file)
from .releases import CODEC_ALIAS, codec_release, codec_releases_by_hash
from .longform import compress_file_streaming, decompress_file_streaming, supports_streaming
from .model import EncodecConfig, EncodecModel
from .pretrained import (DEFAULT_MODEL, config_for_name, known_lm_models, lm_name_for_codec,
                         load_lm_model, load_model)

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM

PROG = "opencodec"
ECDC_SUFFIX = ".ecdc"
AUDIO_OUTPUT_SUFFIXES = (".wav", ".flac")
DEFAULT_BANDWIDTH = 6.0

#: Errors that are the user's or the environment's, reported without a traceback.
EXPECTED_ERRORS = (OpenCodecError, OSError, ValueError)


class UsageError(Exception):
    """An invalid option value found after parsing (exit status 2, with the usage line)."""


@dataclass
class Job:
    """One input file and the output it produces; ``conflict`` names an earlier input
    that maps to the same output (the job then fails instead of overwriting it)."""

    src: Path
    dst: Path
    conflict: Path | None = None


# ------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------
def _error(message: str) -> None:
    """Print ``opencodec: error: message`` to stderr (above any progress bar)."""
    tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    """Print ``opencodec: warning: message`` to stderr."""
    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


def _info(args: argparse.Namespace, message: str) -> None:
    """Print an informational line to stderr unless ``--quiet``."""
    if not args.quiet:
        tqdm.write(message, file=sys.stderr)


def _describe(exc: BaseException, path: Path) -> str:
    """The error message, prefixed with ``path`` unless it already names it."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    return message if str(path) in message else f"{path}: {message}"


# ------------------------------------------------------------------------------------------
# Parser
# ------------------------------------------------------------------------------------------
def _bandwidth(text: str) -> float:
    """argparse type: a positive, finite bandwidth in kbps."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid bandwidth {text!r}: expected a number of kbps") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid bandwidth {text!r}: must be a positive number of kbps")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``opencodec`` argument parser with its three sub-commands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="EnCodec neural audio codec: compress audio to .ecdc files and back.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    # Sub-commands accept -q too; SUPPRESS keeps a -q given before the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or info lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    comp = sub.add_parser(
        "compress", parents=[common], help="audio file(s) -> .ecdc",
        description="Compress audio (any format soundfile reads: WAV, FLAC, Ogg, Opus, MP3, ...) "
                    "to .ecdc. The audio is converted to the model's sample rate and channels. "
                    "If OUT ends in .wav or .flac, compress and decompress into that audio file.")
    comp.add_argument("input", type=Path, metavar="IN", help="audio file, or folder (recursive)")
    comp.add_argument("output", type=Path, nargs="?", metavar="OUT",
                      help="output .ecdc (or .wav/.flac for a round trip), or folder; "
                           "default: IN with .ecdc")
    comp.add_argument("-b", "--bandwidth", type=_bandwidth, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                      help=f"target bandwidth in kbps (default {DEFAULT_BANDWIDTH:g}); "
                           "the model decides which are supported")
    _add_model_option(comp, f"model name or weights file (default {DEFAULT_MODEL}, the current "
                            f"release; files record the release's versioned name and weights hash)")
    comp.add_argument("--lm", action="store_true",
                      help="entropy-code the codes with the codec's language model (smaller files, "
                           "slower compression and decompression)")
    comp.add_argument("--lm-model", metavar="NAME_OR_PATH",
                      help="entropy model name or weights file (implies --lm; default: the one "
                           "belonging to the model: the bundled entropy model for the bundled "
                           "codec, encodec_lm_24khz or encodec_lm_48khz for the official ones)")
    comp.add_argument("--lm-format", choices=("deterministic", "official"), default="deterministic",
                      help="entropy-coded format: 'deterministic' (default; version 1, decodes "
                           "identically on any machine and thread count, checksummed) or "
                           "'official' (version 0, readable by the official encodec package, "
                           "but its decoding depends on the machine's float arithmetic)")
    _add_output_options(comp)
    _add_rate_channels_options(comp, "round trip (OUT .wav/.flac): output sample rate in Hz "
                                     "(default: the input's)", "round trip: output channels "
                                     "(default: the input's)")
    comp.set_defaults(parser=comp, handler=cmd_compress)

    dec = sub.add_parser("decompress", parents=[common], help=".ecdc file(s) -> audio",
                         description="Decode .ecdc files to WAV (or FLAC) audio.")
    dec.add_argument("input", type=Path, metavar="IN", help=".ecdc file, or folder (recursive)")
    dec.add_argument("output", type=Path, nargs="?", metavar="OUT",
                     help="output .wav/.flac, or folder; default: IN with .wav")
    _add_model_option(dec, "model name or weights file (default: the model named in each file); "
                           "its weights hash must be the file's. For a file written before "
                           "versioned names (header 'opencodec_24khz'), the release that wrote it, "
                           "e.g. opencodec_24khz_v4")
    dec.add_argument("--lm-model", metavar="NAME_OR_PATH",
                     help="entropy model name or weights file for entropy-coded files (default: "
                          "the one belonging to the model of each file)")
    _add_output_options(dec)
    _add_rate_channels_options(dec, "output sample rate in Hz (default: the model's)",
                               "output channels, 1 = mono down-mix (default: the model's)")
    dec.set_defaults(parser=dec, handler=cmd_decompress)

    inf = sub.add_parser("info", parents=[common], help="describe .ecdc files (no model needed)",
                         description="Print what the header of each .ecdc file says.")
    inf.add_argument("inputs", type=Path, nargs="+", metavar="FILE",
                     help=".ecdc file(s) or folder(s) (recursive)")
    inf.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_model_option(inf, "weights file (or name) of a model the header's name does not "
                           "resolve to: its configuration fills in rate, duration and bitrate "
                           "for files written by it")
    inf.set_defaults(parser=inf, handler=cmd_info)
    _add_stream_parsers(sub, common)
    add_token_parsers(sub, common)

    train = sub.add_parser("train", help="train a codec (see configs/)", add_help=False,
                           description="Train an EnCodec codec: opencodec train CONFIG [key=value ...]")
    train.add_argument("rest", nargs=argparse.REMAINDER, help="CONFIG [key=value ...] [--run-dir DIR]")
    train.set_defaults(parser=train, handler=cmd_train)

    tlm = sub.add_parser("train-lm", help="train a codec's entropy model (see configs/lm_*.yaml)",
                         add_help=False,
                         description="opencodec train-lm CONFIG [key=value ...] | train-lm report ...")
    tlm.add_argument("rest", nargs=argparse.REMAINDER, help="see opencodec train-lm --help")
    tlm.set_defaults(parser=tlm, handler=cmd_train_lm)

    ev = sub.add_parser("eval", help="rate-quality report: models vs baselines on eval sets",
                        add_help=False,
                        description="opencodec eval --models ... --set DIR --out DIR [...]")
    ev.add_argument("rest", nargs=argparse.REMAINDER, help="see opencodec eval --help")
    ev.set_defaults(parser=ev, handler=cmd_eval)

    mu = sub.add_parser("mushra", help="MUSHRA listening test: build, serve, report",
                        add_help=False, description="opencodec mushra build|serve|report [...]")
    mu.add_argument("rest", nargs=argparse.REMAINDER, help="see opencodec mushra --help")
    mu.set_defaults(parser=mu, handler=cmd_mushra)

    onx = sub.add_parser(
        "export-onnx", parents=[common], help="causal model -> ONNX step graphs with explicit state",
        description="Write encoder_step.onnx and decoder_step.onnx (one frame in, one frame out, every "
                    "piece of streaming state an explicit input and output), encoder_start.onnx and "
                    "decoder_start.onnx (the first warm-up frames -> the initial state), offline "
                    "encoder.onnx and decoder.onnx, and meta.json (see opencodec.export.onnx). "
                    "Needs the onnx package (pip install 'opencodec[onnx]').")
    onx.add_argument("model", metavar="MODEL", help="model name or weights file (causal models only)")
    onx.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created)")
    onx.add_argument("-b", "--bandwidth", type=_bandwidth, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                     help=f"bandwidth in kbps, which fixes the number of codebooks (default {DEFAULT_BANDWIDTH:g})")
    onx.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    onx.set_defaults(parser=onx, handler=cmd_export_onnx)
    return parser


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """``opencodec export-onnx``: a causal model -> ONNX graphs and meta.json in OUT_DIR."""
    from .export.onnx import export_onnx
    from .stream import check_streamable

    known = config_for_name(args.model)
    if known is not None:  # fail fast, before loading (or downloading) any weights
        check_streamable(known)
        _check_bandwidth(args.bandwidth, known.name, known.target_bandwidths)
    model = load_model(args.model)
    check_streamable(model.config)
    _check_bandwidth(args.bandwidth, model.name, model.target_bandwidths)
    model.set_target_bandwidth(args.bandwidth)
    meta = export_onnx(model, args.out_dir, force=args.force)
    _info(args, f"export-onnx: {model.name}, {meta['num_codebooks']} codebooks ({_fmt_kbps(args.bandwidth)} kbps), "
                f"{len(meta['state']['encoder'])} + {len(meta['state']['decoder'])} state tensors, "
                f"warm-up {meta['warmup_frames']} frames -> {args.out_dir}")
    return 0


def cmd_mushra(args: argparse.Namespace) -> int:
    """``opencodec mushra ...``: hand the arguments to :mod:`opencodec.eval.mushra.cli`."""
    from .eval.mushra.cli import main as mushra_main

    return mushra_main(args.rest)


def cmd_eval(args: argparse.Namespace) -> int:
    """``opencodec eval ...``: hand the arguments to :mod:`opencodec.eval.report`."""
    from .eval.report import main as eval_main

    try:
        return eval_main(args.rest)
    except SystemExit as exc:  # --help or usage error
        return exc.code if isinstance(exc.code, int) else 0


def cmd_train_lm(args: argparse.Namespace) -> int:
    """``opencodec train-lm ...``: hand the arguments to :mod:`opencodec.train.lm_solver`."""
    from .train.lm_solver import main as train_lm_main

    try:
        return train_lm_main(args.rest)
    except SystemExit as exc:  # --help or usage error
        return exc.code if isinstance(exc.code, int) else 0


def cmd_train(args: argparse.Namespace) -> int:
    """``opencodec train ...``: hand the arguments to the trainer's own parser."""
    from .train.solver import main as train_main

    try:
        return train_main(args.rest)
    except SystemExit as exc:  # the trainer's --help or usage error
        return exc.code if isinstance(exc.code, int) else 0


def _add_model_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-m", "--model", metavar="NAME_OR_PATH", help=help_text)


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-r", "--rescale", action="store_true",
                        help="scale decoded audio down to a 0.99 peak instead of clipping")
    parser.add_argument("--float", dest="float32", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_rate_channels_options(parser: argparse.ArgumentParser, rate_help: str, channels_help: str) -> None:
    parser.add_argument("--rate", type=_positive_int, metavar="HZ", help=rate_help)
    parser.add_argument("--channels", type=_positive_int, metavar="N", help=channels_help)


def _to_output_format(args: argparse.Namespace, wav: torch.Tensor, sample_rate: int,
                      default_rate: int, default_channels: int) -> tuple[torch.Tensor, int]:
    """Decoded audio [C, T] converted to ``--rate``/``--channels`` (else the defaults)."""
    rate = args.rate or default_rate
    return convert_audio(wav, sample_rate, rate, args.channels or default_channels), rate


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the trainer parses its own arguments (including --help)
        return cmd_train(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["train-lm"]:  # the entropy-model trainer parses its own arguments
        return cmd_train_lm(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["eval"]:  # the evaluator parses its own arguments (including --help)
        return cmd_eval(argparse.Namespace(rest=argv[1:]))
    if argv[:1] == ["mushra"]:  # the listening test parses its own arguments (including --help)
        return cmd_mushra(argparse.Namespace(rest=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (compress, decompress, info, train, train-lm, eval or mushra)", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            # The legacy weight-norm API the official layout needs is deprecated: not the user's concern.
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            return int(args.handler(args))
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as exc:
        _error(str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


# ------------------------------------------------------------------------------------------
# Planning: which files go where
# ------------------------------------------------------------------------------------------
def _walk(root: Path, accept: tp.Callable[[Path], bool]) -> list[Path]:
    """Files under ``root`` (recursive, sorted, symlinked folders not followed) that
    ``accept`` takes; hidden files and folders (name starting with ``.``) are skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if not f.startswith(".") and accept(Path(f))]
    return found


def _plan(src: Path, out: Path | None, accept: tp.Callable[[Path], bool], out_suffix: str,
          what: str) -> list[Job]:
    """Jobs for a folder ``src``: every accepted file, mirrored under ``out`` with ``out_suffix``."""
    root = src if out is None else out
    if root.exists() and not root.is_dir():
        raise UsageError(f"input {src} is a folder, so OUT must be a folder, but {root} is a file")
    files = _walk(src, accept)
    if not files:
        raise FileNotFoundError(f"no {what} found under {src}")
    jobs, first_src = [], {}
    for f in files:  # e.g. song.wav and song.flac would both become song.ecdc
        dst = root / f.relative_to(src).with_suffix(out_suffix)
        jobs.append(Job(f, dst, first_src.get(dst)))
        first_src.setdefault(dst, f)
    return jobs


def _single_output(src: Path, out: Path | None, default_suffix: str,
                   allowed: tp.Sequence[str]) -> Path:
    """Output path of a single-file job: OUT, OUT/<name> when OUT is a folder, or IN + suffix."""
    if out is None:
        return src.with_suffix(default_suffix)
    if out.is_dir():
        return out / src.with_suffix(default_suffix).name
    if out.suffix.lower() not in allowed:
        raise UsageError(f"output {out} must end in {', '.join(allowed)}")
    return out


def _check_input(src: Path) -> None:
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")


def _check_float_flag(args: argparse.Namespace, jobs: list[Job]) -> None:
    if args.float32 and any(j.dst.suffix.lower() == ".flac" for j in jobs):
        raise UsageError("--float needs a .wav output: FLAC stores 16 or 24-bit integers only")


def _run_jobs(args: argparse.Namespace, jobs: list[Job], work: tp.Callable[[Job], None],
              verb: str) -> int:
    """Run ``work`` on each job; returns the exit status (1 if any failed).

    A single file: an expected error is reported as ``opencodec: error: ...``. A folder:
    a progress bar over files; any error of one file (even an unexpected one) is
    reported and the other files are still processed.
    """
    if not args.folder:
        (job,) = jobs
        try:
            work(job)
        except EXPECTED_ERRORS as exc:
            _error(_describe(exc, job.src))
            return 1
        return 0
    failed = 0
    with tqdm(jobs, unit="file", desc=verb, disable=args.quiet, file=sys.stderr) as bar:
        for job in bar:
            try:
                if job.conflict is not None:
                    raise FileExistsError(f"output {job.dst} would also be written from "
                                          f"{job.conflict}; skipped (rename one of them)")
                work(job)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one bad file must not stop the batch
                failed += 1
                _error(_describe(exc, job.src))
    if failed:
        _error(f"{failed} of {len(jobs)} file(s) failed")
        return 1
    _info(args, f"{verb}: {len(jobs)} file(s) done")
    return 0


# ------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _segment_progress(args: argparse.Namespace, modules: tp.Sequence[torch.nn.Module],
                      steps: int, desc: str) -> tp.Iterator[None]:
    """A progress bar advanced by each forward call of ``modules`` (one per segment), shown
    for a single file when there is more than one step to count."""
    if args.quiet or args.folder or steps <= 1:
        yield
        return
    with tqdm(total=steps, unit="segment", desc=desc, file=sys.stderr) as bar:
        def advance(*_: tp.Any) -> None:  # must return None: a hook's return value replaces the output
            bar.update(1)

        handles = [m.register_forward_hook(advance) for m in modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _make_folder(job: Job) -> None:
    """Create the output's folder (folder mode), only once there is something to write."""
    job.dst.parent.mkdir(parents=True, exist_ok=True)


def _save_audio(args: argparse.Namespace, dst: Path, wav: torch.Tensor, sample_rate: int) -> None:
    """Write decoded audio with the output options; clipping warnings go to stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_audio(dst, wav, sample_rate, bits=32 if args.float32 else 16, rescale=args.rescale)
    for warning in caught:
        _warn(f"{warning.message} [-r/--rescale scales down, --float keeps the peaks]")


#: Inputs longer than this (seconds) are processed in bounded memory (``opencodec.longform``)
#: when the model streams and a single plain ``.ecdc``/audio file is written.
STREAMING_MIN_SECONDS = 60.0


def _input_seconds(path: Path) -> float:
    """Duration of an audio file from its header; 0 when it cannot be told (the ordinary
    path then reports the problem)."""
    import soundfile as sf
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - any failure: fall back to the ordinary path
        return 0.0
    return info.frames / info.samplerate if info.samplerate > 0 else 0.0


@contextlib.contextmanager
def _progress_bar(args: argparse.Namespace, desc: str, unit: str, lazy: bool = False
                  ) -> tp.Iterator[tp.Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback driving a tqdm bar (silent with ``--quiet``);
    ``lazy``: the bar appears at the first call only (a stage that may not happen)."""
    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=0, unit=unit, desc=desc, disable=args.quiet, file=sys.stderr))
        bar = bars[0]
        bar.total = total
        bar.update(done - bar.n)

    if not lazy:
        update(0, 0)
    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _fmt_kbps(value: float) -> str:
    return f"{value:g}"


# ------------------------------------------------------------------------------------------
# compress
# ------------------------------------------------------------------------------------------
def _check_bandwidth(bandwidth: float, name: str, supported: tp.Sequence[float]) -> None:
    """A usage error (exit status 2) for a bandwidth the model does not support."""
    try:
        check_bandwidth(bandwidth, supported, name)
    except UnsupportedBandwidthError as error:
        raise UsageError(str(error)) from None


def _lm_name(lm_arg: str | None, model: EncodecModel, lm: "EntropyLM") -> str:
    """Entropy-model name for a deterministic file's header: the name it was loaded by (a
    release's versioned name, also for a file holding a release), a weights file's base
    name, or the name of the codec's own entropy model."""
    if getattr(lm, "name", None):
        return str(lm.name)
    if lm_arg is None:
        return lm_name_for_codec(model.name) or "custom"
    return lm_arg if lm_arg in known_lm_models() else Path(lm_arg).name


def cmd_compress(args: argparse.Namespace) -> int:
    """``opencodec compress``: audio file(s) -> .ecdc (or a round trip to .wav/.flac)."""
    src: Path = args.input
    _check_input(src)
    args.folder = src.is_dir()
    if args.folder:
        jobs = _plan(src, args.output, is_audio_file, ECDC_SUFFIX,
                     f"audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    else:
        dst = _single_output(src, args.output, ECDC_SUFFIX, (ECDC_SUFFIX, *AUDIO_OUTPUT_SUFFIXES))
        check_output(dst, args.force)
        jobs = [Job(src, dst)]
    _check_float_flag(args, jobs)
    if (args.rate or args.channels) and any(j.dst.suffix.lower() == ECDC_SUFFIX for j in jobs):
        raise UsageError("--rate/--channels apply to a round trip (OUT .wav or .flac); an .ecdc file "
                         "is decoded at the rate you choose with decompress --rate/--channels")
    known = config_for_name(args.model or DEFAULT_MODEL)
    if known is not None:  # fail fast, before loading any weights
        _check_bandwidth(args.bandwidth, known.name, known.target_bandwidths)
    model = load_model(args.model)
    _check_bandwidth(args.bandwidth, model.name, model.target_bandwidths)
    model.set_target_bandwidth(args.bandwidth)
    lm = None
    if args.lm or args.lm_model is not None:  # fails here, before any file, if it cannot load
        lm = load_lm_model(args.lm_model, codec=model, num_codebooks=model.num_codebooks(args.bandwidth))
    lm_arg: dict[str, tp.Any] = {} if lm is None else {"lm": lm}  # plain files: calls as they were
    if lm is not None and args.lm_format == "deterministic":
        lm_arg.update(deterministic=True, lm_name=_lm_name(args.lm_model, model, lm))

    def work_streaming(job: Job) -> None:
        with _progress_bar(args, job.src.name, "sample") as progress, \
                _progress_bar(args, "entropy coding", "frame", lazy=True) as lm_progress:
            size = compress_file_streaming(model, job.src, job.dst, args.bandwidth, progress=progress,
                                           lm_progress=lm_progress, **lm_arg)
        with open(job.dst, "rb") as fi:
            seconds = read_header(fi).audio_length / model.sample_rate
        _info(args, f"{job.src} -> {job.dst}: {seconds:.2f} s at {_fmt_kbps(args.bandwidth)} kbps "
                    f"({model.name}, streamed), {size} bytes, {size * 8 / seconds / 1000:.2f} kbps")

    def work(job: Job) -> None:
        check_output(job.dst, args.force, need_folder=not args.folder)
        if (not args.folder and job.dst.suffix.lower() == ECDC_SUFFIX
                and supports_streaming(model) and _input_seconds(job.src) > STREAMING_MIN_SECONDS):
            return work_streaming(job)
        wav, sample_rate = read_audio(job.src)
        input_rate, input_channels = sample_rate, wav.shape[0]
        wav = convert_audio(wav, sample_rate, model.sample_rate, model.channels)
        length = wav.shape[-1]
        round_trip = job.dst.suffix.lower() in AUDIO_OUTPUT_SUFFIXES
        steps = len(model.segments(length)) * (2 if round_trip else 1)
        modules = [model.encoder, model.decoder] if round_trip else [model.encoder]
        with torch.no_grad(), _segment_progress(args, modules, steps, job.src.name):
            data = compress(model, wav, bandwidth=args.bandwidth, **lm_arg)
            if round_trip:
                out, out_rate = decompress(data, model, **({} if lm is None else {"lm": lm}))
        _make_folder(job)
        if round_trip:  # back to the input's rate and channels unless --rate/--channels say otherwise
            out, out_rate = _to_output_format(args, out, out_rate, input_rate, input_channels)
            _save_audio(args, job.dst, out, out_rate)
        else:
            write_bytes_atomic(job.dst, data)
        if not args.folder:
            seconds = length / model.sample_rate
            _info(args, f"{job.src} -> {job.dst}: {seconds:.2f} s at {_fmt_kbps(args.bandwidth)} kbps "
                        f"({model.name}), {len(data)} bytes, {len(data) * 8 / seconds / 1000:.2f} kbps")

    return _run_jobs(args, jobs, work, "compress")


# ------------------------------------------------------------------------------------------
# decompress
# ------------------------------------------------------------------------------------------
class _Models:
    """Models for decompression, each loaded at most once per invocation: the ``--model``
    one, or else the one each file's header names (a failure is remembered too). Either is
    checked against the header: architecture and weights hash (:mod:`opencodec.identity`)."""

    def __init__(self, model_arg: str | None):
        self._fixed = load_model(model_arg) if model_arg is not None else None
        self._by_name: dict[tuple[str, str | None], EncodecModel | Exception] = {}

    def get(self, name: str, weights_hash: str | None = None, num_codebooks: int = 1,
            what: str = "the file") -> EncodecModel:
        """The model to decode a file whose header names model ``name`` with ``weights_hash``."""
        if self._fixed is not None:
            check_model_for_file(self._fixed, name, weights_hash, num_codebooks, what)
            return self._fixed
        key = (name, weights_hash)
        if key not in self._by_name:
            try:
                self._by_name[key] = model_for_file(name, weights_hash, 1, what, lambda n: load_model(n))
            except OpenCodecError as exc:
                self._by_name[key] = exc
        found = self._by_name[key]
        if isinstance(found, Exception):
            raise found
        check_model_for_file(found, name, weights_hash, num_codebooks, what)
        return found


class _EntropyModels:
    """Entropy models for decompression, each loaded at most once per codec and invocation:
    the ``--lm-model`` one, or else the one each file records (release by weights hash, or
    name) or its codec's own (a failure is remembered too). Whether a model covers a file's
    codebooks, and its weights hash, are checked per file."""

    def __init__(self, lm_arg: str | None):
        self._arg = lm_arg
        self._by_codec: dict[tuple[int, str | None], tuple[EncodecModel, EntropyLM | Exception]] = {}

    def get(self, codec: EncodecModel, header: EcdcHeader) -> "EntropyLM":
        """The entropy model to decode an entropy-coded file of ``codec`` with ``header``."""
        det = header.deterministic
        name = self._arg or lm_name_for_file(det.lm_name if det is not None else None,
                                             header.entropy_model_hash, codec)
        key = (id(codec), name)
        if key not in self._by_codec:
            try:
                found: EntropyLM | Exception = load_lm_model(name, codec=codec)
            except OpenCodecError as exc:
                found = exc
            self._by_codec[key] = (codec, found)  # keeps codec alive, so its id stays unique
        found = self._by_codec[key][1]
        if isinstance(found, Exception):
            raise found
        if det is None:  # a deterministic file's hash is checked when it is decoded
            check_lm_for_file(found, header.lm_hash)
        return found


def cmd_decompress(args: argparse.Namespace) -> int:
    """``opencodec decompress``: .ecdc file(s) -> WAV/FLAC."""
    src: Path = args.input
    _check_input(src)
    args.folder = src.is_dir()
    if args.folder:
        jobs = _plan(src, args.output, lambda p: p.suffix.lower() == ECDC_SUFFIX, ".wav",
                     f"{ECDC_SUFFIX} files")
    else:
        dst = _single_output(src, args.output, ".wav", AUDIO_OUTPUT_SUFFIXES)
        check_output(dst, args.force)
        jobs = [Job(src, dst)]
    _check_float_flag(args, jobs)
    models = _Models(args.model)
    lms = _EntropyModels(args.lm_model)

    def work(job: Job) -> None:
        check_output(job.dst, args.force, need_folder=not args.folder)
        with open(job.src, "rb") as fi:
            header = read_header(fi)  # a bad file fails here, before any model loads
        model = models.get(header.model_name, header.model_hash, header.num_codebooks)
        if (not args.folder and not args.rescale and supports_streaming(model)
                and args.rate in (None, model.sample_rate) and args.channels in (None, model.channels)
                and header.audio_length / model.sample_rate > STREAMING_MIN_SECONDS):
            lm = lms.get(model, header) if header.use_lm else None
            with warnings.catch_warnings(record=True) as caught, \
                    _progress_bar(args, "entropy decoding", "frame", lazy=True) as lm_progress, \
                    _progress_bar(args, job.src.name, "frame", lazy=True) as progress:
                warnings.simplefilter("always")
                length = decompress_file_streaming(job.src, job.dst, model,
                                                   bits=32 if args.float32 else 16, progress=progress,
                                                   lm=lm, lm_progress=lm_progress)
            for warning in caught:
                _warn(f"{warning.message} [-r/--rescale scales down, --float keeps the peaks]")
            _info(args, f"{job.src} -> {job.dst}: {length / model.sample_rate:.2f} s, "
                        f"{model.channels} channel(s) at {model.sample_rate} Hz (streamed)")
            return
        lm = lms.get(model, header) if header.use_lm else None
        data = job.src.read_bytes()
        steps = len(model.segments(header.audio_length))
        with torch.no_grad(), _segment_progress(args, [model.decoder], steps, job.src.name):
            wav, sample_rate = decompress(data, model, **({} if lm is None else {"lm": lm}))
        wav, sample_rate = _to_output_format(args, wav, sample_rate, sample_rate, wav.shape[0])
        _make_folder(job)
        _save_audio(args, job.dst, wav, sample_rate)
        if not args.folder:
            _info(args, f"{job.src} -> {job.dst}: {wav.shape[-1] / sample_rate:.2f} s, "
                        f"{wav.shape[0]} channel(s) at {sample_rate} Hz")

    return _run_jobs(args, jobs, work, "decompress")


# ------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------
def describe_file(path: Path, known: tuple[str, EncodecConfig] | None = None) -> dict[str, tp.Any]:
    """What an ``.ecdc`` file's header and size say, without loading any weights.

    Keys: ``file``, ``model``, ``sample_rate`` (Hz), ``channels``, ``codebooks``,
    ``bandwidth_kbps`` (nominal: codebooks x log2(bins) x frame rate), ``samples``,
    ``duration_s``, ``size_bytes``, ``bitrate_kbps`` (actual: 8 x size / duration) and
    ``entropy_coded``. Values that need the model's configuration are None for a model
    name that is not known; ``known`` = (model name, its configuration) makes one more name
    known (``info --model``). Deterministic (version 1) files add ``format_version``,
    ``lm_name``, ``lm_hash``, ``lm_scheme``, ``check_bits`` and ``check_interval`` (frames).
    """
    with open(path, "rb") as fo:
        header: EcdcHeader = read_header(fo)
    size = path.stat().st_size
    release = codec_release(header.model_name)
    facts: tuple[int, int, int, float] | None = None  # sample rate, channels, bins, frame rate
    config: EncodecConfig | None = config_for_name(header.model_name)
    if config is None and known is not None and known[0] == header.model_name:
        config = known[1]
    if config is not None:
        facts = (config.sample_rate, config.channels, config.bins, config.frame_rate)
    elif release is not None:  # a release that is not shipped: its record has the numbers
        facts = (release.sample_rate, release.channels, release.bins, release.frame_rate)
    info: dict[str, tp.Any] = {
        "file": str(path), "model": header.model_name, "model_hash": header.model_hash,
        "release": _release_note(header.model_name, header.model_hash),
        "sample_rate": None, "channels": None,
        "codebooks": header.num_codebooks, "bandwidth_kbps": None, "samples": header.audio_length,
        "duration_s": None, "size_bytes": size, "bitrate_kbps": None, "entropy_coded": header.use_lm}
    if facts is not None:
        rate, channels, bins, frame_rate = facts
        duration = header.audio_length / rate
        info.update(
            sample_rate=rate, channels=channels,
            bandwidth_kbps=header.num_codebooks * math.log2(bins) * frame_rate / 1000,
            duration_s=duration, bitrate_kbps=size * 8 / duration / 1000)
    if header.lm_hash is not None:
        info.update(lm_hash=header.lm_hash)
    det = header.deterministic
    if det is not None:
        info.update(format_version=header.version, lm_name=det.lm_name, lm_hash=det.lm_hash,
                    lm_scheme=det.scheme, check_bits=det.check_bits, check_interval=det.check_interval)
    return info


def _release_note(name: str, weights_hash: str | None) -> str:
    """What a header's model name and hash say about the weights, in words."""
    release = codec_release(name)
    if name in OFFICIAL_NAMES and weights_hash is None:
        return "official EnCodec weights"
    if weights_hash is None:
        if name == CODEC_ALIAS:
            return ("ambiguous: written before versioned names; decode with --model "
                    "opencodec_24khz_vN, the release installed when it was written")
        return "no weights hash recorded"
    if release is not None:
        where = "shipped" if release.file else f"not shipped, commit {release.commit[:7]} has it"
        if release.short_hash == weights_hash:
            return f"release {release.name} ({where})"
        return f"NOT release {release.name} (its hash is {release.short_hash}): other weights"
    matches = codec_releases_by_hash(weights_hash)
    if matches:
        return f"the weights of release {matches[0].name}"
    return "not a registered release: decode with --model PATH to its weights"


def _format_info(info: dict[str, tp.Any]) -> str:
    """Human-readable block for ``describe_file``'s dict."""
    def known(value: tp.Any, fmt: str) -> str:
        return "unknown (model not known)" if value is None else fmt.format(value)

    hashed = f"hash {info['model_hash']}, " if info["model_hash"] else ""
    lines = [
        f"file:          {info['file']}",
        f"model:         {info['model']}",
        f"weights:       {hashed}{info['release']}",
        f"sample rate:   {known(info['sample_rate'], '{} Hz')}",
        f"channels:      {known(info['channels'], '{}')}",
        f"codebooks:     {info['codebooks']}",
        f"bandwidth:     {known(info['bandwidth_kbps'], '{:g} kbps (nominal)')}",
        f"duration:      {known(info['duration_s'], '{:.3f} s')} ({info['samples']} samples)",
        f"size:          {info['size_bytes']} bytes",
        f"bitrate:       {known(info['bitrate_kbps'], '{:.2f} kbps (actual)')}",
        f"entropy model: {'yes' if info['entropy_coded'] else 'no'}",
    ]
    if "lm_hash" in info and "format_version" not in info:
        lines[-1] += f" (weights hash {info['lm_hash']})"
    if "format_version" in info:
        checks = (f"{info['check_bits']} bits every {info['check_interval']} frames, "
                  if info["check_bits"] else "")
        lines[-1] += f" (deterministic format, version {info['format_version']})"
        lines += [f"lm name:       {info['lm_name']}",
                  f"lm weights:    hash {info['lm_hash']} (fixed-point scheme {info['lm_scheme']})",
                  f"checks:        {checks}CRC-32 per segment"]
    lines.append("decodes to:    the sample rate and channels above; decompress --rate HZ --channels N "
                 "converts (a compress IN OUT.wav round trip keeps the input's rate and channels)")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """``opencodec info``: print each file's header fields, size and bitrates."""
    files: list[Path] = []
    for path in args.inputs:
        if path.is_dir():
            files += _walk(path, lambda p: p.suffix.lower() == ECDC_SUFFIX)
        else:
            files.append(path)
    if not files:
        _error(f"no {ECDC_SUFFIX} files found in {', '.join(map(str, args.inputs))}")
        return 1
    known = None
    if args.model is not None:  # only its configuration is needed
        config = config_for_name(args.model) or load_model(args.model).config
        known = (config.name, config)
    failed = 0
    for index, path in enumerate(files):
        try:
            info = describe_file(path, known)
        except EXPECTED_ERRORS as exc:
            failed += 1
            _error(_describe(exc, path))
            continue
        if args.json:
            print(json.dumps(info))
        else:
            print(("\n" if index else "") + _format_info(info))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------
# stream-encode / stream-decode (the packet container: opencodec.stream)
# ------------------------------------------------------------------------------------------
def _count(text: str) -> int:
    """argparse type: an integer in [1, 255]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected an integer") from None
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be between 1 and 255")
    return value


def _add_stream_parsers(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """The ``stream-encode`` and ``stream-decode`` sub-commands."""
    from .stream import DEFAULT_FRAMES_PER_PACKET, DEFAULT_HEADER_EVERY, RAW_FORMATS

    enc = sub.add_parser(
        "stream-encode", parents=[common], help="WAV/raw PCM on stdin -> packet stream on stdout",
        description="Encode audio from stdin as it arrives (a WAV stream, or headerless PCM with "
                    "--raw) into a packet stream on stdout, flushed packet by packet. Causal models "
                    "only. Latency ~(frames per packet + 1) x 13.3 ms at 24 kHz.")
    _add_model_option(enc, f"model name or weights file (default {DEFAULT_MODEL}); must be causal")
    enc.add_argument("-b", "--bandwidth", type=_bandwidth, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                     help=f"target bandwidth in kbps (default {DEFAULT_BANDWIDTH:g})")
    enc.add_argument("--frames-per-packet", type=_count, default=DEFAULT_FRAMES_PER_PACKET, metavar="N",
                     help=f"code frames per packet, 1-255 (default {DEFAULT_FRAMES_PER_PACKET}: 53 ms at "
                          "75 frames/s; fewer: lower latency, more overhead)")
    enc.add_argument("--header-every", type=_count, default=DEFAULT_HEADER_EVERY, metavar="N",
                     help=f"repeat the stream header every N data packets (default {DEFAULT_HEADER_EVERY}); "
                          "a receiver joining mid-stream starts at the next header")
    enc.add_argument("--raw", action="store_true", help="stdin is headerless PCM (needs --rate, --channels)")
    enc.add_argument("--rate", type=int, metavar="HZ", help="sample rate of raw input")
    enc.add_argument("--channels", type=int, metavar="C", help="channels of raw input (interleaved)")
    enc.add_argument("--format", choices=sorted(RAW_FORMATS),
                     help="sample format of raw input (default s16le)")
    enc.set_defaults(parser=enc, handler=cmd_stream_encode)

    dec = sub.add_parser(
        "stream-decode", parents=[common], help="packet stream on stdin -> WAV/raw PCM on stdout",
        description="Decode a packet stream from stdin as it arrives to a WAV stream (length fields "
                    "0xFFFFFFFF, fixed when stdout is a file) or raw PCM on stdout. Lost packets "
                    "become silence of the same duration, damaged ones are dropped, and a stream "
                    "joined mid-way starts at its next header; each is reported on stderr.")
    _add_model_option(dec, "model name or weights file (default: the model named in the stream header)")
    dec.add_argument("--raw", action="store_true", help="write headerless PCM (s16le, or f32le with --float)")
    dec.add_argument("--float", dest="float32", action="store_true",
                     help="32-bit float samples instead of 16-bit integers")
    dec.set_defaults(parser=dec, handler=cmd_stream_decode)

    srv = sub.add_parser(
        "serve", parents=[common], help="WebSocket server for live streams, with a browser page",
        description="Serve live encoding, decoding and relaying over WebSocket (ws://HOST:PORT/ws) "
                    "and a page at http://HOST:PORT/ (microphone in, decoded audio out). All streams "
                    "share one batched step per frame. Causal models only. Needs the 'serve' extra.")
    _add_model_option(srv, f"model name or weights file (default {DEFAULT_MODEL}); must be causal")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    srv.add_argument("--max-clients", type=int, default=16, metavar="N",
                     help="clients served at once; more are refused with close code 1013 (default 16)")
    srv.add_argument("--max-message", type=int, default=1 << 20, metavar="BYTES",
                     help="largest message a client may send (default 1048576); bigger: close 1009")
    srv.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                     help="close a client that sends nothing for S seconds (default 30)")
    srv.add_argument("--send-queue", type=int, default=256, metavar="N",
                     help="messages waiting for a client before it is disconnected as too slow "
                          "(default 256, ~3.4 s of relayed audio)")
    srv.add_argument("-b", "--max-bandwidth", type=_bandwidth, metavar="KBPS",
                     help="the highest bandwidth clients may ask for, and the shared encoder's "
                          "(default: the model's highest; lower is cheaper per stream)")
    srv.add_argument("--threads", type=int, default=1, metavar="N",
                     help="PyTorch threads (default 1; set OMP_WAIT_POLICY=PASSIVE on a busy machine)")
    srv.add_argument("--exact", action="store_true",
                     help="run each stream in its own batch-1 step: codes bit-identical to 'compress' "
                          "(slower with many clients)")
    srv.set_defaults(parser=srv, handler=cmd_serve)


def _binary_stdout() -> tp.BinaryIO:
    """stdout for binary data; a terminal is refused."""
    if sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal: redirect stdout to a file "
                         "or pipe it into another command")
    return sys.stdout.buffer


def _binary_stdin(what: str) -> tp.BinaryIO:
    """stdin for binary data; a terminal is refused."""
    if sys.stdin.isatty():
        raise UsageError(f"stdin is a terminal: pipe or redirect {what} into it")
    return sys.stdin.buffer


@contextlib.contextmanager
def _broken_pipe() -> tp.Iterator[None]:
    """Turn a closed stdout (the reader went away) into an ordinary error, without a second
    one when Python flushes stdout at exit."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise OSError("stdout was closed by the reading side (broken pipe)") from None


def cmd_stream_encode(args: argparse.Namespace) -> int:
    """``opencodec stream-encode``: WAV or raw PCM on stdin -> packet stream on stdout."""
    from .stream import RAW_FORMATS, PcmFormat, check_streamable, encode_stream

    raw = None
    if args.raw:
        if args.rate is None or args.channels is None:
            raise UsageError("--raw needs --rate and --channels (and --format, default s16le)")
        raw = PcmFormat(args.rate, args.channels, RAW_FORMATS[args.format or "s16le"])
    elif args.rate is not None or args.channels is not None or args.format is not None:
        raise UsageError("--rate, --channels and --format describe raw input: add --raw")
    fin, fout = _binary_stdin("WAV or raw PCM"), _binary_stdout()
    known = config_for_name(args.model or DEFAULT_MODEL)
    if known is not None:  # fail fast, before loading any weights
        check_streamable(known)
        _check_bandwidth(args.bandwidth, known.name, known.target_bandwidths)
    model = load_model(args.model)
    check_streamable(model.config)
    _check_bandwidth(args.bandwidth, model.name, model.target_bandwidths)
    with _broken_pipe():
        report = encode_stream(model, fin, fout, bandwidth=args.bandwidth, raw=raw,
                               frames_per_packet=args.frames_per_packet, header_every=args.header_every)
    seconds = report.samples / report.sample_rate
    _info(args, f"stream-encode: {seconds:.2f} s at {_fmt_kbps(args.bandwidth)} kbps ({model.name}, "
                f"{report.num_codebooks} codebooks), {report.packets} packets, {report.bytes} bytes, "
                f"{report.bytes * 8 / seconds / 1000:.2f} kbps with packet overhead")
    return 0


def cmd_stream_decode(args: argparse.Namespace) -> int:
    """``opencodec stream-decode``: packet stream on stdin -> WAV or raw PCM on stdout."""
    from .stream import StreamInfo, decode_stream

    fin, fout = _binary_stdin("a packet stream"), _binary_stdout()
    models = _Models(args.model)

    def load(info: StreamInfo) -> EncodecModel:  # the header's model, hash checked
        return models.get(*info.model, info.num_codebooks, "the stream")

    with _broken_pipe():
        report = decode_stream(fin, fout, load, raw=args.raw, float32=args.float32, warn=_warn)
    stats = report.stats
    _info(args, f"stream-decode: {report.samples / report.sample_rate:.2f} s, {report.channels} "
                f"channel(s) at {report.sample_rate} Hz; {stats.data_packets} data packets, "
                f"{stats.lost_packets} lost ({report.concealed_samples / report.sample_rate:.3f} s "
                f"concealed), {stats.damaged_regions} damaged region(s), {stats.dropped_packets} dropped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``opencodec serve``: the WebSocket server (opencodec.serve) until Ctrl-C."""
    try:
        from .serve.server import ServeLimits, run_server
    except ImportError as exc:
        raise UsageError(f"opencodec serve needs the 'serve' extra ({exc.name} is missing): "
                         "pip install 'opencodec[serve]'") from None
    try:
        limits = ServeLimits(max_clients=args.max_clients, max_message_bytes=args.max_message,
                             idle_timeout=args.idle_timeout, send_queue=args.send_queue)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    run_server(load_model(args.model), args.host, args.port, limits, batched=not args.exact,
               max_bandwidth=args.max_bandwidth, threads=args.threads, ready=lambda text: _info(args, text))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
