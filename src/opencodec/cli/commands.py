"""The ``opencodec`` sub-commands: each one's one-line help and the module that builds its parser.

Light on purpose (no torch): ``opencodec --help`` lists the commands from here, and a command
line imports only the module of the command it runs (:func:`opencodec.cli.main.build_parser`),
which loads torch (about 2 s) where the command needs it.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "PARSER_BUILDERS", "command_help", "command_module"]

#: sub-command -> (module in ``opencodec.cli`` that adds its parser, one-line help), in the
#: order ``opencodec --help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "compress": ("codec", "audio file(s) -> .ecdc"),
    "decompress": ("codec", ".ecdc file(s) -> audio"),
    "info": ("info", "describe .ecdc files (no model needed)"),
    "stream-encode": ("stream", "WAV/raw PCM on stdin -> packet stream on stdout"),
    "stream-decode": ("stream", "packet stream on stdin -> WAV/raw PCM on stdout"),
    "serve": ("serve", "WebSocket server for live streams, with a browser page"),
    "tokenize": ("tokens", "audio dataset -> Parquet shards of codes"),
    "detokenize": ("tokens", "token shards -> audio files"),
    "export-onnx": ("export", "causal model -> ONNX step graphs with explicit state"),
}

#: module -> its function ``add(sub, common)`` that adds all of that module's sub-commands.
PARSER_BUILDERS: dict[str, str] = {
    "codec": "add_codec_parsers", "info": "add_info_parser", "stream": "add_stream_parsers",
    "serve": "add_serve_parser", "tokens": "add_token_parsers", "export": "add_export_parser",
}


def command_help(name: str) -> str:
    """The one-line help of sub-command ``name`` (as ``opencodec --help`` lists it)."""
    return COMMANDS[name][1]


def command_module(name: str) -> str:
    """The module of ``opencodec.cli`` that builds sub-command ``name``'s parser."""
    return COMMANDS[name][0]
