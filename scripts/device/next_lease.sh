#!/usr/bin/env bash
# The prepared command for the next 15-minute GPU lease (docs/training/campaign.md), one
# call with timeout_s=600: the training-throughput table (eager, then compiled; each capped
# at BENCH_SECONDS), then the campaign (scripts/device/campaign.sh; default the ablation,
# VARIANTS="a b c") for the time left of LEASE_SECONDS, less 2 minutes for unpacking and
# packing. Carry .gpu and .whl; take the weight files out of the tree first with
# scripts/device/slim_tree.sh (KEEP="opencodec_24khz.safetensors" on the first run), and back in after.
# Writes $OUT/benchmark.md, $OUT/campaign.tar.partNN.
# It first checks, in seconds, what the campaign needs (campaign.sh's CHECK_ONLY: the corpus,
# INIT_FROM or the states, every variant's overrides through the trainer's config checks) and
# stops there on a problem, before the benchmark's minutes are spent.
# Usage: scripts/device/next_lease.sh [key=value overrides for the campaign]
# Environment: LEASE_SECONDS (540), BENCH_SECONDS (150), BENCH_ARGS (extra benchmark
# arguments), VARIANTS (a b c), and everything campaign.sh reads.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LEASE_SECONDS=${LEASE_SECONDS:-540}; BENCH_SECONDS=${BENCH_SECONDS:-150}; BENCH_ARGS=${BENCH_ARGS:-}
export VARIANTS=${VARIANTS:-a b c}
source scripts/device/setup.sh
CHECK_ONLY=1 bash scripts/device/campaign.sh 1 "$@" || { echo "next_lease: the campaign's preflight failed (above): nothing run"; exit 2; }
# shellcheck disable=SC2086
{ timeout -k 10 "$BENCH_SECONDS" python3 benchmarks/train_throughput.py --amp bf16 --batch 64 --steps 10 --warmup 3 --cudnn-benchmark $BENCH_ARGS \
    || echo "eager benchmark: exit $? (124: over $BENCH_SECONDS s)"
  timeout -k 10 "$BENCH_SECONDS" python3 benchmarks/train_throughput.py --amp bf16 --batch 64 --steps 10 --warmup 3 \
    --cudnn-benchmark --compile --configs bundled $BENCH_ARGS || echo "compiled benchmark: exit $? (124: over $BENCH_SECONDS s)"
} 2>&1 | tee "$OUT/benchmark.md"
minutes=$(python3 -c "print(round(max(0.2, ($LEASE_SECONDS - $SECONDS - 120) / 60), 2))")
echo "== campaign: $minutes minutes of training for $VARIANTS"
bash scripts/device/campaign.sh "$minutes" "$@"
