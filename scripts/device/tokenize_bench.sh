#!/usr/bin/env bash
# The tokenize throughput table (issue 16, item 4) on a lent GPU: one run of a few minutes
# (never run on a GPU yet: 3-6 minutes is an estimate).
#
# Here, once:   bash scripts/device/tokenize_wheels.sh        (fills .whl/, ~2 MB)
#               scripts/device/slim_tree.sh out               (the bundled weights are 78 MB: the
#               tree must travel under 64 MiB; none is needed here; `slim_tree.sh in` after the call)
# Then:         run(command="bash scripts/device/tokenize_bench.sh", carry=[".whl"], timeout_s=540)
# The GPU rows come first (DEVICES, default "cuda cpu"). The benchmark gets SIGTERM after
# MAX_WALL seconds (default 470, inside timeout_s=540 with the wheels' install) and then prints
# the rows measured so far, marked PARTIAL, so that a run cut short still returns a table.
#
# Prints the table (and writes it to $OUT/tokenize_bench.md): on the GPU, fp32 and bf16, the
# official package file by file, the transformers padded-batch loop and opencodec tokenize
# over FILES (default 400) files of 1-30 s (~1.7 h of audio, so start-up costs amortise) cut from the repository's real
# speech at mixed rates and channel counts; on the CPU, CPU_FILES (default 16) of them with 1 and
# 2 processes of 1 thread. Every row says how many codes equal file-by-file encoding; an extra fp32
# row per device tokenises one file per batch (if batched codes differ on the GPU, this row shows
# whether batch size is the cause and what exact codes cost there).
# DEVICES, FILES, CPU_FILES, MAX_SECONDS shrink it for a dry run on the CPU here:
#   SKIP_WHEELS=1 DEVICES=cpu FILES=3 CPU_FILES=3 MAX_SECONDS=3 PATH=/work/main/.venv/bin:$PATH bash scripts/device/tokenize_bench.sh
# Record the table with this command and the device line in docs/BENCHMARKS.md.
set -euo pipefail
source scripts/device/setup.sh
python3 -c "import importlib.util as u, pyarrow, soundfile, soxr; assert u.find_spec('encodec'), 'the official encodec package is missing: see scripts/device/tokenize_wheels.sh'; print('pyarrow', pyarrow.__version__, 'transformers', 'yes' if u.find_spec('transformers') else 'NO: system (b) skipped')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
OUT=${OUT:-/tmp/tokenize_bench}
mkdir -p "$OUT"
timeout -k 20 "${MAX_WALL:-470}" \
python3 benchmarks/tokenize_throughput.py --files "${FILES:-400}" --cpu-files "${CPU_FILES:-16}" \
  --devices ${DEVICES:-cuda cpu} --dtypes fp32 bf16 --cpu-processes 1 2 --threads 1 \
  --max-seconds "${MAX_SECONDS:-30}" --batch-seconds "${BATCH_SECONDS:-600}" --one-file-batches --work /tmp/tokbench 2> >(tee "$OUT/stderr.log" >&2) \
  | tee "$OUT/tokenize_bench.md"
