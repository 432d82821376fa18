#!/bin/bash
# usage: thread_cpu.sh PID seconds
set -euo pipefail
PID=${1:?PID}; S=${2:?seconds}
DIR=$(mktemp -d); trap 'rm -rf "$DIR"' EXIT
snap() { for t in /proc/$PID/task/*; do echo "$(basename $t) $(cat $t/comm) $(awk '{print $14+$15}' $t/stat)"; done; }
snap > "$DIR/s0"; sleep "$S"; snap > "$DIR/s1"
join <(sort "$DIR/s0") <(sort "$DIR/s1") | awk -v s=$S '{d=$5-$3; if (d>0) printf "%s %s %.1f%%\n", $1, $2, d/s}'
