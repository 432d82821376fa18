#!/usr/bin/env bash
# One GPU run of the codec training campaign (docs/training/campaign.md): unpack the corpus
# and the last campaign state, resume, train to a wall-clock budget (the trainer stops
# cleanly, validates, checkpoints and exports), pack what the next run needs, and return it
# as at most 8 files of 15 MiB under $OUT. A run that fails half-way returns the state of
# its last checkpoint (log.checkpoint_every), or nothing: the committed state is untouched.
#
# Usage: scripts/device/campaign.sh MINUTES [key=value overrides for every variant]
#   MINUTES: the training budget (max_minutes); the device command also spends ~1 min
#   unpacking and ~1 min packing, so give the call timeout_s >= 60 * (MINUTES + 3).
# Environment:
#   CONFIG      trainer config (default configs/opencodec_cpu_24khz.yaml, the bundled size)
#   STATE       folder of the last state, one sub-folder per variant holding state.pt.partNN
#               (default docs/training/campaign/state: the committed state travels with
#               the tree); a variant without one starts from INIT_FROM
#   INIT_FROM   starting weights of a new variant (default the bundled model; empty: a
#               fresh model as the config builds it)
#   VARIANTS    "main" (default) or several, trained side by side on the one GPU:
#                 main  the config as it is (plus the overrides)
#                 a     no adversary
#                 b     MS-STFT discriminator with the balancer (the paper's recipe)
#                 c     the adversary without the balancer (weighted sum of the losses)
#               b and c start the adversary (32 filters) at the run's first step, with DISC_WARMUP
#               steps of discriminator alone on the frozen generator (default 300) and
#               the discriminator's rate LR_DISC (default 1e-4)
#   RECIPE      overrides before the arguments, for every variant (default stage 4's
#               fine-tuning recipe of the bundled model: "losses.l1=0.1 mel_alpha=audiocraft
#               quantizer.warmup_steps=0 quantizer.threshold_ema_dead_code=0"; set it
#               empty to train the config as it is)
#   STEPS       if set, every variant trains to this many steps (equal compute in
#               generator updates), still within MINUTES
#   MAX_STATE_MB  budget of each variant's packed state (default 33 / number of variants;
#               weights are always kept, even over it, then Adam moments and the EMA copy
#               if they fit)
#   DEVICE (cuda), WORKERS (loader processes, 12), WORK (/tmp/campaign), SKIP_WHEELS=1
#   where the wheels are installed (see scripts/device/setup.sh)
#   CHECK_ONLY=1  check everything a run needs and stop, in seconds, before any training: the
#               variants, CONFIG, the corpus, each variant's state or INIT_FROM, and every
#               variant's whole argument list through the trainer's config parser and value
#               checks (a typo such as optim.batch_sise=64 is refused with the closest key).
#               scripts/device/next_lease.sh runs it before its benchmark, so that a mistake
#               costs seconds of a lease, not the benchmark's minutes.
#   HARD_STOP_SECONDS  a trainer still running this long after the trainers start (default
#               60 * MINUTES + 60: the trainers stop themselves at MINUTES) gets SIGTERM (it
#               checkpoints its last whole step and exits 143), and SIGKILL 30 s later, so that
#               the packing below always runs before the device call's timeout.
# Exit status: 0 when every variant's trainer ended normally (or at the hard stop, with a
# checkpoint), 1 when one failed (its log's last lines are printed; what there is is packed all
# the same), 2 for a usage or preflight error.
# Writes $OUT/campaign.tar.partNN (join with cat; scripts/device/campaign_commit.sh files
# it into docs/training/campaign/): per variant its state (STATE layout), metrics.jsonl,
# config.json, train.log, valid.jsonl (the trainer's validations) and the float16
# inference-only export.
set -uo pipefail
minutes=${1:?minutes}; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
CONFIG=${CONFIG:-configs/opencodec_cpu_24khz.yaml}; STATE=${STATE:-docs/training/campaign/state}
INIT_FROM=${INIT_FROM-src/opencodec/weights/opencodec_24khz.safetensors}  # set empty: a fresh model
VARIANTS=${VARIANTS:-main}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-12}; WORK=${WORK:-/tmp/campaign}
DISC_WARMUP=${DISC_WARMUP:-300}; LR_DISC=${LR_DISC:-1e-4}
RECIPE=${RECIPE-losses.l1=0.1 mel_alpha=audiocraft quantizer.warmup_steps=0 quantizer.threshold_ema_dead_code=0}
n_variants=$(wc -w <<<"$VARIANTS")
MAX_STATE_MB=${MAX_STATE_MB:-$(python3 -c "print(33 / $n_variants)")}

# what every variant needs, checked before anything slow (bash only: no Python yet)
preflight() {
  local problems=0 v
  for v in $VARIANTS; do
    case $v in main|a|b|c) ;; *) echo "preflight: unknown variant $v (main, a, b, c)"; problems=1 ;; esac
  done
  [ -f "$CONFIG" ] || { echo "preflight: no config file $CONFIG"; problems=1; }
  [ -f .gpu/corpus.tar ] || [ -d .gpu/corpus/manifests ] || {
    echo "preflight: no corpus: .gpu/corpus.tar (or .gpu/corpus) is missing; pack it here with scripts/device/pack_corpus.py and carry .gpu"
    problems=1; }
  for v in $VARIANTS; do
    if [ -f "$STATE/$v/state.json" ]; then
      ls "$STATE/$v"/state.pt.part* >/dev/null 2>&1 || { echo "preflight: $STATE/$v has state.json but no state.pt.partNN"; problems=1; }
    elif [ -n "$INIT_FROM" ] && [[ "$INIT_FROM" == */* || "$INIT_FROM" == *.safetensors || "$INIT_FROM" == *.th ]] \
        && [ ! -f "$INIT_FROM" ]; then
      echo "preflight: $v has no state in $STATE/$v and INIT_FROM=$INIT_FROM is not a file (slim_tree.sh out without KEEP=$(basename "$INIT_FROM")?)"
      problems=1
    fi
  done
  return $problems
}
preflight || exit 2

source scripts/device/setup.sh
[ -n "${CHECK_ONLY:-}" ] || unpack_corpus "$WORK/corpus" || exit 1

common=(device="$DEVICE" max_minutes="$minutes"
  "data.train=[$WORK/corpus/manifests/train.jsonl]" "data.valid=[$WORK/corpus/manifests/valid.jsonl]"
  "data.augment.noise_manifests=[$WORK/corpus/manifests/train_noise.jsonl]" data.num_workers="$WORKERS"
  log.tensorboard=false)
[ -n "${STEPS:-}" ] && common+=(optim.steps="$STEPS")
adversary="adversarial.enabled=true adversarial.start_step=0 adversarial.filters=32 adversarial.disc_warmup_steps=$DISC_WARMUP optim.lr_disc=$LR_DISC"
declare -A extra=(
  [main]=""
  [a]="adversarial.enabled=false"
  [b]="$adversary balancer.enabled=true"
  [c]="$adversary balancer.enabled=false"
)
variant_start() {  # the trainer's starting point for variant $1: its state, else INIT_FROM
  start=()
  [ -f "$STATE/$1/state.json" ] || { [ -n "$INIT_FROM" ] && start=(init_from="$INIT_FROM"); }
}
if [ -n "${CHECK_ONLY:-}" ]; then
  # every variant's argument list, as the trainer would read it, through the trainer's own parser
  # and value checks (nothing is built or written; the manifests are checked once unpacked)
  lists=()  # "::VARIANT" then that variant's trainer arguments, for each variant
  for v in $VARIANTS; do
    variant_start "$v"
    # shellcheck disable=SC2086
    lists+=("::$v" "$CONFIG" "${common[@]}" "${start[@]}" $RECIPE ${extra[$v]} "$@")
  done
  STATE="$STATE" python3 - "${lists[@]}" <<'PY' || exit 2
import argparse, os, sys
from pathlib import Path
import torch
from opencodec.errors import OpenCodecError
from opencodec.model import EncodecConfig
from opencodec.train.campaign import read_parts
from opencodec.train.config import parse_run_arguments
from opencodec.train.config_checks import check_codec_checkpoint, check_codec_config
from opencodec.train.step import autocast_for
variants: list[list[str]] = []
for arg in sys.argv[1:]:
    if arg.startswith("::"):
        variants.append([arg[2:]])
    else:
        variants[-1].append(arg)
for name, *argv in variants:
    try:
        args, cfg = parse_run_arguments(argparse.ArgumentParser(prog="opencodec train"), argv, "config")
        check_codec_config(cfg)
        autocast_for(cfg.get("amp", "none"), torch.device("cpu"))
        if (cfg.get("data") or {}).get("loader", "workers") not in ("workers", "device"):
            raise ValueError(f"data.loader: expected 'workers' or 'device', got {cfg['data']['loader']!r}")
        state = Path(os.environ["STATE"]) / name
        if (state / "state.json").is_file():  # the resume's architecture check, as the trainer makes it
            check_codec_checkpoint(state / "state.pt.partNN", read_parts(state), EncodecConfig.from_dict(cfg["model"]))
    except (OpenCodecError, ValueError, SystemExit) as exc:  # SystemExit: argparse said it (usage + error)
        if not isinstance(exc, SystemExit):
            print(f"opencodec train: error: {exc}", file=sys.stderr)
        print(f"preflight: variant {name} refused")
        sys.exit(2)
PY
  echo "preflight ok: $VARIANTS with $CONFIG"
  exit 0
fi

pids=()
for v in $VARIANTS; do
  run="$WORK/run_$v"; mkdir -p "$run"
  variant_start "$v"
  if [ -f "$STATE/$v/state.json" ]; then
    python3 -m opencodec.train.campaign unpack "$STATE/$v" "$run" --force || exit 1
  else
    echo "== $v: no state in $STATE/$v, starting from ${INIT_FROM:-a fresh model}"
  fi
  # shellcheck disable=SC2086
  python3 -m opencodec.train "$CONFIG" "${common[@]}" "${start[@]}" $RECIPE ${extra[$v]} "$@" \
    --run-dir "$run" --no-progress >"$WORK/train_$v.log" 2>&1 &
  pids+=($!)
done
# The trainers stop themselves at MINUTES (set-up included). A trainer still running well after
# that (a step that hangs) gets SIGTERM, which checkpoints its last whole step, then SIGKILL:
# the packing must run before the device call's own timeout kills everything.
hard_stop=${HARD_STOP_SECONDS:-$(python3 -c "print(int(60 * $minutes + 60))")}
( trap 'kill $nap 2>/dev/null; exit 0' TERM
  sleep "$hard_stop" & nap=$!; wait $nap
  echo "== hard stop after $hard_stop s: SIGTERM to the trainers still running"; kill -TERM "${pids[@]}" 2>/dev/null
  sleep 30 & nap=$!; wait $nap; kill -KILL "${pids[@]}" 2>/dev/null ) &
watchdog=$!
declare -A status=()
i=0
for v in $VARIANTS; do wait "${pids[$i]}"; status[$v]=$?; i=$((i + 1)); done
kill -TERM "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null

pack="$WORK/pack"; rm -rf "$pack"; mkdir -p "$pack"
for v in $VARIANTS; do
  run="$WORK/run_$v"; dst="$pack/$v"; mkdir -p "$dst"
  echo "== $v: trainer exit ${status[$v]}$( [ "${status[$v]}" = 143 ] && echo ' (hard stop: SIGTERM)')"
  tail -n 3 "$WORK/train_$v.log"
  cp "$WORK/train_$v.log" "$dst/train.log"
  cp "$run/metrics.jsonl" "$run/config.json" "$run/history.jsonl" "$dst/" 2>/dev/null
  grep '"valid/' "$run/metrics.jsonl" >"$dst/valid.jsonl" 2>/dev/null
  [ -f "$run/checkpoint.pt" ] || { echo "$v: no checkpoint, nothing to carry"; continue; }
  python3 -m opencodec.train.campaign pack "$run/checkpoint.pt" "$dst/state" --max-mb "$MAX_STATE_MB"
  [ -f "$run/model.safetensors" ] || { echo "$v: no export (the trainer wrote none this run)"; continue; }
  python3 -c "
import torch
from opencodec.pretrained import load_model, save_model
p = save_model(load_model('$run/model.safetensors'), '$dst/model.safetensors', dtype=torch.float16, inference_only=True)
print('export', p, p.stat().st_size)"
done
tar -C "$pack" -cf "$WORK/campaign.tar" . && split -b 15M -d "$WORK/campaign.tar" "$OUT/campaign.tar.part"
parts=$(ls "$OUT"/campaign.tar.part* | wc -l)
[ "$parts" -le 8 ] || echo "WARNING: $parts parts, over the 8 files the device tool returns: lower MAX_STATE_MB"
ls -la "$OUT"
failed=""  # a trainer that ended normally, or stopped by SIGTERM with a checkpoint, succeeded
for v in $VARIANTS; do
  [ "${status[$v]}" = 0 ] || { [ "${status[$v]}" = 143 ] && [ -f "$WORK/run_$v/checkpoint.pt" ]; } \
    || failed+=" $v (exit ${status[$v]})"
done
[ -z "$failed" ] || { echo "FAILED trainers:$failed; see each variant's train.log above"; exit 1; }
