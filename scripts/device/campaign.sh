#!/usr/bin/env bash
# One GPU run of the codec training campaign (docs/training/campaign.md): unpack the corpus
# and the last campaign state, resume, train to a wall-clock budget (the trainer stops
# cleanly, validates, checkpoints and exports), pack what the next run needs, and return it
# as at most 8 files of 15 MiB under $OUT. A run that fails half-way returns the state of
# its last checkpoint (log.checkpoint_every), or nothing: the committed state is untouched.
#
# Usage: scripts/device/campaign.sh MINUTES [key=value overrides for every variant]
#   MINUTES: the training budget (max_minutes, set-up included); without DEADLINE the device
#   command also spends ~1 min unpacking, up to FINISH_SECONDS for the trainers' own stop and
#   up to PACK_SECONDS packing, so give the call timeout_s >= 60 * (MINUTES + 3). With
#   DEADLINE: "auto" (as long as the deadline allows) or a cap.
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
#   DEADLINE    when this script must have ended, its parts written (epoch seconds, as `date +%s`
#               prints); scripts/device/next_lease.sh passes its own start + LEASE_SECONDS. The
#               schedule is taken from it after the corpus is unpacked, so unpacking counts: each
#               trainer's max_minutes ends at DEADLINE - PACK_SECONDS - FINISH_SECONDS (its set-up
#               included; its clock starts once Python has imported it: seconds late); one still running gets SIGTERM at DEADLINE - PACK_SECONDS -
#               FINISH_SECONDS / 2 (it checkpoints its last whole step and exits 143) and SIGKILL
#               at DEADLINE - PACK_SECONDS, whatever it is doing, so that packing always has
#               PACK_SECONDS. Without DEADLINE the same from MINUTES: SIGKILL at the trainers'
#               start + 60 * MINUTES + FINISH_SECONDS.
#   PACK_SECONDS  the time kept for packing (default 20: three variants at the bundled size, states
#               and exports, packed in 6-9 s on the CPU dry run, two busy cores; the states alone,
#               written first, in 4-5 s)
#   FINISH_SECONDS  a trainer's own stop after its budget: its last step, the final validation,
#               checkpoint and export (default 90: 28 s for three on the CPU dry run, a GPU's
#               validation unmeasured; its clock starts after its imports; it ignores SIGTERM
#               meanwhile, not SIGKILL)
#   HARD_STOP_SECONDS  SIGTERM this long after the trainers start instead, SIGKILL 30 s later
#               (with DEADLINE, never after DEADLINE - PACK_SECONDS)
# Packing, most valuable first: every variant's logs and state (one Python process for all),
# written to $OUT at once, so that a call cut short from there still returns them; then the
# float16 exports (each only while it can end before DEADLINE, else skipped and said so; they
# are for evaluation, the states for the next run), and $OUT written again with them. In the
# tar the exports come last.
# Exit status: 0 when every variant's trainer ended normally (or at the hard stop, with a
# checkpoint), 1 when one failed (its log's last lines are printed; what there is is packed all
# the same) or a state could not be packed, 2 for a usage or preflight error (a DEADLINE that
# leaves no time to train included).
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
DEADLINE=${DEADLINE:-}; PACK_SECONDS=${PACK_SECONDS:-20}; FINISH_SECONDS=${FINISH_SECONDS:-90}
n_variants=$(wc -w <<<"$VARIANTS")

# what every variant needs, checked before anything slow (bash only: no Python yet)
preflight() {
  local problems=0 v
  for v in $VARIANTS; do
    case $v in main|a|b|c) ;; *) echo "preflight: unknown variant $v (main, a, b, c)"; problems=1 ;; esac
  done
  # the time: MINUTES a positive number ("auto" with DEADLINE), the seconds whole numbers
  if [ "$minutes" = auto ]; then
    [ -n "$DEADLINE" ] || { echo "preflight: MINUTES auto needs DEADLINE (epoch seconds: when this script must end)"; problems=1; }
  elif ! [[ "$minutes" =~ ^([0-9]+[.]?[0-9]*|[.][0-9]+)$ ]] || ! awk -v m="$minutes" 'BEGIN { exit !(m > 0) }'; then
    echo "preflight: MINUTES must be a positive number of minutes (or auto with DEADLINE), got '$minutes'"; problems=1
  fi
  for v in PACK_SECONDS FINISH_SECONDS ${HARD_STOP_SECONDS:+HARD_STOP_SECONDS}; do
    [[ "${!v}" =~ ^(0|[1-9][0-9]*)$ ]] || { echo "preflight: $v must be a whole number of seconds, got '${!v}'"; problems=1; }
  done
  if [ -n "$DEADLINE" ]; then
    if ! [[ "$DEADLINE" =~ ^(0|[1-9][0-9]*)$ ]]; then
      echo "preflight: DEADLINE must be epoch seconds (date +%s), got '$DEADLINE'"; problems=1
    elif [ "$problems" = 0 ] && [ $((DEADLINE - $(date +%s))) -le $((PACK_SECONDS + FINISH_SECONDS)) ]; then
      echo "preflight: DEADLINE is $((DEADLINE - $(date +%s))) s away, no more than PACK_SECONDS + FINISH_SECONDS" \
        "($((PACK_SECONDS + FINISH_SECONDS)) s): no time to train"; problems=1
    fi
  fi
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
MAX_STATE_MB=${MAX_STATE_MB:-$(awk -v n="$n_variants" 'BEGIN { print 33 / n }')}

source scripts/device/setup.sh
[ -n "${CHECK_ONLY:-}" ] || unpack_corpus "$WORK/corpus" || exit 1

common=(device="$DEVICE"
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
  check_minutes=$minutes; [ "$minutes" = auto ] && check_minutes=1  # the budget itself: set when run
  lists=()  # "::VARIANT" then that variant's trainer arguments, for each variant
  for v in $VARIANTS; do
    variant_start "$v"
    # shellcheck disable=SC2086
    lists+=("::$v" "$CONFIG" "${common[@]}" max_minutes="$check_minutes" "${start[@]}" $RECIPE ${extra[$v]} "$@")
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

# The schedule, in epoch seconds, from DEADLINE (now that the corpus is unpacked): the trainers'
# budget ends at budget_end, a trainer still running gets SIGTERM at term_at and SIGKILL at
# kill_at, and packing has PACK_SECONDS after that. Without DEADLINE, from MINUTES (below).
budget_end=""; kill_at=""
if [ -n "$DEADLINE" ]; then
  kill_at=$((DEADLINE - PACK_SECONDS)); budget_end=$((kill_at - FINISH_SECONDS))
  echo "== schedule: $((budget_end - $(date +%s))) s of training (set-up included), SIGKILL $((kill_at - $(date +%s))) s" \
    "from now, then $PACK_SECONDS s for packing, by DEADLINE $DEADLINE"
fi
trainer_minutes() {  # max_minutes of a trainer started now: until budget_end (at most MINUTES), else MINUTES
  [ -n "$budget_end" ] || { echo "$minutes"; return; }
  awk -v left=$((budget_end - $(date +%s))) -v cap="$minutes" \
    'BEGIN { m = left / 60; if (cap != "auto" && cap + 0 < m) m = cap + 0; m = int(m * 100) / 100; print (m < 0.01 ? 0.01 : m) }'
}

pids=()
for v in $VARIANTS; do
  run="$WORK/run_$v"; mkdir -p "$run"
  variant_start "$v"
  if [ -f "$STATE/$v/state.json" ]; then
    python3 -m opencodec.train.campaign unpack "$STATE/$v" "$run" --force || exit 1
  else
    echo "== $v: no state in $STATE/$v, starting from ${INIT_FROM:-a fresh model}"
  fi
  budget=$(trainer_minutes)
  echo "== $v: max_minutes=$budget"
  # shellcheck disable=SC2086
  python3 -m opencodec.train "$CONFIG" "${common[@]}" max_minutes="$budget" "${start[@]}" $RECIPE ${extra[$v]} "$@" \
    --run-dir "$run" --no-progress >"$WORK/train_$v.log" 2>&1 &
  pids+=($!)
done
# A trainer stops itself at its max_minutes, then validates, checkpoints and exports (FINISH_SECONDS;
# a SIGTERM meanwhile is ignored). One still running at term_at (a slow or hung step) gets SIGTERM,
# which checkpoints its last whole step; at kill_at SIGKILL, whatever it is doing: the packing must
# end before the device call's own timeout kills everything, and nothing under $OUT comes back.
armed=$(date +%s)
if [ -z "$kill_at" ]; then
  kill_at=$(awk -v now="$armed" -v m="$minutes" -v f="$FINISH_SECONDS" 'BEGIN { print int(now + 60 * m + f) }')
fi
term_at=$((kill_at - FINISH_SECONDS / 2))
if [ -n "${HARD_STOP_SECONDS:-}" ]; then
  term_at=$((armed + HARD_STOP_SECONDS))
  { [ -n "$DEADLINE" ] && [ $((term_at + 30)) -ge "$kill_at" ]; } || kill_at=$((term_at + 30))
  [ "$term_at" -le "$kill_at" ] || term_at=$kill_at
fi
( trap 'kill $nap 2>/dev/null; exit 0' TERM
  wait_until() { local left=$(($1 - $(date +%s))); sleep $((left > 0 ? left : 0)) & nap=$!; wait $nap; }
  wait_until "$term_at"
  echo "== hard stop after $((term_at > armed ? term_at - armed : 0)) s: SIGTERM to the trainers still running"
  kill -TERM "${pids[@]}" 2>/dev/null
  wait_until "$kill_at"
  echo "== hard stop after $((kill_at > armed ? kill_at - armed : 0)) s: SIGKILL to the trainers still running"
  kill -KILL "${pids[@]}" 2>/dev/null ) &
watchdog=$!
declare -A status=()
i=0
for v in $VARIANTS; do wait "${pids[$i]}"; status[$v]=$?; i=$((i + 1)); done
kill -TERM "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null

packing=$(date +%s)
echo "== trainers ended $((packing - armed)) s after the start$([ -n "$DEADLINE" ] && echo "; $((DEADLINE - packing)) s to DEADLINE")"
pack="$WORK/pack"; rm -rf "$pack"; mkdir -p "$pack"
write_parts() {  # $pack as $OUT/campaign.tar.partNN (15 MiB each, replacing the last ones), the exports last
  ( cd "$pack" && find . -type f ! -name model.safetensors | sort && find . -type f -name model.safetensors | sort ) \
    | tar -C "$pack" -cf "$WORK/campaign.tar" --no-recursion -T - || return 1
  rm -f "$OUT"/campaign.tar.part*
  split -b 15M -d "$WORK/campaign.tar" "$OUT/campaign.tar.part"
}
for v in $VARIANTS; do
  run="$WORK/run_$v"; dst="$pack/$v"; mkdir -p "$dst"
  echo "== $v: trainer exit ${status[$v]}$( [ "${status[$v]}" = 143 ] && echo ' (hard stop: SIGTERM)')$( [ "${status[$v]}" = 137 ] && echo ' (hard stop: SIGKILL)')"
  tail -n 3 "$WORK/train_$v.log"
  cp "$WORK/train_$v.log" "$dst/train.log"
  cp "$run/metrics.jsonl" "$run/config.json" "$run/history.jsonl" "$dst/" 2>/dev/null
  grep '"valid/' "$run/metrics.jsonl" >"$dst/valid.jsonl" 2>/dev/null
done
# 1. the states, what the next run resumes from: every variant in one Python process (one import of torch)
packed_states=ok
# shellcheck disable=SC2086
python3 - "$WORK" "$pack" "$MAX_STATE_MB" $VARIANTS <<'PY' || packed_states=""
import json, shutil, sys, time
from pathlib import Path
from opencodec.train.campaign import pack
work, out, max_mb, *variants = sys.argv[1:]
failed = False
for v in variants:
    checkpoint, dst = Path(work) / f"run_{v}" / "checkpoint.pt", Path(out) / v / "state"
    if not checkpoint.is_file():
        print(f"{v}: no checkpoint, nothing to carry")
        continue
    began = time.monotonic()
    try:
        summary = pack(checkpoint, dst, int(float(max_mb) * 1e6))
    except Exception as exc:  # one unreadable checkpoint must not cost the other variants their states
        shutil.rmtree(dst, ignore_errors=True)
        print(f"{v}: state not packed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        failed = True
        continue
    print(f"{v}: state {json.dumps(summary)} ({time.monotonic() - began:.1f} s)")
    if summary["over_budget"]:
        print(f"warning: {v}: the weights alone take {summary['bytes']} bytes, over MAX_STATE_MB={max_mb}")
sys.exit(1 if failed else 0)
PY
write_parts && echo "== states and logs in $OUT after $(($(date +%s) - packing)) s"
# 2. the float16 exports (for evaluation here), each only while it can end before DEADLINE (with
# 5 s left to write the parts again)
# shellcheck disable=SC2086
python3 - "$WORK" "$pack" "$([ -n "$DEADLINE" ] && echo $((DEADLINE - 5)) || echo 0)" $VARIANTS <<'PY'
import sys, time
from pathlib import Path
import torch
from opencodec.pretrained import load_model, save_model
work, out, export_by, *variants = sys.argv[1:]
deadline, longest = float(export_by), 0.0  # deadline 0: none
for v in variants:
    src, dst = Path(work) / f"run_{v}" / "model.safetensors", Path(out) / v / "model.safetensors"
    if not (Path(out) / v / "state" / "state.json").is_file():
        continue  # no state, no export
    if not src.is_file():
        print(f"{v}: no export (the trainer wrote none this run)")
        continue
    if deadline and time.time() + longest > deadline:
        print(f"{v}: export skipped: {max(0.0, deadline - time.time()):.0f} s left for exports before DEADLINE"
              f" (the last took {longest:.0f} s); its state is packed")
        continue
    began = time.time()
    try:
        p = save_model(load_model(src), dst, dtype=torch.float16, inference_only=True)
    except Exception as exc:  # an export is for evaluation: its state is packed, the others go on
        dst.unlink(missing_ok=True)
        print(f"{v}: no export: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        continue
    longest = max(longest, time.time() - began)
    print("export", p, p.stat().st_size, f"({time.time() - began:.1f} s)")
PY
write_parts
parts=$(ls "$OUT"/campaign.tar.part* | wc -l)
[ "$parts" -le 8 ] || echo "WARNING: $parts parts, over the 8 files the device tool returns: lower MAX_STATE_MB"
ls -la "$OUT"
echo "== packed in $(($(date +%s) - packing)) s (PACK_SECONDS=$PACK_SECONDS)$([ -n "$DEADLINE" ] && echo "; $((DEADLINE - $(date +%s))) s to DEADLINE")"
failed=""  # a trainer that ended normally, or stopped by SIGTERM with a checkpoint, succeeded
for v in $VARIANTS; do
  [ "${status[$v]}" = 0 ] || { [ "${status[$v]}" = 143 ] && [ -f "$WORK/run_$v/checkpoint.pt" ]; } \
    || failed+=" $v (exit ${status[$v]})"
done
[ -n "$packed_states" ] || failed+=" (and a state that could not be packed, above)"
[ -z "$failed" ] || { echo "FAILED trainers:$failed; see each variant's train.log above"; exit 1; }
