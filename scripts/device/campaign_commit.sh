#!/usr/bin/env bash
# File a campaign run's returned parts (scripts/device/campaign.sh) into the committed
# layout, on the development machine:
#   docs/training/campaign/state/<variant>/   the latest state (replaced: git keeps the old)
#   docs/training/campaign/runs/<RUN>/<variant>/  metrics.jsonl, config.json, train.log,
#                                               valid.jsonl, state.json (what was packed)
# The float16 export goes to runs/<RUN>/<variant>/model.safetensors only with KEEP_EXPORT=1
# (it repeats the state's weights; a run commits at most ~35 MB).
# Usage: scripts/device/campaign_commit.sh PARTS_DIR RUN [CAMPAIGN_DIR]
set -euo pipefail
parts=${1:?folder with campaign.tar.partNN}; name=${2:?run name, e.g. 01}
root=${3:-docs/training/campaign}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$parts"/campaign.tar.part* | tar -C "$tmp" -xf -
[ ! -e "$root/runs/$name" ] || { echo "$root/runs/$name exists"; exit 1; }
for dir in "$tmp"/*/; do
  v=$(basename "$dir"); dst="$root/runs/$name/$v"; mkdir -p "$dst"
  for f in metrics.jsonl config.json history.jsonl train.log valid.jsonl; do [ -f "$dir/$f" ] && cp "$dir/$f" "$dst/"; done
  if [ -d "$dir/state" ]; then
    cp "$dir/state/state.json" "$dst/"
    rm -rf "$root/state/$v"; mkdir -p "$root/state/$v"; cp "$dir"/state/* "$root/state/$v/"
  fi
  [ "${KEEP_EXPORT:-}" = 1 ] && [ -f "$dir/model.safetensors" ] && cp "$dir/model.safetensors" "$dst/"
  echo "$v: $(du -sh "$dst" | cut -f1) log, state $(du -sh "$root/state/$v" 2>/dev/null | cut -f1)"
done
