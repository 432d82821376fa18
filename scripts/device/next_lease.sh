#!/usr/bin/env bash
# The prepared command for the next 15-minute GPU lease (docs/training/campaign.md), one
# call with timeout_s=600: the training-throughput table (eager, then compiled; each capped
# at BENCH_SECONDS), then the campaign (scripts/device/campaign.sh; default the ablation,
# VARIANTS="a b c") until LEASE_SECONDS after this script's start: that is campaign.sh's
# DEADLINE, so its trainers stop (or are stopped) and its packing ends by then, whatever the
# benchmark and the unpacking took (LEASE_SECONDS 540 leaves 60 s of the call's 600). Carry
# .gpu and .whl; take the weight files out of the tree first with
# scripts/device/slim_tree.sh (KEEP="opencodec_24khz.safetensors" on the first run), and back in after.
# Writes $OUT/benchmark.md, $OUT/campaign.tar.partNN.
# It first checks, in seconds, what the campaign needs (campaign.sh's CHECK_ONLY: the corpus,
# INIT_FROM or the states, every variant's overrides through the trainer's config checks) and
# stops there on a problem, before the benchmark's minutes are spent.
# Usage: scripts/device/next_lease.sh [key=value overrides for the campaign]
# Environment: LEASE_SECONDS (540), BENCH_SECONDS (150), BENCH_ARGS (extra benchmark
# arguments), VARIANTS (a b c), and everything campaign.sh reads (PACK_SECONDS, FINISH_SECONDS:
# the end of its schedule; DEADLINE is set here).
started=$(date +%s)  # the lease's clock: the campaign must have packed by started + LEASE_SECONDS
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LEASE_SECONDS=${LEASE_SECONDS:-540}; BENCH_SECONDS=${BENCH_SECONDS:-150}; BENCH_ARGS=${BENCH_ARGS:-}
[[ "$LEASE_SECONDS" =~ ^(0|[1-9][0-9]*)$ ]] || { echo "next_lease: LEASE_SECONDS must be a whole number of seconds, got '$LEASE_SECONDS'"; exit 2; }
deadline=$((started + LEASE_SECONDS))
export VARIANTS=${VARIANTS:-a b c}
source scripts/device/setup.sh
CHECK_ONLY=1 DEADLINE=$deadline bash scripts/device/campaign.sh auto "$@" \
  || { echo "next_lease: the campaign's preflight failed (above): nothing run"; exit 2; }
# shellcheck disable=SC2086
{ timeout -k 10 "$BENCH_SECONDS" python3 benchmarks/train_throughput.py --amp bf16 --batch 64 --steps 10 --warmup 3 --cudnn-benchmark $BENCH_ARGS \
    || echo "eager benchmark: exit $? (124: over $BENCH_SECONDS s)"
  timeout -k 10 "$BENCH_SECONDS" python3 benchmarks/train_throughput.py --amp bf16 --batch 64 --steps 10 --warmup 3 \
    --cudnn-benchmark --compile --configs bundled $BENCH_ARGS || echo "compiled benchmark: exit $? (124: over $BENCH_SECONDS s)"
} 2>&1 | tee "$OUT/benchmark.md"
echo "== campaign: $((deadline - $(date +%s))) s left of LEASE_SECONDS=$LEASE_SECONDS for $VARIANTS (unpacking, training, packing)"
DEADLINE=$deadline bash scripts/device/campaign.sh auto "$@"
