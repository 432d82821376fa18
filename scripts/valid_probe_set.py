"""A small held-out *validation* set in the evaluation harness's layout, for choosing
between training runs by ViSQOL without touching the evaluation sets.

    python scripts/valid_probe_set.py data/small_24k     # -> data/small_24k/probe/eval_*.jsonl
    opencodec eval --models MODEL --bandwidths 6 --baselines opus6 --set data/small_24k/probe \
        --metrics si_snr mel visqol --out OUT

Presets with probe sources (``wide``, ``full``) get their probe from the corpus build
itself (speech from speakers that neither training nor evaluation has); this script makes
the older probe of a preset without them: 12 speech, 8 music and 8 general files of
``manifests/valid.jsonl`` (see :mod:`opencodec.data.probe`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from opencodec.data.probe import build_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset_dir", type=Path, help="e.g. data/small_24k (with manifests/valid.jsonl)")
    args = parser.parse_args()
    out = build_probe(args.preset_dir)
    for path in sorted(out.glob("eval_*.jsonl")):
        print(path)


if __name__ == "__main__":
    main()
