"""``opencodec train``, ``train-lm``, ``eval`` and ``mushra``: each hands its arguments to the
tool's own parser (which also answers ``--help``)."""

from __future__ import annotations

import argparse
import typing as tp

#: The command's name, in its messages (``opencodec: error: ...``) and usage lines. Defined
#: here, a light module (no torch) that both :mod:`.main` and :mod:`.common` import.
PROG = "opencodec"


def add_wrapper_parsers(sub: tp.Any) -> None:
    """Add the sub-commands whose tools parse their own arguments (listed in ``--help``)."""
    for name, help_text, description, handler in (
            ("train", "train a codec (see configs/)",
             "Train an EnCodec codec: opencodec train CONFIG [key=value ...]", cmd_train),
            ("train-lm", "train a codec's entropy model (see configs/lm_*.yaml)",
             "opencodec train-lm CONFIG [key=value ...] | train-lm report ...", cmd_train_lm),
            ("eval", "rate-quality report: models vs baselines on eval sets",
             "opencodec eval --models ... --set DIR --out DIR [...]", cmd_eval),
            ("mushra", "MUSHRA listening test: build, serve, report",
             "opencodec mushra build|serve|report [...]", cmd_mushra)):
        parser = sub.add_parser(name, help=help_text, add_help=False, description=description)
        rest_help = "CONFIG [key=value ...] [--run-dir DIR]" if name == "train" else f"see opencodec {name} --help"
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=rest_help)
        parser.set_defaults(parser=parser, handler=handler)


def _exit_status(run: tp.Callable[[list[str]], int], rest: list[str]) -> int:
    try:
        return run(rest)
    except SystemExit as exc:  # the tool's --help or usage error
        return exc.code if isinstance(exc.code, int) else 0


def _quieted(args: argparse.Namespace, flag: str, *already: str) -> list[str]:
    """The tool's arguments, with ``flag`` (its own "no progress bar" option) added when the
    global ``opencodec -q`` came before the command and the tool's arguments do not say it."""
    if getattr(args, "quiet", False) and not {flag, *already} & set(args.rest):
        return [*args.rest, flag]
    return list(args.rest)


def cmd_mushra(args: argparse.Namespace) -> int:
    """``opencodec mushra ...``: hand the arguments to :mod:`opencodec.eval.mushra.cli`
    (``opencodec -q mushra build``: without its progress bar)."""
    from ..eval.mushra.cli import main as mushra_main

    rest = _quieted(args, "-q", "--quiet") if args.rest[:1] == ["build"] else args.rest
    return mushra_main(rest)


def cmd_eval(args: argparse.Namespace) -> int:
    """``opencodec eval ...``: hand the arguments to :mod:`opencodec.eval.report`
    (``opencodec -q eval``: without its progress bar)."""
    from ..eval.report import main as eval_main

    return _exit_status(eval_main, _quieted(args, "-q", "--quiet"))


def cmd_train_lm(args: argparse.Namespace) -> int:
    """``opencodec train-lm ...``: hand the arguments to :mod:`opencodec.train.lm_solver`
    (``opencodec -q train-lm``, also its ``report``: without its progress bar)."""
    from ..train.lm_solver import main as train_lm_main

    return _exit_status(train_lm_main, _quieted(args, "--no-progress"))


def cmd_train(args: argparse.Namespace) -> int:
    """``opencodec train ...``: hand the arguments to the trainer's own parser (``opencodec -q
    train``: without its progress bar)."""
    from ..train.solver import main as train_main

    return _exit_status(train_main, _quieted(args, "--no-progress"))


#: Sub-commands that parse their own arguments (including ``--help``), by name.
WRAPPED: dict[str, tp.Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "train-lm": cmd_train_lm, "eval": cmd_eval, "mushra": cmd_mushra}
