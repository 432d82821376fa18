"""``opencodec info``: parse, describe each file (:mod:`opencodec.ecdc_info`), print."""

from __future__ import annotations

import argparse
import json
import typing as tp
from pathlib import Path

from ..errors import EXPECTED_ERRORS, advice_for_entropy_model, codec_advice
from ..file_jobs import check_input, find_files
from .commands import command_help
from .common import add_model_option, describe, error, warn


def add_info_parser(sub: tp.Any, common: argparse.ArgumentParser) -> None:
    """Add the ``info`` sub-command."""
    inf = sub.add_parser("info", parents=[common], help=command_help("info"),
                         description="Print what the header of each .ecdc file says.")
    inf.add_argument("inputs", type=Path, nargs="+", metavar="FILE",
                     help=".ecdc file(s) or folder(s) (recursive)")
    inf.add_argument("--json", action="store_true", help="one JSON object per line")
    add_model_option(inf, "weights file (or name) of a model the header's name does not "
                          "resolve to: its configuration fills in rate, duration and bitrate "
                          "for files written by it")
    inf.set_defaults(parser=inf, handler=cmd_info)


def format_info(info: dict[str, tp.Any]) -> str:
    """Human-readable block for :func:`opencodec.ecdc_info.describe_file`'s dict."""
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
        f"duration:      {known(info['duration_s'], '{:.3f} s')} ({samples(info['samples'])})",
        f"size:          {info['size_bytes']} bytes",
        f"bitrate:       {known(info['bitrate_kbps'], '{:.2f} kbps (actual)')}",
        f"entropy model: {'yes' if info['entropy_coded'] else 'no'}",
    ]
    missing = info["body_bytes_missing"]
    if missing is not None:
        lines.insert(-1, "complete:      " + ("yes" if missing == 0 else f"NO, {damage(missing)}"))
    elif not info["entropy_coded"]:  # a plain body of a model that is not known
        lines.insert(-1, "complete:      unknown (model not known: pass -m/--model PATH, the weights "
                         "that wrote it)")
    elif info["entropy_coded"]:
        short = lm_body_short(info)
        lines.insert(-1, "complete:      " + (f"NO, {short}" if short else
                                              "not checked (entropy coded: only decoding tells)"))
    if "lm_hash" in info and "format_version" not in info:
        lines[-1] += f" (weights hash {info['lm_hash']})"
    if "format_version" in info:
        checks = (f"{info['check_bits']} bits every {info['check_interval']} frames, "
                  if info["check_bits"] else "")
        lines[-1] += f" (deterministic format, version {info['format_version']})"
        lines += [f"lm name:       {info['lm_name']}",
                  f"lm weights:    hash {info['lm_hash']} (fixed-point scheme {info['lm_scheme']})",
                  f"checks:        {checks}CRC-32 per segment"]
    lines.append(decodes_to(info))
    return "\n".join(lines)


def samples(count: int) -> str:
    """``1 sample``, ``2 samples``: a sample count in words."""
    return f"{count} sample" if count == 1 else f"{count} samples"


def decodes_to(info: dict[str, tp.Any]) -> str:
    """The ``decodes to:`` line: the model's sample rate and channels when the model is known,
    else that they are those of the weights that wrote the file (only they tell)."""
    converts = ("decompress --rate HZ --channels N converts (a compress IN OUT.wav round trip keeps "
                "the input's rate and channels)")
    if info["sample_rate"] is None or info["channels"] is None:
        return ("decodes to:    the sample rate and channels of the model that wrote it (not known "
                f"here: decompress with --model PATH to its weights); {converts}")
    return f"decodes to:    the sample rate and channels above; {converts}"


def cmd_info(args: argparse.Namespace) -> int:
    """``opencodec info``: print each file's header fields, size and bitrates."""
    from ..ecdc_info import ECDC_SUFFIX, describe_file, is_ecdc_file, known_fits, known_model
    from ..model_config import config_for_name

    files = find_files(args.inputs, is_ecdc_file)
    if not files:
        error(f"no {ECDC_SUFFIX} files found in {', '.join(map(str, args.inputs))}")
        return 1
    with advice_for_entropy_model(codec_advice("info")):
        known = None if args.model is None else known_model(args.model)
    failed = 0
    unused: list[tuple[Path, str]] = []  # files whose header names another model than -m's
    other_weights: list[tuple[Path, str]] = []  # files that name it with another weights hash
    for index, path in enumerate(files):
        try:
            check_input(path)  # "input X does not exist", as compress and decompress say
            info = describe_file(path, known)
        except EXPECTED_ERRORS as exc:
            failed += 1
            error(describe(exc, path))
            continue
        if known is not None and not known_fits(known, info["model"], info["model_hash"]):
            if info["model"] != known.name:
                unused.append((path, info["model"]))
            elif config_for_name(known.name) is None:  # a known name's files: described by its name
                other_weights.append((path, info["model_hash"]))
        if args.json:
            print(json.dumps(info))
        else:
            print(("\n" if index else "") + format_info(info))
        if info["body_bytes_missing"]:  # described, but damaged: say so and fail
            failed += 1
            error(f"{path}: " + damage(info["body_bytes_missing"]))
        elif lm_body_short(info):
            failed += 1
            error(f"{path}: " + lm_body_short(info))
    if known is not None and unused:
        warn(unused_model_message(args.model, known[0], unused, len(files)))
    if known is not None and other_weights:
        warn(other_weights_message(args.model, known.name, known.weights_hash or "", other_weights, len(files)))
    return 1 if failed else 0


def unused_model_message(model_arg: str, name: str, unused: list[tuple[Path, str]], total: int) -> str:
    """The one warning for ``info -m`` when files' headers name another model than ``name``
    (the model ``model_arg`` gives): it describes only the files that name it."""
    path, other = unused[0]
    given = repr(model_arg) if model_arg == name else f"{model_arg!r} (model {name!r})"
    which = (f"{path}, whose header names model {other!r}" if len(unused) == 1 else
             f"{len(unused)} of {total} files, whose headers name another model (e.g. {path}: {other!r})")
    return f"-m/--model {given} was not used for {which}: it describes only files that name it"


def other_weights_message(model_arg: str, name: str, weights_hash: str, other: list[tuple[Path, str]],
                          total: int) -> str:
    """The one warning for ``info -m`` when files' headers name its model ``name`` but record
    another weights hash than its ``weights_hash``: other weights wrote them, so its
    configuration does not describe them (decompress refuses it for them)."""
    path, recorded = other[0]
    which = (f"{path}, whose header records weights hash {recorded}" if len(other) == 1 else
             f"{len(other)} of {total} files, whose headers record other weights hashes (e.g. {path}: {recorded})")
    return (f"-m/--model {model_arg!r} (model {name!r}, weights hash {weights_hash}) was not used for "
            f"{which}: other weights of that name wrote it; pass their weights file")


def lm_body_short(info: dict[str, tp.Any]) -> str:
    """Why an entropy-coded body is surely truncated (shorter than the lower bound for its
    frames, :func:`opencodec.bitstream.min_lm_body_size`), else ""."""
    minimum = info.get("lm_body_min_bytes")
    if minimum is None or info["body_bytes"] >= minimum:
        return ""
    return (f"truncated: the entropy-coded body has {info['body_bytes']} bytes, and "
            f"{samples(info['samples'])} x {info['codebooks']} codebooks need at least {minimum}")


def damage(missing: int) -> str:
    """``body_bytes_missing`` of a damaged file, in words."""
    return f"truncated: {missing} bytes missing" if missing > 0 else f"{-missing} bytes after the end"
