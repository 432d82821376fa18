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
source scripts/device/setup.sh
unpack_corpus "$WORK/corpus" || exit 1

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
for v in $VARIANTS; do
  [ -n "${extra[$v]+set}" ] || { echo "unknown variant $v (main, a, b, c)"; exit 2; }
  run="$WORK/run_$v"; mkdir -p "$run"
  start=()
  if [ -f "$STATE/$v/state.json" ]; then
    python3 -m opencodec.train.campaign unpack "$STATE/$v" "$run" --force || exit 1
  else
    echo "== $v: no state in $STATE/$v, starting from ${INIT_FROM:-a fresh model}"
    [ -n "$INIT_FROM" ] && start=(init_from="$INIT_FROM")
  fi
  # shellcheck disable=SC2086
  python3 -m opencodec.train "$CONFIG" "${common[@]}" "${start[@]}" $RECIPE ${extra[$v]} "$@" \
    --run-dir "$run" --no-progress >"$WORK/train_$v.log" 2>&1 &
done
wait

pack="$WORK/pack"; rm -rf "$pack"; mkdir -p "$pack"
for v in $VARIANTS; do
  run="$WORK/run_$v"; dst="$pack/$v"; mkdir -p "$dst"
  echo "== $v"; tail -n 3 "$WORK/train_$v.log"
  cp "$WORK/train_$v.log" "$dst/train.log"
  cp "$run/metrics.jsonl" "$run/config.json" "$run/history.jsonl" "$dst/" 2>/dev/null
  grep '"valid/' "$run/metrics.jsonl" >"$dst/valid.jsonl" 2>/dev/null
  [ -f "$run/checkpoint.pt" ] || { echo "$v: no checkpoint, nothing to carry"; continue; }
  python3 -m opencodec.train.campaign pack "$run/checkpoint.pt" "$dst/state" --max-mb "$MAX_STATE_MB"
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
