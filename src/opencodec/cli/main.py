"""The ``opencodec`` entry point: the parser of every sub-command and the exit-status policy."""

from __future__ import annotations

import argparse
import importlib
import sys
import typing as tp
import warnings

from .. import __version__
from ..errors import EXPECTED_ERRORS, UsageError, print_traceback_if_asked, stdout_closed_status
from .commands import COMMANDS, PARSER_BUILDERS, command_help, command_module
from .wrappers import PROG, WRAPPED, add_wrapper_parsers

# Only light modules above, so that ``from opencodec.cli import main`` is quick. The command
# modules are imported by build_parser, which main calls where Ctrl-C already ends quietly, and
# main asks only for the module of the command it runs: ``opencodec --help`` needs none of them.


class IntermixedParser(argparse.ArgumentParser):
    """A sub-command parser that takes options between its positionals, as users write them:
    ``compress IN -b 6 OUT`` (plain argparse stops at ``-b 6`` and refuses ``OUT``). Parsers
    whose positionals argparse cannot intermix (a REMAINDER, nested sub-commands) parse as usual."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        cannot = any(action.nargs in (argparse.REMAINDER, argparse.PARSER)
                     for action in self._get_positional_actions())
        if self._intermixing or cannot:  # (argparse's intermixed parsing calls back in here)
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            args = list(sys.argv[1:] if args is None else args)
            if "--" in args:
                return self._intermixed_with_end_of_options(args, namespace)
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def _intermixed_with_end_of_options(self, args: list[str], namespace: tp.Any) -> tp.Any:
        """Intermixed parsing where ``--`` ends the options (``compress -- -lead.wav``), which
        Python 3.11's intermixed parser mishandles: the options are parsed from the arguments
        before ``--`` with the positionals set aside (as ``parse_known_intermixed_args`` does),
        then the positionals from what is left, followed by ``--`` and everything after it."""
        cut = args.index("--")
        positionals = self._get_positional_actions()
        saved = [(action.nargs, action.default) for action in positionals]
        try:
            for action in positionals:
                action.nargs, action.default = argparse.SUPPRESS, argparse.SUPPRESS
            namespace, rest = super().parse_known_args(args[:cut], namespace)
        finally:
            for action, (nargs, default) in zip(positionals, saved):
                action.nargs, action.default = nargs, default
        checked = [*self._get_optional_actions(), *self._mutually_exclusive_groups]  # (checked above)
        required = [item.required for item in checked]
        try:
            for item in checked:
                item.required = False
            return super().parse_known_args(rest + args[cut:], namespace)
        finally:
            for item, was in zip(checked, required):
                item.required = was


def build_parser(commands: tp.Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``opencodec`` argument parser with all its sub-commands.

    ``commands``: the sub-commands whose parsers are complete (their modules are imported,
    with torch where they need it); the others are listed with their help line only, as
    ``opencodec --help`` shows them, and cannot parse their options. None (the default):
    every sub-command is complete.
    """
    wanted = set(COMMANDS) if commands is None else set(commands)
    modules = {command_module(name) for name in wanted if name in COMMANDS}
    parser = argparse.ArgumentParser(
        prog=PROG, description="EnCodec neural audio codec: compress audio to .ecdc files and back.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    # Sub-commands accept -q too; SUPPRESS keeps a -q given before the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or info lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=IntermixedParser)
    for name, module in ((name, command_module(name)) for name in COMMANDS):  # in COMMANDS' order
        if name in sub.choices:  # added with an earlier command of its module
            continue
        if module in modules:
            getattr(importlib.import_module(f"{__package__}.{module}"), PARSER_BUILDERS[module])(sub, common)
        else:  # listed only
            sub.add_parser(name, help=command_help(name), add_help=False)
    add_wrapper_parsers(sub)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The sub-command an ``opencodec`` command line names: its first word that is not an
    option (the options before a sub-command, ``-q``, ``--version``, ``-h``, take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _wrapped_command(argv: list[str]) -> tuple[str, list[str], bool] | None:
    """``(command, its arguments, quiet)`` when ``argv`` runs a tool that parses its own
    arguments (:data:`WRAPPED`): its name first, or after the global ``-q``/``--quiet`` only.
    Its arguments go to it as given: through the ``opencodec`` parser, an argparse REMAINDER
    would refuse those starting with an option (``opencodec -q eval --models ...``)."""
    for i, word in enumerate(argv):
        if word in WRAPPED:
            return word, argv[i + 1:], i > 0
        if word not in ("-q", "--quiet"):
            return None
    return None


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: tp.TextIO | None = None, line: str | None = None) -> None:
    """A library warning as the command line's other messages: ``opencodec: warning: ...``
    (Python's default names the source file and line, which say nothing to a user)."""
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-commands ``parser`` knows, in the order they were added."""
    for action in parser._actions:  # argparse keeps sub-commands in a private action list
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if (wrapped := _wrapped_command(argv)) is not None:  # these tools parse their own arguments
        name, rest, quiet = wrapped
        try:
            return WRAPPED[name](argparse.Namespace(rest=rest, quiet=quiet))
        except KeyboardInterrupt as exc:  # one the tool left to us (Interrupted says what was saved)
            print(f"{PROG} {name}: error: {str(exc) or 'interrupted'}", file=sys.stderr)
            return 130
    try:
        parser = build_parser(commands=[command] if (command := _command_in(argv)) in COMMANDS else [])
        from .common import Terminated, error
    except KeyboardInterrupt:  # while the command modules load torch: as later, one line
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required ({', '.join(_command_names(parser))})", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            # The legacy weight-norm API the official layout needs is deprecated: not the user's concern.
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            warnings.showwarning = _show_warning
            return int(args.handler(args))
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed by its reader (`opencodec info ... | head`)
        return stdout_closed_status()
    except EXPECTED_ERRORS as exc:
        print_traceback_if_asked()
        error(str(exc) or type(exc).__name__)
        return 1
    except Terminated:  # SIGTERM during compress/decompress (cleaned up like Ctrl-C)
        error("terminated")
        return 143
    except KeyboardInterrupt:
        error("interrupted")
        return 130
