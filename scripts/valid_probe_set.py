"""A small held-out *validation* set in the evaluation harness's layout, for choosing
between training runs by ViSQOL without touching the evaluation sets.

    python scripts/valid_probe_set.py data/small_24k     # -> data/small_24k/probe/eval_*.jsonl
    opencodec eval --models MODEL --bandwidths 6 --baselines opus6 --set data/small_24k/probe \
        --metrics si_snr mel visqol --out OUT

Presets with probe sources (``wide``, ``full``) get their probe from the corpus build
itself (speech from speakers that neither training nor evaluation has); this script makes
the older probe of a preset without them: 12 speech, 8 music and 8 general files of
``manifests/valid.jsonl`` (see :mod:`opencodec.data.probe`). It refuses to replace a probe
built from probe sources unless given ``--force``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from opencodec.data.probe import build_probe, has_source_probe
from opencodec.errors import EXPECTED_ERRORS, one_line, print_traceback_if_asked

PROG = "valid_probe_set.py"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the probe; exit status 0, 1 with one line ``error: ...``, 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("preset_dir", type=Path, help="e.g. data/small_24k (with manifests/valid.jsonl)")
    parser.add_argument("--force", action="store_true",
                        help="replace a probe that the corpus build made from probe sources "
                             "(its speakers are in no training set; the replacement's are)")
    args = parser.parse_args(argv)
    try:
        if not (args.preset_dir / "manifests" / "valid.jsonl").is_file():
            raise FileNotFoundError(f"{args.preset_dir / 'manifests' / 'valid.jsonl'} does not exist: "
                                    f"give a built preset folder (e.g. data/small_24k)")
        if has_source_probe(args.preset_dir) and not args.force:
            raise FileExistsError(f"{args.preset_dir / 'probe'} was built from the corpus's probe sources "
                                  f"(speakers no training set has); replacing it with held-out training "
                                  f"files needs --force")
        out = build_probe(args.preset_dir)
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        print_traceback_if_asked()
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    for path in sorted(out.glob("eval_*.jsonl")):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
