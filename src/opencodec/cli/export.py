"""``opencodec export-onnx``: parse, call :func:`opencodec.export.onnx.export_onnx`, report."""

from __future__ import annotations

import argparse
import typing as tp

from ..bandwidth import DEFAULT_BANDWIDTH
from ..errors import advice_for_entropy_model, codec_advice
from .commands import command_help
from .common import bandwidth_arg, fmt_kbps, info, sigterm_as_interrupt


def add_export_parser(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``export-onnx`` sub-command."""
    onx = sub.add_parser(
        "export-onnx", parents=[common], help=command_help("export-onnx"),
        description="Write encoder_step.onnx and decoder_step.onnx (one frame in, one frame out, every "
                    "piece of streaming state an explicit input and output), encoder_start.onnx and "
                    "decoder_start.onnx (the first warm-up frames -> the initial state), offline "
                    "encoder.onnx and decoder.onnx, and meta.json (see opencodec.export.onnx). "
                    "Needs the onnx package (pip install 'opencodec[onnx]').")
    onx.add_argument("model", metavar="MODEL", help="model name or weights file (causal models only)")
    onx.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created)")
    onx.add_argument("-b", "--bandwidth", type=bandwidth_arg, default=DEFAULT_BANDWIDTH, metavar="KBPS",
                     help=f"bandwidth in kbps, which fixes the number of codebooks (default {DEFAULT_BANDWIDTH:g})")
    onx.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    onx.set_defaults(parser=onx, handler=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """``opencodec export-onnx``: a causal model -> ONNX graphs and meta.json in OUT_DIR."""
    with sigterm_as_interrupt():  # SIGTERM cleans up like Ctrl-C (no half-written export left)
        return _export_onnx(args)


def _export_onnx(args: argparse.Namespace) -> int:
    from ..export.onnx import export_onnx
    from ..model_cache import load_checked_model

    with advice_for_entropy_model(codec_advice("export-onnx", "as MODEL")):
        model = load_checked_model(args.model, args.bandwidth, streaming=True)
    model.set_target_bandwidth(args.bandwidth)
    meta = export_onnx(model, args.out_dir, force=args.force)
    info(args, f"export-onnx: {model.name}, {meta['num_codebooks']} codebooks ({fmt_kbps(args.bandwidth)} kbps), "
               f"{len(meta['state']['encoder'])} + {len(meta['state']['decoder'])} state tensors, "
               f"warm-up {meta['warmup_frames']} frames -> {args.out_dir}")
    return 0
