#!/usr/bin/env bash
# Train the default model on a lent GPU machine (no network there), in one call:
#   carry: .gpu (the packed corpus, scripts/device/pack_corpus.py, as .gpu/corpus.tar or
#   .gpu/corpus) and .whl (wheels the machine lacks; see scripts/device/setup.sh).
# Usage: scripts/device/train_default.sh MINUTES [extra key=value overrides]
# Writes to $OUT: the exported generator (float16, inference-only safetensors, split in
# 15 MiB parts: join with cat), metrics.jsonl, config.json and the log.
set -euo pipefail
minutes=${1:?minutes}; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source scripts/device/setup.sh
unpack_corpus /tmp/corpus
python3 -m opencodec.train configs/opencodec_24khz.yaml \
  "data.train=[/tmp/corpus/manifests/train.jsonl]" \
  "data.valid=[/tmp/corpus/manifests/valid.jsonl]" \
  "data.augment.noise_manifests=[/tmp/corpus/manifests/train_noise.jsonl]" \
  data.num_workers=12 "$@" \
  --run-dir /tmp/run --max-minutes "$minutes" --no-progress 2>&1 | tee "$OUT/train.log"
python3 - <<'PY'
import os, torch
from opencodec.pretrained import load_model, save_model
model = load_model("/tmp/run/model.safetensors")
out = os.environ.get("OUT", "/tmp/out")
path = save_model(model, "/tmp/run/opencodec_24khz.safetensors", dtype=torch.float16, inference_only=True)
print("export", path, path.stat().st_size)
PY
split -b 15M -d /tmp/run/opencodec_24khz.safetensors "$OUT/opencodec_24khz.safetensors.part"
cp /tmp/run/metrics.jsonl /tmp/run/config.json "$OUT/"
ls -la "$OUT"
