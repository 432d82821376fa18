"""``opencodec stream-encode`` / ``stream-decode``: parse, call :mod:`opencodec.stream`, report."""

from __future__ import annotations

import argparse
import sys
import typing as tp

from ..argtypes import channels_arg, sample_rate_arg
from ..bandwidth import DEFAULT_BANDWIDTH
from ..errors import advice_for_entropy_model, codec_advice
from ..releases import DEFAULT_MODEL
from ..stream.defaults import DEFAULT_FRAMES_PER_PACKET, DEFAULT_HEADER_EVERY, RAW_FORMATS
from .commands import command_help
from .common import (UsageError, add_mode_options, add_model_option, bandwidth_arg,
                     fmt_kbps, info, int_in, warn)

if tp.TYPE_CHECKING:  # the command's library (and torch) load when it runs, not for --help
    from ..model import EncodecModel
    from ..stream import StreamInfo


def add_stream_parsers(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``stream-encode`` and ``stream-decode`` sub-commands."""
    enc = sub.add_parser(
        "stream-encode", parents=[common], help=command_help("stream-encode"),
        description="Encode audio from stdin as it arrives (a WAV stream, or headerless PCM with "
                    "--raw) into a packet stream on stdout, flushed packet by packet. Causal models "
                    "only. Latency ~(frames per packet + 1) x 13.3 ms at 24 kHz.")
    add_model_option(enc, f"model name or weights file (default {DEFAULT_MODEL}); must be causal")
    enc.add_argument("-b", "--bandwidth", type=bandwidth_arg, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                     help=f"target bandwidth in kbps (default {DEFAULT_BANDWIDTH:g})")
    enc.add_argument("--frames-per-packet", type=int_in(1, 255), default=DEFAULT_FRAMES_PER_PACKET, metavar="N",
                     help=f"code frames per packet, 1-255 (default {DEFAULT_FRAMES_PER_PACKET}: 53 ms at "
                          "75 frames/s; fewer: lower latency, more overhead)")
    enc.add_argument("--header-every", type=int_in(1, 255), default=DEFAULT_HEADER_EVERY, metavar="N",
                     help=f"repeat the stream header every N data packets, 1-255 (default {DEFAULT_HEADER_EVERY}); "
                          "a receiver joining mid-stream starts at the next header")
    enc.add_argument("--raw", action="store_true", help="stdin is headerless PCM (needs --rate, --channels)")
    enc.add_argument("--rate", type=sample_rate_arg, metavar="HZ", help="sample rate of raw input")
    enc.add_argument("--channels", type=channels_arg, metavar="C",
                     help="channels of raw input (interleaved), 1-64")
    enc.add_argument("--format", choices=sorted(RAW_FORMATS),
                     help="sample format of raw input (default s16le)")
    add_mode_options(enc, fast_default=True)
    enc.set_defaults(parser=enc, handler=cmd_stream_encode)

    dec = sub.add_parser(
        "stream-decode", parents=[common], help=command_help("stream-decode"),
        description="Decode a packet stream from stdin as it arrives to a WAV stream (length fields "
                    "0xFFFFFFFF, fixed when stdout is a file) or raw PCM on stdout. Lost packets "
                    "become silence of the same duration, damaged ones are dropped, and a stream "
                    "joined mid-way starts at its next header; each is reported on stderr.")
    add_model_option(dec, "model name or weights file (default: the model named in the stream header)")
    dec.add_argument("--raw", action="store_true", help="write headerless PCM (s16le, or f32le with --float)")
    dec.add_argument("--float", dest="float32", action="store_true",
                     help="32-bit float samples instead of 16-bit integers")
    add_mode_options(dec, fast_default=True)
    dec.set_defaults(parser=dec, handler=cmd_stream_decode)


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


def cmd_stream_encode(args: argparse.Namespace) -> int:
    """``opencodec stream-encode``: WAV or raw PCM on stdin -> packet stream on stdout."""
    from ..model_cache import load_checked_model
    from ..stream import PcmFormat, encode_stream
    from ..threads import use_live_threads

    raw = None
    if args.raw:
        if args.rate is None or args.channels is None:
            raise UsageError("--raw needs --rate and --channels (and --format, default s16le)")
        raw = PcmFormat(args.rate, args.channels, RAW_FORMATS[args.format or "s16le"])
    elif args.rate is not None or args.channels is not None or args.format is not None:
        raise UsageError("--rate, --channels and --format describe raw input: add --raw")
    fin, fout = _binary_stdin("WAV or raw PCM"), _binary_stdout()
    use_live_threads()  # no spinning threads against other work (see opencodec.threads)
    with advice_for_entropy_model(codec_advice("stream-encode")):
        model = load_checked_model(args.model, args.bandwidth, streaming=True)
    model.exact = not args.fast
    # a closed stdout (`... | head -c 100`) raises BrokenPipeError: cli/main.py exits quietly
    # with 141, as ls or grep (and every other command) do
    report = encode_stream(model, fin, fout, bandwidth=args.bandwidth, raw=raw,
                           frames_per_packet=args.frames_per_packet, header_every=args.header_every)
    seconds = report.samples / report.sample_rate
    info(args, f"stream-encode: {seconds:.2f} s at {fmt_kbps(args.bandwidth)} kbps ({model.name}, "
               f"{report.num_codebooks} codebooks), {report.packets} packets, {report.bytes} bytes, "
               f"{report.bytes * 8 / seconds / 1000:.2f} kbps with packet overhead")
    return 0


def _stream_models(model_arg: str | None, exact: bool) -> tp.Callable[["StreamInfo"], "EncodecModel"]:
    """``load(info)`` for :func:`opencodec.stream.decode_stream`: the model a stream header
    names, or ``-m`` checked against it (weights hash), by
    :class:`~opencodec.model_cache.CodecModels`. A ``-m`` name (official, a release) is loaded
    only once a header has arrived and does not rule it out: no download of weights that
    would then be refused. A weights file (or an unknown name, or an entropy model's, refused
    with advice naming ``-m``) loads at once, so that a bad one is an error before any input."""
    from ..model_cache import CodecModels

    with advice_for_entropy_model(codec_advice("stream-decode")):
        models = CodecModels(model_arg, exact=exact)

    def load(info: "StreamInfo") -> "EncodecModel":  # the header's model, hash checked
        return models.get(*info.model, info.num_codebooks, "the stream")
    return load


def cmd_stream_decode(args: argparse.Namespace) -> int:
    """``opencodec stream-decode``: packet stream on stdin -> WAV or raw PCM on stdout."""
    from ..stream import decode_stream
    from ..threads import use_live_threads

    fin, fout = _binary_stdin("a packet stream"), _binary_stdout()
    use_live_threads()
    load = _stream_models(args.model, exact=not args.fast)

    report = decode_stream(fin, fout, load, raw=args.raw, float32=args.float32, warn=warn)  # see above: 141
    stats = report.stats
    info(args, f"stream-decode: {report.samples / report.sample_rate:.2f} s, {report.channels} "
               f"channel(s) at {report.sample_rate} Hz; {stats.data_packets} data packets, "
               f"{stats.lost_packets} lost ({report.concealed_samples / report.sample_rate:.3f} s "
               f"concealed), {stats.damaged_regions} damaged region(s), {stats.dropped_packets} dropped")
    return 0
