#!/usr/bin/env bash
# Run HERE (with network to the package index), in the repository root, before
# scripts/device/tokenize_bench.sh: fills .whl/ with the wheels the GPU image lacks for the
# tokenize benchmark (soundfile, cffi, pycparser, soxr for setup.sh; the official encodec
# package, built from its sdist, for system (a)). pyarrow, pandas, einops, transformers and
# torch are in the image (see /work/.library/device/KINDS.md). About 2 MB.
set -euo pipefail
EXCLUDE=$(git rev-parse --git-path info/exclude)
grep -qx "/.whl/" "$EXCLUDE" 2>/dev/null || echo /.whl/ >> "$EXCLUDE"
PY=${PY:-python3}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0
"$PY" -m pip wheel -q --no-deps --no-build-isolation encodec==0.1.1 -w .whl
ls -la .whl
