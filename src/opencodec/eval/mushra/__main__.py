"""``python -m opencodec.eval.mushra build|serve|report`` (same as ``opencodec mushra``)."""

import sys

from .cli import main

sys.exit(main(prog="python -m opencodec.eval.mushra"))
