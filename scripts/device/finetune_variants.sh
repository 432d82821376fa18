#!/usr/bin/env bash
# Fine-tune the bundled codec on a lent GPU, several recipes side by side on the one GPU
# (VARIANTS, default "A B C"; the model is too small to fill the GPU, but three runs sharing
# it each ran at about a third of one run alone: 307 against 959 s of audio per second):
#   A  stage 2 continued: mel (audiocraft weights) + L1 0.1, no adversary;
#   B  as A plus a gentle adversary: MS-STFT discriminator (32 filters), adv 1, feat 1, mel 2;
#   C  as A plus the paper's adversarial weights: adv 3, feat 3, mel 1.
# Every variant starts from src/opencodec/weights/opencodec_24khz.safetensors. The model to
# ship is then chosen on the CPU by ViSQOL on validation audio (scripts/valid_probe_set.py),
# never by anything measured on the evaluation sets.
#
# Carry: .gpu (scripts/device/pack_corpus.py's output, as .gpu/corpus.tar or .gpu/corpus)
# and .whl (wheels; see scripts/device/setup.sh). The tree, .gpu and .whl must fit in 64 MiB
# together: session 6 moved the entropy model's weights out (git rm --cached, restored
# afterwards).
# Usage: scripts/device/finetune_variants.sh MINUTES [BATCH]
# Writes $OUT/variants.tar.part* (join with cat): per variant its float32 inference-only
# export, metrics.jsonl, config.json and log.
set -uo pipefail
minutes=${1:?minutes}; batch=${2:-64}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-4}; WORK=${WORK:-/tmp/ft}; VARIANTS=${VARIANTS:-A B C}
# EXTRA: overrides added to every variant. Session 7 (stage 4) passed
# "quantizer.threshold_ema_dead_code=0 optim.steps=N optim.schedule=cosine" to anneal the
# learning rate to 0 over N steps, with N set so that the run ends within MINUTES (about
# 14.6 steps a second at batch 64 on an H200). Expiry off keeps codebook 0's perplexity low
# for the entropy model; it is not needed for an inference-only start any more, since the
# trainer estimates such an export's codebook statistics itself.
EXTRA=${EXTRA:-}
source scripts/device/setup.sh
unpack_corpus "$WORK/corpus" || exit 1

common=(init_from=src/opencodec/weights/opencodec_24khz.safetensors device="$DEVICE" threads=2
  "data.train=[$WORK/corpus/manifests/train.jsonl]" "data.valid=[$WORK/corpus/manifests/valid.jsonl]"
  "data.augment.noise_manifests=[$WORK/corpus/manifests/train_noise.jsonl]" data.num_workers="$WORKERS"
  optim.batch_size="$batch" optim.steps=1000000 optim.steps_per_epoch=1000 seed=2
  quantizer.warmup_steps=0 losses.l1=0.1 mel_alpha=audiocraft
  log.every=50 log.valid_every=1000 log.checkpoint_every=1000 log.tensorboard=false)
declare -A extra=(
  [A]=""
  [B]="adversarial.start_step=0 adversarial.filters=32 losses.adv=1 losses.feat=1 losses.mel=2"
  [C]="adversarial.start_step=0 adversarial.filters=32 losses.adv=3 losses.feat=3 losses.mel=1"
)
for v in $VARIANTS; do
  # shellcheck disable=SC2086
  python3 -m opencodec.train configs/opencodec_cpu_24khz.yaml "${common[@]}" ${extra[$v]} $EXTRA \
    --run-dir "$WORK/run_$v" --max-minutes "$minutes" --no-progress >"$WORK/train_$v.log" 2>&1 &
done
wait
mkdir -p "$WORK/pack"
for v in $VARIANTS; do
  echo "== $v: $(grep -c . "$WORK/run_$v/metrics.jsonl" 2>/dev/null) metric lines"; tail -n 4 "$WORK/train_$v.log"
  cp "$WORK/train_$v.log" "$WORK/pack/train_$v.log"
  cp "$WORK/run_$v/metrics.jsonl" "$WORK/pack/metrics_$v.jsonl" 2>/dev/null
  cp "$WORK/run_$v/config.json" "$WORK/pack/config_$v.json" 2>/dev/null
  [ -f "$WORK/run_$v/model.safetensors" ] && python3 -c "
from opencodec.pretrained import load_model, save_model
p = save_model(load_model('$WORK/run_$v/model.safetensors'), '$WORK/pack/model_$v.safetensors', inference_only=True)
print('export', p, p.stat().st_size)"
done
tar -C "$WORK/pack" -cf "$WORK/variants.tar" . && split -b 15M -d "$WORK/variants.tar" "$OUT/variants.tar.part"
ls -la "$OUT"
