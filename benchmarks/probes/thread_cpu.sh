#!/bin/bash
# usage: thread_cpu.sh PID seconds
PID=$1; S=$2
snap() { for t in /proc/$PID/task/*; do echo "$(basename $t) $(cat $t/comm) $(awk '{print $14+$15}' $t/stat)"; done; }
snap > /tmp/exp/s0; sleep $S; snap > /tmp/exp/s1
join <(sort /tmp/exp/s0) <(sort /tmp/exp/s1) | awk -v s=$S '{d=$5-$3; if (d>0) printf "%s %s %.1f%%\n", $1, $2, d/s}'
